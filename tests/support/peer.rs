//! A hand-written device image from `tests/peers/` served by pymodbus in a child process.
//! The interpreter is `$STATION_PYTHON` (set by `.ci/run`) or the project's `.venv/bin/python`.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running image; stopped when dropped (stdin closes, the child is killed).
pub(crate) struct Peer {
    child: Child,
    pub(crate) port: u16,
}

impl Peer {
    /// Start `tests/peers/<script>` and wait for the port it reports.
    pub(crate) async fn start(script: &str) -> Peer {
        let python = std::env::var("STATION_PYTHON").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string()
        });
        let path = format!("{}/tests/peers/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(python)
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the python peer");
        let stdout = child.stdout.take().expect("peer stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the peer reports its port within 30 s")
            .expect("reading the peer's stdout")
            .expect("the peer printed a line");
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from {script}: {line:?}"));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.start_kill();
    }
}

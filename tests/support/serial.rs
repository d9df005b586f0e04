//! Pseudo serial lines for RTU tests: a socat pseudo-terminal pair whose two ends appear as
//! symlinks `<dir>/<name>A` and `<dir>/<name>B` (raw, no echo). What is written on one end is
//! read on the other, like two devices on a point-to-point RS485 line. socat is stopped when
//! the pair is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub(crate) struct PtyPair {
    socat: Child,
    /// The device's end (the simulator or a pymodbus serial server opens it).
    pub(crate) a: PathBuf,
    /// The controller's end (`host` of a `transport = "rtu"` device).
    pub(crate) b: PathBuf,
}

impl PtyPair {
    /// Starts socat and waits until both ends exist.
    pub(crate) async fn open(dir: &Path, name: &str) -> PtyPair {
        let (a, b) = (dir.join(format!("{name}A")), dir.join(format!("{name}B")));
        let socat = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .spawn()
            .expect("starting socat (installed by .ci/run)");
        let pair = PtyPair { socat, a, b };
        super::until("the pty pair", Duration::from_secs(10), || {
            (pair.a.exists() && pair.b.exists()).then_some(())
        })
        .await;
        pair
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

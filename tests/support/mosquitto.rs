//! A private Mosquitto broker for tests: a free loopback port, a generated config file and
//! persistence directory in a fresh temp dir, no system service. Dropping the guard ends the
//! broker and removes the dir. [`Mosquitto::stop`] and [`Mosquitto::start`] take it down and
//! bring it back on the same port (outage tests); a stop is a SIGTERM, so the broker saves its
//! persistent sessions like a real one being restarted.
//!
//! Needs Debian's `mosquitto` (`apt-get install -y mosquitto`); the TLS broker also `openssl`.
//! `benches/fleet.rs` includes the file on its own.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub(crate) struct Mosquitto {
    pub(crate) port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Mosquitto {
    /// Start a broker on a free port and wait until it accepts connections.
    pub(crate) fn start_new() -> Mosquitto {
        Self::start_with(|_| "allow_anonymous true\n".to_string())
    }

    /// Start a broker that only takes TLS (a fresh test CA in the temp dir, the server
    /// certificate for `localhost` and 127.0.0.1) and only the login `user`/`password`.
    /// Needs `openssl` and `mosquitto_passwd`.
    pub(crate) fn start_tls(user: &str, password: &str) -> Mosquitto {
        Self::start_with(|dir| {
            make_test_pki(dir);
            run(Command::new("mosquitto_passwd")
                .arg("-b")
                .arg("-c")
                .arg(dir.join("passwd"))
                .args([user, password]));
            for f in ["passwd", "server.key", "server.pem", "ca.pem"] {
                chmod(&dir.join(f), 0o644);
            }
            format!(
                "allow_anonymous false\npassword_file {d}/passwd\n\
                 cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
                d = dir.display()
            )
        })
    }

    /// The CA that signed a [`Mosquitto::start_tls`] broker's certificate.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn start_with(listener_conf: impl FnOnce(&std::path::Path) -> String) -> Mosquitto {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stationd-mosquitto-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir for mosquitto");
        // Started as root, mosquitto drops to its own user, which must still write here.
        chmod(&dir, 0o777);
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\n{}\
             persistence true\n\
             persistence_location {}/\n\
             max_queued_messages 100000\n\
             log_dest file {}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\n",
            listener_conf(&dir),
            dir.display(),
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
        };
        m.start();
        m
    }

    /// A handle on a broker another process runs on `port` (a child process of a test); it
    /// neither stops nor removes anything.
    pub(crate) fn attach(port: u16) -> Mosquitto {
        Mosquitto {
            port,
            dir: PathBuf::new(),
            child: None,
        }
    }

    /// The broker's process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `mqtt://127.0.0.1:PORT`
    pub(crate) fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// (Re)start the broker on its port and wait until it accepts connections.
    pub(crate) fn start(&mut self) {
        assert!(self.child.is_none(), "mosquitto already running");
        assert!(
            std::path::Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} missing: apt-get install -y mosquitto"
        );
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("mosquitto exited with {status}: {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "mosquitto did not listen on {} within 20 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the broker with SIGTERM (it saves sessions) and wait for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    /// The broker's log (errors and notices), for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for `localhost` / 127.0.0.1 signed by it (EC P-256).
fn make_test_pki(dir: &std::path::Path) {
    let d = |f: &str| dir.join(f).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=stationd test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &d("server.key"),
        "-out",
        &d("server.csr"),
        "-subj",
        "/CN=localhost",
    ]));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &d("server.csr"),
        "-CA",
        &d("ca.pem"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-out",
        &d("server.pem"),
        "-days",
        "2",
        "-extfile",
        &d("server.ext"),
    ]));
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

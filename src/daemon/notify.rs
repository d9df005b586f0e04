//! systemd readiness and watchdog notifications (`sd_notify` protocol) without libsystemd:
//! a datagram to the socket named by `NOTIFY_SOCKET`. A no-op when not run by systemd.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where to send notifications, read once at start.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<PathBuf>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the process environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var("NOTIFY_SOCKET").ok(),
            std::env::var("WATCHDOG_USEC").ok(),
        )
    }

    /// From explicit values (tests).
    pub fn from_vars(socket: Option<String>, watchdog_usec: Option<String>) -> Self {
        // Abstract sockets (leading '@') need Linux-only APIs; the service file uses a path.
        let socket = socket
            .filter(|s| !s.is_empty() && !s.starts_with('@'))
            .map(PathBuf::from);
        let watchdog = watchdog_usec
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// The watchdog period systemd asked for, if any; ping at least twice per period.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, message: &str) {
        let Some(path) = &self.socket else { return };
        let result = UnixDatagram::unbound().and_then(|s| s.send_to(message.as_bytes(), path));
        if let Err(e) = result {
            tracing::warn!(error = %e, socket = %path.display(), "sd_notify failed");
        }
    }

    /// Tell systemd the daemon is up.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=controlling");
    }

    /// Ping the watchdog (from the daemon's watchdog task, only while the control loop is
    /// alive, so a hung loop gets restarted).
    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    /// Tell systemd the daemon is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Tell systemd the daemon is reloading its policy.
    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_arrive_on_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("stationd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::from_vars(Some(path.display().to_string()), Some("10000000".into()));
        assert_eq!(n.watchdog(), Some(Duration::from_secs(10)));
        n.ready();
        let mut buf = [0u8; 128];
        let len = server.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..len])
            .unwrap()
            .starts_with("READY=1"));
        n.watchdog_ping();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn liveness_is_two_cycles_but_never_under_5_s() {
        use crate::daemon::liveness_window;
        assert_eq!(
            liveness_window(Duration::from_secs(1)),
            Duration::from_secs(5)
        );
        assert_eq!(
            liveness_window(Duration::from_secs(4)),
            Duration::from_secs(8)
        );
        assert_eq!(
            liveness_window(Duration::from_millis(10)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn without_systemd_notifications_do_nothing() {
        let n = Notifier::from_vars(None, Some("garbage".into()));
        assert_eq!(n.watchdog(), None);
        n.ready();
        n.watchdog_ping();
    }
}

//! The HTTP server's guards and the watchdog, on a daemon whose only device (the grid meter,
//! behind an RS485 gateway) never answers, so its first control cycle takes the read budget: requests before
//! the first cycle, the `Host` allow-list, the body limit, the ledger's span cap, the connection
//! cap, and no watchdog ping before the loop has completed a cycle.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use station_controller::clock::SystemClock;
use station_controller::config::{self, StationConfig};
use station_controller::daemon::{self, notify::Notifier, DaemonHandle, Options};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const STATION_TOML: &str = include_str!("../config/station.toml");

/// The reference config with only the grid meter, pointed at `silent`, which accepts
/// connections and never answers.
fn config(silent: SocketAddr, hosts: &[&str]) -> StationConfig {
    let mut raw = config::parse("station.toml", STATION_TOML, Vec::new()).unwrap();
    raw.devices.retain(|id, _| id == "grid-meter");
    raw.policy.vehicles.chargers.clear();
    raw.planner.dwell_h.clear();
    raw.planner.arrivals.clear();
    let meter = raw.devices.get_mut("grid-meter").unwrap();
    meter.host = silent.ip().to_string();
    meter.port = silent.port();
    meter.timeout_ms = 5_000;
    // A profiled meter behind an RS485 gateway is read in the cycle (a TCP or SunSpec device
    // connects and discovers in the background and would let the first cycle finish at once);
    // at a 5 s cycle its silent read holds the first cycle for the read budget, 2.4 s.
    meter.profile = Some("chint-dtsu666".into());
    meter.transport = Some("rtu-over-tcp".into());
    raw.policy.cycle_s = 5.0;
    raw.api.hosts = hosts.iter().map(|h| h.to_string()).collect();
    raw.api.token = "s3cret".into();
    raw.validate_in(Some(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/profiles"
    ))))
    .unwrap()
}

struct Running {
    daemon: DaemonHandle,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _silent: TcpListener,
}

async fn start(hosts: &[&str]) -> Running {
    start_with(hosts, Options::default()).await
}

async fn start_with(hosts: &[&str], options: Options) -> Running {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(silent.local_addr().unwrap(), hosts);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let daemon = daemon::start(
        cfg,
        Arc::new(SystemClock),
        Options {
            api_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..options
        },
        cancel.clone(),
        &tracker,
    )
    .await
    .unwrap();
    Running {
        daemon,
        cancel,
        tracker,
        _silent: silent,
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(20), self.tracker.wait())
            .await
            .expect("the daemon stops");
    }
}

/// Sends `request` as written and returns the status code and the whole response.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (code, text)
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_status_before_the_first_cycle_answer_without_panicking() {
    let r = start(&[]).await;
    let addr = r.daemon.api_addr;
    let host = addr.to_string();
    let (code, body) = raw(addr, &get("/api/history?hours=24", &host)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"points\":[]"), "{body}");
    assert!(
        r.daemon.shared.status().is_none(),
        "a cycle completed already"
    );
    let (code, body) = raw(addr, &get("/api/status", &host)).await;
    assert_eq!(code, 503, "{body}");
    let (code, body) = raw(addr, &get("/api/health", &host)).await;
    assert_eq!(code, 503, "{body}");
    let json: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["ledger"]["ok"], true, "{body}");
    assert_eq!(json["ledger"]["running"], true, "{body}");
    assert_eq!(json["ledger"]["dropped_cycles"], 0, "{body}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_gets_421_and_the_listen_address_localhost_and_configured_names_pass() {
    let r = start(&["station.example.lan"]).await;
    let addr = r.daemon.api_addr;
    let port = addr.port();
    for host in [
        addr.to_string(),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("127.0.0.1:{port}"),
        format!("station.example.lan:{port}"),
    ] {
        let (code, body) = raw(addr, &get("/api/history", &host)).await;
        assert_eq!(code, 200, "{host}: {body}");
    }
    for host in [
        format!("attacker.example:{port}"),
        "localhost".to_string(),
        format!("localhost:{}", port.wrapping_add(1)),
        format!("127.0.0.1.attacker.example:{port}"),
    ] {
        let (code, body) = raw(addr, &get("/api/history", &host)).await;
        assert_eq!(code, 421, "{host}: {body}");
        assert!(body.contains("api.hosts"), "{body}");
    }
    let no_host = "GET /api/history HTTP/1.0\r\n\r\n";
    assert_eq!(raw(addr, no_host).await.0, 421);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_span_over_31_days_is_refused_naming_from_and_to() {
    let r = start(&[]).await;
    let addr = r.daemon.api_addr;
    let host = addr.to_string();
    for path in [
        "/api/energy?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
        "/api/sessions?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
        "/api/energy?from=0001-01-01T00:00:00Z&to=9999-01-01T00:00:00Z",
    ] {
        let (code, body) = raw(addr, &get(path, &host)).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("from, to: at most 31 days"), "{body}");
    }
    let ok = "/api/energy?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&format=csv";
    let (code, body) = raw(addr, &get(ok, &host)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("estimated_s,estimated"), "{body}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_limit_gets_413() {
    let r = start(&[]).await;
    let addr = r.daemon.api_addr;
    let body = format!(
        "{{\"mode\": \"solar\", \"pad\": \"{}\"}}",
        "x".repeat(station_controller::http::api::BODY_LIMIT)
    );
    let request = format!(
        "POST /api/chargers/charger-1/mode HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer s3cret\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (code, text) = raw(addr, &request).await;
    assert_eq!(code, 413, "{text}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let r = start(&[]).await;
    let addr = r.daemon.api_addr;
    let mut idle = Vec::new();
    for _ in 0..station_controller::http::api::MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Every idle connection holds a slot: a request now is not served.
    let request = get("/api/history", &addr.to_string());
    let mut waiting = tokio::spawn(async move { raw(addr, &request).await });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut waiting).await;
    assert!(early.is_err(), "a request beyond the cap was served");
    idle.clear();
    let (code, body) = waiting.await.unwrap();
    assert_eq!(code, 200, "{body}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_ledger_that_cannot_be_opened() {
    let path = std::env::temp_dir()
        .join(format!("stationd-no-such-dir-{}", std::process::id()))
        .join("ledger.sqlite");
    let options = Options {
        ledger_path: Some(path),
        ..Options::default()
    };
    let r = start_with(&[], options).await;
    let addr = r.daemon.api_addr;
    let (_, body) = raw(addr, &get("/api/health", &addr.to_string())).await;
    let json: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["ledger"]["ok"], false, "{body}");
    assert!(
        json["ledger"]["last_error"]
            .as_str()
            .unwrap()
            .contains("ledger.sqlite"),
        "{body}"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_pinged_only_once_the_control_loop_has_completed_a_cycle() {
    let dir = std::env::temp_dir().join(format!("stationd-wd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    // A 200 ms watchdog: ticks every 100 ms while the first cycle waits 5 s on the meter.
    let options = Options {
        notifier: Notifier::from_vars(Some(path.display().to_string()), Some("200000".into())),
        ..Options::default()
    };
    let r = start_with(&[], options).await;
    let mut buf = [0u8; 128];
    let mut seen = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
            .await
            .expect("a notification within 30 s")
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg == "WATCHDOG=1" {
            assert!(
                r.daemon.shared.status().is_some(),
                "pinged before any cycle completed (after {seen:?})"
            );
            break;
        }
        seen.push(msg);
    }
    r.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let r = start(&[]).await;
    let addr = r.daemon.api_addr;
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(format!("GET /api/status HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let limit = station_controller::http::api::HEADER_TIMEOUT + Duration::from_secs(10);
    for (what, s) in [("partial headers", &mut partial), ("no request", &mut idle)] {
        let mut out = Vec::new();
        let closed = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
        assert!(closed.is_ok(), "{what}: still connected after {limit:?}");
    }
    r.stop().await;
}

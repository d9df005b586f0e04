//! Helpers shared by the controller's test crates. A test crate takes them with `mod support;`
//! (Cargo builds every `tests/*.rs` as a crate of its own, but not `tests/support/`).
//!
//! - [`free_port`], [`until`], [`until_async`]: ports and polling, never a blind sleep;
//! - [`plug`]: the standard car of the end-to-end tests;
//! - [`station_file`]: the reference config as a file for the real `stationd` binary;
//! - [`crashable`]: the daemon in process on a runtime of its own, to be killed like `kill -9`;
//! - [`alloc`]: an allocation-counting global allocator type;
//! - [`modbus_plant`]: an in-test Modbus TCP server serving register images;
//! - [`fixtures`]: deterministic synthetic inputs for the perfect-foresight optimum (also
//!   used by `benches/optimum.rs`);
//! - [`browser`]: headless Chromium over WebDriver;
//! - [`mosquitto`]: a private Mosquitto broker per test; [`mqtt_probe`]: a recording MQTT
//!   subscriber; [`fleet_sim`]: stations publishing through the daemon's MQTT code with
//!   synthetic statuses (also used by `benches/fleet.rs`);
//! - [`serial`]: socat pseudo-terminal pairs standing in for RS485 lines.
#![allow(dead_code)] // each test crate uses its own subset of the helpers

pub(crate) mod alloc;
pub(crate) mod browser;
pub(crate) mod crashable;
pub(crate) mod fixtures;
pub(crate) mod fleet_sim;
pub(crate) mod modbus_plant;
pub(crate) mod mosquitto;
pub(crate) mod mqtt_probe;
pub(crate) mod peer;
pub(crate) mod serial;
pub(crate) mod station_file;

use station_sim::runtime::PlugRequest;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A loopback TCP port that was free a moment ago. Only for a peer that must be told its port
/// up front (a config file for a child process, chromedriver's `--port`); a server in this
/// process binds port 0 and reports the address it got instead.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    listener.local_addr().expect("probe address").port()
}

/// A fresh ledger file for a daemon that is restarted in a test: `stationd-{tag}-{pid}/
/// ledger.sqlite` in the temp dir, with no file from an earlier run. Returns the directory (to
/// remove at the end) and the path.
pub(crate) fn fresh_ledger(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("stationd-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the test's temp dir");
    let path = dir.join("ledger.sqlite");
    let _ = std::fs::remove_file(&path);
    (dir, path)
}

/// Calls `f` every 20 ms until it returns `Some`, and returns that; panics naming `what` once
/// `limit` of real time has passed. For conditions read without waiting (the simulator's
/// truth, the daemon's shared status).
#[allow(clippy::disallowed_methods)] // a real-time deadline is what a test waits on
pub(crate) async fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As [`until`] for a condition that is itself awaited (an HTTP request, a Modbus read):
/// polled every 50 ms.
#[allow(clippy::disallowed_methods)] // a real-time deadline is what a test waits on
pub(crate) async fn until_async<T>(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An 80 kWh car at 20 % that wants 90 %, stays 8 h and takes 32 A on three phases, plugged
/// in at `charger`.
pub(crate) fn plug(charger: &str) -> PlugRequest {
    PlugRequest {
        charger: charger.to_string(),
        battery_kwh: 80.0,
        soc_pct: 20.0,
        target_soc_pct: 90.0,
        stay_h: 8.0,
        onboard_a: 32.0,
        phases: 3,
    }
}

//! Control-cycle latency and daemon footprint, over loopback Modbus TCP against the simulator.
//!
//! `cargo bench -p station-controller --bench cycle` prints:
//! - cycle latency (read every device, decide, write every setpoint) p50/p99 with 1 PV,
//!   1 battery, 2 meters and 4, 16 and 64 chargers (daemon in process, simulator at 50x so the
//!   cycles come back to back), and with 16 chargers again with the predictive planner on
//!   (`[planner]`, 24 h horizon: solves run off the loop, each cycle follows the plan);
//! - resident memory and CPU share of the real `stationd run` binary at the 1 s cycle with 16
//!   chargers against the simulator (in this process, on fixed loopback ports), over 30 s.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../tests/support/station_file.rs"]
#[allow(dead_code)] // the bench writes a file; it changes no key
mod station_file;

use station_controller::demo::Demo;
use station_sim::runtime::{PlugRequest, SimConfig};
use station_sim::scenario::Scenario;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The reference station's `[planner]`, on.
fn planner_on(c: &mut station_controller::config::StationConfig) {
    let ids: Vec<String> = c.chargers().map(|(d, _)| d.id.clone()).collect();
    let raw = station_controller::config::planner::RawPlanner {
        enabled: true,
        lat_deg: 31.2,
        lon_deg: 121.5,
        kwp: 150.0,
        ..Default::default()
    };
    let mut issues = station_controller::config::Issues::new();
    c.planner = raw.validate(&ids, Some(135.0), &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
}

async fn latency(chargers: usize, cycles: usize, planner: bool) -> (f64, f64, f64) {
    let mut sc = Scenario::reference();
    sc.chargers.count = chargers;
    let start = sc.resolve_local("12:00");
    let speed = 50.0;
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        ..SimConfig::ephemeral(sc, 5, speed)
    })
    .await
    .expect("simulator");
    for i in 0..chargers {
        let _ = sim.plug(&PlugRequest {
            charger: format!("charger-{}", i + 1),
            battery_kwh: 80.0,
            soc_pct: 20.0,
            target_soc_pct: 90.0,
            stay_h: 10.0,
            onboard_a: 32.0,
            phases: 3,
        });
    }
    let d = Demo::attach(sim, speed, "127.0.0.1:0".parse().unwrap(), |c| {
        if planner {
            planner_on(c);
        }
    })
    .await
    .expect("daemon");
    let mut rx = d.daemon.shared.subscribe();
    let mut ms = Vec::with_capacity(cycles);
    let mut skipped = 0;
    while ms.len() < cycles {
        if rx.changed().await.is_err() {
            break;
        }
        let Some(s) = rx.borrow_and_update().clone() else {
            continue;
        };
        // The first cycles connect and configure fallbacks: not steady state.
        if skipped < 20 {
            skipped += 1;
            continue;
        }
        ms.push(s.cycle_ms);
    }
    d.shutdown().await;
    ms.sort_by(f64::total_cmp);
    (
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        *ms.last().unwrap_or(&0.0),
    )
}

fn free_base() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 60000 && (0..30).all(|o| TcpListener::bind(("127.0.0.1", p + o)).is_ok()) {
            return p;
        }
    }
}

fn proc_stat(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ')'.
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (rss_kb / 1024.0, ticks / 100.0)
}

/// The real `stationd run` binary against an in-process simulator (16 chargers) for 30 s.
async fn footprint() {
    let base = free_base();
    let mut sc = Scenario::reference();
    sc.chargers.count = 16;
    let start = sc.resolve_local("12:00");
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        port_base: Some(base),
        ..SimConfig::ephemeral(sc, 5, 1.0)
    })
    .await
    .expect("simulator");
    let dir = std::env::temp_dir().join(format!("stationd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Every device at the simulator's address (chargers 9-16 like charger-1), the API above.
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], base + 40));
    let config = dir.join("station.toml");
    station_file::write(&config, &station_file::for_sim(&sim.addrs, api));
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_stationd"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stationd");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, cpu0) = proc_stat(daemon.id());
    let t0 = Instant::now();
    let mut rss_max: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(30) {
        rss_max = rss_max.max(proc_stat(daemon.id()).0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (rss, cpu1) = proc_stat(daemon.id());
    let cpu_pct = (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "footprint, stationd run, 16 chargers, 1 s cycle, 30 s: RSS {rss:.1} MiB (max {rss_max:.1} MiB), CPU {cpu_pct:.2} % of one core"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no argument: keep
    // that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cycles = if quick { 30 } else { 500 };
    for (n, planner) in [(4, false), (16, false), (64, false), (16, true)] {
        let (p50, p99, max) = rt.block_on(latency(n, cycles, planner));
        let with = if planner { ", planner on" } else { "" };
        println!(
            "cycle latency, 1 PV + battery + 2 meters + {n:>2} chargers{with}, {cycles} cycles: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
        );
    }
    if !quick {
        rt.block_on(footprint());
    }
}

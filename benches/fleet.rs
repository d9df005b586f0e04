//! A fleet of 100 stations on one local Mosquitto: the daemon's real MQTT publishing code
//! (`mqtt::spawn`, in this process) fed with simulated station statuses at the 1 s cadence, the
//! real `stationd fleet` binary subscribed to them, and a probe subscriber.
//!
//! `cargo bench -p station-controller --bench fleet` prints, over a 60 s window after 5 s of
//! warm-up (`FLEET_BENCH_SECONDS` changes the window):
//! - CPU share and resident memory of mosquitto, of `stationd fleet`, and of this process (the
//!   100 publishers and the probe);
//! - end-to-end latency p50/p99/max from a station's status (its `time`) to the probe receiving
//!   the station's `summary` through the broker (first arrival of each status);
//! - summaries lost: published (station, time) pairs the probe never received (expected 0);
//! - what the fleet view's `/api/fleet` shows at the end (100 online).
//!
//! Needs Debian's `mosquitto`. `cargo test --benches` runs it for 5 s.

// Bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

#[path = "../tests/support/fleet_sim.rs"]
#[allow(dead_code)] // the bench uses part of the helpers
mod fleet_sim;
#[path = "../tests/support/mosquitto.rs"]
#[allow(dead_code)] // the bench uses part of the helpers
mod mosquitto;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use station_controller::clock::{Clock, SystemClock};
use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const STATIONS: usize = 100;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// (RSS MiB, CPU seconds) of a process.
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
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (rss_kb / 1024.0, (tick(11) + tick(12)) / 100.0)
}

#[derive(Default)]
struct Received {
    /// (station, status time) pairs seen, and the latency of each, ms.
    seen: HashSet<(String, String)>,
    latency_ms: Vec<f64>,
    measuring: bool,
}

/// Subscribe to every summary; record latency against the status time inside it.
async fn probe(port: u16, received: Arc<Mutex<Received>>, cancel: CancellationToken) {
    let mut o = MqttOptions::new("fleet-bench-probe", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let clock = SystemClock;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe("station/+/summary", QoS::AtMostOnce)
                    .await
                    .expect("subscribe");
            }
            Ok(Event::Incoming(Packet::Publish(p))) if !p.retain => {
                let now = clock.now();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                    continue;
                };
                let (Some(station), Some(time)) = (v["station"].as_str(), v["time"].as_str())
                else {
                    continue;
                };
                let Ok(t) = time.parse::<chrono::DateTime<chrono::Utc>>() else {
                    continue;
                };
                let mut r = received.lock().expect("probe lock");
                // First arrival of each status only: the periodic re-send of an unchanged
                // status is not a delivery delay.
                if r.measuring && r.seen.insert((station.to_string(), time.to_string())) {
                    r.latency_ms
                        .push((now - t).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
            }
            Ok(_) => {}
            Err(e) => panic!("probe lost the broker: {e}"),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn run(window: Duration) {
    let broker = mosquitto::Mosquitto::start_new();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut fleet = Command::new(env!("CARGO_BIN_EXE_stationd"))
        .args(["fleet", "--broker", &broker.url(), "--listen", &listen])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stationd fleet");
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let received = Arc::new(Mutex::new(Received::default()));
    tracker.spawn(probe(broker.port, received.clone(), cancel.clone()));
    let stations: Vec<_> = (1..=STATIONS)
        .map(|n| fleet_sim::SimStation::start(n, broker.port, &cancel, &tracker))
        .collect();
    let clock = SystemClock;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let warmup = 5;
    let mut published = HashSet::new();
    let mut measure_from = None;
    let total = warmup + window.as_secs();
    for k in 0..total {
        tick.tick().await;
        if k == warmup {
            received.lock().expect("lock").measuring = true;
            measure_from = Some((
                Instant::now(),
                proc_stat(broker.pid().expect("broker pid")).1,
                proc_stat(fleet.id()).1,
                proc_stat(std::process::id()).1,
            ));
        }
        let now = clock.now();
        for s in &stations {
            s.cycle(now, k);
            if k >= warmup {
                published.insert((
                    s.id.clone(),
                    serde_json::to_value(now)
                        .expect("time")
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ));
            }
        }
    }
    // Let the last round arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t0, b0, f0, s0) = measure_from.expect("measured");
    let secs = t0.elapsed().as_secs_f64();
    let report = |name: &str, pid: u32, cpu0: f64| {
        let (rss, cpu1) = proc_stat(pid);
        println!(
            "{name:<34} CPU {:5.2} % of one core, RSS {rss:6.1} MiB",
            (cpu1 - cpu0) / secs * 100.0
        );
    };
    println!(
        "fleet bench: {STATIONS} stations at 1 s, {} s measured",
        window.as_secs()
    );
    report("mosquitto", broker.pid().expect("broker pid"), b0);
    report("stationd fleet", fleet.id(), f0);
    report("100 publishers + probe (1 process)", std::process::id(), s0);
    let (mut lat, lost) = {
        let r = received.lock().expect("lock");
        (r.latency_ms.clone(), published.difference(&r.seen).count())
    };
    lat.sort_by(f64::total_cmp);
    if !lat.is_empty() {
        println!(
            "end-to-end latency status -> subscriber: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} summaries)",
            percentile(&lat, 0.5), percentile(&lat, 0.99), lat[lat.len() - 1], lat.len()
        );
    }
    println!("summaries lost: {lost} of {}", published.len());
    let api: serde_json::Value = reqwest::get(format!("http://{listen}/api/fleet"))
        .await
        .expect("fleet api")
        .json()
        .await
        .expect("fleet json");
    println!(
        "fleet view: {} stations, {} online",
        api["count"], api["online"]
    );
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    let _ = fleet.kill();
    let _ = fleet.wait();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no argument.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("FLEET_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let window = Duration::from_secs(if quick { 5 } else { secs });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(window));
}

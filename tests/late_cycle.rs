//! A cycle that comes late: the real `stationd` process stopped (SIGSTOP) for several cycles,
//! as an overloaded host or a paused VM would, then continued. The ledger must book the whole
//! monotonic gap (no second lost, none booked twice) and the loop must carry on one cycle per
//! period, without a burst of catch-up cycles; judged against the simulator's truth.
// Test code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use station_sim::runtime::{SimConfig, SimHandle, Truth};
use station_sim::scenario::Scenario;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, plug, station_file, until, until_async};

const STATIOND: &str = env!("CARGO_BIN_EXE_stationd");
const CYCLE_S: f64 = 0.5;
const STALL: Duration = Duration::from_secs(6);

/// The daemon process, killed when dropped.
struct Daemon(Child);

impl Daemon {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(api: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let r = reqwest::get(format!("http://{api}{path}")).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// What the daemon and the simulator say at one moment.
struct Look {
    at: Instant,
    cycle: f64,
    /// The ledger's totals of the run (`totals.sum` of `/api/energy`).
    ledger: serde_json::Value,
    truth: Truth,
}

async fn look(api: SocketAddr, sim: &SimHandle) -> Look {
    let (cycle, ledger) = until_async("status and ledger", Duration::from_secs(10), async || {
        let cycle = get(api, "/api/status").await?["cycle"].as_f64()?;
        let energy = get(api, "/api/energy").await?;
        Some((cycle, energy["totals"]["sum"].clone()))
    })
    .await;
    Look {
        at: Instant::now(),
        cycle,
        ledger,
        truth: sim.truth(),
    }
}

fn ledger_delta(a: &Look, b: &Look, key: &str) -> f64 {
    b.ledger[key].as_f64().unwrap() - a.ledger[key].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_stalled_for_several_cycles_books_the_whole_gap_once_and_resumes_one_cycle_per_period(
) {
    let sc = Scenario::reference();
    let sim = station_sim::runtime::spawn(SimConfig {
        start: sc.resolve_local("18:05"),
        ..SimConfig::ephemeral(sc, 13, 1.0)
    })
    .await
    .unwrap();
    for id in ["charger-1", "charger-2"] {
        sim.plug(&plug(id)).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("stationd-late-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("station.toml");
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    station_file::write(&path, &station_file::for_sim(&sim.addrs, api));
    let daemon = Daemon(
        Command::new(STATIOND)
            .args(["run", "--config"])
            .arg(&path)
            .env("STATION__POLICY__CYCLE_S", CYCLE_S.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until("both cars charging", Duration::from_secs(60), || {
        let t = sim.truth();
        t.chargers
            .iter()
            .take(2)
            .all(|c| c.power_w > 3000.0)
            .then_some(())
    })
    .await;
    let before = look(api, &sim).await;

    daemon.signal("-STOP");
    // The stall itself: the process is stopped for this long (nothing to poll for).
    tokio::time::sleep(STALL).await;
    daemon.signal("-CONT");
    let resumed = Instant::now();
    let after_cycle = before.cycle + 6.0;
    until_async(
        "cycles after the stall",
        Duration::from_secs(20),
        async || {
            let c = get(api, "/api/status").await?["cycle"].as_f64()?;
            (c >= after_cycle).then_some(())
        },
    )
    .await;
    let after = look(api, &sim).await;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);

    // The whole time between the looks is booked, the stall included, and only once (a cycle
    // of slack at each end: the ledger books a cycle after the simulator moved).
    let elapsed_s = (after.at - before.at).as_secs_f64();
    let covered_s = ledger_delta(&before, &after, "covered_s");
    eprintln!(
        "covered {covered_s:.2} s of {elapsed_s:.2} s; estimated {:.2} s; import ledger {:.1} Wh / simulator {:.1} Wh; {} cycles",
        ledger_delta(&before, &after, "estimated_s"),
        ledger_delta(&before, &after, "import_wh"),
        (after.truth.kpis.grid_import_kwh - before.truth.kpis.grid_import_kwh) * 1000.0,
        after.cycle - before.cycle
    );
    assert!(
        (covered_s - elapsed_s).abs() <= 2.0 * CYCLE_S + 0.3,
        "the ledger covered {covered_s:.2} s of {elapsed_s:.2} s (a {STALL:?} stall)"
    );
    // The late cycle is marked estimated: it stretched one sample over the stall.
    let estimated_s = ledger_delta(&before, &after, "estimated_s");
    assert!(
        estimated_s >= STALL.as_secs_f64() - 1.0,
        "only {estimated_s:.2} s marked estimated after a {STALL:?} stall"
    );
    // The energy of the stall is in the ledger, as the simulator measured it.
    let close = |what: &str, ledger_wh: f64, truth_kwh: f64| {
        let truth_wh = truth_kwh * 1000.0;
        assert!(
            (ledger_wh - truth_wh).abs() <= 0.05 * truth_wh.abs() + 15.0,
            "{what}: ledger {ledger_wh:.1} Wh, simulator {truth_wh:.1} Wh"
        );
    };
    let (k0, k1) = (&before.truth.kpis, &after.truth.kpis);
    close(
        "grid import",
        ledger_delta(&before, &after, "import_wh"),
        k1.grid_import_kwh - k0.grid_import_kwh,
    );
    close(
        "vehicles",
        ledger_delta(&before, &after, "vehicles_wh"),
        k1.ev_delivered_kwh - k0.ev_delivered_kwh,
    );
    // No burst of catch-up cycles after the stall: one per period from the resume on (plus the
    // one under way and the scheduling slack of a loaded machine).
    let since_resume_s = (after.at - resumed).as_secs_f64();
    let cycles = after.cycle - before.cycle;
    assert!(
        cycles <= since_resume_s / CYCLE_S + 3.0,
        "{cycles} cycles in the {since_resume_s:.2} s after the stall (period {CYCLE_S} s)"
    );
    // Control resumed: the cars kept charging on the daemon's setpoints, the limit was kept.
    assert_eq!(
        k1.import_limit_exceeded_s, k0.import_limit_exceeded_s,
        "import limit exceeded around the stall"
    );
    for c in after.truth.chargers.iter().take(2) {
        assert!(
            c.setpoint_a > 6.0,
            "{} at {} A after the stall",
            c.id,
            c.setpoint_a
        );
    }
    sim.shutdown().await;
}

//! The fault soak: the real daemon against the simulator in process, through simulated hours of
//! `faults-day` plus random faults on every device kind (offline, latency up to twice the
//! request timeout, Modbus exceptions, frozen registers, absurd values on every point, BMS
//! alarms) and steps of the daemon's wall clock, judged on the simulator's truth.
//!
//! Cars charge on half the chargers from the start. Each run ends with the faults cleared and
//! three settling minutes (the ledger corrects a gap once the device's energy counter is read
//! again), then judges: import limit, SoC window, RSS, and every energy flow the ledger booked
//! (grid import and export, PV, vehicles) within 1 % of the simulator's truth, every second
//! booked, no cycle dropped.
//!
//! `cargo test --release --test soak -- --nocapture` runs `STATION_SOAK_HOURS` simulated hours
//! (default 1.5, from `STATION_SOAK_START`, default 14:00) at `STATION_SOAK_SPEED` x real
//! time (default 120) and prints what it injected and measured;
//! `STATION_SOAK_RANDOM_FAULTS=0` runs the scenario's own faults only. The real binary's
//! `kill -9`, SIGHUP and SIGTERM are covered by `tests/daemon_process.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use station_controller::clock::{Clock, FollowClock};
use station_controller::config::{self, DeviceRole, StationConfig};
use station_controller::daemon::{DaemonHandle, Options};
use station_controller::demo;
use station_controller::ledger::Bucket;
use station_sim::faults::{bad_value_points, FaultKindName, FaultRequest, FaultValue};
use station_sim::physics::Kpis;
use station_sim::runtime::{SimConfig, SimHandle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod support;

use support::crashable::CrashableDaemon;
use support::station_file;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const DEVICES: [&str; 8] = [
    "pv",
    "battery",
    "grid-meter",
    "building-meter",
    "charger-1",
    "charger-3",
    "charger-5",
    "charger-8",
];

/// A random fault on a random device, lasting 20 s to 5 min of simulated time. With `lies`,
/// devices also answer with plausible wrong values (frozen registers, a power of 0 W) that no
/// validation can refuse; without, every fault is a dead, slow or absurd device.
fn random_fault(rng: &mut ChaCha8Rng, lies: bool) -> (String, FaultRequest) {
    let device = DEVICES[rng.random_range(0..DEVICES.len())];
    let kinds = [
        FaultKindName::Offline,
        FaultKindName::Latency,
        FaultKindName::Exception,
        FaultKindName::Frozen,
        FaultKindName::BadValue,
        FaultKindName::BmsAlarm,
    ];
    let mut kind = kinds[rng.random_range(0..kinds.len())];
    if kind == FaultKindName::BmsAlarm && device != "battery" {
        kind = FaultKindName::Offline;
    }
    if kind == FaultKindName::Frozen && !lies {
        kind = FaultKindName::Latency;
    }
    let mut f = FaultRequest {
        device: device.to_string(),
        kind,
        duration_s: Some(rng.random_range(20.0..300.0)),
        latency_ms: None,
        code: None,
        point: None,
        value: None,
    };
    match kind {
        // Up to twice the 500 ms request timeout.
        FaultKindName::Latency => f.latency_ms = Some(rng.random_range(50..1000)),
        FaultKindName::Exception => f.code = Some([2, 4, 6][rng.random_range(0..3)]),
        FaultKindName::BadValue => {
            let points = bad_value_points(device);
            f.point = Some(points[rng.random_range(0..points.len())].to_string());
            f.value = Some(match rng.random_range(0..if lies { 4 } else { 3 }) {
                0 => FaultValue::Text("NaN".into()),
                1 => FaultValue::Number(-1e9),
                2 => FaultValue::Number(250.0),
                _ => FaultValue::Number(0.0),
            });
        }
        _ => {}
    }
    (format!("{kind:?}"), f)
}

/// One energy flow: the simulator's truth against the ledger's booking.
struct Flow {
    name: &'static str,
    truth_kwh: f64,
    ledger_kwh: f64,
}

impl Flow {
    fn new(name: &'static str, truth_kwh: f64, ledger_wh: f64) -> Flow {
        Flow {
            name,
            truth_kwh,
            ledger_kwh: ledger_wh / 1000.0,
        }
    }

    /// The ledger's error against the truth, relative to the truth. The two are read a moment
    /// apart at four points (each end of the window, the kill and the restart: the ledger
    /// books a cycle after the simulator moved), so a flow of under 4 kWh is judged on an
    /// absolute error of 40 Wh: about a cycle of 30 kW at each point, while a lost minute of
    /// the same flow (500 Wh) still fails. With 20 Wh a grid export of 0.62 kWh failed once
    /// at +22 Wh.
    fn error(&self) -> f64 {
        (self.ledger_kwh - self.truth_kwh) / self.truth_kwh.abs().max(4.0)
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: simulator {:.2} kWh, ledger {:.2} kWh ({:+.2} %)",
            self.name,
            self.truth_kwh,
            self.ledger_kwh,
            100.0 * self.error()
        )
    }
}

/// What one soak run measured.
struct Soak {
    simulated_s: f64,
    /// Seconds without a daemon (the kill to the restarted daemon's first cycle).
    down_s: f64,
    /// Seconds the ledger booked.
    covered_s: f64,
    flows: Vec<Flow>,
    dropped: u64,
    cycles: u64,
    over_s: f64,
    soc_out_s: f64,
    rss_growth_kib: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hours_of_dead_slow_and_absurd_devices_keep_every_limit() {
    soak(false).await.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hours_of_lying_devices_keep_the_grid_within_its_limit_and_the_battery_within_its_window() {
    soak(true).await.assert_safe();
}

impl Soak {
    fn assert_safe(&self) {
        // Alive all along: about a cycle per simulated second.
        assert!(
            self.cycles as f64 > 0.5 * self.simulated_s,
            "only {} cycles",
            self.cycles
        );
        assert_eq!(self.soc_out_s, 0.0, "the SoC window was left");
        // The building's workshop steps are uncontrollable and show up a cycle late; anything
        // beyond a second per simulated hour is a controllable breach.
        assert!(
            self.over_s <= self.simulated_s / 3600.0,
            "import above the limit for {} s in {} s",
            self.over_s,
            self.simulated_s
        );
        for f in &self.flows {
            assert!(
                f.error().abs() <= 0.01,
                "the ledger is off by more than 1 %: {f}"
            );
        }
        assert_eq!(self.dropped, 0, "the ledger dropped cycles");
        // Every second a daemon ran is booked.
        let ran_s = self.simulated_s - self.down_s;
        assert!(
            (self.covered_s - ran_s).abs() <= 0.01 * ran_s,
            "the ledger covered {} s of the {ran_s} s a daemon ran",
            self.covered_s,
        );
        assert!(
            self.rss_growth_kib < 16 * 1024,
            "RSS grew by {} KiB",
            self.rss_growth_kib
        );
    }
}

/// Everything the ledger has booked (its wall clock is stepped, so its buckets may lie hours
/// away from the simulator's time: a wide range).
async fn ledger_sum(d: &DaemonHandle, now: DateTime<Utc>) -> Bucket {
    let (_, totals) = d
        .shared
        .ledger_buckets(
            now - chrono::Duration::days(2),
            now + chrono::Duration::days(2),
        )
        .await
        .unwrap();
    totals.sum
}

/// The chargers' safe current the daemon writes (register 1212), not the simulator's default
/// of 6 A: after the kill the chargers can only end at 10 A if the daemon set it up. The
/// validity is the charger's own setting (60 s, not writable over Modbus); the daemon only
/// checks that the charger does not exceed it.
const SAFE_A: f64 = 10.0;
const VALIDITY_S: u32 = 60;

/// The reference station wired to the simulator, with [`SAFE_A`] and [`VALIDITY_S`].
fn station_config(sim: &SimHandle) -> StationConfig {
    let mut config = demo::config_for(&sim.addrs).unwrap();
    for d in &mut config.devices {
        if let DeviceRole::Charger(c) = &mut d.role {
            c.safe_current_a = SAFE_A;
            c.validity_s = VALIDITY_S;
        }
    }
    config
}

async fn first_cycles(d: &DaemonHandle) {
    support::until("the first cycles", Duration::from_secs(30), || {
        d.shared.status().filter(|s| s.cycle >= 3).map(|_| ())
    })
    .await;
}

/// SIGHUP as `stationd run` handles it (`config::load`, then the new policy or nothing) with a
/// good file (import limit 140 kW) and a bad one (a negative limit): the first is taken, the
/// second refused naming its key while the running policy stays.
async fn reload_good_then_bad(d: &DaemonHandle, sim: &SimHandle, dir: &Path) {
    let path = dir.join("station.toml");
    let limit = || d.shared.status().map(|s| s.grid.import_limit_w);
    let mut doc = station_file::for_sim(&sim.addrs, "127.0.0.1:0".parse().unwrap());
    station_file::set(&mut doc, "policy.grid.import_limit_kw", 140.0);
    station_file::write(&path, &doc);
    let good = config::load(&path).unwrap();
    assert!(d.replace_policy(good.policy).await);
    support::until("the reloaded limit", Duration::from_secs(30), || {
        (limit() == Some(140_000.0)).then_some(())
    })
    .await;
    station_file::set(&mut doc, "policy.grid.import_limit_kw", -1.0);
    station_file::write(&path, &doc);
    let bad = config::load(&path).expect_err("a negative import limit is refused");
    assert!(
        bad.to_string().contains("policy.grid.import_limit_kw"),
        "{bad}"
    );
    let cycle = d.shared.status().unwrap().cycle;
    support::until("three more cycles", Duration::from_secs(30), || {
        d.shared
            .status()
            .filter(|s| s.cycle >= cycle + 3)
            .map(|_| ())
    })
    .await;
    assert_eq!(limit(), Some(140_000.0));
}

/// `kill -9` of the daemon: every charger must reach the configured safe current on its own
/// within the validity plus one cycle (judged on the simulator's truth, which moves in steps of
/// its 20 ms clock tick). Returns the simulated seconds that took.
async fn kill_and_wait_for_the_fallback(daemon: CrashableDaemon, sim: &SimHandle) -> f64 {
    let before = sim.truth();
    assert!(
        before
            .chargers
            .iter()
            .any(|c| (c.applied_max_a - SAFE_A).abs() > 1e-6),
        "no charger away from its safe current before the kill: the check would prove nothing"
    );
    let killed_at = sim.now();
    daemon.kill();
    let cycle_s = station_controller::dispatch::Policy::default().cycle_s;
    let tick_s = 0.02 * sim.truth().speed;
    let limit = f64::from(VALIDITY_S) + cycle_s + tick_s;
    loop {
        let t = sim.truth();
        let took = (t.sim_time - killed_at).num_milliseconds() as f64 / 1000.0;
        if t.chargers
            .iter()
            .all(|c| (c.applied_max_a - SAFE_A).abs() < 1e-6)
        {
            return took;
        }
        assert!(
            took <= limit,
            "{took} s after the kill some charger is not at {SAFE_A} A: {:?}",
            t.chargers
                .iter()
                .map(|c| (&c.id, c.applied_max_a))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The daemon's options: a ledger file (it must survive the kill), the API on port 0.
fn options(ledger: &Path) -> Options {
    Options {
        ledger_path: Some(ledger.to_path_buf()),
        api_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Options::default()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stationd-soak-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The simulator's KPIs: `a - b`, field by field, for the energies the soak compares.
fn kpi_delta(a: &Kpis, b: &Kpis) -> [f64; 4] {
    [
        a.grid_import_kwh - b.grid_import_kwh,
        a.grid_export_kwh - b.grid_export_kwh,
        a.pv_kwh - b.pv_kwh,
        a.ev_delivered_kwh - b.ev_delivered_kwh,
    ]
}

async fn soak(lies: bool) -> Soak {
    let hours = env_f64("STATION_SOAK_HOURS", 1.5);
    // 0 runs the scenario's own faults only (a baseline for the ledger's accuracy).
    let random_faults = env_f64("STATION_SOAK_RANDOM_FAULTS", 1.0) != 0.0;
    let speed = env_f64("STATION_SOAK_SPEED", 120.0);
    let sc = demo::scenario("faults-day").unwrap();
    let start = sc.resolve_local(&std::env::var("STATION_SOAK_START").unwrap_or("14:00".into()));
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        ..SimConfig::ephemeral(sc, 21, speed)
    })
    .await
    .unwrap();
    let dir = temp_dir(if lies { "lies" } else { "dead" });
    let ledger_path = dir.join("ledger.sqlite");
    let offset_s = Arc::new(AtomicI64::new(0));
    let source = sim.time_source();
    let step = offset_s.clone();
    let clock: Arc<dyn Clock> = Arc::new(FollowClock::new(
        move || source() + chrono::Duration::seconds(step.load(Ordering::Relaxed)),
        speed,
    ));
    let config = station_config(&sim);
    let mut daemon = CrashableDaemon::start(config.clone(), clock.clone(), options(&ledger_path));
    first_cycles(&daemon.handle).await;

    // Cars on half the chargers, so the vehicles' flow is judged on real energy.
    for id in ["charger-1", "charger-3", "charger-5", "charger-8"] {
        sim.plug(&support::plug(id)).unwrap();
    }
    let t0 = sim.now();
    let kpis0 = sim.truth().kpis;
    // What the ledger booked before `t0` (its first cycles), taken off at the end.
    let ledger0 = ledger_sum(&daemon.handle, t0).await;
    let span = chrono::Duration::seconds((hours * 3600.0) as i64);
    let end = t0 + span;
    let at = |share: f64| t0 + chrono::Duration::seconds((hours * 3600.0 * share) as i64);
    let (reload_at, kill_at) = (at(0.2), at(0.4));
    // NTP steps the daemon's wall clock: 7 min forward, then 9 min back, then at random.
    let mut steps = vec![(at(0.3), 420), (at(0.6), -540)];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut injected: BTreeMap<String, u32> = BTreeMap::new();
    let mut next_fault = t0;
    let (mut reloaded, mut killed) = (false, None);
    let mut cycles_seen = 0;
    let mut dropped = 0;
    let mut down_kwh = [0.0; 4];
    let mut down_s = 0.0;
    let mut rss_after_warmup = None;
    while sim.now() < end {
        let now = sim.now();
        if random_faults && now >= next_fault {
            let (kind, f) = random_fault(&mut rng, lies);
            sim.inject(&f).unwrap();
            *injected.entry(kind).or_default() += 1;
            next_fault = now + chrono::Duration::seconds(rng.random_range(60..600));
        }
        if steps.first().is_some_and(|(t, _)| now >= *t) {
            let (_, s) = steps.remove(0);
            offset_s.fetch_add(s, Ordering::Relaxed);
            let kind = if s > 0 {
                "ClockStepForward"
            } else {
                "ClockStepBack"
            };
            *injected.entry(kind.into()).or_default() += 1;
            let next = now + chrono::Duration::minutes(rng.random_range(30..90));
            let size = rng.random_range(-600..600);
            if steps.is_empty() {
                steps.push((next, size));
            }
        }
        if !reloaded && now >= reload_at {
            reload_good_then_bad(&daemon.handle, &sim, &dir).await;
            *injected.entry("SighupGood".into()).or_default() += 1;
            *injected.entry("SighupBad".into()).or_default() += 1;
            reloaded = true;
        }
        if killed.is_none() && now >= kill_at {
            cycles_seen += daemon.handle.shared.status().map_or(0, |s| s.cycle);
            dropped += daemon.handle.shared.ledger_dropped_cycles();
            let down_from = sim.truth().kpis;
            let down_at = sim.now();
            let took = kill_and_wait_for_the_fallback(daemon, &sim).await;
            *injected.entry("Kill9".into()).or_default() += 1;
            daemon = CrashableDaemon::start(config.clone(), clock.clone(), options(&ledger_path));
            support::until(
                "the restarted daemon's first cycle",
                Duration::from_secs(30),
                || daemon.handle.shared.status().map(|_| ()),
            )
            .await;
            // What flowed while no daemon ran: booked from the devices' counters once the
            // restarted daemon reads them (the saved reconciliation state comes back with the
            // ledger), but not as covered seconds.
            down_kwh = kpi_delta(&sim.truth().kpis, &down_from);
            down_s = (sim.now() - down_at).num_milliseconds() as f64 / 1000.0;
            killed = Some(took);
        }
        if rss_after_warmup.is_none() && now >= t0 + chrono::Duration::minutes(30) {
            rss_after_warmup = Some(rss_kib());
        }
        // Sampling interval of the soak driver; the daemon runs on its own.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Settle: the faults end and every device is read again, so the ledger reconciles the last
    // gaps with the devices' energy counters (a gap is corrected once its counter is read).
    sim.clear_faults();
    let settled = sim.now() + chrono::Duration::minutes(3);
    while sim.now() < settled {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let truth = sim.truth();
    let k = &truth.kpis;
    let simulated_s = (sim.now() - t0).num_seconds() as f64;
    let over_s = k.import_limit_exceeded_s - kpis0.import_limit_exceeded_s;
    let soc_out_s = k.soc_window_violation_s - kpis0.soc_window_violation_s;
    let mut ledger = ledger_sum(&daemon.handle, sim.now()).await;
    for (v, v0) in [
        (&mut ledger.covered_s, ledger0.covered_s),
        (&mut ledger.estimated_s, ledger0.estimated_s),
        (&mut ledger.import_wh, ledger0.import_wh),
        (&mut ledger.export_wh, ledger0.export_wh),
        (&mut ledger.pv_wh, ledger0.pv_wh),
        (&mut ledger.vehicles_wh, ledger0.vehicles_wh),
    ] {
        *v -= v0;
    }
    let truth_kwh = kpi_delta(k, &kpis0);
    let booked = [
        ledger.import_wh,
        ledger.export_wh,
        ledger.pv_wh,
        ledger.vehicles_wh,
    ];
    let flows: Vec<Flow> = ["grid import", "grid export", "pv", "vehicles"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| Flow::new(name, truth_kwh[i], booked[i]))
        .collect();
    cycles_seen += daemon.handle.shared.status().map_or(0, |s| s.cycle);
    dropped += daemon.handle.shared.ledger_dropped_cycles();
    let rss_growth_kib = rss_kib().saturating_sub(rss_after_warmup.unwrap_or(0));
    let fallback_s = killed.expect("the daemon was killed during the run");
    println!(
        "soak (lies: {lies}): {:.1} simulated h at {speed}x, {cycles_seen} cycles, injected {injected:?}; \
         import over the limit {over_s} s, SoC window left {soc_out_s} s, chargers at their \
         safe current {fallback_s:.1} s after the kill (validity {VALIDITY_S} s), RSS growth \
         after warm-up {rss_growth_kib} KiB, ledger cycles dropped {dropped}, ledger covered \
         {:.0} s ({:.0} s estimated); while the daemon was down ({down_s:.0} s): \
         {down_kwh:.2?} kWh (import, export, pv, vehicles), booked from the counters",
        simulated_s / 3600.0,
        ledger.covered_s,
        ledger.estimated_s,
    );
    for f in &flows {
        println!("  {f}");
    }
    daemon.stop().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Soak {
        simulated_s,
        down_s,
        covered_s: ledger.covered_s,
        flows,
        dropped,
        cycles: cycles_seen,
        over_s,
        soc_out_s,
        rss_growth_kib,
    }
}

//! Battery health against the simulator's truth: a pack whose BMS reports 80 % SoH while it
//! holds 68 %, with cells already drifted apart. The daemon's dispatch core runs in closed
//! loop on the simulator's plant (src/backtest) with the health tracker measuring as the
//! daemon does; every assertion about the pack is on the simulator's truth.
//!
//! The year run is long: `cargo test --release --test battery_health -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
// The year run is built in optimised builds only; its helpers are unused in debug builds.
#![cfg_attr(debug_assertions, allow(dead_code, unused_imports))]

mod support;

use chrono::{DateTime, Timelike, Utc};
use station_controller::backtest::run::{policy_controller, Controller, PolicyController};
use station_controller::config::{Issues, RawPolicy};
use station_controller::demo::Demo;
use station_controller::dispatch::Policy;
use station_controller::health::CapacitySample;
use station_controller::health::{HealthConfig, HealthTracker};
use station_controller::ledger::Store;
use station_sim::physics::Plant;
use station_sim::scenario::Scenario;
use station_sim::view::{BatteryState, Command};
use support::until;

/// The lying BMS: true SoH 68 %, reported 80 % and never refreshed; 75 mV of cell spread puts
/// the BMS's own discharge cutoff at 12.5 % SoC, above the policy's 10 %. Early summer: the
/// pack fills from PV and empties in the evening.
const LYING_BMS: &str = "
[start]
date = \"2026-06-01\"
[battery]
soh_pct = 68.0
bms_soh_reported_pct = 80.0
bms_soh_update_days = 0
imbalance_mv = 75.0
initial_soc_pct = 60.0
";

/// Days after which the estimate must be confident and within 3 % (documented in
/// docs/battery-health.md: the first sample comes on day 1, the third, which makes it
/// confident, within the first week at about 1.3 equivalent full cycles).
const CONVERGED_BY_DAY: u32 = 7;

/// One day of the run as the truth and the estimate saw it.
#[derive(Debug, Clone)]
struct Day {
    day: u32,
    true_capacity_wh: f64,
    estimate_wh: Option<f64>,
    band_wh: Option<f64>,
    confident: bool,
    efc: f64,
    /// Seconds the pack sat at its BMS discharge cutoff (SoC at the BMS floor or the BMS
    /// refusing discharge for SoC while asked to discharge), per local hour.
    cutoff_s_by_hour: [f64; 24],
}

struct Run {
    days: Vec<Day>,
    controller: PolicyController,
    plant: Plant,
}

fn local_hour(t: DateTime<Utc>) -> usize {
    // Asia/Shanghai, UTC+8, no daylight saving.
    ((t.hour() + 8) % 24) as usize
}

/// The default policy, optionally charging from the grid in the valley tariff.
fn policy(valley_charging: bool) -> Policy {
    let mut raw = RawPolicy::default();
    raw.battery.grid_charging_in_valley = valley_charging;
    let mut issues = Issues::new();
    raw.validate("policy", &mut issues).unwrap()
}

/// Run `days` days with the dispatch core (`health` on or off), one cycle every `cycle_s`.
fn run(toml: &str, days: u32, health: bool, cycle_s: f64) -> Run {
    run_with(toml, days, health, cycle_s, Policy::default())
}

fn run_with(toml: &str, days: u32, health: bool, cycle_s: f64, policy: Policy) -> Run {
    let sc = Scenario::from_toml_str(toml).unwrap();
    let mut controller = policy_controller(policy, &sc);
    if health {
        controller = controller.with_health(HealthTracker::new(HealthConfig::default()));
    }
    let mut plant = Plant::new(&sc, 7);
    let mut view = plant.view();
    let mut commands: Vec<Command> = Vec::new();
    let mut out = Vec::new();
    let per_day = (86_400.0 / cycle_s).round() as u64;
    for day in 0..days {
        let mut cutoff = [0.0; 24];
        for _ in 0..per_day {
            plant.view_into(&mut view);
            controller.control(&view, &mut commands);
            for c in commands.drain(..) {
                plant.apply(c).unwrap();
            }
            plant.step(cycle_s);
            plant.view_into(&mut view);
            let b = &view.battery;
            let at_floor = b.soc_pct <= b.soc_min_pct.max(b.soc_reserve_min_pct) + 0.05;
            let refused = b.state == BatteryState::SocProtection && b.setpoint_w > 0.0;
            if at_floor || refused {
                cutoff[local_hour(view.sim_time)] += cycle_s;
            }
        }
        let now = view.sim_time;
        let est = controller
            .health()
            .and_then(|h| h.report(&Policy::default().battery, now).estimate);
        out.push(Day {
            day: day + 1,
            true_capacity_wh: view.battery.usable_wh,
            estimate_wh: est.map(|e| e.capacity_wh),
            band_wh: est.map(|e| e.band_wh),
            confident: est.is_some_and(|e| e.confident),
            efc: plant.kpis().battery_efc,
            cutoff_s_by_hour: cutoff,
        });
    }
    Run {
        days: out,
        controller,
        plant,
    }
}

/// The first day the estimate is confident and within `tol_pct` of the truth, from which it
/// stays within `tol_pct` to the end.
fn converged_from(days: &[Day], tol_pct: f64) -> Option<u32> {
    let mut from = None;
    for d in days {
        match error_pct(d) {
            Some(e) if e.abs() <= tol_pct => {
                if d.confident {
                    from.get_or_insert(d.day);
                }
            }
            _ => from = None,
        }
    }
    from
}

#[test]
fn a_bms_claiming_80_pct_on_a_68_pct_pack_is_caught_and_the_pack_never_hits_its_cutoff() {
    let days = 12;
    let measured = run(LYING_BMS, days, true, 5.0);
    let from = converged_from(&measured.days, 3.0)
        .unwrap_or_else(|| panic!("never converged: {:#?}", measured.days));
    assert!(from <= CONVERGED_BY_DAY, "converged only from day {from}");
    let efc_at = measured.days[from as usize - 1].efc;
    println!("within 3 % and confident from day {from} ({efc_at:.2} EFC)");
    // From then on the pack never sits at the BMS's discharge cutoff, in the evening or ever
    // (on the simulator's truth).
    for d in &measured.days[from as usize - 1..] {
        let total: f64 = d.cutoff_s_by_hour.iter().sum();
        assert_eq!(
            total, 0.0,
            "day {} at the cutoff: {:?}",
            d.day, d.cutoff_s_by_hour
        );
    }
    // The same days with the BMS's word taken run into the cutoff in the evening: the test can
    // fail.
    let trusting = run(LYING_BMS, days, false, 5.0);
    let evening: f64 = trusting
        .days
        .iter()
        .map(|d| d.cutoff_s_by_hour[17..24].iter().sum::<f64>())
        .sum();
    assert!(
        evening > 3600.0,
        "the BMS-trusting run never hit the cutoff: {evening} s"
    );

    // The daemon's view: measured capacity in use, the warning with both numbers.
    let now = measured.plant.now();
    let h = measured.controller.health().unwrap();
    let report = h.report(&Policy::default().battery, now);
    assert_eq!(report.capacity_source, "measured");
    let truth = measured.plant.view().battery.usable_wh;
    let used = report.capacity_in_use_wh.unwrap();
    assert!((used - truth).abs() < 0.03 * truth, "{used} vs {truth}");
    let w = report
        .warning
        .expect("a BMS 17 % high for days is a warning");
    assert!(
        w.contains("BMS SoH 80.0 %") && w.contains("400.0 kWh"),
        "{w}"
    );
    assert!(
        w.contains(&format!(
            "{:.1}",
            report.estimate.unwrap().capacity_wh / 1000.0
        )),
        "{w}"
    );
}

fn error_pct(d: &Day) -> Option<f64> {
    d.estimate_wh
        .map(|e| (e - d.true_capacity_wh) / d.true_capacity_wh * 100.0)
}

/// A year from March with ageing: the BMS reports 12 points high and refreshes only every 90
/// days; cells drift (0.05 mV per EFC at 25 C, the scenario default).
const YEAR: &str = "
[start]
date = \"2026-03-01\"
[battery]
soh_pct = 68.0
bms_soh_bias_pct = 12.0
bms_soh_update_days = 90
imbalance_mv = 40.0
initial_soc_pct = 60.0
";

/// A simulated year (about 70 s in release; optimised builds only, run by `.ci/run`'s release
/// step). The end-of-life projection at month 12 is printed, not asserted: the straight-line fade
/// fit overstates the simulator's slowing calendar ageing and misses the issue's 20 % target
/// (1445 days projected; the simulated pack needs more than 2190).
#[cfg(not(debug_assertions))]
#[test]
fn a_year_with_ageing_is_tracked_within_3_pct_of_the_true_capacity() {
    let started = std::time::Instant::now();
    // The station arbitrages: it charges from the grid in the valley and so cycles all year.
    let r = run_with(YEAR, 365, true, 5.0, policy(true));
    let year_wall = started.elapsed();
    println!("year run: {:.1} s wall", year_wall.as_secs_f64());
    println!("  day  true_kWh  est_kWh  band_kWh  err_%   EFC  confident");
    for d in r
        .days
        .iter()
        .filter(|d| d.day % 15 == 0 || d.day <= 14 || d.day == 365)
    {
        println!(
            "{:>5}  {:>8.1}  {:>7.1}  {:>8.1}  {:>+5.2}  {:>5.1}  {}",
            d.day,
            d.true_capacity_wh / 1000.0,
            d.estimate_wh.unwrap_or(f64::NAN) / 1000.0,
            d.band_wh.unwrap_or(f64::NAN) / 1000.0,
            error_pct(d).unwrap_or(f64::NAN),
            d.efc,
            d.confident
        );
    }
    let from = converged_from(&r.days, 3.0).expect("never within 3 %");
    let unconfident = r.days[from as usize - 1..]
        .iter()
        .filter(|d| !d.confident)
        .count();
    println!("within 3 % and confident from day {from}; not confident on {unconfident} days after");
    let worst = r.days[from as usize - 1..]
        .iter()
        .filter_map(error_pct)
        .fold(0.0f64, |m, e| m.max(e.abs()));
    println!("worst error from day {from}: {worst:.2} %");
    assert!(from <= 14, "converged only from day {from}");
    assert!(worst <= 3.0, "worst error {worst:.2} %");

    let policy = policy(true);
    let now = r.plant.now();
    let report = r.controller.health().unwrap().report(&policy.battery, now);
    if let (Some(eol), Some(fade)) = (report.end_of_life.as_ref(), report.fade.as_ref()) {
        println!(
            "month 12: fade {:.1} kWh/year, measured wear {:?} CNY/kWh, end of life ({} % of nameplate) projected in {:.0} days",
            fade.wh_per_day * 365.0 / 1000.0,
            report.wear_cny_per_kwh,
            report.eol_pct,
            (eol.date - now).num_seconds() as f64 / 86_400.0
        );
    }
}

/// The real daemon against the simulator over Modbus: it reads 804 (cells, module
/// temperatures), sets the temperature gauge, narrows the window with the spread, and serves
/// `GET /api/battery/health` and the health gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reads_cells_and_module_temperatures_and_serves_the_health_report() {
    let sc = Scenario::from_toml_str(LYING_BMS).unwrap();
    let d = Demo::start_at(
        sc,
        7,
        60.0,
        Some("12:00"),
        "127.0.0.1:0".parse().unwrap(),
        |_| {},
    )
    .await
    .unwrap();
    let base = format!("http://{}", d.daemon.api_addr);
    let http = reqwest::Client::new();
    until(
        "a health report with module temperatures",
        std::time::Duration::from_secs(60),
        || {
            d.daemon
                .shared
                .battery_health()
                .filter(|r| r.temp_max_c.is_some() && r.cell_spread_mv.is_some())
                .and(d.daemon.shared.status().filter(|s| s.cycle >= 3))
                .map(|_| ())
        },
    )
    .await;
    let report: serde_json::Value = http
        .get(format!("{base}/api/battery/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let truth = d.sim.truth().battery;
    let t_max = report["temp_max_c"].as_f64().unwrap();
    assert!(
        (t_max - truth.module_temp_max_c).abs() < 1.0,
        "{t_max} vs {}",
        truth.module_temp_max_c
    );
    assert!((report["bms_soh_pct"].as_f64().unwrap() - 80.0).abs() < 0.06);
    assert_eq!(
        report["capacity_source"], "bms",
        "not measured yet: {report}"
    );
    assert!((report["capacity_in_use_wh"].as_f64().unwrap() - 400_000.0).abs() < 500.0);
    // 75 mV of spread (wider away from mid SoC): the floor is at least 5 + 7.5 + 2 %.
    let floor = report["derating"]["soc_min_pct"].as_f64().unwrap();
    assert!(floor >= 14.4, "window floor {floor}: {report}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let temp_line = metrics
        .lines()
        .find(|l| l.starts_with("station_battery_temperature_celsius "))
        .unwrap_or_else(|| panic!("no temperature gauge:\n{metrics}"));
    let t: f64 = temp_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((t - truth.module_temp_max_c).abs() < 1.0, "{temp_line}");
    assert!(
        metrics.contains("station_battery_capacity_bms_wh 400000"),
        "{metrics}"
    );
    assert!(metrics.contains("station_battery_cell_spread_mv "));
    d.shutdown().await;
}

/// Capacity samples survive a restart: stored in the ledger database, loaded into a new
/// tracker, which then dispatches on the measured capacity at once.
#[test]
fn capacity_samples_kept_in_the_ledger_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("stationd-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.sqlite");
    let _ = std::fs::remove_file(&path);
    let run = run(LYING_BMS, 8, true, 5.0);
    let samples: Vec<CapacitySample> = run
        .controller
        .health()
        .unwrap()
        .report(&Policy::default().battery, run.plant.now())
        .samples;
    assert!(samples.len() >= 3);
    {
        let mut store = Store::open(&path).unwrap();
        store.insert_capacity_samples(&samples).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let loaded = store.capacity_samples(samples[0].at).unwrap();
    assert_eq!(loaded, samples);
    let now = run.plant.now();
    let restored = HealthTracker::restore(HealthConfig::default(), &loaded);
    let truth = run.plant.view().battery.usable_wh;
    let c = restored
        .measured_capacity_wh(now)
        .expect("confident after restart");
    assert!((c - truth).abs() < 0.03 * truth);
    std::fs::remove_dir_all(&dir).unwrap();
}

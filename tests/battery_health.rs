//! Battery health against the simulator's truth: a pack whose BMS reports 80 % SoH while it
//! holds 68 %, with cells already drifted apart. The daemon's dispatch core runs in closed
//! loop on the simulator's plant (src/backtest) with the health tracker measuring as the
//! daemon does; every assertion about the pack is on the simulator's truth.
//!
//! The year run is long: `cargo test --release --test battery_health -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{DateTime, Timelike, Utc};
use station_controller::backtest::run::{policy_controller, Controller, PolicyController};
use station_controller::dispatch::Policy;
use station_controller::health::{HealthConfig, HealthTracker};
use station_sim::physics::Plant;
use station_sim::scenario::Scenario;
use station_sim::view::{BatteryState, Command};

/// The lying BMS: true SoH 68 %, reported 80 % and never refreshed; 75 mV of cell spread puts
/// the BMS's own discharge cutoff at 12.5 % SoC, above the policy's 10 %.
const LYING_BMS: &str = "
[start]
date = \"2026-06-01\"
[battery]
soh_pct = 68.0
bms_soh_reported_pct = 80.0
bms_soh_update_days = 0
imbalance_mv = 75.0
initial_soc_pct = 60.0
[vehicles]
arrival_scale = 1.6
[building]
business_kw = 70.0
";

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

/// Run `days` days with the dispatch core (`health` on or off), one cycle every `cycle_s`.
fn run(toml: &str, days: u32, health: bool, cycle_s: f64) -> Run {
    let sc = Scenario::from_toml_str(toml).unwrap();
    let mut controller = policy_controller(Policy::default(), &sc);
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

fn error_pct(d: &Day) -> Option<f64> {
    d.estimate_wh
        .map(|e| (e - d.true_capacity_wh) / d.true_capacity_wh * 100.0)
}

#[test]
#[ignore = "exploration aid: EXPLORE_SCENARIO=file EXPLORE_DAYS=n"]
fn explore() {
    let toml = std::fs::read_to_string(std::env::var("EXPLORE_SCENARIO").unwrap()).unwrap();
    let days: u32 = std::env::var("EXPLORE_DAYS").map_or(10, |d| d.parse().unwrap());
    for health in [false, true] {
        let r = run(&toml, days, health, 5.0);
        for d in &r.days {
            let evening: f64 = d.cutoff_s_by_hour[17..24].iter().sum();
            let total: f64 = d.cutoff_s_by_hour.iter().sum();
            println!(
                "health={health} day {} efc {:.2} true {:.1} est {:?} band {:?} conf {} err {:?} cutoff {total} evening {evening}",
                d.day,
                d.efc,
                d.true_capacity_wh / 1000.0,
                d.estimate_wh.map(|e| e / 1000.0),
                d.band_wh.map(|e| e / 1000.0),
                d.confident,
                error_pct(d)
            );
        }
        let _ = (&r.controller, &r.plant);
    }
}

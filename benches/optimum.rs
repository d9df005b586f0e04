//! Solve time of the perfect-foresight program on synthetic reference windows.
//!
//! Run with `cargo bench -p station-controller --bench optimum`.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

#[path = "../tests/support/fixtures.rs"]
mod fixtures;

use fixtures::synthetic_reference_window;
use station_controller::backtest::optimum::{solve, OptimumInput};

fn measure(label: &str, input: &OptimumInput, runs: usize) {
    let days = input.window_days();
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let result = match solve(input) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{label} ({days} days) failed: {e}");
                std::process::exit(1);
            }
        };
        times.push(start.elapsed());
        last = Some(result);
    }
    times.sort();
    let median = times[times.len() / 2];
    let min = times[0];
    let max = times[times.len() - 1];
    println!(
        "optimum {label} ({days} days): {} steps, {} sessions; \
         solve min {:.3} s, median {:.3} s, max {:.3} s over {runs} runs",
        input.steps(),
        input.sessions.len(),
        min.as_secs_f64(),
        median.as_secs_f64(),
        max.as_secs_f64()
    );
    if let Some(r) = last {
        println!(
            "  cost {:.2} CNY (import {:.2}, export -{:.2}, demand {:.2}, wear {:.2}); \
             peak {:.1} kW; import {:.0} kWh, export {:.0} kWh; PV used {:.0} kWh, \
             curtailed {:.0} kWh; EV {:.0} kWh, unmet {:.2} kWh; battery {:.2} EFC; \
             self-consumption {:.1} %, self-sufficiency {:.1} %; \
             simultaneous import/export {:.3} kWh",
            r.cost_cny,
            r.import_cost_cny,
            r.export_revenue_cny,
            r.demand_charge_cny,
            r.wear_cost_cny,
            r.peak_import_kw,
            r.grid_import_kwh,
            r.grid_export_kwh,
            r.pv_used_kwh,
            r.pv_curtailed_kwh,
            r.ev_delivered_kwh,
            r.ev_unmet_kwh,
            r.battery_efc,
            r.self_consumption_pct,
            r.self_sufficiency_pct,
            r.simultaneous_import_export_kwh
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let one_day = synthetic_reference_window(1, 42);
    if quick {
        measure("reference window", &one_day, 1);
        return;
    }
    measure("reference window", &one_day, 9);
    let week = synthetic_reference_window(7, 42);
    measure("reference window", &week, 5);
    // A tight grid makes the limits bind: 60 kW import, zero export, a 100 kWh / 30 kW battery.
    let mut tight = week;
    tight.grid.import_limit_w = 60_000.0;
    tight.grid.export_limit_w = 0.0;
    tight.battery.usable_wh = 100_000.0;
    tight.battery.max_charge_w = 30_000.0;
    tight.battery.max_discharge_w = 30_000.0;
    measure("tight-grid window", &tight, 5);
}

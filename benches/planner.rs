//! Solve time of the planner: a 48 h plan in 15-minute steps (192 steps) made at 10:05 on a
//! weekday of the synthetic reference window, 8 cars plugged in, the window's other cars
//! expected. Target (issue 10): p50 < 50 ms, p99 < 200 ms.
//!
//! Run with `cargo bench -p station-controller --bench planner`; besides criterion's estimate it
//! prints p50 / p99 / max over 200 plans (the seed of the window varies per plan).
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use station_controller::planner::{
    plan, ExpectedCar, Forecast, PlanState, PlannerConfig, PluggedCar,
};
use std::time::Instant;

#[path = "../tests/support/fixtures.rs"]
mod fixtures;

const STEPS: usize = 192;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 7, 15, 0, 0, 0).unwrap()
}

/// Config, state and forecast of a plan at 10:05 on the first day of window `seed`.
fn case(seed: u64) -> (PlannerConfig, PlanState, Forecast, DateTime<Utc>) {
    let w = fixtures::synthetic_reference_window(3, seed);
    let first = 40; // 10:00
    let at = |step: usize| start() + Duration::seconds(900 * step as i64);
    let cfg = PlannerConfig {
        horizon_steps: STEPS,
        battery: w.battery.clone(),
        grid: w.grid.clone(),
        export_price_cny_per_kwh: w.tariff.export_price_cny_per_kwh,
        demand_charge_cny_per_kw: w.tariff.demand_charge_cny_per_kw,
        demand_charge_fraction: 7.0 / 30.0,
        period_end: None,
        unmet_cny_per_kwh: 20.0,
        stored_cny_per_kwh: 0.30 / 0.95,
    };
    let plugged = (0..8)
        .map(|i| PluggedCar {
            charger: i,
            wanted_wh: 8_000.0 + 4_000.0 * i as f64,
            departs: at(first + 4 + 3 * i),
            max_w: 22_000.0,
            wish_stated: true,
            taper: None,
        })
        .collect();
    let state = PlanState {
        soc_pct: 45.0,
        month_peak_so_far_w: 60_000.0,
        plugged,
    };
    let arrivals = w
        .sessions
        .iter()
        .filter(|s| s.arrive_step > first)
        .map(|s| ExpectedCar {
            arrives: at(s.arrive_step),
            departs: at(s.depart_step),
            wanted_wh: s.wanted_wh,
            max_w: s.max_w,
        })
        .collect();
    let range = first..first + STEPS;
    let forecast = Forecast {
        start: at(first),
        pv_w: w.pv_available_w[range.clone()].to_vec(),
        building_w: w.building_w[range.clone()].to_vec(),
        import_price_cny_per_kwh: w.tariff.import_price_cny_per_kwh[range].to_vec(),
        arrivals,
    };
    (cfg, state, forecast, at(first) + Duration::minutes(5))
}

fn percentiles(runs: usize) {
    let mut ms: Vec<f64> = (0..runs)
        .map(|k| {
            let (cfg, state, forecast, now) = case(1 + k as u64 % 16);
            let t = Instant::now();
            let p = plan(&cfg, &state, &forecast, now).unwrap();
            let elapsed = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(p.steps.len(), STEPS);
            elapsed
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let (cfg, state, forecast, now) = case(1);
    println!(
        "planner 48 h / 15 min ({STEPS} steps), 8 plugged + {} expected cars, {runs} plans: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (first plan's objective {:.2} CNY)",
        forecast.arrivals.len(),
        q(0.5),
        q(0.99),
        q(1.0),
        plan(&cfg, &state, &forecast, now).unwrap().objective_cny
    );
}

fn bench_planner(c: &mut Criterion) {
    let (cfg, state, forecast, now) = case(1);
    c.bench_function("plan 48 h, 15 min steps, 8 cars", |b| {
        b.iter(|| plan(black_box(&cfg), &state, &forecast, now).unwrap())
    });
    percentiles(200);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_planner
}
criterion_main!(benches);

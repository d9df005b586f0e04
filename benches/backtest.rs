//! Speed of the backtest: simulated seconds per wall second of the policy's closed loop with
//! 8 chargers at 1 s cycles (target >= 1,000,000), and the solve time of the 7-day
//! perfect-foresight optimum of a shipped scenario (target < 2 s).
//!
//! `cargo bench -p station-controller --bench backtest`; without `--bench` (as under
//! `cargo test --benches`) it runs one short pass as a smoke test.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use station_controller::backtest::foresight::{optimum_input, optimum_run};
use station_controller::backtest::optimum::solve;
use station_controller::backtest::run::{
    policy_controller, run_closed_loop, Controller, Uncontrolled,
};
use station_controller::dispatch::Policy;
use station_sim::physics::Plant;
use station_sim::scenario::Scenario;
use station_sim::view::{Command, StationView};
use std::path::Path;
use std::time::{Duration, Instant};

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("simulator/scenarios")
        .join(format!("{name}.toml"));
    match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn closed_loop(name: &str, days: u32, runs: usize) {
    let sc = scenario(name);
    let mut speeds = Vec::with_capacity(runs);
    let mut unc_speeds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut c = policy_controller(Policy::default(), &sc);
        match run_closed_loop(&sc, 1, days, &mut c, 1.0) {
            Ok(r) => speeds.push(r.speed()),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        if let Ok(r) = run_closed_loop(&sc, 1, days, &mut Uncontrolled, 1.0) {
            unc_speeds.push(r.speed());
        }
    }
    println!(
        "backtest/closed_loop {name} ({} chargers, {days} day(s), 1 s cycles): policy {:.0} sim-s/s, \
         uncontrolled {:.0} sim-s/s (median of {runs})",
        sc.chargers.count,
        median(speeds),
        median(unc_speeds)
    );
}

/// Times the wrapped controller's `control` (snapshot, decide, commands).
struct Timed<C> {
    inner: C,
    spent: Duration,
}

impl<C: Controller> Controller for Timed<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn control(&mut self, view: &StationView, out: &mut Vec<Command>) {
        let t = Instant::now();
        self.inner.control(view, out);
        self.spent += t.elapsed();
    }
}

/// Where the time of one cycle goes: the plant's step alone, its view, and the controller.
fn breakdown(name: &str, days: u32) {
    let sc = scenario(name);
    let mut timed = Timed {
        inner: policy_controller(Policy::default(), &sc),
        spent: Duration::ZERO,
    };
    let whole = match run_closed_loop(&sc, 1, days, &mut timed, 1.0) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let total = days as usize * 86_400;
    let mut plant = Plant::new(&sc, 1);
    let t = Instant::now();
    for _ in 0..total {
        plant.step(1.0);
    }
    let step = t.elapsed();
    let plant = Plant::new(&sc, 1);
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..total {
        n += std::hint::black_box(plant.view()).chargers.len();
    }
    let view = t.elapsed();
    let mut buf = plant.view();
    let t = Instant::now();
    for _ in 0..total {
        plant.view_into(std::hint::black_box(&mut buf));
        n += buf.chargers.len();
    }
    let view_into = t.elapsed();
    let per = |d: Duration| d.as_secs_f64() * 1e9 / total as f64;
    println!(
        "backtest/breakdown {name}: whole cycle {:.0} ns = policy controller (snapshot + decide + \
         commands) {:.0} ns + plant.view_into() + plant.step(1 s) + applying commands; alone: \
         plant.step(1 s) {:.0} ns, plant.view() {:.0} ns, plant.view_into() {:.0} ns at the \
         start of the day ({n} charger views)",
        per(whole.wall),
        per(timed.spent),
        per(step),
        per(view),
        per(view_into)
    );
}

fn optimum(name: &str, days: u32, runs: usize) {
    let sc = scenario(name);
    let f = optimum_input(&sc, 1, days);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        if let Err(e) = solve(&f.input) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let scored = optimum_run(&sc, 1, days);
    println!(
        "backtest/optimum {name} ({days} days, {} steps, {} sessions): solve median {:.3} s, \
         max {:.3} s over {runs} runs; cost {:.2} CNY",
        f.input.steps(),
        f.input.sessions.len(),
        median(times.clone()),
        times.iter().cloned().fold(0.0, f64::max),
        scored.map(|o| o.kpis.cost).unwrap_or(f64::NAN)
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        closed_loop("sunny-weekday", 1, 1);
        optimum("sunny-weekday", 1, 1);
        return;
    }
    breakdown("sunny-weekday", 1);
    for name in ["sunny-weekday", "ev-rush", "weekend"] {
        closed_loop(name, 1, 5);
    }
    closed_loop("sunny-weekday", 7, 1);
    for name in ["sunny-weekday", "cloudy-winter-weekday"] {
        optimum(name, 7, 3);
    }
}

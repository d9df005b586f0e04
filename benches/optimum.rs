//! Solve time of the perfect-foresight program on synthetic reference windows.
//!
//! Run with `cargo bench -p station-controller --bench optimum`.

use std::time::{Duration, Instant};

use station_controller::backtest::optimum::{solve, synthetic_reference_window};

fn measure(days: usize, runs: usize) {
    let input = synthetic_reference_window(days, 42);
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut cost = 0.0;
    for _ in 0..runs {
        let start = Instant::now();
        let result = match solve(&input) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{days}-day window failed: {e}");
                std::process::exit(1);
            }
        };
        times.push(start.elapsed());
        cost = result.cost_cny;
    }
    times.sort();
    let median = times[times.len() / 2];
    let min = times[0];
    let max = times[times.len() - 1];
    println!(
        "optimum {days}-day window: {} steps, {} sessions, cost {cost:.2} CNY; \
         solve min {:.3} s, median {:.3} s, max {:.3} s over {runs} runs",
        input.steps(),
        input.sessions.len(),
        min.as_secs_f64(),
        median.as_secs_f64(),
        max.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        measure(1, 1);
    } else {
        measure(1, 9);
        measure(7, 5);
    }
}

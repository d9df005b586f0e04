//! Backtests of the dispatch core against the simulator's plant and the perfect-foresight
//! optimum (see src/backtest).

use station_controller::backtest::cli::{run_backtest, run_cli, BacktestArgs, BacktestError};

fn scenario(name: &str) -> String {
    format!(
        "{}/simulator/scenarios/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
#[ignore]
fn scratch_print_scorecards() {
    for name in [
        "sunny-weekday",
        "ev-rush",
        "weekend",
        "cloudy-winter-weekday",
        "faults-day",
    ] {
        let mut a = BacktestArgs::new(scenario(name));
        a.compare = true;
        let r = run_backtest(&a).unwrap();
        println!("{}", r.to_table());
    }
    let _ = run_cli;
    let _: Option<BacktestError> = None;
}

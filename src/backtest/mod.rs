//! Backtesting: replaying recorded or synthetic days against controllers and benchmarks.

pub mod optimum;

//! Backtesting: replaying recorded or synthetic days against controllers and benchmarks.

pub mod cli;
pub mod faults;
pub mod foresight;
pub mod optimum;
pub mod plant_io;
pub mod run;

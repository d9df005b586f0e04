//! station-controller: the dispatch core, device drivers and the `stationd` daemon.
#![forbid(unsafe_code)]

pub mod backtest;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod devices;
pub mod dispatch;
pub mod fleet;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod mqtt;
pub mod status;
pub mod units;
pub mod validate;

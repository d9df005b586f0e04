//! station-controller: the dispatch core, device drivers and the `stationd` daemon.
#![forbid(unsafe_code)]

pub mod dispatch;
pub mod units;
pub mod validate;

//! station-sim: a software simulator of a PV + second-life battery + EV charging station.
#![forbid(unsafe_code)]

pub mod api;
pub mod faults;
pub mod physics;
pub mod runtime;
pub mod scenario;
pub mod view;
pub mod wire;

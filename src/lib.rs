//! station-controller: the dispatch core, device drivers and the `stationd` daemon.
#![forbid(unsafe_code)]

pub mod clock;
pub mod http;
pub mod status;
pub mod validate;

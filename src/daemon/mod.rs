//! The stationd daemon: device tasks, the control loop, the HTTP surface and shutdown.

pub mod history;
pub mod notify;

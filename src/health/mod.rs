//! Second-life battery health: what the pack really holds, measured from energy between SoC
//! readings, and what that means for dispatch, the planner, the wear price and the end of
//! life. Pure functions of readings and their times; the daemon feeds [`HealthTracker`] once
//! per cycle and keeps the capacity samples in the ledger (`battery_capacity_samples`).
//!
//! * [`estimator`]: capacity samples between rest points and the weighted estimate with its
//!   95 % band.
//! * [`derate`]: the SoC window narrowed by the measured cell spread and the power factors at
//!   the measured module temperatures.
//! * [`trend`]: fade rate, end-of-life projection, wear price per kWh.
//! * [`tracker`]: all of it per cycle, the BMS-disagreement warning, the report.
//!
//! See `docs/battery-health.md` for the method and its limits.

pub mod config;
pub mod derate;
pub mod estimator;
pub mod tracker;
pub mod trend;

pub use config::{HealthConfig, RawHealth};
pub use estimator::{CapacityEstimate, CapacityEstimator, CapacitySample, PackReading};
pub use tracker::{BatteryObservation, HealthReport, HealthTracker};

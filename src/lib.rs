//! station-controller: the dispatch core, device drivers and the `stationd` daemon.
//!
//! A map of the crate (ARCHITECTURE.md has the invariants):
//!
//! - [`units`]: W, Wh, A, V, % as types, one sign convention (grid > 0 import, battery > 0
//!   discharge, PV > 0 generation, loads > 0 consume).
//! - [`dispatch`]: the pure core. `decide(snapshot, policy, state, now) -> Plan`; the checked
//!   [`dispatch::Policy`] it runs on.
//! - [`config`]: the TOML schema (station and policy), environment overrides, and validation
//!   into checked types with every problem named by its dotted key ([`config::Issues`]).
//! - [`devices`]: Modbus drivers (SunSpec PV, battery and meters; the Alfen charger map), the
//!   link with its timeouts and back-off, and reading validation.
//! - [`daemon`]: the imperative shell: the device set, the control cycle
//!   (`read_all -> snapshot -> decide -> write_all -> publish`), status, metrics, history,
//!   systemd notification.
//! - [`http`]: the HTTP API and the dashboard's files.
//! - [`ledger`]: energy flows per 15 minutes, charging sessions, the SQLite store.
//! - [`backtest`]: the closed loop over the simulator's plant, the perfect-foresight optimum,
//!   the `stationd backtest` report.
//! - [`mqtt`]: fleet telemetry on an MQTT broker (retained state, alarms, commands, Home
//!   Assistant discovery, the ledger's energy records with store-and-forward).
//! - [`fleet`]: `stationd fleet`, the page, JSON and metrics over every station on a broker.
//! - [`planner`]: the predictive planner's pure core: a rolling-horizon program on the
//!   optimum's model, handing out per-step budgets.
//! - [`demo`]: simulator and daemon in one process (`stationd demo`, end-to-end tests).
//! - [`clock`]: the only place that reads a clock.
#![forbid(unsafe_code)]

pub mod backtest;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod devices;
pub mod dispatch;
pub mod fleet;
pub mod health;
pub mod http;
pub mod ledger;
pub mod mqtt;
pub mod planner;
pub mod units;

//! `stationd demo`: the bundled simulator in process on loopback, the real daemon against it
//! over Modbus TCP, and the HTTP server with the dashboard. The end-to-end tests use the same
//! wiring.
//!
//! The reference config and the shipped scenarios are compiled into the binary, so the demo runs
//! from anywhere with nothing else installed.

use crate::clock::{Clock, FollowClock};
use crate::config::{self, RawConfig, StationConfig};
use crate::daemon::{self, DaemonHandle, Options};
use station_sim::runtime::{SimAddrs, SimConfig, SimHandle};
use station_sim::scenario::Scenario;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The reference station config (`config/station.toml`).
pub const STATION_TOML: &str = include_str!("../config/station.toml");

/// The shipped scenarios, by name.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "sunny-weekday",
        include_str!("../simulator/scenarios/sunny-weekday.toml"),
    ),
    (
        "cloudy-winter-weekday",
        include_str!("../simulator/scenarios/cloudy-winter-weekday.toml"),
    ),
    (
        "weekend",
        include_str!("../simulator/scenarios/weekend.toml"),
    ),
    (
        "ev-rush",
        include_str!("../simulator/scenarios/ev-rush.toml"),
    ),
    (
        "faults-day",
        include_str!("../simulator/scenarios/faults-day.toml"),
    ),
];

/// Errors setting up the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "--scenario: unknown scenario {name:?} (shipped: {known}; or give a path to a .toml file)"
    )]
    UnknownScenario { name: String, known: String },
    #[error("--scenario {name}: {source}")]
    Scenario {
        name: String,
        source: station_sim::scenario::ScenarioError,
    },
    #[error("--start: expected HH:MM (got {0:?})")]
    Start(String),
    #[error("simulator: {0}")]
    Simulator(#[from] station_sim::runtime::SimError),
    #[error("the bundled config/station.toml: {0}")]
    Config(#[from] config::ConfigError),
    #[error("the bundled config/station.toml for the simulator's devices:\n{0}")]
    Invalid(config::Issues),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
}

/// A scenario by shipped name or by path.
pub fn scenario(name_or_path: &str) -> Result<Scenario, DemoError> {
    if let Some((_, text)) = SCENARIOS.iter().find(|(n, _)| *n == name_or_path) {
        return Scenario::from_toml_str(text).map_err(|source| DemoError::Scenario {
            name: name_or_path.to_string(),
            source,
        });
    }
    let path = Path::new(name_or_path);
    if path.extension().is_some_and(|e| e == "toml") {
        return Scenario::load(path).map_err(|source| DemoError::Scenario {
            name: path.display().to_string(),
            source,
        });
    }
    Err(DemoError::UnknownScenario {
        name: name_or_path.to_string(),
        known: SCENARIOS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The reference config with every device pointed at the simulator's addresses. A simulator
/// with more chargers than the reference station gets more chargers like `charger-1`.
pub fn config_for(addrs: &SimAddrs) -> Result<StationConfig, DemoError> {
    raw_config_for(addrs)?
        .validate()
        .map_err(DemoError::Invalid)
}

/// As [`config_for`], before validation (to write it out as a file, or to adjust it).
pub fn raw_config_for(addrs: &SimAddrs) -> Result<RawConfig, DemoError> {
    let mut raw: RawConfig = config::parse("config/station.toml", STATION_TOML, Vec::new())?;
    if let Some(template) = raw.devices.get("charger-1").cloned() {
        for i in 0..addrs.chargers.len() {
            raw.devices
                .entry(station_sim::runtime::charger_id(i))
                .or_insert_with(|| template.clone());
        }
    }
    for (id, addr) in addrs.devices() {
        if let Some(d) = raw.devices.get_mut(&id) {
            d.host = addr.ip().to_string();
            d.port = addr.port();
        }
    }
    raw.devices.retain(|id, _| addrs.device(id).is_some());
    Ok(raw)
}

/// A running simulator with the daemon controlling it.
pub struct Demo {
    pub sim: SimHandle,
    pub daemon: DaemonHandle,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
}

impl Demo {
    /// Start the simulator on ephemeral loopback ports and the daemon against it. The daemon's
    /// clock follows the simulator's, so tariffs and timeouts line up at any speed.
    pub async fn start(
        scenario: Scenario,
        seed: u64,
        speed: f64,
        api_listen: SocketAddr,
        adjust: impl FnOnce(&mut StationConfig),
    ) -> Result<Demo, DemoError> {
        Self::start_at(scenario, seed, speed, None, api_listen, adjust).await
    }

    /// As [`Demo::start`], starting the simulator at local time `start` ("HH:MM") of the
    /// scenario's date.
    pub async fn start_at(
        scenario: Scenario,
        seed: u64,
        speed: f64,
        start: Option<&str>,
        api_listen: SocketAddr,
        adjust: impl FnOnce(&mut StationConfig),
    ) -> Result<Demo, DemoError> {
        let start = match start {
            Some(s) => Some(
                scenario
                    .resolve_local(s)
                    .ok_or_else(|| DemoError::Start(s.to_string()))?,
            ),
            None => None,
        };
        let sim = station_sim::runtime::spawn(SimConfig {
            start,
            ..SimConfig::ephemeral(scenario, seed, speed)
        })
        .await?;
        Self::attach(sim, speed, api_listen, adjust).await
    }

    /// Start the daemon against an already running simulator (tests inject faults first).
    pub async fn attach(
        sim: SimHandle,
        speed: f64,
        api_listen: SocketAddr,
        adjust: impl FnOnce(&mut StationConfig),
    ) -> Result<Demo, DemoError> {
        Self::attach_with(sim, speed, api_listen, Options::default(), adjust).await
    }

    /// As [`Demo::attach`] with daemon options (a ledger file).
    pub async fn attach_with(
        sim: SimHandle,
        speed: f64,
        api_listen: SocketAddr,
        options: Options,
        adjust: impl FnOnce(&mut StationConfig),
    ) -> Result<Demo, DemoError> {
        let clock = Arc::new(FollowClock::new(sim.time_source(), speed.max(1e-3)));
        Self::attach_clocked(sim, clock, api_listen, options, adjust).await
    }

    /// As [`Demo::attach_with`], with the daemon on `clock` (tests step it to play NTP).
    pub async fn attach_clocked(
        sim: SimHandle,
        clock: Arc<dyn Clock>,
        api_listen: SocketAddr,
        options: Options,
        adjust: impl FnOnce(&mut StationConfig),
    ) -> Result<Demo, DemoError> {
        let mut config = config_for(&sim.addrs)?;
        adjust(&mut config);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let started = daemon::start(
            config,
            clock,
            Options {
                api_listen: Some(api_listen),
                ..options
            },
            cancel.clone(),
            &tracker,
        )
        .await;
        let daemon = match started {
            Ok(d) => d,
            Err(e) => {
                // Stop the simulator cleanly before reporting (dropping it mid-step would log a
                // panic of its clock task ahead of the real error).
                sim.shutdown().await;
                return Err(e.into());
            }
        };
        Ok(Demo {
            sim,
            daemon,
            cancel,
            tracker,
        })
    }

    /// Stop the daemon (it writes safe setpoints and flushes its ledger) and keep the simulator
    /// running, to attach a new daemon (a restart).
    pub async fn stop_daemon(self) -> SimHandle {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.sim
    }

    /// Stop the daemon (it writes safe setpoints), then the simulator.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.sim.shutdown().await;
    }
}

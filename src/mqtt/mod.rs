//! Fleet telemetry over MQTT: the retained state tree, alarms, commands, Home Assistant
//! discovery and the store-and-forward energy records (see the README's "Fleet and Home
//! Assistant" section for the topic table).
//!
//! Two tasks on the daemon's `TaskTracker`, both stopped by its `CancellationToken`:
//! - the I/O task owns the rumqttc event loop: it (re)connects with capped back-off, announces
//!   `status` = `online` (the last will says `offline`), subscribes to the commands and to Home
//!   Assistant's `homeassistant/status`, answers commands, and publishes the ledger's outbox;
//! - the state task watches the published [`Status`] and queues the retained topics that
//!   changed (all of them every `state_interval` and after each reconnect), alarm events and
//!   discovery.
//!
//! The control loop never waits for either: it only replaces the value of a `watch` channel.
//! Requests reach rumqttc through its bounded queue with `try_publish`; when the broker is slow
//! or gone, state messages are dropped (the next change or interval sends them again) and
//! energy records stay in the ledger until the broker acknowledges them.

pub mod commands;
pub mod config;
pub mod discovery;
pub mod outbox;
pub mod topics;

mod io;
mod state;

pub use config::{MqttConfig, RawMqtt};
pub(crate) use io::tls_config as tls_client_config;

use crate::daemon::control::ControlMsg;
use crate::daemon::status::Status;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Problems setting up the MQTT client.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt.ca_file: no usable certificate in it: {0}")]
    Ca(String),
    #[error("mqtt: TLS setup failed: {0}")]
    Tls(String),
}

/// What the I/O task tells the state task about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Link {
    /// Connected to the broker now.
    pub(crate) connected: bool,
    /// Bumped on every new connection: everything retained is sent again.
    pub(crate) epoch: u64,
    /// Bumped when discovery must be sent again (Home Assistant restarted).
    pub(crate) discovery: u64,
}

/// What the MQTT tasks see of the station: its published status and its control loop.
#[derive(Debug, Clone)]
pub struct StationLink {
    pub status: watch::Receiver<Option<Arc<Status>>>,
    pub control: mpsc::Sender<ControlMsg>,
}

/// Start the MQTT tasks for `cfg`. `ledger` is the SQLite ledger whose outbox is published;
/// without one (an in-memory ledger) no energy records are published.
pub fn spawn(
    cfg: MqttConfig,
    station: StationLink,
    ledger: Option<PathBuf>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), MqttError> {
    let options = io::options(&cfg)?;
    let (client, eventloop) = rumqttc::AsyncClient::new(options, 512);
    let (link_tx, link_rx) = watch::channel(Link::default());
    if ledger.is_none() {
        tracing::warn!(
            "mqtt: the ledger is in memory (no --ledger): energy records are not published"
        );
    }
    tracing::info!(host = %cfg.host, port = cfg.port, root = %cfg.root(), tls = cfg.tls_ca.is_some(), "mqtt telemetry enabled");
    let status = station.status.clone();
    let io = io::Io::new(cfg.clone(), client.clone(), station, ledger, link_tx);
    tracker.spawn(io.run(eventloop, cancel.clone()));
    tracker.spawn(state::run(cfg, client, status, link_rx, cancel));
    Ok(())
}

//! The stationd daemon: device drivers, the control loop, the HTTP surface and shutdown.
//!
//! [`start`] validates nothing (the config is already checked), binds the HTTP listener, and
//! spawns two tasks on the caller's `TaskTracker`: the control loop and the HTTP server. Both
//! stop when the `CancellationToken` fires; the loop then writes safe setpoints under the
//! configured deadline. Devices that are offline at start do not stop the daemon: they are
//! brought in when they answer.

pub mod control;
pub mod device_set;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod publish;
pub mod snapshot;
pub mod status;

use crate::clock::Clock;
use crate::config::StationConfig;
use crate::daemon::metrics::Metrics;
use crate::daemon::status::{Status, TodayStatus};
use crate::ledger::{CycleInput, Ledger, LedgerHealth, Totals};
use chrono::{DateTime, Utc};
use control::{ControlMsg, Controller};
use device_set::DeviceSet;
use history::{History, Sample};
use notify::Notifier;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr} for the HTTP API: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
}

/// How the daemon runs, beyond the station config.
#[derive(Debug, Clone)]
pub struct Options {
    /// SQLite ledger path; `None` keeps the ledger in memory.
    pub ledger_path: Option<PathBuf>,
    /// How often the ledger flushes to disk (in station time).
    pub ledger_flush: Duration,
    pub notifier: Notifier,
    /// Override the configured HTTP listen address (tests use port 0).
    pub api_listen: Option<SocketAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ledger_path: None,
            ledger_flush: Duration::from_secs(30),
            notifier: Notifier::from_vars(None, None),
            api_listen: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared between the control loop and the HTTP server.
pub struct Shared {
    status: watch::Sender<Option<Arc<Status>>>,
    history: Mutex<History>,
    metrics: Mutex<Metrics>,
    ledger: Mutex<Ledger>,
    last_cycle: Mutex<Option<Instant>>,
    period: Mutex<Duration>,
    import_limit_w: Mutex<f64>,
    token: Option<String>,
    control: mpsc::Sender<ControlMsg>,
    clock: Arc<dyn Clock>,
}

impl Shared {
    fn publish(&self, status: Status) {
        *lock(&self.last_cycle) = Some(crate::clock::monotonic());
        *lock(&self.import_limit_w) = status.grid.import_limit_w;
        self.status.send_replace(Some(Arc::new(status)));
    }

    /// Station time now (the daemon's clock).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The last published status.
    pub fn status(&self) -> Option<Arc<Status>> {
        self.status.borrow().clone()
    }

    /// A receiver that sees every published status.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Status>>> {
        self.status.subscribe()
    }

    /// Whether the control loop has completed a cycle recently (within 5 periods, at least 5 s).
    pub fn healthy(&self) -> bool {
        let period = *lock(&self.period);
        let limit = (period * 5).max(Duration::from_secs(5));
        lock(&self.last_cycle).is_some_and(|t| t.elapsed() <= limit)
    }

    /// Book the cycle in the ledger and count its flows on `/metrics`.
    fn record_ledger(&self, input: &CycleInput<'_>) {
        let flows = lock(&self.ledger).record(input);
        let mut m = lock(&self.metrics);
        for (from, to, wh) in flows.named() {
            m.add_energy(from, to, wh);
        }
    }

    fn open_session(&self, charger: &str) -> Option<(f64, f64)> {
        lock(&self.ledger)
            .open_session(charger)
            .map(|s| (s.energy_wh, s.green_share_pct))
    }

    fn today(&self, from: DateTime<Utc>, to: DateTime<Utc>, co2: f64) -> TodayStatus {
        let t = lock(&self.ledger).totals(from, to);
        let load_wh = t.sum.building_wh + t.sum.vehicles_wh;
        TodayStatus {
            pv_kwh: t.sum.pv_wh / 1000.0,
            grid_import_kwh: t.sum.import_wh / 1000.0,
            grid_export_kwh: t.sum.export_wh / 1000.0,
            self_consumption_pct: t.self_consumption_pct,
            self_sufficiency_pct: t.self_sufficiency_pct,
            peak_import_kw: t.peak_15min_import_w / 1000.0,
            ev_delivered_kwh: t.sum.vehicles_wh / 1000.0,
            ev_green_share_pct: t.ev_green_share_pct,
            co2_kg: t.sum.co2_kg,
            co2_avoided_kg: ((load_wh - t.sum.import_wh).max(0.0) / 1000.0) * co2,
            cost_cny: t.net_energy_cost_cny,
        }
    }

    /// Ledger queries for the HTTP API.
    pub fn ledger_totals(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Totals {
        lock(&self.ledger).totals(from, to)
    }

    pub fn ledger_buckets(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<crate::ledger::Bucket> {
        lock(&self.ledger).buckets(from, to)
    }

    pub fn ledger_sessions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<crate::ledger::SessionRecord> {
        lock(&self.ledger).sessions(from, to)
    }

    pub fn ledger_health(&self) -> LedgerHealth {
        lock(&self.ledger).health()
    }

    fn flush_ledger(&self) {
        if let Err(e) = lock(&self.ledger).flush() {
            tracing::error!(error = %e, "ledger flush failed");
        }
    }

    fn record_history(&self, at: DateTime<Utc>, sample: Sample) {
        lock(&self.history).record(at, sample);
    }

    /// Minute points of the last `hours`, and the import limit.
    pub fn history(&self, hours: f64) -> (f64, Vec<history::HistoryPoint>) {
        let now = self
            .status()
            .map(|s| s.time)
            .unwrap_or_else(|| DateTime::<Utc>::MIN_UTC);
        (
            *lock(&self.import_limit_w),
            lock(&self.history).since(now, hours),
        )
    }

    fn record_cycle(&self, devices: &DeviceSet, cycle_s: f64) {
        let mut m = lock(&self.metrics);
        m.cycles += 1;
        m.cycle_duration.observe(cycle_s);
        for d in &devices.devices {
            for (latency, ok) in &d.last_requests {
                m.request(d.id(), *latency, *ok);
            }
        }
    }

    /// Prometheus text of everything.
    pub fn metrics_text(&self) -> String {
        let status = self.status();
        crate::daemon::metrics::render(status.as_deref(), &lock(&self.metrics))
    }

    /// A sender to the control loop (the MQTT command handler holds one).
    pub fn control_sender(&self) -> mpsc::Sender<ControlMsg> {
        self.control.clone()
    }

    /// Send a message to the control loop.
    pub async fn control(&self, msg: ControlMsg) -> bool {
        self.control.send(msg).await.is_ok()
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// A started daemon.
#[derive(Clone)]
pub struct DaemonHandle {
    pub api_addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl DaemonHandle {
    /// Replace the running policy (as SIGHUP does after a successful reload).
    pub async fn replace_policy(&self, policy: crate::dispatch::Policy) -> bool {
        self.shared
            .control(ControlMsg::ReplacePolicy(Box::new(policy)))
            .await
    }
}

/// Start the daemon's tasks on `tracker`; they stop when `cancel` fires.
pub async fn start(
    config: StationConfig,
    clock: Arc<dyn Clock>,
    options: Options,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<DaemonHandle, DaemonError> {
    let addr = options.api_listen.unwrap_or(config.api_listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })?;
    let api_addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Bind { addr, source })?;
    if !api_addr.ip().is_loopback() {
        tracing::warn!(%api_addr, "HTTP API listens beyond loopback (api.listen); read endpoints are open to that network");
    }

    let ledger = match &options.ledger_path {
        Some(path) => Ledger::open(path, options.ledger_flush),
        None => Ledger::in_memory(),
    };
    let health = ledger.health();
    if !health.ok {
        tracing::error!(error = ?health.last_error, path = ?health.path, "ledger unavailable; energy is kept in memory and the controller keeps controlling");
    }

    let (control_tx, mut control_rx) = mpsc::channel(16);
    let (status_tx, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        status: status_tx,
        history: Mutex::new(History::default()),
        metrics: Mutex::new(Metrics::default()),
        ledger: Mutex::new(ledger),
        last_cycle: Mutex::new(None),
        period: Mutex::new(Duration::from_secs(1)),
        import_limit_w: Mutex::new(config.policy.grid.import_limit.value()),
        token: config.api_token.clone(),
        control: control_tx,
        clock: clock.clone(),
    });

    tracker.spawn(crate::http::api::serve(
        listener,
        shared.clone(),
        cancel.clone(),
    ));
    if let Some(mqtt) = config.mqtt.clone() {
        let ledger = options.ledger_path.clone();
        let station = crate::mqtt::StationLink {
            status: shared.subscribe(),
            control: shared.control_sender(),
        };
        crate::mqtt::spawn(mqtt, station, ledger, cancel.clone(), tracker)?;
    }

    let mut controller = Controller::new(config, clock, shared.clone());
    let notifier = options.notifier.clone();
    let loop_shared = shared.clone();
    tracker.spawn(async move {
        let mut period = controller.period();
        *lock(&loop_shared.period) = period;
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ready = false;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(msg) = control_rx.recv() => {
                    controller.handle(msg);
                    let p = controller.period();
                    if p != period {
                        period = p;
                        *lock(&loop_shared.period) = period;
                        interval = tokio::time::interval(period);
                        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    }
                    continue;
                }
                _ = interval.tick() => {}
            }
            controller.cycle().await;
            if !ready {
                notifier.ready();
                ready = true;
                tracing::info!("control loop running");
            }
            notifier.watchdog_ping();
        }
        notifier.stopping();
        tracing::info!("stopping: writing safe setpoints");
        controller.shutdown().await;
        loop_shared.flush_ledger();
        tracing::info!("stopped");
    });

    Ok(DaemonHandle { api_addr, shared })
}

//! The stationd daemon: device drivers, the control loop, the HTTP surface and shutdown.
//!
//! [`start`] validates nothing (the config is already checked), binds the HTTP listener, and
//! spawns two tasks on the caller's `TaskTracker`: the control loop and the HTTP server. Both
//! stop when the `CancellationToken` fires; the loop then writes safe setpoints under the
//! configured deadline. Devices that are offline at start do not stop the daemon: they are
//! brought in when they answer.

pub mod control;
pub mod crosscheck;
pub mod device_set;
pub mod health;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod planning;
pub mod publish;
pub mod snapshot;
pub mod status;

use crate::clock::Clock;
use crate::config::StationConfig;
use crate::daemon::metrics::Metrics;
use crate::daemon::status::Status;
use crate::ledger::actor::{CycleRecord, LedgerHandle, LedgerQueryError, LedgerView};
use crate::ledger::{Bucket, Ledger, SessionRecord, Totals};
use chrono::{DateTime, Utc};
use control::{ControlMsg, Controller};
use device_set::DeviceSet;
use history::{History, Sample};
use notify::Notifier;
use serde::Serialize;
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
    metrics: Arc<Mutex<Metrics>>,
    ledger: LedgerHandle,
    last_cycle: Mutex<Option<Instant>>,
    period: Mutex<Duration>,
    import_limit_w: Mutex<f64>,
    token: Option<String>,
    hosts: Vec<String>,
    control: mpsc::Sender<ControlMsg>,
    clock: Arc<dyn Clock>,
    /// The predictive planner, when `[planner]` is on.
    planning: Option<Arc<planning::Planning>>,
    battery_health: health::ReportSlot,
}

/// The ledger's state as `/api/health` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerStatus {
    /// Storage works and the ledger task runs.
    pub ok: bool,
    /// The ledger task runs.
    pub running: bool,
    pub last_error: Option<String>,
    pub path: Option<PathBuf>,
    /// Cycles not booked because the ledger's queue was full.
    pub dropped_cycles: u64,
}

impl Shared {
    fn publish(&self, status: Status) {
        *lock(&self.import_limit_w) = status.grid.import_limit_w;
        self.status.send_replace(Some(Arc::new(status)));
        // Last: whoever sees the loop alive also sees its status.
        *lock(&self.last_cycle) = Some(crate::clock::monotonic());
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

    /// Whether the last cycle completed within `limit` (monotonic time).
    pub fn cycled_within(&self, limit: Duration) -> bool {
        lock(&self.last_cycle)
            .is_some_and(|t| crate::clock::monotonic().saturating_duration_since(t) <= limit)
    }

    /// Whether the control loop has completed a cycle recently (within 5 periods, at least 5 s).
    pub fn healthy(&self) -> bool {
        let period = *lock(&self.period);
        self.cycled_within((period * 5).max(Duration::from_secs(5)))
    }

    /// The watchdog's liveness rule: the last cycle completed within max(2 x period, 5 s).
    pub fn alive(&self) -> bool {
        let period = *lock(&self.period);
        self.cycled_within(liveness_window(period))
    }

    /// Hand the cycle to the ledger task (never blocks; a full queue is counted).
    fn record_ledger(&self, record: CycleRecord) {
        self.ledger.record(record);
    }

    /// Cycles the ledger did not book because its queue was full or its task had stopped.
    pub fn ledger_dropped_cycles(&self) -> u64 {
        self.ledger.dropped()
    }

    /// What the ledger task last published (open sessions, today's totals, health).
    fn ledger_view(&self) -> Arc<LedgerView> {
        self.ledger.view()
    }

    /// Ledger buckets and their totals, from the ledger task.
    pub async fn ledger_buckets(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(Vec<Bucket>, Totals), LedgerQueryError> {
        self.ledger.buckets(from, to).await
    }

    /// Totals over `[from, to)`, from the ledger task.
    pub async fn ledger_totals(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Totals, LedgerQueryError> {
        Ok(self.ledger.buckets(from, to).await?.1)
    }

    /// Sessions overlapping `[from, to)`, from the ledger task.
    pub async fn ledger_sessions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, LedgerQueryError> {
        self.ledger.sessions(from, to).await
    }

    /// The ledger's storage and task health.
    pub fn ledger_status(&self) -> LedgerStatus {
        let v = self.ledger.view();
        LedgerStatus {
            ok: v.health.ok && v.running,
            running: v.running,
            last_error: v.health.last_error.clone(),
            path: v.health.path.clone(),
            dropped_cycles: v.dropped,
        }
    }

    fn record_history(&self, at: DateTime<Utc>, sample: Sample) {
        lock(&self.history).record(at, sample);
    }

    /// Minute points of the last `hours`, and the import limit; no points before the first
    /// cycle.
    pub fn history(&self, hours: f64) -> (f64, Vec<history::HistoryPoint>) {
        let limit = *lock(&self.import_limit_w);
        match self.status() {
            Some(s) => (limit, lock(&self.history).since(s.time, hours)),
            None => (limit, Vec::new()),
        }
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
        let mut m = lock(&self.metrics);
        m.ledger_dropped = self.ledger.dropped();
        let mut text = crate::daemon::metrics::render(status.as_deref(), &m);
        text.push_str(&health::metrics_text(self.battery_health().as_deref()));
        if let Some(p) = self.planning() {
            let now = status.as_ref().map_or_else(|| self.now(), |s| s.time);
            text.push_str(&crate::daemon::metrics::render_planner(
                &p.view(),
                &p.bookings(),
                now,
            ));
        }
        text
    }

    /// The battery health report of the last cycles (`None` before the first).
    pub fn battery_health(&self) -> Option<Arc<crate::health::HealthReport>> {
        lock(&self.battery_health).clone()
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

    /// The predictive planner (None: `[planner]` is off).
    pub fn planning(&self) -> Option<&Arc<planning::Planning>> {
        self.planning.as_ref()
    }

    /// Extra `Host` names the API answers to (`api.hosts`).
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
}

/// How recent the last completed cycle must be for the watchdog to be pinged:
/// max(2 x period, 5 s).
pub fn liveness_window(period: Duration) -> Duration {
    (period * 2).max(Duration::from_secs(5))
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
        tracing::warn!(%api_addr, "HTTP API listens beyond loopback (api.listen); read endpoints are open to that network; list the names and addresses clients use in api.hosts");
    }

    // The ledger stops after the control loop (its last cycle is booked and flushed).
    let ledger_stop = CancellationToken::new();
    let (ledger, metrics, demand, counters) = spawn_ledger(&options, tracker, ledger_stop.clone());
    let (daemon_health, health_slot) = health::start(
        config.battery_health.clone(),
        options.ledger_path.clone(),
        clock.now(),
        ledger_stop.clone(),
        tracker,
    )
    .await;
    let (control_tx, control_rx) = mpsc::channel(16);
    let (status_tx, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        status: status_tx,
        history: Mutex::new(History::default()),
        metrics,
        ledger,
        last_cycle: Mutex::new(None),
        period: Mutex::new(Duration::from_secs(1)),
        import_limit_w: Mutex::new(config.policy.grid.import_limit.value()),
        token: config.api_token.clone(),
        hosts: config.api_hosts.clone(),
        control: control_tx,
        clock: clock.clone(),
        planning: config.planner.clone().map(planning::Planning::new),
        battery_health: health_slot,
    });

    if let (Some(p), Some(path)) = (shared.planning(), options.ledger_path.clone()) {
        planning::load_bookings(p, path).await;
    }
    tracker.spawn(crate::http::api::serve(
        listener,
        shared.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    if let Some(mqtt) = config.mqtt.clone() {
        let ledger = options.ledger_path.clone();
        let station = crate::mqtt::StationLink {
            status: shared.subscribe(),
            control: shared.control_sender(),
        };
        crate::mqtt::spawn(mqtt, station, ledger, cancel.clone(), tracker)?;
    }

    if let Some(p) = shared.planning() {
        tracker.spawn(planning::run(
            p.clone(),
            shared.clone(),
            config.clone(),
            options.ledger_path.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    let background = device_set::Background::new(tracker.clone(), &cancel);
    let mut controller = Controller::new(config, clock, shared.clone(), background);
    if let Some(p) = shared.planning() {
        controller.follow(p.clone());
    }
    controller.set_health(daemon_health);
    if let Some(d) = demand {
        tracing::info!(
            month_peak_w = d.month_peak_w,
            "demand charge: month peak and open window restored from the ledger"
        );
        controller.restore_demand(d);
    }
    controller.restore_counters(&counters);
    if let Some(w) = options.notifier.watchdog() {
        tracker.spawn(watchdog(
            options.notifier.clone(),
            w,
            shared.clone(),
            cancel.clone(),
        ));
    }
    tracker.spawn(control_loop(
        controller,
        control_rx,
        options.notifier.clone(),
        shared.clone(),
        cancel,
        ledger_stop.drop_guard(),
    ));
    Ok(DaemonHandle { api_addr, shared })
}

type Spawned = (
    LedgerHandle,
    Arc<Mutex<Metrics>>,
    Option<crate::dispatch::DemandState>,
    Vec<crate::ledger::SavedCounter>,
);

/// Open the ledger and start its task; the metrics count the flows it books.
fn spawn_ledger(options: &Options, tracker: &TaskTracker, cancel: CancellationToken) -> Spawned {
    let ledger = match &options.ledger_path {
        Some(path) => Ledger::open(path, options.ledger_flush),
        None => Ledger::in_memory(),
    };
    let health = ledger.health();
    if !health.ok {
        tracing::error!(error = ?health.last_error, path = ?health.path, "ledger unavailable; energy is kept in memory and the controller keeps controlling");
    }
    let demand = ledger.demand_state();
    let counters = ledger.counter_state().to_vec();
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    let counted = metrics.clone();
    let handle = crate::ledger::actor::spawn(
        ledger,
        crate::ledger::actor::QUEUE_CAPACITY,
        tracker,
        cancel,
        move |flows| {
            let mut m = lock(&counted);
            for (from, to, wh) in flows.named() {
                m.add_energy(from, to, wh);
            }
        },
    );
    (handle, metrics, demand, counters)
}

/// Ping systemd's watchdog every half period while the control loop is alive
/// ([`Shared::alive`]): a hung loop stops the pings and systemd restarts the daemon.
async fn watchdog(
    notifier: Notifier,
    period: Duration,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval((period / 2).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if shared.alive() {
            notifier.watchdog_ping();
        } else {
            tracing::warn!("watchdog not pinged: no control cycle completed recently");
        }
    }
}

/// The control loop: a cycle per period, control messages between cycles, safe setpoints on
/// cancel.
async fn control_loop(
    mut controller: Controller,
    mut control_rx: mpsc::Receiver<ControlMsg>,
    notifier: Notifier,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    ledger_stop: tokio_util::sync::DropGuard,
) {
    let new_interval = |period: Duration| {
        *lock(&shared.period) = period;
        let mut i = tokio::time::interval(period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    };
    let mut period = controller.period();
    let mut interval = new_interval(period);
    let mut ready = false;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(msg) = control_rx.recv() => {
                controller.handle(msg);
                if controller.period() != period {
                    period = controller.period();
                    interval = new_interval(period);
                }
                continue;
            }
            _ = interval.tick() => {}
        }
        // Shutdown does not wait for a cycle: one under way is cut short (its requests dropped
        // and their connections closed) and the safe setpoints follow at once.
        let cut_short = tokio::select! {
            biased;
            _ = cancel.cancelled() => true,
            _ = controller.cycle() => false,
        };
        if cut_short {
            controller.abandon_cycle();
            break;
        }
        if !ready {
            notifier.ready();
            ready = true;
            tracing::info!("control loop running");
        }
    }
    notifier.stopping();
    tracing::info!("stopping: writing safe setpoints");
    controller.shutdown().await;
    drop(ledger_stop);
    tracing::info!("stopped");
}

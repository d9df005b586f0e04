//! The ledger off the control loop: one blocking task owns the [`Ledger`] (its SQLite writes,
//! flushes and queries) and is fed through a bounded queue.
//!
//! - The control loop hands each cycle over with [`LedgerHandle::record`], which never blocks:
//!   when the queue is full the cycle is dropped, counted ([`LedgerView::dropped`], the metric
//!   `station_ledger_dropped_cycles_total`) and logged.
//! - Queries ([`LedgerHandle::buckets`], [`LedgerHandle::sessions`]) go to the same task with a
//!   reply channel; a full queue answers [`LedgerQueryError::Busy`] at once.
//! - After every cycle the task publishes a small [`LedgerView`] (open sessions, today's totals,
//!   storage health) on a `watch` channel, which the status reads without waiting.
//! - The task stops when the daemon's `CancellationToken` fires (or every sender is gone),
//!   books what is still queued and flushes once more.

use super::{
    Bucket, ChargerInput, CounterCorrection, CycleInput, Flows, Ledger, LedgerHealth, SavedCounter,
    SessionRecord, Totals,
};
use crate::dispatch::DemandState;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cycles and queries the queue holds before `record` drops and queries are refused.
pub const QUEUE_CAPACITY: usize = 256;

/// How long a query may wait for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Today's totals are recomputed every this many cycles (and when the day changes).
const TODAY_EVERY: u32 = 10;

/// One charger of a [`CycleRecord`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerRecord {
    pub id: String,
    pub power_w: f64,
    pub plugged: bool,
}

/// One control cycle as the ledger task books it (an owned [`CycleInput`]), plus the dispatch's
/// demand state to persist and the start of the station's local day for today's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleRecord {
    pub at: DateTime<Utc>,
    pub dt_s: f64,
    pub pv_w: f64,
    pub building_w: f64,
    pub battery_w: f64,
    pub grid_w: f64,
    pub chargers: Vec<ChargerRecord>,
    pub unread_vehicles_w: f64,
    pub estimated: bool,
    /// What the devices' energy counters add to (or take from) the booked energy.
    pub correction: CounterCorrection,
    /// The counters' reconciliation state after this cycle (persisted with the flush).
    pub counters: Vec<SavedCounter>,
    pub price_cny_per_kwh: f64,
    pub export_price_cny_per_kwh: f64,
    pub co2_kg_per_kwh: f64,
    pub demand: Option<DemandState>,
    pub today_from: DateTime<Utc>,
}

/// An open session as the status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSession {
    pub charger_id: String,
    pub energy_wh: f64,
    pub green_share_pct: f64,
}

/// What the ledger task publishes after every cycle it books.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerView {
    pub open_sessions: Vec<OpenSession>,
    /// Totals from the local midnight of the last cycle to that cycle (`None` before any).
    pub today: Option<Totals>,
    pub health: LedgerHealth,
    /// Cycles dropped because the queue was full.
    pub dropped: u64,
    /// The task is running (false once it has stopped, or if it died).
    pub running: bool,
}

/// Why a ledger query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LedgerQueryError {
    #[error("the ledger is busy (its queue is full); retry shortly")]
    Busy,
    #[error("the ledger task is not running")]
    Stopped,
    #[error("the ledger did not answer within {} s", QUERY_TIMEOUT.as_secs())]
    Timeout,
}

enum Msg {
    Record(Box<CycleRecord>),
    Buckets {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reply: oneshot::Sender<(Vec<Bucket>, Totals)>,
    },
    Sessions {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reply: oneshot::Sender<Vec<SessionRecord>>,
    },
}

/// The senders' side of the ledger task. Cheap to clone.
#[derive(Clone)]
pub struct LedgerHandle {
    tx: SyncSender<Msg>,
    view: watch::Receiver<Arc<LedgerView>>,
    dropped: Arc<AtomicU64>,
}

impl LedgerHandle {
    /// Queue one cycle; never blocks. Returns false (and counts the drop) when the queue is full
    /// or the task has stopped.
    pub fn record(&self, record: CycleRecord) -> bool {
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => true,
            Err(e) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n % 100 == 0 {
                    let why = match e {
                        TrySendError::Full(_) => "queue full",
                        TrySendError::Disconnected(_) => "ledger task stopped",
                    };
                    tracing::warn!(dropped = n, why, "ledger: cycle not booked");
                }
                false
            }
        }
    }

    async fn ask<T>(&self, msg: Msg, rx: oneshot::Receiver<T>) -> Result<T, LedgerQueryError> {
        self.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => LedgerQueryError::Busy,
            TrySendError::Disconnected(_) => LedgerQueryError::Stopped,
        })?;
        match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(LedgerQueryError::Stopped),
            Err(_) => Err(LedgerQueryError::Timeout),
        }
    }

    /// Buckets whose start lies in `[from, to)` and their totals.
    pub async fn buckets(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(Vec<Bucket>, Totals), LedgerQueryError> {
        let (reply, rx) = oneshot::channel();
        self.ask(Msg::Buckets { from, to, reply }, rx).await
    }

    /// Sessions overlapping `[from, to)`.
    pub async fn sessions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SessionRecord>, LedgerQueryError> {
        let (reply, rx) = oneshot::channel();
        self.ask(Msg::Sessions { from, to, reply }, rx).await
    }

    /// The last published view, with the current drop count.
    pub fn view(&self) -> Arc<LedgerView> {
        let v = self.view.borrow().clone();
        let dropped = self.dropped.load(Ordering::Relaxed);
        if v.dropped == dropped {
            v
        } else {
            Arc::new(LedgerView {
                dropped,
                ..(*v).clone()
            })
        }
    }

    /// Cycles dropped so far because the queue was full or the task had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Start the ledger task on `tracker`. `on_flows` sees every booked cycle's flows (the daemon
/// counts them on `/metrics`). The task stops when `cancel` fires, after a last flush.
pub fn spawn(
    ledger: Ledger,
    capacity: usize,
    tracker: &TaskTracker,
    cancel: CancellationToken,
    on_flows: impl FnMut(&Flows) + Send + 'static,
) -> LedgerHandle {
    let (handle, task, rx) = channel(ledger, capacity, Box::new(on_flows));
    tracker.spawn_blocking(move || task.run(rx, cancel));
    handle
}

type FlowSink = Box<dyn FnMut(&Flows) + Send>;

/// The handle, the task and the queue between them, not yet running.
fn channel(
    ledger: Ledger,
    capacity: usize,
    on_flows: FlowSink,
) -> (LedgerHandle, Task, Receiver<Msg>) {
    let (tx, rx) = sync_channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let first = LedgerView {
        open_sessions: Vec::new(),
        today: None,
        health: ledger.health(),
        dropped: 0,
        running: true,
    };
    let (view_tx, view) = watch::channel(Arc::new(first));
    let task = Task {
        ledger,
        view: view_tx,
        dropped: dropped.clone(),
        on_flows,
        today: None,
        since_today: 0,
    };
    (LedgerHandle { tx, view, dropped }, task, rx)
}

struct Task {
    ledger: Ledger,
    view: watch::Sender<Arc<LedgerView>>,
    dropped: Arc<AtomicU64>,
    on_flows: FlowSink,
    today: Option<(DateTime<Utc>, Totals)>,
    since_today: u32,
}

impl Task {
    fn run(mut self, rx: Receiver<Msg>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        while let Ok(msg) = rx.try_recv() {
            self.handle(msg);
        }
        if let Err(e) = self.ledger.flush() {
            tracing::error!(error = %e, "ledger: last flush failed");
        }
        let health = self.ledger.health();
        self.view.send_modify(|v| {
            let mut last = (**v).clone();
            last.health = health;
            *v = Arc::new(last);
        });
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Record(r) => {
                self.book(&r);
                self.publish(true);
            }
            Msg::Buckets { from, to, reply } => {
                let buckets = self.ledger.buckets(from, to);
                let totals = Totals::from_buckets(from, to, &buckets);
                // The asker may have given up; nothing to do then.
                let _ = reply.send((buckets, totals));
            }
            Msg::Sessions { from, to, reply } => {
                let _ = reply.send(self.ledger.sessions(from, to));
            }
        }
    }

    fn book(&mut self, r: &CycleRecord) {
        if let Some(d) = r.demand {
            self.ledger.save_demand_state(d);
        }
        if !r.counters.is_empty() {
            self.ledger.save_counters(r.counters.clone());
        }
        if r.dt_s > 0.0 {
            let chargers: Vec<ChargerInput<'_>> = r
                .chargers
                .iter()
                .map(|c| ChargerInput {
                    id: &c.id,
                    power_w: c.power_w,
                    plugged: c.plugged,
                })
                .collect();
            let flows = self.ledger.record(&CycleInput {
                at: r.at,
                dt_s: r.dt_s,
                pv_w: r.pv_w,
                building_w: r.building_w,
                battery_w: r.battery_w,
                grid_w: r.grid_w,
                chargers: &chargers,
                unread_vehicles_w: r.unread_vehicles_w,
                estimated: r.estimated,
                price_cny_per_kwh: r.price_cny_per_kwh,
                export_price_cny_per_kwh: r.export_price_cny_per_kwh,
                co2_kg_per_kwh: r.co2_kg_per_kwh,
            });
            (self.on_flows)(&flows);
        }
        let price = (
            r.price_cny_per_kwh,
            r.export_price_cny_per_kwh,
            r.co2_kg_per_kwh,
        );
        self.ledger.correct(r.at, &r.correction, price);
        self.since_today += 1;
        let new_day = self.today.as_ref().is_none_or(|(f, _)| *f != r.today_from);
        if new_day || self.since_today >= TODAY_EVERY {
            self.since_today = 0;
            let totals = self
                .ledger
                .totals(r.today_from, r.at + TimeDelta::seconds(1));
            self.today = Some((r.today_from, totals));
        }
    }

    fn publish(&self, running: bool) {
        if !running {
            self.view.send_modify(|v| {
                let mut stopped = (**v).clone();
                stopped.running = false;
                *v = Arc::new(stopped);
            });
            return;
        }
        let open_sessions = self
            .ledger
            .open_sessions()
            .map(|s| OpenSession {
                charger_id: s.charger_id.clone(),
                energy_wh: s.energy_wh,
                green_share_pct: s.green_share_pct,
            })
            .collect();
        self.view.send_replace(Arc::new(LedgerView {
            open_sessions,
            today: self.today.as_ref().map(|(_, t)| t.clone()),
            health: self.ledger.health(),
            dropped: self.dropped.load(Ordering::Relaxed),
            running,
        }));
    }
}

impl Drop for Task {
    /// Also on a panic: the view then says the task is not running.
    fn drop(&mut self) {
        self.publish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).unwrap() + TimeDelta::seconds(s)
    }

    fn cycle(s: i64) -> CycleRecord {
        CycleRecord {
            at: t(s),
            dt_s: 1.0,
            pv_w: 10_000.0,
            building_w: 4_000.0,
            battery_w: 0.0,
            grid_w: 1_000.0,
            chargers: vec![ChargerRecord {
                id: "charger-1".into(),
                power_w: 7_000.0,
                plugged: true,
            }],
            unread_vehicles_w: 0.0,
            estimated: false,
            correction: CounterCorrection::default(),
            counters: Vec::new(),
            price_cny_per_kwh: 1.0,
            export_price_cny_per_kwh: 0.3,
            co2_kg_per_kwh: 0.5,
            demand: Some(DemandState {
                window_start_s: Some(t(0).timestamp()),
                energy_ws: 1_000.0 * s as f64,
                month_key: 2026 * 12 + 5,
                month_peak_w: 42_000.0,
            }),
            today_from: t(-8 * 3600),
        }
    }

    #[test]
    fn a_counter_correction_is_booked_into_the_totals_and_the_unaccounted_energy() {
        let (_handle, mut task, _rx) = channel(Ledger::in_memory(), 8, Box::new(|_| {}));
        task.book(&cycle(1));
        let plain = task.ledger.buckets(t(-3600), t(3600))[0].clone();
        task.book(&CycleRecord {
            dt_s: 0.0,
            correction: CounterCorrection {
                pv_wh: 100.0,
                import_wh: 50.0,
                export_wh: 0.0,
                vehicles_wh: 30.0,
            },
            ..cycle(2)
        });
        let b = &task.ledger.buckets(t(-3600), t(3600))[0];
        assert!((b.pv_wh - plain.pv_wh - 100.0).abs() < 1e-9);
        assert!((b.import_wh - plain.import_wh - 50.0).abs() < 1e-9);
        assert!((b.vehicles_wh - plain.vehicles_wh - 30.0).abs() < 1e-9);
        assert!((b.unaccounted_wh - plain.unaccounted_wh - 120.0).abs() < 1e-9);
        assert!((b.import_cost_cny - plain.import_cost_cny - 0.05).abs() < 1e-9);
        assert_eq!(b.covered_s, plain.covered_s);
    }

    #[test]
    fn record_never_waits_a_full_queue_drops_and_counts() {
        let (handle, _task, _rx) = channel(Ledger::in_memory(), 2, Box::new(|_| {}));
        assert!(handle.record(cycle(1)));
        assert!(handle.record(cycle(2)));
        assert!(!handle.record(cycle(3)));
        assert!(!handle.record(cycle(4)));
        assert_eq!(handle.dropped(), 2);
        assert_eq!(handle.view().dropped, 2);
    }

    #[test]
    fn a_stopped_task_refuses_queries_and_counts_records_as_dropped() {
        let (handle, task, rx) = channel(Ledger::in_memory(), 8, Box::new(|_| {}));
        drop((task, rx));
        assert!(!handle.view().running);
        assert!(!handle.record(cycle(1)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(handle.buckets(t(0), t(60)));
        assert!(matches!(r, Err(LedgerQueryError::Stopped)), "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_task_books_answers_publishes_and_flushes_when_cancelled() {
        let dir = std::env::temp_dir().join(format!("stationd-actor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.sqlite");
        let _ = std::fs::remove_file(&path);
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let booked = Arc::new(AtomicU64::new(0));
        let count = booked.clone();
        let handle = spawn(
            Ledger::open(&path, Duration::from_secs(3600)),
            16,
            &tracker,
            cancel.clone(),
            move |_| {
                count.fetch_add(1, Ordering::Relaxed);
            },
        );
        let mut view = handle.view.clone();
        for s in 1..=60 {
            // The test feeds slower than the task books: a full queue here is a failure.
            while !handle.record(cycle(s)) {
                tokio::task::yield_now().await;
            }
        }
        // The query shares the task's queue with the records: while the queue is full it is
        // refused as busy (the API answers 503), so ask again until it is taken.
        let (buckets, totals) = loop {
            match handle.buckets(t(-3600), t(3600)).await {
                Err(LedgerQueryError::Busy) => tokio::task::yield_now().await,
                other => break other.unwrap(),
            }
        };
        assert_eq!(buckets.len(), 1);
        assert!((totals.sum.vehicles_wh - 7_000.0 * 60.0 / 3600.0).abs() < 1e-6);
        assert_eq!(booked.load(Ordering::Relaxed), 60);
        view.wait_for(|v| v.open_sessions.len() == 1 && v.today.is_some())
            .await
            .unwrap();
        let sessions = handle.sessions(t(0), t(3600)).await.unwrap();
        assert_eq!(sessions.len(), 1);
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        assert!(!handle.view().running);
        let reopened = Ledger::open(&path, Duration::from_secs(3600));
        assert_eq!(reopened.demand_state(), cycle(60).demand);
        let mut reopened = reopened;
        assert_eq!(reopened.buckets(t(-3600), t(3600)), buckets);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

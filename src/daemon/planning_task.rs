//! The planning task (see [`super`]): history from the ledger, re-plans when due, one solve at
//! a time on a tracked blocking thread with a time limit.

use super::{
    forecast_config, past_quarter, past_session, planner_config, plugged_cars, read_day_ahead,
    solve, CycleState, PlanView, Planning, WishStatus,
};
use crate::config::StationConfig;
use crate::daemon::Shared;
use crate::dispatch::Policy;
use crate::ledger::store::Store;
use crate::planner::forecast::{quarter_start, Forecasters, HISTORY_DAYS};
use crate::planner::{Forecast, PlanBudgets, PlanState, PLAN_STEP_S};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the last solve started from (to tell events).
struct Mark {
    at: DateTime<Utc>,
    plugged: Vec<bool>,
    wish_version: u64,
}

struct InFlight {
    handle: JoinHandle<Result<PlanBudgets, String>>,
    started: std::time::Instant,
    forecast: Arc<Forecast>,
    timed_out: bool,
    wish_version: u64,
}

struct Task {
    planning: Arc<Planning>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    policy: Policy,
    forecasters: Forecasters,
    /// Charger ids with their power, W, in charger order.
    chargers: Vec<(String, f64)>,
    last: Option<Mark>,
    /// Quarters in which a PV limit was commanded.
    limited: BTreeSet<i64>,
    /// History is booked up to this quarter start.
    learnt_to: Option<DateTime<Utc>>,
    in_flight: Option<InFlight>,
    day_ahead_read: Option<std::time::Instant>,
    view: PlanView,
    /// The wish events the plan in force saw.
    plan_wish_version: u64,
    /// The ledger's database, where the bookings are kept (None: in memory only).
    ledger_path: Option<PathBuf>,
    /// The bookings' version last stored.
    bookings_stored: u64,
}

/// Read the bookings kept in the ledger's database at `path` into `planning` (before the API
/// serves, so ids are not given twice).
pub async fn load_bookings(planning: &Planning, path: PathBuf) {
    let loaded = tokio::task::spawn_blocking(move || Store::open(&path)?.bookings()).await;
    match loaded {
        Ok(Ok(saved)) => {
            tracing::info!(
                bookings = saved.len(),
                "planner bookings loaded from the ledger"
            );
            planning.restore_bookings(saved);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "planner bookings not loaded; none are expected"),
        Err(e) => tracing::warn!(error = %e, "planner bookings not loaded; none are expected"),
    }
}

/// Run the planning task until `cancel` fires; bookings are stored in the ledger's database at
/// `ledger_path` when they change.
pub async fn run(
    planning: Arc<Planning>,
    shared: Arc<Shared>,
    config: StationConfig,
    ledger_path: Option<PathBuf>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let chargers = config
        .chargers()
        .map(|(d, c)| (d.id.clone(), c.rating_a * f64::from(c.phases) * 230.0))
        .collect();
    let mut task = Task {
        forecasters: Forecasters::new(forecast_config(&config, &planning.settings)),
        planning: planning.clone(),
        shared,
        tracker,
        policy: config.policy.clone(),
        chargers,
        last: None,
        limited: BTreeSet::new(),
        learnt_to: None,
        in_flight: None,
        day_ahead_read: None,
        view: PlanView::default(),
        plan_wish_version: 0,
        bookings_stored: planning.bookings_version(),
        ledger_path,
    };
    let mut input = planning.input.subscribe();
    let mut wishes = planning.wish_events.subscribe();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            r = input.changed() => if r.is_err() { break },
            r = wishes.changed() => if r.is_err() { break },
        }
        task.poll_solve();
        task.store_bookings().await;
        let Some(state) = planning.cycle_state() else {
            continue;
        };
        if state.pv_limited {
            task.limited.insert(quarter_start(state.now).timestamp());
        }
        task.learn(state.now).await;
        task.refresh_day_ahead().await;
        if task.due(&state) {
            task.start_solve(&state);
        }
    }
    task.store_bookings().await;
    if let Some(f) = task.in_flight.take() {
        // The blocking thread is tracked: shutdown waits for it; its result is not used.
        drop(f.handle);
    }
}

impl Task {
    fn publish(&self) {
        self.planning
            .output
            .send_replace(Arc::new(self.view.clone()));
    }

    /// Book the ledger's quarters and finished sessions since the last call (28 days at start).
    async fn learn(&mut self, now: DateTime<Utc>) {
        let to = quarter_start(now);
        let from = self
            .learnt_to
            .unwrap_or(to - Duration::days(i64::from(HISTORY_DAYS)));
        if from >= to {
            return;
        }
        let Ok((buckets, _)) = self.shared.ledger_buckets(from, to).await else {
            return;
        };
        let Ok(sessions) = self.shared.ledger_sessions(from, to).await else {
            return;
        };
        let export_limit = self.policy.grid.export_limit.value().max(1.0);
        for b in &buckets {
            let limited = self.limited.contains(&b.start.timestamp());
            if let Some(q) = past_quarter(b, export_limit, limited) {
                self.forecasters.history.observe_quarter(q);
            }
        }
        for s in sessions
            .iter()
            .filter(|s| s.end.is_some_and(|e| e >= from && e < to))
        {
            if let Some(p) = past_session(s, &self.chargers) {
                self.forecasters.history.observe_session(p);
            }
        }
        self.limited = self.limited.split_off(&(to.timestamp() - PLAN_STEP_S));
        self.learnt_to = Some(to);
        self.view.history_quarters = self.forecasters.history.quarters().count();
        self.view.history_sessions = self.forecasters.history.sessions().count();
        self.publish();
    }

    /// Store the bookings when they changed since last stored.
    async fn store_bookings(&mut self) {
        let version = self.planning.bookings_version();
        let Some(path) = self.ledger_path.clone() else {
            return;
        };
        if version == self.bookings_stored {
            return;
        }
        let book = self.planning.bookings();
        let stored = self
            .tracker
            .spawn_blocking(move || Store::open(&path)?.replace_bookings(book.all()))
            .await;
        match stored {
            Ok(Ok(())) => self.bookings_stored = version,
            Ok(Err(e)) => tracing::warn!(error = %e, "planner bookings not stored; retrying"),
            Err(e) => tracing::warn!(error = %e, "planner bookings not stored; retrying"),
        }
    }

    /// Re-read the day-ahead product when due.
    async fn refresh_day_ahead(&mut self) {
        let Some(src) = self.planning.settings.day_ahead.clone() else {
            return;
        };
        let now = crate::clock::monotonic();
        let every = self.planning.settings.day_ahead_refresh;
        if self
            .day_ahead_read
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return;
        }
        self.day_ahead_read = Some(now);
        match read_day_ahead(&src).await {
            Ok(d) => self.forecasters.day_ahead = Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "day-ahead PV forecast not read; the clear-sky forecast runs");
                self.forecasters.day_ahead = None;
            }
        }
    }

    /// Whether to re-plan now: a new quarter, or an event after the debounce time.
    fn due(&self, s: &CycleState) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        let Some(m) = &self.last else {
            return true;
        };
        if quarter_start(s.now) != quarter_start(m.at) {
            return true;
        }
        let debounce = Duration::from_std(self.planning.settings.debounce).unwrap_or_default();
        if s.now - m.at < debounce {
            return false;
        }
        let plugged: Vec<bool> = s.chargers.iter().map(|c| c.plugged).collect();
        plugged != m.plugged
            || *self.planning.wish_events.borrow() != m.wish_version
            || self.soc_drifted(s)
    }

    /// The SoC is further than `soc_drift_pct` from the running step's target.
    fn soc_drifted(&self, s: &CycleState) -> bool {
        let (Some(soc), Some(plan)) = (s.soc_pct, &self.view.plan) else {
            return false;
        };
        crate::planner::live::running_step(plan, s.now).is_some_and(|step| {
            (step.battery_soc_target_pct - soc).abs() > self.planning.settings.soc_drift_pct
        })
    }

    fn start_solve(&mut self, s: &CycleState) {
        let settings = &self.planning.settings;
        let live = self.planning.live_wishes();
        let cars = plugged_cars(&live, s);
        let mut occupied = vec![None; s.chargers.len()];
        for c in &cars {
            occupied[c.charger] = Some(c.departs);
        }
        let tariff = self.policy.tariff.clone();
        let policy = &self.policy;
        let price = |t: DateTime<Utc>| {
            (0..15)
                .map(|m| tariff.price_at(policy.local_minute(t + Duration::minutes(m))))
                .sum::<f64>()
                / 15.0
        };
        self.forecasters.bookings = self.planning.bookings();
        let forecast =
            Arc::new(
                self.forecasters
                    .forecast(s.now, settings.horizon_steps, price, &occupied),
            );
        let cfg = planner_config(&self.policy, settings, s);
        let state = PlanState {
            soc_pct: s.soc_pct.unwrap_or(cfg.battery.soc_min_pct),
            month_peak_so_far_w: s.month_peak_w,
            plugged: cars,
        };
        let wish_version = *self.planning.wish_events.borrow();
        let (fault, now, f) = (settings.fault, s.now, forecast.clone());
        let handle = self
            .tracker
            .spawn_blocking(move || solve(fault, &cfg, &state, &f, now));
        self.last = Some(Mark {
            at: s.now,
            plugged: s.chargers.iter().map(|c| c.plugged).collect(),
            wish_version,
        });
        self.in_flight = Some(InFlight {
            handle,
            started: crate::clock::monotonic(),
            forecast,
            timed_out: false,
            wish_version,
        });
    }

    /// Take a finished solve's result, or note a late one.
    fn poll_solve(&mut self) {
        let Some(f) = &mut self.in_flight else {
            return;
        };
        let elapsed = f.started.elapsed();
        if !f.handle.is_finished() {
            if !f.timed_out && elapsed > self.planning.settings.solve_timeout {
                f.timed_out = true;
                self.view.timeouts += 1;
                self.view.last_error = Some(format!(
                    "solve late: no plan within {} ms",
                    self.planning.settings.solve_timeout.as_millis()
                ));
                tracing::warn!(
                    elapsed_ms = elapsed.as_millis() as u64,
                    "planner solve late; the previous plan is kept"
                );
                self.publish();
            }
            return;
        }
        let Some(f) = self.in_flight.take() else {
            return;
        };
        let result = futures::FutureExt::now_or_never(f.handle)
            .unwrap_or_else(|| Ok(Err("solve task lost".into())))
            .unwrap_or_else(|e| Err(format!("solve task failed: {e}")));
        self.view.solves += 1;
        self.view.last_solve_ms = Some(elapsed.as_secs_f64() * 1000.0);
        match result {
            _ if f.timed_out => {}
            Ok(plan) => {
                self.view.plan = Some(Arc::new(plan));
                self.view.forecast = Some(f.forecast);
                self.plan_wish_version = f.wish_version;
                self.view.last_error = None;
            }
            Err(e) => {
                self.view.failures += 1;
                tracing::warn!(error = %e, "planner solve failed; the previous plan is kept");
                self.view.last_error = Some(e);
            }
        }
        self.view.wishes = self.wish_statuses();
        self.publish();
    }

    /// Each wish against the plan: met, or how much it falls short.
    fn wish_statuses(&self) -> std::collections::BTreeMap<String, WishStatus> {
        let live = self.planning.live_wishes();
        let state = self.planning.cycle_state();
        let mut out = std::collections::BTreeMap::new();
        for (id, w) in &live.wishes {
            let idx = self.chargers.iter().position(|(c, _)| c == id);
            let wanted = match (&state, idx) {
                (Some(s), Some(i)) => s.chargers.get(i).map(|c| live.wish_of(c, s.now).0),
                _ => None,
            }
            .unwrap_or(w.energy_wh);
            let planned = self.view.plan.as_ref().and_then(|p| {
                p.steps
                    .iter()
                    .find_map(|st| st.cars.iter().find(|c| Some(c.charger) == idx))
                    .map(|c| c.by_departure_wh)
                    .or(Some(0.0))
            });
            let (state, reason) = match planned {
                _ if w.version > self.plan_wish_version => ("pending", None),
                None => ("pending", None),
                Some(p) if p + 0.01 * wanted.max(1000.0) >= wanted => ("planned", None),
                Some(p) => (
                    "cannot_meet",
                    Some(format!(
                        "the plan delivers {:.1} of the {:.1} kWh still wanted by {}: the import limit, the battery and the other cars leave no more; charging as fast as allowed",
                        p / 1000.0,
                        wanted / 1000.0,
                        w.departs.format("%H:%M UTC")
                    )),
                ),
            };
            out.insert(
                id.clone(),
                WishStatus {
                    departure: w.departs,
                    energy_kwh: w.energy_wh / 1000.0,
                    state,
                    reason,
                },
            );
        }
        out
    }
}

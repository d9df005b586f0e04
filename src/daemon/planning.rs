//! The predictive planner in the daemon: solves off the control loop, budgets on it.
//!
//! * The control loop hands every cycle's state to the planning task ([`LivePlan::hand_over`]:
//!   SoC, battery limits, the month's peak from the dispatch state's demand tracker, each
//!   charger's car and session energy, whether PV was held back) on a `watch` channel, which
//!   never blocks, and sets the running step's budget of the latest plan
//!   ([`LivePlan::budget`], through [`crate::planner::live`]). The cycle never waits for a
//!   solve.
//! * The planning task ([`run`]) re-plans at every clock-aligned quarter and on events (a car
//!   plugged or unplugged, a session wish set, the SoC more than `soc_drift_pct` from the
//!   plan's), events debounced by `debounce_s`. Each solve runs on a blocking thread of the
//!   daemon's task tracker with a time limit (`solve_timeout_ms`); a solve that fails or is
//!   late keeps the previous plan, which budgets until [`PLAN_VALID_FOR`] after it was made;
//!   then the rule policy runs, and the status says why. One solve runs at a time (a late one
//!   is waited out, its result dropped).
//! * Forecasts ([`crate::planner::forecast`]) learn from the ledger: the last 28 days of
//!   15-minute buckets and sessions at start, then each quarter's bucket and the sessions
//!   that ended. A quarter counts as PV-limited when a PV limit was commanded in it or its
//!   export averaged 90 % of the export limit or more.
//! * Session wishes (`POST /api/chargers/{id}/session`) are kept here per charger until the
//!   car leaves; a car without one wants `default_energy_kwh` and leaves `dwell_h` after it
//!   plugged in.
//! * Bookings (`POST /api/bookings`: cars the operator knows are coming) are kept here too;
//!   the forecasters expect them ([`crate::planner::forecast::bookings`]), a car plugging in
//!   near a booking's time fulfils it, and adding or cancelling one asks for a re-plan. They
//!   are kept in the ledger's database (table `bookings`, rewritten by the planning task after
//!   each change, read back at start), so a restarted daemon still expects them.

use crate::backtest::optimum::{BatteryInput, GridInput};
use crate::config::planner::{DayAheadSource, PlannerSettings, SolveFault};
use crate::config::StationConfig;
use crate::dispatch::policy::BatteryPolicy;
use crate::dispatch::snapshot::HealthLimits;
use crate::dispatch::{ChargerId, DispatchState, Plan, PlanBudget, Policy, Snapshot};
use crate::ledger::{Bucket, SessionRecord};
use crate::planner::forecast::{
    parse_day_ahead, Booking, BookingError, Bookings, ChargerDefaults, ForecastConfig, PastQuarter,
    PastSession,
};
use crate::planner::live::{self, CarNow, StepMeter};
use crate::planner::{plan, Forecast, PlanBudgets, PlanState, PlannerConfig, PluggedCar, Taper};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A plan budgets this long after it was made, at most (then the rule policy runs).
pub const PLAN_VALID_FOR: Duration = Duration::hours(1);

/// Nominal phase voltage, V.
const PHASE_V: f64 = 230.0;

/// What a car's owner asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionWish {
    pub departs: DateTime<Utc>,
    /// Energy wanted from the moment of the wish, Wh.
    pub energy_wh: f64,
    /// The session's energy when the wish was set, Wh.
    pub session_wh_at_wish: f64,
    /// The car's SoC (%) and battery (Wh) when the wish was set, if it gave them (a wish by
    /// target SoC).
    #[serde(skip)]
    pub car_soc: Option<(f64, f64)>,
    /// Which wish event set it (plans made from an earlier state do not judge it).
    #[serde(skip)]
    pub version: u64,
}

/// A charger's wish as the status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WishStatus {
    pub departure: DateTime<Utc>,
    pub energy_kwh: f64,
    /// `pending` (not planned yet), `planned` (the plan meets it), `cannot_meet`.
    pub state: &'static str,
    pub reason: Option<String>,
}

/// One charger in a cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerNow {
    pub id: String,
    pub plugged: bool,
    pub session_wh: f64,
    pub max_w: f64,
}

/// What the control loop hands the planner each cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleState {
    pub now: DateTime<Utc>,
    pub soc_pct: Option<f64>,
    pub usable_wh: f64,
    pub max_charge_w: f64,
    pub max_discharge_w: f64,
    /// The measured health's limits (window, power factors, wear price; neutral by default).
    pub health: HealthLimits,
    pub month_peak_w: f64,
    pub pv_limited: bool,
    pub chargers: Vec<ChargerNow>,
}

/// The planner's published state.
#[derive(Debug, Clone, Default)]
pub struct PlanView {
    pub plan: Option<Arc<PlanBudgets>>,
    pub forecast: Option<Arc<Forecast>>,
    pub solves: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub last_solve_ms: Option<f64>,
    pub last_error: Option<String>,
    /// Per charger id, its wish.
    pub wishes: BTreeMap<String, WishStatus>,
    /// Quarters and finished sessions the forecasters learn from.
    pub history_quarters: usize,
    pub history_sessions: usize,
}

impl PlanView {
    /// Why the rule policy runs or the plan is old (None: a fresh plan runs).
    pub fn reason(&self, now: DateTime<Utc>) -> Option<String> {
        let err = self.last_error.as_deref();
        match (&self.plan, err) {
            (None, None) => Some("planner: no plan yet; the rule policy runs".into()),
            (None, Some(e)) => Some(format!("planner: {e}; the rule policy runs")),
            (Some(p), _) if now - p.made_at > PLAN_VALID_FOR => Some(format!(
                "planner: the plan of {} has expired ({}); the rule policy runs",
                p.made_at.format("%H:%M"),
                err.unwrap_or("no newer plan")
            )),
            (Some(p), Some(e)) => Some(format!(
                "planner: {e}; following the plan of {} until it expires",
                p.made_at.format("%H:%M")
            )),
            (Some(_), None) => None,
        }
    }
}

/// What the planning task and the HTTP handlers share.
pub struct Planning {
    pub settings: PlannerSettings,
    input: watch::Sender<Option<Arc<CycleState>>>,
    output: watch::Sender<Arc<PlanView>>,
    wishes: Mutex<BTreeMap<String, SessionWish>>,
    /// When each charger's car plugged in (station time).
    plugged_at: Mutex<BTreeMap<String, DateTime<Utc>>>,
    /// Bumped on every wish set and booking change (an event for the task).
    wish_events: watch::Sender<u64>,
    bookings: Mutex<Bookings>,
    /// Bumped on every change of the bookings (the planning task stores them).
    bookings_version: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Planning {
    pub fn new(settings: PlannerSettings) -> Arc<Self> {
        Arc::new(Planning {
            settings,
            input: watch::channel(None).0,
            output: watch::channel(Arc::new(PlanView::default())).0,
            wishes: Mutex::new(BTreeMap::new()),
            plugged_at: Mutex::new(BTreeMap::new()),
            wish_events: watch::channel(0).0,
            bookings: Mutex::new(Bookings::default()),
            bookings_version: AtomicU64::new(0),
        })
    }

    fn bookings_changed(&self) {
        self.bookings_version.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the bookings changed.
    pub fn bookings_version(&self) -> u64 {
        self.bookings_version.load(Ordering::Relaxed)
    }

    /// Take back the bookings saved before a restart.
    pub fn restore_bookings(&self, saved: Vec<Booking>) {
        lock(&self.bookings).restore(saved);
    }

    /// Add a booking (the caller checked it against the chargers) and ask for a re-plan;
    /// returns it as booked.
    pub fn add_booking(&self, b: Booking, now: DateTime<Utc>) -> Result<Booking, BookingError> {
        let mut book = lock(&self.bookings);
        book.prune(now);
        let held = Booking {
            id: book.add(b.clone())?,
            fulfilled_by: None,
            ..b
        };
        self.bookings_changed();
        self.wish_events.send_modify(|n| *n += 1);
        Ok(held)
    }

    /// Cancel booking `id` (asking for a re-plan); whether there was one.
    pub fn cancel_booking(&self, id: u64) -> bool {
        let gone = lock(&self.bookings).cancel(id);
        if gone {
            self.bookings_changed();
            self.wish_events.send_modify(|n| *n += 1);
        }
        gone
    }

    /// The bookings held.
    pub fn bookings(&self) -> Bookings {
        lock(&self.bookings).clone()
    }

    /// The latest plan and its state.
    pub fn view(&self) -> Arc<PlanView> {
        self.output.borrow().clone()
    }

    /// The last cycle's state, if any.
    pub fn cycle_state(&self) -> Option<Arc<CycleState>> {
        self.input.borrow().clone()
    }

    /// Set charger `id`'s wish (the caller checked it) and ask for a re-plan.
    pub fn set_wish(&self, id: &str, mut wish: SessionWish) {
        let mut wishes = lock(&self.wishes);
        self.wish_events.send_modify(|n| {
            *n += 1;
            wish.version = *n;
        });
        wishes.insert(id.to_string(), wish);
    }

    /// The wishes and plug-in times, for planning and budgets.
    fn live_wishes(&self) -> LiveWishes {
        LiveWishes {
            settings: self.settings.clone(),
            wishes: lock(&self.wishes).clone(),
            plugged_at: lock(&self.plugged_at).clone(),
        }
    }

    fn forget_wishes(&self, unplugged: &[&str]) {
        let mut w = lock(&self.wishes);
        for id in unplugged {
            w.remove(*id);
        }
    }
}

/// The control loop's side: budgets from the latest plan, state to the task.
pub struct LivePlan {
    planning: Arc<Planning>,
    meter: StepMeter,
    efficiency: f64,
}

impl LivePlan {
    pub fn new(planning: Arc<Planning>, policy: &Policy) -> Self {
        LivePlan {
            planning,
            meter: StepMeter::default(),
            efficiency: policy.battery.round_trip_efficiency.clamp(0.01, 1.0).sqrt(),
        }
    }

    /// The running step's budget (None: no valid plan, the rule policy runs).
    pub fn budget(&mut self, now: DateTime<Utc>, chargers: &[ChargerNow]) -> Option<PlanBudget> {
        let view = self.planning.view();
        let plan = view
            .plan
            .as_ref()
            .filter(|p| now - p.made_at <= PLAN_VALID_FOR)?;
        let live = self.planning.live_wishes();
        let cars: Vec<CarNow> = chargers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.plugged)
            .map(|(i, c)| {
                let (wish_wh, departs) = live.wish_of(c, now);
                CarNow {
                    charger: i,
                    id: ChargerId::new(&c.id),
                    session_wh: c.session_wh,
                    wish_wh,
                    departs,
                    max_w: c.max_w,
                }
            })
            .collect();
        live::budget(plan, now, &cars, &mut self.meter, self.efficiency)
    }

    /// Hand this cycle's state to the planning task (never blocks).
    pub fn hand_over(&mut self, state: CycleState) {
        let unplugged: Vec<&str> = state
            .chargers
            .iter()
            .filter(|c| !c.plugged)
            .map(|c| c.id.as_str())
            .collect();
        self.planning.forget_wishes(&unplugged);
        {
            let mut at = lock(&self.planning.plugged_at);
            for (i, c) in state.chargers.iter().enumerate() {
                if c.plugged {
                    if !at.contains_key(&c.id) {
                        at.insert(c.id.clone(), state.now);
                        let mut book = lock(&self.planning.bookings);
                        let fulfilled = book.plugged(i, state.now);
                        if let Some(id) = fulfilled {
                            tracing::info!(charger = %c.id, booking = id, "a booked car plugged in");
                        }
                        if book.prune(state.now) > 0 || fulfilled.is_some() {
                            self.planning.bookings_changed();
                        }
                    }
                } else {
                    at.remove(&c.id);
                }
            }
        }
        self.planning.input.send_replace(Some(Arc::new(state)));
    }

    /// Why the plan does not run, and the wishes it cannot meet (for the status).
    pub fn reasons(&self, now: DateTime<Utc>) -> Vec<String> {
        let view = self.planning.view();
        view.reason(now)
            .into_iter()
            .chain(view.wishes.iter().filter_map(|(id, w)| {
                let why = w.reason.as_deref()?;
                Some(format!("{id}: the session wish cannot be met: {why}"))
            }))
            .collect()
    }

    /// Charger `id`'s wish and whether the plan meets it (`pending` until a plan that saw
    /// it is made).
    pub fn wish(&self, id: &str) -> Option<WishStatus> {
        let w = lock(&self.planning.wishes).get(id).cloned()?;
        let judged = self.planning.view().wishes.get(id).cloned();
        Some(
            judged
                .filter(|s| s.departure == w.departs)
                .unwrap_or(WishStatus {
                    departure: w.departs,
                    energy_kwh: w.energy_wh / 1000.0,
                    state: "pending",
                    reason: None,
                }),
        )
    }
}

/// The cycle's state for the planner, from the snapshot, plan and dispatch state; `tz` is the
/// site's time zone, whose calendar month the demand charge is billed over.
pub fn cycle_state(
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    snap: &Snapshot,
    plan: &Plan,
    state: &DispatchState,
    session_wh: impl Fn(&str) -> Option<f64>,
) -> CycleState {
    let b = &snap.battery;
    CycleState {
        now,
        soc_pct: b.soc.fresh_value().map(|p| p.value()),
        usable_wh: b.usable_capacity.value(),
        max_charge_w: b.max_charge.value(),
        max_discharge_w: b.max_discharge.value(),
        health: b.health,
        // Built before the cycle's `decide`: the window that ended at this quarter counts.
        month_peak_w: state
            .demand()
            .month_peak_at(now, crate::dispatch::month_key(now, tz))
            .value(),
        pv_limited: plan.pv_limit.value() < 99.5,
        chargers: snap
            .chargers
            .iter()
            .map(|c| ChargerNow {
                id: c.id.to_string(),
                plugged: c.plugged,
                session_wh: session_wh(c.id.as_str()).unwrap_or(0.0),
                // A car seen drawing on fewer phases than the charger has takes less.
                max_w: c.rating.value()
                    * f64::from(state.car_phases(&c.id).unwrap_or(c.phases).min(c.phases))
                    * PHASE_V,
            })
            .collect(),
    }
}

#[path = "planning_task.rs"]
mod task;
pub use task::{load_bookings, run};

/// The forecasters' configuration from the station's.
fn forecast_config(config: &StationConfig, s: &PlannerSettings) -> ForecastConfig {
    let chargers = config
        .chargers()
        .map(|(d, c)| ChargerDefaults {
            dwell: s.dwell_of(&d.id),
            energy_wh: s.default_energy_wh,
            max_w: c.rating_a * f64::from(c.phases) * PHASE_V,
            arrivals: s.arrivals_of(&d.id),
        })
        .collect();
    ForecastConfig {
        site: s.site.clone(),
        tz: config.policy.timezone,
        load_fallback: s.load_fallback.clone(),
        chargers,
    }
}

/// A ledger bucket as a past quarter (None when it covers less than 10 minutes).
fn past_quarter(b: &Bucket, export_limit_w: f64, limited: bool) -> Option<PastQuarter> {
    (b.covered_s >= 600.0).then(|| {
        let w = |wh: f64| wh * 3600.0 / b.covered_s;
        PastQuarter {
            start: b.start,
            pv_w: Some(w(b.pv_wh)),
            building_w: Some(w(b.building_wh)),
            pv_limited: limited || w(b.export_wh) >= 0.9 * export_limit_w,
        }
    })
}

/// A finished ledger session as a past session (None while open or for an unknown charger).
fn past_session(s: &SessionRecord, ids: &[(String, f64)]) -> Option<PastSession> {
    let charger = ids.iter().position(|(id, _)| *id == s.charger_id)?;
    Some(PastSession {
        charger,
        arrived: s.start,
        departed: s.end?,
        energy_wh: s.energy_wh,
        max_w: ids[charger].1,
    })
}

/// The planner's fixed configuration for the state `c`.
fn planner_config(policy: &Policy, s: &PlannerSettings, c: &CycleState) -> PlannerConfig {
    let horizon_s = (s.horizon_steps as i64 * crate::planner::PLAN_STEP_S) as f64;
    PlannerConfig {
        horizon_steps: s.horizon_steps,
        battery: battery_input(&policy.battery, c),
        grid: GridInput {
            import_limit_w: policy.grid.import_budget().value(),
            export_limit_w: policy.grid.export_limit.value(),
        },
        export_price_cny_per_kwh: policy.tariff.export_price_cny_per_kwh,
        demand_charge_cny_per_kw: policy.tariff.demand_charge_cny_per_kw,
        demand_charge_fraction: crate::planner::demand_fraction(
            horizon_s,
            crate::planner::left_in_month_s(c.now, policy.timezone),
            1.0,
        ),
        period_end: crate::planner::period_end(c.now, horizon_s, policy.timezone),
        unmet_cny_per_kwh: s.unmet_cny_per_kwh,
        stored_cny_per_kwh: policy.tariff.min_price()
            / policy.battery.round_trip_efficiency.clamp(0.01, 1.0),
    }
}

/// The planner's battery: the capacity in use, the policy's window narrowed by the measured
/// health (cell spread), the BMS limits scaled by its temperature factors, and the measured
/// wear price when there is one (the policy's otherwise), as dispatch applies them.
fn battery_input(b: &BatteryPolicy, c: &CycleState) -> BatteryInput {
    let h = &c.health;
    let eff = b.round_trip_efficiency.clamp(0.01, 1.0).sqrt();
    let factor = |f: f64| {
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            1.0
        }
    };
    let soc_min = b.soc_min.value().max(h.soc_min.value());
    let soc_max = b.soc_max.value().min(h.soc_max.value()).max(soc_min);
    BatteryInput {
        usable_wh: c.usable_wh.max(0.0),
        soc0_pct: c.soc_pct.unwrap_or(soc_min).clamp(soc_min, soc_max),
        soc_min_pct: soc_min,
        soc_max_pct: soc_max,
        max_charge_w: c.max_charge_w.max(0.0) * factor(h.charge_factor),
        max_discharge_w: c.max_discharge_w.max(0.0) * factor(h.discharge_factor),
        charge_eff: eff,
        discharge_eff: eff,
        wear_cost_cny_per_kwh_discharged: h
            .wear_cny_per_kwh
            .filter(|w| w.is_finite() && *w >= 0.0)
            .unwrap_or_else(|| b.wear_cost_cny_per_kwh(c.usable_wh / 1000.0))
            .min(10.0),
        calendar_cny_per_kwh_h: 0.0,
    }
}

/// The plugged cars of `c` as the plan takes them, with their wishes or the defaults.
fn plugged_cars(live: &LiveWishes, c: &CycleState) -> Vec<PluggedCar> {
    c.chargers
        .iter()
        .enumerate()
        .filter(|(_, ch)| ch.plugged)
        .map(|(i, ch)| {
            let (wanted_wh, departs) = live.wish_of(ch, c.now);
            PluggedCar {
                charger: i,
                wanted_wh,
                departs,
                max_w: ch.max_w,
                wish_stated: live.wishes.contains_key(&ch.id),
                taper: live.taper_of(ch),
            }
        })
        .collect()
}

/// The wishes and plug-in times the task plans with.
struct LiveWishes {
    settings: PlannerSettings,
    wishes: BTreeMap<String, SessionWish>,
    plugged_at: BTreeMap<String, DateTime<Utc>>,
}

impl LiveWishes {
    /// The car's battery and SoC now, when its wish gave them (a target SoC wish): the SoC at
    /// the wish plus what the session delivered since.
    fn taper_of(&self, c: &ChargerNow) -> Option<Taper> {
        let w = self.wishes.get(&c.id)?;
        let (soc_pct, battery_wh) = w.car_soc?;
        let since_wh = (c.session_wh - w.session_wh_at_wish).max(0.0);
        Some(Taper {
            battery_wh,
            soc_pct: (soc_pct + since_wh / battery_wh.max(1.0) * 100.0).min(100.0),
        })
    }

    fn wish_of(&self, c: &ChargerNow, now: DateTime<Utc>) -> (f64, DateTime<Utc>) {
        match self.wishes.get(&c.id) {
            Some(w) => (
                (w.energy_wh - (c.session_wh - w.session_wh_at_wish)).max(0.0),
                w.departs,
            ),
            None => {
                let since = self.plugged_at.get(&c.id).copied().unwrap_or(now);
                (
                    (self.settings.default_energy_wh - c.session_wh).max(0.0),
                    (since + self.settings.dwell_of(&c.id)).max(now + Duration::minutes(15)),
                )
            }
        }
    }
}

/// Solve with the injected fault, if any (tests).
fn solve(
    fault: Option<SolveFault>,
    cfg: &PlannerConfig,
    state: &PlanState,
    forecast: &Forecast,
    now: DateTime<Utc>,
) -> Result<PlanBudgets, String> {
    match fault {
        Some(SolveFault::Fail) => return Err("solve failed: injected failure".into()),
        Some(SolveFault::Delay(d)) => std::thread::sleep(d),
        None => {}
    }
    plan(cfg, state, forecast, now).map_err(|e| format!("solve failed: {e}"))
}

/// Read a day-ahead product (file or http://), parsed.
async fn read_day_ahead(
    src: &DayAheadSource,
) -> Result<crate::planner::forecast::DayAhead, String> {
    let text = match src {
        DayAheadSource::File(p) => tokio::fs::read_to_string(p)
            .await
            .map_err(|e| format!("planner.day_ahead: cannot read {}: {e}", p.display()))?,
        DayAheadSource::Http(url) => http_get(url).await?,
    };
    parse_day_ahead(&text).map_err(|e| format!("planner.day_ahead: {e}"))
}

/// A plain HTTP/1.1 GET (no TLS), the body as text.
async fn http_get(url: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let io = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(4 << 20).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(std::time::Duration::from_secs(10), io)
        .await
        .map_err(|_| format!("planner.day_ahead: {url}: no answer within 10 s"))?
        .map_err(|e| format!("planner.day_ahead: {url}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("planner.day_ahead: {url}: not HTTP"))?;
    let ok = head
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    if !ok {
        return Err(format!(
            "planner.day_ahead: {url}: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!(
            "planner.day_ahead: {url}: chunked answers are not supported"
        ));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn t(m: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 15, 2, 0, 0).unwrap() + Duration::minutes(m)
    }

    fn cycle(health: HealthLimits) -> CycleState {
        CycleState {
            now: t(0),
            soc_pct: Some(12.0),
            usable_wh: 340_000.0,
            max_charge_w: 100_000.0,
            max_discharge_w: 120_000.0,
            health,
            month_peak_w: 0.0,
            pv_limited: false,
            chargers: Vec::new(),
        }
    }

    #[test]
    fn the_planner_takes_the_measured_window_power_factors_and_wear_price() {
        let policy = Policy::default();
        let bp = &policy.battery;
        // Neutral health: the policy's window, the BMS limits and the policy's wear price.
        let plain = battery_input(bp, &cycle(HealthLimits::default()));
        assert_eq!((plain.soc_min_pct, plain.soc_max_pct), (10.0, 90.0));
        assert_eq!(
            (plain.max_charge_w, plain.max_discharge_w),
            (100_000.0, 120_000.0)
        );
        assert_eq!(plain.soc0_pct, 12.0);
        assert_eq!(
            plain.wear_cost_cny_per_kwh_discharged,
            bp.wear_cost_cny_per_kwh(340.0)
        );
        // Cell spread narrowed the window to 15..85, heat halves charging, wear is measured.
        let measured = battery_input(
            bp,
            &cycle(HealthLimits {
                soc_min: crate::units::Percent(15.0),
                soc_max: crate::units::Percent(85.0),
                charge_factor: 0.5,
                discharge_factor: 1.0,
                wear_cny_per_kwh: Some(0.31),
                capacity_wh: Some(340_000.0),
            }),
        );
        assert_eq!((measured.soc_min_pct, measured.soc_max_pct), (15.0, 85.0));
        assert_eq!(measured.soc0_pct, 15.0, "SoC clamped into the window");
        assert_eq!(
            (measured.max_charge_w, measured.max_discharge_w),
            (50_000.0, 120_000.0)
        );
        assert_eq!(measured.wear_cost_cny_per_kwh_discharged, 0.31);
    }

    #[test]
    fn a_car_seen_drawing_on_one_phase_is_planned_at_one_phase_of_power() {
        use crate::dispatch::{decide, DispatchState, Policy, Snapshot};
        use crate::units::{Amps, Watts};
        let now = t(0);
        let mut snap = Snapshot::reference_idle(2);
        let mut state = DispatchState::new();
        let plan = decide(&snap, &Policy::default(), &mut state, now);
        let fresh = cycle_state(now, chrono_tz::Asia::Shanghai, &snap, &plan, &state, |_| {
            None
        });
        assert!((fresh.chargers[0].max_w - 32.0 * 3.0 * PHASE_V).abs() < 1e-6);
        snap.chargers[0].current = [Amps(16.0), Amps(0.0), Amps(0.0)];
        snap.chargers[0].power = Watts(16.0 * PHASE_V);
        let plan = decide(&snap, &Policy::default(), &mut state, now);
        let seen = cycle_state(now, chrono_tz::Asia::Shanghai, &snap, &plan, &state, |_| {
            None
        });
        assert!((seen.chargers[0].max_w - 32.0 * PHASE_V).abs() < 1e-6);
        assert!((seen.chargers[1].max_w - 32.0 * 3.0 * PHASE_V).abs() < 1e-6);
    }

    #[test]
    fn a_session_wish_is_planned_as_stated_and_a_charger_default_as_not() {
        use crate::config::planner::RawPlanner;
        use crate::config::Issues;
        let ids = vec!["charger-1".to_string(), "charger-2".to_string()];
        let raw = RawPlanner {
            enabled: true,
            kwp: 150.0,
            ..RawPlanner::default()
        };
        let settings = raw.validate(&ids, None, &mut Issues::new()).unwrap();
        // charger-1's driver asked for 30 kWh when the session stood at 2 kWh, by target SoC
        // from 40 % of 75 kWh; charger-2 has no wish and has already taken more than the 15 kWh
        // default.
        let wish = SessionWish {
            departs: t(120),
            energy_wh: 30_000.0,
            session_wh_at_wish: 2_000.0,
            car_soc: Some((40.0, 75_000.0)),
            version: 1,
        };
        let live = LiveWishes {
            settings,
            wishes: BTreeMap::from([("charger-1".to_string(), wish)]),
            plugged_at: BTreeMap::new(),
        };
        let charger = |id: &str, session_wh| ChargerNow {
            id: id.into(),
            plugged: true,
            session_wh,
            max_w: 22_000.0,
        };
        let mut c = cycle(HealthLimits::default());
        c.chargers = vec![
            charger("charger-1", 12_000.0),
            charger("charger-2", 20_000.0),
        ];
        let cars = plugged_cars(&live, &c);
        let seen: Vec<(usize, f64, bool)> = cars
            .iter()
            .map(|p| (p.charger, p.wanted_wh, p.wish_stated))
            .collect();
        assert_eq!(seen, [(0, 20_000.0, true), (1, 0.0, false)]);
        // 10 kWh since the wish: 40 % + 10 / 75 of the battery.
        let taper = cars[0].taper.unwrap();
        assert!(
            (taper.soc_pct - (40.0 + 1000.0 / 75.0)).abs() < 1e-9,
            "{taper:?}"
        );
        assert_eq!((taper.battery_wh, cars[1].taper), (75_000.0, None));
    }

    #[test]
    fn a_ledger_bucket_becomes_a_quarter_flagged_when_export_sat_at_its_limit() {
        let mut b = Bucket::empty(t(0));
        b.covered_s = 900.0;
        b.pv_wh = 20_000.0;
        b.building_wh = 10_000.0;
        let q = past_quarter(&b, 100_000.0, false).unwrap();
        assert_eq!(
            (q.pv_w, q.building_w, q.pv_limited),
            (Some(80_000.0), Some(40_000.0), false)
        );
        b.export_wh = 23_000.0; // 92 kW average against a 100 kW limit
        assert!(past_quarter(&b, 100_000.0, false).unwrap().pv_limited);
        b.export_wh = 0.0;
        assert!(past_quarter(&b, 100_000.0, true).unwrap().pv_limited);
        b.covered_s = 300.0;
        assert!(past_quarter(&b, 100_000.0, false).is_none());
    }

    #[test]
    fn only_finished_sessions_of_known_chargers_are_learnt() {
        let ids = vec![
            ("charger-1".to_string(), 22_080.0),
            ("charger-2".to_string(), 11_040.0),
        ];
        let mut s = SessionRecord::new("charger-2", t(0));
        assert!(past_session(&s, &ids).is_none());
        s.end = Some(t(90));
        s.energy_wh = 9_000.0;
        let p = past_session(&s, &ids).unwrap();
        assert_eq!(
            (p.charger, p.departed, p.energy_wh, p.max_w),
            (1, t(90), 9_000.0, 11_040.0)
        );
        let other = SessionRecord {
            end: Some(t(90)),
            ..SessionRecord::new("charger-9", t(0))
        };
        assert!(past_session(&other, &ids).is_none());
    }

    #[tokio::test]
    async fn a_day_ahead_product_is_read_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "404 Not Found"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /pv.csv HTTP/1.1"));
                let body = "start,pv_w\n2026-07-15T02:00:00Z,50000\n";
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let src = DayAheadSource::Http(format!("http://{addr}/pv.csv"));
        let d = read_day_ahead(&src).await.unwrap();
        assert_eq!(d.quarter_w(t(0)), Some(50_000.0));
        let e = read_day_ahead(&src).await.unwrap_err();
        assert!(e.ends_with("HTTP/1.1 404 Not Found"), "{e}");
        server.await.unwrap();
        let e = read_day_ahead(&DayAheadSource::File("/nonexistent/pv.csv".into()))
            .await
            .unwrap_err();
        assert!(
            e.starts_with("planner.day_ahead: cannot read /nonexistent/pv.csv"),
            "{e}"
        );
    }

    #[test]
    fn the_reason_says_whether_a_plan_runs_and_until_when() {
        let mut v = PlanView::default();
        assert_eq!(
            v.reason(t(0)).unwrap(),
            "planner: no plan yet; the rule policy runs"
        );
        v.plan = Some(Arc::new(PlanBudgets {
            made_at: t(0),
            steps: Vec::new(),
            plugged_unmet_wh: 0.0,
            objective_cny: 0.0,
        }));
        assert_eq!(v.reason(t(10)), None);
        v.last_error = Some("solve late: no plan within 500 ms".into());
        assert_eq!(
            v.reason(t(20)).unwrap(),
            "planner: solve late: no plan within 500 ms; following the plan of 02:00 until it expires"
        );
        assert!(v.reason(t(61)).unwrap().contains("has expired"));
    }
}

//! The station's energy ledger: every control cycle's measured powers are split into flows
//! (PV, battery, grid -> building, vehicles, battery, grid), booked into 15-minute UTC buckets and
//! into per-charger charging sessions with their green share, CO2 and cost, and kept in SQLite.
//!
//! # Sessions
//! A session starts on the first cycle in which a charger reports a car connected (`plugged`,
//! see [`plugged_from_state`] for IEC 61851 states) and ends on the first cycle in which it
//! reports none (state A), with `end` = that cycle's time. A charger that is absent from the
//! cycle input for longer than [`Ledger::set_missing_after`] (default 300 s) has its open session
//! closed with `end` = the last time it was seen; the same holds across a restart or an outage
//! of the daemon: a session loaded back whose last sighting is older than that limit is closed
//! at that sighting, and a car still plugged in then starts a new session. Energy a charger
//! reports while no car is
//! connected is booked in the buckets (vehicles) but in no session.
//!
//! Per cycle, the vehicle flows are split between chargers pro rata to their power, so each
//! session gets its own green, grid and battery energy.
//!
//! # Money and CO2
//! Buckets: import cost = measured import x `price_cny_per_kwh`, export revenue = measured export
//! x `export_price_cny_per_kwh`, CO2 = measured import x `co2_kg_per_kwh` (the bill's view).
//! Sessions: direct grid energy at the price and emission factor of the cycle; battery energy at
//! the purchase cost and CO2 of the grid energy stored in it (the battery origin account,
//! [`BatteryOrigin`]: PV-charged energy costs 0 and emits 0); PV energy directly at 0 CNY and
//! 0 kg (PV has no marginal cost; the export revenue it could have earned is not charged).
//!
//! # Persistence and failure
//! Records accumulate in memory; [`Ledger::flush`] writes them in one transaction. `record`
//! flushes by itself when the cycle time `at` has advanced `flush_every` (default 30 s) past the
//! last flush attempt (cycle time, not the wall clock, so replay and tests are deterministic).
//! If the database cannot be opened or written, the error is kept ([`Ledger::health`]), the data
//! stays in memory and the next flush attempt reopens the file and retries. Queries merge the
//! database with what is still in memory.
//!
//! # Estimated flows and counter corrections
//! Every cycle is booked. A cycle with unmeasured terms of the balance (a dead charger, a stale
//! meter, a building meter the cross-check overrules) is booked with them filled in by the
//! caller (`daemon::publish::TermHold`: one from `grid = building + vehicles - pv - battery`,
//! the others held at their last value) and flagged ([`CycleInput::estimated`]); its seconds
//! are counted in the bucket's `estimated_s`. When a device's energy counter (inverter, grid
//! meter, charger meter) is read again, what it rose beyond the energy booked from powers over
//! the same span is booked by [`Ledger::correct`] into the PV, import, export and vehicle
//! totals (and `unaccounted_wh`, the split cannot place it).
//!
//! # Demand charge
//! [`Ledger::save_demand_state`] keeps the dispatch's demand state (open 15-minute window, month
//! peak) and writes it with every flush; [`Ledger::demand_state`] returns it, read back from the
//! database at open, so a restart continues the window and the month's peak.
//!
//! # Off the control loop
//! The daemon does not call the ledger itself: [`actor`] runs it on a blocking task fed by a
//! bounded queue.

pub mod actor;

pub mod flows;
pub mod model;
pub mod outbox;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::dispatch::DemandState;

pub use flows::{split_flows, BatteryOrigin, DischargeOrigin, FlowInput, Flows};
pub use model::{
    bucket_start, buckets_csv, sessions_csv, Bucket, CounterCorrection, SavedCounter,
    SessionRecord, Totals, BUCKET_COLUMNS, BUCKET_S,
};
pub use store::{LedgerError, Store};

/// One charger's reading in a cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargerInput<'a> {
    pub id: &'a str,
    /// Power delivered to the car, >= 0.
    pub power_w: f64,
    /// A car is connected (IEC 61851 states B and C; see [`plugged_from_state`]).
    pub plugged: bool,
}

/// Prices of one cycle: import and export CNY/kWh, grid emissions kg/kWh.
struct Prices {
    import: f64,
    export: f64,
    co2: f64,
}

/// Everything the ledger needs from one control cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CycleInput<'a> {
    /// Time of the measurement; the cycle covers `(at - dt_s, at]` and is booked in the quarter
    /// hour that contains `at`.
    pub at: DateTime<Utc>,
    pub dt_s: f64,
    pub pv_w: f64,
    pub building_w: f64,
    /// > 0 discharge, < 0 charge.
    pub battery_w: f64,
    /// > 0 import, < 0 export.
    pub grid_w: f64,
    pub chargers: &'a [ChargerInput<'a>],
    /// Power of chargers that were not read this cycle, estimated from the balance, W (>= 0):
    /// booked in the buckets' vehicle flows, in no session.
    pub unread_vehicles_w: f64,
    /// One term of the balance was estimated, not measured: the cycle's seconds are counted in
    /// the bucket's `estimated_s`.
    pub estimated: bool,
    pub price_cny_per_kwh: f64,
    pub export_price_cny_per_kwh: f64,
    pub co2_kg_per_kwh: f64,
}

/// Whether an IEC 61851 charger state string means a car is connected: `B*`, `C*` and `D*`
/// (connected, with or without charging / ventilation) are plugged; `A*`, `E`, `F` and anything
/// else are not.
pub fn plugged_from_state(state: &str) -> bool {
    matches!(
        state.trim().as_bytes().first(),
        Some(b'B' | b'b' | b'C' | b'c' | b'D' | b'd')
    )
}

/// Health of the ledger's storage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerHealth {
    /// The last open/flush/read succeeded (always true for an in-memory ledger).
    pub ok: bool,
    /// The last error, with the database path in its text.
    pub last_error: Option<String>,
    /// The database file (`None` for an in-memory ledger).
    pub path: Option<PathBuf>,
}

#[derive(Debug)]
struct ChargerState {
    id: String,
    last_seen: DateTime<Utc>,
    session: Option<SessionRecord>,
}

/// The energy ledger. See the module docs.
#[derive(Debug)]
pub struct Ledger {
    path: Option<PathBuf>,
    store: Option<Store>,
    /// The database's state (open sessions, battery account) has been read back.
    loaded: bool,
    flush_every: Duration,
    missing_after: Duration,
    last_flush_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// Bucket energy not yet in the database (deltas to add), by bucket start in seconds.
    pending: BTreeMap<i64, Bucket>,
    /// Closed sessions not yet in the database.
    closed: Vec<SessionRecord>,
    chargers: Vec<ChargerState>,
    origin: BatteryOrigin,
    demand: Option<DemandState>,
    counters: Vec<SavedCounter>,
}

impl Ledger {
    fn new(path: Option<PathBuf>, flush_every: Duration) -> Self {
        Self {
            path,
            store: None,
            loaded: false,
            flush_every,
            missing_after: Duration::from_secs(300),
            last_flush_at: None,
            last_error: None,
            pending: BTreeMap::new(),
            closed: Vec::new(),
            chargers: Vec::new(),
            origin: BatteryOrigin::default(),
            demand: None,
            counters: Vec::new(),
        }
    }

    /// Opens the ledger stored at `path` (created if missing), reading back open sessions and
    /// the battery origin account. Never fails: a database problem is recorded in
    /// [`Ledger::health`] and retried at every flush.
    pub fn open(path: &Path, flush_every: Duration) -> Ledger {
        let mut ledger = Self::new(Some(path.to_owned()), flush_every);
        // A failure is kept in `health` and retried at the next flush.
        let _ = ledger.ensure_store();
        ledger
    }

    /// A ledger that keeps everything in memory (tests, simulations).
    pub fn in_memory() -> Ledger {
        Self::new(None, Duration::from_secs(30))
    }

    /// How long a charger may be absent from the input before its open session is closed.
    pub fn set_missing_after(&mut self, missing_after: Duration) {
        self.missing_after = missing_after;
    }

    /// One-way battery efficiencies used by the origin account (default 0.95 each).
    pub fn set_battery_efficiency(&mut self, charge: f64, discharge: f64) {
        let fresh = BatteryOrigin::new(charge, discharge);
        self.origin.charge_efficiency = fresh.charge_efficiency;
        self.origin.discharge_efficiency = fresh.discharge_efficiency;
    }

    /// The battery origin account (solar fraction of the stored energy).
    pub fn battery_origin(&self) -> &BatteryOrigin {
        &self.origin
    }

    /// Books one control cycle. Cheap (well under a microsecond for 8 chargers in a release
    /// build); allocates only when a bucket or a session starts or a new charger id appears.
    /// Flushes when `flush_every` of cycle time has passed: such a cycle costs about 0.1 ms,
    /// and up to some tens of ms when SQLite checkpoints its WAL.
    pub fn record(&mut self, input: &CycleInput<'_>) -> Flows {
        let vehicles_w: f64 = input
            .chargers
            .iter()
            .map(|c| non_negative(c.power_w))
            .sum::<f64>()
            + non_negative(input.unread_vehicles_w);
        let f = split_flows(&FlowInput {
            pv_w: input.pv_w,
            building_w: input.building_w,
            vehicles_w,
            battery_w: input.battery_w,
            grid_w: input.grid_w,
            dt_s: input.dt_s,
        });
        let prices = Prices {
            import: non_negative(input.price_cny_per_kwh),
            export: finite(input.export_price_cny_per_kwh),
            co2: non_negative(input.co2_kg_per_kwh),
        };
        self.origin.charge(
            f.pv_to_battery_wh,
            f.grid_to_battery_wh,
            prices.import,
            prices.co2,
        );
        let bat = self.origin.discharge(f.battery_discharge_wh);
        self.book_bucket(input, &f, &bat, &prices);
        self.book_sessions(input, &f, &bat, vehicles_w, &prices);
        self.close_unseen(input.at);
        self.flush_when_due(input.at);
        f
    }

    /// Book a counter correction (see [`CounterCorrection`]) at `at`, priced like a cycle.
    pub fn correct(&mut self, at: DateTime<Utc>, c: &CounterCorrection, price: (f64, f64, f64)) {
        if c.is_zero() || !c.values().iter().all(|v| v.is_finite()) {
            return;
        }
        let price = (
            non_negative(price.0),
            finite(price.1),
            non_negative(price.2),
        );
        let start = bucket_start(at);
        self.pending
            .entry(start.timestamp())
            .or_insert_with(|| Bucket::empty(start))
            .add_correction(c, price);
    }

    /// Add the cycle's flows to the quarter hour that contains it.
    fn book_bucket(
        &mut self,
        input: &CycleInput<'_>,
        f: &Flows,
        bat: &DischargeOrigin,
        p: &Prices,
    ) {
        let vehicles_green = f.pv_to_vehicles_wh + f.battery_to_vehicles_wh * bat.green_fraction;
        let building_green = f.pv_to_building_wh + f.battery_to_building_wh * bat.green_fraction;
        let start = bucket_start(input.at);
        let dt_s = if input.dt_s.is_finite() && input.dt_s > 0.0 {
            input.dt_s
        } else {
            0.0
        };
        self.pending
            .entry(start.timestamp())
            .or_insert_with(|| Bucket::empty(start))
            .add_cycle(
                f,
                dt_s,
                input.estimated,
                vehicles_green,
                building_green,
                non_negative(input.grid_w),
                (p.import, p.export, p.co2),
            );
    }

    /// Open, feed and close each charger's session.
    fn book_sessions(
        &mut self,
        input: &CycleInput<'_>,
        f: &Flows,
        bat: &DischargeOrigin,
        vehicles_w: f64,
        p: &Prices,
    ) {
        let missing_ms = i64::try_from(self.missing_after.as_millis()).unwrap_or(i64::MAX);
        for c in input.chargers {
            let idx = self.charger_index(c.id, input.at);
            let state = &mut self.chargers[idx];
            state.last_seen = input.at;
            // A session whose charger was not seen for too long (the daemon was down, the
            // charger was offline) ended at its last sighting, whatever the charger says now.
            if state
                .session
                .as_ref()
                .is_some_and(|s| (input.at - s.last_seen).num_milliseconds() > missing_ms)
            {
                if let Some(mut s) = state.session.take() {
                    s.end = Some(s.last_seen);
                    self.closed.push(s);
                }
            }
            if !c.plugged {
                if let Some(mut s) = state.session.take() {
                    s.end = Some(input.at);
                    s.last_seen = input.at;
                    self.closed.push(s);
                }
                continue;
            }
            let s = state
                .session
                .get_or_insert_with(|| SessionRecord::new(c.id, input.at));
            s.last_seen = input.at;
            let power = non_negative(c.power_w);
            if vehicles_w > 0.0 && power > 0.0 {
                s.add_share(f, bat, power / vehicles_w, p.import, p.co2);
            }
        }
    }

    fn charger_index(&mut self, id: &str, at: DateTime<Utc>) -> usize {
        match self.chargers.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                self.chargers.push(ChargerState {
                    id: id.to_owned(),
                    last_seen: at,
                    session: None,
                });
                self.chargers.len() - 1
            }
        }
    }

    /// End the sessions of chargers not seen for longer than `missing_after`.
    fn close_unseen(&mut self, at: DateTime<Utc>) {
        let missing_ms = i64::try_from(self.missing_after.as_millis()).unwrap_or(i64::MAX);
        for state in &mut self.chargers {
            if state.session.is_some() && (at - state.last_seen).num_milliseconds() > missing_ms {
                if let Some(mut s) = state.session.take() {
                    s.end = Some(state.last_seen);
                    self.closed.push(s);
                }
            }
        }
    }

    fn flush_when_due(&mut self, at: DateTime<Utc>) {
        if self.path.is_none() {
            return;
        }
        match self.last_flush_at {
            None => self.last_flush_at = Some(at),
            Some(last) => {
                let since_ms = (at - last).num_milliseconds().unsigned_abs();
                if u128::from(since_ms) >= self.flush_every.as_millis() {
                    self.last_flush_at = Some(at);
                    // The error is kept in `health`; the caller goes on regardless.
                    let _ = self.flush();
                }
            }
        }
    }

    /// Opens the database if it is not open, merging its state into memory on the first
    /// successful open. Call only with a path.
    fn ensure_store(&mut self) -> Result<(), LedgerError> {
        if self.store.is_some() {
            return Ok(());
        }
        let path = self.path.clone().unwrap_or_default();
        let store = match Store::open(&path) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&e);
                return Err(e);
            }
        };
        if !self.loaded {
            match store.load() {
                Ok(loaded) => {
                    self.adopt(loaded);
                    self.loaded = true;
                }
                Err(e) => {
                    self.fail(&e);
                    return Err(e);
                }
            }
        }
        self.store = Some(store);
        self.last_error = None;
        Ok(())
    }

    /// Merges state read from the database into memory. Normally memory is empty; when the
    /// database only became readable later, sessions memory already continues are closed at
    /// their last stored sighting and the stored battery energy is added to the account.
    fn adopt(&mut self, loaded: store::Loaded) {
        for s in loaded.open_sessions {
            match self.chargers.iter_mut().find(|c| c.id == s.charger_id) {
                Some(c) if c.session.is_some() => {
                    let mut s = s;
                    s.end = Some(s.last_seen);
                    self.closed.push(s);
                }
                Some(c) => {
                    c.session = Some(s);
                }
                None => self.chargers.push(ChargerState {
                    id: s.charger_id.clone(),
                    last_seen: s.last_seen,
                    session: Some(s),
                }),
            }
        }
        if self.demand.is_none() {
            self.demand = loaded.demand;
        }
        if self.counters.is_empty() {
            self.counters = loaded.counters;
        }
        if let Some(o) = loaded.battery_origin {
            self.origin.green_wh += o.green_wh;
            self.origin.grey_wh += o.grey_wh;
            self.origin.grey_cost_cny += o.grey_cost_cny;
            self.origin.grey_co2_kg += o.grey_co2_kg;
        }
    }

    fn fail(&mut self, e: &LedgerError) {
        tracing::warn!(error = %e, "energy ledger storage problem; keeping records in memory");
        self.last_error = Some(e.to_string());
    }

    /// Writes everything accumulated since the last flush in one transaction. On error the data
    /// stays in memory, the error is kept in [`Ledger::health`] and returned. A no-op for an
    /// in-memory ledger.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        if self.path.is_none() {
            return Ok(());
        }
        self.ensure_store()?;
        let open = self.chargers.iter().filter_map(|c| c.session.as_ref());
        let result = match self.store.as_mut() {
            Some(store) => store.flush(
                self.pending.values(),
                self.closed.iter().chain(open),
                &self.origin,
                self.demand.as_ref(),
                &self.counters,
            ),
            None => return Ok(()),
        };
        match result {
            Ok(()) => {
                self.pending.clear();
                self.closed.clear();
                self.last_error = None;
                Ok(())
            }
            Err(e) => {
                self.fail(&e);
                // Reopen on the next attempt.
                self.store = None;
                Err(e)
            }
        }
    }

    /// Buckets whose start lies in `[from, to)`, oldest first (database + memory).
    pub fn buckets(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Bucket> {
        let mut by_start: BTreeMap<i64, Bucket> = BTreeMap::new();
        if let Some(store) = self.store.as_ref() {
            match store.buckets(from, to) {
                Ok(rows) => {
                    for b in rows {
                        by_start.insert(b.start.timestamp(), b);
                    }
                }
                Err(e) => self.fail(&e),
            }
        }
        let (lo, hi) = (from.timestamp(), to.timestamp());
        let range = if lo < hi { lo..hi } else { lo..lo };
        for (k, b) in self.pending.range(range) {
            by_start
                .entry(*k)
                .and_modify(|x| x.merge(b))
                .or_insert_with(|| b.clone());
        }
        by_start.into_values().collect()
    }

    /// Totals over the buckets whose start lies in `[from, to)`.
    pub fn totals(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Totals {
        let buckets = self.buckets(from, to);
        Totals::from_buckets(from, to, &buckets)
    }

    /// Sessions overlapping `[from, to)`, closed and open, ordered by start.
    pub fn sessions(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<SessionRecord> {
        let mut by_key: BTreeMap<(i64, String), SessionRecord> = BTreeMap::new();
        if let Some(store) = self.store.as_ref() {
            match store.sessions(from, to) {
                Ok(rows) => {
                    for s in rows {
                        by_key.insert((s.start.timestamp_millis(), s.charger_id.clone()), s);
                    }
                }
                Err(e) => self.fail(&e),
            }
        }
        let memory = self
            .closed
            .iter()
            .chain(self.chargers.iter().filter_map(|c| c.session.as_ref()));
        for s in memory.filter(|s| s.overlaps(from, to)) {
            by_key.insert(
                (s.start.timestamp_millis(), s.charger_id.clone()),
                s.clone(),
            );
        }
        by_key.into_values().collect()
    }

    /// Every open session, with its live totals and green share.
    pub fn open_sessions(&self) -> impl Iterator<Item = &SessionRecord> {
        self.chargers.iter().filter_map(|c| c.session.as_ref())
    }

    /// The open session of `charger_id` with its live totals and green share.
    pub fn open_session(&self, charger_id: &str) -> Option<SessionRecord> {
        self.chargers
            .iter()
            .find(|c| c.id == charger_id)
            .and_then(|c| c.session.clone())
    }

    /// The demand charge's state: the last one saved, or the one read back from the database
    /// at open; `None` when neither exists.
    pub fn demand_state(&self) -> Option<DemandState> {
        self.demand
    }

    /// The energy counters' states read back at open (see [`SavedCounter`]).
    pub fn counter_state(&self) -> &[SavedCounter] {
        &self.counters
    }

    /// Keep the energy counters' states; they are written with the next flush, with the energy
    /// booked up to them.
    pub fn save_counters(&mut self, counters: Vec<SavedCounter>) {
        self.counters = counters;
    }

    /// Keep the demand charge's state; it is written with the next flush.
    pub fn save_demand_state(&mut self, state: DemandState) {
        self.demand = Some(state);
    }

    /// Whether the storage is working (always true in memory).
    pub fn healthy(&self) -> bool {
        self.last_error.is_none()
    }

    /// Storage health for the dashboard and logs.
    pub fn health(&self) -> LedgerHealth {
        LedgerHealth {
            ok: self.last_error.is_none(),
            last_error: self.last_error.clone(),
            path: self.path.clone(),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if self.path.is_some() && (!self.pending.is_empty() || !self.closed.is_empty()) {
            let _ = self.flush();
        }
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

fn non_negative(x: f64) -> f64 {
    finite(x).max(0.0)
}

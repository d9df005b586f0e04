//! Forecasters a station can run: what the planner expects of the steps ahead, from what the
//! plant did in the past and a model of the site. Pure: the daemon and the backtest feed the
//! same [`History`] (quarters and car sessions as they were measured) and call
//! [`Forecasters::forecast`] with `now`; nothing here reads a clock, a file or the network.
//!
//! * PV ([`pv`]): a clear-sky model of the configured array ([`solar`]) scaled by the recent
//!   measured/clear-sky ratio; a day-ahead product ([`day_ahead`], parsed here, fetched by the
//!   shell) replaces it for the quarters it covers.
//! * Building load ([`load`]): the median of the same weekday's quarters at the same local
//!   time over the last weeks, plus the last measured quarter's departure from its median,
//!   fading by the residuals' own measured persistence; fallback a weekday/weekend profile
//!   from config.
//! * Cars ([`cars`]): expected arrivals per charger and local hour from past sessions (their
//!   rate, energy, dwell and power); fallback the configured arrivals per charger; chargers
//!   occupied now get no arrival before their car leaves; bookings ([`bookings`]: cars the
//!   operator knows are coming) go in first and count as part of what the statistics expect.
//!
//! All local-time grouping (weekday, time of day) uses the station's time zone.

pub mod bookings;
pub mod cars;
pub mod day_ahead;
pub mod load;
pub mod pv;
pub mod solar;

use crate::planner::{ExpectedCar, Forecast, PLAN_STEP_S};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use std::collections::{BTreeMap, VecDeque};

pub use bookings::{Booking, BookingError, Bookings};
pub use day_ahead::{parse_day_ahead, DayAhead, DayAheadError};
pub use solar::Site;

/// Days of history kept by default.
pub const HISTORY_DAYS: u32 = 28;

/// One measured 15-minute quarter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PastQuarter {
    /// Start of the quarter (aligned to 15 minutes, UTC).
    pub start: DateTime<Utc>,
    /// Average PV output, W (None: not measured).
    pub pv_w: Option<f64>,
    /// Average building load, W (None: not measured).
    pub building_w: Option<f64>,
    /// PV was (or may have been) held below what it could give during the quarter (an export
    /// limit, a PV limit command): its output says nothing about the weather and the PV
    /// forecaster ignores it.
    pub pv_limited: bool,
}

/// One finished car session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PastSession {
    /// Charger index (0-based).
    pub charger: usize,
    pub arrived: DateTime<Utc>,
    pub departed: DateTime<Utc>,
    /// Energy delivered, Wh.
    pub energy_wh: f64,
    /// Highest power the car drew or could draw, W.
    pub max_w: f64,
}

/// The plant's past, bounded to the last `days` days before the newest observation.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    days: u32,
    quarters: BTreeMap<i64, PastQuarter>,
    sessions: VecDeque<PastSession>,
}

impl Default for History {
    fn default() -> Self {
        History::new(HISTORY_DAYS)
    }
}

impl History {
    /// An empty history keeping `days` days.
    pub fn new(days: u32) -> Self {
        History {
            days: days.max(1),
            quarters: BTreeMap::new(),
            sessions: VecDeque::new(),
        }
    }

    fn horizon(&self) -> Duration {
        Duration::days(i64::from(self.days))
    }

    /// Record a quarter (a later observation of the same quarter replaces it); quarters older
    /// than the kept days before the newest are dropped.
    pub fn observe_quarter(&mut self, q: PastQuarter) {
        let key = q.start.timestamp() - q.start.timestamp().rem_euclid(PLAN_STEP_S);
        self.quarters.insert(key, q);
        if let Some((&newest, _)) = self.quarters.last_key_value() {
            let cutoff = newest - self.horizon().num_seconds();
            self.quarters = self.quarters.split_off(&cutoff);
        }
    }

    /// Record a finished session (kept while it departed within the kept days).
    pub fn observe_session(&mut self, s: PastSession) {
        let at = self
            .sessions
            .iter()
            .position(|o| o.arrived > s.arrived)
            .unwrap_or(self.sessions.len());
        self.sessions.insert(at, s);
        let newest = self
            .sessions
            .iter()
            .map(|s| s.departed)
            .chain(self.newest_quarter())
            .max();
        if let Some(newest) = newest {
            let cutoff = newest - self.horizon();
            self.sessions.retain(|s| s.departed >= cutoff);
        }
    }

    fn newest_quarter(&self) -> Option<DateTime<Utc>> {
        self.quarters.last_key_value().map(|(_, q)| q.start)
    }

    /// The quarters kept, oldest first.
    pub fn quarters(&self) -> impl Iterator<Item = &PastQuarter> {
        self.quarters.values()
    }

    /// The quarter starting at `start`, if observed.
    pub fn quarter(&self, start: DateTime<Utc>) -> Option<&PastQuarter> {
        self.quarters.get(&start.timestamp())
    }

    /// The sessions kept, by arrival.
    pub fn sessions(&self) -> impl Iterator<Item = &PastSession> {
        self.sessions.iter()
    }

    /// Local dates with at least one observed quarter (the days the station ran).
    pub fn observed_days(&self, tz: Tz) -> Vec<NaiveDate> {
        let mut days: Vec<NaiveDate> = self
            .quarters
            .values()
            .map(|q| q.start.with_timezone(&tz).date_naive())
            .collect();
        days.dedup();
        days
    }
}

/// A building load profile for when history is short: 24 hourly averages, W, per day type.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProfile {
    pub weekday_w: [f64; 24],
    pub weekend_w: [f64; 24],
}

/// What a charger expects when its session history is short.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerDefaults {
    /// How long a car stays (also the departure assumed for a car plugged in without a wish).
    pub dwell: Duration,
    /// Energy an arriving car wants, Wh.
    pub energy_wh: f64,
    /// Charging power a car draws, W.
    pub max_w: f64,
    /// Local times a car usually arrives (every day; empty: none expected).
    pub arrivals: Vec<NaiveTime>,
}

/// The forecasters' fixed configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    pub site: Site,
    /// The station's time zone (weekdays and times of day).
    pub tz: Tz,
    pub load_fallback: LoadProfile,
    /// One per charger, in charger order.
    pub chargers: Vec<ChargerDefaults>,
}

/// The forecasters with the history they learn from.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecasters {
    pub cfg: ForecastConfig,
    pub history: History,
    /// A day-ahead PV product, when one is configured and was read.
    pub day_ahead: Option<DayAhead>,
    /// The cars the operator booked.
    pub bookings: Bookings,
}

/// Start of the 15-minute quarter containing `t`.
pub fn quarter_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp() - t.timestamp().rem_euclid(PLAN_STEP_S);
    DateTime::from_timestamp(s, 0).unwrap_or(t)
}

/// Starts of the `n` quarters from the one containing `now`.
pub fn quarter_starts(now: DateTime<Utc>, n: usize) -> impl Iterator<Item = DateTime<Utc>> {
    let start = quarter_start(now);
    (0..n).map(move |k| start + Duration::seconds(PLAN_STEP_S * k as i64))
}

impl Forecasters {
    pub fn new(cfg: ForecastConfig) -> Self {
        Forecasters {
            cfg,
            history: History::default(),
            day_ahead: None,
            bookings: Bookings::default(),
        }
    }

    /// PV power available per quarter from the one containing `now`, W.
    pub fn pv_w(&self, now: DateTime<Utc>, n: usize) -> Vec<f64> {
        pv::forecast(&self.cfg, &self.history, self.day_ahead.as_ref(), now, n)
    }

    /// Building load per quarter from the one containing `now`, W.
    pub fn building_w(&self, now: DateTime<Utc>, n: usize) -> Vec<f64> {
        load::forecast(&self.cfg, &self.history, now, n)
    }

    /// Cars expected to arrive after `now` and before `end` (the booked ones still expected
    /// and those the history expects); `occupied_until[i]` is when the car on charger `i`
    /// leaves (None: free now).
    pub fn arrivals(
        &self,
        now: DateTime<Utc>,
        end: DateTime<Utc>,
        occupied_until: &[Option<DateTime<Utc>>],
    ) -> Vec<ExpectedCar> {
        let booked = self.bookings.expected(now);
        cars::forecast(&self.cfg, &self.history, &booked, now, end, occupied_until)
    }

    /// The planner's [`Forecast`] for `horizon_steps` quarters from the one containing `now`;
    /// `import_price(t)` is the tariff's average import price over the quarter starting at `t`,
    /// CNY/kWh.
    pub fn forecast(
        &self,
        now: DateTime<Utc>,
        horizon_steps: usize,
        import_price: impl Fn(DateTime<Utc>) -> f64,
        occupied_until: &[Option<DateTime<Utc>>],
    ) -> Forecast {
        let start = quarter_start(now);
        let end = start + Duration::seconds(PLAN_STEP_S * horizon_steps as i64);
        Forecast {
            start,
            pv_w: self.pv_w(now, horizon_steps),
            building_w: self.building_w(now, horizon_steps),
            import_price_cny_per_kwh: quarter_starts(now, horizon_steps)
                .map(import_price)
                .collect(),
            arrivals: self.arrivals(now, end, occupied_until),
        }
    }
}

/// How much of one quarter's residual carries into the next: the lag-1 autocorrelation of
/// `residuals` (keyed by the quarter's start, Unix seconds) over pairs of consecutive quarters,
/// within [0, `max`]; 0 with fewer than `min_pairs` pairs.
pub fn carry(residuals: &BTreeMap<i64, f64>, min_pairs: usize, max: f64) -> f64 {
    let (mut cross, mut sq, mut pairs) = (0.0, 0.0, 0usize);
    for (k, r) in residuals {
        if let Some(next) = residuals.get(&(k + PLAN_STEP_S)) {
            cross += r * next;
            sq += r * r;
            pairs += 1;
        }
    }
    if pairs < min_pairs || sq <= 0.0 {
        return 0.0;
    }
    (cross / sq).clamp(0.0, max)
}

/// The last residual of `residuals` carried to the quarter starting at `start`: `r x rho^lag`
/// for a lag of at least one quarter, else 0.
fn carried(last: Option<(i64, f64)>, rho: f64, start: DateTime<Utc>) -> f64 {
    last.map_or(0.0, |(at, r)| {
        let lag = (start.timestamp() - at) / PLAN_STEP_S;
        if lag >= 1 {
            r * rho.powi(i32::try_from(lag).unwrap_or(i32::MAX))
        } else {
            0.0
        }
    })
}

/// Median of `xs` (None when empty).
fn median(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[m]
    } else {
        0.5 * (xs[m - 1] + xs[m])
    })
}

//! Car arrivals expected ahead, from past sessions.
//!
//! Per day type (Monday-Friday, weekend) and local hour of arrival, the station's past sessions
//! give a rate (arrivals per observed day of that type), a mean energy, a mean dwell and a mean
//! power. Walking the horizon hour by hour, the expected arrivals accumulate; each time the sum
//! reaches one half, one car is expected (at the middle of that hour's part of the window, with
//! that hour's means, or the day type's means when the hour itself has no session) and one is
//! taken off the sum. So the expected count over a day is the rate rounded, and the cars keep
//! the times, energies and dwells seen. Each expected car takes the lowest-numbered charger
//! free at its arrival (a charger is busy until its plugged car leaves, or an expected car
//! before it does); with none free it is not expected (it would be turned away).
//!
//! The statistics are pooled over the chargers rather than kept per charger: which bay a car
//! takes depends on which are free, and per-charger buckets of a few cars a day are too thin
//! for a mean of a heavy-tailed energy (measured: per-charger buckets forecast about half the
//! car energy of the next day on the sunny weekday scenario). The car's power is the hour's
//! mean, capped at the charger's configured power.
//!
//! With fewer than [`MIN_DAYS`] observed days of the day type the configured
//! [`super::ChargerDefaults`] are used instead: a car at each configured local time on each
//! charger (when free).
//!
//! Bookings ([`super::bookings`]) go first in their hour: each takes its charger (or the
//! lowest-numbered free one, also when its own is still busy) with its energy and power (the charger's defaults where it gives
//! none), and counts as one of the cars the statistics expect in that hour, so a booked car
//! that is one of the station's habits is not expected twice.

use super::bookings::Booking;
use super::{ChargerDefaults, ForecastConfig, History, PastSession};
use crate::planner::ExpectedCar;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use std::collections::HashMap;

/// Observed days of a day type before its statistics replace the configured defaults.
pub const MIN_DAYS: usize = 3;

fn weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// Sums of the sessions in one bucket.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    count: f64,
    energy_wh: f64,
    dwell_s: f64,
    max_w: f64,
}

impl Sums {
    fn add(&mut self, s: &PastSession) {
        self.count += 1.0;
        self.energy_wh += s.energy_wh.max(0.0);
        self.dwell_s += (s.departed - s.arrived).num_seconds().max(0) as f64;
        self.max_w += s.max_w.max(0.0);
    }

    /// Mean energy, dwell and power (None when empty).
    fn means(&self) -> Option<(f64, f64, f64)> {
        (self.count > 0.0).then(|| {
            (
                self.energy_wh / self.count,
                self.dwell_s / self.count,
                self.max_w / self.count,
            )
        })
    }
}

/// Session statistics: per (weekend?, local hour) and per day type.
struct Stats {
    by_hour: HashMap<(bool, u32), Sums>,
    by_type: HashMap<bool, Sums>,
    days: [usize; 2],
}

fn stats(tz: Tz, history: &History) -> Stats {
    let mut days = [0, 0];
    for d in history.observed_days(tz) {
        days[usize::from(weekend(d))] += 1;
    }
    let mut by_hour: HashMap<(bool, u32), Sums> = HashMap::new();
    let mut by_type: HashMap<bool, Sums> = HashMap::new();
    for s in history.sessions() {
        let local = s.arrived.with_timezone(&tz);
        let we = weekend(local.date_naive());
        by_hour.entry((we, local.hour())).or_default().add(s);
        by_type.entry(we).or_default().add(s);
    }
    Stats {
        by_hour,
        by_type,
        days,
    }
}

/// Cars expected to arrive in `[now, end)`: the `booked` ones (still expected at `now`; a late
/// one is expected at `now`) and those the history expects; `occupied_until[i]`: when charger
/// `i`'s car leaves.
pub fn forecast(
    cfg: &ForecastConfig,
    history: &History,
    booked: &[Booking],
    now: DateTime<Utc>,
    end: DateTime<Utc>,
    occupied_until: &[Option<DateTime<Utc>>],
) -> Vec<ExpectedCar> {
    let st = stats(cfg.tz, history);
    let mut walk = Walk {
        tz: cfg.tz,
        chargers: &cfg.chargers,
        busy_until: (0..cfg.chargers.len())
            .map(|i| occupied_until.get(i).copied().flatten().unwrap_or(now))
            .collect(),
        acc: 0.0,
        cars: Vec::new(),
    };
    let mut hour = now - Duration::seconds(i64::from(now.minute() * 60 + now.second()));
    while hour < end {
        let next = hour + Duration::hours(1);
        let (from, to) = (hour.max(now), next.min(end));
        let we = weekend(from.with_timezone(&cfg.tz).date_naive());
        let mut booked_here = 0.0;
        for b in booked
            .iter()
            .filter(|b| (from..to).contains(&b.arrives.max(now)))
        {
            walk.booked(b, now);
            booked_here += 1.0;
        }
        if st.days[usize::from(we)] >= MIN_DAYS {
            walk.learned(&st, we, from, to, booked_here);
        } else {
            walk.configured(from, to);
        }
        hour = next;
    }
    walk.cars.sort_by_key(|c| c.arrives);
    walk.cars
}

/// The walk through the horizon.
struct Walk<'a> {
    tz: Tz,
    chargers: &'a [ChargerDefaults],
    busy_until: Vec<DateTime<Utc>>,
    acc: f64,
    cars: Vec<ExpectedCar>,
}

impl Walk<'_> {
    /// Put a car on the lowest-numbered charger free at `arrives` (or on `only`), staying
    /// `dwell`; `wh_w` gives its energy and power on the charger's defaults. Whether it found
    /// a free charger.
    fn place(
        &mut self,
        only: Option<usize>,
        arrives: DateTime<Utc>,
        dwell: Duration,
        wh_w: impl Fn(&ChargerDefaults) -> (f64, f64),
    ) -> bool {
        let free = (0..self.busy_until.len())
            .filter(|&i| only.is_none_or(|o| o == i))
            .find(|&i| self.busy_until[i] <= arrives);
        let Some(i) = free else { return false };
        let departs = arrives + dwell.max(Duration::minutes(1));
        self.busy_until[i] = departs;
        let (wanted_wh, max_w) = wh_w(&self.chargers[i]);
        self.cars.push(ExpectedCar {
            arrives,
            departs,
            wanted_wh,
            max_w,
        });
        true
    }

    /// A booked car, expected at its time (at `now` when it is late), on its charger or, when
    /// that one is still busy then, on the lowest-numbered free one (where the car would go).
    fn booked(&mut self, b: &Booking, now: DateTime<Utc>) {
        let arrives = b.arrives.max(now);
        let wh_w = |d: &ChargerDefaults| {
            (
                b.energy_wh.unwrap_or(d.energy_wh),
                b.max_w.unwrap_or(d.max_w),
            )
        };
        if !self.place(b.charger, arrives, b.departs - arrives, wh_w) && b.charger.is_some() {
            self.place(None, arrives, b.departs - arrives, wh_w);
        }
    }

    /// The cars the statistics expect in `[from, to)`, of which `booked` are already placed.
    fn learned(
        &mut self,
        st: &Stats,
        we: bool,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        booked: f64,
    ) {
        let hour = st.by_hour.get(&(we, from.with_timezone(&self.tz).hour()));
        let share = (to - from).num_seconds() as f64 / 3600.0;
        let rate = hour.map_or(0.0, |s| s.count) / st.days[usize::from(we)] as f64;
        self.acc += rate * share;
        if booked > 0.0 {
            // As if the statistics had placed them (a placed car leaves at least -0.5).
            self.acc = (self.acc - booked).max(-0.5);
        }
        let means = hour
            .and_then(Sums::means)
            .or_else(|| st.by_type.get(&we).and_then(Sums::means));
        let Some((energy_wh, dwell_s, max_w)) = means else {
            return;
        };
        let arrives = from + (to - from) / 2;
        while self.acc >= 0.5 {
            self.acc -= 1.0;
            let dwell = Duration::seconds(dwell_s.round() as i64);
            self.place(None, arrives, dwell, |d| (energy_wh, max_w.min(d.max_w)));
        }
    }

    fn configured(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        let date = from.with_timezone(&self.tz).date_naive();
        for i in 0..self.chargers.len() {
            let d = self.chargers[i].clone();
            for t in &d.arrivals {
                let at = self
                    .tz
                    .from_local_datetime(&date.and_time(*t))
                    .earliest()
                    .map(|t| t.with_timezone(&Utc));
                if let Some(at) = at.filter(|at| *at >= from && *at < to) {
                    self.place(Some(i), at, d.dwell, |d| (d.energy_wh, d.max_w));
                }
            }
        }
    }
}

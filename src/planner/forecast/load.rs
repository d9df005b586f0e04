//! Building load forecast: per quarter, the median of the measured load at the same local time
//! of day on the last [`WEEKS`] same weekdays. A quarter with no same-weekday sample takes the
//! same day type's (Monday-Friday or weekend) last [`WEEKS`] samples; with none either, the
//! configured profile's hour.
//!
//! The median rather than the mean: a workshop's load steps (a compressor, a lift) come and go
//! at random, and one week's step should not lift every forecast of that quarter.
//!
//! What the median cannot know is what is running now. The last measured quarter's departure
//! from its own median (its residual) carries into the quarters ahead, fading by the lag-1
//! autocorrelation of the residuals the station measured itself ([`persistence`],
//! [`super::carry`]): a load step that is on now is expected to last a while, noise is not.

use super::{carried, carry, median, quarter_starts, ForecastConfig, History};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use std::collections::{BTreeMap, HashMap};

/// Same weekdays the median is taken over.
pub const WEEKS: usize = 4;
/// Pairs of consecutive residuals needed before any carries over (two days of quarters).
const MIN_PAIRS: usize = 192;
/// The most of a residual that carries into the next quarter.
const MAX_CARRY: f64 = 0.9;

fn is_weekend(d: Weekday) -> bool {
    matches!(d, Weekday::Sat | Weekday::Sun)
}

/// Local weekday and 15-minute slot of the day of `t`.
fn slot_of(tz: Tz, t: DateTime<Utc>) -> (NaiveDate, Weekday, u32) {
    let local = t.with_timezone(&tz);
    let slot = (local.hour() * 60 + local.minute()) / 15;
    (local.date_naive(), local.weekday(), slot)
}

/// Measured quarters per (weekday, slot) as (start, W), newest first.
type Samples = HashMap<(Weekday, u32), Vec<(DateTime<Utc>, f64)>>;

fn samples(tz: Tz, history: &History) -> Samples {
    let mut by: Samples = HashMap::new();
    for q in history.quarters() {
        let Some(w) = q.building_w else { continue };
        let (_, wd, slot) = slot_of(tz, q.start);
        by.entry((wd, slot))
            .or_default()
            .push((q.start, w.max(0.0)));
    }
    for v in by.values_mut() {
        v.sort_by_key(|x| std::cmp::Reverse(x.0));
    }
    by
}

/// The load of a quarter at (`wd`, `slot`) from `by`, leaving out the sample that started at
/// `skip` (None: no history for it).
fn from_history(by: &Samples, wd: Weekday, slot: u32, skip: Option<DateTime<Utc>>) -> Option<f64> {
    let kept = |v: &Vec<(DateTime<Utc>, f64)>| -> Vec<f64> {
        v.iter()
            .filter(|x| Some(x.0) != skip)
            .take(WEEKS)
            .map(|x| x.1)
            .collect()
    };
    if let Some(v) = by.get(&(wd, slot)) {
        if let Some(m) = median(&mut kept(v)) {
            return Some(m);
        }
    }
    let mut same_type: Vec<f64> = by
        .iter()
        .filter(|((d, s), _)| *s == slot && is_weekend(*d) == is_weekend(wd))
        .flat_map(|(_, v)| kept(v))
        .collect();
    median(&mut same_type)
}

/// Each measured quarter's departure from the median of the other same-weekday samples, W,
/// keyed by the quarter's start (Unix seconds).
fn residuals(by: &Samples) -> BTreeMap<i64, f64> {
    let mut out = BTreeMap::new();
    for ((wd, slot), v) in by {
        for &(start, w) in v {
            if let Some(m) = from_history(by, *wd, *slot, Some(start)) {
                out.insert(start.timestamp(), w - m);
            }
        }
    }
    out
}

/// How much of a quarter's residual the history says carries into the next: the lag-1
/// autocorrelation of the measured residuals, within [0, 0.9]; 0 before two days of pairs.
pub fn persistence(cfg: &ForecastConfig, history: &History) -> f64 {
    carry(&residuals(&samples(cfg.tz, history)), MIN_PAIRS, MAX_CARRY)
}

/// Building load per quarter from the one containing `now`, W.
pub fn forecast(cfg: &ForecastConfig, history: &History, now: DateTime<Utc>, n: usize) -> Vec<f64> {
    let by = samples(cfg.tz, history);
    let res = residuals(&by);
    let rho = carry(&res, MIN_PAIRS, MAX_CARRY);
    let last = res.last_key_value().map(|(&k, &r)| (k, r));
    quarter_starts(now, n)
        .map(|start| {
            let (_, wd, slot) = slot_of(cfg.tz, start);
            let base = from_history(&by, wd, slot, None).unwrap_or_else(|| {
                let profile = if is_weekend(wd) {
                    &cfg.load_fallback.weekend_w
                } else {
                    &cfg.load_fallback.weekday_w
                };
                profile[(slot / 4).min(23) as usize]
            });
            (base + carried(last, rho, start)).max(0.0)
        })
        .collect()
}

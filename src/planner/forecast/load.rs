//! Building load forecast: per quarter, the median of the measured load at the same local time
//! of day on the last [`WEEKS`] same weekdays. A quarter with no same-weekday sample takes the
//! same day type's (Monday-Friday or weekend) last [`WEEKS`] samples; with none either, the
//! configured profile's hour.
//!
//! The median rather than the mean: a workshop's load steps (a compressor, a lift) come and go
//! at random, and one week's step should not lift every forecast of that quarter.

use super::{median, quarter_starts, ForecastConfig, History};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use std::collections::HashMap;

/// Same weekdays the median is taken over.
pub const WEEKS: usize = 4;

fn is_weekend(d: Weekday) -> bool {
    matches!(d, Weekday::Sat | Weekday::Sun)
}

/// Local weekday and 15-minute slot of the day of `t`.
fn slot_of(tz: Tz, t: DateTime<Utc>) -> (NaiveDate, Weekday, u32) {
    let local = t.with_timezone(&tz);
    let slot = (local.hour() * 60 + local.minute()) / 15;
    (local.date_naive(), local.weekday(), slot)
}

/// Samples per (weekday, slot), newest first.
fn samples(tz: Tz, history: &History) -> HashMap<(Weekday, u32), Vec<f64>> {
    let mut by: HashMap<(Weekday, u32), Vec<(NaiveDate, f64)>> = HashMap::new();
    for q in history.quarters() {
        let Some(w) = q.building_w else { continue };
        let (date, wd, slot) = slot_of(tz, q.start);
        by.entry((wd, slot)).or_default().push((date, w.max(0.0)));
    }
    by.into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|x| std::cmp::Reverse(x.0));
            (k, v.into_iter().map(|(_, w)| w).collect())
        })
        .collect()
}

/// The load of the quarter starting at `start` from `by` (None: no history for it).
fn from_history(by: &HashMap<(Weekday, u32), Vec<f64>>, wd: Weekday, slot: u32) -> Option<f64> {
    if let Some(v) = by.get(&(wd, slot)) {
        let mut recent: Vec<f64> = v.iter().take(WEEKS).copied().collect();
        if let Some(m) = median(&mut recent) {
            return Some(m);
        }
    }
    let mut same_type: Vec<f64> = by
        .iter()
        .filter(|((d, s), _)| *s == slot && is_weekend(*d) == is_weekend(wd))
        .flat_map(|(_, v)| v.iter().take(WEEKS).copied())
        .collect();
    median(&mut same_type)
}

/// Building load per quarter from the one containing `now`, W.
pub fn forecast(cfg: &ForecastConfig, history: &History, now: DateTime<Utc>, n: usize) -> Vec<f64> {
    let by = samples(cfg.tz, history);
    quarter_starts(now, n)
        .map(|start| {
            let (_, wd, slot) = slot_of(cfg.tz, start);
            from_history(&by, wd, slot).unwrap_or_else(|| {
                let profile = if is_weekend(wd) {
                    &cfg.load_fallback.weekend_w
                } else {
                    &cfg.load_fallback.weekday_w
                };
                profile[(slot / 4).min(23) as usize]
            })
        })
        .collect()
}

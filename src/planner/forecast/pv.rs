//! PV forecast: the array's clear-sky output ([`super::solar`]) scaled by how much of it the
//! plant really gave lately.
//!
//! # The ratio
//! Per local day, `ratio = sum(measured) / sum(clear-sky)` over the quarters where the clear sky
//! gives at least [`MIN_CLEAR_SHARE`] of the inverter rating (dawn and dusk say little and
//! their model error is the largest). Quarters flagged [`super::PastQuarter::pv_limited`] are
//! left out: an export limit or a PV limit command holds the output below what the sun gave,
//! and counting it would teach the forecaster that every sunny day is dull. The flag is the
//! feeder's job (the daemon sets it when a PV limit was commanded in the quarter or export sat
//! near the export limit); unflagged curtailment biases the ratio low.
//!
//! Days ahead get the recent ratio: the last [`RATIO_DAYS`] days with at least
//! [`MIN_QUARTERS`] usable quarters, weighted 3:2:1 from the newest (persistence of the
//! weather, with a little smoothing). The rest of today leans on today's own ratio so far
//! (weight `exp(-hours ahead / 3)`) once it has [`MIN_QUARTERS`] usable quarters. Without any
//! usable day the ratio is [`DEFAULT_RATIO`]. A day-ahead product replaces all of this for the
//! quarters it covers.
//!
//! # Passing clouds
//! A cloud over the array now is likely still there in a quarter of an hour. The last usable
//! quarter's ratio less today's ratio (its residual) is added to the ratio of the quarters
//! ahead, fading by `rho` per quarter: the lag-1 autocorrelation of the quarters' residuals
//! against their own day's ratio over the kept days ([`super::carry`], within 0 to 0.9, 0
//! before [`CLOUD_MIN_PAIRS`] pairs).

use super::day_ahead::DayAhead;
use super::solar::clear_sky_quarter_w;
use super::{carried, carry, quarter_starts, ForecastConfig, History};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::BTreeMap;

/// Clear-sky output a quarter needs to count in the ratio, share of the AC rating.
pub const MIN_CLEAR_SHARE: f64 = 0.1;
/// Usable quarters a day needs for its ratio (2 h).
pub const MIN_QUARTERS: usize = 8;
/// Past days the ratio is taken from.
pub const RATIO_DAYS: usize = 7;
/// The highest measured/clear-sky ratio believed (cloud-edge reflections, a model below the
/// array's real output).
const MAX_RATIO: f64 = 1.5;
/// Ratio without history: a middling sky.
pub const DEFAULT_RATIO: f64 = 0.7;
/// Pairs of consecutive daylight quarters needed before a cloud's residual carries over.
pub const CLOUD_MIN_PAIRS: usize = 32;
/// The most of a quarter's ratio residual that carries into the next.
const CLOUD_MAX_CARRY: f64 = 0.9;
/// Hours over which today's own ratio hands over to the recent one.
const TODAY_DECAY_H: f64 = 3.0;

/// Measured and clear-sky energy of one local day's usable quarters.
#[derive(Debug, Default, Clone, Copy)]
struct DaySums {
    measured: f64,
    clear: f64,
    quarters: usize,
}

impl DaySums {
    fn ratio(&self) -> Option<f64> {
        (self.quarters >= MIN_QUARTERS && self.clear > 0.0)
            .then(|| (self.measured / self.clear).clamp(0.0, MAX_RATIO))
    }
}

/// A quarter the ratio can learn from: not flagged as limited, measured, and with a clear-sky
/// output of at least [`MIN_CLEAR_SHARE`] of the rating.
struct Usable {
    start: i64,
    date: NaiveDate,
    measured: f64,
    clear: f64,
}

fn usable(cfg: &ForecastConfig, history: &History) -> Vec<Usable> {
    let floor_w = MIN_CLEAR_SHARE * cfg.site.ac_kw * 1000.0;
    history
        .quarters()
        .filter(|q| !q.pv_limited)
        .filter_map(|q| {
            let measured = q.pv_w?.max(0.0);
            let clear = clear_sky_quarter_w(&cfg.site, q.start);
            (clear >= floor_w).then(|| Usable {
                start: q.start.timestamp(),
                date: q.start.with_timezone(&cfg.tz).date_naive(),
                measured,
                clear,
            })
        })
        .collect()
}

fn day_sums(quarters: &[Usable]) -> BTreeMap<NaiveDate, DaySums> {
    let mut days: BTreeMap<NaiveDate, DaySums> = BTreeMap::new();
    for q in quarters {
        let d = days.entry(q.date).or_default();
        d.measured += q.measured;
        d.clear += q.clear;
        d.quarters += 1;
    }
    days
}

/// The ratio for days after today and today's own ratio so far (if usable).
fn ratios(
    cfg: &ForecastConfig,
    days: &BTreeMap<NaiveDate, DaySums>,
    now: DateTime<Utc>,
) -> (f64, Option<f64>) {
    let today = now.with_timezone(&cfg.tz).date_naive();
    let today_ratio = days.get(&today).and_then(DaySums::ratio);
    let recent: Vec<f64> = days
        .range(..today)
        .rev()
        .filter_map(|(_, d)| d.ratio())
        .take(RATIO_DAYS)
        .collect();
    let (mut sum, mut weights) = (0.0, 0.0);
    for (k, r) in recent.iter().enumerate() {
        let w = (RATIO_DAYS - k) as f64;
        sum += w * r;
        weights += w;
    }
    let base = if weights > 0.0 {
        sum / weights
    } else {
        today_ratio.unwrap_or(DEFAULT_RATIO)
    };
    (base, today_ratio)
}

/// Each usable quarter's measured/clear-sky ratio less its day's ratio (`day_ratio` of its
/// local date; quarters of a day without one are left out), keyed by the quarter's start.
fn ratio_residuals(
    quarters: &[Usable],
    day_ratio: impl Fn(NaiveDate) -> Option<f64>,
) -> BTreeMap<i64, f64> {
    quarters
        .iter()
        .filter_map(|q| Some((q.start, q.measured / q.clear - day_ratio(q.date)?)))
        .collect()
}

/// What passing clouds leave for the quarters ahead: the persistence of the quarters' ratio
/// residuals over the kept days ([`super::carry`]), and today's last residual against the ratio
/// the forecast uses for today (its own once usable, else the recent one).
fn cloud_carry(
    quarters: &[Usable],
    days: &BTreeMap<NaiveDate, DaySums>,
    today: NaiveDate,
    today_ratio: f64,
) -> (f64, Option<(i64, f64)>) {
    let rho = carry(
        &ratio_residuals(quarters, |d| days.get(&d).and_then(DaySums::ratio)),
        CLOUD_MIN_PAIRS,
        CLOUD_MAX_CARRY,
    );
    let last = quarters
        .iter()
        .rev()
        .find(|q| q.date == today)
        .map(|q| (q.start, q.measured / q.clear - today_ratio));
    (rho, last)
}

/// PV available per quarter from the one containing `now`, W.
pub fn forecast(
    cfg: &ForecastConfig,
    history: &History,
    day_ahead: Option<&DayAhead>,
    now: DateTime<Utc>,
    n: usize,
) -> Vec<f64> {
    let quarters = usable(cfg, history);
    let days = day_sums(&quarters);
    let (base, today_ratio) = ratios(cfg, &days, now);
    let today = now.with_timezone(&cfg.tz).date_naive();
    let (rho, last) = cloud_carry(&quarters, &days, today, today_ratio.unwrap_or(base));
    let rating_w = cfg.site.ac_kw * 1000.0;
    quarter_starts(now, n)
        .map(|start| {
            if let Some(w) = day_ahead.and_then(|d| d.quarter_w(start)) {
                return w.clamp(0.0, rating_w);
            }
            let ratio = match today_ratio {
                Some(r) if start.with_timezone(&cfg.tz).date_naive() == today => {
                    let ahead_h = (start - now).num_seconds().max(0) as f64 / 3600.0;
                    let w = (-ahead_h / TODAY_DECAY_H).exp();
                    w * r + (1.0 - w) * base
                }
                _ => base,
            };
            let ratio = (ratio + carried(last, rho, start)).clamp(0.0, MAX_RATIO);
            (ratio * clear_sky_quarter_w(&cfg.site, start)).clamp(0.0, rating_w)
        })
        .collect()
}

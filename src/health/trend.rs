//! The fade trend of the measured capacity, calendar and cycle ageing fitted apart, the
//! end-of-life projection and the wear price (method and limits: `docs/battery-health.md`).
//!
//! * **Fade model**: `C(t) = c0 - a sqrt(age(t)) - b Q(t)`, `age` the pack's calendar age in
//!   days (from `battery_health.manufactured`, else fitted), `Q` the lifetime DC throughput in
//!   Wh. `a` (Wh per sqrt(day)) is the calendar fade, which slows as the pack ages; `b` (Wh of
//!   capacity per Wh of throughput) the cycle fade. Weighted least squares over the samples of
//!   the last `TREND_WINDOW_DAYS` (weights `1 / sigma^2`), the covariance of `(a, b)` scaled by
//!   the residual scatter. Neither may be negative: when the joint fit makes one gain capacity,
//!   it is set to 0 and the other refitted; the covariance (and so the band) stays the joint
//!   fit's, since the boundary does not tell the two apart any better.
//! * **End of life**: from the capacity now, the day `a (sqrt(age + d) - sqrt(age)) + b r d`
//!   reaches `capacity - eol`, `r` the throughput rate of the last `RATE_DAYS`; the range is
//!   where that loss +- 1.96 of its standard error (from the covariance) reaches it.
//! * **Wear price** per kWh discharged: `2 b x pack value / (capacity - eol capacity)`, the
//!   pack's value spread over the capacity it has left until end of life, times the capacity
//!   one kWh discharged (and recharged: 2 kWh of DC throughput) costs. Only once `b` is
//!   measured (`b / se(b) >= WEAR_MIN_T`), clamped to `WEAR_CLAMP` x the policy's value;
//!   otherwise the policy's value with the reason.

use super::estimator::CapacitySample;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// History the trend looks at, days.
pub const TREND_WINDOW_DAYS: f64 = 365.0;
/// Shortest history that gives a trend, days.
pub const TREND_MIN_DAYS: f64 = 14.0;
/// The throughput rate projected forward is that of the last days, days.
pub const RATE_DAYS: f64 = 30.0;
/// Furthest end of life projected, days (100 years).
pub const HORIZON_DAYS: f64 = 36_500.0;
/// Calendar ages tried when the manufacturing date is not configured, days (the best fit is
/// taken): 0.25 to 20 years.
const AGE_GRID_DAYS: (f64, f64, usize) = (90.0, 7300.0, 60);
/// The cycle fade must be this many standard errors above zero to price wear.
pub const WEAR_MIN_T: f64 = 3.0;
/// The measured wear price is kept within this range of the policy's value.
pub const WEAR_CLAMP: (f64, f64) = (0.1, 10.0);

/// Where the calendar age comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgeSource {
    /// `battery_health.manufactured`.
    Configured,
    /// The age that fits the samples best (weakly determined within a year of data).
    Fitted,
}

/// The fitted fade.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fade {
    /// Calendar fade `a`, Wh per sqrt(day), and its standard error.
    pub calendar_wh_per_sqrt_day: f64,
    pub calendar_se: f64,
    /// Cycle fade `b`, Wh of capacity per Wh of DC throughput, and its standard error.
    pub cycle_wh_per_wh: f64,
    pub cycle_se: f64,
    /// Covariance of `a` and `b`.
    pub cov: f64,
    /// Calendar age now, days, and where it comes from.
    pub age_days: f64,
    pub age_source: AgeSource,
    /// DC throughput rate of the last `RATE_DAYS`, Wh/day.
    pub throughput_wh_per_day: f64,
    /// Fade now, Wh/day: calendar (`a / (2 sqrt(age))`), cycle (`b r`) and both.
    pub calendar_wh_per_day: f64,
    pub cycle_wh_per_day: f64,
    pub wh_per_day: f64,
    /// Capacity lost per equivalent full cycle by cycling, Wh/EFC (`2 b C`).
    pub wh_per_efc: f64,
    /// Days of samples behind the fit, and their count.
    pub days: f64,
    pub samples: usize,
}

/// The projected end of life.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EndOfLife {
    pub date: DateTime<Utc>,
    /// 95 % range; `latest` is `None` when the slow end is beyond the horizon.
    pub earliest: DateTime<Utc>,
    pub latest: Option<DateTime<Utc>>,
}

/// The wear price and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wear {
    pub cny_per_kwh: f64,
    /// `measured`, `clamped` (measured, outside the range) or `policy`.
    pub source: &'static str,
    /// The measured value before clamping, when there is one.
    pub measured_cny_per_kwh: Option<f64>,
    /// Why the policy's value is used, or why it was clamped.
    pub reason: Option<String>,
}

fn days_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_seconds() as f64 / 86_400.0
}

/// Weighted least squares of `y = c0 + p x1 + q x2` over `(x1, x2, y, w)`: `(p, q)`, their
/// covariance `[[vpp, vpq], [vpq, vqq]]` and the weighted residual sum of squares.
fn fit2(pts: &[(f64, f64, f64, f64)]) -> Option<((f64, f64), [f64; 3], f64)> {
    let sw: f64 = pts.iter().map(|p| p.3).sum();
    if pts.len() < 5 || sw <= 0.0 {
        return None;
    }
    let mean =
        |f: fn(&(f64, f64, f64, f64)) -> f64| pts.iter().map(|p| p.3 * f(p)).sum::<f64>() / sw;
    let (m1, m2, my) = (mean(|p| p.0), mean(|p| p.1), mean(|p| p.2));
    let (mut s11, mut s12, mut s22, mut s1y, mut s2y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in pts {
        let (d1, d2, dy) = (p.0 - m1, p.1 - m2, p.2 - my);
        s11 += p.3 * d1 * d1;
        s12 += p.3 * d1 * d2;
        s22 += p.3 * d2 * d2;
        s1y += p.3 * d1 * dy;
        s2y += p.3 * d2 * dy;
    }
    let det = s11 * s22 - s12 * s12;
    if det.is_nan() || det <= 1e-12 * s11 * s22 {
        return None;
    }
    let p = (s22 * s1y - s12 * s2y) / det;
    let q = (s11 * s2y - s12 * s1y) / det;
    let rss: f64 = pts
        .iter()
        .map(|x| x.3 * (x.2 - my - p * (x.0 - m1) - q * (x.1 - m2)).powi(2))
        .sum();
    let s2 = rss / (pts.len() as f64 - 3.0);
    Some((
        (p, q),
        [s2 * s22 / det, -s2 * s12 / det, s2 * s11 / det],
        rss,
    ))
}

/// Weighted line `y = c0 + p x` over `(x, y, w)`: `(p, rss)`.
fn fit1(pts: &[(f64, f64, f64)]) -> Option<(f64, f64)> {
    let sw: f64 = pts.iter().map(|p| p.2).sum();
    if pts.len() < 3 || sw <= 0.0 {
        return None;
    }
    let xm = pts.iter().map(|p| p.2 * p.0).sum::<f64>() / sw;
    let ym = pts.iter().map(|p| p.2 * p.1).sum::<f64>() / sw;
    let sxx: f64 = pts.iter().map(|p| p.2 * (p.0 - xm).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let p = pts
        .iter()
        .map(|q| q.2 * (q.0 - xm) * (q.1 - ym))
        .sum::<f64>()
        / sxx;
    let rss: f64 = pts
        .iter()
        .map(|q| q.2 * (q.1 - ym - p * (q.0 - xm)).powi(2))
        .sum();
    Some((p, rss))
}

type Fit = ((f64, f64), [f64; 3], f64);

/// Both fades cannot be negative: when the joint fit makes one of them gain capacity (they
/// are nearly collinear under steady cycling), that one is set to 0 and the other refitted.
fn fit_non_negative(pts: &[(f64, f64, f64, f64)]) -> Option<Fit> {
    let ((p, q), cov, rss) = fit2(pts)?;
    // p, q are the slopes of capacity: fading means p < 0 (calendar) and q < 0 (cycle).
    if p <= 0.0 && q <= 0.0 {
        return Some(((p, q), cov, rss));
    }
    let only = |x: fn(&(f64, f64, f64, f64)) -> f64| {
        let one: Vec<(f64, f64, f64)> = pts.iter().map(|t| (x(t), t.2, t.3)).collect();
        fit1(&one)
    };
    // The covariance stays the joint fit's: the boundary does not tell the split any better.
    let cal = only(|t| t.0).map(|(p, rss)| ((p, 0.0), cov, rss));
    let cyc = only(|t| t.1).map(|(q, rss)| ((0.0, q), cov, rss));
    [cal, cyc]
        .into_iter()
        .flatten()
        .filter(|f| f.0 .0 <= 0.0 && f.0 .1 <= 0.0)
        .min_by(|x, y| x.2.total_cmp(&y.2))
        .or(Some(((p, q), cov, rss)))
}

/// The calendar and cycle fade over the samples up to `now` (`None` with too little history
/// or no change in the throughput). `manufactured`: when the cells were made, if known.
pub fn fade(
    samples: &[CapacitySample],
    now: DateTime<Utc>,
    manufactured: Option<DateTime<Utc>>,
) -> Option<Fade> {
    let recent: Vec<&CapacitySample> = samples
        .iter()
        .filter(|s| s.at <= now && days_between(s.at, now) <= TREND_WINDOW_DAYS)
        .collect();
    let first = recent.first()?;
    let days = days_between(first.at, now);
    if days < TREND_MIN_DAYS {
        return None;
    }
    let fit_at = |age_now: f64| {
        let pts: Vec<(f64, f64, f64, f64)> = recent
            .iter()
            .map(|s| {
                let age = (age_now - days_between(s.at, now)).max(0.0);
                let w = 1.0 / s.sigma_wh.max(1e-9).powi(2);
                (age.sqrt(), s.throughput_wh, s.capacity_wh, w)
            })
            .collect();
        fit_non_negative(&pts)
    };
    let (age_now, age_source, ((p, q), cov, _)) = match manufactured {
        Some(m) => {
            let age = days_between(m, now).max(days);
            (age, AgeSource::Configured, fit_at(age)?)
        }
        None => {
            let (lo, hi, n) = AGE_GRID_DAYS;
            (0..n)
                .map(|i| days + lo * (hi / lo).powf(i as f64 / (n - 1) as f64))
                .filter_map(|age| fit_at(age).map(|f| (age, AgeSource::Fitted, f)))
                .min_by(|x, y| x.2 .2.total_cmp(&y.2 .2))?
        }
    };
    let (a, b) = (0.0 - p, 0.0 - q);
    let rate = throughput_rate(&recent, now);
    let calendar_wh_per_day = a / (2.0 * age_now.max(1.0).sqrt());
    let capacity = recent.last().map_or(0.0, |s| s.capacity_wh);
    Some(Fade {
        calendar_wh_per_sqrt_day: a,
        calendar_se: cov[0].max(0.0).sqrt(),
        cycle_wh_per_wh: b,
        cycle_se: cov[2].max(0.0).sqrt(),
        cov: cov[1],
        age_days: age_now,
        age_source,
        throughput_wh_per_day: rate,
        calendar_wh_per_day,
        cycle_wh_per_day: b * rate,
        wh_per_day: calendar_wh_per_day + b * rate,
        wh_per_efc: 2.0 * b * capacity,
        days,
        samples: recent.len(),
    })
}

/// DC throughput per day over the samples of the last `RATE_DAYS` (at least two samples a
/// day apart; else over all of `recent`).
fn throughput_rate(recent: &[&CapacitySample], now: DateTime<Utc>) -> f64 {
    let last = match recent.last() {
        Some(l) => l,
        None => return 0.0,
    };
    let from = recent
        .iter()
        .find(|s| days_between(s.at, now) <= RATE_DAYS && days_between(s.at, last.at) >= 1.0)
        .or(recent.first());
    match from {
        Some(f) if days_between(f.at, last.at) > 0.0 => {
            ((last.throughput_wh - f.throughput_wh) / days_between(f.at, last.at)).max(0.0)
        }
        _ => 0.0,
    }
}

/// Capacity lost in `d` more days: the projection and its standard error.
fn loss(f: &Fade, d: f64) -> (f64, f64) {
    let dg = (f.age_days + d).sqrt() - f.age_days.sqrt();
    let dq = f.throughput_wh_per_day * d;
    let mean = f.calendar_wh_per_sqrt_day * dg + f.cycle_wh_per_wh * dq;
    let var =
        dg * dg * f.calendar_se.powi(2) + dq * dq * f.cycle_se.powi(2) + 2.0 * dg * dq * f.cov;
    (mean, var.max(0.0).sqrt())
}

/// First day (to within an hour) at which `lost(d) >= left`, when within the horizon.
fn first_day(left: f64, lost: impl Fn(f64) -> f64) -> Option<f64> {
    if left <= 0.0 {
        return Some(0.0);
    }
    // The loss grows with d for a fading pack; scan years, then bisect.
    let mut lo = 0.0;
    let mut hi = None;
    let mut d = 30.0;
    while d <= HORIZON_DAYS {
        if lost(d) >= left {
            hi = Some(d);
            break;
        }
        lo = d;
        d += 30.0;
    }
    let mut hi = hi?;
    while hi - lo > 1.0 / 24.0 {
        let mid = 0.5 * (lo + hi);
        if lost(mid) >= left {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// When `capacity_wh` fading as `fade` reaches `eol_wh` (`None` when not within the horizon).
pub fn end_of_life(
    capacity_wh: f64,
    eol_wh: f64,
    fade: &Fade,
    now: DateTime<Utc>,
) -> Option<EndOfLife> {
    let left = capacity_wh - eol_wh;
    let at = |d: f64| now + Duration::seconds((d * 86_400.0) as i64);
    let mid = first_day(left, |d| loss(fade, d).0)?;
    let fast = first_day(left, |d| {
        let (m, s) = loss(fade, d);
        m + 1.96 * s
    })
    .unwrap_or(mid);
    let slow = first_day(left, |d| {
        let (m, s) = loss(fade, d);
        m - 1.96 * s
    });
    Some(EndOfLife {
        date: at(mid),
        earliest: at(fast.min(mid)),
        latest: slow.map(|s| at(s.max(mid))),
    })
}

/// Wear price per kWh discharged from the cycle fade: `2 b x pack value / (capacity - eol)`
/// (see the module docs). `policy_cny_per_kwh` is the fallback and sets the clamp range.
pub fn wear(
    fade: Option<&Fade>,
    confident_capacity_wh: Option<f64>,
    eol_wh: f64,
    pack_value_cny: f64,
    policy_cny_per_kwh: f64,
) -> Wear {
    let policy = |reason: String| Wear {
        cny_per_kwh: policy_cny_per_kwh,
        source: "policy",
        measured_cny_per_kwh: None,
        reason: Some(reason),
    };
    let Some(c) = confident_capacity_wh else {
        return policy("the measured capacity is not confident yet".into());
    };
    let Some(f) = fade else {
        return policy(format!("needs {TREND_MIN_DAYS} days of capacity samples"));
    };
    let left_wh = c - eol_wh;
    if left_wh <= 0.0 {
        return policy("the pack is at its end of life".into());
    }
    let b = f.cycle_wh_per_wh;
    if b.is_nan() || b <= 0.0 || b < WEAR_MIN_T * f.cycle_se {
        return policy(format!(
            "cycle fade not yet told apart from calendar fade: b = {:.2e} ± {:.2e} Wh/Wh (needs b > {WEAR_MIN_T} standard errors)",
            b, f.cycle_se
        ));
    }
    let measured = 2.0 * b * pack_value_cny / (left_wh / 1000.0);
    let (lo, hi) = (
        WEAR_CLAMP.0 * policy_cny_per_kwh,
        WEAR_CLAMP.1 * policy_cny_per_kwh,
    );
    if measured < lo || measured > hi {
        let v = measured.clamp(lo, hi);
        return Wear {
            cny_per_kwh: v,
            source: "clamped",
            measured_cny_per_kwh: Some(measured),
            reason: Some(format!(
                "measured {measured:.3} CNY/kWh outside {lo:.3}..{hi:.3} ({}..{} x the policy's)",
                WEAR_CLAMP.0, WEAR_CLAMP.1
            )),
        };
    }
    Wear {
        cny_per_kwh: measured,
        source: "measured",
        measured_cny_per_kwh: Some(measured),
        reason: None,
    }
}

#[cfg(test)]
#[path = "trend_tests.rs"]
mod tests;

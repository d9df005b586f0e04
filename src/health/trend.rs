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
//!   With a calendar prior (`battery_health.calendar_fade_first_year_pct`, from the cells'
//!   storage test) `a` gets one more observation, the prior, weighted by its stated
//!   uncertainty: under steady cycling `sqrt(age)` and `Q` are nearly collinear within a
//!   year, so the data fix the sum of the two fades and the prior splits it; `b`'s standard
//!   error then carries the prior's uncertainty.
//! * **Wear price** per AC kWh discharged: `value of a kWh of capacity x 2 b / eta`, the
//!   capacity one kWh discharged and recharged costs (`2 / eta` kWh of DC throughput, `eta`
//!   the one-way efficiency) valued as the policy values capacity (pack value / (allowed loss
//!   x usable kWh), the policy's own constant divided by its assumed fade per kWh). Only once
//!   `b` is measured (`b / se(b) >= WEAR_MIN_T`), clamped to `WEAR_CLAMP` x the policy's
//!   value; otherwise the policy's value with the reason.

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

/// A prior on the calendar fade `a` (from the cells' storage test, `battery_health.
/// calendar_fade_first_year_pct`): its value and standard error, Wh per sqrt(day).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalendarPrior {
    pub calendar_wh_per_sqrt_day: f64,
    pub se: f64,
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
    /// The prior on `a` the fit was given, if any.
    pub calendar_prior: Option<CalendarPrior>,
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

/// Weighted sums of the centred points `(x1, x2, y, w)`.
struct Sums {
    n: usize,
    m: (f64, f64, f64),
    s11: f64,
    s12: f64,
    s22: f64,
    s1y: f64,
    s2y: f64,
}

fn sums(pts: &[(f64, f64, f64, f64)]) -> Option<Sums> {
    let sw: f64 = pts.iter().map(|p| p.3).sum();
    if pts.len() < 5 || sw <= 0.0 {
        return None;
    }
    let mean =
        |f: fn(&(f64, f64, f64, f64)) -> f64| pts.iter().map(|p| p.3 * f(p)).sum::<f64>() / sw;
    let m = (mean(|p| p.0), mean(|p| p.1), mean(|p| p.2));
    let mut s = Sums {
        n: pts.len(),
        m,
        s11: 0.0,
        s12: 0.0,
        s22: 0.0,
        s1y: 0.0,
        s2y: 0.0,
    };
    for p in pts {
        let (d1, d2, dy) = (p.0 - m.0, p.1 - m.1, p.2 - m.2);
        s.s11 += p.3 * d1 * d1;
        s.s12 += p.3 * d1 * d2;
        s.s22 += p.3 * d2 * d2;
        s.s1y += p.3 * d1 * dy;
        s.s2y += p.3 * d2 * dy;
    }
    Some(s)
}

/// Weighted residual sum of squares of the slopes `(p, q)` (intercept at the means).
fn rss_of(pts: &[(f64, f64, f64, f64)], s: &Sums, p: f64, q: f64) -> f64 {
    pts.iter()
        .map(|x| x.3 * (x.2 - s.m.2 - p * (x.0 - s.m.0) - q * (x.1 - s.m.1)).powi(2))
        .sum()
}

/// `(p, q)`, their covariance `[[vpp, vpq], [vpq, vqq]]` and the objective (weighted residual
/// sum of squares plus the prior's penalty).
type Fit = ((f64, f64), [f64; 3], f64);

/// A prior on the slope `p`: its value and standard error.
type SlopePrior = Option<(f64, f64)>;

/// Weighted least squares of `y = c0 + p x1 + q x2` over `(x1, x2, y, w)`, with `prior` on `p`
/// entered as one more observation of `p` (ridge towards it, weighted by its standard error).
/// The data's weights are scaled by their residual scatter `s2` (the samples' stated sigmas
/// may be off by a factor), the prior's are not (its uncertainty is stated absolutely): the
/// covariance is `inverse(S / s2 + 1 / sp^2)`. Returns the fit and the prior's weight in the
/// data's units (`s2 / sp^2`, 0 without a prior).
fn fit2(pts: &[(f64, f64, f64, f64)], prior: SlopePrior) -> Option<(Fit, f64)> {
    let s = sums(pts)?;
    let dof = s.n as f64 - 3.0;
    let mut s2 = 1.0;
    let mut out = None;
    // The scatter depends on the fit and the prior's weight on the scatter: three rounds
    // settle it (one without a prior).
    for _ in 0..if prior.is_some() { 3 } else { 1 } {
        let (p0, lam) = prior.map_or((0.0, 0.0), |(p0, sp)| (p0, s2 / sp.max(1e-300).powi(2)));
        let (a11, a12, a22) = (s.s11 + lam, s.s12, s.s22);
        let det = a11 * a22 - a12 * a12;
        if det.is_nan() || det <= 1e-12 * a11 * a22 {
            return None;
        }
        let r1 = s.s1y + lam * p0;
        let p = (a22 * r1 - a12 * s.s2y) / det;
        let q = (a11 * s.s2y - a12 * r1) / det;
        let rss = rss_of(pts, &s, p, q);
        let fitted_s2 = (rss / dof).max(1e-12);
        let cov_s2 = if prior.is_some() { s2 } else { fitted_s2 };
        out = Some((
            (
                (p, q),
                [cov_s2 * a22 / det, -cov_s2 * a12 / det, cov_s2 * a11 / det],
                rss + lam * (p - p0).powi(2),
            ),
            lam,
        ));
        s2 = fitted_s2;
    }
    out
}

/// Both fades cannot be negative: when the joint fit makes one of them gain capacity (they
/// are nearly collinear under steady cycling), that one is set to 0 and the other refitted
/// (with the prior on the calendar slope, when there is one).
fn fit_non_negative(pts: &[(f64, f64, f64, f64)], prior: SlopePrior) -> Option<Fit> {
    let (((p, q), cov, obj), lam) = fit2(pts, prior)?;
    // p, q are the slopes of capacity: fading means p < 0 (calendar) and q < 0 (cycle).
    if p <= 0.0 && q <= 0.0 {
        return Some(((p, q), cov, obj));
    }
    let s = sums(pts)?;
    let p0 = prior.map_or(0.0, |x| x.0);
    let objective = |p: f64, q: f64| rss_of(pts, &s, p, q) + lam * (p - p0).powi(2);
    // The covariance stays the joint fit's: the boundary does not tell the split any better.
    let cal = (s.s11 + lam > 0.0).then(|| ((s.s1y + lam * p0) / (s.s11 + lam), 0.0));
    let cyc = (s.s22 > 0.0).then(|| (0.0, s.s2y / s.s22));
    [cal, cyc]
        .into_iter()
        .flatten()
        .filter(|(p, q)| *p <= 0.0 && *q <= 0.0)
        .map(|(p, q)| ((p, q), cov, objective(p, q)))
        .min_by(|x, y| x.2.total_cmp(&y.2))
        .or(Some(((p, q), cov, obj)))
}

/// The calendar and cycle fade over the samples up to `now` (`None` with too little history
/// or no change in the throughput). `manufactured`: when the cells were made, if known;
/// `prior`: the calendar fade expected of the chemistry, if any.
pub fn fade(
    samples: &[CapacitySample],
    now: DateTime<Utc>,
    manufactured: Option<DateTime<Utc>>,
    prior: Option<CalendarPrior>,
) -> Option<Fade> {
    // The fit's calendar slope is that of capacity on sqrt(age): minus `a`.
    let slope_prior = prior.map(|p| (-p.calendar_wh_per_sqrt_day, p.se));
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
        fit_non_negative(&pts, slope_prior)
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
        calendar_prior: prior,
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

/// What the measured cycle fade is priced with (see [`wear`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WearPricing {
    /// Value of a kWh of capacity, CNY: the policy's (pack value / (allowed loss x the
    /// capacity in use)), the same valuation the policy's constant and the scorecard use.
    pub cny_per_kwh_of_capacity: f64,
    /// One-way efficiency: AC kWh out per DC kWh taken from the pack.
    pub one_way_efficiency: f64,
    /// The policy's wear price: the fallback, and the clamp range around it.
    pub policy_cny_per_kwh: f64,
}

/// Wear price per AC kWh discharged from the cycle fade:
/// `value of a kWh of capacity x 2 b / one-way efficiency` (see the module docs).
pub fn wear(
    fade: Option<&Fade>,
    confident_capacity_wh: Option<f64>,
    eol_wh: f64,
    pricing: &WearPricing,
) -> Wear {
    let policy_cny_per_kwh = pricing.policy_cny_per_kwh;
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
    if c - eol_wh <= 0.0 {
        return policy("the pack is at its end of life".into());
    }
    let b = f.cycle_wh_per_wh;
    if b.is_nan() || b <= 0.0 || b < WEAR_MIN_T * f.cycle_se {
        let prior =
            f.calendar_prior
                .map_or(" (no calendar fade prior configured)".to_string(), |p| {
                    format!(
                        " (calendar prior a = {:.0} ± {:.0} Wh/sqrt(day))",
                        p.calendar_wh_per_sqrt_day, p.se
                    )
                });
        return policy(format!(
            "cycle fade not yet told apart from calendar fade: b = {:.2e} ± {:.2e} Wh/Wh (needs b > {WEAR_MIN_T} standard errors){prior}",
            b, f.cycle_se
        ));
    }
    let (value, eta) = (pricing.cny_per_kwh_of_capacity, pricing.one_way_efficiency);
    if !(value.is_finite() && value >= 0.0 && eta > 0.0) {
        return policy(format!(
            "the policy gives no value per kWh of capacity ({value}) or efficiency ({eta})"
        ));
    }
    let measured = value * 2.0 * b / eta;
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

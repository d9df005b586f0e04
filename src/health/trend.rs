//! The fade trend of the measured capacity: a line through the samples against time (for the
//! end-of-life date) and against equivalent full cycles (for the wear price).
//!
//! * **Fade rate**: weighted least squares of capacity on time over every sample of the last
//!   `TREND_WINDOW_DAYS`, weights `1 / sigma^2`, with the slope's standard error from the
//!   residuals.
//! * **End of life**: the day the line reaches `eol x nameplate`, read from the estimate now;
//!   its uncertainty is the range the slope +- 1.96 standard errors gives (open-ended when the
//!   slope could be 0).
//! * **Wear price** per kWh discharged: `pack value x (relative fade per EFC) / (allowed loss
//!   x usable kWh)`, the policy's formula with `allowed_loss / cycle_life` replaced by what
//!   was measured. Every bit of fade is charged to cycling, calendar ageing included (an
//!   upper bound when the pack also ages at rest); EFC = DC throughput / (2 x capacity).

use super::estimator::CapacitySample;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// History the trend looks at, days.
pub const TREND_WINDOW_DAYS: f64 = 365.0;
/// Shortest history that gives a trend, days.
pub const TREND_MIN_DAYS: f64 = 14.0;

/// A fitted fade line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fade {
    /// Capacity lost per day, Wh/day (> 0 fading), and its standard error.
    pub wh_per_day: f64,
    pub wh_per_day_se: f64,
    /// Capacity lost per equivalent full cycle, Wh/EFC (> 0 fading).
    pub wh_per_efc: f64,
    /// Days of samples behind the fit, and their count.
    pub days: f64,
    pub samples: usize,
}

/// The projected end of life.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EndOfLife {
    pub date: DateTime<Utc>,
    /// 95 % range; `latest` is `None` when the fade could be 0.
    pub earliest: DateTime<Utc>,
    pub latest: Option<DateTime<Utc>>,
}

/// Weighted line `y = a + b x`; returns (b, se of b).
fn line(points: &[(f64, f64, f64)]) -> Option<(f64, f64)> {
    let sw: f64 = points.iter().map(|p| p.2).sum();
    if points.len() < 3 || sw <= 0.0 {
        return None;
    }
    let xm = points.iter().map(|p| p.2 * p.0).sum::<f64>() / sw;
    let ym = points.iter().map(|p| p.2 * p.1).sum::<f64>() / sw;
    let sxx: f64 = points.iter().map(|p| p.2 * (p.0 - xm).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = points
        .iter()
        .map(|p| p.2 * (p.0 - xm) * (p.1 - ym))
        .sum::<f64>()
        / sxx;
    let rss: f64 = points
        .iter()
        .map(|p| p.2 * (p.1 - ym - b * (p.0 - xm)).powi(2))
        .sum();
    let n = points.len() as f64;
    let se = (rss / (n - 2.0) / sxx).sqrt();
    Some((b, se))
}

/// The fade over the samples up to `now` (`None` with too little history).
pub fn fade(samples: &[CapacitySample], now: DateTime<Utc>) -> Option<Fade> {
    let recent: Vec<&CapacitySample> = samples
        .iter()
        .filter(|s| (now - s.at).num_seconds() as f64 / 86_400.0 <= TREND_WINDOW_DAYS)
        .collect();
    let first = recent.first()?;
    let days = (now - first.at).num_seconds() as f64 / 86_400.0;
    if days < TREND_MIN_DAYS {
        return None;
    }
    let w = |s: &CapacitySample| 1.0 / s.sigma_wh.max(1e-9).powi(2);
    let by_time: Vec<(f64, f64, f64)> = recent
        .iter()
        .map(|s| {
            (
                (s.at - first.at).num_seconds() as f64 / 86_400.0,
                s.capacity_wh,
                w(s),
            )
        })
        .collect();
    let (b, se) = line(&by_time)?;
    let by_efc: Vec<(f64, f64, f64)> = recent
        .iter()
        .map(|s| (s.throughput_wh / (2.0 * s.capacity_wh), s.capacity_wh, w(s)))
        .collect();
    let per_efc = line(&by_efc).map_or(0.0, |(b, _)| -b);
    Some(Fade {
        wh_per_day: -b,
        wh_per_day_se: se,
        wh_per_efc: per_efc,
        days,
        samples: recent.len(),
    })
}

/// When `capacity_wh` fading at `fade` reaches `eol_wh` (`None` when it does not fade).
pub fn end_of_life(
    capacity_wh: f64,
    eol_wh: f64,
    fade: &Fade,
    now: DateTime<Utc>,
) -> Option<EndOfLife> {
    let left = capacity_wh - eol_wh;
    let at = |rate: f64| -> Option<DateTime<Utc>> {
        if rate <= 0.0 {
            return None;
        }
        let days = (left / rate).clamp(0.0, 365.0 * 100.0);
        Some(now + Duration::seconds((days * 86_400.0) as i64))
    };
    let date = at(fade.wh_per_day)?;
    let fast = fade.wh_per_day + 1.96 * fade.wh_per_day_se;
    let slow = fade.wh_per_day - 1.96 * fade.wh_per_day_se;
    Some(EndOfLife {
        date,
        earliest: at(fast).unwrap_or(date),
        latest: at(slow),
    })
}

/// Wear price per kWh discharged from the measured fade (see the module docs).
pub fn wear_cny_per_kwh(
    pack_value_cny: f64,
    allowed_loss: f64,
    capacity_wh: f64,
    usable_kwh: f64,
    fade: &Fade,
) -> Option<f64> {
    if capacity_wh <= 0.0 || usable_kwh <= 0.0 || allowed_loss <= 0.0 {
        return None;
    }
    let rel_per_efc = (fade.wh_per_efc / capacity_wh).max(0.0);
    Some(pack_value_cny * rel_per_efc / (allowed_loss * usable_kwh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn samples(days: i64, c0: f64, per_day: f64) -> Vec<CapacitySample> {
        (0..days)
            .map(|d| {
                let c = c0 - per_day * d as f64 + if d % 2 == 0 { 500.0 } else { -500.0 };
                CapacitySample {
                    at: t0() + Duration::days(d),
                    capacity_wh: c,
                    sigma_wh: 1000.0,
                    soc_from_pct: 90.0,
                    soc_to_pct: 10.0,
                    energy_wh: 0.8 * c,
                    // One EFC a day.
                    throughput_wh: 2.0 * c0 * d as f64,
                    bms_soh_pct: None,
                }
            })
            .collect()
    }

    #[test]
    fn a_steady_fade_is_found_and_projected_to_the_end_of_life() {
        let s = samples(120, 340_000.0, 80.0);
        let now = t0() + Duration::days(119);
        let f = fade(&s, now).unwrap();
        assert!((f.wh_per_day - 80.0).abs() < 5.0, "{f:?}");
        assert!((f.wh_per_efc - 80.0).abs() < 8.0, "{f:?}");
        let c_now = 340_000.0 - 80.0 * 119.0;
        let eol = end_of_life(c_now, 300_000.0, &f, now).unwrap();
        let days = (eol.date - now).num_days() as f64;
        assert!((days - (c_now - 300_000.0) / 80.0).abs() < 40.0, "{days}");
        assert!(eol.earliest <= eol.date && eol.latest.unwrap() >= eol.date);
        let wear = wear_cny_per_kwh(150_000.0, 0.2, c_now, 0.8 * c_now / 1000.0, &f).unwrap();
        // 80 / 330480 per EFC: 150000 x 2.42e-4 / (0.2 x 264.4) = 0.69 CNY/kWh.
        assert!((wear - 0.69).abs() < 0.08, "{wear}");
    }

    #[test]
    fn too_little_history_gives_no_trend_and_no_fade_gives_no_end_of_life() {
        let s = samples(10, 340_000.0, 80.0);
        assert!(fade(&s, t0() + Duration::days(9)).is_none());
        let flat = Fade {
            wh_per_day: -1.0,
            wh_per_day_se: 1.0,
            wh_per_efc: 0.0,
            days: 100.0,
            samples: 100,
        };
        assert!(end_of_life(340_000.0, 300_000.0, &flat, t0()).is_none());
    }
}

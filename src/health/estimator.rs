//! Capacity from measured energy between SoC readings.
//!
//! The pack's DC energy is integrated every reading (DC voltage x current when the BMS gives
//! both, else the AC power through the one-way efficiency: AC / eta discharging, AC x eta
//! charging). A reading taken after the pack has rested (|AC| < `rest_w` for `rest_s`) is an
//! *anchor*: its SoC is free of the IR drop and of the BMS's SoC lag under load. Two anchors
//! at most `max_span_s` apart whose SoC differs by at least `min_swing_pct` give one capacity
//! sample, `C = E_dc / (SoC_a - SoC_b) x 100` (discharge > 0), with a relative error of
//! `sqrt((sqrt(2) x soc_error / dSoC)^2 + energy_error^2)`. Samples never overlap: a sample
//! consumes the anchors before it. A reading gap longer than `max_gap_s` voids the energy
//! count, and so every anchor before it.
//!
//! The estimate is the weighted mean of the samples, weight `2^(-age / memory_days) / sigma^2`,
//! so it follows the fade; its 95 % band is 1.96 x the larger of the propagated error and the
//! samples' own scatter over the effective sample count. It is *confident* with at least
//! `min_samples` samples and a band below `confident_band` of the estimate.
//!
//! Pure: a function of the readings and their times; [`CapacityEstimator::restore`] rebuilds it
//! from the samples the ledger kept.

use super::config::HealthConfig;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One battery reading as the estimator needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackReading {
    pub at: DateTime<Utc>,
    pub soc_pct: f64,
    /// AC power, W (> 0 discharge).
    pub ac_power_w: f64,
    /// DC power (voltage x current), W (> 0 discharge), when the BMS gives both.
    pub dc_power_w: Option<f64>,
}

/// One capacity measurement between two rest points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CapacitySample {
    /// When the second rest point was reached.
    pub at: DateTime<Utc>,
    /// Measured capacity (0-100 % SoC), Wh.
    pub capacity_wh: f64,
    /// One-sigma error of this sample, Wh.
    pub sigma_wh: f64,
    pub soc_from_pct: f64,
    pub soc_to_pct: f64,
    /// DC energy out of the pack between the two points, Wh (> 0 discharge).
    pub energy_wh: f64,
    /// Lifetime DC throughput (charge + discharge) counted at this sample, Wh.
    pub throughput_wh: f64,
    /// SoH the BMS reported then, % (when it reports one).
    pub bms_soh_pct: Option<f64>,
}

/// The estimate now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CapacityEstimate {
    pub capacity_wh: f64,
    /// Half-width of the 95 % band, Wh.
    pub band_wh: f64,
    /// Samples with a weight above 1 % of the newest one's.
    pub samples: usize,
    pub confident: bool,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    at: DateTime<Utc>,
    soc_pct: f64,
    /// DC energy out counted when the anchor was taken, Wh.
    energy_wh: f64,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CapacityEstimator {
    cfg: HealthConfig,
    last: Option<PackReading>,
    /// DC energy out since the counter started (discharge > 0), Wh.
    energy_wh: f64,
    /// Lifetime DC throughput, Wh.
    throughput_wh: f64,
    rest_since: Option<DateTime<Utc>>,
    anchors: Vec<Anchor>,
    samples: Vec<CapacitySample>,
    rejected: u64,
}

/// Samples kept in memory (about a year of daily samples).
const MAX_SAMPLES: usize = 512;
const MAX_ANCHORS: usize = 64;

impl CapacityEstimator {
    pub fn new(cfg: HealthConfig) -> Self {
        CapacityEstimator {
            cfg,
            last: None,
            energy_wh: 0.0,
            throughput_wh: 0.0,
            rest_since: None,
            anchors: Vec::new(),
            samples: Vec::new(),
            rejected: 0,
        }
    }

    /// An estimator that starts from samples kept earlier (oldest first) and their throughput.
    pub fn restore(cfg: HealthConfig, samples: &[CapacitySample]) -> Self {
        let mut e = CapacityEstimator::new(cfg);
        let start = samples.len().saturating_sub(MAX_SAMPLES);
        e.samples.extend_from_slice(&samples[start..]);
        e.throughput_wh = samples.last().map_or(0.0, |s| s.throughput_wh);
        e
    }

    pub fn samples(&self) -> &[CapacitySample] {
        &self.samples
    }

    /// Lifetime DC throughput counted (charge + discharge), Wh.
    pub fn throughput_wh(&self) -> f64 {
        self.throughput_wh
    }

    /// Samples refused as implausible (outside 10..150 % of nameplate or not positive).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Feed one reading; returns the sample it completed, if any. `nameplate_wh` bounds what
    /// is plausible; `bms_soh_pct` is recorded with the sample.
    pub fn observe(
        &mut self,
        r: PackReading,
        nameplate_wh: f64,
        bms_soh_pct: Option<f64>,
    ) -> Option<CapacitySample> {
        if !(r.soc_pct.is_finite() && r.ac_power_w.is_finite()) {
            return None;
        }
        let prev = self.last.replace(r);
        let prev = prev?;
        let dt = (r.at - prev.at).num_milliseconds() as f64 / 1000.0;
        if dt <= 0.0 {
            return None;
        }
        if dt > self.cfg.max_gap_s {
            // The energy in the gap is unknown: nothing before it can be paired.
            self.anchors.clear();
            self.rest_since = None;
            return None;
        }
        let dc_w = self.dc_power(&prev);
        let wh = dc_w * dt / 3600.0;
        self.energy_wh += wh;
        self.throughput_wh += wh.abs();
        self.track_rest(r)?;
        self.anchor(r, nameplate_wh, bms_soh_pct)
    }

    fn dc_power(&self, r: &PackReading) -> f64 {
        if let Some(dc) = r.dc_power_w.filter(|v| v.is_finite()) {
            return dc;
        }
        let eta = self.cfg.one_way_efficiency;
        if r.ac_power_w > 0.0 {
            r.ac_power_w / eta
        } else {
            r.ac_power_w * eta
        }
    }

    /// `Some(())` when `r` is a rest point (rested long enough), else `None`.
    fn track_rest(&mut self, r: PackReading) -> Option<()> {
        if r.ac_power_w.abs() >= self.cfg.rest_w {
            self.rest_since = None;
            return None;
        }
        let since = *self.rest_since.get_or_insert(r.at);
        let rested = (r.at - since).num_milliseconds() as f64 / 1000.0;
        (rested >= self.cfg.rest_s).then_some(())
    }

    fn anchor(
        &mut self,
        r: PackReading,
        nameplate_wh: f64,
        bms_soh_pct: Option<f64>,
    ) -> Option<CapacitySample> {
        let here = Anchor {
            at: r.at,
            soc_pct: r.soc_pct,
            energy_wh: self.energy_wh,
        };
        let span = self.cfg.max_span_s;
        self.anchors
            .retain(|a| (r.at - a.at).num_milliseconds() as f64 / 1000.0 <= span);
        // The earlier anchor with the widest swing.
        let best = self
            .anchors
            .iter()
            .enumerate()
            .map(|(i, a)| (i, (a.soc_pct - r.soc_pct).abs()))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, swing)) = best.filter(|(_, s)| *s >= self.cfg.min_swing_pct) {
            let a = self.anchors[i];
            self.anchors.clear();
            self.anchors.push(here);
            return self.sample(a, here, swing, nameplate_wh, bms_soh_pct);
        }
        // A rest continues: the newest reading of one rest replaces its earlier ones.
        if let Some(last) = self.anchors.last_mut() {
            if (here.energy_wh - last.energy_wh).abs() < 1e-6 * nameplate_wh.max(1.0)
                && (here.soc_pct - last.soc_pct).abs() < self.cfg.min_swing_pct / 10.0
            {
                *last = here;
                return None;
            }
        }
        if self.anchors.len() >= MAX_ANCHORS {
            self.anchors.remove(0);
        }
        self.anchors.push(here);
        None
    }

    fn sample(
        &mut self,
        a: Anchor,
        b: Anchor,
        swing: f64,
        nameplate_wh: f64,
        bms_soh_pct: Option<f64>,
    ) -> Option<CapacitySample> {
        let energy = b.energy_wh - a.energy_wh;
        let capacity = energy / (a.soc_pct - b.soc_pct) * 100.0;
        if !(capacity.is_finite() && capacity > 0.1 * nameplate_wh && capacity < 1.5 * nameplate_wh)
        {
            self.rejected += 1;
            return None;
        }
        let soc_rel = std::f64::consts::SQRT_2 * self.cfg.soc_error_pct / swing;
        let rel = soc_rel.hypot(self.cfg.energy_error);
        let s = CapacitySample {
            at: b.at,
            capacity_wh: capacity,
            sigma_wh: rel * capacity,
            soc_from_pct: a.soc_pct,
            soc_to_pct: b.soc_pct,
            energy_wh: energy,
            throughput_wh: self.throughput_wh,
            bms_soh_pct,
        };
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.remove(0);
        }
        self.samples.push(s);
        Some(s)
    }

    /// The estimate at `now`, `None` before the first sample.
    pub fn estimate(&self, now: DateTime<Utc>) -> Option<CapacityEstimate> {
        estimate_from(&self.samples, &self.cfg, now)
    }
}

/// Weighted sums over the samples at `now` (weight `decay / sigma^2`), times in days
/// before `now`.
struct Sums {
    w: f64,
    wt: f64,
    wc: f64,
    w2: f64,
    w2s2: f64,
    counted: usize,
    span_days: f64,
}

fn weight(s: &CapacitySample, cfg: &HealthConfig, now: DateTime<Utc>) -> (f64, f64, f64) {
    let age_days = ((now - s.at).num_seconds() as f64 / 86_400.0).max(0.0);
    let decay = 0.5f64.powf(age_days / cfg.memory_days);
    let sigma = s.sigma_wh.max(1e-9);
    (decay / (sigma * sigma), age_days, decay)
}

fn sums(samples: &[CapacitySample], cfg: &HealthConfig, now: DateTime<Utc>) -> Sums {
    let mut z = Sums {
        w: 0.0,
        wt: 0.0,
        wc: 0.0,
        w2: 0.0,
        w2s2: 0.0,
        counted: 0,
        span_days: 0.0,
    };
    for s in samples {
        let (w, age, decay) = weight(s, cfg, now);
        if decay > 0.01 {
            z.counted += 1;
            z.span_days = z.span_days.max(age);
        }
        z.w += w;
        z.wt += w * age;
        z.wc += w * s.capacity_wh;
        z.w2 += w * w;
        z.w2s2 += w * w * s.sigma_wh.max(1e-9).powi(2);
    }
    z
}

/// Samples and days of history before the estimate follows the fade trend (a weighted line
/// through the samples, read at `now`) instead of the weighted mean, which lags a fading pack
/// by about `memory_days / ln 2` of fade.
const TREND_MIN_SAMPLES: usize = 6;
const TREND_MIN_DAYS: f64 = 14.0;

/// The weighted estimate of `samples` at `now` (see the module docs).
pub fn estimate_from(
    samples: &[CapacitySample],
    cfg: &HealthConfig,
    now: DateTime<Utc>,
) -> Option<CapacityEstimate> {
    let z = sums(samples, cfg, now);
    if z.w <= 0.0 || z.counted == 0 {
        return None;
    }
    let (t_mean, c_mean) = (z.wt / z.w, z.wc / z.w);
    let use_trend = z.counted >= TREND_MIN_SAMPLES && z.span_days >= TREND_MIN_DAYS;
    let (mut stt, mut stc) = (0.0, 0.0);
    for s in samples {
        let (w, age, _) = weight(s, cfg, now);
        stt += w * (age - t_mean).powi(2);
        stc += w * (age - t_mean) * (s.capacity_wh - c_mean);
    }
    // Capacity per day of age (> 0 when older samples were larger, i.e. the pack fades).
    let slope = if use_trend && stt > 0.0 {
        stc / stt
    } else {
        0.0
    };
    // Read the line at age 0 (now).
    let capacity = c_mean - slope * t_mean;
    let propagated = z.w2s2.sqrt() / z.w;
    let n_eff = z.w * z.w / z.w2;
    let scatter = if n_eff > 1.5 {
        let var = samples
            .iter()
            .map(|s| {
                let (w, age, _) = weight(s, cfg, now);
                let fit = c_mean + slope * (age - t_mean);
                w * (s.capacity_wh - fit).powi(2)
            })
            .sum::<f64>()
            / z.w;
        (var / (n_eff - 1.0)).sqrt()
    } else {
        0.0
    };
    // Reading the line at now instead of at the centroid widens the band by the slope's error.
    let lever = if use_trend && stt > 0.0 {
        (1.0 + t_mean * t_mean * z.w / stt).sqrt()
    } else {
        1.0
    };
    let mut band = 1.96 * propagated.max(scatter) * lever;
    if z.counted < 2 {
        band *= 2.0;
    }
    Some(CapacityEstimate {
        capacity_wh: capacity,
        band_wh: band,
        samples: z.counted,
        confident: z.counted >= cfg.min_samples as usize && band <= cfg.confident_band * capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    /// A pack of `capacity_wh` cycled between 20 and 80 % at `power_w` AC, resting 20 min at
    /// each end, read every 10 s; AC only (DC from the efficiency), losses as `eta`.
    fn cycle_pack(e: &mut CapacityEstimator, capacity_wh: f64, eta: f64, cycles: usize) -> usize {
        let mut soc: f64 = 80.0;
        let mut t = t0();
        let mut made = 0;
        let dt = 10.0;
        let feed = |e: &mut CapacityEstimator, t: DateTime<Utc>, soc: f64, p: f64| {
            let r = PackReading {
                at: t,
                soc_pct: (soc * 10.0).round() / 10.0,
                ac_power_w: p,
                dc_power_w: None,
            };
            usize::from(e.observe(r, 500_000.0, Some(80.0)).is_some())
        };
        for _ in 0..cycles {
            for p in [60_000.0, -60_000.0] {
                for _ in 0..120 {
                    made += feed(e, t, soc, 0.0);
                    t += Duration::seconds(10);
                }
                loop {
                    let dc = if p > 0.0 { p / eta } else { p * eta };
                    let next = soc - dc * dt / 3600.0 / capacity_wh * 100.0;
                    if !(20.0..=80.0).contains(&next) {
                        break;
                    }
                    made += feed(e, t, soc, p);
                    soc = next;
                    t += Duration::seconds(10);
                }
            }
        }
        made
    }

    #[test]
    fn a_pack_cycled_between_rests_is_measured_within_one_percent() {
        let mut e = CapacityEstimator::new(HealthConfig::default());
        let made = cycle_pack(&mut e, 340_000.0, 0.95, 3);
        assert!(made >= 5, "{made} samples");
        let est = e.estimate(t0() + Duration::days(2)).unwrap();
        assert!(
            (est.capacity_wh - 340_000.0).abs() < 0.01 * 340_000.0,
            "{est:?}"
        );
        assert!(est.confident, "{est:?}");
        assert!(est.band_wh > 0.0 && est.band_wh < 0.03 * est.capacity_wh);
    }

    #[test]
    fn a_wrong_efficiency_shows_as_a_bias_not_as_noise() {
        // The pack loses 10 % each way but the estimator assumes 5 %: charge and discharge
        // samples err in opposite directions, so the mean stays close.
        let mut e = CapacityEstimator::new(HealthConfig::default());
        cycle_pack(&mut e, 340_000.0, 0.90, 3);
        let est = e.estimate(t0() + Duration::days(2)).unwrap();
        assert!(
            (est.capacity_wh - 340_000.0).abs() < 0.02 * 340_000.0,
            "{est:?}"
        );
    }

    #[test]
    fn a_gap_in_the_readings_voids_the_swing_across_it() {
        let cfg = HealthConfig::default();
        let mut e = CapacityEstimator::new(cfg);
        let r = |s: i64, soc: f64, p: f64| PackReading {
            at: t0() + Duration::seconds(s),
            soc_pct: soc,
            ac_power_w: p,
            dc_power_w: None,
        };
        for s in (0..=600).step_by(10) {
            e.observe(r(s, 80.0, 0.0), 500_000.0, None);
        }
        // 2 h without a reading, then at rest 40 points lower.
        for s in (7800..=8400).step_by(10) {
            assert!(e.observe(r(s, 40.0, 0.0), 500_000.0, None).is_none());
        }
        assert!(e.samples().is_empty());
    }

    #[test]
    fn old_samples_fade_out_so_the_estimate_follows_a_fading_pack() {
        let cfg = HealthConfig::default();
        let mk = |days: i64, c: f64| CapacitySample {
            at: t0() + Duration::days(days),
            capacity_wh: c,
            sigma_wh: 0.01 * c,
            soc_from_pct: 90.0,
            soc_to_pct: 10.0,
            energy_wh: 0.8 * c,
            throughput_wh: 0.0,
            bms_soh_pct: None,
        };
        let samples: Vec<_> = (0..200)
            .map(|d| mk(d, 360_000.0 - 100.0 * d as f64))
            .collect();
        let est = estimate_from(&samples, &cfg, t0() + Duration::days(199)).unwrap();
        let now_true = 360_000.0 - 19_900.0;
        assert!(
            (est.capacity_wh - now_true).abs() < 0.01 * now_true,
            "{est:?}"
        );
        let restored = CapacityEstimator::restore(cfg, &samples);
        assert_eq!(restored.samples().len(), 200);
    }
}

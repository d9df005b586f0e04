//! The battery's health as the daemon and the backtest follow it: the capacity estimator, the
//! mid-SoC cell spread, the module temperatures, the BMS's SoH and how long it has disagreed
//! with the measurement, an hourly history, and what all of it means for dispatch
//! ([`HealthTracker::limits`]) and the planner ([`HealthTracker::apply_to_planner`]).
//!
//! Pure: fed one [`BatteryObservation`] per cycle with its time; no clock, no I/O.

use super::config::HealthConfig;
use super::derate::{derate, Derating};
use super::estimator::{CapacityEstimate, CapacityEstimator, CapacitySample, PackReading};
use super::trend::{self, EndOfLife, Fade, Wear, WearPricing};
use crate::backtest::optimum::BatteryInput;
use crate::dispatch::policy::BatteryPolicy;
use crate::dispatch::snapshot::HealthLimits;
use crate::units::Percent;
use chrono::{DateTime, Timelike, Utc};
use serde::Serialize;
use std::collections::VecDeque;

/// One cycle's battery reading, as far as health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatteryObservation {
    pub soc_pct: f64,
    /// AC power, W (> 0 discharge).
    pub ac_power_w: f64,
    /// DC voltage x current, W (> 0 discharge), when the BMS gives both.
    pub dc_power_w: Option<f64>,
    pub bms_soh_pct: Option<f64>,
    /// Nameplate energy (802 `WHRtg`), Wh.
    pub nameplate_wh: Option<f64>,
    pub cell_v_max: Option<f64>,
    pub cell_v_min: Option<f64>,
    pub module_temp_max_c: Option<f64>,
    pub module_temp_min_c: Option<f64>,
}

/// One hour of history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HealthPoint {
    pub at: DateTime<Utc>,
    pub capacity_wh: Option<f64>,
    pub bms_soh_pct: Option<f64>,
    pub cell_spread_mv: Option<f64>,
    pub temp_max_c: Option<f64>,
    pub temp_min_c: Option<f64>,
    pub throughput_wh: f64,
}

/// The BMS and the measurement disagree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Disagreement {
    pub bms_soh_pct: f64,
    pub bms_capacity_wh: f64,
    pub measured_capacity_wh: f64,
    pub measured_band_wh: f64,
    /// BMS minus measured, % of measured.
    pub difference_pct: f64,
    pub since: DateTime<Utc>,
}

/// Everything `/api/battery/health`, the dashboard and `/metrics` show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub at: Option<DateTime<Utc>>,
    pub nameplate_wh: Option<f64>,
    pub bms_soh_pct: Option<f64>,
    /// nameplate x BMS SoH, Wh.
    pub bms_capacity_wh: Option<f64>,
    pub estimate: Option<CapacityEstimate>,
    /// The capacity dispatch and the planner use, Wh, and where it comes from.
    pub capacity_in_use_wh: Option<f64>,
    pub capacity_source: &'static str,
    pub equivalent_full_cycles: f64,
    pub throughput_wh: f64,
    pub cell_spread_mv: Option<f64>,
    pub temp_max_c: Option<f64>,
    pub temp_min_c: Option<f64>,
    pub derating: Option<Derating>,
    pub fade: Option<Fade>,
    pub eol_pct: f64,
    pub end_of_life: Option<EndOfLife>,
    /// The wear price dispatch and the planner use when it is measured (`None`: the policy's).
    pub wear_cny_per_kwh: Option<f64>,
    /// The wear price in use, where it comes from, and why.
    pub wear: Wear,
    /// A warning with both numbers once the disagreement has lasted long enough.
    pub warning: Option<String>,
    pub disagreement: Option<Disagreement>,
    pub samples: Vec<CapacitySample>,
    pub history: Vec<HealthPoint>,
}

/// When the wear price was computed, the last sample it saw, and the price.
type WearCache = (DateTime<Utc>, Option<DateTime<Utc>>, Option<f64>);

/// How far the band of a once-confident estimate may widen before the BMS value is used
/// again, as a multiple of `confident_band`.
pub const HOLD_BAND_FACTOR: f64 = 3.0;
/// Seconds between recomputations of the limits dispatch gets.
const REFRESH_S: i64 = 10;
/// Hours of history kept in memory (60 days).
const HISTORY_HOURS: usize = 24 * 60;
/// The spread counts as "mid SoC" in this band, %.
const MID_SOC: (f64, f64) = (40.0, 60.0);

/// See the module docs.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    cfg: HealthConfig,
    est: CapacityEstimator,
    last: Option<(DateTime<Utc>, BatteryObservation)>,
    spread_mid_mv: Option<f64>,
    spread_any_mv: Option<f64>,
    disagree_since: Option<DateTime<Utc>>,
    history: VecDeque<HealthPoint>,
    fresh: Vec<CapacitySample>,
    /// Limits and capacity computed at most every `REFRESH_S` (or after a new sample).
    cached: Option<(DateTime<Utc>, HealthLimits, Option<f64>)>,
    /// The measured wear price dispatch gets, when computed, and the samples it saw: the
    /// fade fit behind it changes with a new sample, not every 10 s.
    wear_cached: Option<WearCache>,
    /// An estimate has been confident (checked after each sample).
    trusted: bool,
}

impl HealthTracker {
    pub fn new(cfg: HealthConfig) -> Self {
        Self::restore(cfg, &[])
    }

    /// A tracker that resumes from the samples the ledger kept (oldest first).
    pub fn restore(cfg: HealthConfig, samples: &[CapacitySample]) -> Self {
        let est = CapacityEstimator::restore(cfg.clone(), samples);
        let trusted = samples
            .last()
            .and_then(|s| est.estimate(s.at))
            .is_some_and(|e| e.confident);
        HealthTracker {
            trusted,
            est,
            cfg,
            last: None,
            spread_mid_mv: None,
            spread_any_mv: None,
            disagree_since: None,
            history: VecDeque::new(),
            fresh: Vec::new(),
            cached: None,
            wear_cached: None,
        }
    }

    /// Apply the health measurements to dispatch's battery snapshot: the capacity in use
    /// (measured once confident, else left as the BMS's) and the [`HealthLimits`]. Recomputed
    /// at most every 10 s of station time or after a new sample (the inputs move slowly).
    pub fn apply_to_snapshot(
        &mut self,
        policy: &BatteryPolicy,
        now: DateTime<Utc>,
        b: &mut crate::dispatch::BatterySnapshot,
    ) {
        let stale = self
            .cached
            .is_none_or(|(at, _, _)| (now - at).num_seconds() >= REFRESH_S || at > now);
        if stale {
            let wear = self.wear_for_dispatch(policy, now);
            let limits = self.limits_with_wear(policy, now, wear);
            self.cached = Some((now, limits, limits.capacity_wh));
        }
        if let Some((_, limits, capacity)) = self.cached {
            if let Some(c) = capacity {
                b.usable_capacity = crate::units::WattHours(c);
            }
            b.health = limits;
        }
    }

    /// The measured wear price, refitted after a new sample or an hour of station time.
    fn wear_for_dispatch(&mut self, policy: &BatteryPolicy, now: DateTime<Utc>) -> Option<f64> {
        let n = self.est.samples().last().map(|s| s.at);
        match self.wear_cached {
            Some((at, seen, w)) if seen == n && at <= now && (now - at).num_seconds() < 3600 => w,
            _ => {
                let w = self.wear_cny_per_kwh(policy, now);
                self.wear_cached = Some((now, n, w));
                w
            }
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// Samples measured since the last call (for the ledger).
    pub fn take_new_samples(&mut self) -> Vec<CapacitySample> {
        std::mem::take(&mut self.fresh)
    }

    /// Feed one cycle's reading at `now`.
    pub fn observe(&mut self, now: DateTime<Utc>, o: BatteryObservation) {
        let reading = PackReading {
            at: now,
            soc_pct: o.soc_pct,
            ac_power_w: o.ac_power_w,
            dc_power_w: o.dc_power_w,
        };
        let nameplate = o.nameplate_wh.unwrap_or(0.0);
        if nameplate > 0.0 {
            if let Some(s) = self.est.observe(reading, nameplate, o.bms_soh_pct) {
                self.fresh.push(s);
                self.cached = None;
                self.trusted |= self.est.estimate(now).is_some_and(|e| e.confident);
            }
        }
        if let (Some(hi), Some(lo)) = (o.cell_v_max, o.cell_v_min) {
            let mv = ((hi - lo) * 1000.0).max(0.0);
            self.spread_any_mv = Some(mv);
            if (MID_SOC.0..=MID_SOC.1).contains(&o.soc_pct) {
                // Smoothed over about 100 mid-SoC readings: the spread moves over weeks.
                self.spread_mid_mv = Some(match self.spread_mid_mv {
                    Some(s) => s + (mv - s) * 0.01,
                    None => mv,
                });
            }
        }
        self.track_disagreement(now, &o);
        self.record_hour(now, &o);
        self.last = Some((now, o));
    }

    fn record_hour(&mut self, now: DateTime<Utc>, o: &BatteryObservation) {
        let hour = now
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(now);
        if self.history.back().is_some_and(|p| p.at == hour) {
            return;
        }
        if self.history.len() >= HISTORY_HOURS {
            self.history.pop_front();
        }
        self.history.push_back(HealthPoint {
            at: hour,
            capacity_wh: self.est.estimate(now).map(|e| e.capacity_wh),
            bms_soh_pct: o.bms_soh_pct,
            cell_spread_mv: self.spread_mv(),
            temp_max_c: o.module_temp_max_c,
            temp_min_c: o.module_temp_min_c,
            throughput_wh: self.est.throughput_wh(),
        });
    }

    fn track_disagreement(&mut self, now: DateTime<Utc>, o: &BatteryObservation) {
        let differs = self.bms_vs_measured(now, o).is_some_and(|(bms, est)| {
            (bms - est.capacity_wh).abs() > self.cfg.disagreement * est.capacity_wh
        });
        if differs {
            self.disagree_since.get_or_insert(now);
        } else {
            self.disagree_since = None;
        }
    }

    /// BMS capacity and a confident estimate, when both exist.
    fn bms_vs_measured(
        &self,
        now: DateTime<Utc>,
        o: &BatteryObservation,
    ) -> Option<(f64, CapacityEstimate)> {
        let bms = o.nameplate_wh? * o.bms_soh_pct? / 100.0;
        let est = self.est.estimate(now).filter(|e| e.confident)?;
        Some((bms, est))
    }

    /// The mid-SoC cell spread, mV (the latest spread at any SoC until one mid-SoC reading
    /// was seen: wider towards the ends, so on the safe side).
    pub fn spread_mv(&self) -> Option<f64> {
        self.spread_mid_mv.or(self.spread_any_mv)
    }

    /// The measured capacity in use, Wh: a confident estimate, or, once one has been confident,
    /// an estimate whose band has since widened (no new samples, the trend read further out)
    /// to at most [`HOLD_BAND_FACTOR`] times the confidence threshold: a pack that rests for a
    /// few weeks keeps its measured capacity instead of falling back to a BMS known to be off.
    pub fn measured_capacity_wh(&self, now: DateTime<Utc>) -> Option<f64> {
        let e = self.est.estimate(now)?;
        let held =
            self.trusted && e.band_wh <= HOLD_BAND_FACTOR * self.cfg.confident_band * e.capacity_wh;
        (e.confident || held).then_some(e.capacity_wh)
    }

    /// The capacity to plan with: measured once confident, else the BMS's.
    pub fn capacity_in_use_wh(&self, now: DateTime<Utc>) -> Option<f64> {
        self.measured_capacity_wh(now).or_else(|| {
            let (_, o) = self.last.as_ref()?;
            Some(o.nameplate_wh? * o.bms_soh_pct.unwrap_or(100.0) / 100.0)
        })
    }

    /// Derated window and power factors for `policy`.
    pub fn derating(&self, policy: &BatteryPolicy) -> Derating {
        let o = self.last.map(|(_, o)| o).unwrap_or_default();
        derate(
            policy.soc_min.0,
            policy.soc_max.0,
            self.spread_mv(),
            o.module_temp_min_c,
            o.module_temp_max_c,
            &self.cfg,
        )
    }

    /// The measured fade (calendar and cycle apart), when there is enough history; with the
    /// configured calendar prior once the nameplate is known.
    pub fn fade(&self, now: DateTime<Utc>) -> Option<Fade> {
        let prior = self
            .cfg
            .calendar_prior
            .zip(self.nameplate_wh())
            .map(|(p, n)| p.for_nameplate(n));
        trend::fade(self.est.samples(), now, self.cfg.manufactured, prior)
    }

    /// The wear price: from the measured cycle fade once the capacity is confident and the
    /// cycle fade is told apart from the calendar fade, else the policy's (with the reason).
    pub fn wear(&self, policy: &BatteryPolicy, now: DateTime<Utc>) -> Wear {
        let measured = self.measured_capacity_wh(now);
        let confident = self
            .est
            .estimate(now)
            .is_some_and(|e| e.confident)
            .then_some(measured)
            .flatten();
        // The policy's price as dispatch computes it (on the capacity in use).
        let in_use_kwh = self.capacity_in_use_wh(now).unwrap_or(0.0) / 1000.0;
        let policy_price = policy.wear_cost_cny_per_kwh(in_use_kwh).min(10.0);
        let eol_wh = self.nameplate_wh().unwrap_or(0.0) * self.cfg.eol;
        let pricing = WearPricing {
            cny_per_kwh_of_capacity: policy.capacity_value_cny_per_kwh(in_use_kwh),
            one_way_efficiency: policy.round_trip_efficiency.max(0.0).sqrt(),
            policy_cny_per_kwh: policy_price,
        };
        trend::wear(self.fade(now).as_ref(), confident, eol_wh, &pricing)
    }

    /// The measured wear price in use (`None`: the policy's).
    pub fn wear_cny_per_kwh(&self, policy: &BatteryPolicy, now: DateTime<Utc>) -> Option<f64> {
        let w = self.wear(policy, now);
        (w.source != "policy").then_some(w.cny_per_kwh)
    }

    fn nameplate_wh(&self) -> Option<f64> {
        self.last.and_then(|(_, o)| o.nameplate_wh)
    }

    /// What dispatch takes from the health measurements now.
    pub fn limits(&self, policy: &BatteryPolicy, now: DateTime<Utc>) -> HealthLimits {
        self.limits_with_wear(policy, now, self.wear_cny_per_kwh(policy, now))
    }

    fn limits_with_wear(
        &self,
        policy: &BatteryPolicy,
        now: DateTime<Utc>,
        wear_cny_per_kwh: Option<f64>,
    ) -> HealthLimits {
        let d = self.derating(policy);
        HealthLimits {
            soc_min: Percent(d.soc_min_pct),
            soc_max: Percent(d.soc_max_pct),
            charge_factor: d.charge_factor,
            discharge_factor: d.discharge_factor,
            wear_cny_per_kwh,
            capacity_wh: self.measured_capacity_wh(now),
        }
    }

    /// The planner's battery input with the measured capacity, the derated window and power,
    /// and the measured wear price (each only where measured; the rest is left as it was).
    pub fn apply_to_planner(
        &self,
        policy: &BatteryPolicy,
        now: DateTime<Utc>,
        b: &mut BatteryInput,
    ) {
        let l = self.limits(policy, now);
        if let Some(c) = l.capacity_wh {
            b.usable_wh = c;
        }
        b.soc_min_pct = b.soc_min_pct.max(l.soc_min.0);
        b.soc_max_pct = b.soc_max_pct.min(l.soc_max.0).max(b.soc_min_pct);
        b.soc0_pct = b.soc0_pct.clamp(b.soc_min_pct, b.soc_max_pct);
        b.max_charge_w *= l.charge_factor;
        b.max_discharge_w *= l.discharge_factor;
        if let Some(w) = l.wear_cny_per_kwh {
            b.wear_cost_cny_per_kwh_discharged = w;
        }
    }

    /// The full report at `now` (`policy` for the derating and the wear price).
    pub fn report(&self, policy: &BatteryPolicy, now: DateTime<Utc>) -> HealthReport {
        let o = self.last.map(|(_, o)| o);
        let nameplate = o.and_then(|o| o.nameplate_wh);
        let bms_soh = o.and_then(|o| o.bms_soh_pct);
        let bms_capacity = nameplate.zip(bms_soh).map(|(n, s)| n * s / 100.0);
        let estimate = self.est.estimate(now);
        let measured = self.measured_capacity_wh(now);
        let capacity = self.capacity_in_use_wh(now);
        let fade = self.fade(now);
        let eol_wh = nameplate.map(|n| n * self.cfg.eol);
        let end_of_life = match (measured.or(capacity), eol_wh, fade) {
            (Some(c), Some(e), Some(f)) => trend::end_of_life(c, e, &f, now),
            _ => None,
        };
        let disagreement = self.disagreement(now, o.as_ref());
        let wear = self.wear(policy, now);
        HealthReport {
            at: self.last.map(|(t, _)| t),
            nameplate_wh: nameplate,
            bms_soh_pct: bms_soh,
            bms_capacity_wh: bms_capacity,
            estimate,
            capacity_in_use_wh: capacity,
            capacity_source: if measured.is_some() {
                "measured"
            } else {
                "bms"
            },
            equivalent_full_cycles: capacity
                .filter(|c| *c > 0.0)
                .map_or(0.0, |c| self.est.throughput_wh() / (2.0 * c)),
            throughput_wh: self.est.throughput_wh(),
            cell_spread_mv: self.spread_mv(),
            temp_max_c: o.and_then(|o| o.module_temp_max_c),
            temp_min_c: o.and_then(|o| o.module_temp_min_c),
            derating: o.map(|_| self.derating(policy)),
            fade,
            eol_pct: self.cfg.eol * 100.0,
            end_of_life,
            wear_cny_per_kwh: (wear.source != "policy").then_some(wear.cny_per_kwh),
            wear,
            warning: disagreement.map(|d| warning_text(&d)),
            disagreement,
            samples: self.est.samples().to_vec(),
            history: self.history.iter().copied().collect(),
        }
    }

    fn disagreement(
        &self,
        now: DateTime<Utc>,
        o: Option<&BatteryObservation>,
    ) -> Option<Disagreement> {
        let since = self.disagree_since?;
        if ((now - since).num_seconds() as f64) < self.cfg.disagreement_s {
            return None;
        }
        let o = o?;
        let (bms, est) = self.bms_vs_measured(now, o)?;
        Some(Disagreement {
            bms_soh_pct: o.bms_soh_pct?,
            bms_capacity_wh: bms,
            measured_capacity_wh: est.capacity_wh,
            measured_band_wh: est.band_wh,
            difference_pct: (bms - est.capacity_wh) / est.capacity_wh * 100.0,
            since,
        })
    }
}

/// The warning with both numbers.
pub fn warning_text(d: &Disagreement) -> String {
    format!(
        "BMS SoH {:.1} % ({:.1} kWh) disagrees with the measured {:.1} ± {:.1} kWh ({:+.1} %) since {}",
        d.bms_soh_pct,
        d.bms_capacity_wh / 1000.0,
        d.measured_capacity_wh / 1000.0,
        d.measured_band_wh / 1000.0,
        d.difference_pct,
        d.since.format("%Y-%m-%d %H:%M UTC"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Policy;
    use chrono::{Duration, TimeZone};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    fn sample(day: i64, c: f64) -> CapacitySample {
        CapacitySample {
            at: t0() + Duration::days(day),
            capacity_wh: c,
            sigma_wh: 0.01 * c,
            soc_from_pct: 90.0,
            soc_to_pct: 15.0,
            energy_wh: 0.75 * c,
            throughput_wh: 2.0 * c * day as f64,
            bms_soh_pct: Some(80.0),
        }
    }

    fn obs(soc: f64) -> BatteryObservation {
        BatteryObservation {
            soc_pct: soc,
            ac_power_w: 0.0,
            dc_power_w: Some(0.0),
            bms_soh_pct: Some(80.0),
            nameplate_wh: Some(500_000.0),
            cell_v_max: Some(3.76),
            cell_v_min: Some(3.68),
            module_temp_max_c: Some(30.0),
            module_temp_min_c: Some(24.0),
        }
    }

    #[test]
    fn a_measured_fade_as_the_policy_assumes_it_is_priced_as_the_policy_prices_wear() {
        let policy = Policy::default().battery;
        // 150000 CNY for 20 % of 360 kWh: 2083 CNY per kWh of capacity.
        let value = policy.capacity_value_cny_per_kwh(360.0);
        assert!((value - 150_000.0 / 72.0).abs() < 1e-9, "{value}");
        // The policy assumes 0.2 / 3000 kWh of capacity per kWh discharged; the same fade per
        // AC kWh (2 / eta Wh of DC throughput) is b = 0.2 / 3000 x eta / 2 Wh/Wh.
        let eta = policy.round_trip_efficiency.sqrt();
        let b = policy.allowed_loss / policy.cycle_life_efc * eta / 2.0;
        let fade = Fade {
            calendar_wh_per_sqrt_day: 1000.0,
            calendar_se: 100.0,
            cycle_wh_per_wh: b,
            cycle_se: 0.1 * b,
            cov: 0.0,
            age_days: 2000.0,
            age_source: trend::AgeSource::Configured,
            throughput_wh_per_day: 200_000.0,
            calendar_wh_per_day: 11.0,
            cycle_wh_per_day: b * 200_000.0,
            wh_per_day: 11.0 + b * 200_000.0,
            wh_per_efc: 2.0 * b * 360_000.0,
            days: 365.0,
            samples: 300,
            calendar_prior: None,
        };
        let policy_price = policy.wear_cost_cny_per_kwh(360.0);
        let pricing = WearPricing {
            cny_per_kwh_of_capacity: value,
            one_way_efficiency: eta,
            policy_cny_per_kwh: policy_price,
        };
        let w = trend::wear(Some(&fade), Some(360_000.0), 300_000.0, &pricing);
        assert_eq!(w.source, "measured");
        assert!(
            (w.cny_per_kwh - policy_price).abs() < 1e-12,
            "{w:?} vs {policy_price}"
        );
    }

    #[test]
    fn restored_samples_are_used_and_a_lying_bms_warns_with_both_numbers_after_a_day() {
        let samples: Vec<_> = (0..5).map(|d| sample(d, 340_000.0)).collect();
        let mut t = HealthTracker::restore(HealthConfig::default(), &samples);
        let policy = Policy::default().battery;
        let start = t0() + Duration::days(5);
        t.observe(start, obs(50.0));
        let close = |v: Option<f64>| v.is_some_and(|v| (v - 340_000.0).abs() < 1e-3);
        assert!(close(t.measured_capacity_wh(start)));
        assert!(t.report(&policy, start).warning.is_none(), "not yet 24 h");
        let later = start + Duration::hours(25);
        t.observe(later, obs(50.0));
        let r = t.report(&policy, later);
        let w = r.warning.unwrap();
        assert!(
            w.contains("BMS SoH 80.0 % (400.0 kWh)") && w.contains("340.0"),
            "{w}"
        );
        assert_eq!(r.capacity_source, "measured");
        assert!(close(r.capacity_in_use_wh));
    }

    #[test]
    fn without_samples_the_bms_value_is_used_and_the_window_narrows_with_the_spread() {
        let mut t = HealthTracker::new(HealthConfig::default());
        let policy = Policy::default().battery;
        t.observe(t0(), obs(50.0));
        assert_eq!(t.capacity_in_use_wh(t0()), Some(400_000.0));
        // 80 mV at mid SoC: BMS window 13..87, with the 2 % margin 15..85.
        let mut snap = crate::dispatch::BatterySnapshot {
            online: true,
            soc: crate::dispatch::Reading::fresh(Percent(50.0)),
            soh: Percent(80.0),
            power: crate::dispatch::Reading::fresh(crate::units::Watts(0.0)),
            max_charge: crate::units::Watts(100_000.0),
            max_discharge: crate::units::Watts(100_000.0),
            temperature_c: 25.0,
            alarm: false,
            usable_capacity: crate::units::WattHours(400_000.0),
            health: HealthLimits::default(),
        };
        t.apply_to_snapshot(&policy, t0(), &mut snap);
        assert!(
            (snap.health.soc_min.0 - 15.0).abs() < 1e-9,
            "{:?}",
            snap.health
        );
        assert!((snap.health.soc_max.0 - 85.0).abs() < 1e-9);
        assert_eq!(
            snap.usable_capacity.0, 400_000.0,
            "BMS value until confident"
        );
        let mut input = BatteryInput {
            usable_wh: 400_000.0,
            soc0_pct: 12.0,
            soc_min_pct: 10.0,
            soc_max_pct: 90.0,
            max_charge_w: 100_000.0,
            max_discharge_w: 100_000.0,
            charge_eff: 0.95,
            discharge_eff: 0.95,
            wear_cost_cny_per_kwh_discharged: 0.14,
            calendar_cny_per_kwh_h: 0.0,
        };
        t.apply_to_planner(&policy, t0(), &mut input);
        for (v, want) in [
            (input.soc_min_pct, 15.0),
            (input.soc_max_pct, 85.0),
            (input.soc0_pct, 15.0),
        ] {
            assert!((v - want).abs() < 1e-9, "{v} vs {want}");
        }
        assert_eq!(input.usable_wh, 400_000.0);
        assert_eq!(input.wear_cost_cny_per_kwh_discharged, 0.14);
    }
}

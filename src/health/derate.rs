//! The SoC window and the power limits the measured cell spread and temperatures allow.
//!
//! * **Window.** A BMS pulls both ends of its window in as its cells drift apart: the lowest
//!   cell reaches its cutoff first on discharge, the highest first on charge. With the mid-SoC
//!   cell spread `s` (mV) measured from 803/804 (or 802's `CellVMax - CellVMin`), the BMS's
//!   window is estimated as `bms_soc_min_pct + k s .. bms_soc_max_pct - k s` (`k` =
//!   `window_pct_per_mv`), and dispatch keeps `window_margin_pct` inside it: the SoC floor is
//!   `max(policy soc_min, bms_min + k s + margin)`, the ceiling
//!   `min(policy soc_max, bms_max - k s - margin)`. Without a spread the policy window holds.
//! * **Power.** The share of the BMS limits dispatch may ask for follows the documented BMS
//!   temperature ramps, evaluated at the coolest and the hottest module: charging 0 below 0 C,
//!   rising to 1 at 10 C, falling from 35 C to 0 at 45 C; discharging 0 below -10 C, 1 from
//!   0 C, falling from 45 C to 0 at 55 C. Without temperatures the factors are 1 (the BMS's
//!   own limits still apply).

use super::config::HealthConfig;
use serde::Serialize;

/// What the health measurements allow now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Derating {
    pub soc_min_pct: f64,
    pub soc_max_pct: f64,
    pub charge_factor: f64,
    pub discharge_factor: f64,
}

/// Linear 0 -> 1 between `lo0` and `lo1`, 1 -> 0 between `hi1` and `hi0`.
fn ramp(x: f64, lo0: f64, lo1: f64, hi1: f64, hi0: f64) -> f64 {
    if !x.is_finite() || x <= lo0 || x >= hi0 {
        0.0
    } else if x < lo1 {
        (x - lo0) / (lo1 - lo0)
    } else if x > hi1 {
        (hi0 - x) / (hi0 - hi1)
    } else {
        1.0
    }
}

/// Charge and discharge factor at the coolest and hottest module temperature.
pub fn temperature_factors(t_min_c: Option<f64>, t_max_c: Option<f64>) -> (f64, f64) {
    let temps = [t_min_c, t_max_c];
    let mut charge: f64 = 1.0;
    let mut discharge: f64 = 1.0;
    for t in temps.into_iter().flatten() {
        charge = charge.min(ramp(t, 0.0, 10.0, 35.0, 45.0));
        discharge = discharge.min(ramp(t, -10.0, 0.0, 45.0, 55.0));
    }
    (charge, discharge)
}

/// The derated window and power factors (see the module docs).
pub fn derate(
    policy_soc_min_pct: f64,
    policy_soc_max_pct: f64,
    spread_mv: Option<f64>,
    t_min_c: Option<f64>,
    t_max_c: Option<f64>,
    cfg: &HealthConfig,
) -> Derating {
    let (mut lo, mut hi) = (policy_soc_min_pct, policy_soc_max_pct);
    if let Some(s) = spread_mv.filter(|s| s.is_finite() && *s >= 0.0) {
        let pull = cfg.window_pct_per_mv * s + cfg.window_margin_pct;
        lo = lo.max(cfg.bms_soc_min_pct + pull);
        hi = hi.min(cfg.bms_soc_max_pct - pull);
    }
    if lo > hi {
        // A spread this wide leaves no window: hold the battery at the middle of what is left.
        let mid = (lo + hi) / 2.0;
        lo = mid;
        hi = mid;
    }
    let (charge_factor, discharge_factor) = temperature_factors(t_min_c, t_max_c);
    Derating {
        soc_min_pct: lo.clamp(0.0, 100.0),
        soc_max_pct: hi.clamp(0.0, 100.0),
        charge_factor,
        discharge_factor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_pulls_both_ends_in_beyond_the_policy_window() {
        let cfg = HealthConfig::default();
        // 30 mV: BMS window 8..92, +2 margin = 10..90: the policy's 10..90 holds.
        let d = derate(10.0, 90.0, Some(30.0), None, None, &cfg);
        assert_eq!((d.soc_min_pct, d.soc_max_pct), (10.0, 90.0));
        // 80 mV: BMS 13..87, with margin 15..85.
        let d = derate(10.0, 90.0, Some(80.0), None, None, &cfg);
        assert!((d.soc_min_pct - 15.0).abs() < 1e-9 && (d.soc_max_pct - 85.0).abs() < 1e-9);
        let d = derate(10.0, 90.0, Some(1000.0), None, None, &cfg);
        assert_eq!(d.soc_min_pct, d.soc_max_pct);
    }

    #[test]
    fn temperature_ramps_follow_the_documented_bms_curve() {
        assert_eq!(temperature_factors(Some(25.0), Some(30.0)), (1.0, 1.0));
        let (c, d) = temperature_factors(Some(5.0), Some(30.0));
        assert!((c - 0.5).abs() < 1e-12 && d == 1.0);
        let (c, d) = temperature_factors(Some(30.0), Some(50.0));
        assert_eq!(c, 0.0);
        assert!((d - 0.5).abs() < 1e-12);
        assert_eq!(temperature_factors(None, None), (1.0, 1.0));
        assert_eq!(temperature_factors(Some(-20.0), None), (0.0, 0.0));
    }
}

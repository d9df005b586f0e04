//! `[battery_health]`: how the capacity is measured, when the measurement is trusted, how the
//! window and the power are derated, and when the pack has reached its end of life.

use crate::config::Issues;
use serde::Deserialize;

/// `[battery_health]` as written. Every key has a default; see [`HealthConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// Smallest SoC swing between two rest points that gives a capacity sample, %. Default 30.
    pub min_swing_pct: f64,
    /// The pack counts as resting below this AC power, W. Default 2000.
    pub rest_w: f64,
    /// ... for at least this long, s. Default 300.
    pub rest_s: f64,
    /// Longest span between the two rest points of one sample, h. Default 48.
    pub max_span_h: f64,
    /// Longest gap between two readings inside a sample, s (a longer one voids it). Default 60.
    pub max_gap_s: f64,
    /// One-way efficiency used when the BMS gives no DC voltage and current. Default 0.95.
    pub one_way_efficiency: f64,
    /// Error of one SoC reading (1 sigma), % SoC. Default 0.5.
    pub soc_error_pct: f64,
    /// Error of the measured energy (1 sigma), % of it. Default 1.
    pub energy_error_pct: f64,
    /// Half-life of a sample's weight in the estimate, days. Default 30.
    pub memory_days: f64,
    /// Samples needed before the estimate can be trusted. Default 3.
    pub min_samples: u32,
    /// Half-width of the 95 % band under which the estimate is trusted, % of it. Default 3.
    pub confident_band_pct: f64,
    /// BMS and measurement disagreeing by more than this, % of the measurement, is a warning
    /// once it has lasted `disagreement_hours`. Default 5.
    pub disagreement_pct: f64,
    /// Default 24.
    pub disagreement_hours: f64,
    /// The BMS's own SoC window before its cell-spread narrowing, %. Defaults 5 and 95.
    pub bms_soc_min_pct: f64,
    pub bms_soc_max_pct: f64,
    /// How far the BMS pulls each end of its window in per mV of cell spread (mid SoC), %.
    /// Default 0.1.
    pub window_pct_per_mv: f64,
    /// Extra SoC kept away from the BMS's estimated cutoffs, %. Default 2.
    pub window_margin_pct: f64,
    /// End of life: capacity at this share of nameplate, %. Default 60.
    pub eol_pct: f64,
    /// When the cells were made ("YYYY-MM-DD", from the module labels): the calendar age the
    /// fade fit uses. Default none (the age is fitted, weakly within a year of data).
    pub manufactured: Option<chrono::NaiveDate>,
    /// Calendar fade prior: capacity the cells lose in their first year from new in storage
    /// at 25 C and mid SoC, % of nameplate (a cell datasheet's storage test; the square-root
    /// law carries it to any age). Default 4 (NMC/NCA class, see `docs/battery-health.md`).
    pub calendar_fade_first_year_pct: f64,
    /// Relative uncertainty (1 sigma) of that prior, %. Default 30.
    pub calendar_fade_uncertainty_pct: f64,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            min_swing_pct: 30.0,
            rest_w: 2000.0,
            rest_s: 300.0,
            max_span_h: 48.0,
            max_gap_s: 60.0,
            one_way_efficiency: 0.95,
            soc_error_pct: 0.5,
            energy_error_pct: 1.0,
            memory_days: 30.0,
            min_samples: 3,
            confident_band_pct: 3.0,
            disagreement_pct: 5.0,
            disagreement_hours: 24.0,
            bms_soc_min_pct: 5.0,
            bms_soc_max_pct: 95.0,
            window_pct_per_mv: 0.1,
            window_margin_pct: 2.0,
            eol_pct: 60.0,
            manufactured: None,
            calendar_fade_first_year_pct: 4.0,
            calendar_fade_uncertainty_pct: 30.0,
        }
    }
}

/// The calendar fade prior as fractions: first-year loss from new (of nameplate) and its
/// relative standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalendarPriorConfig {
    pub first_year_loss: f64,
    pub rel_se: f64,
}

impl CalendarPriorConfig {
    /// The prior on the fit's calendar coefficient `a` for a pack of `nameplate_wh`, Wh per
    /// sqrt(day): `loss(t) = first_year_loss x nameplate x sqrt(t / 365 days)`.
    pub fn for_nameplate(&self, nameplate_wh: f64) -> super::trend::CalendarPrior {
        let a = self.first_year_loss * nameplate_wh / 365.0f64.sqrt();
        super::trend::CalendarPrior {
            calendar_wh_per_sqrt_day: a,
            se: self.rel_se * a,
        }
    }
}

/// Checked `[battery_health]` (same fields, validated; fractions where the file has %).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub min_swing_pct: f64,
    pub rest_w: f64,
    pub rest_s: f64,
    pub max_span_s: f64,
    pub max_gap_s: f64,
    pub one_way_efficiency: f64,
    pub soc_error_pct: f64,
    pub energy_error: f64,
    pub memory_days: f64,
    pub min_samples: u32,
    pub confident_band: f64,
    pub disagreement: f64,
    pub disagreement_s: f64,
    pub bms_soc_min_pct: f64,
    pub bms_soc_max_pct: f64,
    pub window_pct_per_mv: f64,
    pub window_margin_pct: f64,
    pub eol: f64,
    pub manufactured: Option<chrono::DateTime<chrono::Utc>>,
    /// The calendar fade prior (`None`: the fit has no prior; not reachable from the file).
    pub calendar_prior: Option<CalendarPriorConfig>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let mut issues = Issues::new();
        // The defaults are valid (tested); the fallback only keeps the function total.
        RawHealth::default()
            .validate("battery_health", &mut issues)
            .unwrap_or_else(HealthConfig::fallback)
    }
}

impl HealthConfig {
    fn fallback() -> Self {
        HealthConfig {
            min_swing_pct: 30.0,
            rest_w: 2000.0,
            rest_s: 300.0,
            max_span_s: 48.0 * 3600.0,
            max_gap_s: 60.0,
            one_way_efficiency: 0.95,
            soc_error_pct: 0.5,
            energy_error: 0.01,
            memory_days: 30.0,
            min_samples: 3,
            confident_band: 0.03,
            disagreement: 0.05,
            disagreement_s: 86_400.0,
            bms_soc_min_pct: 5.0,
            bms_soc_max_pct: 95.0,
            window_pct_per_mv: 0.1,
            window_margin_pct: 2.0,
            eol: 0.6,
            manufactured: None,
            calendar_prior: Some(CalendarPriorConfig {
                first_year_loss: 0.04,
                rel_se: 0.3,
            }),
        }
    }
}

impl RawHealth {
    /// Validate into a [`HealthConfig`]; every problem is pushed under `prefix.key`.
    pub fn validate(&self, prefix: &str, issues: &mut Issues) -> Option<HealthConfig> {
        let before = issues.len();
        let k = |name: &str| format!("{prefix}.{name}");
        issues.within(&k("min_swing_pct"), self.min_swing_pct, 5.0, 95.0);
        issues.within(&k("rest_w"), self.rest_w, 0.0, 1e6);
        issues.within(&k("rest_s"), self.rest_s, 0.0, 86_400.0);
        issues.within(&k("max_span_h"), self.max_span_h, 1.0, 24.0 * 14.0);
        issues.within(&k("max_gap_s"), self.max_gap_s, 1.0, 3600.0);
        issues.within(&k("one_way_efficiency"), self.one_way_efficiency, 0.5, 1.0);
        issues.within(&k("soc_error_pct"), self.soc_error_pct, 0.0, 20.0);
        issues.within(&k("energy_error_pct"), self.energy_error_pct, 0.0, 20.0);
        issues.within(&k("memory_days"), self.memory_days, 1.0, 3650.0);
        issues.within(&k("min_samples"), f64::from(self.min_samples), 1.0, 1000.0);
        issues.within(&k("confident_band_pct"), self.confident_band_pct, 0.1, 50.0);
        issues.within(&k("disagreement_pct"), self.disagreement_pct, 0.1, 100.0);
        issues.within(
            &k("disagreement_hours"),
            self.disagreement_hours,
            0.0,
            24.0 * 365.0,
        );
        issues.within(&k("bms_soc_min_pct"), self.bms_soc_min_pct, 0.0, 50.0);
        issues.within(&k("bms_soc_max_pct"), self.bms_soc_max_pct, 50.0, 100.0);
        issues.within(&k("window_pct_per_mv"), self.window_pct_per_mv, 0.0, 10.0);
        issues.within(&k("window_margin_pct"), self.window_margin_pct, 0.0, 20.0);
        issues.within(&k("eol_pct"), self.eol_pct, 1.0, 99.0);
        issues.within(
            &k("calendar_fade_first_year_pct"),
            self.calendar_fade_first_year_pct,
            0.0,
            30.0,
        );
        issues.within(
            &k("calendar_fade_uncertainty_pct"),
            self.calendar_fade_uncertainty_pct,
            1.0,
            1000.0,
        );
        let manufactured = self
            .manufactured
            .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc());
        if let Some(d) = self.manufactured {
            issues.within(
                &k("manufactured"),
                f64::from(chrono::Datelike::year(&d)),
                1990.0,
                2200.0,
            );
        }
        if issues.len() > before {
            return None;
        }
        Some(HealthConfig {
            min_swing_pct: self.min_swing_pct,
            rest_w: self.rest_w,
            rest_s: self.rest_s,
            max_span_s: self.max_span_h * 3600.0,
            max_gap_s: self.max_gap_s,
            one_way_efficiency: self.one_way_efficiency,
            soc_error_pct: self.soc_error_pct,
            energy_error: self.energy_error_pct / 100.0,
            memory_days: self.memory_days,
            min_samples: self.min_samples,
            confident_band: self.confident_band_pct / 100.0,
            disagreement: self.disagreement_pct / 100.0,
            disagreement_s: self.disagreement_hours * 3600.0,
            bms_soc_min_pct: self.bms_soc_min_pct,
            bms_soc_max_pct: self.bms_soc_max_pct,
            window_pct_per_mv: self.window_pct_per_mv,
            window_margin_pct: self.window_margin_pct,
            eol: self.eol_pct / 100.0,
            manufactured,
            calendar_prior: Some(CalendarPriorConfig {
                first_year_loss: self.calendar_fade_first_year_pct / 100.0,
                rel_se: self.calendar_fade_uncertainty_pct / 100.0,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_equal_the_fallback() {
        let mut issues = Issues::new();
        let c = RawHealth::default().validate("battery_health", &mut issues);
        assert!(issues.is_empty(), "{issues}");
        assert_eq!(c, Some(HealthConfig::fallback()));
    }

    #[test]
    fn every_bad_key_is_named_with_its_dotted_key() {
        let raw = RawHealth {
            min_swing_pct: 1.0,
            eol_pct: 120.0,
            memory_days: f64::NAN,
            calendar_fade_first_year_pct: -1.0,
            calendar_fade_uncertainty_pct: 0.0,
            ..RawHealth::default()
        };
        let mut issues = Issues::new();
        assert!(raw.validate("battery_health", &mut issues).is_none());
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "battery_health.min_swing_pct",
                "battery_health.memory_days",
                "battery_health.eol_pct",
                "battery_health.calendar_fade_first_year_pct",
                "battery_health.calendar_fade_uncertainty_pct"
            ]
        );
    }
}

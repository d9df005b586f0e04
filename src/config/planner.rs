//! `[planner]`: the predictive planner (src/planner, src/daemon/planning.rs). Off unless the
//! section is present with `enabled = true`.

use super::Issues;
use crate::planner::forecast::{LoadProfile, Site};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[planner]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPlanner {
    pub enabled: bool,
    /// Hours planned ahead (1..=48).
    pub horizon_h: f64,
    /// A solve that takes longer is abandoned and the previous plan kept, ms.
    pub solve_timeout_ms: u64,
    /// Least time between two re-plans on events, s.
    pub debounce_s: f64,
    /// Re-plan when the battery's SoC is this far from the plan's, percentage points.
    pub soc_drift_pct: f64,
    /// The PV array: latitude (north), longitude (east), tilt from horizontal, azimuth from
    /// north clockwise (180 = south), DC peak kW, clear-sky performance ratio.
    pub lat_deg: f64,
    pub lon_deg: f64,
    pub tilt_deg: f64,
    pub azimuth_deg: f64,
    pub kwp: f64,
    pub performance_ratio: f64,
    /// A day-ahead PV forecast (docs/planner-forecasts.md): a file path, or an `http://` URL.
    pub day_ahead: Option<String>,
    /// Re-read the day-ahead forecast this often, min.
    pub day_ahead_refresh_min: u64,
    /// Building load while history is short: 24 hourly averages, kW.
    pub fallback_weekday_kw: Vec<f64>,
    pub fallback_weekend_kw: Vec<f64>,
    /// How long a car stays when nobody said (and the forecast's dwell without history), h.
    pub default_dwell_h: f64,
    /// Per charger id: its default dwell, h (e.g. staff bays all day, customer bays 2 h).
    pub dwell_h: BTreeMap<String, f64>,
    /// Per charger id: local times ("HH:MM") a car usually arrives, for the car forecast while
    /// the ledger holds less than 3 days of each day type.
    pub arrivals: BTreeMap<String, Vec<String>>,
    /// Energy a car wants when nobody said, kWh.
    pub default_energy_kwh: f64,
    /// What a kWh a car wanted and did not get costs in the plan, CNY (it outweighs any
    /// tariff so the plan serves the cars first).
    pub unmet_cny_per_kwh: f64,
}

impl Default for RawPlanner {
    fn default() -> Self {
        let mut weekday = [20.0; 24];
        weekday[8..18].fill(45.0);
        let mut weekend = [20.0; 24];
        weekend[9..17].fill(30.0);
        RawPlanner {
            enabled: false,
            horizon_h: 24.0,
            solve_timeout_ms: 10_000,
            debounce_s: 10.0,
            soc_drift_pct: 5.0,
            lat_deg: 0.0,
            lon_deg: 0.0,
            tilt_deg: 0.0,
            azimuth_deg: 180.0,
            kwp: 0.0,
            performance_ratio: 0.8,
            day_ahead: None,
            day_ahead_refresh_min: 60,
            fallback_weekday_kw: weekday.to_vec(),
            fallback_weekend_kw: weekend.to_vec(),
            default_dwell_h: 3.0,
            dwell_h: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            default_energy_kwh: 15.0,
            unmet_cny_per_kwh: 20.0,
        }
    }
}

/// Where a day-ahead PV forecast comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DayAheadSource {
    File(PathBuf),
    /// `http://host[:port]/path`
    Http(String),
}

/// An injected solver fault (tests only: not settable from a file).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SolveFault {
    /// Every solve takes this much longer.
    Delay(Duration),
    /// Every solve fails.
    Fail,
}

/// The checked `[planner]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerSettings {
    pub horizon_steps: usize,
    pub solve_timeout: Duration,
    pub debounce: Duration,
    pub soc_drift_pct: f64,
    /// The array; its AC rating is the PV device's `rating_kw` (else `kwp`).
    pub site: Site,
    pub day_ahead: Option<DayAheadSource>,
    pub day_ahead_refresh: Duration,
    pub load_fallback: LoadProfile,
    pub default_dwell: chrono::Duration,
    /// Per charger id, its dwell.
    pub dwell: BTreeMap<String, chrono::Duration>,
    /// Per charger id, the local times cars usually arrive (fallback of the car forecast).
    pub arrivals: BTreeMap<String, Vec<chrono::NaiveTime>>,
    pub default_energy_wh: f64,
    pub unmet_cny_per_kwh: f64,
    pub fault: Option<SolveFault>,
}

impl PlannerSettings {
    /// The usual arrival times of charger `id`.
    pub fn arrivals_of(&self, id: &str) -> Vec<chrono::NaiveTime> {
        self.arrivals.get(id).cloned().unwrap_or_default()
    }

    /// The default dwell of charger `id`.
    pub fn dwell_of(&self, id: &str) -> chrono::Duration {
        self.dwell.get(id).copied().unwrap_or(self.default_dwell)
    }
}

fn hours(h: f64) -> chrono::Duration {
    chrono::Duration::seconds((h * 3600.0).round() as i64)
}

fn profile(key: &str, kw: &[f64], issues: &mut Issues) -> [f64; 24] {
    let mut out = [0.0; 24];
    if kw.len() != 24 {
        issues.push(
            key,
            format!("expected 24 hourly values, kW (got {})", kw.len()),
        );
    }
    for (i, v) in kw.iter().enumerate().take(24) {
        issues.non_negative(&format!("{key}[{i}]"), *v);
        out[i] = v * 1000.0;
    }
    out
}

impl RawPlanner {
    /// Check `[planner]` (`chargers`: the configured charger ids, `pv_ac_kw`: the PV device's
    /// rating), enabled or not; `None` when disabled or wrong (the issues say why).
    pub fn validate(
        &self,
        chargers: &[String],
        pv_ac_kw: Option<f64>,
        issues: &mut Issues,
    ) -> Option<PlannerSettings> {
        let before = issues.len();
        issues.within("planner.horizon_h", self.horizon_h, 1.0, 48.0);
        if !(100..=120_000).contains(&self.solve_timeout_ms) {
            issues.push(
                "planner.solve_timeout_ms",
                format!(
                    "must be within [100, 120000] (got {})",
                    self.solve_timeout_ms
                ),
            );
        }
        issues.within("planner.debounce_s", self.debounce_s, 0.0, 900.0);
        issues.within("planner.soc_drift_pct", self.soc_drift_pct, 0.5, 100.0);
        issues.within("planner.lat_deg", self.lat_deg, -90.0, 90.0);
        issues.within("planner.lon_deg", self.lon_deg, -180.0, 180.0);
        issues.within("planner.tilt_deg", self.tilt_deg, 0.0, 90.0);
        issues.within("planner.azimuth_deg", self.azimuth_deg, 0.0, 360.0);
        issues.non_negative("planner.kwp", self.kwp);
        issues.within(
            "planner.performance_ratio",
            self.performance_ratio,
            0.1,
            1.0,
        );
        if self.day_ahead_refresh_min == 0 {
            issues.push("planner.day_ahead_refresh_min", "must be >= 1 (got 0)");
        }
        let weekday = profile(
            "planner.fallback_weekday_kw",
            &self.fallback_weekday_kw,
            issues,
        );
        let weekend = profile(
            "planner.fallback_weekend_kw",
            &self.fallback_weekend_kw,
            issues,
        );
        issues.within("planner.default_dwell_h", self.default_dwell_h, 0.25, 72.0);
        for (id, h) in &self.dwell_h {
            if !chargers.contains(id) {
                issues.push(
                    format!("planner.dwell_h.{id}"),
                    format!(
                        "no charger {id:?} is configured (chargers: {})",
                        chargers.join(", ")
                    ),
                );
            }
            issues.within(&format!("planner.dwell_h.{id}"), *h, 0.25, 72.0);
        }
        let arrivals = self.check_arrivals(chargers, issues);
        issues.within(
            "planner.default_energy_kwh",
            self.default_energy_kwh,
            0.0,
            200.0,
        );
        issues.non_negative("planner.unmet_cny_per_kwh", self.unmet_cny_per_kwh);
        let day_ahead = self.day_ahead.as_deref().and_then(|s| day_ahead(s, issues));
        (self.enabled && issues.len() == before).then(|| PlannerSettings {
            horizon_steps: (self.horizon_h * 4.0).round() as usize,
            solve_timeout: Duration::from_millis(self.solve_timeout_ms),
            debounce: Duration::from_secs_f64(self.debounce_s),
            soc_drift_pct: self.soc_drift_pct,
            site: Site {
                lat_deg: self.lat_deg,
                lon_deg: self.lon_deg,
                tilt_deg: self.tilt_deg,
                azimuth_deg: self.azimuth_deg,
                kwp: self.kwp,
                ac_kw: pv_ac_kw.unwrap_or(self.kwp),
                performance_ratio: self.performance_ratio,
            },
            day_ahead,
            day_ahead_refresh: Duration::from_secs(60 * self.day_ahead_refresh_min),
            load_fallback: LoadProfile {
                weekday_w: weekday,
                weekend_w: weekend,
            },
            default_dwell: hours(self.default_dwell_h),
            dwell: self
                .dwell_h
                .iter()
                .map(|(k, h)| (k.clone(), hours(*h)))
                .collect(),
            arrivals,
            default_energy_wh: self.default_energy_kwh * 1000.0,
            unmet_cny_per_kwh: self.unmet_cny_per_kwh,
            fault: None,
        })
    }
}

impl RawPlanner {
    /// `planner.arrivals.<charger>`: known chargers, "HH:MM" times.
    fn check_arrivals(
        &self,
        chargers: &[String],
        issues: &mut Issues,
    ) -> BTreeMap<String, Vec<chrono::NaiveTime>> {
        let mut out = BTreeMap::new();
        for (id, times) in &self.arrivals {
            let key = format!("planner.arrivals.{id}");
            if !chargers.contains(id) {
                issues.push(&key, format!("no charger {id:?} is configured"));
            }
            let mut parsed = Vec::new();
            for (i, t) in times.iter().enumerate() {
                match chrono::NaiveTime::parse_from_str(t, "%H:%M") {
                    Ok(t) => parsed.push(t),
                    Err(_) => {
                        issues.push(format!("{key}[{i}]"), format!("expected HH:MM (got {t:?})"))
                    }
                }
            }
            out.insert(id.clone(), parsed);
        }
        out
    }
}

fn day_ahead(s: &str, issues: &mut Issues) -> Option<DayAheadSource> {
    if let Some(rest) = s.strip_prefix("http://") {
        if rest.is_empty() || rest.starts_with('/') {
            issues.push(
                "planner.day_ahead",
                format!("expected http://HOST[:PORT]/PATH (got {s:?})"),
            );
            return None;
        }
        return Some(DayAheadSource::Http(s.to_string()));
    }
    if s.starts_with("https://") {
        issues.push(
            "planner.day_ahead",
            "https is not supported: use http:// on a local relay, or a file",
        );
        return None;
    }
    if s.is_empty() {
        issues.push(
            "planner.day_ahead",
            "empty: leave the key out for no day-ahead forecast",
        );
        return None;
    }
    Some(DayAheadSource::File(PathBuf::from(s)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_disabled_planner_is_none_and_still_checked_with_dotted_keys() {
        let chargers = vec!["charger-1".to_string()];
        let mut issues = Issues::new();
        assert!(RawPlanner::default()
            .validate(&chargers, None, &mut issues)
            .is_none());
        assert!(issues.is_empty());
        let mut raw = RawPlanner {
            horizon_h: 72.0,
            fallback_weekday_kw: vec![1.0; 23],
            day_ahead: Some("https://x".into()),
            ..RawPlanner::default()
        };
        raw.dwell_h.insert("charger-9".into(), 8.0);
        assert!(raw.validate(&chargers, None, &mut issues).is_none());
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "planner.horizon_h",
                "planner.fallback_weekday_kw",
                "planner.dwell_h.charger-9",
                "planner.day_ahead"
            ]
        );
    }

    #[test]
    fn an_enabled_planner_gets_its_site_dwells_and_steps() {
        let chargers = vec!["charger-1".to_string(), "charger-2".to_string()];
        let mut raw = RawPlanner {
            enabled: true,
            horizon_h: 36.0,
            kwp: 150.0,
            ..RawPlanner::default()
        };
        raw.dwell_h.insert("charger-1".into(), 9.0);
        raw.arrivals
            .insert("charger-2".into(), vec!["08:30".into()]);
        let mut issues = Issues::new();
        let s = raw.validate(&chargers, Some(135.0), &mut issues).unwrap();
        assert_eq!(s.horizon_steps, 144);
        assert_eq!(s.site.ac_kw, 135.0);
        assert_eq!(s.dwell_of("charger-1"), chrono::Duration::hours(9));
        assert_eq!(s.dwell_of("charger-2"), chrono::Duration::hours(3));
        assert_eq!(s.load_fallback.weekday_w[12], 45_000.0);
        assert_eq!(
            s.arrivals_of("charger-2"),
            [chrono::NaiveTime::from_hms_opt(8, 30, 0).unwrap()]
        );
        assert!(s.arrivals_of("charger-1").is_empty());
        raw.arrivals.insert("charger-1".into(), vec!["8h30".into()]);
        assert!(raw.validate(&chargers, None, &mut issues).is_none());
        assert_eq!(
            issues.iter().next().unwrap().key,
            "planner.arrivals.charger-1[0]"
        );
    }
}

//! Scenario validation: one short check per section, every problem collected.
//!
//! Each section pushes one [`Issue`] per bad value into an [`Issues`] collector and keeps
//! going, so a scenario with three mistakes is refused with all three named by their dotted
//! key. (The controller has its own collector for its config; the simulator never depends on
//! the controller, so this is the simulator's.)

use super::{
    parse_date, parse_time, BatteryParams, BookedCar, BuildingParams, ChargerParams, FaultKind,
    FaultSpec, PvParams, Scenario, ScenarioError, ScriptedArrival, Tariff, VehicleParams, Weather,
};
use std::fmt;

/// One problem with one scenario key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key, e.g. `battery.soh_pct` or `faults[1].latency_ms`.
    pub key: String,
    /// What is wrong, e.g. `300 is outside 1..=100`.
    pub problem: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario key `{}`: {}", self.key, self.problem)
    }
}

/// Every problem found in a scenario, in the order of the file's sections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issues(Vec<Issue>);

impl Issues {
    fn push(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.0.push(Issue {
            key: key.into(),
            problem: problem.into(),
        });
    }

    /// Push `key: v is outside lo..=hi` unless `v` is finite and within.
    fn range(&mut self, key: &str, v: f64, lo: f64, hi: f64) {
        if !(v.is_finite() && v >= lo && v <= hi) {
            self.push(key, format!("{v} is outside {lo}..={hi}"));
        }
    }

    /// Push `key: must be 1 or 3` unless `phases` is 1 or 3.
    fn phases(&mut self, key: &str, phases: u8) {
        if phases != 1 && phases != 3 {
            self.push(key, "must be 1 or 3");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Issue> {
        self.0.iter()
    }

    /// The dotted keys, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|i| i.key.as_str()).collect()
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

const LOCAL_TIME_FORMAT: &str = "expected HH:MM[:SS] or YYYY-MM-DD HH:MM[:SS]";

impl Scenario {
    /// Check every value; the error lists every problem, each named by its dotted key.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut issues = Issues::default();
        self.check_site_and_start(&mut issues);
        check_weather(&self.weather, &mut issues);
        check_pv(&self.pv, &mut issues);
        check_battery(&self.battery, &mut issues);
        check_chargers(&self.chargers, &mut issues);
        check_building(&self.building, &mut issues);
        check_vehicles(&self.vehicles, &mut issues);
        for (i, s) in self.vehicles.scripted.iter().enumerate() {
            self.check_scripted(i, s, &mut issues);
        }
        for (i, b) in self.vehicles.bookings.iter().enumerate() {
            self.check_booked(i, b, &mut issues);
        }
        issues.range("grid.import_limit_kw", self.grid.import_limit_kw, 0.0, 1e6);
        issues.range("grid.export_limit_kw", self.grid.export_limit_kw, 0.0, 1e6);
        check_tariff(&self.tariff, &mut issues);
        let o = &self.objective;
        issues.range("objective.unmet_cny_per_kwh", o.unmet_cny_per_kwh, 0.0, 1e4);
        if let Some(v) = o.stored_cny_per_kwh {
            issues.range("objective.stored_cny_per_kwh", v, 0.0, 100.0);
        }
        issues.range("co2_kg_per_kwh", self.co2_kg_per_kwh, 0.0, 10.0);
        for (i, f) in self.faults.iter().enumerate() {
            self.check_fault(i, f, &mut issues);
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ScenarioError::Invalid(issues))
        }
    }

    fn check_site_and_start(&self, issues: &mut Issues) {
        if let Err(e) = self.timezone() {
            issues.push("site.timezone", e);
        }
        if parse_date(&self.start.date).is_none() {
            issues.push("start.date", "expected YYYY-MM-DD");
        }
        if parse_time(&self.start.time).is_none() {
            issues.push("start.time", "expected HH:MM or HH:MM:SS");
        }
        issues.range("site.lat_deg", self.site.lat_deg, -90.0, 90.0);
        issues.range("site.lon_deg", self.site.lon_deg, -180.0, 180.0);
    }

    /// A local time of a scripted arrival or a fault. A bare time on a start date that is
    /// itself invalid is not reported again (`start.date` already is).
    fn check_local_time(&self, key: &str, at: &str, issues: &mut Issues) {
        if self.resolve_local(at).is_some() {
            return;
        }
        let bare_time = !at.trim().contains([' ', 'T']);
        if bare_time && parse_time(at).is_some() && parse_date(&self.start.date).is_none() {
            return;
        }
        issues.push(key, LOCAL_TIME_FORMAT);
    }

    fn check_scripted(&self, i: usize, s: &ScriptedArrival, issues: &mut Issues) {
        let k = |f: &str| format!("vehicles.scripted[{i}].{f}");
        let count = self.chargers.count;
        if s.charger == 0 || s.charger > count {
            issues.push(k("charger"), format!("must be 1..={count}"));
        }
        self.check_local_time(&k("at"), &s.at, issues);
        issues.range(&k("battery_kwh"), s.battery_kwh, 1.0, 500.0);
        issues.range(&k("soc_pct"), s.soc_pct, 0.0, 100.0);
        issues.range(&k("target_pct"), s.target_pct, 0.0, 100.0);
        issues.range(&k("stay_h"), s.stay_h, 0.0, 24.0 * 14.0);
        issues.range(&k("onboard_a"), s.onboard_a, 0.0, 80.0);
        issues.phases(&k("phases"), s.phases);
    }

    fn check_booked(&self, i: usize, b: &BookedCar, issues: &mut Issues) {
        let k = |f: &str| format!("vehicles.bookings[{i}].{f}");
        let count = self.chargers.count;
        if b.charger.is_some_and(|c| c == 0 || c > count) {
            issues.push(k("charger"), format!("must be 1..={count}"));
        }
        self.check_local_time(&k("at"), &b.at, issues);
        issues.range(&k("stay_h"), b.stay_h, 0.01, 24.0 * 14.0);
        if let Some(e) = b.energy_kwh {
            issues.range(&k("energy_kwh"), e, 0.0, 500.0);
        }
        if let Some(p) = b.max_kw {
            issues.range(&k("max_kw"), p, 0.1, 400.0);
        }
    }

    fn check_fault(&self, i: usize, f: &FaultSpec, issues: &mut Issues) {
        let k = |n: &str| format!("faults[{i}].{n}");
        self.check_local_time(&k("at"), &f.at, issues);
        issues.range(&k("duration_s"), f.duration_s, 0.0, 1e9);
        match f.kind {
            FaultKind::Latency if f.latency_ms.is_none() => {
                issues.push(k("latency_ms"), "required for kind = \"latency\"");
            }
            FaultKind::Exception if f.exception_code.is_none() => {
                issues.push(k("exception_code"), "required for kind = \"exception\"");
            }
            FaultKind::BadValue if f.point.is_none() || f.value.is_none() => {
                issues.push(
                    k("point"),
                    "point and value required for kind = \"bad_value\"",
                );
            }
            _ => {}
        }
    }
}

fn check_weather(w: &Weather, issues: &mut Issues) {
    issues.range("weather.clearness_mean", w.clearness_mean, 0.0, 1.2);
    issues.range("weather.clearness_spread", w.clearness_spread, 0.0, 1.0);
    if let Some(k) = w.fixed_clearness {
        issues.range("weather.fixed_clearness", k, 0.0, 1.2);
    }
    issues.range("weather.cloud_phi", w.cloud_phi, 0.0, 0.9999);
    issues.range("weather.cloud_sigma", w.cloud_sigma, 0.0, 1.0);
}

fn check_pv(pv: &PvParams, issues: &mut Issues) {
    issues.range("pv.kwp", pv.kwp, 0.0, 1e5);
    issues.range("pv.inverter_ac_kw", pv.inverter_ac_kw, 0.001, 1e5);
    issues.range("pv.inverter_efficiency", pv.inverter_efficiency, 0.5, 1.0);
    issues.range("pv.performance_ratio", pv.performance_ratio, 0.1, 1.0);
    let ramp = pv.limit_ramp_pct_per_s;
    issues.range("pv.limit_ramp_pct_per_s", ramp, 0.01, 1e4);
}

fn check_battery(b: &BatteryParams, issues: &mut Issues) {
    issues.range("battery.nameplate_kwh", b.nameplate_kwh, 0.1, 1e5);
    issues.range("battery.soh_pct", b.soh_pct, 1.0, 100.0);
    issues.range("battery.pcs_kw", b.pcs_kw, 0.1, 1e5);
    issues.range("battery.c_rate_cap", b.c_rate_cap, 0.01, 10.0);
    issues.range("battery.soc_min_pct", b.soc_min_pct, 0.0, 50.0);
    issues.range("battery.soc_max_pct", b.soc_max_pct, 50.0, 100.0);
    issues.range("battery.initial_soc_pct", b.initial_soc_pct, 0.0, 100.0);
    let reserve = b.soc_reserve_min_pct;
    issues.range("battery.soc_reserve_min_pct", reserve, 0.0, 100.0);
    issues.range("battery.efficiency", b.efficiency, 0.5, 1.0);
    issues.range("battery.ambient_c", b.ambient_c, -40.0, 60.0);
    if let Some(t) = b.initial_temp_c {
        issues.range("battery.initial_temp_c", t, -40.0, 80.0);
    }
    issues.range("battery.imbalance_mv", b.imbalance_mv, 0.0, 200.0);
    issues.range("battery.ramp_kw_per_s", b.ramp_kw_per_s, 0.01, 1e5);
    issues.range("battery.pack_value_cny", b.pack_value_cny, 0.0, 1e9);
    let loss = b.allowed_soh_loss_pct;
    issues.range("battery.allowed_soh_loss_pct", loss, 0.1, 100.0);
    let cells = f64::from(b.series_cells);
    issues.range("battery.series_cells", cells, 1.0, 1000.0);
    issues.range("battery.bms_soh_bias_pct", b.bms_soh_bias_pct, -50.0, 50.0);
    if let Some(r) = b.bms_soh_reported_pct {
        issues.range("battery.bms_soh_reported_pct", r, 1.0, 100.0);
    }
    if let Some(d) = b.bms_soh_update_days {
        issues.range("battery.bms_soh_update_days", d, 0.0, 3650.0);
    }
    let growth = b.imbalance_growth_mv_per_efc;
    issues.range("battery.imbalance_growth_mv_per_efc", growth, 0.0, 10.0);
    let modules = f64::from(b.modules);
    issues.range(
        "battery.modules",
        modules,
        1.0,
        f64::from(b.series_cells.max(1)),
    );
}

fn check_chargers(c: &ChargerParams, issues: &mut Issues) {
    issues.range("chargers.count", c.count as f64, 0.0, 1000.0);
    issues.phases("chargers.phases", c.phases);
    issues.range("chargers.rating_a", c.rating_a, 6.0, 80.0);
    issues.range("chargers.safe_current_a", c.safe_current_a, 0.0, 80.0);
}

fn check_building(b: &BuildingParams, issues: &mut Issues) {
    issues.range("building.night_kw", b.night_kw, 0.0, 1e5);
    issues.range("building.business_kw", b.business_kw, 0.0, 1e5);
    let extra = b.business_peak_extra_kw;
    issues.range("building.business_peak_extra_kw", extra, 0.0, 1e5);
    issues.range("building.weekend_factor", b.weekend_factor, 0.0, 2.0);
    issues.range("building.open_hour", b.open_hour, 0.0, 24.0);
    issues.range("building.close_hour", b.close_hour, b.open_hour, 24.0);
    issues.range("building.noise_kw", b.noise_kw, 0.0, 1e4);
    let steps = b.workshop_steps_per_day;
    issues.range("building.workshop_steps_per_day", steps, 0.0, 100.0);
    issues.range("building.workshop_min_kw", b.workshop_min_kw, 0.0, 1e4);
    let max = b.workshop_max_kw;
    issues.range("building.workshop_max_kw", max, b.workshop_min_kw, 1e4);
    let mean = b.workshop_mean_min;
    issues.range("building.workshop_mean_min", mean, 1.0, 1440.0);
}

fn check_vehicles(v: &VehicleParams, issues: &mut Issues) {
    issues.range("vehicles.arrival_scale", v.arrival_scale, 0.0, 100.0);
    let counts = [
        ("vehicles.staff_per_weekday", v.staff_per_weekday),
        ("vehicles.staff_per_weekend_day", v.staff_per_weekend_day),
        ("vehicles.customers_per_weekday", v.customers_per_weekday),
        (
            "vehicles.customers_per_weekend_day",
            v.customers_per_weekend_day,
        ),
        ("vehicles.demo_per_evening", v.demo_per_evening),
    ];
    for (key, n) in counts {
        issues.range(key, n, 0.0, 1000.0);
    }
    issues.range("vehicles.share_32a_3ph", v.share_32a_3ph, 0.0, 1.0);
    let rest = 1.0 - v.share_32a_3ph;
    issues.range("vehicles.share_16a_3ph", v.share_16a_3ph, 0.0, rest);
    issues.range("vehicles.energy_mean_kwh", v.energy_mean_kwh, 0.1, 200.0);
}

fn check_tariff(t: &Tariff, issues: &mut Issues) {
    issues.range("tariff.flat_cny_per_kwh", t.flat_cny_per_kwh, -100.0, 100.0);
    let export = t.export_cny_per_kwh;
    issues.range("tariff.export_cny_per_kwh", export, -100.0, 100.0);
    issues.range("tariff.demand_cny_per_kw", t.demand_cny_per_kw, 0.0, 1e4);
    for (i, p) in t.periods.iter().enumerate() {
        let k = |f: &str| format!("tariff.periods[{i}].{f}");
        if parse_time(&p.from).is_none() {
            issues.push(k("from"), "expected HH:MM");
        }
        if parse_time(&p.to).is_none() {
            issues.push(k("to"), "expected HH:MM");
        }
        issues.range(&k("cny_per_kwh"), p.cny_per_kwh, -100.0, 100.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn issues_of(toml: &str) -> Issues {
        match Scenario::from_toml_str(toml) {
            Err(ScenarioError::Invalid(issues)) => issues,
            other => panic!("expected validation issues, got {other:?}"),
        }
    }

    #[test]
    fn bad_bms_soh_and_spread_keys_are_named_by_their_dotted_key() {
        let issues = issues_of(
            "[battery]\nbms_soh_bias_pct = 80\nbms_soh_reported_pct = 0\n\
             bms_soh_update_days = -1\nimbalance_growth_mv_per_efc = -0.1\nmodules = 0\n",
        );
        assert_eq!(
            issues.keys(),
            [
                "battery.bms_soh_bias_pct",
                "battery.bms_soh_reported_pct",
                "battery.bms_soh_update_days",
                "battery.imbalance_growth_mv_per_efc",
                "battery.modules"
            ]
        );
    }

    #[test]
    fn three_mistakes_in_three_sections_are_all_named() {
        let issues = issues_of(
            "[battery]\nsoh_pct = 300\n\
             [chargers]\nphases = 2\n\
             [[faults]]\nat = \"10:00\"\ndevice = \"pv\"\nkind = \"latency\"\nduration_s = 5\n",
        );
        assert_eq!(
            issues.keys(),
            ["battery.soh_pct", "chargers.phases", "faults[0].latency_ms"]
        );
        assert_eq!(
            issues.to_string(),
            "scenario key `battery.soh_pct`: 300 is outside 1..=100\n\
             scenario key `chargers.phases`: must be 1 or 3\n\
             scenario key `faults[0].latency_ms`: required for kind = \"latency\""
        );
    }

    #[test]
    fn one_section_reports_every_bad_key_of_its_own() {
        let issues = issues_of(
            "[[vehicles.scripted]]\ncharger = 9\nat = \"9h\"\nbattery_kwh = 60\n\
             soc_pct = 20\ntarget_pct = 180\nstay_h = 2\nonboard_a = 32\nphases = 2\n",
        );
        assert_eq!(
            issues.keys(),
            [
                "vehicles.scripted[0].charger",
                "vehicles.scripted[0].at",
                "vehicles.scripted[0].target_pct",
                "vehicles.scripted[0].phases",
            ]
        );
    }

    #[test]
    fn a_booking_names_each_bad_key_and_a_good_one_passes() {
        let issues = issues_of(
            "[[vehicles.bookings]]\ncharger = 0\nat = \"1pm\"\nstay_h = 0\n\
             energy_kwh = -5\nmax_kw = 0\n\
             [[vehicles.bookings]]\nat = \"13:00\"\nstay_h = 2.5\nenergy_kwh = 40\n",
        );
        assert_eq!(
            issues.keys(),
            [
                "vehicles.bookings[0].charger",
                "vehicles.bookings[0].at",
                "vehicles.bookings[0].stay_h",
                "vehicles.bookings[0].energy_kwh",
                "vehicles.bookings[0].max_kw",
            ]
        );
    }

    #[test]
    fn a_bad_start_date_is_not_blamed_on_every_bare_time() {
        let issues = issues_of(
            "[start]\ndate = \"2026-13-01\"\n\
             [[faults]]\nat = \"10:00\"\ndevice = \"pv\"\nkind = \"offline\"\nduration_s = 5\n\
             [[faults]]\nat = \"10:99\"\ndevice = \"pv\"\nkind = \"offline\"\nduration_s = 5\n",
        );
        assert_eq!(issues.keys(), ["start.date", "faults[1].at"]);
    }

    #[test]
    fn every_shipped_scenario_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert_eq!(p.file_stem().unwrap().to_str(), Some(s.name.as_str()));
                s.name
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cloudy-winter-weekday",
                "ev-rush",
                "ev-rush-booked",
                "faults-day",
                "sunny-weekday",
                "weekend"
            ]
        );
    }

    #[test]
    fn the_booked_rush_is_the_rush_with_bookings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let plain = |name: &str| {
            let mut s = Scenario::load(&dir.join(format!("{name}.toml"))).unwrap();
            let booked = std::mem::take(&mut s.vehicles.bookings).len();
            (s.name, s.description) = (String::new(), String::new());
            (format!("{s:?}"), booked)
        };
        let (rush, none) = plain("ev-rush");
        let (booked_rush, eight) = plain("ev-rush-booked");
        assert_eq!((none, eight), (0, 8));
        assert_eq!(rush, booked_rush, "the same station, day and cars");
    }
}

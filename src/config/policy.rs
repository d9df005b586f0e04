//! The `[policy]` section as written in TOML ([`RawPolicy`]) and its validation into the
//! checked [`Policy`] that dispatch runs on.
//!
//! Every raw struct takes `#[serde(default)]`, so a file only needs the keys it changes; unknown
//! keys are refused. `RawPolicy::default()` is the reference station of
//! `docs/reference-station.md` and the one source of every policy default: `Policy::default()`
//! is that raw default checked. Each section validates on its own ([`RawPolicy::checked`]
//! always builds a value and pushes one issue per problem), so every mistake is named at once.

use super::issues::Issues;
use crate::dispatch::policy::{
    in_window, parse_hhmm, BatteryPolicy, ChargeMode, ChargerPolicy, EveningReserve, GridPolicy,
    Policy, ServeFirst, Sharing, Tariff, TariffPeriod, VehiclePolicy, MINUTES_PER_DAY,
};
use crate::units::{Amps, Percent, Watts};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[grid]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawGridPolicy {
    /// Contracted import limit, kW. Default 150.
    pub import_limit_kw: f64,
    /// Export limit, kW; 0 = zero export. Default 100.
    pub export_limit_kw: f64,
    /// Main fuse per phase, A; unset = not checked per phase. Default unset.
    pub phase_fuse_a: Option<f64>,
    /// Import the battery tries to stay under for the demand charge (15-minute average), kW.
    /// The target rises to the month's peak once that is higher. Default 40 (a little over
    /// half of the reference building's 71.5 kW business-hours peak, so the battery shaves
    /// the demand charge without emptying itself on an ordinary day).
    pub demand_target_kw: f64,
    /// Headroom the plan keeps below `import_limit_kw`, kW: the plant shows load steps, PV
    /// drops and falling BMS limits one cycle late, so planning exactly at the limit breaches
    /// it for a cycle. Size it to the largest step of uncontrolled load (or PV drop) within
    /// one cycle: the reference workshop steps by up to 20 kW, on top of a few kW of building
    /// noise and PV drops. Used for the import-limit budget only, not for the demand target.
    /// At most half the limit. Default 25.
    pub import_margin_kw: f64,
}

impl Default for RawGridPolicy {
    fn default() -> Self {
        RawGridPolicy {
            import_limit_kw: 150.0,
            export_limit_kw: 100.0,
            phase_fuse_a: None,
            demand_target_kw: 40.0,
            import_margin_kw: 25.0,
        }
    }
}

/// `[vehicles.chargers.<id>]`: per-charger overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawChargerOverride {
    /// Mode for this charger; default: `vehicles.default_mode`.
    pub mode: Option<ChargeMode>,
    /// Lowest current offered, A (>= 6); default: the charger's own minimum.
    pub min_a: Option<f64>,
    /// Highest current offered, A; default: the charger's rating.
    pub max_a: Option<f64>,
    /// Higher is served first with `sharing = "priority"`. Default 0.
    pub priority: i32,
}

/// `[vehicles]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawVehiclePolicy {
    /// Default "fast".
    pub default_mode: ChargeMode,
    /// Per-charger overrides keyed by charger id. Default none.
    pub chargers: BTreeMap<String, RawChargerOverride>,
    /// Default "equal".
    pub sharing: Sharing,
    /// A solar-mode charger once started runs at least this long, s. Default 300.
    pub min_on_s: f64,
    /// A solar-mode charger once paused stays paused at least this long, s. Default 300.
    pub min_off_s: f64,
    /// Surplus margin around the minimum power for starting/pausing solar charging, W.
    /// Default 500.
    pub hysteresis_w: f64,
    /// Largest current increase per second, A/s (decreases are immediate). Default 2.
    pub ramp_up_a_per_s: f64,
}

impl Default for RawVehiclePolicy {
    fn default() -> Self {
        RawVehiclePolicy {
            default_mode: ChargeMode::Fast,
            chargers: BTreeMap::new(),
            sharing: Sharing::Equal,
            min_on_s: 300.0,
            min_off_s: 300.0,
            hysteresis_w: 500.0,
            ramp_up_a_per_s: 2.0,
        }
    }
}

/// `[battery.evening_reserve]`: from `from` until `before` the battery does not discharge
/// for tariff arbitrage below `soc_pct`, keeping energy for the evening peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawEveningReserve {
    /// Default 50.
    pub soc_pct: f64,
    /// Default "07:00".
    pub from: String,
    /// Default "18:00".
    pub before: String,
}

impl Default for RawEveningReserve {
    fn default() -> Self {
        RawEveningReserve {
            soc_pct: 50.0,
            from: "07:00".to_string(),
            before: "18:00".to_string(),
        }
    }
}

/// `[battery]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBatteryPolicy {
    /// SoC window, % of usable capacity. Defaults 10 and 90.
    pub soc_min_pct: f64,
    pub soc_max_pct: f64,
    /// Power cap as a C-rate of the usable capacity. Default 0.5.
    pub c_rate_cap: f64,
    /// Default: 50 % from 07:00 before 18:00. Leave the table out to keep the default;
    /// set `soc_pct` to the SoC minimum to disable.
    pub evening_reserve: Option<RawEveningReserve>,
    /// Charge from the grid in the cheapest tariff period when the peak spread pays. Default false.
    pub grid_charging_in_valley: bool,
    /// Round-trip efficiency, fraction. Default 0.90.
    pub round_trip_efficiency: f64,
    /// Value of the pack, CNY. Default 150000.
    pub pack_value_cny: f64,
    /// Equivalent full cycles until `allowed_loss` of capacity is gone. Default 3000.
    pub cycle_life_efc: f64,
    /// Capacity loss (fraction) at which the pack is worth nothing. Default 0.2.
    /// Wear cost per kWh discharged = pack value x (allowed_loss / cycle_life_efc) /
    /// (allowed_loss x usable kWh).
    pub allowed_loss: f64,
}

impl Default for RawBatteryPolicy {
    fn default() -> Self {
        RawBatteryPolicy {
            soc_min_pct: 10.0,
            soc_max_pct: 90.0,
            c_rate_cap: 0.5,
            evening_reserve: Some(RawEveningReserve::default()),
            grid_charging_in_valley: false,
            round_trip_efficiency: 0.90,
            pack_value_cny: 150_000.0,
            cycle_life_efc: 3000.0,
            allowed_loss: 0.2,
        }
    }
}

/// `[[tariff.periods]]`: a time-of-use period, `start` inclusive, `end` exclusive; may wrap
/// midnight (`23:00`-`07:00`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTariffPeriod {
    pub name: String,
    pub start: String,
    pub end: String,
    pub price_cny_per_kwh: f64,
}

/// `[tariff]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTariff {
    /// Default: valley 0.30 23:00-07:00, peak 1.10 10:00-15:00 and 18:00-21:00.
    pub periods: Vec<RawTariffPeriod>,
    /// Price outside every period (flat), CNY/kWh. Default 0.70.
    pub default_price_cny_per_kwh: f64,
    /// Paid for exported energy, CNY/kWh. Default 0.39.
    pub export_price_cny_per_kwh: f64,
    /// Per kW of the month's peak 15-minute import, CNY. Default 40.
    pub demand_charge_cny_per_kw: f64,
}

fn period(name: &str, start: &str, end: &str, price: f64) -> RawTariffPeriod {
    RawTariffPeriod {
        name: name.to_string(),
        start: start.to_string(),
        end: end.to_string(),
        price_cny_per_kwh: price,
    }
}

impl Default for RawTariff {
    fn default() -> Self {
        RawTariff {
            periods: vec![
                period("valley", "23:00", "07:00", 0.30),
                period("peak", "10:00", "15:00", 1.10),
                period("peak", "18:00", "21:00", 1.10),
            ],
            default_price_cny_per_kwh: 0.70,
            export_price_cny_per_kwh: 0.39,
            demand_charge_cny_per_kw: 40.0,
        }
    }
}

/// The `[policy]` section as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPolicy {
    pub grid: RawGridPolicy,
    /// Default "dealer".
    pub serve_first: ServeFirst,
    pub vehicles: RawVehiclePolicy,
    pub battery: RawBatteryPolicy,
    pub tariff: RawTariff,
    /// Grid emission factor, kgCO2/kWh. Default 0.5703.
    pub co2_kg_per_kwh: f64,
    /// Control cycle, s. Default 1.0.
    pub cycle_s: f64,
    /// IANA time zone of the `HH:MM` times. Default "Asia/Shanghai".
    pub timezone: String,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            grid: RawGridPolicy::default(),
            serve_first: ServeFirst::Dealer,
            vehicles: RawVehiclePolicy::default(),
            battery: RawBatteryPolicy::default(),
            tariff: RawTariff::default(),
            co2_kg_per_kwh: 0.5703,
            cycle_s: 1.0,
            timezone: "Asia/Shanghai".to_string(),
        }
    }
}

impl Default for Policy {
    /// The reference station's policy: `RawPolicy::default()` checked (a unit test checks that
    /// the defaults raise no issue).
    fn default() -> Self {
        RawPolicy::default().checked("policy", &mut Issues::new())
    }
}

fn check_hhmm(issues: &mut Issues, key: &str, s: &str) -> Option<u16> {
    let parsed = parse_hhmm(s);
    if parsed.is_none() {
        issues.push(key, format!("must be a time \"HH:MM\" (got \"{s}\")"));
    }
    parsed
}

/// Dotted keys under one prefix.
struct Keys<'a>(&'a str);

impl Keys<'_> {
    fn k(&self, rest: &str) -> String {
        format!("{}.{rest}", self.0)
    }
}

impl RawPolicy {
    /// Check every field, pushing one issue per problem under `prefix` (e.g. `"policy"`), and
    /// return the checked [`Policy`] when there is none.
    pub fn validate(&self, prefix: &str, issues: &mut Issues) -> Option<Policy> {
        let before = issues.len();
        let policy = self.checked(prefix, issues);
        (issues.len() == before).then_some(policy)
    }

    /// Check every section and build the policy from what was written; a value that fails its
    /// check is still carried over (or, where it cannot be, replaced by a neutral one), so call
    /// [`RawPolicy::validate`] unless the issues are looked at.
    pub fn checked(&self, prefix: &str, issues: &mut Issues) -> Policy {
        let keys = Keys(prefix);
        issues.non_negative(&keys.k("co2_kg_per_kwh"), self.co2_kg_per_kwh);
        issues.within(&keys.k("cycle_s"), self.cycle_s, 0.1, 60.0);
        Policy {
            grid: self.grid.checked(&keys, issues),
            serve_first: self.serve_first,
            vehicles: self.vehicles.checked(&keys, issues),
            battery: self.battery.checked(&keys, issues),
            tariff: self.tariff.checked(&keys, issues),
            co2_kg_per_kwh: self.co2_kg_per_kwh,
            cycle_s: self.cycle_s,
            timezone: self.checked_timezone(&keys, issues),
        }
    }

    fn checked_timezone(&self, keys: &Keys<'_>, issues: &mut Issues) -> Tz {
        self.timezone.parse::<Tz>().unwrap_or_else(|_| {
            issues.push(
                keys.k("timezone"),
                format!("must be an IANA time zone name (got \"{}\")", self.timezone),
            );
            Tz::UTC
        })
    }
}

impl RawGridPolicy {
    fn checked(&self, keys: &Keys<'_>, issues: &mut Issues) -> GridPolicy {
        issues.positive(&keys.k("grid.import_limit_kw"), self.import_limit_kw);
        issues.non_negative(&keys.k("grid.export_limit_kw"), self.export_limit_kw);
        if let Some(f) = self.phase_fuse_a {
            issues.positive(&keys.k("grid.phase_fuse_a"), f);
        }
        let limit = self.import_limit_kw.max(0.0);
        issues.within(
            &keys.k("grid.demand_target_kw"),
            self.demand_target_kw,
            0.0,
            limit,
        );
        issues.within(
            &keys.k("grid.import_margin_kw"),
            self.import_margin_kw,
            0.0,
            0.5 * limit,
        );
        GridPolicy {
            import_limit: Watts::from_kw(self.import_limit_kw),
            export_limit: Watts::from_kw(self.export_limit_kw),
            phase_fuse: self.phase_fuse_a.map(Amps),
            demand_target: Watts::from_kw(self.demand_target_kw),
            import_margin: Watts::from_kw(self.import_margin_kw),
        }
    }
}

impl RawChargerOverride {
    fn checked(
        &self,
        id: &str,
        v: &RawVehiclePolicy,
        keys: &Keys<'_>,
        issues: &mut Issues,
    ) -> ChargerPolicy {
        let base = keys.k(&format!("vehicles.chargers.{id}"));
        if id.trim().is_empty() {
            issues.push(keys.k("vehicles.chargers"), "charger ids must not be empty");
        }
        if let Some(min) = self.min_a {
            issues.within(&format!("{base}.min_a"), min, 6.0, 80.0);
        }
        if let Some(max) = self.max_a {
            issues.within(&format!("{base}.max_a"), max, 6.0, 80.0);
        }
        if let (Some(min), Some(max)) = (self.min_a, self.max_a) {
            if min > max {
                issues.push(
                    format!("{base}.min_a"),
                    format!("must be <= max_a {max} (got {min})"),
                );
            }
        }
        ChargerPolicy {
            mode: self.mode.unwrap_or(v.default_mode),
            min: self.min_a.map(Amps),
            max: self.max_a.map(Amps),
            priority: self.priority,
        }
    }
}

impl RawVehiclePolicy {
    fn checked(&self, keys: &Keys<'_>, issues: &mut Issues) -> VehiclePolicy {
        issues.non_negative(&keys.k("vehicles.min_on_s"), self.min_on_s);
        issues.non_negative(&keys.k("vehicles.min_off_s"), self.min_off_s);
        issues.non_negative(&keys.k("vehicles.hysteresis_w"), self.hysteresis_w);
        issues.positive(&keys.k("vehicles.ramp_up_a_per_s"), self.ramp_up_a_per_s);
        let chargers = self
            .chargers
            .iter()
            .map(|(id, o)| (id.clone(), o.checked(id, self, keys, issues)))
            .collect();
        VehiclePolicy {
            default_mode: self.default_mode,
            chargers,
            sharing: self.sharing,
            min_on_s: self.min_on_s,
            min_off_s: self.min_off_s,
            hysteresis: Watts(self.hysteresis_w),
            ramp_up_a_per_s: self.ramp_up_a_per_s,
        }
    }
}

impl RawEveningReserve {
    fn checked(
        &self,
        b: &RawBatteryPolicy,
        keys: &Keys<'_>,
        issues: &mut Issues,
    ) -> Option<EveningReserve> {
        issues.within(
            &keys.k("battery.evening_reserve.soc_pct"),
            self.soc_pct,
            b.soc_min_pct,
            b.soc_max_pct,
        );
        let from = check_hhmm(issues, &keys.k("battery.evening_reserve.from"), &self.from);
        let before = check_hhmm(
            issues,
            &keys.k("battery.evening_reserve.before"),
            &self.before,
        );
        Some(EveningReserve {
            soc: Percent(self.soc_pct),
            from_min: from?,
            before_min: before?,
        })
    }
}

/// Push `key: must be within (0, 1] (got v)` unless `0 < v <= 1`.
fn fraction(issues: &mut Issues, key: String, v: f64) {
    if !(v > 0.0 && v <= 1.0) {
        issues.push(key, format!("must be within (0, 1] (got {v})"));
    }
}

impl RawBatteryPolicy {
    fn checked(&self, keys: &Keys<'_>, issues: &mut Issues) -> BatteryPolicy {
        issues.within(&keys.k("battery.soc_min_pct"), self.soc_min_pct, 0.0, 100.0);
        issues.within(&keys.k("battery.soc_max_pct"), self.soc_max_pct, 0.0, 100.0);
        if self.soc_min_pct >= self.soc_max_pct {
            issues.push(
                keys.k("battery.soc_max_pct"),
                format!(
                    "must be > soc_min_pct {} (got {})",
                    self.soc_min_pct, self.soc_max_pct
                ),
            );
        }
        issues.within(&keys.k("battery.c_rate_cap"), self.c_rate_cap, 0.01, 10.0);
        let evening_reserve = self
            .evening_reserve
            .as_ref()
            .and_then(|r| r.checked(self, keys, issues));
        fraction(
            issues,
            keys.k("battery.round_trip_efficiency"),
            self.round_trip_efficiency,
        );
        issues.non_negative(&keys.k("battery.pack_value_cny"), self.pack_value_cny);
        issues.positive(&keys.k("battery.cycle_life_efc"), self.cycle_life_efc);
        fraction(issues, keys.k("battery.allowed_loss"), self.allowed_loss);
        BatteryPolicy {
            soc_min: Percent(self.soc_min_pct),
            soc_max: Percent(self.soc_max_pct),
            c_rate_cap: self.c_rate_cap,
            evening_reserve,
            grid_charging_in_valley: self.grid_charging_in_valley,
            round_trip_efficiency: self.round_trip_efficiency,
            pack_value_cny: self.pack_value_cny,
            cycle_life_efc: self.cycle_life_efc,
            allowed_loss: self.allowed_loss,
        }
    }
}

impl RawTariff {
    fn checked(&self, keys: &Keys<'_>, issues: &mut Issues) -> Tariff {
        issues.non_negative(
            &keys.k("tariff.default_price_cny_per_kwh"),
            self.default_price_cny_per_kwh,
        );
        issues.non_negative(
            &keys.k("tariff.export_price_cny_per_kwh"),
            self.export_price_cny_per_kwh,
        );
        issues.non_negative(
            &keys.k("tariff.demand_charge_cny_per_kw"),
            self.demand_charge_cny_per_kw,
        );
        let mut minute_price = vec![self.default_price_cny_per_kwh; MINUTES_PER_DAY];
        let mut owner: Vec<Option<usize>> = vec![None; MINUTES_PER_DAY];
        let mut periods = Vec::with_capacity(self.periods.len());
        for i in 0..self.periods.len() {
            if let Some(period) = self.checked_period(i, keys, issues) {
                self.paint(i, &period, &mut minute_price, &mut owner, keys, issues);
                periods.push(period);
            }
        }
        let min_price = minute_price.iter().copied().fold(f64::INFINITY, f64::min);
        let max_price = minute_price
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        Tariff {
            periods,
            default_price_cny_per_kwh: self.default_price_cny_per_kwh,
            export_price_cny_per_kwh: self.export_price_cny_per_kwh,
            demand_charge_cny_per_kw: self.demand_charge_cny_per_kw,
            minute_price,
            min_price,
            max_price,
        }
    }

    /// Check period `i` on its own; `None` when its times cannot be used.
    fn checked_period(
        &self,
        i: usize,
        keys: &Keys<'_>,
        issues: &mut Issues,
    ) -> Option<TariffPeriod> {
        let p = &self.periods[i];
        let base = keys.k(&format!("tariff.periods[{i}]"));
        if p.name.trim().is_empty() {
            issues.push(format!("{base}.name"), "must not be empty");
        }
        issues.non_negative(&format!("{base}.price_cny_per_kwh"), p.price_cny_per_kwh);
        let start = check_hhmm(issues, &format!("{base}.start"), &p.start);
        let end = check_hhmm(issues, &format!("{base}.end"), &p.end);
        let (s, e) = (start?, end?);
        if s % 1440 == e % 1440 {
            issues.push(
                format!("{base}.end"),
                format!("must differ from start {} (got {})", p.start, p.end),
            );
            return None;
        }
        Some(TariffPeriod {
            name: p.name.clone(),
            start_min: s,
            end_min: e,
            price_cny_per_kwh: p.price_cny_per_kwh,
        })
    }

    /// Price the minutes of period `i`; a minute an earlier period already owns is a clash.
    fn paint(
        &self,
        i: usize,
        period: &TariffPeriod,
        minute_price: &mut [f64],
        owner: &mut [Option<usize>],
        keys: &Keys<'_>,
        issues: &mut Issues,
    ) {
        let mut clash: Option<usize> = None;
        for m in 0..MINUTES_PER_DAY as u16 {
            if !in_window(m, period.start_min, period.end_min) {
                continue;
            }
            let slot = usize::from(m);
            match owner[slot] {
                Some(j) => {
                    clash.get_or_insert(j);
                }
                None => {
                    owner[slot] = Some(i);
                    minute_price[slot] = period.price_cny_per_kwh;
                }
            }
        }
        if let Some(j) = clash {
            issues.push(
                keys.k(&format!("tariff.periods[{i}].start")),
                format!("overlaps tariff.periods[{j}] ({})", self.periods[j].name),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &RawPolicy) -> (Option<Policy>, Issues) {
        let mut issues = Issues::new();
        let p = raw.validate("policy", &mut issues);
        (p, issues)
    }

    #[test]
    fn default_policy_is_the_reference_station_and_valid() {
        let (p, issues) = check(&RawPolicy::default());
        assert!(issues.is_empty(), "{issues}");
        let p = p.unwrap();
        assert_eq!(p.grid.import_limit, Watts(150_000.0));
        assert_eq!(p.grid.export_limit, Watts(100_000.0));
        assert_eq!(p.tariff.price_at(3 * 60), 0.30);
        assert_eq!(p.tariff.price_at(23 * 60), 0.30);
        assert_eq!(p.tariff.price_at(7 * 60), 0.70);
        assert_eq!(p.tariff.price_at(10 * 60), 1.10);
        assert_eq!(p.tariff.price_at(15 * 60), 0.70);
        assert_eq!(p.tariff.price_at(20 * 60 + 59), 1.10);
        assert_eq!(p.tariff.min_price(), 0.30);
        assert_eq!(p.tariff.max_price(), 1.10);
        assert_eq!(p.timezone, chrono_tz::Asia::Shanghai);
        assert_eq!(Policy::default(), p);
    }

    #[test]
    fn an_import_margin_above_half_the_limit_is_refused_naming_the_key() {
        let mut raw = RawPolicy::default();
        raw.grid.import_limit_kw = 40.0; // the 25 kW default margin is too much here
        let (p, issues) = check(&raw);
        assert!(p.is_none());
        assert!(issues
            .to_string()
            .contains("policy.grid.import_margin_kw: must be within [0, 20] (got 25)"));
        raw.grid.import_margin_kw = 4.0;
        let (p, _) = check(&raw);
        assert_eq!(p.unwrap().grid.import_budget(), Watts::from_kw(36.0));
    }

    #[test]
    fn every_problem_is_reported_with_its_dotted_key() {
        let mut raw = RawPolicy::default();
        raw.grid.import_limit_kw = -5.0;
        raw.battery.soc_min_pct = 120.0;
        raw.tariff.periods[0].start = "25:00".into();
        raw.timezone = "Mars/Olympus".into();
        let (p, issues) = check(&raw);
        assert!(p.is_none());
        let text = issues.to_string();
        assert!(text.contains("policy.grid.import_limit_kw: must be > 0 (got -5)"));
        assert!(text.contains("policy.battery.soc_min_pct: must be within [0, 100] (got 120)"));
        assert!(text.contains("policy.tariff.periods[0].start: must be a time"));
        assert!(text.contains("policy.timezone: must be an IANA time zone name"));
    }

    #[test]
    fn overlapping_tariff_periods_are_refused() {
        let mut raw = RawPolicy::default();
        raw.tariff
            .periods
            .push(period("extra", "06:00", "08:00", 0.5));
        let (p, issues) = check(&raw);
        assert!(p.is_none());
        assert!(issues
            .to_string()
            .contains("policy.tariff.periods[3].start: overlaps tariff.periods[0] (valley)"));
    }

    #[test]
    fn charger_override_min_above_max_is_refused() {
        let mut raw = RawPolicy::default();
        raw.vehicles.chargers.insert(
            "charger-2".into(),
            RawChargerOverride {
                min_a: Some(16.0),
                max_a: Some(10.0),
                ..Default::default()
            },
        );
        let (_, issues) = check(&raw);
        assert!(issues
            .to_string()
            .contains("policy.vehicles.chargers.charger-2.min_a: must be <= max_a 10 (got 16)"));
    }

    #[test]
    fn policy_parses_from_partial_toml_and_keeps_defaults() {
        let text = r#"
            serve_first = "vehicles"
            [grid]
            import_limit_kw = 120
            export_limit_kw = 0
            phase_fuse_a = 250
            [vehicles]
            default_mode = "min_solar"
            sharing = "priority"
            [vehicles.chargers.charger-3]
            mode = "solar"
            max_a = 16
            priority = 5
            [battery]
            grid_charging_in_valley = true
            [battery.evening_reserve]
            soc_pct = 40
            from = "12:00"
            before = "18:00"
            [[tariff.periods]]
            name = "valley"
            start = "22:00"
            end = "06:00"
            price_cny_per_kwh = 0.25
        "#;
        let raw: RawPolicy = toml::from_str(text).unwrap();
        let (p, issues) = check(&raw);
        assert!(issues.is_empty(), "{issues}");
        let p = p.unwrap();
        assert_eq!(p.serve_first, ServeFirst::Vehicles);
        assert_eq!(p.grid.import_limit, Watts(120_000.0));
        assert_eq!(p.grid.export_limit, Watts::ZERO);
        assert_eq!(p.grid.phase_fuse, Some(Amps(250.0)));
        assert_eq!(p.vehicles.sharing, Sharing::Priority);
        let c3 = p.vehicles.for_charger("charger-3");
        assert_eq!(c3.mode, ChargeMode::Solar);
        assert_eq!(c3.max, Some(Amps(16.0)));
        assert_eq!(c3.priority, 5);
        assert_eq!(
            p.vehicles.for_charger("charger-1").mode,
            ChargeMode::MinSolar
        );
        let r = p.battery.evening_reserve.unwrap();
        assert_eq!((r.from_min, r.before_min), (720, 1080));
        assert_eq!(p.tariff.price_at(23 * 60), 0.25);
        assert_eq!(p.tariff.price_at(12 * 60), 0.70);
        assert_eq!(p.cycle_s, 1.0);
    }

    #[test]
    fn unknown_toml_keys_are_refused() {
        let err = toml::from_str::<RawPolicy>("[grid]\nimport_limit = 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}

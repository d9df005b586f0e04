//! The dispatch policy: raw serde structs as written in TOML ([`RawPolicy`]) and the checked
//! form [`Policy`] that [`super::decide`] uses.
//!
//! Every raw struct takes `#[serde(default)]`, so a TOML file only needs the keys it changes;
//! unknown keys are refused. `RawPolicy::default()` is the reference station of
//! `docs/reference-station.md`. Times of day (`"HH:MM"`) are local times in `timezone`.

use crate::units::{Amps, Percent, Watts};
use crate::validate::Issues;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Minutes in a day; the tariff is precomputed per minute.
pub const MINUTES_PER_DAY: usize = 1440;

/// Who gets scarce power first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServeFirst {
    /// The dealership: PV goes to the building, then the battery, then solar-mode vehicles;
    /// when the import limit binds, vehicles are cut before the battery is used for them.
    Dealer,
    /// The vehicles: PV goes to solar-mode vehicles first; the battery discharges to keep
    /// vehicles charging under the import limit before they are cut.
    Vehicles,
}

/// How a charger's current is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeMode {
    /// As much as limits allow.
    Fast,
    /// PV surplus only; paused below the minimum current (with hysteresis, min on/off times).
    Solar,
    /// The minimum current always, plus PV surplus.
    MinSolar,
}

/// How chargers share a scarce budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Same current for everyone (after everyone who fits gets the minimum).
    Equal,
    /// Earliest plugged-in vehicle is served fully first.
    FirstCome,
    /// Highest `priority` served fully first (ties: first come).
    Priority,
}

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

/// Checked `[grid]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPolicy {
    pub import_limit: Watts,
    pub export_limit: Watts,
    pub phase_fuse: Option<Amps>,
    pub demand_target: Watts,
    /// Headroom kept below `import_limit` by the plan.
    pub import_margin: Watts,
}

impl GridPolicy {
    /// The import the plan allows itself: the limit less the margin, never below 0.
    pub fn import_budget(&self) -> Watts {
        (self.import_limit - self.import_margin).max(Watts::ZERO)
    }
}

/// Checked per-charger override.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargerPolicy {
    pub mode: ChargeMode,
    pub min: Option<Amps>,
    pub max: Option<Amps>,
    pub priority: i32,
}

/// Checked `[vehicles]`.
#[derive(Debug, Clone, PartialEq)]
pub struct VehiclePolicy {
    pub default_mode: ChargeMode,
    /// Overrides by charger id, sorted by id.
    pub chargers: Vec<(String, ChargerPolicy)>,
    pub sharing: Sharing,
    pub min_on_s: f64,
    pub min_off_s: f64,
    pub hysteresis: Watts,
    pub ramp_up_a_per_s: f64,
}

impl VehiclePolicy {
    /// The settings for the charger `id` (its override, or the defaults).
    pub fn for_charger(&self, id: &str) -> ChargerPolicy {
        for (key, p) in &self.chargers {
            if key == id {
                return *p;
            }
        }
        ChargerPolicy {
            mode: self.default_mode,
            min: None,
            max: None,
            priority: 0,
        }
    }
}

/// Checked evening reserve; times are minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EveningReserve {
    pub soc: Percent,
    pub from_min: u16,
    pub before_min: u16,
}

impl EveningReserve {
    /// Whether local minute-of-day `m` lies in `[from, before)` (wrapping midnight).
    pub fn active_at(&self, m: u16) -> bool {
        in_window(m, self.from_min, self.before_min)
    }
}

/// Checked `[battery]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryPolicy {
    pub soc_min: Percent,
    pub soc_max: Percent,
    pub c_rate_cap: f64,
    pub evening_reserve: Option<EveningReserve>,
    pub grid_charging_in_valley: bool,
    pub round_trip_efficiency: f64,
    pub pack_value_cny: f64,
    pub cycle_life_efc: f64,
    pub allowed_loss: f64,
}

impl BatteryPolicy {
    /// Wear cost per kWh discharged for a pack of `usable_kwh`:
    /// pack value x (allowed_loss / cycle_life) / (allowed_loss x usable kWh).
    pub fn wear_cost_cny_per_kwh(&self, usable_kwh: f64) -> f64 {
        if usable_kwh <= 0.0 {
            return f64::INFINITY;
        }
        let dq_per_efc = self.allowed_loss / self.cycle_life_efc;
        self.pack_value_cny * dq_per_efc / (self.allowed_loss * usable_kwh)
    }
}

/// One checked tariff period.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffPeriod {
    pub name: String,
    pub start_min: u16,
    pub end_min: u16,
    pub price_cny_per_kwh: f64,
}

/// Checked `[tariff]` with a precomputed price per local minute of the day.
#[derive(Debug, Clone, PartialEq)]
pub struct Tariff {
    pub periods: Vec<TariffPeriod>,
    pub default_price_cny_per_kwh: f64,
    pub export_price_cny_per_kwh: f64,
    pub demand_charge_cny_per_kw: f64,
    /// Price for each local minute of the day (length 1440).
    minute_price: Vec<f64>,
    min_price: f64,
    max_price: f64,
}

impl Tariff {
    /// Import price at local minute-of-day `m` (0..1440; larger values wrap).
    #[inline]
    pub fn price_at(&self, m: u16) -> f64 {
        let i = usize::from(m) % MINUTES_PER_DAY;
        self.minute_price
            .get(i)
            .copied()
            .unwrap_or(self.default_price_cny_per_kwh)
    }

    /// Cheapest import price of the day.
    pub fn min_price(&self) -> f64 {
        self.min_price
    }

    /// Dearest import price of the day.
    pub fn max_price(&self) -> f64 {
        self.max_price
    }
}

/// The checked policy [`super::decide`] runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub grid: GridPolicy,
    pub serve_first: ServeFirst,
    pub vehicles: VehiclePolicy,
    pub battery: BatteryPolicy,
    pub tariff: Tariff,
    pub co2_kg_per_kwh: f64,
    pub cycle_s: f64,
    pub timezone: Tz,
}

impl Default for Policy {
    /// The reference station's policy (`RawPolicy::default()` checked).
    fn default() -> Self {
        let mut issues = Issues::new();
        // The defaults are valid (a unit test checks it); the fallback only keeps this
        // function total without a panic.
        RawPolicy::default()
            .validate("policy", &mut issues)
            .unwrap_or_else(Policy::fallback)
    }
}

impl Policy {
    fn fallback() -> Policy {
        Policy {
            grid: GridPolicy {
                import_limit: Watts::from_kw(150.0),
                export_limit: Watts::ZERO,
                phase_fuse: None,
                demand_target: Watts::from_kw(150.0),
                import_margin: Watts::from_kw(25.0),
            },
            serve_first: ServeFirst::Dealer,
            vehicles: VehiclePolicy {
                default_mode: ChargeMode::Fast,
                chargers: Vec::new(),
                sharing: Sharing::Equal,
                min_on_s: 300.0,
                min_off_s: 300.0,
                hysteresis: Watts(500.0),
                ramp_up_a_per_s: 2.0,
            },
            battery: BatteryPolicy {
                soc_min: Percent(10.0),
                soc_max: Percent(90.0),
                c_rate_cap: 0.5,
                evening_reserve: None,
                grid_charging_in_valley: false,
                round_trip_efficiency: 0.9,
                pack_value_cny: 150_000.0,
                cycle_life_efc: 3000.0,
                allowed_loss: 0.2,
            },
            tariff: Tariff {
                periods: Vec::new(),
                default_price_cny_per_kwh: 0.7,
                export_price_cny_per_kwh: 0.39,
                demand_charge_cny_per_kw: 40.0,
                minute_price: vec![0.7; MINUTES_PER_DAY],
                min_price: 0.7,
                max_price: 0.7,
            },
            co2_kg_per_kwh: 0.5703,
            cycle_s: 1.0,
            timezone: chrono_tz::Asia::Shanghai,
        }
    }
}

/// Parse `"HH:MM"` (00:00..=23:59) into minutes after midnight; `"24:00"` is accepted as 1440
/// for period ends.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m >= 60 {
        return None;
    }
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, _) => Some(h * 60 + m),
        _ => None,
    }
}

/// Whether `m` lies in `[start, end)` on a 24-hour clock, wrapping when `end <= start`.
#[inline]
pub fn in_window(m: u16, start: u16, end: u16) -> bool {
    let (s, e) = (start % 1440, end % 1440);
    if s < e {
        m >= s && m < e
    } else if s > e {
        m >= s || m < e
    } else {
        // start == end: the whole day.
        true
    }
}

fn check_hhmm(issues: &mut Issues, key: &str, s: &str) -> Option<u16> {
    let parsed = parse_hhmm(s);
    if parsed.is_none() {
        issues.push(key, format!("must be a time \"HH:MM\" (got \"{s}\")"));
    }
    parsed
}

impl RawPolicy {
    /// Check every field, pushing one issue per problem under `prefix` (e.g. `"policy"`), and
    /// build the checked [`Policy`] when there is none.
    pub fn validate(&self, prefix: &str, issues: &mut Issues) -> Option<Policy> {
        let before = issues.len();
        let k = |rest: &str| format!("{prefix}.{rest}");

        // grid
        let g = &self.grid;
        issues.positive(&k("grid.import_limit_kw"), g.import_limit_kw);
        issues.non_negative(&k("grid.export_limit_kw"), g.export_limit_kw);
        if let Some(f) = g.phase_fuse_a {
            issues.positive(&k("grid.phase_fuse_a"), f);
        }
        issues.within(
            &k("grid.demand_target_kw"),
            g.demand_target_kw,
            0.0,
            g.import_limit_kw.max(0.0),
        );
        issues.within(
            &k("grid.import_margin_kw"),
            g.import_margin_kw,
            0.0,
            0.5 * g.import_limit_kw.max(0.0),
        );

        // vehicles
        let v = &self.vehicles;
        issues.non_negative(&k("vehicles.min_on_s"), v.min_on_s);
        issues.non_negative(&k("vehicles.min_off_s"), v.min_off_s);
        issues.non_negative(&k("vehicles.hysteresis_w"), v.hysteresis_w);
        issues.positive(&k("vehicles.ramp_up_a_per_s"), v.ramp_up_a_per_s);
        let mut overrides = Vec::with_capacity(v.chargers.len());
        for (id, o) in &v.chargers {
            let base = format!("vehicles.chargers.{id}");
            if id.trim().is_empty() {
                issues.push(k("vehicles.chargers"), "charger ids must not be empty");
            }
            if let Some(min) = o.min_a {
                issues.within(&k(&format!("{base}.min_a")), min, 6.0, 80.0);
            }
            if let Some(max) = o.max_a {
                issues.within(&k(&format!("{base}.max_a")), max, 6.0, 80.0);
            }
            if let (Some(min), Some(max)) = (o.min_a, o.max_a) {
                if min > max {
                    issues.push(
                        k(&format!("{base}.min_a")),
                        format!("must be <= max_a {max} (got {min})"),
                    );
                }
            }
            overrides.push((
                id.clone(),
                ChargerPolicy {
                    mode: o.mode.unwrap_or(v.default_mode),
                    min: o.min_a.map(Amps),
                    max: o.max_a.map(Amps),
                    priority: o.priority,
                },
            ));
        }

        // battery
        let b = &self.battery;
        issues.within(&k("battery.soc_min_pct"), b.soc_min_pct, 0.0, 100.0);
        issues.within(&k("battery.soc_max_pct"), b.soc_max_pct, 0.0, 100.0);
        if b.soc_min_pct >= b.soc_max_pct {
            issues.push(
                k("battery.soc_max_pct"),
                format!(
                    "must be > soc_min_pct {} (got {})",
                    b.soc_min_pct, b.soc_max_pct
                ),
            );
        }
        issues.within(&k("battery.c_rate_cap"), b.c_rate_cap, 0.01, 10.0);
        let reserve = match &b.evening_reserve {
            None => None,
            Some(r) => {
                issues.within(
                    &k("battery.evening_reserve.soc_pct"),
                    r.soc_pct,
                    b.soc_min_pct,
                    b.soc_max_pct,
                );
                let from = check_hhmm(issues, &k("battery.evening_reserve.from"), &r.from);
                let before = check_hhmm(issues, &k("battery.evening_reserve.before"), &r.before);
                match (from, before) {
                    (Some(f), Some(e)) => Some(EveningReserve {
                        soc: Percent(r.soc_pct),
                        from_min: f,
                        before_min: e,
                    }),
                    _ => None,
                }
            }
        };
        if !(b.round_trip_efficiency > 0.0 && b.round_trip_efficiency <= 1.0) {
            issues.push(
                k("battery.round_trip_efficiency"),
                format!("must be within (0, 1] (got {})", b.round_trip_efficiency),
            );
        }
        issues.non_negative(&k("battery.pack_value_cny"), b.pack_value_cny);
        issues.positive(&k("battery.cycle_life_efc"), b.cycle_life_efc);
        if !(b.allowed_loss > 0.0 && b.allowed_loss <= 1.0) {
            issues.push(
                k("battery.allowed_loss"),
                format!("must be within (0, 1] (got {})", b.allowed_loss),
            );
        }

        // tariff
        let t = &self.tariff;
        issues.non_negative(
            &k("tariff.default_price_cny_per_kwh"),
            t.default_price_cny_per_kwh,
        );
        issues.non_negative(
            &k("tariff.export_price_cny_per_kwh"),
            t.export_price_cny_per_kwh,
        );
        issues.non_negative(
            &k("tariff.demand_charge_cny_per_kw"),
            t.demand_charge_cny_per_kw,
        );
        let mut minute_price = vec![t.default_price_cny_per_kwh; MINUTES_PER_DAY];
        let mut owner: Vec<Option<usize>> = vec![None; MINUTES_PER_DAY];
        let mut periods = Vec::with_capacity(t.periods.len());
        for (i, p) in t.periods.iter().enumerate() {
            let base = format!("tariff.periods[{i}]");
            if p.name.trim().is_empty() {
                issues.push(k(&format!("{base}.name")), "must not be empty");
            }
            issues.non_negative(
                &k(&format!("{base}.price_cny_per_kwh")),
                p.price_cny_per_kwh,
            );
            let start = check_hhmm(issues, &k(&format!("{base}.start")), &p.start);
            let end = check_hhmm(issues, &k(&format!("{base}.end")), &p.end);
            let (Some(s), Some(e)) = (start, end) else {
                continue;
            };
            if s % 1440 == e % 1440 {
                issues.push(
                    k(&format!("{base}.end")),
                    format!("must differ from start {} (got {})", p.start, p.end),
                );
                continue;
            }
            let mut clash: Option<usize> = None;
            for m in 0..MINUTES_PER_DAY as u16 {
                if in_window(m, s, e) {
                    let slot = usize::from(m);
                    if let Some(j) = owner[slot] {
                        clash.get_or_insert(j);
                    } else {
                        owner[slot] = Some(i);
                        minute_price[slot] = p.price_cny_per_kwh;
                    }
                }
            }
            if let Some(j) = clash {
                issues.push(
                    k(&format!("{base}.start")),
                    format!("overlaps tariff.periods[{j}] ({})", t.periods[j].name),
                );
            }
            periods.push(TariffPeriod {
                name: p.name.clone(),
                start_min: s,
                end_min: e,
                price_cny_per_kwh: p.price_cny_per_kwh,
            });
        }
        let min_price = minute_price.iter().copied().fold(f64::INFINITY, f64::min);
        let max_price = minute_price
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);

        issues.non_negative(&k("co2_kg_per_kwh"), self.co2_kg_per_kwh);
        issues.within(&k("cycle_s"), self.cycle_s, 0.1, 60.0);
        let tz: Option<Tz> = match self.timezone.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                issues.push(
                    k("timezone"),
                    format!("must be an IANA time zone name (got \"{}\")", self.timezone),
                );
                None
            }
        };

        if issues.len() != before {
            return None;
        }
        let timezone = tz?;
        Some(Policy {
            grid: GridPolicy {
                import_limit: Watts::from_kw(g.import_limit_kw),
                export_limit: Watts::from_kw(g.export_limit_kw),
                phase_fuse: g.phase_fuse_a.map(Amps),
                demand_target: Watts::from_kw(g.demand_target_kw),
                import_margin: Watts::from_kw(g.import_margin_kw),
            },
            serve_first: self.serve_first,
            vehicles: VehiclePolicy {
                default_mode: v.default_mode,
                chargers: overrides,
                sharing: v.sharing,
                min_on_s: v.min_on_s,
                min_off_s: v.min_off_s,
                hysteresis: Watts(v.hysteresis_w),
                ramp_up_a_per_s: v.ramp_up_a_per_s,
            },
            battery: BatteryPolicy {
                soc_min: Percent(b.soc_min_pct),
                soc_max: Percent(b.soc_max_pct),
                c_rate_cap: b.c_rate_cap,
                evening_reserve: reserve,
                grid_charging_in_valley: b.grid_charging_in_valley,
                round_trip_efficiency: b.round_trip_efficiency,
                pack_value_cny: b.pack_value_cny,
                cycle_life_efc: b.cycle_life_efc,
                allowed_loss: b.allowed_loss,
            },
            tariff: Tariff {
                periods,
                default_price_cny_per_kwh: t.default_price_cny_per_kwh,
                export_price_cny_per_kwh: t.export_price_cny_per_kwh,
                demand_charge_cny_per_kw: t.demand_charge_cny_per_kw,
                minute_price,
                min_price,
                max_price,
            },
            co2_kg_per_kwh: self.co2_kg_per_kwh,
            cycle_s: self.cycle_s,
            timezone,
        })
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

    #[test]
    fn hhmm_parsing_accepts_day_times_only() {
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("7:30"), Some(450));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("24:01"), None);
        assert_eq!(parse_hhmm("12:60"), None);
        assert_eq!(parse_hhmm("noon"), None);
    }

    #[test]
    fn wear_cost_of_the_reference_pack_is_about_fifteen_fen_per_kwh() {
        let p = Policy::default();
        let c = p.battery.wear_cost_cny_per_kwh(360.0);
        assert!((c - 0.1389).abs() < 0.001, "{c}");
    }
}

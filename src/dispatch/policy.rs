//! The checked dispatch policy [`Policy`] that [`super::decide`] runs on, and the pure time
//! helpers it uses. The TOML schema it is validated from lives in `crate::config::policy`
//! (`RawPolicy`); `Policy::default()` is the reference station of `docs/reference-station.md`.
//! Times of day are minutes after local midnight in `timezone`.

use crate::units::{Amps, Percent, Watts};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

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
    /// pack value x (allowed_loss / cycle_life) / (allowed_loss x usable kWh), i.e. the value
    /// of the capacity a kWh discharged is assumed to cost (allowed_loss / cycle_life kWh).
    pub fn wear_cost_cny_per_kwh(&self, usable_kwh: f64) -> f64 {
        self.capacity_value_cny_per_kwh(usable_kwh) * self.allowed_loss / self.cycle_life_efc
    }

    /// The value of a kWh of capacity on a pack of `usable_kwh`, CNY: pack value / (allowed
    /// loss x usable kWh). The one valuation behind the policy's wear price and the measured
    /// one (`health::tracker`).
    pub fn capacity_value_cny_per_kwh(&self, usable_kwh: f64) -> f64 {
        if usable_kwh <= 0.0 {
            return f64::INFINITY;
        }
        self.pack_value_cny / (self.allowed_loss * usable_kwh)
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
    pub(crate) minute_price: Vec<f64>,
    pub(crate) min_price: f64,
    pub(crate) max_price: f64,
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
impl Policy {
    /// Minutes after local midnight of `now` in the site's time zone: the one conversion the
    /// tariff, the reserve window and the ledger's prices use.
    pub fn local_minute(&self, now: chrono::DateTime<chrono::Utc>) -> u16 {
        use chrono::Timelike;
        let local = now.with_timezone(&self.timezone);
        // hour < 24 and minute < 60, so this fits in u16.
        (local.hour() * 60 + local.minute()) as u16
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

#[cfg(test)]
mod tests {
    use super::*;

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

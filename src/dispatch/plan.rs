//! The output of [`super::decide`]: setpoints, the power balance they are expected to give,
//! and the reasons in plain English.

use super::snapshot::ChargerId;
use crate::units::{Amps, Percent, Watts};
use serde::Serialize;
use std::fmt;

/// Current setpoint for one charger: 0 A (paused) or within `[min, max]` of the charger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChargerSetpoint {
    pub id: ChargerId,
    pub amps: Amps,
    pub phases: u8,
}

/// The grid power the plan is expected to give and its parts:
/// `grid = base_load + uncontrolled_chargers + chargers - pv - battery`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct PowerBalance {
    /// Non-controllable load (the building), > 0 consumption.
    pub base_load: Watts,
    /// Chargers the controller cannot steer this cycle: offline ones counted at their rating,
    /// online ones in a non-charging state at their measured power; > 0 consumption.
    pub uncontrolled_chargers: Watts,
    /// Controlled chargers at their planned current and 230 V, > 0 consumption.
    pub chargers: Watts,
    /// PV output expected under the planned limit, > 0 generation.
    pub pv: Watts,
    /// Battery setpoint, > 0 discharge.
    pub battery: Watts,
    /// Expected grid power, > 0 import.
    pub grid: Watts,
}

impl PowerBalance {
    /// `base_load + uncontrolled_chargers + chargers - pv - battery`.
    pub fn implied_grid(&self) -> Watts {
        self.base_load + self.uncontrolled_chargers + self.chargers - self.pv - self.battery
    }
}

/// Why the battery does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatteryIdleCause {
    Offline,
    Alarm,
    SocUnknown,
    Temperature,
}

/// One decision explained. `code()` is stable for machines; `Display` is for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// The grid meter is stale or missing: chargers at (at most) their safe current.
    GridStale,
    /// The grid meter reads more import than the other meters and the last setpoints explain;
    /// the excess is planned as load.
    GridAboveExpected { excess: Watts },
    /// A charger got less than it asked for because of the grid import limit.
    ChargerImportLimited { id: ChargerId, amps: Amps },
    /// A charger got less than it asked for because of the phase fuse.
    ChargerPhaseFuseLimited { id: ChargerId, amps: Amps },
    /// A charger's increase was limited by the ramp rate.
    ChargerRampLimited { id: ChargerId, amps: Amps },
    /// A solar-mode charger is paused for lack of PV surplus.
    ChargerPausedNoSurplus { id: ChargerId },
    /// A solar-mode charger keeps running because its minimum on time has not passed.
    ChargerHeldOnMinOnTime { id: ChargerId },
    /// A solar-mode charger stays paused because its minimum off time has not passed.
    ChargerHeldOffMinOffTime { id: ChargerId },
    /// An offline charger is counted at its rating against the import limit.
    ChargerOfflineCounted { id: ChargerId, power: Watts },
    /// The charger's configured minimum is above its maximum: it cannot be offered current.
    ChargerRangeEmpty { id: ChargerId },
    /// Battery discharging because the price pays for it (the tariff's peak, or a flat price
    /// above the stored energy's value and wear).
    BatteryPeakTariff { power: Watts },
    /// Battery discharging to keep the 15-minute import under the demand target.
    BatteryPeakShaving { power: Watts, target: Watts },
    /// Battery discharging more than the plan's SoC target asks: the import would exceed what
    /// the plan expects at a price that pays for the battery's energy.
    BatteryAbovePlan { power: Watts, planned_import: Watts },
    /// Battery charging more (or discharging less) than the plan's SoC target asks: the grid
    /// would export a surplus the plan's step does not, and storing it pays more than selling.
    BatteryBelowPlan { power: Watts },
    /// Battery discharging less than the plan's SoC target asks: the site imports less than
    /// the plan's step expects, and the energy is kept for the steps that count on it.
    BatteryKeptForPlan { power: Watts, planned_import: Watts },
    /// Battery discharging to keep import under the contracted limit.
    BatteryImportLimit { power: Watts },
    /// Battery charging from PV surplus.
    BatteryChargingPv { power: Watts },
    /// Battery charging from the grid in the valley period.
    BatteryChargingValley { power: Watts },
    /// Battery held at 0 W.
    BatteryIdle { cause: BatteryIdleCause },
    /// Battery kept at the evening reserve.
    BatteryEveningReserve { soc: Percent },
    /// Grid meter stale: battery discharge not increased.
    BatteryHeldGridStale { power: Watts },
    /// PV limited to keep export under the export limit.
    PvCurtailed { limit: Percent },
    /// Even with every charger paused and the battery at its limit, import exceeds the limit.
    ImportLimitUnreachable { excess: Watts },
}

impl Reason {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::GridStale => "grid_stale",
            Reason::GridAboveExpected { .. } => "grid_above_expected",
            Reason::ChargerImportLimited { .. } => "charger_import_limited",
            Reason::ChargerPhaseFuseLimited { .. } => "charger_phase_fuse_limited",
            Reason::ChargerRampLimited { .. } => "charger_ramp_limited",
            Reason::ChargerPausedNoSurplus { .. } => "charger_paused_no_surplus",
            Reason::ChargerHeldOnMinOnTime { .. } => "charger_held_on_min_on_time",
            Reason::ChargerHeldOffMinOffTime { .. } => "charger_held_off_min_off_time",
            Reason::ChargerOfflineCounted { .. } => "charger_offline_counted",
            Reason::ChargerRangeEmpty { .. } => "charger_range_empty",
            Reason::BatteryPeakTariff { .. } => "battery_peak_tariff",
            Reason::BatteryPeakShaving { .. } => "battery_peak_shaving",
            Reason::BatteryAbovePlan { .. } => "battery_above_plan",
            Reason::BatteryBelowPlan { .. } => "battery_below_plan",
            Reason::BatteryKeptForPlan { .. } => "battery_kept_for_plan",
            Reason::BatteryImportLimit { .. } => "battery_import_limit",
            Reason::BatteryChargingPv { .. } => "battery_charging_pv",
            Reason::BatteryChargingValley { .. } => "battery_charging_valley",
            Reason::BatteryIdle { .. } => "battery_idle",
            Reason::BatteryEveningReserve { .. } => "battery_evening_reserve",
            Reason::BatteryHeldGridStale { .. } => "battery_held_grid_stale",
            Reason::PvCurtailed { .. } => "pv_curtailed",
            Reason::ImportLimitUnreachable { .. } => "import_limit_unreachable",
        }
    }
}

fn kw(w: Watts) -> f64 {
    (w.kw() * 10.0).round() / 10.0
}

fn amps(a: Amps) -> f64 {
    (a.0 * 10.0).round() / 10.0
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::GridStale => write!(f, "grid meter stale: chargers at safe current"),
            Reason::GridAboveExpected { excess } => write!(
                f,
                "grid meter reads {} kW more than the other meters and the setpoints explain: planned as load",
                kw(*excess)
            ),
            Reason::ChargerImportLimited { id, amps: a } => {
                write!(f, "{id} held at {} A: grid import limit", amps(*a))
            }
            Reason::ChargerPhaseFuseLimited { id, amps: a } => {
                write!(f, "{id} held at {} A: phase fuse limit", amps(*a))
            }
            Reason::ChargerRampLimited { id, amps: a } => {
                write!(f, "{id} ramping up, at {} A now", amps(*a))
            }
            Reason::ChargerPausedNoSurplus { id } => {
                write!(f, "{id} paused: not enough PV surplus")
            }
            Reason::ChargerHeldOnMinOnTime { id } => {
                write!(f, "{id} kept at minimum current: minimum on time")
            }
            Reason::ChargerHeldOffMinOffTime { id } => {
                write!(f, "{id} kept paused: minimum off time")
            }
            Reason::ChargerOfflineCounted { id, power } => {
                write!(f, "{id} offline: counted at {} kW", kw(*power))
            }
            Reason::ChargerRangeEmpty { id } => {
                write!(f, "{id} paused: its minimum current is above its maximum")
            }
            Reason::BatteryPeakTariff { power } => {
                write!(f, "battery discharging {} kW: tariff", kw(*power))
            }
            Reason::BatteryPeakShaving { power, target } => write!(
                f,
                "battery discharging {} kW: keeping import under {} kW for the demand charge",
                kw(*power),
                kw(*target)
            ),
            Reason::BatteryAbovePlan {
                power,
                planned_import,
            } => write!(
                f,
                "battery discharging {} kW: import above the plan's {} kW at a price that pays",
                kw(*power),
                kw(*planned_import)
            ),
            Reason::BatteryBelowPlan { power } => write!(
                f,
                "battery at {} kW (> 0 discharge): a surplus the plan does not export is stored",
                kw(*power)
            ),
            Reason::BatteryKeptForPlan {
                power,
                planned_import,
            } => write!(
                f,
                "battery discharging only {} kW: import below the plan's {} kW, the rest is kept",
                kw(*power),
                kw(*planned_import)
            ),
            Reason::BatteryImportLimit { power } => {
                write!(
                    f,
                    "battery discharging {} kW: grid import limit",
                    kw(*power)
                )
            }
            Reason::BatteryChargingPv { power } => {
                write!(f, "battery charging {} kW: PV surplus", kw(*power))
            }
            Reason::BatteryChargingValley { power } => {
                write!(f, "battery charging {} kW: valley tariff", kw(*power))
            }
            Reason::BatteryIdle { cause } => {
                let why = match cause {
                    BatteryIdleCause::Offline => "offline",
                    BatteryIdleCause::Alarm => "BMS alarm",
                    BatteryIdleCause::SocUnknown => "state of charge unknown",
                    BatteryIdleCause::Temperature => "temperature out of range",
                };
                write!(f, "battery idle: {why}")
            }
            Reason::BatteryEveningReserve { soc } => write!(
                f,
                "battery not discharging: keeping {} % for the evening peak",
                (soc.0 * 10.0).round() / 10.0
            ),
            Reason::BatteryHeldGridStale { power } => {
                write!(f, "battery held at {} kW: grid meter stale", kw(*power))
            }
            Reason::PvCurtailed { limit } => write!(
                f,
                "PV limited to {} %: export limit",
                (limit.0 * 10.0).round() / 10.0
            ),
            Reason::ImportLimitUnreachable { excess } => write!(
                f,
                "grid import {} kW above the limit: nothing left to shed",
                kw(*excess)
            ),
        }
    }
}

/// What to write to the devices this cycle.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Plan {
    /// One setpoint per charger of the snapshot, in snapshot order.
    pub chargers: Vec<ChargerSetpoint>,
    /// Battery setpoint, > 0 discharge.
    pub battery: Watts,
    /// PV active-power limit, % of rating (100 = unlimited).
    pub pv_limit: Percent,
    /// Expected grid power and its parts.
    pub balance: PowerBalance,
    pub reasons: Vec<Reason>,
}

impl Plan {
    /// Whether a reason with this machine code is present.
    pub fn has_reason(&self, code: &str) -> bool {
        self.reasons.iter().any(|r| r.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_plain_english() {
        let r = Reason::ChargerImportLimited {
            id: ChargerId::new("charger-3"),
            amps: Amps(6.0),
        };
        assert_eq!(r.to_string(), "charger-3 held at 6 A: grid import limit");
        assert_eq!(r.code(), "charger_import_limited");
        let r = Reason::BatteryPeakTariff {
            power: Watts(80_000.0),
        };
        assert_eq!(r.to_string(), "battery discharging 80 kW: tariff");
        assert_eq!(
            Reason::GridStale.to_string(),
            "grid meter stale: chargers at safe current"
        );
    }
}

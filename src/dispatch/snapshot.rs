//! What the controller knows about the plant at one instant: the input of [`super::decide`].
//!
//! Sign convention: grid power > 0 import, battery power > 0 discharge, PV power > 0
//! generation, loads (building, chargers) > 0 consume.

use crate::units::{Amps, Percent, WattHours, Watts};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// How trustworthy a reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// Read successfully within its freshness budget.
    Fresh,
    /// The last good value, older than its freshness budget.
    Stale,
    /// Never read, or the device answered with an invalid value.
    Missing,
}

/// A value together with how fresh it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading<T> {
    pub value: T,
    pub freshness: Freshness,
}

impl<T: Copy> Reading<T> {
    pub fn fresh(value: T) -> Self {
        Reading {
            value,
            freshness: Freshness::Fresh,
        }
    }

    pub fn stale(value: T) -> Self {
        Reading {
            value,
            freshness: Freshness::Stale,
        }
    }

    /// The value only if it is fresh.
    #[inline]
    pub fn fresh_value(&self) -> Option<T> {
        match self.freshness {
            Freshness::Fresh => Some(self.value),
            Freshness::Stale | Freshness::Missing => None,
        }
    }

    #[inline]
    pub fn is_fresh(&self) -> bool {
        self.freshness == Freshness::Fresh
    }
}

impl<T: Copy + Default> Reading<T> {
    pub fn missing() -> Self {
        Reading {
            value: T::default(),
            freshness: Freshness::Missing,
        }
    }
}

/// A charger id as the station config names it (`charger-3`). Cloning is cheap (shared string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChargerId(pub Arc<str>);

impl Serialize for ChargerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChargerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ChargerId(Arc::from(s)))
    }
}

impl ChargerId {
    pub fn new(id: &str) -> Self {
        ChargerId(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChargerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ChargerId {
    fn from(s: &str) -> Self {
        ChargerId::new(s)
    }
}

/// IEC 61851-1 mode-3 states (the Alfen socket splits D into D1/D2; both map to `D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChargerState {
    /// No vehicle.
    A,
    /// Vehicle connected, no PWM offered.
    B1,
    /// Vehicle connected, PWM offered, vehicle not ready.
    B2,
    /// Vehicle ready, no PWM (charging paused by the station).
    C1,
    /// Charging.
    C2,
    /// Charging with ventilation required.
    D,
    /// Short circuit / no power.
    E,
    /// Fault.
    F,
    /// Not read or not understood.
    Unknown,
}

impl ChargerState {
    /// The state named as IEC 61851-1 and the chargers' registers write it (`"A"`, `"B1"`,
    /// `"C2"`, `"D1"`, ...): D1 and D2 are both `D`; anything else is `Unknown`. The one mapping
    /// of charger states into dispatch, for the daemon's drivers and the backtest's plant alike.
    pub fn from_iec61851(name: &str) -> ChargerState {
        match name {
            "A" => ChargerState::A,
            "B1" => ChargerState::B1,
            "B2" => ChargerState::B2,
            "C1" => ChargerState::C1,
            "C2" => ChargerState::C2,
            "D1" | "D2" => ChargerState::D,
            "E" => ChargerState::E,
            "F" => ChargerState::F,
            _ => ChargerState::Unknown,
        }
    }

    /// Whether the vehicle asks for current (C1, C2, D): one that does not (B1, B2: full, asleep
    /// or not ready) draws nothing whatever it is offered, until it changes state.
    #[inline]
    pub fn requesting(self) -> bool {
        matches!(self, ChargerState::C1 | ChargerState::C2 | ChargerState::D)
    }

    /// Whether a current setpoint above 0 A makes sense in this state: a vehicle is connected
    /// and nothing is faulty (B1, B2, C1, C2, D).
    #[inline]
    pub fn can_charge(self) -> bool {
        matches!(
            self,
            ChargerState::B1
                | ChargerState::B2
                | ChargerState::C1
                | ChargerState::C2
                | ChargerState::D
        )
    }
}

/// The grid connection meter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridSnapshot {
    /// Total power, > 0 import.
    pub power: Reading<Watts>,
    /// Power per phase L1..L3, > 0 import; `Missing` where the meter does not give it.
    pub phase_power: Reading<[Watts; 3]>,
}

/// The PV inverter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PvSnapshot {
    /// AC output now, > 0 generation.
    pub power: Reading<Watts>,
    /// AC rating of the inverter.
    pub rating: Watts,
    /// Active-power limit in force now, % of rating (100 = unlimited).
    pub limit: Percent,
}

/// The battery (BMS + PCS).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatterySnapshot {
    /// Whether the PCS answers and is connected.
    pub online: bool,
    /// State of charge, % of the usable capacity.
    pub soc: Reading<Percent>,
    /// State of health, % of nameplate.
    pub soh: Percent,
    /// AC power now, > 0 discharge.
    pub power: Reading<Watts>,
    /// BMS limits now, both >= 0, already derated by the BMS.
    pub max_charge: Watts,
    pub max_discharge: Watts,
    pub temperature_c: f64,
    /// Any BMS alarm (not warning) active.
    pub alarm: bool,
    /// Usable capacity now: nameplate x SoH, or the measured capacity once it is confident
    /// (`health`).
    pub usable_capacity: WattHours,
    /// What the measured health adds (see `crate::health`); neutral by default.
    #[serde(default)]
    pub health: HealthLimits,
}

/// Limits from the battery's measured health (`crate::health::derate`): the SoC window
/// narrowed by cell spread, the share of the BMS power limits usable at the measured module
/// temperatures, and the wear price from the measured fade. Dispatch applies them on top of
/// the policy and the BMS limits; the default changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthLimits {
    pub soc_min: Percent,
    pub soc_max: Percent,
    /// 0..=1.
    pub charge_factor: f64,
    pub discharge_factor: f64,
    /// Wear price, CNY per kWh discharged (the policy's formula when `None`).
    pub wear_cny_per_kwh: Option<f64>,
    /// The confident measured capacity, Wh (for reports; `usable_capacity` carries it).
    pub capacity_wh: Option<f64>,
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits {
            soc_min: Percent(0.0),
            soc_max: Percent(100.0),
            charge_factor: 1.0,
            discharge_factor: 1.0,
            wear_cny_per_kwh: None,
            capacity_wh: None,
        }
    }
}

/// One AC charger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargerSnapshot {
    pub id: ChargerId,
    /// Whether the charger answers.
    pub online: bool,
    pub state: ChargerState,
    /// Measured current per phase.
    pub current: [Amps; 3],
    /// Measured active power, > 0 consumption.
    pub power: Watts,
    /// 1 or 3.
    pub phases: u8,
    /// Lowest current the charger can offer (IEC 61851: 6 A).
    pub min_current: Amps,
    /// Hardware rating per phase.
    pub rating: Amps,
    /// Current the charger falls back to when setpoints stop arriving.
    pub safe_current: Amps,
    /// Whether a vehicle is plugged in.
    pub plugged: bool,
}

/// Everything [`super::decide`] needs to know about the plant now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub grid: GridSnapshot,
    pub pv: PvSnapshot,
    pub battery: BatterySnapshot,
    /// Dealership building load, > 0 consumption (the non-controllable load).
    pub building: Reading<Watts>,
    pub chargers: Vec<ChargerSnapshot>,
}

impl Snapshot {
    /// The reference station (docs/reference-station.md) at rest, every reading fresh: no PV,
    /// no building load, battery at 50 % of 360 kWh usable with 120 kW BMS limits, and `n`
    /// 32 A 3-phase chargers `charger-1..` each with a car plugged in and ready (state C2)
    /// but drawing nothing yet. A starting point for tests, simulations and benchmarks.
    pub fn reference_idle(n: usize) -> Snapshot {
        let chargers = (1..=n)
            .map(|i| ChargerSnapshot {
                id: ChargerId::new(&format!("charger-{i}")),
                online: true,
                state: ChargerState::C2,
                current: [Amps::ZERO; 3],
                power: Watts::ZERO,
                phases: 3,
                min_current: Amps(6.0),
                rating: Amps(32.0),
                safe_current: Amps(6.0),
                plugged: true,
            })
            .collect();
        Snapshot {
            grid: GridSnapshot {
                power: Reading::fresh(Watts::ZERO),
                phase_power: Reading::fresh([Watts::ZERO; 3]),
            },
            pv: PvSnapshot {
                power: Reading::fresh(Watts::ZERO),
                rating: Watts::from_kw(135.0),
                limit: Percent(100.0),
            },
            battery: BatterySnapshot {
                online: true,
                soc: Reading::fresh(Percent(50.0)),
                soh: Percent(72.0),
                power: Reading::fresh(Watts::ZERO),
                max_charge: Watts::from_kw(120.0),
                max_discharge: Watts::from_kw(120.0),
                temperature_c: 25.0,
                alarm: false,
                usable_capacity: WattHours::from_kwh(360.0),
                health: HealthLimits::default(),
            },
            building: Reading::fresh(Watts::ZERO),
            chargers,
        }
    }
}

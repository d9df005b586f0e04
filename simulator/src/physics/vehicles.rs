//! Electric vehicles at the chargers.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Why a car is here (sets its arrival and dwell pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleKind {
    /// Staff and service cars: arrive 07:30-09:30, stay about 8 h.
    Staff,
    /// Customers and test drives: arrive in opening hours, stay 1-4 h.
    Customer,
    /// Demo fleet: plugged in the evening, leaves next morning.
    Demo,
    /// From the scenario's scripted arrivals.
    Scripted,
    /// Plugged by hand through [`crate::physics::Plant::plug_vehicle`].
    Manual,
}

impl VehicleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VehicleKind::Staff => "staff",
            VehicleKind::Customer => "customer",
            VehicleKind::Demo => "demo",
            VehicleKind::Scripted => "scripted",
            VehicleKind::Manual => "manual",
        }
    }
}

/// A car to plug by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct VehicleSpec {
    pub kind: VehicleKind,
    pub battery_wh: f64,
    pub soc_pct: f64,
    pub target_soc_pct: f64,
    /// On-board charger limit per phase, A.
    pub onboard_max_a: f64,
    /// Phases the on-board charger uses, 1 or 3.
    pub phases: u8,
    /// How long it stays, s.
    pub stay_s: f64,
}

/// SoC above which the car tapers its current.
pub const TAPER_KNEE: f64 = 0.9;

/// A plugged car. Energy counts at the charger (AC); the car's SoC rises by that energy.
#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    pub kind: VehicleKind,
    pub battery_wh: f64,
    pub soc_pct: f64,
    pub target_soc_pct: f64,
    pub onboard_max_a: f64,
    pub phases: u8,
    /// Seconds since the plant's epoch.
    pub arrive_s: f64,
    pub depart_s: f64,
    /// `arrive_s` and `depart_s` as times, worked out once at plug-in for the views.
    pub arrived: DateTime<Utc>,
    pub departs: DateTime<Utc>,
    pub session_wh: f64,
}

impl Vehicle {
    /// Energy still wanted to reach the target, Wh.
    pub fn wanted_wh(&self) -> f64 {
        ((self.target_soc_pct - self.soc_pct) / 100.0 * self.battery_wh).max(0.0)
    }

    /// Whether the car still wants energy.
    pub fn wants_energy(&self) -> bool {
        self.wanted_wh() > 1e-6
    }

    /// The most current the car accepts now per phase, A (0 when at target): the on-board
    /// limit tapered as `I_max x clamp((1 - soc)/(1 - knee), 0.1, 1)`.
    pub fn accept_a(&self) -> f64 {
        if !self.wants_energy() {
            return 0.0;
        }
        let soc = self.soc_pct / 100.0;
        self.onboard_max_a * ((1.0 - soc) / (1.0 - TAPER_KNEE)).clamp(0.1, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn car(soc: f64) -> Vehicle {
        Vehicle {
            kind: VehicleKind::Manual,
            battery_wh: 60_000.0,
            soc_pct: soc,
            target_soc_pct: 100.0,
            onboard_max_a: 32.0,
            phases: 3,
            arrive_s: 0.0,
            depart_s: 3600.0,
            arrived: DateTime::UNIX_EPOCH,
            departs: DateTime::UNIX_EPOCH + chrono::Duration::hours(1),
            session_wh: 0.0,
        }
    }

    #[test]
    fn car_tapers_above_the_knee_and_stops_at_target() {
        assert_eq!(car(50.0).accept_a(), 32.0);
        assert!((car(95.0).accept_a() - 16.0).abs() < 1e-9);
        assert!((car(99.9).accept_a() - 3.2).abs() < 1e-9);
        assert_eq!(car(100.0).accept_a(), 0.0);
    }
}

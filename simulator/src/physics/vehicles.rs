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
/// Share of its current a car still takes at the top of the taper.
pub const TAPER_FLOOR: f64 = 0.1;

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
        self.onboard_max_a * ((1.0 - soc) / (1.0 - TAPER_KNEE)).clamp(TAPER_FLOOR, 1.0)
    }
}

/// The most energy a car can take in `seconds` at a charger offering it `max_w` (its on-board
/// limit at nominal voltage) from the start, tapering above [`TAPER_KNEE`] as
/// [`Vehicle::accept_a`] does, up to its target, Wh. No controller can deliver more: the bound
/// of what a session can be served.
pub fn deliverable_wh(
    battery_wh: f64,
    soc_pct: f64,
    target_soc_pct: f64,
    max_w: f64,
    seconds: f64,
) -> f64 {
    if battery_wh <= 0.0 || max_w <= 0.0 || seconds <= 0.0 || target_soc_pct <= soc_pct {
        return 0.0;
    }
    let wanted = (target_soc_pct - soc_pct) / 100.0 * battery_wh;
    // Full power up to the knee, in closed form.
    let to_knee = ((TAPER_KNEE * 100.0 - soc_pct) / 100.0 * battery_wh).clamp(0.0, wanted);
    let full_s = to_knee / max_w * 3600.0;
    if full_s >= seconds {
        return max_w * seconds / 3600.0;
    }
    // The taper, in 1 s steps.
    let (mut got, mut t) = (to_knee, full_s);
    while t < seconds && got < wanted {
        let soc = soc_pct / 100.0 + got / battery_wh;
        let share = ((1.0 - soc) / (1.0 - TAPER_KNEE)).clamp(TAPER_FLOOR, 1.0);
        let dt = (seconds - t).min(1.0);
        got = (got + max_w * share * dt / 3600.0).min(wanted);
        t += dt;
    }
    got
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

    #[test]
    fn a_car_below_the_knee_takes_full_power_and_the_taper_slows_the_last_tenth() {
        // 60 kWh at 22 kW: 50 % -> 90 % (24 kWh) takes 65.5 minutes at full power.
        let full = deliverable_wh(60_000.0, 50.0, 90.0, 22_000.0, 3600.0);
        assert!((full - 22_000.0).abs() < 1e-6);
        assert!((deliverable_wh(60_000.0, 50.0, 90.0, 22_000.0, 7200.0) - 24_000.0).abs() < 1e-6);
        // 90 % -> 100 % (6 kWh) cannot be done in the 16.4 minutes full power would need.
        let taper = deliverable_wh(60_000.0, 90.0, 100.0, 22_000.0, 16.4 * 60.0);
        assert!(taper < 0.8 * 6_000.0 && taper > 2_000.0, "{taper}");
        // Given long enough it reaches the target and stops there.
        let all = deliverable_wh(60_000.0, 90.0, 100.0, 22_000.0, 10.0 * 3600.0);
        assert!((all - 6_000.0).abs() < 1e-6);
        assert_eq!(deliverable_wh(60_000.0, 80.0, 80.0, 22_000.0, 3600.0), 0.0);
    }
}

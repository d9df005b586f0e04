//! EV charger drivers: one trait, one file per vendor register profile.
//!
//! Adding a profile (e.g. Phoenix Contact CHARX) means one new file implementing
//! [`ChargerDriver`] and one arm in [`ChargerProfile::build`].

pub mod alfen;

use std::future::Future;
use std::pin::Pin;

use super::error::DeviceError;
use super::link::{Link, LinkConfig};

pub use alfen::AlfenCharger;

/// Boxed future returned by the dyn-compatible driver methods.
pub type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DeviceError>> + Send + 'a>>;

/// IEC 61851 mode 3 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Mode3 {
    /// No vehicle.
    A,
    /// Vehicle connected, not ready, no PWM.
    B1,
    /// Vehicle connected, not ready, PWM offered.
    B2,
    /// Ready, no PWM (no current).
    C1,
    /// Charging.
    C2,
    /// Ready with ventilation, no PWM.
    D1,
    /// Charging with ventilation.
    D2,
    /// Error (short, no pilot).
    E,
    /// EVSE unavailable.
    F,
}

impl Mode3 {
    /// Parse the state text ("A", "B1", ... "F"); surrounding blanks are ignored.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "A" | "A1" | "A2" => Self::A,
            "B1" => Self::B1,
            "B2" => Self::B2,
            "C1" => Self::C1,
            "C2" => Self::C2,
            "D1" => Self::D1,
            "D2" => Self::D2,
            "E" => Self::E,
            "F" => Self::F,
            _ => return None,
        })
    }

    /// The state's text as the charger reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B1 => "B1",
            Self::B2 => "B2",
            Self::C1 => "C1",
            Self::C2 => "C2",
            Self::D1 => "D1",
            Self::D2 => "D2",
            Self::E => "E",
            Self::F => "F",
        }
    }

    /// True in the states where the vehicle may draw current (C2, D2).
    pub fn is_charging(self) -> bool {
        matches!(self, Self::C2 | Self::D2)
    }

    /// True when a vehicle is plugged in (B, C, D).
    pub fn vehicle_connected(self) -> bool {
        matches!(
            self,
            Self::B1 | Self::B2 | Self::C1 | Self::C2 | Self::D1 | Self::D2
        )
    }
}

/// One validated charger reading (consumption > 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChargerReading {
    /// Mode 3 state.
    pub state: Mode3,
    /// Phase currents A (L1, L2, L3).
    pub current_a: [f64; 3],
    /// Real power W.
    pub power_w: f64,
    /// Energy delivered Wh (meter reading), if reported.
    pub energy_wh: Option<f64>,
    /// Maximum current the charger actually applies A.
    pub applied_max_a: f64,
    /// Seconds until the setpoint expires and the safe current applies; `u32::MAX` for a
    /// charger that keeps a setpoint until rewritten (a profile without `refresh_s`).
    pub remaining_validity_s: u32,
    /// Phases in use (1 or 3).
    pub phases: u8,
}

/// Options common to all charger profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerConfig {
    /// How to reach it (unit id of the socket).
    pub link: LinkConfig,
    /// Highest current setpoint accepted A (cable / EVSE rating).
    pub max_current_a: f64,
    /// Nominal phase voltage V, for the power plausibility check.
    pub nominal_v: f64,
}

impl ChargerConfig {
    /// 32 A, 230 V.
    pub fn new(link: LinkConfig) -> Self {
        ChargerConfig {
            link,
            max_current_a: 32.0,
            nominal_v: 230.0,
        }
    }

    /// Power rating W at 3 phases.
    pub fn rating_w(&self) -> f64 {
        3.0 * self.nominal_v * self.max_current_a
    }
}

/// A charger driver, dyn-compatible so the daemon can hold `Box<dyn ChargerDriver>`.
pub trait ChargerDriver: Send {
    /// Read and validate state, currents, power and setpoint status.
    fn read(&mut self) -> DriverFuture<'_, ChargerReading>;
    /// Write the maximum current setpoint A (refreshes its validity).
    fn set_current(&mut self, amps: f64) -> DriverFuture<'_, ()>;
    /// Write the fallback the charger applies by itself when the controller stops refreshing.
    fn configure_fallback(&mut self, safe_current_a: f64) -> DriverFuture<'_, ()>;
    /// Put the charger into its safe state (setpoint = configured safe current).
    fn safe(&mut self) -> DriverFuture<'_, ()>;
    /// The underlying link (state, counters).
    fn link(&self) -> &Link;
    /// The link, to drop a connection whose request was abandoned.
    fn link_mut(&mut self) -> &mut Link;
}

/// Known charger register profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargerProfile {
    /// Alfen NG9xx "Modbus slave" / Active Load Balancing profile.
    Alfen,
}

impl ChargerProfile {
    /// Build the driver of this profile.
    pub fn build(self, cfg: ChargerConfig) -> Box<dyn ChargerDriver> {
        match self {
            ChargerProfile::Alfen => Box::new(AlfenCharger::new(cfg)),
        }
    }
}

/// Build the link of a charger config (helper for profiles).
pub(crate) fn link_for(cfg: &LinkConfig) -> Link {
    Link::new(cfg.clone())
}

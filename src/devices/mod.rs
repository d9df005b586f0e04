//! Modbus TCP device drivers on tokio-modbus: one [`Link`] per device connection, SunSpec
//! discovery and decoding, and drivers for the PV inverter, the battery PCS, the meter and the
//! EV chargers.
//!
//! Every driver connects and discovers lazily, validates its readings (`DeviceError::BadData`
//! names the failing point) and keeps Modbus exceptions apart from link failures.

pub mod battery;
pub mod bus;
pub mod charger;
pub mod check;
pub mod error;
pub mod link;
pub mod meter;
pub mod profile;
pub mod pv;
pub mod sunspec;

pub use battery::{Battery, BatteryConfig, BatteryReading, BatteryState};
pub use charger::{
    AlfenCharger, ChargerConfig, ChargerDriver, ChargerProfile, ChargerReading, DriverFuture, Mode3,
};
pub use error::DeviceError;
pub use link::{Link, LinkConfig, LinkState, LinkStats};
pub use meter::{Meter, MeterConfig, MeterReading};
pub use pv::{InverterStatus, PvConfig, PvInverter, PvReading};
pub use sunspec::{ModelEntry, SunSpecMap};

/// The kind of a configured field device and, for chargers, its register profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// SunSpec PV inverter (models 101-103/111-113, 120, 123 or 704).
    PvInverter,
    /// SunSpec battery (802) behind a PCS controlled through 704.
    Battery,
    /// SunSpec meter (201-204/211-214).
    Meter,
    /// EV charger with the given register profile.
    Charger(ChargerProfile),
}

impl DeviceKind {
    /// True for the kinds found through SunSpec discovery.
    pub fn is_sunspec(self) -> bool {
        !matches!(self, DeviceKind::Charger(_))
    }
}

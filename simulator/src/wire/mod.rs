//! The devices on the wire: Modbus TCP servers that render the plant's [`StationView`](crate::view::StationView) into
//! real register maps and turn register writes into [`Command`](crate::view::Command)s.
//!
//! One server per device (one listener, one [`serve_device`] task):
//! - `pv`: SunSpec inverter, models 1, 103, 120, 123 (see [`sunspec`]);
//! - `battery`: SunSpec battery, models 1, 802, 704, then 803 (lithium-ion bank) and 804
//!   (lithium-ion string, one group per module) after the writable ones;
//! - `grid-meter`, `building-meter`: SunSpec meters, models 1, 203;
//! - `charger-1` .. `charger-N`: Alfen NG9xx "Modbus slave" profile (see [`alfen`]).
//!
//! # The battery's watt setpoint
//! Model 704 `WSet` (int32, W, `WSet_SF` = 0, > 0 discharge, |W| <= PCS rating, else 0x03) is
//! **the one documented way for the PCS to take a watt setpoint**. Write it with FC16 as both
//! registers together; enable it with `WSetEna` = 1 (`WSetMod` reads 1 = watts and only accepts
//! 1); `WSetRvrtTms` (uint32, s, 0 = never) sets the revert timeout, after which the PCS falls
//! back to 0 W. Each write becomes [`Command::BatterySetpointW`](crate::view::Command::BatterySetpointW), [`Command::BatterySetpointEnabled`](crate::view::Command::BatterySetpointEnabled)
//! or [`Command::BatterySetpointRevertS`](crate::view::Command::BatterySetpointRevertS). Model 802 `SoCRsvMin` (SF -1) is the only other
//! writable battery point.
//!
//! # Modbus behaviour
//! - Functions: FC3 and FC4 read the same image; FC6 and FC16 write. Anything else: 0x01.
//! - Unit ids: SunSpec devices answer unit 1; chargers answer unit 1 (socket) and 200
//!   (station). Any other unit id: 0x0B (gateway target device failed to respond).
//! - A read must lie inside one block of the map, else 0x02; count 0 or > 125: 0x03.
//! - Writes: count 0 or > 123: 0x03 (a request of more than 123 registers exceeds the
//!   253-byte PDU limit, so tokio-modbus' codec closes the connection before the device sees
//!   it); see [`writes`] for the checks (0x02 for read-only or
//!   unmapped registers, 0x03 for out-of-range values and partial 32-bit points). Exceptions
//!   change nothing.
//!
//! # Wire faults
//! Every request first consults [`Station::wire_faults`](crate::view::Station::wire_faults): `offline` closes the connection
//! without an answer (new connections are accepted, then closed at once); `latency` delays
//! the reply (the delay ends early if the server is cancelled); `exception` answers every
//! request with that code; `frozen` serves the image captured when the freeze began (taken
//! at the first request the device sees while frozen, shared by all its connections) and
//! refuses writes with 0x04; `bad_values` overrides named points before rendering (pv:
//! `power_w`; battery: `soc_pct`, `soh_pct`, `power_w`, `voltage_v`; meters: `power_w`;
//! chargers: `power_w`, `current_a`), NaN rendering the "not implemented" marker on SunSpec
//! integer points and NaN on Alfen floats.
//!
//! A charger whose index is beyond the view's chargers answers every request with 0x04.
//!
//! Images are rendered once per view (cached by the view's `Arc`), so a read is a lookup.

pub mod alfen;
mod encode;
pub mod fake;
pub mod image;
mod lithium;
mod models;
pub mod profile;
mod server;
pub mod sunspec;
pub mod writes;

pub use server::{render, serve_device, serve_profiled_device, MAX_READ, MAX_WRITE};

/// Which device a server plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Pv,
    Battery,
    GridMeter,
    BuildingMeter,
    /// Charger `index` (0-based) of [`StationView::chargers`](crate::view::StationView::chargers); its id is `charger-{index + 1}`.
    Charger {
        index: usize,
    },
}

/// One device to serve: its id (as `docs/reference-station.md` names it) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub id: String,
    pub kind: DeviceKind,
}

impl DeviceSpec {
    /// The spec for a device id: `pv`, `battery`, `grid-meter`, `building-meter`,
    /// `charger-1`, `charger-2`, ...; `None` for anything else.
    pub fn from_id(id: &str) -> Option<Self> {
        let kind = match id {
            "pv" => DeviceKind::Pv,
            "battery" => DeviceKind::Battery,
            "grid-meter" => DeviceKind::GridMeter,
            "building-meter" => DeviceKind::BuildingMeter,
            other => {
                let n: usize = other.strip_prefix("charger-")?.parse().ok()?;
                DeviceKind::Charger {
                    index: n.checked_sub(1)?,
                }
            }
        };
        Some(DeviceSpec {
            id: id.to_string(),
            kind,
        })
    }

    /// The spec of charger `index` (0-based).
    pub fn charger(index: usize) -> Self {
        DeviceSpec {
            id: format!("charger-{}", index + 1),
            kind: DeviceKind::Charger { index },
        }
    }
}

/// Every device of a station with `chargers` chargers, in a stable order.
pub fn station_devices(chargers: usize) -> Vec<DeviceSpec> {
    let mut specs: Vec<DeviceSpec> = ["pv", "battery", "grid-meter", "building-meter"]
        .into_iter()
        .filter_map(DeviceSpec::from_id)
        .collect();
    specs.extend((0..chargers).map(DeviceSpec::charger));
    specs
}

/// Transport-level failures of a device server (Modbus exceptions are answers, not errors).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("device {id}: serving failed: {source}")]
    Serve {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_map_to_kinds_and_back() {
        assert_eq!(
            DeviceSpec::from_id("pv").map(|s| s.kind),
            Some(DeviceKind::Pv)
        );
        assert_eq!(
            DeviceSpec::from_id("charger-3").map(|s| s.kind),
            Some(DeviceKind::Charger { index: 2 })
        );
        assert_eq!(DeviceSpec::from_id("charger-0"), None);
        assert_eq!(DeviceSpec::from_id("inverter"), None);
        let all = station_devices(8);
        assert_eq!(all.len(), 12);
        assert_eq!(all[11], DeviceSpec::charger(7));
        assert_eq!(all[11].id, "charger-8");
    }
}

//! The reference config as a file for the real `stationd` binary, pointed at a simulator.
//!
//! Devices are placed where [`raw_config_for`] places them (the demo's own wiring, including
//! extra chargers cloned from `charger-1`); values are changed by key, never by text
//! replacement, so a key that is not in the file fails the test instead of going unnoticed.

use station_controller::demo::{raw_config_for, STATION_TOML};
use station_sim::runtime::SimAddrs;
use std::net::SocketAddr;
use toml::{Table, Value};

/// The reference config (`config/station.toml`) as a TOML table.
pub(crate) fn reference() -> Table {
    STATION_TOML.parse().expect("config/station.toml is TOML")
}

/// The reference config with every device at the simulator's address, as [`raw_config_for`]
/// wires it, and the API listening on `api`.
pub(crate) fn for_sim(addrs: &SimAddrs, api: SocketAddr) -> Table {
    let raw = raw_config_for(addrs).expect("the reference config wires the simulator");
    let mut doc = reference();
    let written = doc
        .remove("devices")
        .and_then(|d| d.as_table().cloned())
        .expect("the reference config has devices");
    let template = written
        .get("charger-1")
        .cloned()
        .expect("the reference config has charger-1");
    let mut devices = Table::new();
    for (id, d) in &raw.devices {
        let mut device = written.get(id).unwrap_or(&template).clone();
        let t = device.as_table_mut().expect("a device is a table");
        t.insert("host".into(), Value::from(d.host.clone()));
        t.insert("port".into(), Value::from(i64::from(d.port)));
        devices.insert(id.clone(), device);
    }
    doc.insert("devices".into(), Value::Table(devices));
    set(&mut doc, "api.listen", api.to_string());
    doc
}

/// Sets the existing key at the dotted path `key` (e.g. `policy.grid.import_limit_kw`, or
/// `devices.grid-meter.port`); panics when the file has no such key.
pub(crate) fn set(doc: &mut Table, key: &str, value: impl Into<Value>) {
    let (tables, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut t = doc;
    for part in tables.split('.').filter(|p| !p.is_empty()) {
        t = t
            .get_mut(part)
            .and_then(Value::as_table_mut)
            .unwrap_or_else(|| panic!("config has no table {part:?} on the way to {key}"));
    }
    let slot = t
        .get_mut(last)
        .unwrap_or_else(|| panic!("config has no {key}"));
    *slot = value.into();
}

/// Writes `doc` to `path` as TOML.
pub(crate) fn write(path: &std::path::Path, doc: &Table) {
    let text = toml::to_string(doc).expect("a TOML table serialises");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

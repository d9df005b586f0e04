//! Home Assistant MQTT discovery (pure): one HA device per station, a sensor per power,
//! energy counter, SoC and SoH, a `select` per charger mode and a connectivity binary sensor per
//! device link. Every entity is available while `<root>/status` says `online`.

use super::config::MqttConfig;
use crate::daemon::status::Status;
use serde_json::{json, Value};

/// Collects discovery messages with the fields every entity shares.
struct Builder<'a> {
    cfg: &'a MqttConfig,
    root: String,
    device: Value,
    out: Vec<(String, String)>,
}

impl Builder<'_> {
    fn add(&mut self, component: &str, object: &str, mut body: Value) {
        let sid = &self.cfg.station_id;
        body["unique_id"] = json!(format!("{sid}_{object}"));
        body["object_id"] = json!(format!("{sid}_{object}"));
        body["device"] = self.device.clone();
        body["availability_topic"] = json!(format!("{}/status", self.root));
        body["payload_available"] = json!("online");
        body["payload_not_available"] = json!("offline");
        self.out.push((
            format!(
                "{}/{component}/{sid}/{object}/config",
                self.cfg.discovery_prefix
            ),
            body.to_string(),
        ));
    }

    fn power(&mut self, object: &str, name: &str, topic: &str) {
        let body = json!({"name": name, "state_topic": format!("{}/{topic}", self.root),
            "unit_of_measurement": "W", "device_class": "power", "state_class": "measurement"});
        self.add("sensor", object, body);
    }

    fn energy(&mut self, object: &str, name: &str, topic: &str) {
        let body = json!({"name": name, "state_topic": format!("{}/{topic}", self.root),
            "unit_of_measurement": "kWh", "device_class": "energy",
            "state_class": "total_increasing"});
        self.add("sensor", object, body);
    }
}

/// `(topic, retained JSON payload)` pairs of the discovery messages for this station.
pub fn messages(cfg: &MqttConfig, s: &Status) -> Vec<(String, String)> {
    let sid = &cfg.station_id;
    let mut b = Builder {
        cfg,
        root: cfg.root(),
        device: json!({
            "identifiers": [format!("station-controller_{sid}")],
            "name": s.station,
            "manufacturer": "station-controller",
            "model": "stationd",
            "sw_version": env!("CARGO_PKG_VERSION"),
        }),
        out: Vec::new(),
    };
    b.power("grid_power", "Grid power", "grid/power_w");
    b.power("pv_power", "PV power", "pv/power_w");
    b.power("battery_power", "Battery power", "battery/power_w");
    b.power("building_power", "Building power", "building/power_w");
    b.power(
        "vehicles_power",
        "Vehicle charging power",
        "vehicles/power_w",
    );
    b.energy("pv_energy_today", "PV energy today", "today/pv_kwh");
    b.energy(
        "grid_import_today",
        "Grid import today",
        "today/grid_import_kwh",
    );
    b.energy(
        "grid_export_today",
        "Grid export today",
        "today/grid_export_kwh",
    );
    b.energy("ev_energy_today", "EV energy today", "today/ev_kwh");
    let root = b.root.clone();
    b.add(
        "sensor",
        "battery_soc",
        json!({"name": "Battery state of charge", "state_topic": format!("{root}/battery/soc_pct"),
               "unit_of_measurement": "%", "device_class": "battery", "state_class": "measurement"}),
    );
    b.add(
        "sensor",
        "battery_soh",
        json!({"name": "Battery state of health", "state_topic": format!("{root}/battery/soh_pct"),
               "unit_of_measurement": "%", "state_class": "measurement",
               "icon": "mdi:battery-heart-variant"}),
    );
    for c in &s.chargers {
        let base = format!("{root}/chargers/{}", c.id);
        b.power(
            &format!("{}_power", c.id),
            &format!("{} power", c.id),
            &format!("chargers/{}/power_w", c.id),
        );
        b.add(
            "select",
            &format!("{}_mode", c.id),
            json!({"name": format!("{} mode", c.id), "state_topic": format!("{base}/mode"),
                   "command_topic": format!("{base}/mode/set"),
                   "options": ["fast", "solar", "min_solar"]}),
        );
    }
    for d in &s.devices {
        b.add(
            "binary_sensor",
            &format!("{}_link", d.id),
            json!({"name": format!("{} link", d.id),
                   "state_topic": format!("{root}/devices/{}/link", d.id),
                   "value_template": "{{ 'ON' if value == 'online' else 'OFF' }}",
                   "payload_on": "ON", "payload_off": "OFF", "device_class": "connectivity"}),
        );
    }
    b.out
}

/// The ids a discovery set depends on: when they change, discovery is sent again.
pub fn shape(s: &Status) -> Vec<String> {
    s.chargers
        .iter()
        .map(|c| c.id.clone())
        .chain(s.devices.iter().map(|d| format!("dev:{}", d.id)))
        .collect()
}

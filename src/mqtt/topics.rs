//! The retained state tree: what a [`Status`] looks like as MQTT topics (pure functions).
//!
//! Every value is its own topic under `<prefix>/<station_id>/` with a plain payload (a number,
//! a state word, or JSON where noted), so Home Assistant, Telegraf or `mosquitto_sub` read it
//! without a parser. A reading the daemon does not have (a device offline) is not published:
//! the retained topic keeps its last value and `devices/<id>/link` tells why.

use crate::daemon::status::{LinkState, Status};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Payload formatting: at most `decimals` decimals, no trailing zeros, no `-0`.
pub fn number(v: f64, decimals: i32) -> String {
    let scale = 10f64.powi(decimals);
    let r = (v * scale).round() / scale;
    let r = if r == 0.0 { 0.0 } else { r };
    format!("{r}")
}

fn link_word(l: LinkState) -> &'static str {
    match l {
        LinkState::Online => "online",
        LinkState::Degraded => "degraded",
        LinkState::Offline => "offline",
    }
}

/// Topics whose values are today's energy counters (Home Assistant `total_increasing`).
pub const ENERGY_TOPICS: &[&str] = &[
    "today/pv_kwh",
    "today/grid_import_kwh",
    "today/grid_export_kwh",
    "today/ev_kwh",
];

/// Total vehicle power, W, when every charger's power is known.
pub fn vehicles_w(s: &Status) -> Option<f64> {
    s.chargers.iter().map(|c| c.power_w).sum()
}

/// The retained state topics (relative to the station root) and their payloads.
pub fn state(s: &Status) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    let mut put = |k: String, v: Option<String>| {
        if let Some(v) = v {
            t.insert(k, v);
        }
    };
    let w = |v: Option<f64>| v.map(|v| number(v, 0));
    put("time".into(), Some(s.time.to_rfc3339()));
    put("grid/power_w".into(), w(s.grid.power_w));
    put("grid/import_limit_w".into(), w(Some(s.grid.import_limit_w)));
    put("grid/fresh".into(), Some(s.grid.fresh.to_string()));
    put("pv/power_w".into(), w(s.pv.power_w));
    put("pv/limit_pct".into(), Some(number(s.pv.limit_pct, 1)));
    put(
        "battery/soc_pct".into(),
        s.battery.soc_pct.map(|v| number(v, 1)),
    );
    put(
        "battery/soh_pct".into(),
        s.battery.soh_pct.map(|v| number(v, 1)),
    );
    put("battery/power_w".into(), w(s.battery.power_w));
    put("battery/setpoint_w".into(), w(Some(s.battery.setpoint_w)));
    put("battery/max_charge_w".into(), w(s.battery.max_charge_w));
    put(
        "battery/max_discharge_w".into(),
        w(s.battery.max_discharge_w),
    );
    put("battery/alarms".into(), Some(s.battery.alarms.to_string()));
    put("building/power_w".into(), w(s.building.power_w));
    put("vehicles/power_w".into(), w(vehicles_w(s)));
    for c in &s.chargers {
        let k = |f: &str| format!("chargers/{}/{f}", c.id);
        put(k("state"), Some(c.state.clone()));
        put(k("current_a"), c.current_a.map(|v| number(v, 1)));
        put(k("setpoint_a"), Some(number(c.setpoint_a, 1)));
        put(k("power_w"), w(c.power_w));
        put(k("mode"), Some(c.mode.clone()));
        put(
            k("session_kwh"),
            Some(number(c.session_wh.unwrap_or(0.0) / 1000.0, 2)),
        );
    }
    for d in &s.devices {
        put(
            format!("devices/{}/link", d.id),
            Some(link_word(d.link).into()),
        );
    }
    put("reasons".into(), serde_json::to_string(&s.reasons).ok());
    let today = &s.today;
    put("today/pv_kwh".into(), Some(number(today.pv_kwh, 2)));
    put(
        "today/grid_import_kwh".into(),
        Some(number(today.grid_import_kwh, 2)),
    );
    put(
        "today/grid_export_kwh".into(),
        Some(number(today.grid_export_kwh, 2)),
    );
    put(
        "today/ev_kwh".into(),
        Some(number(today.ev_delivered_kwh, 2)),
    );
    put("today/cost_cny".into(), Some(number(today.cost_cny, 2)));
    put(
        "today/co2_avoided_kg".into(),
        Some(number(today.co2_avoided_kg, 1)),
    );
    t
}

/// One open alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    /// `device_offline`, `device_degraded`, `bms_alarm` or `import_limit_unreachable`.
    pub kind: &'static str,
    /// The device concerned, or `grid` for the import limit.
    pub device: String,
    pub message: String,
}

impl Alarm {
    pub fn key(&self) -> (&'static str, &str) {
        (self.kind, &self.device)
    }
}

/// The alarms a status shows.
pub fn alarms(s: &Status) -> Vec<Alarm> {
    let mut out = Vec::new();
    for d in &s.devices {
        let kind = match d.link {
            LinkState::Online => continue,
            LinkState::Degraded => "device_degraded",
            LinkState::Offline => "device_offline",
        };
        let why = d
            .warning
            .as_deref()
            .or(d.last_error.as_deref())
            .unwrap_or("no answer");
        out.push(Alarm {
            kind,
            device: d.id.clone(),
            message: format!("{} {}: {why}", d.id, link_word(d.link)),
        });
    }
    if s.battery.alarms != 0 {
        out.push(Alarm {
            kind: "bms_alarm",
            device: "battery".into(),
            message: format!(
                "BMS alarm bits {:#010x}: battery held idle",
                s.battery.alarms
            ),
        });
    }
    if let Some(p) = s.grid.power_w {
        if s.grid.import_limit_w > 0.0 && p > s.grid.import_limit_w {
            out.push(Alarm {
                kind: "import_limit_unreachable",
                device: "grid".into(),
                message: format!(
                    "grid import {} kW above the {} kW limit",
                    number((p - s.grid.import_limit_w) / 1000.0, 1),
                    number(s.grid.import_limit_w / 1000.0, 1)
                ),
            });
        }
    }
    out
}

/// The compact per-station summary the fleet view reads (`summary`, retained JSON).
pub fn summary(
    station_id: &str,
    s: &Status,
    online_since: Option<chrono::DateTime<chrono::Utc>>,
    open_alarms: usize,
    dashboard: Option<&str>,
) -> serde_json::Value {
    json!({
        "station": station_id,
        "name": s.station,
        "time": s.time,
        "online_since": online_since,
        "grid_w": s.grid.power_w,
        "pv_w": s.pv.power_w,
        "battery_w": s.battery.power_w,
        "vehicles_w": vehicles_w(s),
        "building_w": s.building.power_w,
        "soc_pct": s.battery.soc_pct,
        "today": {
            "pv_kwh": s.today.pv_kwh,
            "grid_import_kwh": s.today.grid_import_kwh,
            "grid_export_kwh": s.today.grid_export_kwh,
            "ev_kwh": s.today.ev_delivered_kwh,
            "cost_cny": s.today.cost_cny,
            "co2_avoided_kg": s.today.co2_avoided_kg,
        },
        "open_alarms": open_alarms,
        "dashboard": dashboard,
    })
}

/// Keeps today's energy counters from going down within a day: a value below the last one
/// published is held back (a failed ledger read must not look like a reset to Home Assistant)
/// unless the station's local date changed, which is the daily reset.
#[derive(Debug, Default)]
pub struct EnergyGuard {
    day: Option<chrono::NaiveDate>,
    last: BTreeMap<String, f64>,
}

impl EnergyGuard {
    /// Whether `value` may be published on `topic` on local date `day`.
    pub fn allow(&mut self, day: chrono::NaiveDate, topic: &str, value: f64) -> bool {
        if self.day != Some(day) {
            self.day = Some(day);
            self.last.clear();
        }
        let ok = value.is_finite() && self.last.get(topic).is_none_or(|last| value >= *last);
        if ok {
            self.last.insert(topic.to_string(), value);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_rounded_without_trailing_zeros_or_negative_zero() {
        assert_eq!(number(1234.56, 0), "1235");
        assert_eq!(number(12.0, 2), "12");
        assert_eq!(number(-0.001, 1), "0");
        assert_eq!(number(71.96, 1), "72");
    }

    #[test]
    fn energy_counters_never_drop_within_a_day_but_reset_on_a_new_day() {
        let d1 = chrono::NaiveDate::from_ymd_opt(2026, 7, 14).unwrap();
        let d2 = d1.succ_opt().unwrap();
        let mut g = EnergyGuard::default();
        assert!(g.allow(d1, "today/pv_kwh", 10.0));
        assert!(!g.allow(d1, "today/pv_kwh", 0.0), "a 0 after a failed read");
        assert!(g.allow(d1, "today/pv_kwh", 10.5));
        assert!(g.allow(d2, "today/pv_kwh", 0.0), "midnight reset");
        assert!(!g.allow(d2, "today/pv_kwh", f64::NAN));
    }
}

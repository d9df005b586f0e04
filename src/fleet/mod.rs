//! The fleet view (`stationd fleet --broker URL`): one page, `/api/fleet` and `/metrics` over
//! every station that publishes under `<prefix>/+/...` on the broker.
//!
//! It keeps no state of its own beyond what the broker retains and what it has seen since it
//! started: per station the retained `status` (`online`/`offline`), `summary` (powers, SoC,
//! today's energy, the dashboard link, `online_since`) and `alarms` (open alarms). "Since" is
//! the station's `online_since` for an online station and the time of its last summary (the
//! last moment it was seen alive) for an offline one, both in station time.

pub mod server;

pub use server::{serve, FleetError, FleetOptions};

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the fleet knows about one station.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StationEntry {
    pub id: String,
    /// `Some(true)` online, `Some(false)` offline, `None` no status seen.
    pub online: Option<bool>,
    /// Since when it is in its current state (station time, RFC 3339), when known.
    pub since: Option<String>,
    /// The last retained summary, as published.
    pub summary: Option<Value>,
    /// Open alarms, as published.
    pub alarms: Vec<Value>,
}

/// Every station seen, by id.
#[derive(Debug, Default)]
pub struct Fleet {
    prefix: String,
    stations: BTreeMap<String, StationEntry>,
    /// Messages taken in, and messages that did not parse.
    pub messages: u64,
    pub rejected: u64,
}

impl Fleet {
    pub fn new(prefix: &str) -> Fleet {
        Fleet {
            prefix: prefix.to_string(),
            ..Fleet::default()
        }
    }

    /// The topic filters the fleet subscribes to.
    pub fn filters(&self) -> Vec<String> {
        ["status", "summary", "alarms"]
            .iter()
            .map(|t| format!("{}/+/{t}", self.prefix))
            .collect()
    }

    /// Take in one message. Returns false when the topic or payload is not understood.
    pub fn apply(&mut self, topic: &str, payload: &[u8]) -> bool {
        self.messages += 1;
        let ok = self.apply_inner(topic, payload);
        if !ok {
            self.rejected += 1;
        }
        ok
    }

    fn apply_inner(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let Some((id, leaf)) = rest.split_once('/') else {
            return false;
        };
        if payload.is_empty() {
            // A cleared retained topic: the station was removed from the broker.
            if leaf == "status" {
                self.stations.remove(id);
            }
            return true;
        }
        let entry = self
            .stations
            .entry(id.to_string())
            .or_insert_with(|| StationEntry {
                id: id.to_string(),
                ..StationEntry::default()
            });
        match leaf {
            "status" => {
                let online = match payload {
                    b"online" => true,
                    b"offline" => false,
                    _ => return false,
                };
                entry.online = Some(online);
                entry.since = since(entry);
                true
            }
            "summary" => match serde_json::from_slice::<Value>(payload) {
                Ok(v) if v.is_object() => {
                    entry.summary = Some(v);
                    entry.since = since(entry);
                    true
                }
                _ => false,
            },
            "alarms" => match serde_json::from_slice::<Value>(payload) {
                Ok(Value::Array(a)) => {
                    entry.alarms = a;
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Every station, ordered by id.
    pub fn stations(&self) -> impl Iterator<Item = &StationEntry> {
        self.stations.values()
    }

    pub fn get(&self, id: &str) -> Option<&StationEntry> {
        self.stations.get(id)
    }

    /// `/api/fleet`: counts and every station.
    pub fn json(&self) -> Value {
        let online = self.stations().filter(|s| s.online == Some(true)).count();
        serde_json::json!({
            "stations": self.stations().collect::<Vec<_>>(),
            "count": self.stations.len(),
            "online": online,
            "offline": self.stations.len() - online,
            "open_alarms": self.stations().map(|s| s.alarms.len()).sum::<usize>(),
        })
    }

    /// Prometheus text, one series per station (label `station`).
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        };
        let per = |f: &dyn Fn(&StationEntry) -> Option<f64>| -> Vec<(String, f64)> {
            self.stations()
                .filter_map(|s| f(s).map(|v| (format!("station=\"{}\"", label(&s.id)), v)))
                .collect()
        };
        let num = |s: &StationEntry, path: &[&str]| -> Option<f64> {
            let mut v = s.summary.as_ref()?;
            for p in path {
                v = v.get(p)?;
            }
            v.as_f64()
        };
        family(
            "fleet_station_online",
            "1 while the station's status is online",
            "gauge",
            per(&|s| s.online.map(|o| if o { 1.0 } else { 0.0 })),
        );
        let mut power = Vec::new();
        let mut energy = Vec::new();
        for s in self.stations() {
            for (flow, key) in [
                ("grid", "grid_w"),
                ("pv", "pv_w"),
                ("battery", "battery_w"),
                ("vehicles", "vehicles_w"),
                ("building", "building_w"),
            ] {
                if let Some(v) = num(s, &[key]) {
                    power.push((format!("station=\"{}\",flow=\"{flow}\"", label(&s.id)), v));
                }
            }
            for (flow, key) in [
                ("pv", "pv_kwh"),
                ("grid_import", "grid_import_kwh"),
                ("grid_export", "grid_export_kwh"),
                ("vehicles", "ev_kwh"),
            ] {
                if let Some(v) = num(s, &["today", key]) {
                    energy.push((format!("station=\"{}\",flow=\"{flow}\"", label(&s.id)), v));
                }
            }
        }
        family(
            "fleet_station_power_watts",
            "Last published power per flow (grid > 0 import, battery > 0 discharge)",
            "gauge",
            power,
        );
        family(
            "fleet_station_battery_soc_percent",
            "Battery state of charge",
            "gauge",
            per(&|s| num(s, &["soc_pct"])),
        );
        family(
            "fleet_station_today_energy_kwh",
            "Energy today per flow (station local day)",
            "gauge",
            energy,
        );
        family(
            "fleet_station_today_cost_cny",
            "Net energy cost today",
            "gauge",
            per(&|s| num(s, &["today", "cost_cny"])),
        );
        family(
            "fleet_station_open_alarms",
            "Open alarms",
            "gauge",
            per(&|s| Some(s.alarms.len() as f64)),
        );
        family(
            "fleet_messages_total",
            "MQTT messages taken in",
            "counter",
            vec![(String::new(), self.messages as f64)],
        );
        family(
            "fleet_messages_rejected_total",
            "MQTT messages not understood",
            "counter",
            vec![(String::new(), self.rejected as f64)],
        );
        out
    }
}

fn since(e: &StationEntry) -> Option<String> {
    let field = if e.online == Some(false) {
        "time"
    } else {
        "online_since"
    };
    e.summary
        .as_ref()
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet {
        let mut f = Fleet::new("station");
        assert!(f.apply("station/a/status", b"online"));
        assert!(f.apply(
            "station/a/summary",
            br#"{"time":"2026-07-15T04:00:00Z","online_since":"2026-07-15T01:00:00Z","grid_w":1200.0,"soc_pct":55.5,"today":{"pv_kwh":12.5}}"#
        ));
        assert!(f.apply("station/b/status", b"offline"));
        assert!(f.apply(
            "station/b/alarms",
            br#"[{"kind":"device_offline","device":"pv"}]"#
        ));
        f
    }

    #[test]
    fn stations_are_online_or_offline_since_the_time_their_summary_says() {
        let f = fleet();
        let a = f.get("a").unwrap();
        assert_eq!(
            (a.online, a.since.as_deref()),
            (Some(true), Some("2026-07-15T01:00:00Z"))
        );
        let b = f.get("b").unwrap();
        assert_eq!((b.online, b.alarms.len()), (Some(false), 1));
        let j = f.json();
        assert_eq!(
            (
                j["count"].as_u64(),
                j["online"].as_u64(),
                j["open_alarms"].as_u64()
            ),
            (Some(2), Some(1), Some(1))
        );
    }

    #[test]
    fn unknown_topics_and_bad_payloads_are_counted_not_kept() {
        let mut f = fleet();
        assert!(!f.apply("station/a/status", b"maybe"));
        assert!(!f.apply("station/a/summary", b"not json"));
        assert!(!f.apply("other/a/status", b"online"));
        assert_eq!(f.rejected, 3);
        assert_eq!(f.get("a").unwrap().online, Some(true));
        assert!(f.apply("station/b/status", b""));
        assert!(f.get("b").is_none(), "a cleared status removes the station");
    }

    #[test]
    fn metrics_carry_a_station_label_per_series() {
        let m = fleet().metrics();
        assert!(m.contains("fleet_station_online{station=\"a\"} 1"), "{m}");
        assert!(m.contains("fleet_station_online{station=\"b\"} 0"), "{m}");
        assert!(
            m.contains("fleet_station_power_watts{station=\"a\",flow=\"grid\"} 1200"),
            "{m}"
        );
        assert!(
            m.contains("fleet_station_battery_soc_percent{station=\"a\"} 55.5"),
            "{m}"
        );
        assert!(
            m.contains("fleet_station_today_energy_kwh{station=\"a\",flow=\"pv\"} 12.5"),
            "{m}"
        );
        assert!(m.contains("fleet_messages_total 4"), "{m}");
    }
}

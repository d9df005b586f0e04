//! MQTT fleet telemetry against a real Mosquitto started by the test: the daemon (in process,
//! against the simulator) publishes the documented topic tree and Home Assistant discovery,
//! takes commands, and delivers every energy record exactly once by sequence number through a
//! broker outage and a daemon restart.

#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/mqtt_probe.rs"]
mod mqtt_probe;

use mosquitto::Mosquitto;
use mqtt_probe::Probe;
use serde_json::Value;
use station_controller::clock::FollowClock;
use station_controller::config::StationConfig;
use station_controller::daemon::{self, DaemonHandle, Options};
use station_controller::demo::{self, Demo};
use station_controller::ledger::Store;
use station_controller::mqtt::MqttConfig;
use station_sim::runtime::{PlugRequest, SimConfig, SimHandle};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn mqtt(broker: &Mosquitto, station: &str) -> MqttConfig {
    let mut cfg = MqttConfig::plain("127.0.0.1", broker.port, station);
    cfg.dashboard_url = Some(format!("http://{station}.example:8080/"));
    cfg
}

async fn demo_with_mqtt(broker: &Mosquitto, station: &str, speed: f64, at: &str) -> Demo {
    let sc = demo::scenario("sunny-weekday").unwrap();
    let cfg = mqtt(broker, station);
    Demo::start_at(sc, 3, speed, Some(at), loopback(), move |c| c.mqtt = Some(cfg))
        .await
        .unwrap()
}

/// Every retained state topic the README documents, for a station with the reference devices.
fn documented_state_topics(root: &str) -> Vec<String> {
    let mut t: Vec<String> = [
        "status",
        "time",
        "grid/power_w",
        "grid/import_limit_w",
        "grid/fresh",
        "pv/power_w",
        "pv/limit_pct",
        "battery/soc_pct",
        "battery/soh_pct",
        "battery/power_w",
        "battery/setpoint_w",
        "battery/max_charge_w",
        "battery/max_discharge_w",
        "battery/alarms",
        "building/power_w",
        "vehicles/power_w",
        "reasons",
        "today/pv_kwh",
        "today/grid_import_kwh",
        "today/grid_export_kwh",
        "today/ev_kwh",
        "today/cost_cny",
        "today/co2_avoided_kg",
        "alarms",
        "summary",
    ]
    .iter()
    .map(|s| format!("{root}/{s}"))
    .collect();
    for f in [
        "state",
        "current_a",
        "setpoint_a",
        "power_w",
        "mode",
        "session_kwh",
    ] {
        t.push(format!("{root}/chargers/charger-1/{f}"));
    }
    for d in ["pv", "battery", "grid-meter", "building-meter", "charger-1"] {
        t.push(format!("{root}/devices/{d}/link"));
    }
    t
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_publishes_the_documented_tree_and_home_assistant_discovery() {
    let broker = Mosquitto::start_new();
    let probe = Probe::connect(broker.port, "tree-probe", true, &["station/#", "homeassistant/#"]).await;
    let d = demo_with_mqtt(&broker, "dealer-1", 60.0, "11:00").await;
    let root = "station/dealer-1";

    let wanted = documented_state_topics(root);
    let missing = probe
        .until("every documented topic", WAIT, |s| {
            let missing: Vec<&String> = wanted.iter().filter(|t| !s.last.contains_key(*t)).collect();
            missing.is_empty().then_some(())
        })
        .await;
    let _ = missing;
    let seen = probe.seen();
    assert_eq!(seen.last[&format!("{root}/status")], "online");
    for t in ["grid/power_w", "pv/power_w", "battery/soc_pct", "today/pv_kwh"] {
        let v = &seen.last[&format!("{root}/{t}")];
        assert!(v.parse::<f64>().is_ok(), "{t} is a plain number: {v:?}");
    }
    assert_eq!(seen.last[&format!("{root}/devices/pv/link")], "online");
    assert_eq!(seen.last[&format!("{root}/chargers/charger-1/mode")], "fast");
    let summary = json(&seen.last[&format!("{root}/summary")]);
    assert_eq!(summary["station"], "dealer-1");
    assert_eq!(summary["dashboard"], "http://dealer-1.example:8080/");
    assert!(summary["soc_pct"].is_number() && summary["online_since"].is_string());
    assert!(json(&seen.last[&format!("{root}/reasons")]).is_array());

    check_discovery(&seen.last, root);

    // Home Assistant restarts: discovery is sent again.
    let topic = "homeassistant/sensor/dealer-1/grid_power/config";
    let before = seen.counts[topic];
    probe.publish("homeassistant/status", "online").await;
    probe
        .until("discovery sent again", WAIT, |s| (s.counts[topic] > before).then_some(()))
        .await;

    // A clean stop says offline (retained).
    d.shutdown().await;
    probe
        .until("status offline", WAIT, |s| {
            (s.last.get(&format!("{root}/status")).map(String::as_str) == Some("offline")).then_some(())
        })
        .await;
}

fn check_discovery(last: &BTreeMap<String, String>, root: &str) {
    let config = |component: &str, object: &str| {
        let topic = format!("homeassistant/{component}/dealer-1/{object}/config");
        json(last.get(&topic).unwrap_or_else(|| panic!("no discovery on {topic}")))
    };
    let grid = config("sensor", "grid_power");
    assert_eq!(grid["device_class"], "power");
    assert_eq!(grid["unit_of_measurement"], "W");
    assert_eq!(grid["state_topic"], format!("{root}/grid/power_w"));
    assert_eq!(grid["availability_topic"], format!("{root}/status"));
    assert_eq!(grid["device"]["identifiers"][0], "station-controller_dealer-1");
    let pv_today = config("sensor", "pv_energy_today");
    assert_eq!(pv_today["device_class"], "energy");
    assert_eq!(pv_today["unit_of_measurement"], "kWh");
    assert_eq!(pv_today["state_class"], "total_increasing");
    let soc = config("sensor", "battery_soc");
    assert_eq!(soc["device_class"], "battery");
    assert_eq!(soc["state_topic"], format!("{root}/battery/soc_pct"));
    let soh = config("sensor", "battery_soh");
    assert_eq!(soh["state_topic"], format!("{root}/battery/soh_pct"));
    let mode = config("select", "charger-1_mode");
    assert_eq!(mode["command_topic"], format!("{root}/chargers/charger-1/mode/set"));
    assert_eq!(mode["options"], serde_json::json!(["fast", "solar", "min_solar"]));
    let link = config("binary_sensor", "battery_link");
    assert_eq!(link["device_class"], "connectivity");
    assert_eq!(link["state_topic"], format!("{root}/devices/battery/link"));
    // Every entity points at a topic the daemon really publishes.
    for (topic, payload) in last.iter().filter(|(t, _)| t.starts_with("homeassistant/")) {
        let body = json(payload);
        let state = body["state_topic"].as_str().unwrap_or_else(|| panic!("{topic}: no state_topic"));
        assert!(last.contains_key(state), "{topic} reads {state}, which is never published");
        assert_eq!(body["device"], grid["device"], "{topic}: one HA device per station");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_command_over_mqtt_changes_the_charger_mode_and_an_unknown_one_is_answered_with_the_reason() {
    let broker = Mosquitto::start_new();
    let probe = Probe::connect(broker.port, "command-probe", true, &["station/#"]).await;
    let d = demo_with_mqtt(&broker, "dealer-2", 60.0, "11:00").await;
    let root = "station/dealer-2";
    probe
        .until("online", WAIT, |s| s.last.contains_key(&format!("{root}/chargers/charger-3/mode")).then_some(()))
        .await;

    probe.publish(&format!("{root}/chargers/charger-3/mode/set"), "solar").await;
    let result = probe
        .until("the mode result", WAIT, |s| s.last.get(&format!("{root}/chargers/charger-3/mode/result")).cloned())
        .await;
    let r = json(&result);
    assert_eq!(r["accepted"], true, "{r}");
    assert_eq!(r["mode"], "solar");
    probe
        .until("the new mode in the tree", WAIT, |s| {
            (s.last.get(&format!("{root}/chargers/charger-3/mode")).map(String::as_str) == Some("solar")).then_some(())
        })
        .await;
    let status = d.daemon.shared.status().unwrap();
    assert_eq!(status.chargers.iter().find(|c| c.id == "charger-3").unwrap().mode, "solar");

    probe.publish(&format!("{root}/battery/power/set"), "5000").await;
    let r = json(
        &probe
            .until("the unknown command's result", WAIT, |s| s.last.get(&format!("{root}/battery/power/result")).cloned())
            .await,
    );
    assert_eq!(r["accepted"], false);
    assert!(r["reason"].as_str().unwrap().contains("unknown command"), "{r}");

    probe.publish(&format!("{root}/chargers/charger-1/mode/set"), "turbo").await;
    let r = json(
        &probe
            .until("the bad mode's result", WAIT, |s| s.last.get(&format!("{root}/chargers/charger-1/mode/result")).cloned())
            .await,
    );
    assert_eq!(r["accepted"], false);
    assert!(r["reason"].as_str().unwrap().contains("\"turbo\""), "{r}");
    let status = d.daemon.shared.status().unwrap();
    assert_eq!(status.chargers.iter().find(|c| c.id == "charger-1").unwrap().mode, "fast");
    d.shutdown().await;
}

//! MQTT fleet telemetry against a real Mosquitto started by the test: the daemon (in process,
//! against the simulator) publishes the documented topic tree and Home Assistant discovery,
//! takes commands, and delivers every energy record exactly once by sequence number through a
//! broker outage and a daemon restart.

// Test code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

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
use support::mosquitto::Mosquitto;
use support::mqtt_probe::{self, Probe};
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
    Demo::start_at(sc, 3, speed, Some(at), loopback(), move |c| {
        c.mqtt = Some(cfg)
    })
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

/// The commented `[mqtt]` example of config/station.toml, uncommented, with its two files
/// pointed at `creds` and `ca`.
fn mqtt_example(creds: &Path, ca: &Path) -> String {
    let text = std::fs::read_to_string("config/station.toml").unwrap();
    let from = text
        .find("# [mqtt]")
        .expect("config/station.toml has a commented [mqtt] example");
    text[from..]
        .lines()
        .map_while(|l| l.strip_prefix("# "))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "/etc/stationd/mqtt.credentials",
            &creds.display().to_string(),
        )
        .replace("/etc/stationd/mqtt-ca.pem", &ca.display().to_string())
}

#[test]
fn the_documented_mqtt_example_validates_and_reads_its_credentials_file() {
    let scratch = Scratch::new("config-example");
    let (creds, ca) = (scratch.file("mqtt.credentials"), scratch.file("ca.pem"));
    std::fs::write(&creds, "dealer-001\ns3cret pass\n").unwrap();
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let base = std::fs::read_to_string("config/station.toml").unwrap();
    let text = format!("{base}\n{}\n", mqtt_example(&creds, &ca));
    let raw = station_controller::config::parse("station.toml", &text, Vec::new()).unwrap();
    let cfg = raw.validate().unwrap().mqtt.expect("an [mqtt] section");
    assert_eq!((cfg.host.as_str(), cfg.port), ("broker.example.net", 8883));
    assert_eq!(cfg.root(), "station/dealer-001");
    let login = cfg.credentials.as_ref().unwrap();
    assert_eq!(
        (login.user.as_str(), login.password.as_str()),
        ("dealer-001", "s3cret pass")
    );
    assert!(cfg.tls_ca.is_some());
    assert!(
        !format!("{cfg:?}").contains("s3cret"),
        "the password never shows in Debug output"
    );
}

#[test]
fn every_problem_of_a_bad_mqtt_section_is_named_by_its_key() {
    let base = std::fs::read_to_string("config/station.toml").unwrap();
    let text = format!(
        "{base}\n[mqtt]\nurl = \"mqtts://broker\"\nstation_id = \"dealer/1\"\nprefix = \"a/#\"\n\
         state_interval_s = 0\ncredentials_file = \"/nonexistent/creds\"\n"
    );
    let raw = station_controller::config::parse("station.toml", &text, Vec::new()).unwrap();
    let issues = raw.validate().unwrap_err().to_string();
    for key in [
        "mqtt.station_id:",
        "mqtt.prefix:",
        "mqtt.state_interval_s: must be within [1, 60] (got 0)",
        "mqtt.credentials_file: cannot read /nonexistent/creds",
        "mqtt.ca_file: required with an mqtts:// url",
    ] {
        assert!(issues.contains(key), "{key} missing in:\n{issues}");
    }
    let unknown = format!("{base}\n[mqtt]\nurl = \"mqtt://b\"\nstation_id = \"x\"\nqos = 2\n");
    let err = station_controller::config::parse("station.toml", &unknown, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("qos"), "{err}");
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (installed by .ci/run)"]
async fn the_daemon_publishes_the_documented_tree_and_home_assistant_discovery() {
    let broker = Mosquitto::start_new();
    let probe = Probe::connect(
        broker.port,
        "tree-probe",
        true,
        &["station/#", "homeassistant/#"],
    )
    .await;
    let d = demo_with_mqtt(&broker, "dealer-1", 60.0, "11:00").await;
    let root = "station/dealer-1";

    let wanted = documented_state_topics(root);
    probe
        .until("every documented topic", WAIT, |s| {
            let missing: Vec<&String> =
                wanted.iter().filter(|t| !s.last.contains_key(*t)).collect();
            missing.is_empty().then_some(())
        })
        .await;
    let seen = probe.seen();
    assert_eq!(seen.last[&format!("{root}/status")], "online");
    for t in [
        "grid/power_w",
        "pv/power_w",
        "battery/soc_pct",
        "today/pv_kwh",
    ] {
        let v = &seen.last[&format!("{root}/{t}")];
        assert!(v.parse::<f64>().is_ok(), "{t} is a plain number: {v:?}");
    }
    assert_eq!(seen.last[&format!("{root}/devices/pv/link")], "online");
    assert_eq!(
        seen.last[&format!("{root}/chargers/charger-1/mode")],
        "fast"
    );
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
        .until("discovery sent again", WAIT, |s| {
            (s.counts[topic] > before).then_some(())
        })
        .await;

    // A clean stop says offline (retained).
    d.shutdown().await;
    probe
        .until("status offline", WAIT, |s| {
            (s.last.get(&format!("{root}/status")).map(String::as_str) == Some("offline"))
                .then_some(())
        })
        .await;
}

fn check_discovery(last: &BTreeMap<String, String>, root: &str) {
    let config = |component: &str, object: &str| {
        let topic = format!("homeassistant/{component}/dealer-1/{object}/config");
        json(
            last.get(&topic)
                .unwrap_or_else(|| panic!("no discovery on {topic}")),
        )
    };
    let grid = config("sensor", "grid_power");
    assert_eq!(grid["device_class"], "power");
    assert_eq!(grid["unit_of_measurement"], "W");
    assert_eq!(grid["state_topic"], format!("{root}/grid/power_w"));
    assert_eq!(grid["availability_topic"], format!("{root}/status"));
    assert_eq!(
        grid["device"]["identifiers"][0],
        "station-controller_dealer-1"
    );
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
    assert_eq!(
        mode["command_topic"],
        format!("{root}/chargers/charger-1/mode/set")
    );
    assert_eq!(
        mode["options"],
        serde_json::json!(["fast", "solar", "min_solar"])
    );
    let link = config("binary_sensor", "battery_link");
    assert_eq!(link["device_class"], "connectivity");
    assert_eq!(link["state_topic"], format!("{root}/devices/battery/link"));
    // Every entity points at a topic the daemon really publishes.
    for (topic, payload) in last.iter().filter(|(t, _)| t.starts_with("homeassistant/")) {
        let body = json(payload);
        let state = body["state_topic"]
            .as_str()
            .unwrap_or_else(|| panic!("{topic}: no state_topic"));
        assert!(
            last.contains_key(state),
            "{topic} reads {state}, which is never published"
        );
        assert_eq!(
            body["device"], grid["device"],
            "{topic}: one HA device per station"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (installed by .ci/run)"]
async fn a_mode_command_over_mqtt_changes_the_charger_mode_and_an_unknown_one_is_answered_with_the_reason(
) {
    let broker = Mosquitto::start_new();
    let probe = Probe::connect(broker.port, "command-probe", true, &["station/#"]).await;
    let d = demo_with_mqtt(&broker, "dealer-2", 60.0, "11:00").await;
    let root = "station/dealer-2";
    probe
        .until("online", WAIT, |s| {
            s.last
                .contains_key(&format!("{root}/chargers/charger-3/mode"))
                .then_some(())
        })
        .await;

    probe
        .publish(&format!("{root}/chargers/charger-3/mode/set"), "solar")
        .await;
    let result = probe
        .until("the mode result", WAIT, |s| {
            s.last
                .get(&format!("{root}/chargers/charger-3/mode/result"))
                .cloned()
        })
        .await;
    let r = json(&result);
    assert_eq!(r["accepted"], true, "{r}");
    assert_eq!(r["mode"], "solar");
    probe
        .until("the new mode in the tree", WAIT, |s| {
            (s.last
                .get(&format!("{root}/chargers/charger-3/mode"))
                .map(String::as_str)
                == Some("solar"))
            .then_some(())
        })
        .await;
    let status = d.daemon.shared.status().unwrap();
    assert_eq!(
        status
            .chargers
            .iter()
            .find(|c| c.id == "charger-3")
            .unwrap()
            .mode,
        "solar"
    );

    probe
        .publish(&format!("{root}/battery/power/set"), "5000")
        .await;
    let r = json(
        &probe
            .until("the unknown command's result", WAIT, |s| {
                s.last.get(&format!("{root}/battery/power/result")).cloned()
            })
            .await,
    );
    assert_eq!(r["accepted"], false);
    assert!(
        r["reason"].as_str().unwrap().contains("unknown command"),
        "{r}"
    );

    probe
        .publish(&format!("{root}/chargers/charger-1/mode/set"), "turbo")
        .await;
    let r = json(
        &probe
            .until("the bad mode's result", WAIT, |s| {
                s.last
                    .get(&format!("{root}/chargers/charger-1/mode/result"))
                    .cloned()
            })
            .await,
    );
    assert_eq!(r["accepted"], false);
    assert!(r["reason"].as_str().unwrap().contains("\"turbo\""), "{r}");
    let status = d.daemon.shared.status().unwrap();
    assert_eq!(
        status
            .chargers
            .iter()
            .find(|c| c.id == "charger-1")
            .unwrap()
            .mode,
        "fast"
    );
    d.shutdown().await;
}

struct Station {
    daemon: DaemonHandle,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Station {
    /// The daemon against `sim` with a SQLite ledger at `ledger` and MQTT to `broker`.
    async fn start(sim: &SimHandle, speed: f64, broker: &Mosquitto, ledger: &Path) -> Station {
        let mut config: StationConfig = demo::config_for(&sim.addrs).unwrap();
        config.mqtt = Some(mqtt(broker, "dealer-9"));
        // Fewer, longer cycles keep a debug build on time at a high simulator speed.
        config.policy.cycle_s = 5.0;
        let clock = Arc::new(FollowClock::new(sim.time_source(), speed));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let options = Options {
            ledger_path: Some(ledger.to_path_buf()),
            api_listen: Some(loopback()),
            ..Options::default()
        };
        let daemon = daemon::start(config, clock, options, cancel.clone(), &tracker)
            .await
            .unwrap();
        Station {
            daemon,
            cancel,
            tracker,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn run_for(sim: &SimHandle, secs: i64) {
    let end = sim.now() + chrono::Duration::seconds(secs);
    let start = Instant::now();
    while sim.now() < end {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "simulated time stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("stationd-mqtt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn plug(charger: &str, stay_h: f64) -> PlugRequest {
    PlugRequest {
        charger: charger.to_string(),
        battery_kwh: 60.0,
        soc_pct: 30.0,
        target_soc_pct: 90.0,
        stay_h,
        onboard_a: 16.0,
        phases: 3,
    }
}

/// The energy records the sink received, by sequence number, with how often each arrived.
fn records(seen: &mqtt_probe::Seen) -> BTreeMap<i64, (Value, usize)> {
    let mut out: BTreeMap<i64, (Value, usize)> = BTreeMap::new();
    for (topic, payload) in &seen.all {
        if !topic.contains("/energy/") {
            continue;
        }
        let v = json(payload);
        let seq = v["seq"].as_i64().unwrap();
        let e = out.entry(seq).or_insert((v.clone(), 0));
        assert_eq!(e.0, v, "seq {seq} arrived twice with different contents");
        e.1 += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (installed by .ci/run)"]
async fn every_energy_record_arrives_exactly_once_by_sequence_through_a_broker_outage_and_a_daemon_restart(
) {
    let speed = 600.0;
    let mut broker = Mosquitto::start_new();
    // A consumer with a persistent session, like Telegraf with persistent_session = true.
    let sink = Probe::connect(broker.port, "energy-sink", false, &["station/+/energy/#"]).await;
    let sc = demo::scenario("sunny-weekday").unwrap();
    let sim = station_sim::runtime::spawn(SimConfig {
        start: sc.resolve_local("07:00"),
        ..SimConfig::ephemeral(sc, 5, speed)
    })
    .await
    .unwrap();
    let scratch = Scratch::new("outage");
    let ledger = scratch.file("ledger.db");
    let station = Station::start(&sim, speed, &broker, &ledger).await;
    for (charger, stay_h) in [("charger-7", 0.4), ("charger-8", 1.2)] {
        let _ = sim.plug(&plug(charger, stay_h));
    }
    run_for(&sim, 3600).await;
    sink.until("records before the outage", WAIT, |s| {
        s.all
            .iter()
            .any(|(t, _)| t.ends_with("/energy/bucket"))
            .then_some(())
    })
    .await;

    broker.stop();
    let outage_from = sim.now();
    run_for(&sim, 3600).await;
    let cycles = station.daemon.shared.status().unwrap().cycle;
    station.stop().await;
    let station = Station::start(&sim, speed, &broker, &ledger).await;
    run_for(&sim, 5400).await;
    let outage_to = sim.now();
    let status = station.daemon.shared.status().unwrap();
    assert!(
        status.time > outage_to - chrono::Duration::seconds(60),
        "the control loop kept running"
    );
    assert!(
        cycles > 100,
        "the first daemon cycled through the outage ({cycles} cycles)"
    );
    broker.start();

    let (got, last_seq) = catch_up(&sink, &ledger).await;
    station.stop().await;
    sim.shutdown().await;
    check_exactly_once(&got, last_seq, (outage_from, outage_to), 8);
}

/// Wait until the ledger has nothing unsent and the sink holds the last queued record; check
/// that no bucket of the ledger up to the newest published one was skipped.
async fn catch_up(sink: &Probe, ledger: &Path) -> (BTreeMap<i64, (Value, usize)>, i64) {
    let store = Store::open(ledger).unwrap();
    let (got, last_seq) = sink
        .until(
            "every queued record at the sink",
            Duration::from_secs(120),
            |seen| {
                let got = records(seen);
                let last_seq = store.outbox_last_seq().unwrap();
                let caught_up = store.outbox_unsent().unwrap() == 0
                    && got.keys().next_back() == Some(&last_seq);
                caught_up.then_some((got, last_seq))
            },
        )
        .await;
    let published: std::collections::BTreeSet<String> = got
        .values()
        .filter_map(|(v, _)| v["bucket"]["start"].as_str().map(str::to_string))
        .collect();
    let newest = published
        .iter()
        .next_back()
        .cloned()
        .expect("a published bucket");
    let (from, to) = (
        chrono::DateTime::<chrono::Utc>::MIN_UTC,
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
    );
    for b in store.buckets(from, to).unwrap() {
        let start = serde_json::to_value(b.start).unwrap();
        let start = start.as_str().unwrap();
        if start <= newest.as_str() {
            assert!(published.contains(start), "bucket {start} never published");
        }
    }
    (got, last_seq)
}

fn check_exactly_once(
    got: &BTreeMap<i64, (Value, usize)>,
    last_seq: i64,
    (outage_from, outage_to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    min_in_outage: usize,
) {
    let seqs: Vec<i64> = got.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=last_seq).collect::<Vec<_>>(),
        "no gap, nothing extra"
    );
    let mut keys = std::collections::BTreeSet::new();
    let (mut buckets, mut sessions, mut in_outage) = (0, 0, 0usize);
    for (v, _) in got.values() {
        let key = match v["kind"].as_str().unwrap() {
            "bucket" => {
                buckets += 1;
                let start: chrono::DateTime<chrono::Utc> =
                    v["bucket"]["start"].as_str().unwrap().parse().unwrap();
                if start >= outage_from && start < outage_to {
                    in_outage += 1;
                }
                format!("bucket {start}")
            }
            "session" => {
                sessions += 1;
                assert!(
                    v["session"]["end"].is_string(),
                    "only finished sessions: {v}"
                );
                format!(
                    "session {} {}",
                    v["session"]["charger_id"], v["session"]["start"]
                )
            }
            other => panic!("unknown kind {other}"),
        };
        assert!(keys.insert(key.clone()), "{key} has two sequence numbers");
    }
    let duplicates: usize = got.values().map(|(_, n)| n - 1).sum();
    println!("records: {buckets} buckets ({in_outage} from the outage), {sessions} sessions, {duplicates} duplicate deliveries");
    assert!(
        in_outage >= min_in_outage,
        "buckets of the outage: {in_outage}"
    );
    assert!(sessions >= 1, "a finished session");
}

const CHILD_LEDGER: &str = "STATION_MQTT_CHILD_LEDGER";
const CHILD_BROKER_PORT: &str = "STATION_MQTT_CHILD_BROKER_PORT";

/// Not a test: the body of the child process that
/// `energy_records_queued_before_a_kill_9_are_sent_by_the_next_daemon` kills. It runs the
/// simulator at 600x from 07:00 with a daemon publishing to the broker, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper run as a child process"]
async fn child_runs_a_station_until_killed() {
    let (Some(ledger), Some(port)) = (
        std::env::var_os(CHILD_LEDGER),
        std::env::var_os(CHILD_BROKER_PORT),
    ) else {
        return;
    };
    let port: u16 = port.to_str().unwrap().parse().unwrap();
    let broker = Mosquitto::attach(port);
    let sc = demo::scenario("sunny-weekday").unwrap();
    let sim = station_sim::runtime::spawn(SimConfig {
        start: sc.resolve_local("07:00"),
        ..SimConfig::ephemeral(sc, 5, 600.0)
    })
    .await
    .unwrap();
    let _station = Station::start(&sim, 600.0, &broker, Path::new(&ledger)).await;
    let _ = sim.plug(&plug("charger-7", 0.4));
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (installed by .ci/run)"]
async fn energy_records_queued_before_a_kill_9_are_sent_by_the_next_daemon() {
    let mut broker = Mosquitto::start_new();
    let sink = Probe::connect(
        broker.port,
        "energy-sink-kill",
        false,
        &["station/+/energy/#"],
    )
    .await;
    let scratch = Scratch::new("kill9");
    let ledger = scratch.file("ledger.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_runs_a_station_until_killed",
            "--test-threads=1",
        ])
        .env(CHILD_LEDGER, &ledger)
        .env(CHILD_BROKER_PORT, broker.port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let queued = |n: i64| {
        let ledger = ledger.clone();
        move || {
            Store::open(&ledger)
                .ok()
                .and_then(|s| s.outbox_last_seq().ok())
                .filter(|q| *q >= n)
        }
    };
    let before = wait_for("records queued by the child", queued(4)).await;
    sink.until("records before the outage", WAIT, |s| {
        (!s.all.is_empty()).then_some(())
    })
    .await;
    broker.stop();
    let newest = |ledger: &Path| {
        Store::open(ledger)
            .unwrap()
            .buckets(
                chrono::DateTime::<chrono::Utc>::MIN_UTC,
                chrono::DateTime::<chrono::Utc>::MAX_UTC,
            )
            .unwrap()
            .last()
            .unwrap()
            .start
    };
    let outage_from = newest(&ledger);
    wait_for("records queued during the outage", queued(before + 4)).await;
    assert!(Store::open(&ledger).unwrap().outbox_unsent().unwrap() >= 4);
    child.kill().unwrap(); // SIGKILL: no shutdown, no final flush
    child.wait().unwrap();

    // The next daemon starts half an hour (simulated) after the child's last bucket.
    let speed = 600.0;
    let sc = demo::scenario("sunny-weekday").unwrap();
    let sim = station_sim::runtime::spawn(SimConfig {
        start: Some(newest(&ledger) + chrono::Duration::minutes(30)),
        ..SimConfig::ephemeral(sc, 6, speed)
    })
    .await
    .unwrap();
    let station = Station::start(&sim, speed, &broker, &ledger).await;
    run_for(&sim, 3600).await;
    let outage_to = sim.now();
    broker.start();
    let (got, last_seq) = catch_up(&sink, &ledger).await;
    station.stop().await;
    sim.shutdown().await;
    check_exactly_once(&got, last_seq, (outage_from, outage_to), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (installed by .ci/run)"]
async fn a_daemon_killed_with_sigkill_goes_offline_by_its_last_will() {
    let broker = Mosquitto::start_new();
    let probe = Probe::connect(
        broker.port,
        "will-probe",
        true,
        &["station/dealer-9/status"],
    )
    .await;
    let scratch = Scratch::new("will");
    let ledger = scratch.file("ledger.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_runs_a_station_until_killed",
            "--test-threads=1",
        ])
        .env(CHILD_LEDGER, &ledger)
        .env(CHILD_BROKER_PORT, broker.port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = |want: &'static str| {
        move |s: &mqtt_probe::Seen| {
            (s.last.get("station/dealer-9/status").map(String::as_str) == Some(want)).then_some(())
        }
    };
    probe
        .until("the child online", WAIT, status("online"))
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    probe.until("the last will", WAIT, status("offline")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto and openssl (installed by .ci/run)"]
async fn the_daemon_reaches_a_tls_broker_with_the_login_from_its_credentials_file() {
    let broker = Mosquitto::start_tls("dealer-5", "pa55 word");
    let scratch = Scratch::new("tls");
    let creds = scratch.file("mqtt.credentials");
    std::fs::write(&creds, "dealer-5\npa55 word\n").unwrap();
    let base = std::fs::read_to_string("config/station.toml").unwrap();
    let section = format!(
        "[mqtt]\nurl = \"mqtts://localhost:{}\"\nstation_id = \"dealer-5\"\n\
         credentials_file = \"{}\"\nca_file = \"{}\"\n",
        broker.port,
        creds.display(),
        broker.ca_file().display()
    );
    let raw = station_controller::config::parse(
        "station.toml",
        &format!("{base}\n{section}"),
        Vec::new(),
    )
    .unwrap();
    let mqtt_cfg = raw.validate().unwrap().mqtt.unwrap();
    let sc = demo::scenario("sunny-weekday").unwrap();
    let d = Demo::start_at(sc, 3, 60.0, Some("11:00"), loopback(), move |c| {
        c.mqtt = Some(mqtt_cfg)
    })
    .await
    .unwrap();
    // A subscriber over TLS with the same login sees the station online.
    let mut o = rumqttc::MqttOptions::new("tls-probe", "localhost", broker.port);
    o.set_credentials("dealer-5", "pa55 word");
    let ca = std::fs::read(broker.ca_file()).unwrap();
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls_client(&ca))),
    ));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 10);
    client
        .subscribe("station/dealer-5/status", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let ev = tokio::time::timeout(WAIT, eventloop.poll())
            .await
            .expect("TLS probe stalled");
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = ev {
            if p.payload.as_ref() == b"online" {
                break;
            }
        }
        assert!(
            start.elapsed() < WAIT,
            "no online status over TLS: {}",
            broker.log()
        );
    }
    d.shutdown().await;
}

fn tls_client(ca_pem: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after two minutes.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! The fleet view (`stationd fleet`) against a real Mosquitto started by the test: real daemons
//! (in process, against the simulator) and a hundred simulated stations publishing through the
//! daemon's MQTT code; `/api/fleet`, `/metrics` and the page in headless Chromium.

// Test code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use station_controller::clock::{Clock, SystemClock};
use station_controller::demo::{self, Demo};
use station_controller::fleet::{self, FleetOptions};
use station_controller::mqtt::MqttConfig;
use station_sim::faults::{FaultKindName, FaultRequest};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::mosquitto::Mosquitto;
use support::{browser, fleet_sim};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start_fleet(
    broker: &Mosquitto,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> SocketAddr {
    let options = FleetOptions {
        broker: broker.url(),
        listen: loopback(),
        prefix: "station".into(),
        credentials: None,
        ca_pem: None,
    };
    fleet::serve(options, cancel.clone(), tracker)
        .await
        .unwrap()
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Poll `/api/fleet` every 50 ms until `f` accepts it, or panic after `limit`.
async fn until_fleet(
    addr: SocketAddr,
    what: &str,
    limit: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let v = get_json(&format!("http://{addr}/api/fleet")).await;
        if f(&v) {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn station<'a>(fleet: &'a Value, id: &str) -> Option<&'a Value> {
    fleet["stations"].as_array()?.iter().find(|s| s["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto (installed by .ci/run)"]
async fn the_fleet_view_shows_daemons_online_with_their_alarms_and_offline_once_stopped() {
    let broker = Mosquitto::start_new();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let addr = start_fleet(&broker, &cancel, &tracker).await;
    let mut demos = Vec::new();
    for id in ["dealer-a", "dealer-b"] {
        let mut cfg = MqttConfig::plain("127.0.0.1", broker.port, id);
        cfg.dashboard_url = Some(format!("http://{id}.example:8080/"));
        let sc = demo::scenario("sunny-weekday").unwrap();
        let d = Demo::start_at(sc, 1, 60.0, Some("12:00"), loopback(), move |c| {
            c.mqtt = Some(cfg)
        })
        .await
        .unwrap();
        demos.push(d);
    }
    let v = until_fleet(addr, "two stations online", WAIT, |v| {
        ["dealer-a", "dealer-b"].iter().all(|id| {
            station(v, id).is_some_and(|s| s["online"] == true && s["summary"]["pv_w"].is_number())
        })
    })
    .await;
    let a = station(&v, "dealer-a").unwrap();
    assert_eq!(a["summary"]["dashboard"], "http://dealer-a.example:8080/");
    assert!(a["since"].is_string(), "{a}");
    assert!(a["summary"]["today"]["pv_kwh"].is_number() && a["summary"]["soc_pct"].is_number());

    // The PV inverter of dealer-b stops answering: an open alarm in the fleet.
    let fault = FaultRequest {
        device: "pv".into(),
        kind: FaultKindName::Offline,
        duration_s: None,
        latency_ms: None,
        code: None,
        point: None,
        value: None,
    };
    demos[1].sim.inject(&fault).unwrap();
    let v = until_fleet(addr, "dealer-b's alarm", WAIT, |v| {
        station(v, "dealer-b")
            .is_some_and(|s| s["alarms"].as_array().is_some_and(|a| !a.is_empty()))
    })
    .await;
    let alarm = &station(&v, "dealer-b").unwrap()["alarms"][0];
    assert_eq!(alarm["device"], "pv");
    assert!(
        alarm["kind"].as_str().unwrap().starts_with("device_"),
        "{alarm}"
    );
    assert!(v["open_alarms"].as_u64() >= Some(1), "{v}");

    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fleet_station_online{station=\"dealer-a\"} 1"),
        "{metrics}"
    );
    let open_b = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fleet_station_open_alarms{station=\"dealer-b\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(open_b >= Some(1.0), "{metrics}");
    assert!(
        metrics.contains("fleet_station_power_watts{station=\"dealer-a\",flow=\"pv\"}"),
        "{metrics}"
    );

    // dealer-a stops: offline, since its last summary.
    demos.remove(0).shutdown().await;
    let v = until_fleet(addr, "dealer-a offline", WAIT, |v| {
        station(v, "dealer-a").is_some_and(|s| s["online"] == false)
    })
    .await;
    let a = station(&v, "dealer-a").unwrap();
    assert_eq!(
        a["since"], a["summary"]["time"],
        "offline since it was last seen"
    );
    assert_eq!(
        (v["online"].as_u64(), v["offline"].as_u64()),
        (Some(1), Some(1))
    );
    for d in demos {
        d.shutdown().await;
    }
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mosquitto, chromium and chromium-driver (installed by .ci/run)"]
async fn the_fleet_page_lists_a_hundred_stations_two_of_them_offline() {
    let broker = Mosquitto::start_new();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let addr = start_fleet(&broker, &cancel, &tracker).await;
    let stations: Vec<_> = (1..=100)
        .map(|n| fleet_sim::SimStation::start(n, broker.port, &cancel, &tracker))
        .collect();
    let clock = SystemClock;
    let mut cycle = 0;
    let v = loop {
        cycle += 1;
        for s in &stations {
            s.cycle(clock.now(), cycle);
        }
        let v = get_json(&format!("http://{addr}/api/fleet")).await;
        if v["online"].as_u64() == Some(100) {
            break v;
        }
        assert!(
            cycle < 600,
            "100 stations not online after {cycle} rounds: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["count"].as_u64(), Some(100));
    for s in &stations[40..42] {
        s.cancel.cancel();
    }
    until_fleet(addr, "two stations offline", WAIT, |v| {
        v["offline"].as_u64() == Some(2)
    })
    .await;

    let page = browser::open_page(&format!("http://{addr}/")).await;
    page.wait_for_count("#stations-body tr[data-station]", 100, WAIT)
        .await;
    page.wait_for_text("#count-offline", WAIT, |t| t == "2")
        .await;
    assert_eq!(page.text("#count-online").await.as_deref(), Some("98"));
    assert_eq!(page.count("#stations-body .state-offline").await, 2);
    assert_eq!(page.count("#stations-body .state-online").await, 98);
    let offline_rows = page.texts("#stations-body tr.offline td:first-child").await;
    assert_eq!(offline_rows.len(), 2);
    assert!(
        offline_rows[0].starts_with("dealer-041"),
        "{offline_rows:?}"
    );
    assert_eq!(
        page.attr("#stations-body tr[data-station=dealer-001] a", "href")
            .await
            .as_deref(),
        Some("http://dealer-001.dealers.example:8080/")
    );
    let grid = page
        .text("#stations-body tr[data-station=dealer-001] td:nth-child(4)")
        .await
        .unwrap();
    assert!(grid.ends_with(" kW"), "grid cell {grid:?}");
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fleet.png");
    page.screenshot_full_page(&shot, 1440).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    page.close().await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

//! The real `stationd run` with profiled devices: a CHINT DTSU666 grid meter behind a
//! transparent RS485 gateway (with a dead device on the same bus), a Huawei SUN2000 inverter
//! and a Phoenix CHARX charger, each a hand-written pymodbus image, the rest of the station
//! from the simulator. The daemon reads them through their profiles into the same status as
//! the built-in drivers and writes their setpoints.

// Test code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use station_sim::runtime::SimConfig;
use station_sim::scenario::Scenario;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::peer::Peer;
use support::{free_port, station_file, until_async};
use toml::{Table, Value};

fn device<'a>(doc: &'a mut Table, id: &str) -> &'a mut Table {
    doc.get_mut("devices")
        .and_then(Value::as_table_mut)
        .and_then(|d| d.get_mut(id))
        .and_then(Value::as_table_mut)
        .unwrap_or_else(|| panic!("no device {id}"))
}

fn profiled(doc: &mut Table, id: &str, profile: &str, port: u16) {
    let d = device(doc, id);
    d.insert("host".into(), "127.0.0.1".into());
    d.insert("port".into(), i64::from(port).into());
    d.insert("profile".into(), profile.into());
    d.remove("revert_s");
    d.remove("validity_s");
}

/// The daemon child, killed when the test ends (also on a failed assertion).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn status(api: SocketAddr) -> Option<serde_json::Value> {
    let r = reqwest::get(format!("http://{api}/api/status"))
        .await
        .ok()?;
    r.status().is_success().then_some(())?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn the_daemon_runs_a_station_with_profiled_meter_inverter_and_charger() {
    let gateway = Peer::start("rs485_gateway.py").await;
    let inverter = Peer::start("huawei_sun2000.py").await;
    let charx = Peer::start("phoenix_charx.py").await;
    let sc = Scenario::reference();
    let start = sc.resolve_local("12:00");
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        ..SimConfig::ephemeral(sc, 11, 1.0)
    })
    .await
    .unwrap();

    let dir = std::env::temp_dir().join(format!("stationd-profiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config/profiles")).unwrap()
    {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join("profiles").join(p.file_name().unwrap())).unwrap();
    }
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut doc = station_file::for_sim(&sim.addrs, api);
    profiled(&mut doc, "grid-meter", "chint-dtsu666", gateway.port);
    device(&mut doc, "grid-meter").insert("transport".into(), "rtu-over-tcp".into());
    profiled(&mut doc, "pv", "huawei-sun2000", inverter.port);
    device(&mut doc, "pv").insert("rating_kw".into(), 10.into());
    profiled(&mut doc, "charger-1", "phoenix-charx-sec", charx.port);
    let path = dir.join("station.toml");
    station_file::write(&path, &doc);

    let check = Command::new(env!("CARGO_BIN_EXE_stationd"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let daemon = Command::new(env!("CARGO_BIN_EXE_stationd"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Running(daemon);
    let st = until_async(
        "profiled readings in the status",
        Duration::from_secs(30),
        async || {
            let s = status(api).await?;
            let charger = s["chargers"]
                .as_array()?
                .iter()
                .find(|c| c["id"] == "charger-1")?
                .clone();
            (s["grid"]["power_w"].as_f64()? == 4321.0
                && s["pv"]["power_w"].as_f64()? == 7123.0
                && charger["state"] == "C2")
                .then_some(s)
        },
    )
    .await;
    assert_eq!(st["pv"]["rating_w"].as_f64(), Some(10_000.0), "{st}");

    // The daemon writes the CHARX current setpoint (register 1301) every cycle; the value is
    // dispatch's (at most the 32 A rating).
    let mut link = station_controller::devices::link::Link::new(
        station_controller::devices::link::LinkConfig::new("127.0.0.1", charx.port, 1),
    );
    let written = until_async(
        "a current setpoint at 1301",
        Duration::from_secs(30),
        async || {
            let s = status(api).await?;
            let sp = s["chargers"]
                .as_array()?
                .iter()
                .find(|c| c["id"] == "charger-1")?["setpoint_a"]
                .as_f64()?;
            let regs = link.read_holding(1301, 1).await.ok()?;
            (f64::from(regs[0]) == sp.round()).then_some(regs[0])
        },
    )
    .await;
    assert!(written <= 32, "{written}");
    drop(daemon);
    sim.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

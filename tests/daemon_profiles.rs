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
use support::{free_port, station_file, until, until_async};
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

/// A station built entirely from profiled devices, each served by the simulator with its
/// profile's map: Huawei SUN2000 PV, Sungrow SH PCS, CHINT DTSU666 grid meter as RTU frames
/// through a transparent gateway, Eastron SDM630 building meter, eight Phoenix CHARX chargers.
/// The real `stationd run` must hold zero export (by limiting the Huawei through 40125) and the
/// import limit (with eight cars plugged in), judged on the simulator's truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_built_entirely_from_profiled_devices_holds_zero_export_and_the_import_limit() {
    use station_sim::wire::profile::{ProfileMap, ProfiledSpec};
    use std::sync::Arc;
    const IMPORT_LIMIT_KW: f64 = 60.0;
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/config/profiles");
    let map = |name: &str| {
        Arc::new(
            ProfileMap::load(&std::path::Path::new(profiles).join(format!("{name}.toml"))).unwrap(),
        )
    };
    let mut sc = Scenario::reference();
    sc.grid.import_limit_kw = IMPORT_LIMIT_KW;
    sc.grid.export_limit_kw = 0.0;
    let capacity_kwh = sc.battery.nameplate_kwh;
    let start = sc.resolve_local("12:00");
    let mut specs = vec![
        ProfiledSpec::tcp("pv", map("huawei-sun2000")),
        ProfiledSpec::tcp("battery", map("sungrow-sh")),
        ProfiledSpec::rtu_over_tcp("grid-meter", map("chint-dtsu666"), 1),
        ProfiledSpec::tcp("building-meter", map("eastron-sdm630")),
    ];
    let chargers = sc.chargers.count;
    specs.extend(
        (1..=chargers)
            .map(|i| ProfiledSpec::tcp(&format!("charger-{i}"), map("phoenix-charx-sec"))),
    );
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        profiles: specs,
        ..SimConfig::ephemeral(sc, 11, 1.0)
    })
    .await
    .unwrap();

    let dir = std::env::temp_dir().join(format!("stationd-all-profiled-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    for entry in std::fs::read_dir(profiles).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join("profiles").join(p.file_name().unwrap())).unwrap();
    }
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut doc = station_file::for_sim(&sim.addrs, api);
    for (id, profile) in [
        ("pv", "huawei-sun2000"),
        ("battery", "sungrow-sh"),
        ("grid-meter", "chint-dtsu666"),
        ("building-meter", "eastron-sdm630"),
    ] {
        let port = sim.addrs.device(id).unwrap().port();
        profiled(&mut doc, id, profile, port);
    }
    device(&mut doc, "grid-meter").insert("transport".into(), "rtu-over-tcp".into());
    device(&mut doc, "grid-meter").insert("baud".into(), 9600.into());
    // A Sungrow SH hybrid is a 10 kW PCS; it does not report its battery's capacity.
    device(&mut doc, "battery").insert("rating_kw".into(), 10.into());
    device(&mut doc, "battery").insert("capacity_kwh".into(), capacity_kwh.into());
    for i in 1..=chargers {
        let id = format!("charger-{i}");
        let port = sim.addrs.device(&id).unwrap().port();
        profiled(&mut doc, &id, "phoenix-charx-sec", port);
    }
    station_file::set(&mut doc, "policy.grid.import_limit_kw", IMPORT_LIMIT_KW);
    station_file::set(&mut doc, "policy.grid.export_limit_kw", 0.0);
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

    // Every profiled device online in the daemon's status, read through its profile.
    let st = until_async(
        "every profiled device online",
        Duration::from_secs(60),
        async || {
            let s = status(api).await?;
            let devices = s["devices"].as_array()?;
            (devices.len() == 4 + chargers
                && devices
                    .iter()
                    .all(|d| d["link"] == "online" || d["link"] == "degraded"))
            .then_some(s)
        },
    )
    .await;
    // A CHARX keeps its current until rewritten: degraded, and the reason says so in words.
    let charx = until_async(
        "the CHARX's fallback warning",
        Duration::from_secs(30),
        async || {
            let s = status(api).await?;
            let c = s["devices"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == "charger-1")?
                .clone();
            c["warning"].is_string().then_some(c)
        },
    )
    .await;
    let warning = charx["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("no fallback of its own") && !warning.contains("4294967295"),
        "{charx}"
    );
    let truth = sim.truth();
    let grid_seen = st["grid"]["power_w"].as_f64().unwrap();
    assert!(
        (grid_seen - truth.grid.power_w).abs() < 30_000.0,
        "the daemon's grid {grid_seen} W is far from the meter's {} W: {st}",
        truth.grid.power_w
    );

    // Zero export: at noon the PV exceeds the building and the 10 kW PCS, so the Huawei must
    // be limited. Let the first limit ramp in, then measure.
    until("the Huawei limited", Duration::from_secs(60), || {
        let t = sim.truth();
        (t.pv.limit_enabled && t.pv.limit_pct < 99.0 && t.grid.power_w > -2_000.0).then_some(())
    })
    .await;
    let before = sim.truth().kpis;
    let mut max_export_w: f64 = 0.0;
    let end = sim.now() + chrono::Duration::seconds(60);
    while sim.now() < end {
        max_export_w = max_export_w.max(-sim.truth().grid.power_w);
        // Sampling interval while the station runs (the loop ends on simulated time).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = sim.truth().kpis;
    let exported_kwh = after.grid_export_kwh - before.grid_export_kwh;
    assert!(
        exported_kwh < 0.05,
        "exported {exported_kwh} kWh in a minute (peak {max_export_w} W)"
    );
    assert!(
        sim.truth().pv.power_w > 20_000.0,
        "the PV was switched off instead of limited"
    );

    // Import limit: eight cars want 176 kW on top of the building.
    for i in 1..=chargers {
        sim.plug(&support::plug(&format!("charger-{i}"))).unwrap();
    }
    until("the cars charging", Duration::from_secs(60), || {
        let t = sim.truth();
        (t.chargers.iter().map(|c| c.power_w).sum::<f64>() > 20_000.0).then_some(())
    })
    .await;
    let before = sim.truth().kpis;
    let mut max_import_w: f64 = 0.0;
    let mut min_charging_w = f64::MAX;
    let end = sim.now() + chrono::Duration::seconds(60);
    while sim.now() < end {
        let t = sim.truth();
        max_import_w = max_import_w.max(t.grid.power_w);
        min_charging_w = min_charging_w.min(t.chargers.iter().map(|c| c.power_w).sum());
        // Sampling interval while the station runs (the loop ends on simulated time).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = sim.truth().kpis;
    let exceeded = after.import_limit_exceeded_s - before.import_limit_exceeded_s;
    eprintln!(
        "zero export: {exported_kwh:.4} kWh exported, peak {max_export_w:.0} W; \
         import: peak {max_import_w:.0} W, {exceeded} s over, cars at least {min_charging_w:.0} W"
    );
    assert!(exceeded <= 2.0, "import limit exceeded for {exceeded} s");
    assert!(
        max_import_w <= IMPORT_LIMIT_KW * 1000.0 * 1.05,
        "import reached {max_import_w} W"
    );
    assert!(
        min_charging_w > 10_000.0,
        "the cars were stopped instead of limited ({min_charging_w} W)"
    );
    assert!(after.grid_export_kwh - before.grid_export_kwh < 0.05);

    // A DTSU666 that reports an absurd power (5 GW) is refused point by point: the grid meter
    // shows degraded with the point and register named, and no car is pushed above the limit.
    sim.inject(&station_sim::faults::FaultRequest {
        device: "grid-meter".into(),
        kind: station_sim::faults::FaultKindName::BadValue,
        duration_s: None,
        latency_ms: None,
        code: None,
        point: Some("power_w".into()),
        value: Some(station_sim::faults::FaultValue::Number(5.0e9)),
    })
    .unwrap();
    let meter = until_async(
        "the grid meter degraded",
        Duration::from_secs(30),
        async || {
            let s = status(api).await?;
            let m = s["devices"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == "grid-meter")?
                .clone();
            (m["link"] == "degraded").then_some(m)
        },
    )
    .await;
    let error = meter["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("power_w") && error.contains("8210") && error.contains("plausible range"),
        "{meter}"
    );
    drop(daemon);
    sim.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Native serial end to end: the simulator serves its grid meter as a CHINT DTSU666 in RTU
/// frames on one end of a socat pseudo-terminal pair; the real `stationd` opens the other end
/// as `transport = "rtu"` (tokio-serial) and reads the meter's truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs socat (installed by .ci/run)"]
async fn the_daemon_reads_a_simulated_dtsu666_on_a_native_serial_port() {
    use station_sim::wire::profile::{ProfileMap, ProfiledSpec};
    use std::sync::Arc;
    let dir = std::env::temp_dir().join(format!("stationd-serial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    let pair = support::serial::PtyPair::open(&dir, "tty").await;
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/config/profiles");
    let map = ProfileMap::load(&std::path::Path::new(profiles).join("chint-dtsu666.toml")).unwrap();
    let sc = Scenario::reference();
    let start = sc.resolve_local("12:00");
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        profiles: vec![ProfiledSpec::rtu_serial(
            "grid-meter",
            Arc::new(map),
            1,
            &a.display().to_string(),
        )],
        ..SimConfig::ephemeral(sc, 11, 1.0)
    })
    .await
    .unwrap();
    for entry in std::fs::read_dir(profiles).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join("profiles").join(p.file_name().unwrap())).unwrap();
    }
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut doc = station_file::for_sim(&sim.addrs, api);
    let meter = device(&mut doc, "grid-meter");
    meter.insert("host".into(), b.display().to_string().into());
    meter.remove("port");
    meter.insert("profile".into(), "chint-dtsu666".into());
    meter.insert("transport".into(), "rtu".into());
    meter.insert("baud".into(), 9600.into());
    let path = dir.join("station.toml");
    station_file::write(&path, &doc);
    let daemon = Running(
        Command::new(env!("CARGO_BIN_EXE_stationd"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (seen, truth) = until_async(
        "the grid power read over the serial port",
        Duration::from_secs(40),
        async || {
            let s = status(api).await?;
            let m = s["devices"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == "grid-meter")?
                .clone();
            let seen = s["grid"]["power_w"].as_f64()?;
            let truth = sim.truth().grid.power_w;
            (m["link"] == "online" && (seen - truth).abs() < 15_000.0).then_some((seen, truth))
        },
    )
    .await;
    eprintln!("grid power over native serial: daemon {seen} W, simulator {truth} W");
    drop(daemon);
    sim.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Native serial control end to end: the simulator serves its grid meter as a CHINT DTSU666
/// and its battery PCS as a Sungrow SH, each in RTU frames on its own socat pseudo-terminal
/// pair; the real `stationd` opens the other ends as `transport = "rtu"` devices. At noon
/// with zero export allowed, the PCS must charge from the surplus on the commands the daemon
/// writes over the serial line (EMS forced mode, charge command, power), and the grid must
/// not export; on SIGTERM the daemon's last write on the line is the safe value (stop). All
/// judged on the simulator's truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs socat (installed by .ci/run)"]
async fn the_daemon_drives_a_pcs_and_reads_the_grid_meter_over_native_serial_holding_zero_export() {
    use station_sim::wire::profile::{ProfileMap, ProfiledSpec};
    use std::sync::Arc;
    use support::serial::PtyPair;
    let dir = std::env::temp_dir().join(format!("stationd-serial-pcs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    let meter_line = PtyPair::open(&dir, "meter").await;
    let pcs_line = PtyPair::open(&dir, "pcs").await;
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/config/profiles");
    let map = |name: &str| {
        Arc::new(
            ProfileMap::load(&std::path::Path::new(profiles).join(format!("{name}.toml"))).unwrap(),
        )
    };
    let mut sc = Scenario::reference();
    sc.grid.export_limit_kw = 0.0;
    // Room to charge: the surplus must go into the battery, not only into a PV limit.
    sc.battery.initial_soc_pct = 40.0;
    let capacity_kwh = sc.battery.nameplate_kwh;
    let start = sc.resolve_local("12:00");
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        profiles: vec![
            ProfiledSpec::rtu_serial(
                "grid-meter",
                map("chint-dtsu666"),
                1,
                &meter_line.a.display().to_string(),
            ),
            ProfiledSpec::rtu_serial(
                "battery",
                map("sungrow-sh"),
                1,
                &pcs_line.a.display().to_string(),
            ),
        ],
        ..SimConfig::ephemeral(sc, 11, 1.0)
    })
    .await
    .unwrap();
    for entry in std::fs::read_dir(profiles).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join("profiles").join(p.file_name().unwrap())).unwrap();
    }
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut doc = station_file::for_sim(&sim.addrs, api);
    for (id, profile, line) in [
        ("grid-meter", "chint-dtsu666", &meter_line),
        ("battery", "sungrow-sh", &pcs_line),
    ] {
        let d = device(&mut doc, id);
        d.insert("host".into(), line.b.display().to_string().into());
        d.remove("port");
        d.remove("revert_s");
        d.remove("validity_s");
        d.insert("profile".into(), profile.into());
        d.insert("transport".into(), "rtu".into());
        d.insert("baud".into(), 9600.into());
    }
    // A Sungrow SH hybrid is a 10 kW PCS; it does not report its battery's capacity.
    device(&mut doc, "battery").insert("rating_kw".into(), 10.into());
    device(&mut doc, "battery").insert("capacity_kwh".into(), capacity_kwh.into());
    station_file::set(&mut doc, "policy.grid.export_limit_kw", 0.0);
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
    let mut daemon = Running(
        Command::new(env!("CARGO_BIN_EXE_stationd"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until_async(
        "the meter and the PCS online over serial",
        Duration::from_secs(60),
        async || {
            let s = status(api).await?;
            let online = |id: &str| {
                s["devices"]
                    .as_array()
                    .and_then(|d| d.iter().find(|d| d["id"] == id))
                    .is_some_and(|d| d["link"] == "online" || d["link"] == "degraded")
            };
            (online("grid-meter") && online("battery")).then_some(())
        },
    )
    .await;
    // The forced charge reached the PCS over the serial line: the simulator's battery
    // follows a charge setpoint (it obeys only while EMS mode 2 holds, also written there).
    // Then measure from the first moment the export is held (the PV starts unlimited).
    until(
        "the PCS charging on the daemon's command, export held",
        Duration::from_secs(60),
        || {
            let t = sim.truth();
            let b = t.battery;
            (b.setpoint_w < -1_000.0 && b.power_w < -1_000.0 && t.grid.power_w > -2_000.0)
                .then_some(())
        },
    )
    .await;
    let before = sim.truth().kpis;
    let (mut samples, mut charging, mut max_export_w, mut max_follow_err_w) =
        (0, 0, 0.0f64, 0.0f64);
    let mut charged_w_sum = 0.0;
    let end = sim.now() + chrono::Duration::seconds(60);
    while sim.now() < end {
        let t = sim.truth();
        samples += 1;
        if t.battery.power_w < -500.0 {
            charging += 1;
        }
        charged_w_sum += -t.battery.power_w;
        max_export_w = max_export_w.max(-t.grid.power_w);
        max_follow_err_w = max_follow_err_w.max((t.battery.power_w - t.battery.setpoint_w).abs());
        // Sampling interval while the station runs (the loop ends on simulated time).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = sim.truth().kpis;
    let exported_kwh = after.grid_export_kwh - before.grid_export_kwh;
    let mean_charge_w = charged_w_sum / f64::from(samples);
    eprintln!(
        "native serial control: {charging}/{samples} samples charging, mean charge \
         {mean_charge_w:.0} W, largest |power - setpoint| {max_follow_err_w:.0} W, \
         exported {exported_kwh:.4} kWh (peak {max_export_w:.0} W)"
    );
    assert!(
        charging * 10 >= samples * 9,
        "the PCS charged in only {charging} of {samples} samples"
    );
    assert!(mean_charge_w > 1_000.0, "mean charge {mean_charge_w} W");
    assert!(
        exported_kwh < 0.05,
        "exported {exported_kwh} kWh in a minute (peak {max_export_w} W)"
    );
    // SIGTERM: the daemon's last words on the serial line are the PCS's safe value (stop).
    let sent = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = until("the daemon's exit", Duration::from_secs(30), || {
        daemon.0.try_wait().unwrap()
    })
    .await;
    assert!(exit.success(), "exit status {exit:?}");
    let b = sim.truth().battery;
    assert!(
        b.setpoint_w.abs() < 1.0,
        "after shutdown the PCS still follows {} W",
        b.setpoint_w
    );
    // And the PCS ramps down to it.
    until("the PCS idle", Duration::from_secs(30), || {
        (sim.truth().battery.power_w.abs() < 100.0).then_some(())
    })
    .await;
    drop(daemon);
    sim.shutdown().await;
    drop((meter_line, pcs_line));
    std::fs::remove_dir_all(&dir).ok();
}

/// A 48 V pack behind a Victron Multi (the simulator's battery shown with the
/// `victron-vebus-ess` map at unit 227, 16 cells in series, a 4 kW PCS): the daemon identifies
/// it by phase count and pack voltage, uses it with the configured capacity, and, the map
/// having no BMS limits, never commands more than the configured 4 kW rating; at noon it
/// charges from the surplus. Judged on the simulator's truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_charges_a_victron_pcs_within_its_rating_when_the_map_has_no_bms_limits() {
    use station_sim::wire::profile::{ProfileMap, ProfiledSpec};
    use std::sync::Arc;
    const RATING_W: f64 = 4_000.0;
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/config/profiles");
    let map =
        ProfileMap::load(&std::path::Path::new(profiles).join("victron-vebus-ess.toml")).unwrap();
    let mut sc = Scenario::reference();
    sc.grid.export_limit_kw = 0.0;
    sc.battery.series_cells = 16;
    sc.battery.modules = 1;
    sc.battery.nameplate_kwh = 10.0;
    sc.battery.pcs_kw = 5.0;
    sc.battery.initial_soc_pct = 40.0;
    let start = sc.resolve_local("12:00");
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        profiles: vec![ProfiledSpec {
            unit: 227,
            ..ProfiledSpec::tcp("battery", Arc::new(map))
        }],
        ..SimConfig::ephemeral(sc, 11, 1.0)
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("stationd-victron-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::copy(
        std::path::Path::new(profiles).join("victron-vebus-ess.toml"),
        dir.join("profiles/victron-vebus-ess.toml"),
    )
    .unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut doc = station_file::for_sim(&sim.addrs, api);
    let port = sim.addrs.device("battery").unwrap().port();
    profiled(&mut doc, "battery", "victron-vebus-ess", port);
    let battery = device(&mut doc, "battery");
    battery.insert("unit_id".into(), 227.into());
    battery.insert("rating_kw".into(), (RATING_W / 1000.0).into());
    battery.insert("capacity_kwh".into(), 10.into());
    station_file::set(&mut doc, "policy.grid.export_limit_kw", 0.0);
    let path = dir.join("station.toml");
    station_file::write(&path, &doc);
    let daemon = Running(
        Command::new(env!("CARGO_BIN_EXE_stationd"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until(
        "the Multi charging on the daemon's command",
        Duration::from_secs(60),
        || {
            let b = sim.truth().battery;
            (b.setpoint_w < -1_000.0 && b.power_w < -1_000.0).then_some(())
        },
    )
    .await;
    let (mut max_abs_w, mut max_abs_setpoint_w, mut min_w) = (0.0f64, 0.0f64, 0.0f64);
    let end = sim.now() + chrono::Duration::seconds(30);
    while sim.now() < end {
        let b = sim.truth().battery;
        max_abs_w = max_abs_w.max(b.power_w.abs());
        max_abs_setpoint_w = max_abs_setpoint_w.max(b.setpoint_w.abs());
        min_w = min_w.min(b.power_w);
        // Sampling interval while the station runs (the loop ends on simulated time).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = status(api).await.unwrap();
    eprintln!(
        "victron PCS: strongest charge {min_w:.0} W, largest |setpoint| {max_abs_setpoint_w:.0} W, \
         status battery {}",
        st["battery"]
    );
    assert!(
        max_abs_setpoint_w <= RATING_W + 1.0 && max_abs_w <= RATING_W * 1.01,
        "commanded {max_abs_setpoint_w} W / ran {max_abs_w} W on a {RATING_W} W PCS"
    );
    assert!(
        min_w < -3_000.0,
        "charged at most {min_w} W from the surplus"
    );
    assert_eq!(
        st["battery"]["max_charge_w"].as_f64(),
        Some(RATING_W),
        "{st}"
    );
    drop(daemon);
    sim.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

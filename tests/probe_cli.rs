//! `stationd probe`, the real binary, against hand-written pymodbus device images: a matching
//! profile identifies the device, prints every point with its unit and verdict and exercises
//! the setpoint; a wrong profile fails naming the registers the device refused.
// Test code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::process::Output;
use support::peer::Peer;

fn profiles_dir() -> String {
    format!("{}/config/profiles", env!("CARGO_MANIFEST_DIR"))
}

async fn stationd(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_stationd"))
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn probe_identifies_a_sun2000_reads_every_point_and_exercises_the_limit() {
    let peer = Peer::start("huawei_sun2000.py").await;
    let port = peer.port.to_string();
    let dir = profiles_dir();
    let out = stationd(&[
        "probe",
        "--profile",
        "huawei-sun2000",
        "--profiles-dir",
        &dir,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--write",
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   model ",
        "\"SUN2000-10KTL-M1\"",
        "power_w (function 3, register 32080 = 0x7D50)",
        "7123 W",
        "23456780 Wh",
        "512 (operating)",
        "was 100 %, wrote 50 %, read back 50 %, restored 100 %",
        "result: ok",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn probe_of_a_config_device_with_the_wrong_profile_fails_naming_the_refused_registers() {
    let peer = Peer::start("huawei_sun2000.py").await;
    let tmp = std::env::temp_dir().join(format!("probe-cli-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("profiles")).unwrap();
    std::fs::copy(
        Path::new(&profiles_dir()).join("chint-dtsu666.toml"),
        tmp.join("profiles/chint-dtsu666.toml"),
    )
    .unwrap();
    let station = format!(
        "[devices.grid-meter]\nkind = \"meter\"\nrole = \"grid\"\nprofile = \"chint-dtsu666\"\n\
         host = \"127.0.0.1\"\nport = {}\n",
        peer.port
    );
    std::fs::write(tmp.join("station.toml"), station).unwrap();
    let config = tmp.join("station.toml").display().to_string();
    let out = stationd(&["probe", "grid-meter", "--config", &config]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL voltage_l1_v"), "{text}");
    assert!(
        text.contains("modbus exception 0x02 for function 0x03 at register 8198"),
        "{text}"
    );
    assert!(text.contains("result: FAILED"), "{text}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[tokio::test]
async fn probe_of_an_unreachable_device_says_which_address_it_tried() {
    let port = support::free_port().to_string();
    let dir = profiles_dir();
    let out = stationd(&[
        "probe",
        "--profile",
        "eastron-sdm630",
        "--profiles-dir",
        &dir,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--timeout-ms",
        "300",
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach 127.0.0.1:{port} unit 1")),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn probe_reads_a_meter_behind_a_transparent_rs485_gateway() {
    let gateway = Peer::start("rs485_gateway.py").await;
    let port = gateway.port.to_string();
    let dir = profiles_dir();
    let out = stationd(&[
        "probe",
        "--profile",
        "eastron-sdm630",
        "--profiles-dir",
        &dir,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "2",
        "--rtu-over-tcp",
        "--baud",
        "9600",
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("-2500 W"), "{text}");
    assert!(text.contains("result: ok"), "{text}");
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn probe_identifies_a_victron_multi_behind_a_gx_and_exercises_the_mode_3_setpoint() {
    let peer = Peer::start("victron_vebus.py").await;
    let port = peer.port.to_string();
    let dir = profiles_dir();
    let out = stationd(&[
        "probe",
        "--profile",
        "victron-vebus-ess",
        "--profiles-dir",
        &dir,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--unit",
        "227",
        "--write",
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   phase_count      1",
        "ok   voltage_v        52.34",
        "power_w (function 3, register 12 = 0x000C)",
        "1200 W",
        "71.5 %",
        "9 (operating)",
        "was 1200 W, wrote 0 W, read back 0 W, restored 1200 W",
        "result: ok",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The probe restored the device's own setpoint (-1200 on the wire = feeding back).
    let mut check = station_controller::devices::link::Link::new(
        station_controller::devices::link::LinkConfig::new("127.0.0.1", peer.port, 227),
    );
    assert_eq!(
        check.read_holding(37, 1).await.unwrap(),
        vec![(-1200i16) as u16]
    );
}

#[tokio::test]
async fn check_config_accepts_a_station_whose_battery_is_a_victron_multi_by_profile() {
    let tmp = std::env::temp_dir().join(format!("check-victron-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("profiles")).unwrap();
    std::fs::copy(
        Path::new(&profiles_dir()).join("victron-vebus-ess.toml"),
        tmp.join("profiles/victron-vebus-ess.toml"),
    )
    .unwrap();
    let mut doc = support::station_file::reference();
    let battery = doc
        .get_mut("devices")
        .and_then(|d| d.get_mut("battery"))
        .and_then(toml::Value::as_table_mut)
        .unwrap();
    battery.insert("profile".into(), "victron-vebus-ess".into());
    battery.insert("unit_id".into(), 227.into());
    battery.insert("rating_kw".into(), 4.into());
    battery.remove("revert_s");
    battery.remove("validity_s");
    let path = tmp.join("station.toml");
    let config = path.display().to_string();
    // The Multi does not report its battery's capacity: the config must.
    support::station_file::write(&path, &doc);
    let out = stationd(&["check-config", "--config", &config]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("devices.battery.capacity_kwh")
            && err.contains("profile \"victron-vebus-ess\" reads no capacity_wh"),
        "{err}"
    );
    let battery = doc
        .get_mut("devices")
        .and_then(|d| d.get_mut("battery"))
        .and_then(toml::Value::as_table_mut)
        .unwrap();
    battery.insert("capacity_kwh".into(), 10.0.into());
    support::station_file::write(&path, &doc);
    let out = stationd(&["check-config", "--config", &config]).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The same station with the profile's setpoint written as the wrong type is refused by
    // file and key.
    let broken = std::fs::read_to_string(tmp.join("profiles/victron-vebus-ess.toml"))
        .unwrap()
        .replace(
            "address = 37\ntype = \"i16\"",
            "address = 37\ntype = \"i24\"",
        );
    std::fs::write(tmp.join("profiles/victron-vebus-ess.toml"), broken).unwrap();
    let out = stationd(&["check-config", "--config", &config]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("victron-vebus-ess.toml") && err.contains("setpoints.power_w.type"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

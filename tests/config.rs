//! Config files: every file in config/ loads, environment overrides apply, and bad files name
//! every problem at once.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use station_controller::config::{self, ConfigError, DeviceRole};
use std::path::{Path, PathBuf};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn invalid(text: &str) -> Vec<String> {
    let raw = match config::parse("test.toml", text, no_env()) {
        Ok(raw) => raw,
        Err(e) => return vec![e.to_string()],
    };
    match raw.validate() {
        Ok(_) => Vec::new(),
        Err(issues) => issues.iter().map(|i| i.to_string()).collect(),
    }
}

const MINIMAL: &str = r#"
[devices.grid-meter]
kind = "meter"
role = "grid"
host = "127.0.0.1"
port = 5022
"#;

#[test]
fn every_toml_file_in_config_loads_and_validates() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = config::load_with_env(&path, no_env())
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        assert!(!cfg.devices.is_empty(), "{} has no devices", path.display());
        loaded += 1;
    }
    assert!(loaded >= 1, "no config files found");
}

#[test]
fn the_reference_station_has_the_devices_of_the_reference_station_doc_at_the_simulator_ports() {
    let cfg = config::load_with_env(&config_dir().join("station.toml"), no_env()).unwrap();
    let ids: Vec<&str> = cfg.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "pv",
            "battery",
            "grid-meter",
            "building-meter",
            "charger-1",
            "charger-2",
            "charger-3",
            "charger-4",
            "charger-5",
            "charger-6",
            "charger-7",
            "charger-8"
        ]
    );
    assert_eq!(cfg.device("pv").unwrap().endpoint.port, 5020);
    assert_eq!(cfg.device("charger-8").unwrap().endpoint.port, 5037);
    assert_eq!(cfg.policy.grid.import_limit.value(), 150_000.0);
    let (_, c1) = cfg.chargers().next().unwrap();
    assert_eq!((c1.rating_a, c1.phases, c1.safe_current_a), (32.0, 3, 6.0));
    assert_eq!(cfg.api_listen.to_string(), "127.0.0.1:8080");
    assert!(cfg.api_token.is_none());
}

#[test]
fn environment_variables_override_file_values() {
    let env = vec![
        (
            "STATION__POLICY__GRID__IMPORT_LIMIT_KW".to_string(),
            "120".to_string(),
        ),
        ("UNRELATED".to_string(), "1".to_string()),
    ];
    let cfg = config::load_with_env(&config_dir().join("station.toml"), env).unwrap();
    assert_eq!(cfg.policy.grid.import_limit.value(), 120_000.0);
}

#[test]
fn an_invalid_environment_override_is_named_like_a_file_value() {
    let env = vec![(
        "STATION__POLICY__GRID__IMPORT_LIMIT_KW".to_string(),
        "-5".to_string(),
    )];
    let err = config::load_with_env(&config_dir().join("station.toml"), env).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("policy.grid.import_limit_kw: must be > 0 (got -5)"),
        "{text}"
    );
}

#[test]
fn every_problem_in_a_bad_file_is_named_at_once() {
    let problems = invalid(
        r#"
[api]
listen = "not an address"

[policy.grid]
import_limit_kw = -5

[policy.battery]
soc_min_pct = 95
soc_max_pct = 90

[devices.grid-meter]
kind = "meter"
role = "grid"
host = "127.0.0.1"
port = 5022

[devices.charger-1]
kind = "charger"
host = "127.0.0.1"
port = 5030
phases = 2
rating_a = 100

[devices.pv]
kind = "pv"
host = ""
port = 5020
revert_s = 0
role = "grid"
"#,
    );
    let joined = problems.join("\n");
    for expected in [
        "api.listen: expected ADDRESS:PORT",
        "policy.grid.import_limit_kw: must be > 0 (got -5)",
        "devices.charger-1.phases: must be 1 or 3 (got 2)",
        "devices.charger-1.rating_a: must be within [6, 80] (got 100)",
        "devices.pv.host: must not be empty",
        "devices.pv.revert_s: must be > 0",
        "devices.pv.role: does not apply to kind pv",
        "policy.battery.soc",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    assert!(problems.len() >= 8, "{joined}");
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let problems = invalid(&format!("{MINIMAL}\n[policy.grid]\nimport_limit_kv = 3\n"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("import_limit_kv"), "{problems:?}");
    let problems = invalid(&format!("{MINIMAL}\ncolour = \"red\"\n"));
    assert!(problems[0].contains("colour"), "{problems:?}");
}

#[test]
fn every_unknown_key_is_named_at_once_with_its_dotted_key() {
    let text = format!(
        "colour = \"red\"\n{MINIMAL}speed = 3\n\n[api]\nlisten_on = \"x\"\n\n[policy.grid]\nimport_limit_kv = 3\n\n[policy.battery]\nsoc_minimum = 5\n"
    );
    let problems = invalid(&text).join("\n");
    for key in [
        "colour: unknown key",
        "devices.grid-meter.speed: unknown key",
        "api.listen_on: unknown key",
        "policy.grid.import_limit_kv: unknown key",
        "policy.battery.soc_minimum: unknown key",
    ] {
        assert!(problems.contains(key), "missing {key:?} in:\n{problems}");
    }
}

#[test]
fn unknown_keys_and_a_bad_value_are_named_together() {
    let text =
        format!("{MINIMAL}\n[api]\nlisten_on = 1\n\n[control]\nshutdown_deadline_ms = \"soon\"\n");
    let problems = invalid(&text).join("\n");
    assert!(
        problems.contains("api.listen_on: unknown key"),
        "{problems}"
    );
    assert!(
        problems.contains("control.shutdown_deadline_ms: invalid type"),
        "{problems}"
    );
}

#[test]
fn a_cycle_the_service_watchdog_cannot_follow_is_refused() {
    let problems = invalid(&format!("{MINIMAL}\n[policy]\ncycle_s = 6\n"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("policy.cycle_s: "), "{problems:?}");
    assert!(problems[0].contains("WatchdogSec"), "{problems:?}");
    assert!(invalid(&format!("{MINIMAL}\n[policy]\ncycle_s = 5\n")).is_empty());
    let service = std::fs::read_to_string(config_dir().join("systemd/stationd.service")).unwrap();
    assert!(
        service.contains(&format!(
            "WatchdogSec={}s",
            config::SERVICE_WATCHDOG.as_secs()
        )),
        "config::SERVICE_WATCHDOG is not the unit's WatchdogSec"
    );
}

#[test]
fn a_station_without_a_grid_meter_is_refused() {
    let problems = invalid(
        r#"
[devices.pv]
kind = "pv"
host = "127.0.0.1"
port = 5020
"#,
    );
    assert!(
        problems.iter().any(|p| p.contains("a grid meter")),
        "{problems:?}"
    );
}

#[test]
fn two_devices_on_one_endpoint_and_unknown_policy_chargers_are_refused() {
    let problems = invalid(&format!(
        r#"{MINIMAL}
[devices.building-meter]
kind = "meter"
role = "building"
host = "127.0.0.1"
port = 5022

[policy.vehicles.chargers.charger-9]
mode = "solar"
"#
    ));
    let joined = problems.join("\n");
    assert!(joined.contains("same host, port and unit id"), "{joined}");
    assert!(
        joined.contains("policy.vehicles.chargers.charger-9"),
        "{joined}"
    );
}

#[test]
fn a_minimal_file_gets_the_reference_defaults() {
    let raw = config::parse("minimal.toml", MINIMAL, no_env()).unwrap();
    let cfg = raw.validate().unwrap();
    assert_eq!(cfg.devices.len(), 1);
    assert!(matches!(cfg.devices[0].role, DeviceRole::GridMeter));
    assert_eq!(cfg.devices[0].endpoint.unit_id, 1);
    assert_eq!(cfg.devices[0].endpoint.timeout.as_millis(), 500);
    assert_eq!(cfg.policy.cycle_s, 1.0);
}

#[test]
fn a_missing_file_is_reported_with_its_path() {
    let err = config::load_with_env(Path::new("/nonexistent/station.toml"), no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/station.toml"));
}

#[test]
fn the_profiled_example_station_names_its_profiles_per_device() {
    let cfg = config::load_with_env(&config_dir().join("station-profiled.toml"), no_env()).unwrap();
    let profile = |id: &str| {
        cfg.device(id)
            .unwrap()
            .profile
            .as_ref()
            .map(|p| p.name.clone())
    };
    assert_eq!(profile("pv").as_deref(), Some("huawei-sun2000"));
    assert_eq!(profile("grid-meter").as_deref(), Some("chint-dtsu666"));
    assert_eq!(profile("building-meter").as_deref(), Some("eastron-sdm630"));
    assert_eq!(profile("battery"), None, "no profile: SunSpec");
    let charx = cfg.device("charger-2").unwrap().any_profile().unwrap();
    assert_eq!(charx.name, "phoenix-charx-sec");
    assert!(
        cfg.device("charger-1").unwrap().any_profile().is_none(),
        "alfen is built in"
    );
}

#[test]
fn check_config_names_every_profile_problem_by_file_and_key_at_once() {
    let dir = std::env::temp_dir().join(format!("profiles-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(
        dir.join("profiles/broken-meter.toml"),
        "[device]\nkind = \"meter\"\nvendor = \"X\"\nmodel = \"Y\"\nsource = \"doc\"\n\n\
         [[probe]]\npoint = \"power_w\"\nrange = [0.0, 1.0]\n\n\
         [points.power_w]\nfunction = 3\naddress = 10\ntype = \"f32\"\nunit = \"kW\"\n",
    )
    .unwrap();
    let station = format!(
        "{MINIMAL}profile = \"broken-meter\"\n\n[devices.pv]\nkind = \"pv\"\nhost = \"h\"\nport = 502\n\
         profile = \"chint-dtsu666\"\nrevert_s = 10\n\n[devices.building]\nkind = \"meter\"\n\
         role = \"building\"\nhost = \"h\"\nport = 503\nprofile = \"missing\"\n"
    );
    std::fs::write(dir.join("station.toml"), station).unwrap();
    std::fs::copy(
        config_dir().join("profiles/chint-dtsu666.toml"),
        dir.join("profiles/chint-dtsu666.toml"),
    )
    .unwrap();
    let err = config::load_with_env(&dir.join("station.toml"), no_env()).unwrap_err();
    let ConfigError::Invalid { issues, .. } = err else {
        panic!("expected invalid, got {err}");
    };
    let text = issues.to_string();
    let broken = dir.join("profiles/broken-meter.toml").display().to_string();
    for expected in [
        format!("{broken}: points.power_w.unit: must be \"W\""),
        "devices.grid-meter.profile: profile \"broken-meter\" is invalid".to_string(),
        "devices.pv.profile: profile \"chint-dtsu666\" is a meter profile, the device is a pv"
            .to_string(),
        "devices.pv.revert_s: applies to SunSpec devices only".to_string(),
        "missing.toml: cannot read the profile".to_string(),
        "devices.building.profile: profile \"missing\" is invalid".to_string(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rtu_over_tcp_devices_take_line_settings_and_tcp_devices_refuse_them() {
    use station_controller::devices::bus::LineSettings;
    use station_controller::devices::link::Framing;
    let text = format!(
        "{MINIMAL}transport = \"rtu-over-tcp\"\nbaud = 19200\nparity = \"even\"\n\n\
         [devices.building]\nkind = \"meter\"\nrole = \"building\"\nhost = \"127.0.0.1\"\nport = 5022\n\
         unit_id = 2\ntransport = \"rtu-over-tcp\"\nbaud = 19200\nparity = \"even\"\n"
    );
    let raw = config::parse("test.toml", &text, no_env()).unwrap();
    let cfg = raw.validate().unwrap();
    let framing = cfg.device("grid-meter").unwrap().endpoint.framing;
    assert_eq!(
        framing,
        Framing::RtuOverTcp(LineSettings {
            baud: 19200,
            bits_per_char: 11
        })
    );

    let bad = format!(
        "{MINIMAL}baud = 9600\n\n[devices.building]\nkind = \"meter\"\nrole = \"building\"\n\
         host = \"127.0.0.1\"\nport = 5022\nunit_id = 2\ntransport = \"rtu-over-tcp\"\n\
         parity = \"mark\"\nstop_bits = 3\n"
    );
    let issues = invalid(&bad);
    for expected in [
        "devices.grid-meter.baud: applies to transport = \"rtu\" or \"rtu-over-tcp\" only",
        "devices.building.parity: expected none, even or odd (got \"mark\")",
        "devices.building.stop_bits: must be 1 or 2 (got 3)",
    ] {
        assert!(
            issues.iter().any(|i| i == expected),
            "missing {expected:?} in {issues:?}"
        );
    }
}

#[test]
fn a_serial_rtu_device_names_its_port_by_host_and_takes_no_tcp_port() {
    use station_controller::devices::bus::{Parity, SerialSettings};
    use station_controller::devices::link::Framing;
    let serial = MINIMAL
        .replace("host = \"127.0.0.1\"", "host = \"/dev/ttyUSB0\"")
        .replace("port = 5022\n", "");
    let text =
        format!("{serial}transport = \"rtu\"\nbaud = 19200\nparity = \"even\"\nstop_bits = 2\n");
    let cfg = config::parse("test.toml", &text, no_env())
        .unwrap()
        .validate()
        .unwrap();
    let endpoint = &cfg.device("grid-meter").unwrap().endpoint;
    assert_eq!(endpoint.host, "/dev/ttyUSB0");
    assert_eq!(
        endpoint.framing,
        Framing::RtuSerial(SerialSettings {
            baud: 19200,
            parity: Parity::Even,
            stop_bits: 2
        })
    );
    let issues = invalid(&format!("{MINIMAL}transport = \"rtu\"\n"));
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("devices.grid-meter.port: does not apply")),
        "{issues:?}"
    );
    let issues = invalid(&MINIMAL.replace("port = 5022\n", ""));
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("devices.grid-meter.port: must be within")),
        "{issues:?}"
    );
}

#[test]
fn api_hosts_are_checked_and_lower_cased() {
    let problems = invalid(&format!(
        "{MINIMAL}\n[api]\nhosts = [\"ok.example\", \"bad host\", \"\"]\n"
    ));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("api.hosts[1]: "), "{problems:?}");
    assert!(problems[1].starts_with("api.hosts[2]: "), "{problems:?}");
    let raw = config::parse(
        "test.toml",
        &format!("{MINIMAL}\n[api]\nhosts = [\"Station.Example.LAN\"]\n"),
        no_env(),
    )
    .unwrap();
    assert_eq!(raw.validate().unwrap().api_hosts, ["station.example.lan"]);
}

#[test]
fn a_battery_without_a_pcs_rating_is_refused_naming_the_key() {
    let mut doc: toml::Table = station_controller::demo::STATION_TOML.parse().unwrap();
    doc["devices"]["battery"]
        .as_table_mut()
        .unwrap()
        .remove("rating_kw");
    let text = toml::to_string(&doc).unwrap();
    let err = station_controller::config::parse("station.toml", &text, Vec::new())
        .unwrap()
        .validate()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("devices.battery.rating_kw: required"),
        "{text}"
    );
}

#[test]
fn a_battery_capacity_must_be_positive_and_belongs_to_batteries_only() {
    let mut doc: toml::Table = station_controller::demo::STATION_TOML.parse().unwrap();
    doc["devices"]["battery"]
        .as_table_mut()
        .unwrap()
        .insert("capacity_kwh".into(), (-5.0).into());
    doc["devices"]["grid-meter"]
        .as_table_mut()
        .unwrap()
        .insert("capacity_kwh".into(), 10.0.into());
    doc["devices"]["pv"]
        .as_table_mut()
        .unwrap()
        .insert("capacity_kwh".into(), 10.0.into());
    let text = toml::to_string(&doc).unwrap();
    let err = station_controller::config::parse("station.toml", &text, Vec::new())
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    for key in [
        "devices.battery.capacity_kwh",
        "devices.grid-meter.capacity_kwh",
        "devices.pv.capacity_kwh",
    ] {
        assert!(err.contains(key), "missing {key} in {err}");
    }
}

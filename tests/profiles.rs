//! Device profiles: every shipped profile checks; a broken profile is reported key by key; each
//! shipped profile reads its device image (a pymodbus server written by hand from the vendor's
//! document in `tests/peers/`) into the documented values; decoders never panic and refuse
//! implausible values.
// Test code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use proptest::prelude::*;
use station_controller::devices::link::{Link, LinkConfig};
use station_controller::devices::profile::decode::{self, ValueType, WordOrder};
use station_controller::devices::profile::driver::evaluate;
use station_controller::devices::profile::{
    self, Point, ProfileDevice, ProfiledConfig, ProfiledReading, Scale,
};
use station_controller::devices::pv::InverterStatus;
use station_controller::devices::DeviceError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::peer::Peer;

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles")
}

fn shipped() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(profiles_dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "toml")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

fn device(name: &str, port: u16, rating_w: Option<f64>) -> ProfileDevice {
    let p = profile::load(&profiles_dir(), name).unwrap();
    ProfileDevice::new(
        Arc::new(p),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", port, 1).with_timeout(Duration::from_secs(2)),
            invert: false,
            rating_w,
        },
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn every_shipped_profile_checks_and_cites_its_source() {
    let names = shipped();
    assert!(names.len() >= 3, "shipped profiles: {names:?}");
    for name in names {
        let p = profile::load(&profiles_dir(), &name).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert!(!p.source.is_empty() && !p.probe.is_empty(), "{name}");
        let text = std::fs::read_to_string(profile::path_of(&profiles_dir(), &name)).unwrap();
        assert!(
            text.starts_with('#'),
            "{name} opens with the header citing its document"
        );
    }
}

#[test]
fn a_broken_profile_names_every_problem_by_file_and_key() {
    let text = r#"
[device]
kind = "battery"
vendor = "X"
model = "Y"
source = ""

[[probe]]
point = "nope"
range = [1.0, 2.0]

[points.power_w]
function = 5
address = 100
type = "f24"
unit = "kW"

[points.other]
function = 3
address = 101
type = "u32"
unit = "V"
word_order = "middle"

[setpoints.power_w]
function = 6
address = 200
type = "i32"
unit = "W"
range = [-5000.0, 5000.0]
safe = 9000.0
readback = "missing"
"#;
    let issues = profile::parse("bad", "profiles/bad.toml", text).unwrap_err();
    let keys: Vec<String> = issues.iter().map(|i| i.key.clone()).collect();
    for key in [
        "profiles/bad.toml: device.source",
        "profiles/bad.toml: probe[0].point",
        "profiles/bad.toml: probe",
        "profiles/bad.toml: points.power_w.function",
        "profiles/bad.toml: points.power_w.type",
        "profiles/bad.toml: points.power_w.unit",
        "profiles/bad.toml: points.other.word_order",
        "profiles/bad.toml: points",
        "profiles/bad.toml: setpoints.power_w.function",
        "profiles/bad.toml: setpoints.power_w.safe",
        "profiles/bad.toml: setpoints.power_w.readback",
    ] {
        assert!(keys.iter().any(|k| k == key), "missing {key} in {issues}");
    }
    // With power_w a valid f32 at 100 (registers 100-101), `other` at 101 overlaps it.
    let overlapping = text
        .replace("type = \"f24\"", "type = \"f32\"")
        .replace("function = 5", "function = 3");
    let issues = profile::parse("bad", "profiles/bad.toml", &overlapping).unwrap_err();
    assert!(
        issues
            .iter()
            .any(|i| i.key == "profiles/bad.toml: points.other.address"
                && i.problem.contains("overlaps points.power_w")),
        "{issues}"
    );
}

#[test]
fn unknown_keys_in_a_profile_are_refused_naming_the_file() {
    let text = "[device]\nkind = \"meter\"\nvendor = \"X\"\nmodel = \"Y\"\nsource = \"doc\"\ncolour = \"red\"\n";
    let issues = profile::parse("x", "profiles/x.toml", text).unwrap_err();
    let first = issues.iter().next().unwrap();
    assert_eq!(first.key, "profiles/x.toml");
    assert!(first.problem.contains("colour"), "{issues}");
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn chint_dtsu666_profile_reads_the_documented_values_of_its_image() {
    let peer = Peer::start("chint_dtsu666.py").await;
    let mut d = device("chint-dtsu666", peer.port, None);
    let ProfiledReading::Meter(m) = d.read().await.unwrap() else {
        panic!("a meter profile reads a meter");
    };
    assert!(close(m.power_w, 4321.0), "{m:?}");
    let phases: Vec<f64> = m.phase_w.iter().map(|p| p.unwrap()).collect();
    assert!(
        close(phases[0], 1500.0) && close(phases[1], 1200.0) && close(phases[2], 1621.0),
        "{m:?}"
    );
    assert!(close(m.frequency_hz.unwrap(), 50.01), "{m:?}");
    // float32 kWh: 12345.6 is not exact in f32, compare at f32 precision.
    assert!((m.import_wh.unwrap() - 12_345_600.0).abs() < 1.0, "{m:?}");
    assert!((m.export_wh.unwrap() - 789_000.0).abs() < 1.0, "{m:?}");
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn eastron_sdm630_profile_reads_input_registers_and_an_export_as_negative_power() {
    let peer = Peer::start("eastron_sdm630.py").await;
    let mut d = device("eastron-sdm630", peer.port, None);
    let ProfiledReading::Meter(m) = d.read().await.unwrap() else {
        panic!("a meter profile reads a meter");
    };
    assert!(close(m.power_w, -2500.0), "{m:?}");
    assert_eq!(m.phase_w, [Some(-800.0), Some(-900.0), Some(-800.0)]);
    assert!((m.frequency_hz.unwrap() - 49.98).abs() < 1e-4, "{m:?}");
    assert!((m.import_wh.unwrap() - 5_210_250.0).abs() < 1.0, "{m:?}");
    assert!((m.export_wh.unwrap() - 1_042_500.0).abs() < 1.0, "{m:?}");

    // The same meter wired the other way round: one flag flips powers and swaps counters.
    let p = profile::load(&profiles_dir(), "eastron-sdm630").unwrap();
    let mut inverted = ProfileDevice::new(
        Arc::new(p),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", peer.port, 1),
            invert: true,
            rating_w: None,
        },
    );
    let ProfiledReading::Meter(m) = inverted.read().await.unwrap() else {
        panic!("meter");
    };
    assert!(close(m.power_w, 2500.0));
    assert!((m.import_wh.unwrap() - 1_042_500.0).abs() < 1.0);
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn huawei_sun2000_profile_reads_its_image_and_writes_the_limit_at_40125_in_tenths() {
    let peer = Peer::start("huawei_sun2000.py").await;
    let mut d = device("huawei-sun2000", peer.port, None);
    let ProfiledReading::Pv(p) = d.read().await.unwrap() else {
        panic!("a pv profile reads a pv inverter");
    };
    assert_eq!(p.power_w, 7123.0);
    assert_eq!(p.rating_w, 10_000.0);
    assert_eq!(p.dc_power_w, Some(7400.0));
    assert_eq!(p.status, Some(InverterStatus::Mppt));
    assert!(close(p.frequency_hz.unwrap(), 50.02));
    assert!(close(p.energy_wh.unwrap(), 23_456_780.0));
    assert_eq!(p.limit_pct, Some(100.0));

    let mut check = Link::new(LinkConfig::new("127.0.0.1", peer.port, 1));
    d.set_limit_pct(37.5).await.unwrap();
    assert_eq!(check.read_holding(40125, 1).await.unwrap(), vec![375]);
    let ProfiledReading::Pv(p) = d.read().await.unwrap() else {
        panic!("pv");
    };
    assert_eq!(p.limit_pct, Some(37.5));
    // Out of its range a setpoint is clamped, never wrapped.
    d.set_limit_pct(250.0).await.unwrap();
    assert_eq!(check.read_holding(40125, 1).await.unwrap(), vec![1000]);
    d.set_limit_pct(0.0).await.unwrap();
    d.safe().await.unwrap();
    assert_eq!(
        check.read_holding(40125, 1).await.unwrap(),
        vec![1000],
        "safe = 100 %"
    );
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn a_profile_is_not_trusted_on_a_device_that_fails_its_identification_probe() {
    let peer = Peer::start("huawei_sun2000.py").await;
    // A DTSU666 profile pointed at an inverter: the probe's voltage register is not there.
    let mut meter = device("chint-dtsu666", peer.port, None);
    let err = meter.read().await.unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::Exception {
                address: 0x2006,
                ..
            }
        ),
        "{err}"
    );
    // An inverter that answers the probe with another model name is refused by name.
    let text = std::fs::read_to_string(profile::path_of(&profiles_dir(), "huawei-sun2000"))
        .unwrap()
        .replace("starts_with = \"SUN2000\"", "starts_with = \"SUN5000\"");
    let p = profile::parse("other", "other.toml", &text).unwrap();
    let mut other = ProfileDevice::new(
        Arc::new(p),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", peer.port, 1),
            invert: false,
            rating_w: None,
        },
    );
    match other.read().await.unwrap_err() {
        DeviceError::BadData { point, reason } => {
            assert!(
                point.contains("probe model") && point.contains("30000"),
                "{point}"
            );
            assert!(reason.contains("SUN2000-10KTL-M1"), "{reason}");
        }
        e => panic!("expected bad data, got {e}"),
    }
}

fn point(ty: ValueType, order: WordOrder, scale: Scale, range: Option<(f64, f64)>) -> Point {
    Point {
        name: "p".into(),
        function: 3,
        address: 7,
        ty,
        order,
        scale,
        unit: "W".into(),
        sign: 1.0,
        range,
        poll: profile::model::Poll::Fast,
        states: BTreeMap::new(),
        bits: None,
        negative_when: None,
    }
}

fn value_type() -> impl Strategy<Value = ValueType> {
    prop_oneof![
        Just(ValueType::U16),
        Just(ValueType::I16),
        Just(ValueType::U32),
        Just(ValueType::I32),
        Just(ValueType::U64),
        Just(ValueType::I64),
        Just(ValueType::F32),
        Just(ValueType::F64),
        (1u16..8).prop_map(|registers| ValueType::String { registers }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_registers_never_panic_a_decoder(
        ty in value_type(),
        low_first in any::<bool>(),
        words in proptest::collection::vec(any::<u16>(), 0..10),
        sf in any::<i16>(),
        shift in any::<u8>(),
        mask in any::<u64>(),
    ) {
        let order = if low_first { WordOrder::LowFirst } else { WordOrder::HighFirst };
        let _ = decode::decode(&words, ty, order);
        let _ = evaluate(&point(ty, order, Scale::Register(9), Some((-1e6, 1e6))), &words, Some(sf));
        let _ = evaluate(&point(ty, order, Scale::Constant(0.1), None), &words, None);
        let packed = Point { bits: Some((shift, mask)), ..point(ty, order, Scale::Constant(1.0), None) };
        let _ = evaluate(&packed, &words, None);
    }

    #[test]
    fn a_value_outside_the_plausible_range_is_bad_data_naming_point_and_register(
        v in prop_oneof![-1e9f64..-1001.0, 1001.0f64..1e9],
    ) {
        let words = decode::encode(v, ValueType::F64, WordOrder::HighFirst).unwrap();
        let p = point(ValueType::F64, WordOrder::HighFirst, Scale::Constant(1.0), Some((-1000.0, 1000.0)));
        match evaluate(&p, &words, None) {
            Err(DeviceError::BadData { point, reason }) => {
                prop_assert!(point.contains("register 7"), "{}", point);
                prop_assert!(reason.contains("outside the plausible range"), "{}", reason);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn integers_round_trip_through_encode_and_decode_in_both_word_orders(
        v in any::<i32>(),
        low_first in any::<bool>(),
    ) {
        let order = if low_first { WordOrder::LowFirst } else { WordOrder::HighFirst };
        let words = decode::encode(f64::from(v), ValueType::I32, order).unwrap();
        prop_assert_eq!(decode::decode(&words, ValueType::I32, order), Some(decode::Raw::Number(f64::from(v))));
    }
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn phoenix_charx_profile_drives_a_charger_through_the_charger_interface() {
    use station_controller::devices::charger::{ChargerDriver, Mode3};
    use station_controller::devices::profile::charger::ProfileCharger;
    let peer = Peer::start("phoenix_charx.py").await;
    let p = profile::load(&profiles_dir(), "phoenix-charx-sec").unwrap();
    let mut charger: Box<dyn ChargerDriver> = Box::new(ProfileCharger::new(
        Arc::new(p),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", peer.port, 1).with_timeout(Duration::from_secs(2)),
            invert: false,
            rating_w: Some(22_080.0),
        },
    ));
    let r = charger.read().await.unwrap();
    assert_eq!(r.state, Mode3::C2, "letter C is charging");
    assert!(
        close(r.current_a[0], 16.02)
            && close(r.current_a[1], 15.98)
            && close(r.current_a[2], 16.01),
        "{r:?}"
    );
    assert!(close(r.power_w, 11_050.0), "{r:?}");
    assert_eq!(r.energy_wh, Some(123_456.0));

    let mut check = Link::new(LinkConfig::new("127.0.0.1", peer.port, 1));
    charger.set_current(10.0).await.unwrap();
    assert_eq!(check.read_holding(1301, 1).await.unwrap(), vec![10]);
    assert_eq!(charger.read().await.unwrap().applied_max_a, 10.0);
    charger.configure_fallback(8.0).await.unwrap();
    charger.safe().await.unwrap();
    assert_eq!(
        check.read_holding(1301, 1).await.unwrap(),
        vec![8],
        "safe = configured safe current"
    );
    // A state letter outside the map is refused, never guessed.
    check
        .write_single(1299, u16::from(b'X') << 8)
        .await
        .unwrap();
    match charger.read().await.unwrap_err() {
        DeviceError::BadData { point, reason } => {
            assert!(point.contains("register 1299"), "{point}");
            assert!(reason.contains("\"X\" is not in the state map"), "{reason}");
        }
        e => panic!("expected bad data, got {e}"),
    }
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn abb_terra_ac_profile_unpacks_its_state_byte_and_writes_milliamps() {
    use station_controller::devices::charger::{ChargerDriver, Mode3};
    use station_controller::devices::profile::charger::ProfileCharger;
    let peer = Peer::start("abb_terra_ac.py").await;
    let p = profile::load(&profiles_dir(), "abb-terra-ac").unwrap();
    let mut charger = ProfileCharger::new(
        Arc::new(p),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", peer.port, 1).with_timeout(Duration::from_secs(2)),
            invert: false,
            rating_w: Some(22_080.0),
        },
    );
    let r = charger.read().await.unwrap();
    assert_eq!(r.state, Mode3::C2);
    assert!(
        close(r.current_a[0], 15.95)
            && close(r.current_a[1], 16.02)
            && close(r.current_a[2], 15.99),
        "{r:?}"
    );
    assert_eq!(r.power_w, 11_040.0);
    assert!(close(r.applied_max_a, 16.0));
    assert_eq!(
        r.energy_wh, None,
        "the session counter is not a lifetime meter"
    );

    let mut check = Link::new(LinkConfig::new("127.0.0.1", peer.port, 1));
    charger.set_current(10.5).await.unwrap();
    assert_eq!(
        check.read_holding(0x4100, 2).await.unwrap(),
        vec![0, 10_500],
        "u32 mA, high word first"
    );
    charger.configure_fallback(6.0).await.unwrap();
    assert_eq!(check.read_holding(0x4109, 1).await.unwrap(), vec![6]);
    // Session stopped (5) with a cable in: B1.
    check
        .write_multiple(0x400C, &[0x0000, 0x0500])
        .await
        .unwrap();
    assert_eq!(charger.read().await.unwrap().state, Mode3::B1);
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn sungrow_sh_profile_signs_battery_power_by_its_flags_and_forces_charge_and_discharge() {
    let peer = Peer::start("sungrow_sh.py").await;
    let mut d = device("sungrow-sh", peer.port, Some(10_000.0));
    let ProfiledReading::Battery(b) = d.read().await.unwrap() else {
        panic!("a battery profile reads a battery");
    };
    assert_eq!(b.power_w, -2450.0, "charging: negative in our convention");
    assert!(
        close(b.soc_pct, 65.3) && close(b.soh_pct.unwrap(), 98.0),
        "{b:?}"
    );
    assert!(close(b.voltage_v.unwrap(), 392.5), "{b:?}");

    let mut check = Link::new(LinkConfig::new("127.0.0.1", peer.port, 1));
    d.set_power_w(3000.0).await.unwrap();
    assert_eq!(
        check.read_holding(13049, 3).await.unwrap(),
        vec![2, 0xBB, 3000],
        "forced discharge 3 kW"
    );
    d.set_power_w(-1500.0).await.unwrap();
    assert_eq!(
        check.read_holding(13049, 3).await.unwrap(),
        vec![2, 0xAA, 1500],
        "forced charge 1.5 kW"
    );
    assert_eq!(d.read_setpoint("power_w").await.unwrap(), -1500.0);
    d.safe().await.unwrap();
    assert_eq!(
        check.read_holding(13050, 2).await.unwrap(),
        vec![0xCC, 0],
        "stop"
    );
}

/// A simulator whose `charger-1` shows the ABB Terra AC map, chargers rated `rating_a`.
async fn sim_with_abb_charger(rating_a: f64) -> station_sim::runtime::SimHandle {
    use station_sim::runtime::SimConfig;
    use station_sim::wire::profile::{ProfileMap, ProfiledSpec};
    let mut sc = station_sim::scenario::Scenario::reference();
    sc.chargers.rating_a = rating_a;
    let map = ProfileMap::load(&profiles_dir().join("abb-terra-ac.toml")).unwrap();
    station_sim::runtime::spawn(SimConfig {
        profiles: vec![ProfiledSpec::tcp("charger-1", Arc::new(map))],
        ..SimConfig::ephemeral(sc, 3, 0.0)
    })
    .await
    .unwrap()
}

fn abb_charger(port: u16) -> station_controller::devices::profile::charger::ProfileCharger {
    let p = profile::load(&profiles_dir(), "abb-terra-ac").unwrap();
    station_controller::devices::profile::charger::ProfileCharger::new(
        Arc::new(p),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", port, 1).with_timeout(Duration::from_secs(2)),
            invert: false,
            rating_w: Some(3.0 * 230.0 * 32.0),
        },
    )
}

#[tokio::test]
async fn a_profiled_chargers_fallback_current_is_written_and_read_back() {
    use station_controller::devices::charger::ChargerDriver;
    let sim = sim_with_abb_charger(32.0).await;
    let mut charger = abb_charger(sim.addrs.chargers[0].port());
    charger.configure_fallback(10.0).await.unwrap();
    assert_eq!(sim.truth().chargers[0].safe_current_a, 10.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_charger_that_does_not_take_its_fallback_current_is_an_error_naming_both_values() {
    use station_controller::devices::charger::ChargerDriver;
    // A 16 A charger holds at most 16 A, whatever it is sent.
    let sim = sim_with_abb_charger(16.0).await;
    let mut charger = abb_charger(sim.addrs.chargers[0].port());
    match charger.configure_fallback(20.0).await {
        Err(DeviceError::BadData { point, reason }) => {
            assert!(point.contains("fallback_current_a"), "{point}");
            assert!(
                reason.contains("wrote 20 A, the charger holds 16 A"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A charger that refuses the write (a frozen device answers writes with exception 4).
    sim.inject(&station_sim::faults::FaultRequest {
        device: "charger-1".into(),
        kind: station_sim::faults::FaultKindName::Frozen,
        duration_s: None,
        latency_ms: None,
        code: None,
        point: None,
        value: None,
    })
    .unwrap();
    let e = charger.configure_fallback(6.0).await.unwrap_err();
    assert!(e.is_exception(), "{e:?}");
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn acrel_adw300_profile_reads_the_documented_values_of_its_image() {
    let peer = Peer::start("acrel_adw300.py").await;
    let mut d = device("acrel-adw300", peer.port, None);
    let ProfiledReading::Meter(m) = d.read().await.unwrap() else {
        panic!("a meter profile reads a meter");
    };
    assert!(close(m.power_w, 5300.0), "{m:?}");
    assert_eq!(m.phase_w, [Some(2800.0), Some(2650.0), Some(-150.0)]);
    // 0.01 kWh on the wire.
    assert!(close(m.import_wh.unwrap(), 12_345_670.0), "{m:?}");
    assert!(close(m.export_wh.unwrap(), 987_650.0), "{m:?}");
    let each = d.read_each().await.unwrap();
    let v = each.iter().find(|r| r.name == "voltage_l1_v").unwrap();
    assert_eq!(v.words, vec![2302]);
    assert_eq!(v.value, Ok(profile::Value::Number(230.20000000000002)));
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn an_acrel_meter_with_the_other_map_fails_the_adw300_probe_instead_of_reading_nonsense() {
    let peer = Peer::start("acrel_float_variant.py").await;
    let mut d = device("acrel-adw300", peer.port, None);
    match d.read().await {
        Err(DeviceError::BadData { point, reason }) => {
            assert!(point.contains("voltage_l1_v"), "{point}");
            assert!(reason.contains("1696.8"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn huawei_luna2000_profile_reads_the_battery_through_the_inverter_and_forces_each_direction_in_its_own_register(
) {
    let peer = Peer::start("huawei_luna2000.py").await;
    let mut d = device("huawei-luna2000", peer.port, Some(5_000.0));
    let ProfiledReading::Battery(b) = d.read().await.unwrap() else {
        panic!("a battery profile reads a battery");
    };
    assert_eq!(b.power_w, 2500.0, "discharging: positive in our convention");
    assert!(close(b.soc_pct, 65.4), "{b:?}");
    assert!(close(b.voltage_v.unwrap(), 452.1), "{b:?}");
    assert_eq!(b.capacity_wh, Some(15_000.0), "{b:?}");
    assert_eq!(
        (b.max_charge_w, b.max_discharge_w),
        (Some(5000.0), Some(4500.0)),
        "{b:?}"
    );

    let mut check = Link::new(LinkConfig::new("127.0.0.1", peer.port, 1));
    d.set_power_w(-3000.0).await.unwrap();
    assert_eq!(
        check.read_holding(47246, 1).await.unwrap(),
        vec![0],
        "time mode"
    );
    assert_eq!(
        check.read_holding(47083, 1).await.unwrap(),
        vec![5],
        "5 min"
    );
    assert_eq!(
        check.read_holding(47247, 2).await.unwrap(),
        vec![0, 3000],
        "charge power"
    );
    assert_eq!(
        check.read_holding(47100, 1).await.unwrap(),
        vec![1],
        "charge"
    );
    assert_eq!(d.read_setpoint("power_w").await.unwrap(), -3000.0);
    d.set_power_w(4000.0).await.unwrap();
    assert_eq!(check.read_holding(47249, 2).await.unwrap(), vec![0, 4000]);
    assert_eq!(
        check.read_holding(47100, 1).await.unwrap(),
        vec![2],
        "discharge"
    );
    assert_eq!(d.read_setpoint("power_w").await.unwrap(), 4000.0);
    d.safe().await.unwrap();
    assert_eq!(check.read_holding(47100, 1).await.unwrap(), vec![0], "stop");
}

/// A register image of `p` in which every point holds a plausible value: the middle of its
/// range (or zero), a state point its first known code.
fn plausible_image(p: &profile::Profile) -> BTreeMap<(u8, u16), u16> {
    let mut words = BTreeMap::new();
    for point in &p.points {
        let raw: Vec<u16> = if let ValueType::String { registers } = point.ty {
            let code = point.states.keys().next().cloned().unwrap_or_default();
            let mut bytes = code.into_bytes();
            bytes.resize(usize::from(registers) * 2, 0);
            bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect()
        } else {
            let factor = match point.scale {
                Scale::Constant(f) => f,
                Scale::Register(r) => {
                    words.insert((point.function, r), 0);
                    1.0
                }
            };
            // The middle of the range, or nearer its low end where the type is too narrow.
            let candidates: Vec<f64> = match (point.states.keys().next(), point.range) {
                (Some(code), _) => vec![code.parse::<f64>().unwrap()],
                (None, Some((lo, hi))) if point.bits.is_none() => [0.5, 1e-3, 1e-6, 0.0]
                    .iter()
                    .map(|f| lo + (hi - lo) * f)
                    .collect(),
                _ => vec![0.0],
            };
            candidates
                .iter()
                .find_map(|v| {
                    let raw = match point.bits {
                        Some((shift, _)) => v * 2f64.powi(i32::from(shift)),
                        None => v / (factor * point.sign),
                    };
                    decode::encode(raw, point.ty, point.order).ok()
                })
                .unwrap()
        };
        for (i, w) in raw.into_iter().enumerate() {
            words.insert((point.function, point.address + i as u16), w);
        }
    }
    words
}

fn shipped_profiles() -> Vec<profile::Profile> {
    shipped()
        .iter()
        .map(|n| profile::load(&profiles_dir(), n).unwrap())
        .collect()
}

fn image_config() -> ProfiledConfig {
    ProfiledConfig {
        link: LinkConfig::new("127.0.0.1", 1, 1),
        invert: false,
        rating_w: Some(1.0e6),
    }
}

#[test]
fn every_shipped_profile_decodes_its_plausible_image() {
    for p in shipped_profiles() {
        let words = plausible_image(&p);
        if let Err(e) = profile::driver::decode_image(&p, &image_config(), &words) {
            panic!("{}: {e}", p.name);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever a device's registers hold, a shipped profile decodes it into a reading with
    /// finite powers or refuses it as bad data; it never panics and never invents another error.
    #[test]
    fn arbitrary_register_contents_never_panic_a_shipped_profile(
        which in 0usize..64,
        seed_words in proptest::collection::vec(any::<u16>(), 256),
    ) {
        let profiles = shipped_profiles();
        let p = &profiles[which % profiles.len()];
        let mut words = BTreeMap::new();
        let mut next = seed_words.iter().cycle();
        for point in &p.points {
            for i in 0..point.ty.registers() {
                words.insert((point.function, point.address + i), *next.next().unwrap());
            }
            if let Scale::Register(r) = point.scale {
                words.insert((point.function, r), *next.next().unwrap());
            }
        }
        match profile::driver::decode_image(p, &image_config(), &words) {
            Ok(ProfiledReading::Meter(m)) => prop_assert!(m.power_w.is_finite()),
            Ok(ProfiledReading::Pv(r)) => prop_assert!(r.power_w.is_finite()),
            Ok(ProfiledReading::Battery(b)) => {
                prop_assert!(b.power_w.is_finite() && b.soc_pct.is_finite());
            }
            Ok(ProfiledReading::Charger(c)) => prop_assert!(c.power_w.is_finite()),
            Err(DeviceError::BadData { .. }) => {}
            Err(other) => prop_assert!(false, "{}: {:?}", p.name, other),
        }
    }

    /// One point of a shipped profile outside its plausible range, everything else plausible:
    /// the read is refused as bad data naming exactly that point and its register (the daemon
    /// shows such a device degraded with this reason).
    #[test]
    fn an_out_of_range_point_is_bad_data_naming_that_point(
        which in 0usize..64,
        pick in 0usize..64,
        beyond in 1.0f64..1.0e4,
        above in any::<bool>(),
    ) {
        let profiles = shipped_profiles();
        let p = &profiles[which % profiles.len()];
        let ranged: Vec<&Point> = p
            .points
            .iter()
            .filter(|q| q.range.is_some() && q.bits.is_none() && q.ty.is_numeric())
            .collect();
        prop_assume!(!ranged.is_empty());
        let point = ranged[pick % ranged.len()];
        let (lo, hi) = point.range.unwrap();
        let span = (hi - lo).abs().max(1.0);
        let v = if above { hi + span * beyond / 1e4 + 1.0 } else { lo - span * beyond / 1e4 - 1.0 };
        let factor = match point.scale { Scale::Constant(f) => f, Scale::Register(_) => 1.0 };
        let raw = v / (factor * point.sign);
        // Values an unsigned register cannot hold cannot come from the device either.
        let Ok(encoded) = decode::encode(raw, point.ty, point.order) else {
            return Ok(());
        };
        // Rounding to the register's resolution must keep the value outside the range.
        let back = match decode::decode(&encoded, point.ty, point.order) {
            Some(decode::Raw::Number(n)) => n * factor * point.sign,
            _ => unreachable!(),
        };
        prop_assume!(!(lo..=hi).contains(&back));
        let mut words = plausible_image(p);
        for (i, w) in encoded.into_iter().enumerate() {
            words.insert((point.function, point.address + i as u16), w);
        }
        match profile::driver::decode_image(p, &image_config(), &words) {
            Err(DeviceError::BadData { point: named, reason }) => {
                prop_assert!(named.starts_with(&format!("{} (function", point.name)), "{} vs {}", named, point.name);
                prop_assert!(named.contains(&format!("register {}", point.address)), "{}", named);
                prop_assert!(reason.contains("outside the plausible range"), "{}", reason);
            }
            other => prop_assert!(false, "{}.{} = {}: {:?}", p.name, point.name, v, other),
        }
    }
}

#[tokio::test]
async fn the_simulator_refuses_a_profile_for_a_device_it_lacks_or_of_another_kind() {
    use station_sim::runtime::SimConfig;
    use station_sim::wire::profile::{ProfileMap, ProfiledSpec};
    let map =
        |n: &str| Arc::new(ProfileMap::load(&profiles_dir().join(format!("{n}.toml"))).unwrap());
    let spawn = |spec: ProfiledSpec| {
        station_sim::runtime::spawn(SimConfig {
            profiles: vec![spec],
            ..SimConfig::ephemeral(station_sim::scenario::Scenario::reference(), 1, 0.0)
        })
    };
    let e = spawn(ProfiledSpec::tcp("charger-99", map("phoenix-charx-sec")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("charger-99: the station has no such device"),
        "{e}"
    );
    let e = spawn(ProfiledSpec::tcp("pv", map("chint-dtsu666")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("pv: profile chint-dtsu666 is a meter profile"),
        "{e}"
    );
}

/// The Victron profile's device: the GX answers for the VE.Bus system as unit 227.
fn victron(port: u16) -> ProfileDevice {
    let p = profile::load(&profiles_dir(), "victron-vebus-ess").unwrap();
    ProfileDevice::new(
        Arc::new(p),
        ProfiledConfig {
            link: LinkConfig::new("127.0.0.1", port, 227).with_timeout(Duration::from_secs(2)),
            invert: false,
            rating_w: Some(4_000.0),
        },
    )
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn victron_vebus_profile_reads_a_discharging_multi_and_writes_the_mode_3_setpoint_negated() {
    let peer = Peer::start("victron_vebus.py").await;
    let mut d = victron(peer.port);
    let ProfiledReading::Battery(b) = d.read().await.unwrap() else {
        panic!("a battery profile reads a battery");
    };
    // Input power -120 (x 10 W, Multi to mains): discharging 1.2 kW, positive here.
    assert_eq!(b.power_w, 1200.0, "{b:?}");
    assert!(close(b.soc_pct, 71.5), "{b:?}");
    assert!(close(b.voltage_v.unwrap(), 52.34), "{b:?}");
    assert!(close(b.current_a.unwrap(), 24.5), "{b:?}");
    // The vebus service carries no BMS limits (the Multi enforces the BMS's through DVCC):
    // the configured PCS rating stands in for them, never more.
    assert_eq!(
        (b.max_charge_w, b.max_discharge_w),
        (Some(4000.0), Some(4000.0)),
        "{b:?}"
    );
    assert_eq!(b.capacity_wh, None, "not reported: the config gives it");
    // VE.Bus state 9 (inverting) is operating.
    assert_eq!(
        b.state,
        Some(station_controller::devices::battery::BatteryState::Connected),
        "{b:?}"
    );

    let mut check = Link::new(LinkConfig::new("127.0.0.1", peer.port, 227));
    // Discharge 2.5 kW = feed back 2500 W through AC-in: -2500 at 37, flags 38/39 cleared.
    d.set_power_w(2500.0).await.unwrap();
    assert_eq!(
        check.read_holding(37, 3).await.unwrap(),
        vec![(-2500i16) as u16, 0, 0]
    );
    assert_eq!(d.read_setpoint("power_w").await.unwrap(), 2500.0);
    // Charge 1.5 kW = take 1500 W from AC-in.
    d.set_power_w(-1500.0).await.unwrap();
    assert_eq!(check.read_holding(37, 1).await.unwrap(), vec![1500]);
    // Beyond the profile's 4 kW range the command is clamped, never wrapped.
    d.set_power_w(-9000.0).await.unwrap();
    assert_eq!(check.read_holding(37, 1).await.unwrap(), vec![4000]);
    d.safe().await.unwrap();
    assert_eq!(
        check.read_holding(37, 1).await.unwrap(),
        vec![0],
        "safe = 0 W"
    );
    // The L2 / L3 setpoints of a three-phase system are left alone.
    assert_eq!(check.read_holding(40, 2).await.unwrap(), vec![0, 0]);
}

#[tokio::test]
#[ignore = "needs Python with pymodbus (installed by .ci/run)"]
async fn the_victron_profile_refuses_a_three_phase_system_by_its_phase_count() {
    let peer = Peer::start("victron_vebus.py").await;
    let mut check = Link::new(LinkConfig::new("127.0.0.1", peer.port, 227));
    check.write_single(28, 3).await.unwrap();
    let mut d = victron(peer.port);
    match d.read().await.unwrap_err() {
        DeviceError::BadData { point, reason } => {
            assert!(
                point.contains("phase_count") && point.contains("28"),
                "{point}"
            );
            assert!(reason.contains('3'), "{reason}");
        }
        e => panic!("expected bad data, got {e}"),
    }
}

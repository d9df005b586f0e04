//! The assembled simulator: `spawn` on ephemeral ports, the clock, the control API, faults,
//! vehicles, Modbus writes through to the physics, shutdown, and the `station-sim` binary.
//!
//! Every server is reached by polling until it answers; nothing sleeps to wait for a server.

// Test and bench code may panic on a broken invariant and time itself with the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{json, Value};
use station_sim::faults::{FaultKindName, FaultRequest};
use station_sim::physics::{PlugError, KPI_KEYS};
use station_sim::runtime::{spawn, PlugRequest, PlugRequestError, SimConfig, SimHandle};
use station_sim::scenario::Scenario;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

const T: Duration = Duration::from_secs(10);

/// The reference station without random arrivals, so chargers stay free until a test plugs a car.
fn quiet_scenario(extra: &str) -> Scenario {
    Scenario::from_toml_str(&format!("[vehicles]\narrival_scale = 0.0\n{extra}")).unwrap()
}

/// Local noon of the scenario's start date (Asia/Shanghai is UTC+8 all year).
fn local(scenario: &Scenario, hh_mm: &str) -> DateTime<Utc> {
    scenario.resolve_local(hh_mm).unwrap()
}

async fn start_at(scenario: Scenario, speed: f64, at: Option<&str>) -> SimHandle {
    let start = at.map(|t| local(&scenario, t));
    let config = SimConfig {
        start,
        ..SimConfig::ephemeral(scenario, 7, speed)
    };
    let sim = spawn(config).await.unwrap();
    wait_for_api(sim.addrs.api).await;
    sim
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(T).build().unwrap()
}

/// Polls `GET /health` until the control API answers 200.
async fn wait_for_api(api: SocketAddr) {
    let client = http();
    let deadline = Instant::now() + T;
    loop {
        if let Ok(r) = client.get(format!("http://{api}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "control API at {api} never answered"
        );
        tokio::task::yield_now().await;
    }
}

async fn get_truth(api: SocketAddr) -> Value {
    let r = http()
        .get(format!("http://{api}/truth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// POSTs a raw body as JSON; returns the status and the JSON answer.
async fn post_raw(api: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let r = http()
        .post(format!("http://{api}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Connects with `unit` and polls until the device answers a read of `addr` (any answer).
async fn connect(addr: SocketAddr, unit: u8, probe: u16) -> Context {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(Ok(mut ctx)) = timeout(T, tcp::connect_slave(addr, Slave(unit))).await {
            if let Ok(Ok(_)) = timeout(T, ctx.read_holding_registers(probe, 1)).await {
                return ctx;
            }
        }
        assert!(Instant::now() < deadline, "device at {addr} never answered");
        tokio::task::yield_now().await;
    }
}

/// Whether one fresh connection can read `count` registers at `start` (transport-level success).
async fn read_works(addr: SocketAddr, start: u16, count: u16) -> bool {
    let attempt = async {
        let mut ctx = tcp::connect_slave(addr, Slave(1)).await.ok()?;
        ctx.read_holding_registers(start, count).await.ok()?.ok()
    };
    matches!(timeout(T, attempt).await, Ok(Some(words)) if words.len() == usize::from(count))
}

fn f32_words(v: f32) -> [u16; 2] {
    let bits = v.to_bits();
    [(bits >> 16) as u16, bits as u16]
}

fn words_f32(w: &[u16]) -> f32 {
    f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]))
}

fn charger<'a>(truth: &'a Value, id: &str) -> &'a Value {
    truth["chargers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {truth}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn sim_time(truth: &Value) -> DateTime<Utc> {
    truth["sim_time"].as_str().unwrap().parse().unwrap()
}

const GRID_METER_W: u16 = 40088; // model 203 W (int16) on a meter, see sunspec::METER_WYE

#[tokio::test]
async fn truth_serves_every_documented_field_and_the_scorecard() {
    let sim = start_at(quiet_scenario(""), 0.0, Some("12:00")).await;
    let t = get_truth(sim.addrs.api).await;
    assert_eq!(sim_time(&t), local(&Scenario::reference(), "12:00"));
    for path in [
        "/grid/power_w",
        "/grid/import_limit_w",
        "/pv/power_w",
        "/pv/limit_pct",
        "/pv/rating_w",
        "/battery/soc_pct",
        "/battery/soh_pct",
        "/battery/power_w",
        "/battery/max_charge_w",
        "/battery/max_discharge_w",
        "/building/power_w",
    ] {
        assert!(
            t.pointer(path).is_some_and(Value::is_number),
            "{path} in {t}"
        );
    }
    let chargers = t["chargers"].as_array().unwrap();
    assert_eq!(chargers.len(), 8);
    for (i, c) in chargers.iter().enumerate() {
        assert_eq!(c["id"], format!("charger-{}", i + 1));
        assert_eq!(c["state"], "A");
        for key in ["current_a", "setpoint_a", "power_w"] {
            assert!(c[key].is_number(), "{key} in {c}");
        }
        assert!(c.get("vehicle").is_some_and(Value::is_null), "{c}");
    }
    assert_eq!(t["kpis"].as_object().unwrap().len(), KPI_KEYS.len());
    for key in KPI_KEYS {
        assert!(t["kpis"][key].is_number(), "kpis.{key} in {t}");
    }
    assert_eq!(t["faults"], json!([]));
    // The same truth through the handle.
    let h = sim.truth();
    assert_eq!(h.sim_time, sim_time(&t));
    assert_eq!(h.pv.power_w, num(&t["pv"]["power_w"]));
    sim.shutdown().await;
}

#[tokio::test]
async fn at_speed_zero_only_advance_moves_the_clock_and_the_truth_follows() {
    let scenario = quiet_scenario("");
    let sim = start_at(scenario.clone(), 0.0, Some("06:00")).await;
    let before = get_truth(sim.addrs.api).await;
    // Nothing moves while the clock stands still, however long we poll.
    let again = get_truth(sim.addrs.api).await;
    assert_eq!(before["sim_time"], again["sim_time"]);

    sim.advance(3.0 * 3600.0);
    let after = get_truth(sim.addrs.api).await;
    assert_eq!(sim_time(&after), local(&scenario, "09:00"));
    let pv_before = num(&before["pv"]["power_w"]);
    let pv_after = num(&after["pv"]["power_w"]);
    assert!(
        pv_after > pv_before + 10_000.0,
        "PV at 09:00 ({pv_after} W) should exceed PV at 06:00 ({pv_before} W)"
    );
    assert!(num(&after["kpis"]["pv_kwh"]) > num(&before["kpis"]["pv_kwh"]));
    assert!(
        num(&after["kpis"]["grid_import_kwh"]) + num(&after["kpis"]["grid_export_kwh"]) > 0.0,
        "three hours of building load leave a trace at the grid: {}",
        after["kpis"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn at_high_speed_the_clock_runs_by_itself() {
    let sim = start_at(quiet_scenario(""), 3600.0, None).await;
    let t0 = sim.now();
    let deadline = Instant::now() + T;
    // One simulated hour at 3600x is about one real second.
    loop {
        let t = get_truth(sim.addrs.api).await;
        if sim_time(&t) >= t0 + ChronoDuration::hours(1) {
            assert!(num(&t["kpis"]["grid_import_kwh"]) > 0.0, "{}", t["kpis"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clock stuck at {} after {T:?}",
            t["sim_time"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn an_offline_fault_cuts_modbus_reads_and_delete_restores_them() {
    let sim = start_at(quiet_scenario(""), 0.0, Some("12:00")).await;
    let meter = sim.addrs.grid_meter;
    connect(meter, 1, GRID_METER_W).await;
    assert!(read_works(meter, GRID_METER_W, 5).await);

    let (status, body) = post_raw(
        sim.addrs.api,
        "/faults",
        r#"{"device": "grid-meter", "kind": "offline", "duration_s": 120}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].is_u64(), "{body}");
    assert!(!read_works(meter, GRID_METER_W, 5).await);
    // Only the grid meter is affected.
    assert!(read_works(sim.addrs.building_meter, GRID_METER_W, 5).await);
    let t = get_truth(sim.addrs.api).await;
    assert_eq!(t["faults"][0]["device"], "grid-meter");
    assert_eq!(t["faults"][0]["kind"], "offline");

    let r = http()
        .delete(format!("http://{}/faults", sim.addrs.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    connect(meter, 1, GRID_METER_W).await;
    assert!(read_works(meter, GRID_METER_W, 5).await);
    assert_eq!(get_truth(sim.addrs.api).await["faults"], json!([]));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_fault_lasting_1e300_seconds_is_refused_with_400_naming_duration_s() {
    let sim = start_at(quiet_scenario(""), 0.0, Some("12:00")).await;
    for huge in ["1e300", "1e10"] {
        let (status, body) = post_raw(
            sim.addrs.api,
            "/faults",
            &format!(r#"{{"device": "grid-meter", "kind": "offline", "duration_s": {huge}}}"#),
        )
        .await;
        assert_eq!(status, 400, "{huge}: {body}");
        assert!(body.to_string().contains("duration_s"), "{body}");
    }
    // The simulator is still serving.
    assert_eq!(get_truth(sim.addrs.api).await["faults"], json!([]));
    sim.shutdown().await;
}

#[tokio::test]
async fn an_offline_fault_ends_after_its_duration_in_simulated_time() {
    let sim = start_at(quiet_scenario(""), 0.0, Some("12:00")).await;
    let meter = sim.addrs.grid_meter;
    let (status, _) = post_raw(
        sim.addrs.api,
        "/faults",
        r#"{"device": "grid-meter", "kind": "offline", "duration_s": 120}"#,
    )
    .await;
    assert_eq!(status, 201);
    sim.advance(119.0);
    assert!(!read_works(meter, GRID_METER_W, 5).await);
    sim.advance(1.0);
    connect(meter, 1, GRID_METER_W).await;
    assert!(read_works(meter, GRID_METER_W, 5).await);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_fault_requests_get_400_with_a_reason_naming_the_field() {
    let sim = start_at(quiet_scenario(""), 0.0, None).await;
    let api = sim.addrs.api;
    let cases: [(&str, &str); 7] = [
        (r#"{"device": "grid-meter", "kind": "offline""#, "EOF"),
        (r#"{"device": "charger-99", "kind": "offline"}"#, "device"),
        (r#"{"device": "pv"}"#, "kind"),
        (r#"{"kind": "offline"}"#, "device"),
        (r#"{"device": "pv", "kind": "latency"}"#, "latency_ms"),
        (
            r#"{"device": "pv", "kind": "offline", "duration_s": -1}"#,
            "duration_s",
        ),
        (r#"{"device": "pv", "kind": "meltdown"}"#, "kind"),
    ];
    for (body, field) in cases {
        let (status, answer) = post_raw(api, "/faults", body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let reason = answer["error"].as_str().unwrap_or_default();
        assert!(
            reason.contains(field),
            "the reason for {body} should name {field}: {reason:?}"
        );
    }
    // Nothing was injected.
    assert_eq!(get_truth(api).await["faults"], json!([]));
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_vehicle_requests_get_400_naming_the_field() {
    let sim = start_at(quiet_scenario(""), 0.0, None).await;
    let api = sim.addrs.api;
    for (body, field) in [
        (r#"{"charger": "charger-99"}"#, "charger"),
        (r#"{"charger": "pump-1"}"#, "charger"),
        (r#"{"charger": "charger-1", "soc_pct": 140}"#, "soc_pct"),
        (r#"{"charger": "charger-1", "phases": 2}"#, "phases"),
        (r#"{"soc_pct": 20}"#, "charger"),
    ] {
        let (status, answer) = post_raw(api, "/vehicles", body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let reason = answer["error"].as_str().unwrap_or_default();
        assert!(reason.contains(field), "{body}: {reason:?}");
    }
    let (status, _) = post_raw(api, "/vehicles", r#"{"charger": "charger-1"}"#).await;
    assert_eq!(status, 201);
    let (status, answer) = post_raw(api, "/vehicles", r#"{"charger": "charger-1"}"#).await;
    assert_eq!(status, 400, "an occupied charger refuses a second car");
    assert!(answer["error"].as_str().unwrap().contains("occupied"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_car_plugged_through_the_api_draws_current_after_a_setpoint_write_over_modbus() {
    let sim = start_at(quiet_scenario(""), 0.0, Some("12:00")).await;
    let api = sim.addrs.api;
    let (status, body) = post_raw(
        api,
        "/vehicles",
        r#"{"charger": "charger-2", "soc_pct": 20, "onboard_a": 32}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The car shows at once, before the clock moves.
    let t = get_truth(api).await;
    let c = charger(&t, "charger-2");
    let state = c["state"].as_str().unwrap();
    assert!(
        state.starts_with('B') || state.starts_with('C'),
        "a plugged car shows B or C, got {state}"
    );
    assert!(c["vehicle"].is_object(), "{c}");
    assert_eq!(c["setpoint_a"], 0.0);

    let mut ctx = connect(sim.addrs.chargers[1], 1, 1201).await;
    ctx.write_multiple_registers(1210, &f32_words(16.0))
        .await
        .unwrap()
        .unwrap();
    sim.advance(5.0);
    let t = get_truth(api).await;
    let c = charger(&t, "charger-2");
    assert_eq!(c["state"], "C2", "{c}");
    assert_eq!(num(&c["setpoint_a"]), 16.0);
    assert!((num(&c["current_a"]) - 16.0).abs() < 1e-6, "{c}");
    assert!(num(&c["power_w"]) > 10_000.0, "{c}");
    // The charger shows the same on its registers.
    let applied = ctx.read_holding_registers(1206, 2).await.unwrap().unwrap();
    assert_eq!(words_f32(&applied), 16.0);
    let state_words = ctx.read_holding_registers(1201, 5).await.unwrap().unwrap();
    assert_eq!(state_words[0], u16::from_be_bytes(*b"C2"));
    // Other chargers stay idle.
    assert_eq!(charger(&t, "charger-1")["state"], "A");

    // Without a fresh setpoint the charger falls back to its safe current (6 A).
    sim.advance(61.0);
    let t = get_truth(api).await;
    let c = charger(&t, "charger-2");
    assert!((num(&c["current_a"]) - 6.0).abs() < 1e-6, "{c}");
    sim.shutdown().await;
}

#[tokio::test]
async fn plugging_through_the_handle_matches_the_api() {
    let sim = start_at(quiet_scenario(""), 0.0, None).await;
    let req = PlugRequest {
        charger: "charger-8".into(),
        battery_kwh: 40.0,
        soc_pct: 50.0,
        target_soc_pct: 90.0,
        stay_h: 2.0,
        onboard_a: 16.0,
        phases: 1,
    };
    sim.plug(&req).unwrap();
    let t = sim.truth();
    let v = t.chargers[7].vehicle.as_ref().unwrap();
    assert_eq!(v.battery_wh, 40_000.0);
    assert_eq!(v.onboard_max_a, 16.0);
    let err = sim.plug(&req).unwrap_err();
    assert!(
        matches!(
            err,
            PlugRequestError::Refused(PlugError::Occupied { number: 8 })
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "charger: charger 8 is occupied");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_bms_alarm_through_the_api_drops_the_battery_limits_to_zero() {
    let sim = start_at(quiet_scenario(""), 0.0, Some("12:00")).await;
    let api = sim.addrs.api;
    let t = get_truth(api).await;
    assert!(num(&t["battery"]["max_charge_w"]) > 0.0, "{}", t["battery"]);
    assert!(
        num(&t["battery"]["max_discharge_w"]) > 0.0,
        "{}",
        t["battery"]
    );

    let (status, body) = post_raw(
        api,
        "/faults",
        r#"{"device": "battery", "kind": "bms_alarm"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let t = get_truth(api).await;
    assert_eq!(num(&t["battery"]["max_charge_w"]), 0.0, "{}", t["battery"]);
    assert_eq!(num(&t["battery"]["max_discharge_w"]), 0.0);
    assert_ne!(num(&t["battery"]["alarms"]), 0.0);
    // The alarm holds while time passes, and clears with DELETE /faults.
    sim.advance(600.0);
    assert_eq!(sim.truth().battery.max_discharge_w, 0.0);
    sim.clear_faults();
    sim.advance(1.0);
    let t = sim.truth();
    assert!(t.battery.max_charge_w > 0.0 && t.battery.max_discharge_w > 0.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_bms_alarm_injected_through_the_handle_shows_in_the_fault_list() {
    let sim = start_at(quiet_scenario(""), 0.0, None).await;
    let id = sim
        .inject(&FaultRequest {
            device: "battery".into(),
            kind: FaultKindName::BmsAlarm,
            duration_s: Some(30.0),
            latency_ms: None,
            code: None,
            point: None,
            value: None,
        })
        .unwrap();
    let t = sim.truth();
    assert_eq!(t.faults.len(), 1);
    assert_eq!(t.faults[0].id, id);
    assert_eq!(t.battery.max_charge_w, 0.0);
    sim.advance(30.0);
    let t = sim.truth();
    assert!(t.faults.is_empty(), "{:?}", t.faults);
    assert!(t.battery.max_charge_w > 0.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_fault_in_the_scenario_takes_effect_at_its_time() {
    let scenario = quiet_scenario(
        "[[faults]]\nat = \"10:00\"\ndevice = \"grid-meter\"\nkind = \"offline\"\nduration_s = 300\n\
         [[faults]]\nat = \"10:00\"\ndevice = \"battery\"\nkind = \"bms_alarm\"\nduration_s = 300\n",
    );
    let sim = start_at(scenario, 0.0, Some("09:59")).await;
    let meter = sim.addrs.grid_meter;
    connect(meter, 1, GRID_METER_W).await;
    assert!(read_works(meter, GRID_METER_W, 5).await);
    assert!(sim.truth().battery.max_discharge_w > 0.0);

    sim.advance(59.0);
    assert!(
        read_works(meter, GRID_METER_W, 5).await,
        "too early at 09:59:59"
    );
    sim.advance(1.0);
    assert!(
        !read_works(meter, GRID_METER_W, 5).await,
        "offline at 10:00"
    );
    let t = sim.truth();
    let listed: Vec<(&str, FaultKindName)> = t
        .faults
        .iter()
        .map(|f| (f.device.as_str(), f.kind))
        .collect();
    assert_eq!(
        listed,
        [
            ("grid-meter", FaultKindName::Offline),
            ("battery", FaultKindName::BmsAlarm)
        ]
    );
    assert_eq!(t.battery.max_discharge_w, 0.0, "the scheduled BMS alarm");
    assert_eq!(t.battery.max_charge_w, 0.0);

    sim.advance(299.0);
    assert!(
        !read_works(meter, GRID_METER_W, 5).await,
        "offline at 10:04:59"
    );
    assert_eq!(sim.truth().battery.max_discharge_w, 0.0);
    sim.advance(1.0);
    connect(meter, 1, GRID_METER_W).await;
    assert!(read_works(meter, GRID_METER_W, 5).await, "back at 10:05");
    let t = sim.truth();
    assert!(t.faults.is_empty(), "{:?}", t.faults);
    assert!(t.battery.max_discharge_w > 0.0);
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_faults_ends_a_scheduled_bms_alarm_and_cancels_the_ones_to_come() {
    let scenario = quiet_scenario(
        "[[faults]]\nat = \"10:00\"\ndevice = \"battery\"\nkind = \"bms_alarm\"\nduration_s = 3600\n\
         [[faults]]\nat = \"10:30\"\ndevice = \"pv\"\nkind = \"offline\"\nduration_s = 60\n",
    );
    let sim = start_at(scenario, 0.0, Some("10:00")).await;
    sim.advance(1.0);
    assert_eq!(sim.truth().battery.max_discharge_w, 0.0);
    let r = http()
        .delete(format!("http://{}/faults", sim.addrs.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.advance(1.0);
    assert!(sim.truth().battery.max_discharge_w > 0.0);
    sim.advance(1800.0);
    assert!(sim.truth().faults.is_empty());
    assert!(
        read_works(sim.addrs.pv, 40000, 2).await,
        "the 10:30 outage was cancelled"
    );
    sim.shutdown().await;
}

/// Address of model `id`'s first point on a SunSpec device, found by walking the model chain.
async fn model_start(ctx: &mut Context, id: u16) -> u16 {
    let mut addr = 40002;
    loop {
        let header = ctx.read_holding_registers(addr, 2).await.unwrap().unwrap();
        assert_ne!(header[0], 0xFFFF, "model {id} not found");
        if header[0] == id {
            return addr + 2;
        }
        addr += 2 + header[1];
    }
}

#[tokio::test]
async fn a_timed_bms_alarm_ends_on_time_inside_one_long_advance() {
    let sim = start_at(quiet_scenario(""), 0.0, Some("12:00")).await;
    // Discharge 50 kW through model 704 (WSet int32 at offset 22, WSetRvrtTms uint32 at 29:
    // never revert; WSetEna at 20).
    let mut ctx = connect(sim.addrs.battery, 1, 40000).await;
    let m704 = model_start(&mut ctx, 704).await;
    ctx.write_multiple_registers(m704 + 29, &[0, 0])
        .await
        .unwrap()
        .unwrap();
    ctx.write_multiple_registers(m704 + 22, &[0, 50_000])
        .await
        .unwrap()
        .unwrap();
    ctx.write_single_register(m704 + 20, 1)
        .await
        .unwrap()
        .unwrap();
    let (status, _) = post_raw(
        sim.addrs.api,
        "/faults",
        r#"{"device": "battery", "kind": "bms_alarm", "duration_s": 60}"#,
    )
    .await;
    assert_eq!(status, 201);
    let soc_before = sim.truth().battery.soc_pct;
    // One call, ten minutes: the alarm holds the battery for the first minute only.
    sim.advance(600.0);
    let b = sim.truth().battery;
    assert!((b.power_w - 50_000.0).abs() < 1_000.0, "{b:?}");
    let usable_kwh = b.usable_wh / 1000.0;
    let dropped_pct = soc_before - b.soc_pct;
    let nine_minutes_pct = 50.0 * 540.0 / 3600.0 / usable_kwh * 100.0;
    assert!(
        dropped_pct > 0.8 * nine_minutes_pct,
        "SoC fell {dropped_pct} points; nine minutes at 50 kW is about {nine_minutes_pct}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn every_device_listens_on_its_own_ephemeral_port_until_shutdown() {
    let sim = start_at(quiet_scenario(""), 0.0, None).await;
    let devices = sim.addrs.devices();
    assert_eq!(devices.len(), 12);
    let mut ports: Vec<u16> = devices.iter().map(|(_, a)| a.port()).collect();
    ports.push(sim.addrs.api.port());
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 13, "every listener has its own port");
    assert!(ports.iter().all(|p| *p != 0));
    for (id, addr) in &devices {
        let probe = if id.starts_with("charger-") {
            1201
        } else {
            40000
        };
        connect(*addr, 1, probe).await;
        assert_eq!(sim.addrs.device(id), Some(*addr));
    }
    let mut every: Vec<SocketAddr> = devices.iter().map(|(_, a)| *a).collect();
    every.push(sim.addrs.api);

    sim.shutdown().await;
    for addr in every {
        let refused = timeout(T, tokio::net::TcpStream::connect(addr))
            .await
            .unwrap();
        assert!(refused.is_err(), "{addr} still accepts connections");
    }
}

#[tokio::test]
async fn dropping_the_handle_stops_the_listeners() {
    let sim = start_at(quiet_scenario(""), 0.0, None).await;
    let api = sim.addrs.api;
    drop(sim);
    let deadline = Instant::now() + T;
    while tokio::net::TcpStream::connect(api).await.is_ok() {
        assert!(Instant::now() < deadline, "{api} still accepts connections");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn invalid_settings_are_refused_before_anything_listens() {
    let bad_speed = SimConfig::ephemeral(quiet_scenario(""), 1, -1.0);
    let err = spawn(bad_speed).await.err().unwrap();
    assert!(err.to_string().contains("speed"), "{err}");
    let bad_step = SimConfig {
        step_s: 0.0,
        ..SimConfig::ephemeral(quiet_scenario(""), 1, 1.0)
    };
    let err = spawn(bad_step).await.err().unwrap();
    assert!(err.to_string().contains("step_s"), "{err}");
}

// ---- the binary ----

/// A first port P such that P..P+20 are all free now (bound and released).
fn free_port_base() -> u16 {
    for _ in 0..50 {
        let probe = StdListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base > u16::MAX - 21 {
            continue;
        }
        let all_free = (base..=base + 20).all(|p| StdListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free range of 21 ports found");
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only on a failed test: do not leave the process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `station-sim --port-base <free>` and collects its banner up to "Ctrl-C stops.".
/// `None` when the process exited early (someone took a port in the meantime).
fn start_binary(base: u16) -> Option<(Running, Vec<String>)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_station-sim"))
        .args(["--port-base", &base.to_string(), "--speed", "60"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let running = Running { child, lines: rx };
    let mut banner = Vec::new();
    loop {
        match running.lines.recv_timeout(T) {
            Ok(line) => {
                let done = line.contains("Ctrl-C stops");
                banner.push(line);
                if done {
                    return Some((running, banner));
                }
            }
            // The pipe closed: the process ended (a port was taken after the probe).
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no banner within {T:?}: {banner:?}"),
        }
    }
}

#[tokio::test]
async fn the_binary_prints_every_endpoint_and_stops_cleanly_on_sigint() {
    let (mut running, banner, base) = (0..5)
        .find_map(|_| {
            let base = free_port_base();
            start_binary(base).map(|(r, b)| (r, b, base))
        })
        .expect("station-sim started on a free port range");
    let text = banner.join("\n");
    let mut expected: Vec<(String, u16)> = vec![
        ("pv".into(), base),
        ("battery".into(), base + 1),
        ("grid-meter".into(), base + 2),
        ("building-meter".into(), base + 3),
    ];
    expected.extend((1..=8u16).map(|i| (format!("charger-{i}"), base + 9 + i)));
    for (id, port) in &expected {
        let line = banner
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no line for {id} in\n{text}"));
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        let probe = if id.starts_with("charger-") {
            1201
        } else {
            40000
        };
        connect(SocketAddr::from(([127, 0, 0, 1], *port)), 1, probe).await;
    }
    let api = SocketAddr::from(([127, 0, 0, 1], base + 9));
    assert!(
        text.contains(&format!("http://{api}/truth")),
        "control API in\n{text}"
    );
    wait_for_api(api).await;
    assert!(get_truth(api).await["chargers"].as_array().unwrap().len() == 8);

    let pid = running.child.id().to_string();
    // `kill` as the shell's builtin: slim images may lack the procps binary.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + T;
    let exit = loop {
        if let Some(exit) = running.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "station-sim still running after SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // The rest of stdout, up to the end of the pipe.
    let mut rest = Vec::new();
    while let Ok(line) = running.lines.recv_timeout(T) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l.starts_with("stopping")), "{rest:?}");
    assert!(tokio::net::TcpStream::connect(api).await.is_err());
}

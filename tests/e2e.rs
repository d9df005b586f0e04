//! End to end: the real daemon against the simulator in process, over Modbus TCP on loopback.
//! The daemon's clock follows the simulator's, which runs faster than real time.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use station_controller::config::StationConfig;
use station_controller::daemon::status::{LinkState, Status};
use station_controller::demo::{self, Demo};
use station_controller::dispatch::ChargeMode;
use station_sim::faults::{FaultKindName, FaultRequest, FaultValue};
use station_sim::runtime::{SimConfig, Truth};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{plug, until};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn fault(device: &str, kind: FaultKindName) -> FaultRequest {
    FaultRequest {
        device: device.to_string(),
        kind,
        duration_s: None,
        latency_ms: None,
        code: None,
        point: None,
        value: None,
    }
}

fn status(d: &Demo) -> Option<Arc<Status>> {
    d.daemon.shared.status()
}

/// Wait until the simulator's clock has passed `secs` more simulated seconds.
async fn run_for(d: &Demo, secs: i64) {
    let end = d.sim.now() + chrono::Duration::seconds(secs);
    until("simulated time", Duration::from_secs(600), || {
        (d.sim.now() >= end).then_some(())
    })
    .await;
}

fn charger<'a>(t: &'a Truth, id: &str) -> &'a station_sim::runtime::ChargerTruth {
    t.chargers.iter().find(|c| c.id == id).unwrap()
}

async fn start(
    scenario: &str,
    speed: f64,
    at: &str,
    adjust: impl FnOnce(&mut StationConfig),
) -> Demo {
    let sc = demo::scenario(scenario).unwrap();
    let d = Demo::start_at(sc, 7, speed, Some(at), loopback(), adjust)
        .await
        .unwrap();
    until("the first control cycle", Duration::from_secs(30), || {
        status(&d).filter(|s| s.cycle >= 3).map(|_| ())
    })
    .await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sunny_midday_with_zero_export_keeps_every_limit_and_charges_solar_cars_from_surplus() {
    let d = start("sunny-weekday", 60.0, "11:30", |c| {
        c.policy.grid.export_limit = station_controller::units::Watts(0.0);
        c.policy.vehicles.default_mode = ChargeMode::Solar;
        // The battery (at 50 %) may not charge, so the surplus beyond the car must be curtailed.
        c.policy.battery.soc_max = station_controller::units::Percent(50.0);
    })
    .await;
    d.sim.plug(&plug("charger-1")).unwrap();
    // The PV was unlimited before the daemon started: let the first limit ramp in.
    run_for(&d, 60).await;
    let before = d.sim.truth().kpis;
    let mut max_export_w: f64 = 0.0;
    let mut pv_limited_seen = false;
    let end = d.sim.now() + chrono::Duration::minutes(40);
    let mut charged_from_surplus = false;
    while d.sim.now() < end {
        let t = d.sim.truth();
        max_export_w = max_export_w.max(-t.grid.power_w);
        pv_limited_seen |= t.pv.limit_enabled && t.pv.limit_pct < 99.0;
        let c1 = charger(&t, "charger-1");
        if c1.power_w > 4000.0 && t.grid.power_w < 2000.0 {
            charged_from_surplus = true;
        }
        // Sampling interval while the scenario plays out (the loop ends on simulated time).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = d.sim.truth().kpis;
    assert_eq!(
        after.import_limit_exceeded_s, before.import_limit_exceeded_s,
        "import limit exceeded"
    );
    assert_eq!(after.soc_window_violation_s, 0.0);
    assert!(
        charged_from_surplus,
        "solar cars never charged from the PV surplus"
    );
    assert!(
        after.ev_delivered_kwh > before.ev_delivered_kwh + 1.0,
        "cars got {} kWh",
        after.ev_delivered_kwh - before.ev_delivered_kwh
    );
    // Zero export: PV is limited when the site cannot absorb it. A load that steps down (the
    // workshop) exports for a cycle plus the inverter's ramp, no longer.
    assert!(pv_limited_seen, "PV was never limited although export is 0");
    let exported_kwh = after.grid_export_kwh - before.grid_export_kwh;
    assert!(
        exported_kwh < 0.5,
        "exported {exported_kwh} kWh (peak {max_export_w} W)"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pv_is_not_limited_while_export_stays_within_its_limit() {
    let d = start("sunny-weekday", 60.0, "11:00", |_| {}).await;
    run_for(&d, 600).await;
    let t = d.sim.truth();
    assert!(t.pv.power_w > 20_000.0, "PV should be producing at noon");
    assert!(
        !t.pv.limit_enabled || t.pv.limit_pct >= 99.0,
        "PV limited to {} % with export {} W under a 100 kW limit",
        t.pv.limit_pct,
        -t.grid.power_w
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ev_rush_at_the_building_peak_never_breaches_the_import_limit() {
    let d = start("ev-rush", 30.0, "12:55", |_| {}).await;
    let before = d.sim.truth().kpis;
    // The scenario plugs all eight cars between 13:00 and 13:18.
    let end = d.sim.now() + chrono::Duration::minutes(35);
    let mut max_import_w: f64 = 0.0;
    while d.sim.now() < end {
        max_import_w = max_import_w.max(d.sim.truth().grid.power_w);
        // Sampling interval while the scenario plays out (the loop ends on simulated time).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = d.sim.truth();
    let plugged = t.chargers.iter().filter(|c| c.vehicle.is_some()).count();
    assert!(plugged >= 6, "only {plugged} cars plugged in");
    let exceeded = t.kpis.import_limit_exceeded_s - before.import_limit_exceeded_s;
    // At most one cycle (1 s) per plug-in while the new car ramps to its first setpoint.
    assert!(exceeded <= 8.0, "import limit exceeded for {exceeded} s");
    assert!(
        max_import_w <= 150_000.0 * 1.05,
        "import reached {max_import_w} W"
    );
    assert!(t.kpis.ev_delivered_kwh - before.ev_delivered_kwh > 20.0);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_grid_meter_puts_cars_at_their_safe_current_and_control_resumes_when_it_returns() {
    let d = start("sunny-weekday", 30.0, "10:00", |_| {}).await;
    for id in ["charger-1", "charger-2", "charger-3"] {
        d.sim.plug(&plug(id)).unwrap();
    }
    until(
        "cars charging above the safe current",
        Duration::from_secs(60),
        || {
            let t = d.sim.truth();
            (charger(&t, "charger-1").applied_max_a > 10.0).then_some(())
        },
    )
    .await;
    d.sim
        .inject(&fault("grid-meter", FaultKindName::Offline))
        .unwrap();
    // Stale after 3 cycles, plus the read timeout, plus one cycle.
    run_for(&d, 8).await;
    until("safe current on every car", Duration::from_secs(30), || {
        let t = d.sim.truth();
        ["charger-1", "charger-2", "charger-3"]
            .iter()
            .all(|id| charger(&t, id).applied_max_a <= 6.0 + 1e-6)
            .then_some(())
    })
    .await;
    let s = status(&d).unwrap();
    let grid = s.devices.iter().find(|x| x.id == "grid-meter").unwrap();
    assert_ne!(grid.link, LinkState::Online);
    assert!(
        s.reasons.iter().any(|r| r.contains("grid")),
        "{:?}",
        s.reasons
    );

    d.sim.clear_faults();
    until("control to resume", Duration::from_secs(60), || {
        let t = d.sim.truth();
        (charger(&t, "charger-1").applied_max_a > 10.0).then_some(())
    })
    .await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charger_offline_at_start_does_not_stop_the_daemon_and_is_brought_in_when_it_appears() {
    let sc = demo::scenario("sunny-weekday").unwrap();
    let start = sc.resolve_local("10:00");
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        ..SimConfig::ephemeral(sc, 3, 30.0)
    })
    .await
    .unwrap();
    sim.inject(&fault("charger-3", FaultKindName::Offline))
        .unwrap();
    sim.plug(&plug("charger-1")).unwrap();
    sim.plug(&plug("charger-3")).unwrap();
    let d = Demo::attach(sim, 30.0, loopback(), |_| {}).await.unwrap();
    until("charger-1 served", Duration::from_secs(60), || {
        let t = d.sim.truth();
        (charger(&t, "charger-1").applied_max_a > 10.0).then_some(())
    })
    .await;
    let s = status(&d).unwrap();
    let c3 = s.devices.iter().find(|x| x.id == "charger-3").unwrap();
    assert_ne!(c3.link, LinkState::Online);
    d.sim.clear_faults();
    until("charger-3 brought in", Duration::from_secs(90), || {
        let s = status(&d)?;
        let c3 = s.devices.iter().find(|x| x.id == "charger-3")?;
        let t = d.sim.truth();
        (c3.link == LinkState::Online && charger(&t, "charger-3").remaining_validity_s > 0)
            .then_some(())
    })
    .await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bms_alarm_idles_the_battery_and_absurd_readings_degrade_the_device() {
    // Evening peak: the policy discharges the battery.
    let d = start("sunny-weekday", 30.0, "18:05", |_| {}).await;
    until("battery discharging", Duration::from_secs(60), || {
        (d.sim.truth().battery.setpoint_w > 1000.0).then_some(())
    })
    .await;
    d.sim
        .inject(&fault("battery", FaultKindName::BmsAlarm))
        .unwrap();
    until(
        "battery setpoint 0 after the alarm",
        Duration::from_secs(30),
        || {
            let s = status(&d)?;
            (s.battery.setpoint_w == 0.0 && d.sim.truth().battery.power_w.abs() < 1.0).then_some(())
        },
    )
    .await;
    d.sim.clear_faults();

    let mut bad = fault("battery", FaultKindName::BadValue);
    bad.point = Some("soc_pct".into());
    bad.value = Some(FaultValue::Number(250.0));
    d.sim.inject(&bad).unwrap();
    let cycle_before = status(&d).unwrap().cycle;
    until("battery degraded", Duration::from_secs(30), || {
        let s = status(&d)?;
        let b = s.devices.iter().find(|x| x.id == "battery")?;
        (b.link == LinkState::Degraded).then_some(())
    })
    .await;
    let s = status(&d).unwrap();
    assert!(s.cycle > cycle_before, "the control loop stopped");
    // The absurd value never reaches dispatch: the status holds no 250 % SoC.
    assert!(s.battery.soc_pct.is_none_or(|v| v <= 100.0));
    d.sim.clear_faults();

    let mut nan = fault("pv", FaultKindName::BadValue);
    nan.point = Some("power_w".into());
    nan.value = Some(FaultValue::Text("NaN".into()));
    d.sim.inject(&nan).unwrap();
    run_for(&d, 10).await;
    let s = status(&d).unwrap();
    let pv = s.devices.iter().find(|x| x.id == "pv").unwrap();
    assert_ne!(pv.link, LinkState::Online, "a NaN PV power was accepted");
    assert!(s.pv.power_w.is_none_or(f64::is_finite));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_daemon_writes_safe_setpoints() {
    let d = start("sunny-weekday", 30.0, "18:05", |_| {}).await;
    d.sim.plug(&plug("charger-2")).unwrap();
    until("car charging fast", Duration::from_secs(60), || {
        (charger(&d.sim.truth(), "charger-2").applied_max_a > 10.0).then_some(())
    })
    .await;
    let sim = {
        d.cancel.cancel();
        d.tracker.close();
        d.tracker.wait().await;
        d.sim
    };
    let t = sim.truth();
    assert!(charger(&t, "charger-2").setpoint_a <= 6.0 + 1e-6);
    assert!(t.battery.setpoint_w.abs() < 1.0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_serves_status_health_metrics_history_and_refuses_bad_requests() {
    let d = start("sunny-weekday", 60.0, "12:00", |_| {}).await;
    run_for(&d, 120).await;
    let base = format!("http://{}", d.daemon.api_addr);
    let http = reqwest::Client::new();
    let st: serde_json::Value = http
        .get(format!("{base}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in ["grid", "pv", "battery", "building"] {
        assert!(st[key].is_object(), "{key} missing: {st}");
    }
    assert!(st["grid"]["power_w"].is_number());
    assert!(st["pv"]["limit_pct"].is_number());
    assert!(st["battery"]["soc_pct"].is_number());
    assert!(st["battery"]["soh_pct"].is_number());
    assert!(st["battery"]["power_w"].is_number());
    assert!(st["building"]["power_w"].is_number());
    let c = &st["chargers"][0];
    for key in ["id", "state", "current_a", "setpoint_a", "power_w"] {
        assert!(!c[key].is_null(), "chargers[0].{key} missing: {c}");
    }
    assert_eq!(st["devices"].as_array().unwrap().len(), 12);
    assert!(st["devices"][0]["last_ok"].is_string());
    assert!(st["reasons"].is_array());

    let health = http.get(format!("{base}/api/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("station_grid_power_watts "));
    assert!(metrics.contains("station_charger_setpoint_amperes{device=\"charger-3\"}"));
    assert!(metrics.contains("station_control_cycle_duration_seconds_count"));
    assert!(metrics.contains("station_ledger_dropped_cycles_total 0"));
    let history: serde_json::Value = http
        .get(format!("{base}/api/history?hours=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!history["points"].as_array().unwrap().is_empty());
    let energy: serde_json::Value = http
        .get(format!("{base}/api/energy"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(energy["totals"]["sum"]["import_wh"].as_f64().unwrap() >= 0.0);
    let csv = http
        .get(format!("{base}/api/energy?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/csv"));

    for bad in [
        "/api/history?hours=-1",
        "/api/history?hours=abc",
        "/api/energy?from=yesterday",
        "/api/energy?from=2026-07-15T00:00:00Z&to=2026-07-14T00:00:00Z",
        "/api/sessions?format=xml",
        "/api/sessions?colour=red",
    ] {
        let r = http.get(format!("{base}{bad}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    // Behaviour-changing endpoints are refused without a configured token.
    let r = http
        .post(format!("{base}/api/chargers/charger-1/mode"))
        .json(&serde_json::json!({"mode": "solar"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charger_mode_change_needs_the_bearer_token() {
    let d = start("sunny-weekday", 30.0, "12:00", |c| {
        c.api_token = Some("s3cret".into());
    })
    .await;
    let base = format!("http://{}", d.daemon.api_addr);
    let http = reqwest::Client::new();
    let post = async |token: &str, charger: &str, mode: &str| {
        http.post(format!("{base}/api/chargers/{charger}/mode"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(post("wrong", "charger-1", "solar").await, 401);
    assert_eq!(post("s3cret", "charger-1", "warp").await, 400);
    assert_eq!(post("s3cret", "charger-99", "solar").await, 404);
    assert_eq!(post("s3cret", "charger-1", "solar").await, 200);
    until("mode shown in status", Duration::from_secs(30), || {
        let s = status(&d)?;
        (s.chargers.iter().find(|c| c.id == "charger-1")?.mode == "solar").then_some(())
    })
    .await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_accounts_for_the_energy_the_simulator_measured() {
    let d = start("sunny-weekday", 60.0, "10:00", |_| {}).await;
    for id in ["charger-1", "charger-4"] {
        d.sim.plug(&plug(id)).unwrap();
    }
    let from = d.sim.now();
    let before = d.sim.truth().kpis;
    run_for(&d, 3600).await;
    let to = d.sim.now();
    let after = d.sim.truth().kpis;
    // Buckets are whole quarter hours: ask for every bucket the run touched (the daemon had
    // run for three cycles before `from`, a few Wh).
    let totals = d
        .daemon
        .shared
        .ledger_totals(
            station_controller::ledger::bucket_start(from),
            to + chrono::Duration::minutes(15),
        )
        .await
        .unwrap();
    let sum = &totals.sum;
    let close = |what: &str, ledger_kwh: f64, truth_kwh: f64| {
        let tol = 0.03 * truth_kwh.abs() + 0.5;
        assert!(
            (ledger_kwh - truth_kwh).abs() <= tol,
            "{what}: ledger {ledger_kwh:.2} kWh, simulator {truth_kwh:.2} kWh"
        );
    };
    close("PV", sum.pv_wh / 1000.0, after.pv_kwh - before.pv_kwh);
    close(
        "grid import",
        sum.import_wh / 1000.0,
        after.grid_import_kwh - before.grid_import_kwh,
    );
    close(
        "EV energy",
        sum.vehicles_wh / 1000.0,
        after.ev_delivered_kwh - before.ev_delivered_kwh,
    );
    // Every measured Wh lands in a flow: what the flows add up to is what was measured.
    let to_loads = sum.pv_to_building_wh
        + sum.pv_to_vehicles_wh
        + sum.battery_to_building_wh
        + sum.battery_to_vehicles_wh
        + sum.grid_to_building_wh
        + sum.grid_to_vehicles_wh;
    let loads = sum.building_wh + sum.vehicles_wh;
    assert!(
        (to_loads - loads).abs() <= 0.001 * loads + 1.0,
        "flows to loads {to_loads} Wh, loads {loads} Wh"
    );
    assert!(
        sum.unaccounted_wh.abs() <= 0.01 * loads + 50.0,
        "unaccounted {} Wh",
        sum.unaccounted_wh
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_building_meter_reading_zero_cannot_push_the_grid_over_its_limit() {
    // The battery is kept out of it (its window starts above its SoC), so only the cars can
    // make room, as with an empty battery.
    let d = start("ev-rush", 30.0, "12:55", |c| {
        c.policy.battery.soc_min = station_controller::units::Percent(90.0);
        c.policy.battery.soc_max = station_controller::units::Percent(95.0);
    })
    .await;
    // The scenario plugs all eight cars between 13:00 and 13:18.
    let plugged = d.sim.now() + chrono::Duration::minutes(24);
    until("the rush", Duration::from_secs(120), || {
        (d.sim.now() >= plugged).then_some(())
    })
    .await;
    let mut zero = fault("building-meter", FaultKindName::BadValue);
    zero.point = Some("power_w".into());
    zero.value = Some(FaultValue::Number(0.0));
    d.sim.inject(&zero).unwrap();
    let before = d.sim.truth().kpis;
    let end = d.sim.now() + chrono::Duration::minutes(10);
    let mut max_import_w: f64 = 0.0;
    while d.sim.now() < end {
        max_import_w = max_import_w.max(d.sim.truth().grid.power_w);
        // Sampling interval while the fault plays out (the loop ends on simulated time).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = d.sim.truth();
    assert!(
        t.building.power_w > 40_000.0,
        "the building draws {} W",
        t.building.power_w
    );
    let exceeded = t.kpis.import_limit_exceeded_s - before.import_limit_exceeded_s;
    assert!(exceeded <= 2.0, "import limit exceeded for {exceeded} s");
    assert!(
        max_import_w <= 150_000.0 * 1.02,
        "import reached {max_import_w} W"
    );
    assert!(t.kpis.ev_delivered_kwh - before.ev_delivered_kwh > 5.0);
    // The meters disagree by the building's load: the building meter is shown degraded.
    let s = status(&d).unwrap();
    let meter = s.devices.iter().find(|x| x.id == "building-meter").unwrap();
    assert_eq!(meter.link, LinkState::Degraded, "{meter:?}");
    let warning = meter.warning.as_deref().unwrap_or_default();
    assert!(warning.contains("meters disagree"), "{warning}");
    assert!(
        s.reasons.iter().any(|r| r.contains("grid meter reads")),
        "{:?}",
        s.reasons
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_charger_does_not_stop_energy_accounting_and_its_buckets_are_marked_estimated() {
    let d = start("sunny-weekday", 60.0, "10:00", |_| {}).await;
    for id in ["charger-1", "charger-4"] {
        d.sim.plug(&plug(id)).unwrap();
    }
    let from = d.sim.now();
    let before = d.sim.truth().kpis;
    d.sim
        .inject(&fault("charger-4", FaultKindName::Offline))
        .unwrap();
    run_for(&d, 1800).await;
    let to = d.sim.now();
    let after = d.sim.truth().kpis;
    let (buckets, totals) = d
        .daemon
        .shared
        .ledger_buckets(
            station_controller::ledger::bucket_start(from),
            to + chrono::Duration::minutes(15),
        )
        .await
        .unwrap();
    assert!(buckets.iter().any(|b| b.is_estimated()), "{buckets:?}");
    let covered: f64 = buckets.iter().map(|b| b.covered_s).sum();
    assert!(covered >= 1700.0, "only {covered} s booked");
    let ledger_kwh = totals.sum.vehicles_wh / 1000.0;
    let truth_kwh = after.ev_delivered_kwh - before.ev_delivered_kwh;
    assert!(
        (ledger_kwh - truth_kwh).abs() <= 0.03 * truth_kwh + 0.5,
        "EV energy: ledger {ledger_kwh:.2} kWh, simulator {truth_kwh:.2} kWh"
    );
    let base = format!("http://{}", d.daemon.api_addr);
    let energy: serde_json::Value = reqwest::get(format!("{base}/api/energy"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let marked = energy["buckets"].as_array().unwrap();
    assert!(marked.iter().any(|b| b["estimated"] == true), "{energy}");
    let csv = reqwest::get(format!("{base}/api/energy?format=csv"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.lines().any(|l| l.ends_with(",true")), "{csv}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_months_demand_peak_from_the_ledger() {
    let (dir, path) = support::fresh_ledger("e2e-demand");
    let options = || station_controller::daemon::Options {
        ledger_path: Some(path.clone()),
        ..Default::default()
    };
    let sc = demo::scenario("sunny-weekday").unwrap();
    let sim = station_sim::runtime::spawn(SimConfig {
        start: sc.resolve_local("18:00"),
        ..SimConfig::ephemeral(sc, 7, 60.0)
    })
    .await
    .unwrap();
    for id in ["charger-1", "charger-2"] {
        sim.plug(&plug(id)).unwrap();
    }
    let d = Demo::attach_with(sim, 60.0, loopback(), options(), |_| {})
        .await
        .unwrap();
    let peak = until("a closed demand window", Duration::from_secs(120), || {
        let s = status(&d)?;
        (s.grid.month_peak_w > 0.0).then_some(s.grid.month_peak_w)
    })
    .await;
    let sim = d.stop_daemon().await;
    let d = Demo::attach_with(sim, 60.0, loopback(), options(), |_| {})
        .await
        .unwrap();
    let first = until(
        "the first cycle after the restart",
        Duration::from_secs(30),
        || status(&d),
    )
    .await;
    assert!(
        first.grid.month_peak_w >= peak,
        "month peak {} W after the restart, {peak} W before",
        first.grid.month_peak_w
    );
    d.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_back_and_forth_neither_freeze_polling_nor_stale_the_readings() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let sc = demo::scenario("sunny-weekday").unwrap();
    let start = sc.resolve_local("11:00");
    let sim = station_sim::runtime::spawn(SimConfig {
        start,
        ..SimConfig::ephemeral(sc, 5, 60.0)
    })
    .await
    .unwrap();
    // The daemon's wall clock is the simulator's plus an offset the test steps, as NTP would.
    let offset_s = Arc::new(AtomicI64::new(0));
    let source = sim.time_source();
    let step = offset_s.clone();
    let clock = station_controller::clock::FollowClock::new(
        move || source() + chrono::Duration::seconds(step.load(Ordering::Relaxed)),
        60.0,
    );
    let options = station_controller::daemon::Options::default();
    let d = Demo::attach_clocked(sim, Arc::new(clock), loopback(), options, |_| {})
        .await
        .unwrap();
    until("the first cycles", Duration::from_secs(30), || {
        status(&d).filter(|s| s.cycle >= 3).map(|_| ())
    })
    .await;

    // Back 30 minutes (30 s of real time at 60x): the daemon must keep polling.
    offset_s.store(-1800, Ordering::Relaxed);
    d.sim.plug(&plug("charger-5")).unwrap();
    until(
        "charger-5 read after the step back",
        Duration::from_secs(10),
        || {
            let s = status(&d)?;
            let c = s.chargers.iter().find(|c| c.id == "charger-5")?;
            (c.state != "A" && c.state != "unknown").then_some(())
        },
    )
    .await;
    until(
        "charger-5 served after the step back",
        Duration::from_secs(10),
        || (charger(&d.sim.truth(), "charger-5").applied_max_a > 6.5).then_some(()),
    )
    .await;

    // Forward 30 minutes: readings taken a moment ago are still fresh.
    offset_s.store(1800, Ordering::Relaxed);
    let after = status(&d).unwrap().cycle + 2;
    until(
        "two cycles after the step forward",
        Duration::from_secs(10),
        || status(&d).filter(|s| s.cycle >= after).map(|_| ()),
    )
    .await;
    for _ in 0..5 {
        let s = status(&d).unwrap();
        assert!(
            s.grid.fresh,
            "grid reading stale after a clock step: {:?}",
            s.reasons
        );
        assert!(
            !s.reasons.iter().any(|r| r.contains("stale")),
            "{:?}",
            s.reasons
        );
        let c = s.chargers.iter().find(|c| c.id == "charger-5").unwrap();
        assert!(c.setpoint_a > 6.5, "charger-5 cut to {} A", c.setpoint_a);
        // Sampling interval: a few cycles pass between the looks.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_device_neither_stretches_the_cycle_nor_holds_up_shutdown() {
    // 10x: 100 ms cycles, so the I/O budget is its 100 ms floor (reads get 60 ms of it).
    let d = start("sunny-weekday", 10.0, "11:00", |_| {}).await;
    d.sim.plug(&plug("charger-2")).unwrap();
    until("charger-2 served", Duration::from_secs(30), || {
        (charger(&d.sim.truth(), "charger-2").applied_max_a > 6.5).then_some(())
    })
    .await;
    // The PV inverter answers every request 900 ms late (its timeout is 500 ms).
    let mut slow = fault("pv", FaultKindName::Latency);
    slow.latency_ms = Some(900);
    d.sim.inject(&slow).unwrap();
    let from = status(&d).unwrap().cycle + 2;
    let mut longest_ms: f64 = 0.0;
    let mut seen = 0;
    until(
        "20 cycles with a slow PV inverter",
        Duration::from_secs(30),
        || {
            let s = status(&d)?;
            if s.cycle >= from {
                longest_ms = longest_ms.max(s.cycle_ms);
                seen += 1;
            }
            (seen >= 20 && s.cycle >= from + 20).then_some(())
        },
    )
    .await;
    assert!(longest_ms < 200.0, "a cycle took {longest_ms} ms");
    let s = status(&d).unwrap();
    assert!(
        s.grid.fresh,
        "the grid meter went stale beside the slow inverter"
    );
    let pv = s.devices.iter().find(|x| x.id == "pv").unwrap();
    assert_ne!(pv.link, LinkState::Online, "{pv:?}");

    // Every charger now slow too: shutdown must not wait for the cycle under way.
    for id in ["charger-1", "charger-2", "charger-3", "charger-4"] {
        let mut slow = fault(id, FaultKindName::Latency);
        slow.latency_ms = Some(400);
        d.sim.inject(&slow).unwrap();
    }
    let started = std::time::Instant::now();
    let sim = d.stop_daemon().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "shutdown took {took:?}"
    );
    // The safe current went out despite the latency (the simulator applies it as it arrives).
    until(
        "charger-2 at its safe current",
        Duration::from_secs(10),
        || (charger(&sim.truth(), "charger-2").applied_max_a <= 6.0 + 1e-6).then_some(()),
    )
    .await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http_port_is_a_clear_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let sc = demo::scenario("sunny-weekday").unwrap();
    let err = match Demo::start_at(sc, 1, 60.0, Some("11:00"), addr, |_| {}).await {
        Ok(_) => panic!("the daemon started on a busy port"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr.to_string()), "{err}");
}

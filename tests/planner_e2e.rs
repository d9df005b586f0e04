//! End to end: the real daemon with `[planner]` on against the simulator in process (src/daemon/
//! planning.rs). A plan is made off the control loop, session wishes are accepted or refused
//! with the field named, and the control cycle goes on while the solver fails or is late.
//! Limits are judged on the simulator's truth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use serde_json::{json, Value};
use station_controller::config::planner::{PlannerSettings, RawPlanner, SolveFault};
use station_controller::config::{Issues, StationConfig};
use station_controller::daemon::status::Status;
use station_controller::demo::{self, Demo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{plug, until, until_async};

const TOKEN: &str = "s3cret";

fn settings(c: &StationConfig) -> PlannerSettings {
    let chargers: Vec<String> = c.chargers().map(|(d, _)| d.id.clone()).collect();
    let raw = RawPlanner {
        enabled: true,
        horizon_h: 24.0,
        lat_deg: 31.2,
        lon_deg: 121.5,
        kwp: 150.0,
        ..RawPlanner::default()
    };
    let mut issues = Issues::new();
    let s = raw.validate(&chargers, Some(135.0), &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    s.unwrap()
}

async fn start(at: &str, fault: Option<SolveFault>, timeout: Option<Duration>) -> Demo {
    start_with(at, fault, timeout, |_| {}).await
}

async fn start_with(
    at: &str,
    fault: Option<SolveFault>,
    timeout: Option<Duration>,
    adjust: impl FnOnce(&mut StationConfig),
) -> Demo {
    let sc = demo::scenario("sunny-weekday").unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let d = Demo::start_at(sc, 7, 60.0, Some(at), listen, |c| {
        c.api_token = Some(TOKEN.into());
        let mut s = settings(c);
        s.fault = fault;
        if let Some(t) = timeout {
            s.solve_timeout = t;
        }
        c.planner = Some(s);
        adjust(c);
    })
    .await
    .unwrap();
    until("the first control cycle", Duration::from_secs(30), || {
        status(&d).filter(|s| s.cycle >= 3).map(|_| ())
    })
    .await;
    d
}

fn status(d: &Demo) -> Option<Arc<Status>> {
    d.daemon.shared.status()
}

async fn get_plan(d: &Demo) -> Value {
    reqwest::get(format!("http://{}/api/plan", d.daemon.api_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn post_json(d: &Demo, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", d.daemon.api_addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post_wish(d: &Demo, token: &str, charger: &str, body: Value) -> (u16, Value) {
    post_json(d, token, &format!("/api/chargers/{charger}/session"), body).await
}

/// Until the daemon has read the car at `charger` (a wish for it is taken only then).
async fn seen_plugged(d: &Demo, charger: &str) {
    until("the car seen plugged in", Duration::from_secs(30), || {
        status(d)
            .filter(|s| s.chargers.iter().any(|c| c.id == charger && c.state != "A"))
            .map(|_| ())
    })
    .await;
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_plans_and_takes_or_refuses_session_wishes_within_the_import_limit() {
    let d = start("09:50", None, None).await;
    d.sim.plug(&plug("charger-1")).unwrap();
    seen_plugged(&d, "charger-1").await;
    let before = d.sim.truth().kpis;
    let plan = until_async("a plan", Duration::from_secs(120), async || {
        let p = get_plan(&d).await;
        p["made_at"].is_string().then_some(p)
    })
    .await;
    let steps = plan["steps"].as_array().unwrap();
    assert!(steps.len() >= 95, "{} steps", steps.len());
    let noon_pv = steps
        .iter()
        .map(|s| s["pv_forecast_w"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(noon_pv > 30_000.0, "PV forecast peaks at {noon_pv} W");
    assert!(steps
        .iter()
        .all(|s| s["import_ceiling_w"].as_f64().unwrap() <= 150_000.0));

    let now = d.sim.now();
    let at = |h: f64| (now + chrono::Duration::seconds((h * 3600.0) as i64)).to_rfc3339();
    // Refused at once, naming the field.
    let (code, body) = post_wish(
        &d,
        TOKEN,
        "charger-1",
        json!({"departure": at(1.0), "energy_kwh": 150}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        error_of(&body).starts_with("energy_kwh: 150.0 kWh cannot be delivered"),
        "{body}"
    );
    let (code, body) = post_wish(
        &d,
        TOKEN,
        "charger-1",
        json!({"departure": "tomorrow", "energy_kwh": 10}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(error_of(&body).starts_with("departure:"), "{body}");
    let (code, body) = post_wish(
        &d,
        TOKEN,
        "charger-5",
        json!({"departure": at(2.0), "energy_kwh": 10}),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(error_of(&body), "id: no car is plugged in at charger-5");
    let (code, _) = post_wish(
        &d,
        "wrong",
        "charger-1",
        json!({"departure": at(2.0), "energy_kwh": 10}),
    )
    .await;
    assert_eq!(code, 401);
    // Taken, planned, and shown on the charger.
    let (code, body) = post_wish(
        &d,
        TOKEN,
        "charger-1",
        json!({"departure": at(3.0), "energy_kwh": 25}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "pending");
    let wish = until("the wish planned", Duration::from_secs(120), || {
        let s = status(&d)?;
        let w = s
            .chargers
            .iter()
            .find(|c| c.id == "charger-1")?
            .wish
            .clone()?;
        (w.state != "pending").then_some(w)
    })
    .await;
    assert_eq!(wish.state, "planned", "{wish:?}");
    // The plan budgets the car, and the cycle follows the plan (no planner reason).
    let plan = get_plan(&d).await;
    assert_eq!(plan["wishes"]["charger-1"]["state"], "planned");
    let s = status(&d).unwrap();
    assert!(
        !s.reasons.iter().any(|r| r.starts_with("planner:")),
        "{:?}",
        s.reasons
    );
    // Twenty simulated minutes later the car has charged and no limit was broken.
    let end = d.sim.now() + chrono::Duration::minutes(20);
    until("twenty simulated minutes", Duration::from_secs(120), || {
        (d.sim.now() >= end).then_some(())
    })
    .await;
    let t = d.sim.truth();
    assert_eq!(
        t.kpis.import_limit_exceeded_s,
        before.import_limit_exceeded_s
    );
    assert_eq!(t.kpis.soc_window_violation_s, 0.0);
    assert!(t.kpis.ev_delivered_kwh > before.ev_delivered_kwh + 2.0);
    // The forecasters learnt the quarters the ledger booked (a quarter boundary has passed).
    let learnt = until_async("a quarter learnt", Duration::from_secs(60), async || {
        let q = get_plan(&d).await["history_quarters"].as_u64()?;
        (q >= 1).then_some(q)
    })
    .await;
    assert!(learnt <= 4, "{learnt} quarters from a 30-minute run");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wish_the_grid_cannot_carry_is_reported_as_cannot_meet_and_the_limit_holds() {
    // At night with no battery energy to spare (its floor at 95 %) and 26 kW of import for a
    // building of about 20 kW, a car cannot get 20 kWh in 2 h.
    let d = start_with("02:00", None, None, |c| {
        c.policy.grid.import_limit = station_controller::units::Watts(26_000.0);
        c.policy.battery.soc_min = station_controller::units::Percent(95.0);
        c.policy.battery.soc_max = station_controller::units::Percent(96.0);
    })
    .await;
    d.sim.plug(&plug("charger-1")).unwrap();
    until("the car seen", Duration::from_secs(30), || {
        let s = status(&d)?;
        (s.chargers
            .iter()
            .find(|c| c.id == "charger-1")?
            .state
            .starts_with(['B', 'C']))
        .then_some(())
    })
    .await;
    let before = d.sim.truth().kpis;
    let departure = (d.sim.now() + chrono::Duration::hours(2)).to_rfc3339();
    let (code, body) = post_wish(
        &d,
        TOKEN,
        "charger-1",
        json!({"departure": departure, "energy_kwh": 20}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let wish = until("the wish judged", Duration::from_secs(120), || {
        let s = status(&d)?;
        let w = s
            .chargers
            .iter()
            .find(|c| c.id == "charger-1")?
            .wish
            .clone()?;
        (w.state != "pending").then_some(w)
    })
    .await;
    assert_eq!(wish.state, "cannot_meet", "{wish:?}");
    assert!(
        wish.reason
            .as_deref()
            .unwrap()
            .starts_with("the plan delivers"),
        "{wish:?}"
    );
    let s = status(&d).unwrap();
    assert!(
        s.reasons
            .iter()
            .any(|r| r.starts_with("charger-1: the session wish cannot be met")),
        "{:?}",
        s.reasons
    );
    let end = d.sim.now() + chrono::Duration::minutes(10);
    until("ten simulated minutes", Duration::from_secs(60), || {
        (d.sim.now() >= end).then_some(())
    })
    .await;
    let t = d.sim.truth();
    assert_eq!(
        t.kpis.import_limit_exceeded_s,
        before.import_limit_exceeded_s
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_solver_leaves_the_rule_policy_running_with_a_reason() {
    let d = start("10:00", Some(SolveFault::Fail), None).await;
    d.sim.plug(&plug("charger-2")).unwrap();
    let reason = until("the planner's reason", Duration::from_secs(60), || {
        let s = status(&d)?;
        s.reasons
            .iter()
            .find(|r| r.starts_with("planner:"))
            .cloned()
    })
    .await;
    assert!(
        reason.contains("injected failure") && reason.contains("rule policy runs"),
        "{reason}"
    );
    let c0 = status(&d).unwrap().cycle;
    let before = d.sim.truth().kpis;
    until("cycles going on", Duration::from_secs(60), || {
        (status(&d)?.cycle >= c0 + 100).then_some(())
    })
    .await;
    let plan = get_plan(&d).await;
    assert!(plan["failures"].as_u64().unwrap() >= 1, "{plan}");
    assert!(plan["made_at"].is_null());
    let t = d.sim.truth();
    assert_eq!(
        t.kpis.import_limit_exceeded_s,
        before.import_limit_exceeded_s
    );
    let c2 = t.chargers.iter().find(|c| c.id == "charger-2").unwrap();
    assert!(
        c2.applied_max_a >= 6.0,
        "the rule policy charges the car: {c2:?}"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_solve_does_not_hold_up_the_control_cycle() {
    // Every solve sleeps 4 s (real) and the limit is 0.5 s: the cycles (1/60 s apart at 60x)
    // must go on all the while.
    let d = start(
        "10:00",
        Some(SolveFault::Delay(Duration::from_secs(4))),
        Some(Duration::from_millis(500)),
    )
    .await;
    let reason = until("the late-solve reason", Duration::from_secs(60), || {
        let s = status(&d)?;
        s.reasons.iter().find(|r| r.contains("solve late")).cloned()
    })
    .await;
    assert!(reason.contains("no plan within 500 ms"), "{reason}");
    let c0 = status(&d).unwrap().cycle;
    // While that solve still sleeps (about 3.5 s of it left), cycles complete.
    until("cycles during the solve", Duration::from_secs(3), || {
        (status(&d)?.cycle >= c0 + 30).then_some(())
    })
    .await;
    let plan = get_plan(&d).await;
    assert!(plan["timeouts"].as_u64().unwrap() >= 1, "{plan}");
    d.shutdown().await;
}

/// The dashboard draws the plan ahead of now, marks the cars it expects (a booked one here),
/// lists the bookings and shows the charger's wish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (installed by .ci/run)"]
async fn the_dashboard_shows_the_plan_ahead_and_the_wish_on_the_charger_card() {
    let d = start("10:00", None, None).await;
    d.sim.plug(&plug("charger-1")).unwrap();
    seen_plugged(&d, "charger-1").await;
    let base = format!("http://{}", d.daemon.api_addr);
    until_async(
        "a plan and some history",
        Duration::from_secs(120),
        async || {
            let p = get_plan(&d).await;
            let h: Value = reqwest::get(format!("{base}/api/history?hours=24"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (p["made_at"].is_string() && h["points"].as_array()?.len() >= 3).then_some(())
        },
    )
    .await;
    let departure = (d.sim.now() + chrono::Duration::hours(4)).to_rfc3339();
    let (code, body) = post_wish(
        &d,
        TOKEN,
        "charger-1",
        json!({"departure": departure, "energy_kwh": 12}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let arrives = (d.sim.now() + chrono::Duration::hours(1)).to_rfc3339();
    let departs = (d.sim.now() + chrono::Duration::hours(3)).to_rfc3339();
    let (code, body) = post_booking(
        &d,
        TOKEN,
        json!({"arrives": arrives, "departs": departs, "energy_kwh": 20}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let b = support::browser::open_page(&format!("{base}/")).await;
    for series in [
        "planned_import_w",
        "import_ceiling_w",
        "pv_forecast_w",
        "building_forecast_w",
        "battery_soc_target_pct",
    ] {
        b.wait_for_count(
            &format!("#history-chart [data-plan=\"{series}\"]"),
            1,
            Duration::from_secs(30),
        )
        .await;
    }
    let wish = b
        .wait_for_text(
            ".charger-card[data-id=\"charger-1\"] .charger-wish",
            Duration::from_secs(60),
            |t| t.contains("12.0 kWh by") && !t.contains("pending"),
        )
        .await;
    assert!(wish.ends_with("planned"), "{wish}");
    // The booked car is marked where the plan expects it.
    b.wait_for_count(
        "#history-chart .arrival-marker[data-energy-kwh=\"20\"]",
        1,
        Duration::from_secs(60),
    )
    .await;
    // And listed on the bookings card, expected.
    let state = b
        .wait_for_text(
            "#bookings tr.booking .booking-state",
            Duration::from_secs(60),
            |t| !t.is_empty(),
        )
        .await;
    assert_eq!(state, "expected");
    // Book another from the card: the dialog's answers in turn (arrival on the station's
    // clock, stay, energy, API token).
    b.eval(
        r#"const answers = ["23:45", "2", "18", "s3cret"];
        window.prompt = () => answers.shift();
        document.getElementById("booking-add").click();
        return true;"#,
    )
    .await;
    b.wait_for_count("#bookings tr.booking", 2, Duration::from_secs(30))
        .await;
    let rows = b.texts("#bookings tr.booking").await;
    assert!(
        rows.iter()
            .any(|r| r.contains("23:45") && r.contains("01:45") && r.contains("18 kWh")),
        "{rows:?}"
    );
    b.close().await;
    d.shutdown().await;
}

async fn post_booking(d: &Demo, token: &str, body: Value) -> (u16, Value) {
    post_json(d, token, "/api/bookings", body).await
}

async fn get_bookings(d: &Demo) -> Vec<Value> {
    let v: Value = reqwest::get(format!("http://{}/api/bookings", d.daemon.api_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["bookings"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booked_car_is_expected_by_the_plan_and_fulfilled_when_it_plugs_in() {
    let d = start("09:50", None, None).await;
    let now = d.sim.now();
    let at = |m: i64| (now + chrono::Duration::minutes(m)).to_rfc3339();
    // Refused, naming the field; the token is required.
    let (code, body) = post_booking(
        &d,
        TOKEN,
        json!({"arrives": at(20), "departs": at(200), "charger": "charger-9"}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(error_of(&body), "charger: no charger \"charger-9\"");
    let (code, body) = post_booking(&d, TOKEN, json!({"arrives": at(20), "departs": at(10)})).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_of(&body).starts_with("departs:"), "{body}");
    let (code, _) = post_booking(&d, "wrong", json!({"arrives": at(20), "departs": at(200)})).await;
    assert_eq!(code, 401);
    // Booked: the plan expects a 37 kWh car at its time.
    let (code, booked) = post_booking(
        &d,
        TOKEN,
        json!({"arrives": at(20), "departs": at(200), "energy_kwh": 37, "max_kw": 11}),
    )
    .await;
    assert_eq!(code, 201, "{booked}");
    assert_eq!(booked["state"], "expected");
    let arrives = booked["arrives"].as_str().unwrap().to_string();
    until_async(
        "the booked car in the plan",
        Duration::from_secs(120),
        async || {
            let p = get_plan(&d).await;
            p["arrivals"].as_array()?.iter().find(|a| {
                a["energy_kwh"].as_f64() == Some(37.0)
                    && a["arrives"]
                        .as_str()
                        .map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        == Some(chrono::DateTime::parse_from_rfc3339(&arrives).ok())
            })?;
            Some(())
        },
    )
    .await;
    // A car plugs in within the grace: the booking is fulfilled by its charger.
    d.sim.plug(&plug("charger-2")).unwrap();
    let b = until_async(
        "the booking fulfilled",
        Duration::from_secs(60),
        async || {
            let all = get_bookings(&d).await;
            all.into_iter().find(|b| b["state"] == "fulfilled")
        },
    )
    .await;
    assert_eq!(b["fulfilled_by"], "charger-2");
    // Cancelled once; a second time it is unknown.
    let id = b["id"].as_u64().unwrap();
    let delete = |token: &'static str| {
        reqwest::Client::new()
            .delete(format!("http://{}/api/bookings/{id}", d.daemon.api_addr))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(delete(TOKEN).await.unwrap().status().as_u16(), 204);
    assert_eq!(delete(TOKEN).await.unwrap().status().as_u16(), 404);
    assert!(get_bookings(&d).await.is_empty());
    assert_eq!(d.sim.truth().kpis.soc_window_violation_s, 0.0);
    d.shutdown().await;
}

/// Bookings are kept in the ledger's database: a restarted daemon still holds (and expects)
/// them, with their ids, and numbers new ones after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_survives_a_daemon_restart() {
    let (dir, path) = support::fresh_ledger("bookings");
    let options = || station_controller::daemon::Options {
        ledger_path: Some(path.clone()),
        ..Default::default()
    };
    let planner = |c: &mut StationConfig| {
        c.api_token = Some(TOKEN.into());
        c.planner = Some(settings(c));
    };
    let sc = demo::scenario("sunny-weekday").unwrap();
    let sim = station_sim::runtime::spawn(station_sim::runtime::SimConfig {
        start: sc.resolve_local("09:50"),
        ..station_sim::runtime::SimConfig::ephemeral(sc, 7, 60.0)
    })
    .await
    .unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let d = Demo::attach_with(sim, 60.0, listen, options(), planner)
        .await
        .unwrap();
    until("the first control cycle", Duration::from_secs(30), || {
        status(&d).filter(|s| s.cycle >= 3).map(|_| ())
    })
    .await;
    let now = d.sim.now();
    let at = |m: i64| (now + chrono::Duration::minutes(m)).to_rfc3339();
    let (code, booked) = post_booking(
        &d,
        TOKEN,
        json!({"arrives": at(300), "departs": at(480), "energy_kwh": 33, "charger": "charger-4"}),
    )
    .await;
    assert_eq!(code, 201, "{booked}");
    // Stored by the planning task (poll the database, not a sleep).
    until("the booking stored", Duration::from_secs(30), || {
        let store = station_controller::ledger::store::Store::open(&path).ok()?;
        (store.bookings().ok()?.len() == 1).then_some(())
    })
    .await;
    let sim = d.stop_daemon().await;
    let d = Demo::attach_with(sim, 60.0, listen, options(), planner)
        .await
        .unwrap();
    until(
        "the first cycle after the restart",
        Duration::from_secs(30),
        || status(&d).filter(|s| s.cycle >= 3).map(|_| ()),
    )
    .await;
    let held = get_bookings(&d).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["id"], booked["id"]);
    assert_eq!(held[0]["arrives"], booked["arrives"]);
    assert_eq!(held[0]["energy_kwh"], 33.0);
    assert_eq!(held[0]["charger"], "charger-4");
    let (code, next) =
        post_booking(&d, TOKEN, json!({"arrives": at(320), "departs": at(400)})).await;
    assert_eq!(code, 201, "{next}");
    assert_eq!(next["id"].as_u64(), booked["id"].as_u64().map(|i| i + 1));
    d.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

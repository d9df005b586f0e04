//! The dashboard, served from the binary, tested over HTTP and in a real headless Chromium.
//!
//! The browser tests are `#[ignore]`d because they need Debian's `chromium` and
//! `chromium-driver`; CI installs them and runs `cargo test --test dashboard_browser -- --ignored`.
//! They serve the assets router together with a fake API whose values change on every request,
//! so the page must show exactly the numbers of one fake cycle and follow it as it changes.
//!
//! `support::browser::assert_live_dashboard(url, screenshot)` is the generic check (no fake numbers) for
//! a real daemon; it is exercised here against the fake station.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use station_controller::daemon::status::{
    BatteryStatus, BuildingStatus, ChargerStatus, DeviceStatus, GridStatus, LinkState, PvStatus,
    Status, TodayStatus,
};
use station_controller::http::assets;

use support::browser::{assert_live_dashboard, open_page, Browser};

const CHARGERS: u64 = 8;
const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ the fake API

/// Cycle `n` of the fake station: every value is a simple function of `n`, so a test can tell
/// which cycle the page shows and that all its numbers belong to that one cycle.
fn fake_status(n: u64) -> Status {
    let nf = n as f64;
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 6, 1, 2, 0, 0).unwrap();
    let time = start + chrono::Duration::seconds(60 * n as i64);
    let chargers = (1..=CHARGERS)
        .map(|k| {
            let current_a = charger_current_a(n, k);
            let charging = current_a > 0.0;
            ChargerStatus {
                id: format!("charger-{k}"),
                state: if charging { "C2" } else { "A" }.to_string(),
                current_a: Some(current_a),
                setpoint_a: if charging { current_a + 0.5 } else { 0.0 },
                power_w: Some(current_a * 230.0 * 3.0),
                phases: 3,
                rating_a: 32.0,
                session_wh: charging.then_some(1000.0 * k as f64 + 100.0 * nf),
                session_green_pct: charging.then_some(40.0 + k as f64),
                mode: if k % 2 == 0 { "green" } else { "fast" }.to_string(),
                wish: None,
            }
        })
        .collect();
    let device = |id: &str, link| DeviceStatus {
        id: id.to_string(),
        link,
        last_ok: Some(time - chrono::Duration::seconds(2)),
        last_error: (link != LinkState::Online).then(|| "timeout after 500 ms".to_string()),
        errors_total: if link == LinkState::Online { 0 } else { 3 },
        warning: None,
    };
    Status {
        station: "Test dealership".to_string(),
        timezone: "Asia/Shanghai".to_string(),
        time,
        cycle: n,
        cycle_ms: 12.0,
        grid: GridStatus {
            power_w: Some(grid_w(n)),
            phase_w: [Some(grid_w(n) / 3.0); 3],
            import_limit_w: 150_000.0,
            export_limit_w: 100_000.0,
            fresh: true,
            month_peak_w: 60_000.0,
            demand_window_avg_w: 30_000.0,
        },
        pv: PvStatus {
            power_w: Some(pv_w(n)),
            rating_w: Some(135_000.0),
            limit_pct: 100.0,
            energy_wh: Some(1_000_000.0),
        },
        battery: BatteryStatus {
            soc_pct: Some(50.0 + (n % 40) as f64),
            soh_pct: Some(72.0),
            power_w: Some(battery_w(n)),
            setpoint_w: battery_w(n),
            max_charge_w: Some(90_000.0),
            max_discharge_w: Some(120_000.0),
            temp_c: Some(27.5),
            usable_wh: Some(360_000.0),
            alarms: 0b100, // over-temperature warning
            state: Some("connected".to_string()),
        },
        building: BuildingStatus {
            power_w: Some(48_000.0),
        },
        chargers,
        devices: vec![
            device("pv", LinkState::Online),
            device("battery", LinkState::Online),
            device("grid-meter", LinkState::Online),
            device("charger-8", LinkState::Degraded),
        ],
        reasons: vec![
            format!("Cycle {n}: import held under the 150 kW limit"),
            "Battery charging from PV surplus".to_string(),
        ],
        today: TodayStatus {
            pv_kwh: 321.0,
            grid_import_kwh: 210.0,
            grid_export_kwh: 4.0,
            self_consumption_pct: 98.7,
            self_sufficiency_pct: 61.2,
            peak_import_kw: 142.3,
            ev_delivered_kwh: 155.5,
            ev_green_share_pct: 57.0,
            co2_kg: 119.8,
            co2_avoided_kg: 183.1,
            cost_cny: 1234.5,
        },
    }
}

fn grid_w(n: u64) -> f64 {
    42_000.0 + 1_000.0 * (n % 90) as f64
}
fn pv_w(n: u64) -> f64 {
    61_500.0 + 500.0 * (n % 100) as f64
}
fn battery_w(n: u64) -> f64 {
    -(12_000.0 + 100.0 * (n % 500) as f64)
}
fn charger_current_a(n: u64, k: u64) -> f64 {
    if k == CHARGERS {
        0.0
    } else {
        6.0 + k as f64 + (n % 7) as f64
    }
}

fn fake_history() -> Value {
    let end: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 6, 1, 2, 0, 0).unwrap();
    let points: Vec<Value> = (0..24 * 60)
        .rev()
        .map(|ago| {
            let t = end - chrono::Duration::minutes(ago);
            let x = (24 * 60 - ago) as f64 / (24.0 * 60.0) * std::f64::consts::TAU;
            let pv = (80_000.0 * (x - 1.2).sin()).max(0.0);
            let building = 30_000.0 + 15_000.0 * (x - 2.0).sin().max(0.0);
            let vehicles = 60_000.0 * (x - 2.5).sin().max(0.0);
            let battery = -0.4 * pv + 20_000.0 * (x + 1.0).sin().max(0.0);
            let grid = building + vehicles - pv - battery;
            // A five-minute gap in the meter readings, drawn as a break.
            let grid = if (600..605).contains(&ago) {
                Value::Null
            } else {
                json!(grid)
            };
            json!({
                "t": t.to_rfc3339(),
                "grid_w": grid,
                "pv_w": pv,
                "battery_w": battery,
                "vehicles_w": vehicles,
                "building_w": building,
            })
        })
        .collect();
    json!({ "import_limit_w": 150_000.0, "points": points })
}

#[derive(Clone)]
struct Fake {
    cycle: Arc<AtomicU64>,
}

async fn api_status(State(fake): State<Fake>) -> Json<Status> {
    Json(fake_status(fake.cycle.fetch_add(1, Ordering::SeqCst)))
}

async fn api_events(
    State(fake): State<Fake>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream::unfold(fake, |fake| async move {
        // The fake station's cycle: one status event every 400 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let status = fake_status(fake.cycle.fetch_add(1, Ordering::SeqCst));
        let event = Event::default()
            .event("status")
            .json_data(&status)
            .expect("status serialises");
        Some((Ok(event), fake))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn api_history() -> Json<Value> {
    Json(fake_history())
}

/// Serves the dashboard + fake API on a free port; `with_events` false leaves /api/events
/// unrouted (404) so the page must fall back to polling.
async fn serve(with_events: bool) -> SocketAddr {
    let fake = Fake {
        cycle: Arc::new(AtomicU64::new(1)),
    };
    let mut api = Router::new()
        .route("/api/status", get(api_status))
        .route("/api/history", get(api_history));
    if with_events {
        api = api.route("/api/events", get(api_events));
    }
    let app = assets::router::<Fake>().merge(api).with_state(fake);
    serve_router(app).await
}

async fn serve_router(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

// ------------------------------------------------------------------ page reading helpers

fn kw(w: f64) -> String {
    format!("{:.1} kW", w.abs() / 1000.0)
}

/// Reads, in one script run, what the page shows for one cycle.
async fn snapshot(b: &Browser) -> Value {
    b.eval(
        r#"
        const t = (sel) => { const e = document.querySelector(sel); return e ? e.textContent.trim() : null; };
        const cards = Array.from(document.querySelectorAll('.charger-card')).map((c) => ({
            id: c.dataset.id,
            current: c.querySelector('.charger-current').textContent.trim(),
            setpoint: c.querySelector('.charger-setpoint').textContent.trim(),
            energy: c.querySelector('.charger-energy').textContent.trim(),
            state: c.querySelector('.charger-state').textContent.trim(),
        }));
        return {
            cycle: t('#cycle'), grid: t('#grid-power'), pv: t('#pv-power'),
            battery: t('#battery-power'), battery_dir: t('#battery-direction'),
            soc: t('#battery-soc'), time: t('#station-time'), cards: cards,
            reasons: Array.from(document.querySelectorAll('#reasons li')).map((l) => l.textContent.trim()),
            conn: document.getElementById('conn-state').dataset.state,
        };
        "#,
    )
    .await
}

/// Checks that a snapshot shows exactly the fake's cycle `n`, and returns `n`.
fn assert_snapshot_is_one_fake_cycle(s: &Value) -> u64 {
    let n: u64 = s["cycle"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no cycle number on the page: {s}"));
    assert_eq!(s["grid"], kw(grid_w(n)), "grid power of cycle {n}: {s}");
    assert_eq!(s["pv"], kw(pv_w(n)), "PV power of cycle {n}: {s}");
    assert_eq!(
        s["battery"],
        kw(battery_w(n)),
        "battery power of cycle {n}: {s}"
    );
    assert_eq!(s["battery_dir"], "charging");
    assert_eq!(s["soc"], format!("{:.0} %", 50.0 + (n % 40) as f64));
    let cards = s["cards"].as_array().expect("charger cards");
    assert_eq!(cards.len() as u64, CHARGERS, "one card per charger: {s}");
    for (i, card) in cards.iter().enumerate() {
        let k = i as u64 + 1;
        assert_eq!(card["id"], format!("charger-{k}"));
        assert_eq!(
            card["current"],
            format!("{:.1} A", charger_current_a(n, k)),
            "charger-{k} current of cycle {n}"
        );
    }
    let reasons: Vec<&str> = s["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        reasons,
        vec![
            format!("Cycle {n}: import held under the 150 kW limit").as_str(),
            "Battery charging from PV surplus"
        ]
    );
    n
}

/// Waits until the page shows a cycle, then returns a consistent snapshot of it (the page may
/// be between two renders when read, so a mismatch is retried until the deadline).
async fn consistent_snapshot(b: &Browser, after_cycle: u64) -> (u64, Value) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = snapshot(b).await;
        let shown: Option<u64> = s["cycle"].as_str().and_then(|c| c.parse().ok());
        if let Some(n) = shown.filter(|&n| n > after_cycle) {
            let consistent = std::panic::catch_unwind(|| assert_snapshot_is_one_fake_cycle(&s));
            if consistent.is_ok() || std::time::Instant::now() > deadline {
                assert_snapshot_is_one_fake_cycle(&s);
                return (n, s);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page never showed a cycle after {after_cycle}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------ tests without a browser

async fn get_text(url: &str) -> (reqwest::StatusCode, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn router_serves_page_script_and_style_with_their_content_types() {
    let addr = serve_router(assets::router()).await;
    let base = format!("http://{addr}");

    let (status, ct, body) = get_text(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/html; charset=utf-8");
    assert!(body.contains("<title>") && body.contains("id=\"grid-power\""));

    let (status, ct, body) = get_text(&format!("{base}/app.js")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/javascript; charset=utf-8");
    assert!(body.contains("/api/events") && body.contains("/api/status"));

    let (status, ct, body) = get_text(&format!("{base}/style.css")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "text/css; charset=utf-8");
    assert!(body.contains(".charger-card"));

    let (status, _, _) = get_text(&format!("{base}/nothing-here.js")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn index_html_references_only_local_assets_that_the_router_serves() {
    let addr = serve_router(assets::router()).await;
    let html = assets::INDEX_HTML;
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("//cdn") && !html.contains("src=\"//"));

    // Every src= and href= points at a path this router serves.
    let mut refs = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').unwrap();
            refs.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    assert!(refs.contains(&"/app.js".to_string()) && refs.contains(&"/style.css".to_string()));
    for r in &refs {
        assert!(r.starts_with('/'), "non-local reference {r}");
        let (status, _, _) = get_text(&format!("http://{addr}{r}")).await;
        assert_eq!(status, 200, "{r} is not served");
    }

    // The script and the style sheet load nothing from outside either (the only absolute URL
    // in the script is the SVG namespace name, which is never fetched).
    let js_urls = assets::APP_JS.replace("http://www.w3.org/2000/svg", "");
    assert!(!js_urls.contains("http://") && !js_urls.contains("https://"));
    assert!(!assets::STYLE_CSS.contains("url(") && !assets::STYLE_CSS.contains("@import"));
}

#[tokio::test]
async fn assets_carry_an_etag_and_revalidate_to_not_modified() {
    let addr = serve_router(assets::router()).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/style.css");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let again = client
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.text().await.unwrap().is_empty());
}

#[tokio::test]
async fn fake_api_status_serialises_with_the_field_names_the_page_reads() {
    let v = serde_json::to_value(fake_status(3)).unwrap();
    for path in [
        "/grid/power_w",
        "/grid/import_limit_w",
        "/pv/power_w",
        "/battery/soc_pct",
        "/battery/max_charge_w",
        "/chargers/0/current_a",
        "/chargers/0/session_green_pct",
        "/devices/0/link",
        "/today/self_consumption_pct",
        "/reasons/0",
    ] {
        assert!(v.pointer(path).is_some(), "missing {path}");
        let field = path.rsplit('/').next().unwrap();
        if field.parse::<usize>().is_err() {
            assert!(assets::APP_JS.contains(field), "app.js never reads {field}");
        }
    }
    assert_eq!(v["devices"][3]["link"], "degraded");
}

// ------------------------------------------------------------------ browser tests

#[tokio::test]
#[ignore = "needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)"]
async fn dashboard_renders_live_values_from_the_event_stream_and_follows_them() {
    let addr = serve(true).await;
    let b = open_page(&format!("http://{addr}/?tz=Asia/Shanghai")).await;

    b.wait_for_count(".charger-card", CHARGERS as usize, WAIT)
        .await;
    b.wait_for_text("#conn-state", WAIT, |t| t == "live").await;
    let (first, _) = consistent_snapshot(&b, 0).await;
    // The values change over time: later cycles arrive and are shown, again consistently.
    let (later, s) = consistent_snapshot(&b, first + 1).await;
    assert!(later > first + 1);
    assert_eq!(s["conn"], "live");

    // Single-element waits with the helper.
    let grid_before = b.text("#grid-power").await.unwrap();
    b.wait_for_text("#grid-power", WAIT, |t| t != grid_before)
        .await;
    b.wait_for_text("#reasons li", WAIT, |t| t.starts_with("Cycle "))
        .await;
    b.wait_for_text(
        ".charger-card[data-id=\"charger-8\"] .charger-setpoint",
        WAIT,
        |t| t == "paused",
    )
    .await;
    b.wait_for_text(
        ".charger-card[data-id=\"charger-1\"] .charger-state",
        WAIT,
        |t| t.starts_with("C2"),
    )
    .await;

    // Battery details, scorecard, devices, alarms.
    assert_eq!(b.text("#battery-soh").await.unwrap(), "72 %");
    assert_eq!(b.text("#battery-max-charge").await.unwrap(), "90.0 kW");
    assert_eq!(b.text("#battery-max-discharge").await.unwrap(), "120.0 kW");
    assert_eq!(b.text("#battery-temp").await.unwrap(), "27.5 °C");
    assert_eq!(
        b.texts("#battery-alarms li").await,
        vec!["over-temperature warning"]
    );
    assert_eq!(b.text("#today-self-consumption").await.unwrap(), "99 %");
    assert_eq!(b.text("#today-peak-import").await.unwrap(), "142.3 kW");
    assert_eq!(b.text("#today-cost").await.unwrap(), "¥ 1234.50");
    assert_eq!(
        b.attr("#devices tr[data-id=\"charger-8\"]", "data-link")
            .await
            .unwrap(),
        "degraded"
    );
    assert_eq!(b.text("#station-name").await.unwrap(), "Test dealership");
    // Station time in the station's zone (UTC+8): cycle n is 02:00 UTC + n minutes.
    let time = b.text("#station-time").await.unwrap();
    assert!(time.starts_with("10:"), "station time {time}");
    // The fake runs a minute per 0.4 s: far faster than real time, and the page says so.
    b.wait_for_text("#time-rate", WAIT, |t| t.starts_with('×'))
        .await;

    // Power flow: one edge per source, the building and each charger, with arrows.
    for edge in [
        "pv",
        "grid",
        "battery",
        "building",
        "charger-1",
        "charger-8",
    ] {
        assert_eq!(
            b.count(&format!("#flow-svg g.edge[data-edge=\"{edge}\"]"))
                .await,
            1,
            "flow edge {edge}"
        );
    }
    assert_eq!(
        b.attr("#flow-svg g.edge[data-edge=\"battery\"]", "class")
            .await
            .unwrap(),
        "edge rev",
        "a charging battery draws from the bus"
    );
    assert_eq!(
        b.attr("#flow-svg g.edge[data-edge=\"charger-8\"]", "class")
            .await
            .unwrap(),
        "edge idle"
    );

    // History: five series of polylines (the grid broken by its gap) and the limit line.
    for series in ["grid_w", "pv_w", "battery_w", "vehicles_w", "building_w"] {
        let n = b
            .count(&format!(
                "#history-chart g[data-series=\"{series}\"] polyline"
            ))
            .await;
        assert!(n >= 1, "no polyline for {series}");
    }
    assert_eq!(
        b.count("#history-chart g[data-series=\"grid_w\"] polyline")
            .await,
        2
    );
    assert_eq!(b.count("#import-limit-line").await, 1);

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    b.screenshot_full_page(&shot, 1440).await;
    let mobile = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-narrow.png");
    b.screenshot_full_page(&mobile, 420).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    b.close().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)"]
async fn dashboard_falls_back_to_polling_when_the_event_stream_is_missing() {
    let addr = serve(false).await;
    let b = open_page(&format!("http://{addr}/")).await;
    b.wait_for_text("#conn-state", WAIT, |t| t == "polling")
        .await;
    let (first, _) = consistent_snapshot(&b, 0).await;
    let (later, _) = consistent_snapshot(&b, first).await;
    assert!(later > first);
    b.close().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)"]
async fn generic_live_dashboard_check_passes_on_the_fake_station() {
    let addr = serve(true).await;
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-generic.png");
    let cards = assert_live_dashboard(&format!("http://{addr}/"), &shot).await;
    assert_eq!(cards as u64, CHARGERS);
}

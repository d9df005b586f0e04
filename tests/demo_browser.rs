//! The real demo (simulator + daemon + dashboard) in headless Chromium: the power values and
//! charger cards render and change. Ignored by default: needs Debian's chromium and
//! chromium-driver, which `.ci/run` installs.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use station_controller::demo::{self, Demo};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver (installed by .ci/run)"]
async fn the_demo_dashboard_shows_live_values_and_every_charger() {
    let scenario = demo::scenario("sunny-weekday").unwrap();
    let d = Demo::start_at(
        scenario,
        1,
        60.0,
        Some("11:00"),
        "127.0.0.1:0".parse().unwrap(),
        |_| {},
    )
    .await
    .unwrap();
    d.sim.plug(&support::plug("charger-2")).unwrap();
    let url = format!("http://{}/", d.daemon.api_addr);
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo-dashboard.png");
    let cards = support::browser::assert_live_dashboard(&url, &shot).await;
    assert_eq!(cards, 8, "one card per charger");

    // The car plugged into charger-2 shows up as charging, with a current.
    let b = support::browser::open_page(&url).await;
    let text = b
        .wait_for_text(
            ".charger-card[data-id=\"charger-2\"] .charger-state",
            Duration::from_secs(30),
            |t| t.starts_with('C') || t.contains("charging"),
        )
        .await;
    assert!(!text.is_empty());
    let pv = b
        .wait_for_text("#pv-power", Duration::from_secs(30), |t| t.contains("kW"))
        .await;
    assert!(pv.contains("kW"), "{pv}");
    // Station time is shown in the station's own zone, not the browser's.
    b.wait_for_text("#station-tz", Duration::from_secs(30), |t| {
        t == "Asia/Shanghai"
    })
    .await;
    b.close().await;
    d.shutdown().await;
}

//! `/metrics` against the ledger: the per-flow energy counters grow with what the ledger books,
//! scraped over HTTP from the real daemon running against the simulator in process.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{DateTime, Utc};
use station_controller::demo::{self, Demo};
use station_controller::ledger::Bucket;
use std::collections::BTreeMap;
use std::time::Duration;

mod support;
use support::until_async;

type Flows = BTreeMap<(String, String), f64>;

/// The `station_energy_watt_hours_total` samples of a scrape, by `(from, to)`.
fn energy_counters(text: &str) -> Flows {
    let mut out = Flows::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("station_energy_watt_hours_total{from=\"") else {
            continue;
        };
        let (from, rest) = rest.split_once("\",to=\"").expect("a to label");
        let (to, value) = rest.split_once("\"} ").expect("a value");
        out.insert((from.into(), to.into()), value.parse().expect("a number"));
    }
    out
}

/// The ledger's flows over all time, named as `/metrics` names them.
fn ledger_flows(sum: &Bucket) -> Flows {
    [
        ("pv", "building", sum.pv_to_building_wh),
        ("pv", "vehicles", sum.pv_to_vehicles_wh),
        ("pv", "battery", sum.pv_to_battery_wh),
        ("pv", "grid", sum.pv_to_grid_wh),
        ("battery", "building", sum.battery_to_building_wh),
        ("battery", "vehicles", sum.battery_to_vehicles_wh),
        ("battery", "grid", sum.battery_to_grid_wh),
        ("grid", "building", sum.grid_to_building_wh),
        ("grid", "vehicles", sum.grid_to_vehicles_wh),
        ("grid", "battery", sum.grid_to_battery_wh),
    ]
    .into_iter()
    .map(|(f, t, wh)| ((f.to_string(), t.to_string()), wh))
    .collect()
}

/// A scrape of `/metrics` over HTTP and the ledger's totals taken with no cycle between them
/// (the ledger is read before and after the scrape until both reads agree).
async fn scrape(d: &Demo, client: &reqwest::Client) -> (Flows, Flows) {
    let url = format!("http://{}/metrics", d.daemon.api_addr);
    let all = async || {
        let t = d
            .daemon
            .shared
            .ledger_totals(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC)
            .await
            .ok()?;
        Some(ledger_flows(&t.sum))
    };
    until_async(
        "a scrape between two cycles",
        Duration::from_secs(30),
        async || {
            let before = all().await?;
            let text = client.get(&url).send().await.ok()?.text().await.ok()?;
            (all().await? == before).then(|| (energy_counters(&text), before))
        },
    )
    .await
}

fn total(f: &Flows) -> f64 {
    f.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_counters_on_metrics_grow_by_what_the_ledger_books_per_flow() {
    let sc = demo::scenario("sunny-weekday").unwrap();
    let listen = "127.0.0.1:0".parse().unwrap();
    let d = Demo::start_at(sc, 3, 60.0, Some("11:00"), listen, |_| {})
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let (m1, l1) = until_async("energy booked", Duration::from_secs(60), async || {
        let (m, l) = scrape(&d, &client).await;
        (total(&l) > 1000.0).then_some((m, l))
    })
    .await;
    let (m2, l2) = until_async("more energy booked", Duration::from_secs(60), async || {
        let (m, l) = scrape(&d, &client).await;
        (total(&l) > total(&l1) + 5000.0).then_some((m, l))
    })
    .await;
    assert_eq!(m2.len(), 10, "every flow has a counter: {m2:?}");
    for (flow, ledger_after) in &l2 {
        let ledger_rise = ledger_after - l1[flow];
        let metric_rise = m2[flow] - m1.get(flow).copied().unwrap_or(0.0);
        assert!(
            (metric_rise - ledger_rise).abs() <= 1e-6 * (1.0 + ledger_rise.abs()),
            "{flow:?}: /metrics rose {metric_rise} Wh, the ledger {ledger_rise} Wh"
        );
        assert!(metric_rise >= 0.0, "{flow:?} fell by {metric_rise} Wh");
    }
    // Midday sun: PV reaches the building, and the counters are not all zero.
    assert!(m2[&("pv".into(), "building".into())] > m1[&("pv".into(), "building".into())]);
    d.shutdown().await;
}

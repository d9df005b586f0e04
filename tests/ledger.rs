//! Energy ledger: conservation, green shares, sessions, persistence and storage failures.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use station_controller::dispatch::{DemandState, DemandTracker};
use station_controller::ledger::{
    bucket_start, buckets_csv, plugged_from_state, sessions_csv, split_flows, ChargerInput,
    CycleInput, FlowInput, Ledger, BUCKET_COLUMNS,
};

const CO2: f64 = 0.5703;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn temp_db(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "station-ledger-{}-{}-{}",
        name,
        std::process::id(),
        nanos
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("ledger.sqlite")
}

#[derive(Clone, Copy)]
struct Cycle {
    pv_w: f64,
    building_w: f64,
    battery_w: f64,
    grid_w: f64,
    price: f64,
}

/// A cycle whose grid reading matches the balance exactly.
fn balanced(pv_w: f64, building_w: f64, vehicles_w: f64, battery_w: f64) -> Cycle {
    Cycle {
        pv_w,
        building_w,
        battery_w,
        grid_w: building_w + vehicles_w - pv_w - battery_w,
        price: 0.7,
    }
}

fn record(ledger: &mut Ledger, at: DateTime<Utc>, dt_s: f64, c: Cycle, chargers: &[ChargerInput]) {
    ledger.record(&CycleInput {
        at,
        dt_s,
        pv_w: c.pv_w,
        building_w: c.building_w,
        battery_w: c.battery_w,
        grid_w: c.grid_w,
        chargers,
        unread_vehicles_w: 0.0,
        estimated: false,
        price_cny_per_kwh: c.price,
        export_price_cny_per_kwh: 0.39,
        co2_kg_per_kwh: CO2,
    });
}

fn car(id: &str, power_w: f64) -> ChargerInput<'_> {
    ChargerInput {
        id,
        power_w,
        plugged: true,
    }
}

fn unplugged(id: &str) -> ChargerInput<'_> {
    ChargerInput {
        id,
        power_w: 0.0,
        plugged: false,
    }
}

/// Records `secs` cycles of 1 s starting at `start + 1 s`; returns the time of the last one.
fn run(
    ledger: &mut Ledger,
    start: DateTime<Utc>,
    secs: i64,
    c: Cycle,
    chargers: &[ChargerInput],
) -> DateTime<Utc> {
    let mut at = start;
    for _ in 0..secs {
        at += chrono::Duration::seconds(1);
        record(ledger, at, 1.0, c, chargers);
    }
    at
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn day() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        t0() - chrono::Duration::days(1),
        t0() + chrono::Duration::days(2),
    )
}

#[test]
fn session_charged_only_from_pv_is_fully_green() {
    let mut l = Ledger::in_memory();
    // 20 kW PV, 5 kW building, 10 kW car, 5 kW exported.
    let c = balanced(20_000.0, 5_000.0, 10_000.0, 0.0);
    let at = run(&mut l, t0(), 3600, c, &[car("charger-1", 10_000.0)]);
    record(&mut l, at, 1.0, c, &[unplugged("charger-1")]);
    let (from, to) = day();
    let s = l.sessions(from, to);
    assert_eq!(s.len(), 1);
    assert!(close(s[0].energy_wh, 10_000.0, 1e-6), "{}", s[0].energy_wh);
    assert!(close(s[0].green_share_pct, 100.0, 1e-9));
    assert_eq!(s[0].co2_kg, 0.0);
    assert_eq!(s[0].cost_cny, 0.0);
    assert!(s[0].end.is_some());
    assert!(l.open_session("charger-1").is_none());
}

#[test]
fn session_charged_from_the_grid_at_night_is_zero_green() {
    let mut l = Ledger::in_memory();
    let mut c = balanced(0.0, 15_000.0, 11_000.0, 0.0);
    c.price = 0.30;
    run(&mut l, t0(), 3600, c, &[car("charger-2", 11_000.0)]);
    let s = l.open_session("charger-2").unwrap();
    assert!(close(s.energy_wh, 11_000.0, 1e-6));
    assert_eq!(s.green_share_pct, 0.0);
    assert!(close(s.co2_kg, 11.0 * CO2, 1e-9));
    assert!(close(s.cost_cny, 11.0 * 0.30, 1e-9));
    assert!(s.end.is_none());
}

#[test]
fn pv_charged_battery_discharged_into_a_car_counts_as_green() {
    let mut l = Ledger::in_memory();
    // Noon: 60 kW PV, 10 kW building, 50 kW into the battery.
    let at = run(
        &mut l,
        t0(),
        3600,
        balanced(60_000.0, 10_000.0, 0.0, -50_000.0),
        &[],
    );
    // Evening: the battery gives 20 kW, 10 kW to the building and 10 kW to the car.
    let evening = balanced(0.0, 10_000.0, 10_000.0, 20_000.0);
    let at = run(&mut l, at, 3600, evening, &[car("charger-3", 10_000.0)]);
    let s = l.open_session("charger-3").unwrap();
    assert!(close(s.from_battery_wh, 10_000.0, 1e-6));
    assert!(
        close(s.green_share_pct, 100.0, 1e-6),
        "{}",
        s.green_share_pct
    );
    assert_eq!(s.co2_kg, 0.0);
    // 50 kWh charged x 0.95 = 47.5 kWh stored; 20 kWh delivered took 21.05 kWh.
    let left = l.battery_origin().green_wh;
    assert!(close(left, 47_500.0 - 20_000.0 / 0.95, 1e-3), "{left}");
    let totals = l.totals(
        at - chrono::Duration::days(1),
        at + chrono::Duration::days(1),
    );
    assert!(close(totals.ev_green_share_pct, 100.0, 1e-6));
}

#[test]
fn grid_charged_battery_discharged_into_a_car_is_grey_and_carries_its_purchase_cost() {
    let mut l = Ledger::in_memory();
    l.set_battery_efficiency(1.0, 1.0);
    let mut night = balanced(0.0, 0.0, 0.0, -40_000.0);
    night.price = 0.30;
    let at = run(&mut l, t0(), 3600, night, &[]);
    let mut peak = balanced(0.0, 0.0, 20_000.0, 20_000.0);
    peak.price = 1.10;
    run(&mut l, at, 3600, peak, &[car("charger-4", 20_000.0)]);
    let s = l.open_session("charger-4").unwrap();
    assert_eq!(s.green_share_pct, 0.0);
    assert!(close(s.cost_cny, 20.0 * 0.30, 1e-6), "{}", s.cost_cny);
    assert!(close(s.co2_kg, 20.0 * CO2, 1e-6));
}

#[test]
fn two_chargers_share_the_vehicle_flows_pro_rata() {
    let mut l = Ledger::in_memory();
    // 10 kW PV for 30 kW of cars: a third of each car's energy is green.
    let c = balanced(10_000.0, 0.0, 30_000.0, 0.0);
    run(
        &mut l,
        t0(),
        900,
        c,
        &[car("charger-1", 20_000.0), car("charger-2", 10_000.0)],
    );
    let a = l.open_session("charger-1").unwrap();
    let b = l.open_session("charger-2").unwrap();
    assert!(close(a.energy_wh, 5_000.0, 1e-6));
    assert!(close(b.energy_wh, 2_500.0, 1e-6));
    assert!(close(a.green_share_pct, 100.0 / 3.0, 1e-6));
    assert!(close(b.green_share_pct, 100.0 / 3.0, 1e-6));
}

#[test]
fn session_closes_at_last_sighting_when_the_charger_goes_missing() {
    let mut l = Ledger::in_memory();
    l.set_missing_after(Duration::from_secs(60));
    let c = balanced(0.0, 0.0, 7_000.0, 0.0);
    let seen = run(&mut l, t0(), 100, c, &[car("charger-5", 7_000.0)]);
    let c = balanced(0.0, 1_000.0, 0.0, 0.0);
    run(&mut l, seen, 30, c, &[]);
    assert!(l.open_session("charger-5").is_some(), "closed too early");
    run(&mut l, seen + chrono::Duration::seconds(30), 40, c, &[]);
    assert!(l.open_session("charger-5").is_none());
    let (from, to) = day();
    let s = l.sessions(from, to);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].end, Some(seen));
}

#[test]
fn plugged_from_state_reads_iec_61851_states() {
    for s in ["B1", "B2", "C1", "C2", "D2", " c2 "] {
        assert!(plugged_from_state(s), "{s}");
    }
    for s in ["A1", "A2", "E", "F", ""] {
        assert!(!plugged_from_state(s), "{s}");
    }
}

#[test]
fn buckets_align_to_utc_quarter_hours_and_keep_the_peak_import() {
    let mut l = Ledger::in_memory();
    let start = t0() + chrono::Duration::minutes(10);
    let mut at = start;
    for i in 0..1200 {
        at += chrono::Duration::seconds(1);
        let grid = if i == 700 { 90_000.0 } else { 36_000.0 };
        let c = Cycle {
            pv_w: 0.0,
            building_w: grid,
            battery_w: 0.0,
            grid_w: grid,
            price: 0.7,
        };
        record(&mut l, at, 1.0, c, &[]);
    }
    let b = l.buckets(t0(), t0() + chrono::Duration::hours(1));
    let starts: Vec<_> = b.iter().map(|b| b.start).collect();
    assert_eq!(
        starts,
        vec![
            t0(),
            t0() + chrono::Duration::minutes(15),
            t0() + chrono::Duration::minutes(30)
        ]
    );
    assert!(close(b[0].covered_s, 299.0, 1e-9));
    assert!(close(b[1].covered_s, 900.0, 1e-9));
    assert_eq!(b[1].peak_import_w, 90_000.0);
    assert_eq!(b[0].peak_import_w, 36_000.0);
    assert_eq!(
        bucket_start(t0() + chrono::Duration::seconds(1799)),
        b[1].start
    );
    let totals = l.totals(t0(), t0() + chrono::Duration::hours(1));
    assert_eq!(totals.bucket_count, 3);
    assert!(close(totals.sum.import_wh, 1199.0 * 10.0 + 25.0, 1e-6));
    assert!(totals.peak_15min_import_w > 36_000.0);
    assert_eq!(totals.sum.peak_import_w, 90_000.0);
}

#[test]
fn totals_open_sessions_and_battery_origin_survive_drop_and_reopen() {
    let path = temp_db("reopen");
    let (from, to) = day();
    let c = balanced(30_000.0, 10_000.0, 10_000.0, -10_000.0);
    let chargers = [car("charger-1", 10_000.0)];
    let (before, session_before, origin_before, at) = {
        let mut l = Ledger::open(&path, Duration::from_secs(30));
        assert!(l.healthy(), "{:?}", l.health());
        let at = run(&mut l, t0(), 600, c, &chargers);
        (
            l.totals(from, to),
            l.open_session("charger-1").unwrap(),
            l.battery_origin().green_wh,
            at,
        )
    };
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    assert!(l.healthy(), "{:?}", l.health());
    assert_eq!(l.totals(from, to), before);
    assert_eq!(l.open_session("charger-1").unwrap(), session_before);
    assert!(close(l.battery_origin().green_wh, origin_before, 1e-6));
    // The open session and the current bucket keep adding.
    run(&mut l, at, 60, c, &chargers);
    let s = l.open_session("charger-1").unwrap();
    assert_eq!(s.start, session_before.start);
    assert!(close(
        s.energy_wh,
        session_before.energy_wh + 10_000.0 / 60.0,
        1e-6
    ));
    l.flush().unwrap();
    let after = l.totals(from, to);
    assert_eq!(after.bucket_count, before.bucket_count);
    assert!(close(after.sum.pv_wh, before.sum.pv_wh + 500.0, 1e-6));
    assert_eq!(l.sessions(from, to).len(), 1);
}

#[test]
fn session_reloaded_after_a_long_outage_ends_at_its_last_sighting() {
    let path = temp_db("outage");
    let c = balanced(0.0, 0.0, 7_000.0, 0.0);
    let chargers = [car("charger-6", 7_000.0)];
    let seen = {
        let mut l = Ledger::open(&path, Duration::from_secs(30));
        run(&mut l, t0(), 120, c, &chargers)
    };
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    assert_eq!(l.open_session("charger-6").unwrap().last_seen, seen);
    // The daemon comes back an hour later; a car is plugged in again.
    let back = seen + chrono::Duration::hours(1);
    run(&mut l, back, 10, c, &chargers);
    let (from, to) = day();
    let s = l.sessions(from, to);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0].end, Some(seen));
    assert!(close(s[0].energy_wh, 7_000.0 / 30.0, 1e-6));
    assert_eq!(s[1].start, back + chrono::Duration::seconds(1));
    assert!(s[1].is_open());
}

#[test]
fn a_forgotten_ledger_loses_at_most_the_unflushed_seconds() {
    let path = temp_db("forget");
    let (from, to) = day();
    // 36 kW import: 10 Wh per second.
    let c = balanced(0.0, 36_000.0, 0.0, 0.0);
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    run(&mut l, t0(), 100, c, &[]);
    std::mem::forget(l);
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    let kept = l.totals(from, to).sum.import_wh;
    assert!(kept <= 1000.0 + 1e-6, "{kept}");
    assert!(
        kept >= 1000.0 - 30.0 * 10.0 - 1e-6,
        "lost more than 30 s: {kept}"
    );
}

/// Set only in the child process of `a_killed_process_loses_at_most_the_unflushed_cycles`:
/// the ledger file the child records into.
const CHILD_DB: &str = "STATION_LEDGER_CHILD_DB";

/// The test re-runs its own test binary with `--exact` on itself and [`CHILD_DB`] set; that
/// child records and waits to be killed, so it never passes (nor fails) on its own.
#[test]
fn a_killed_process_loses_at_most_the_unflushed_cycles() {
    if let Some(path) = std::env::var_os(CHILD_DB) {
        record_then_wait_to_be_killed(Path::new(&path));
    }
    let path = temp_db("sigkill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_process_loses_at_most_the_unflushed_cycles",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut recorded = false;
    for line in std::io::BufReader::new(stdout).lines() {
        if line.unwrap().contains("RECORDED") {
            recorded = true;
            break;
        }
    }
    assert!(recorded, "child never reported its records");
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no final flush
    child.wait().unwrap();
    let (from, to) = day();
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    assert!(l.healthy(), "{:?}", l.health());
    let kept = l.totals(from, to).sum.import_wh;
    assert!(kept <= 1000.0 + 1e-6, "{kept}");
    assert!(kept >= 700.0 - 1e-6, "lost more than 30 s: {kept}");
}

/// The child's side of `a_killed_process_loses_at_most_the_unflushed_cycles`: records 100
/// one-second cycles of 10 Wh into `path` (flushing every 30 s of cycle time), says so on
/// stdout, and waits to be killed. Never returns.
fn record_then_wait_to_be_killed(path: &Path) -> ! {
    let mut l = Ledger::open(path, Duration::from_secs(30));
    run(&mut l, t0(), 100, balanced(0.0, 36_000.0, 0.0, 0.0), &[]);
    println!("RECORDED");
    loop {
        std::thread::park();
    }
}

#[test]
fn corrupt_database_is_reported_with_its_path_and_records_continue() {
    let path = temp_db("corrupt");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, garbage).unwrap();
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    let h = l.health();
    assert!(!h.ok);
    assert!(!l.healthy());
    let err = h.last_error.unwrap();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert_eq!(h.path.as_deref(), Some(path.as_path()));
    let c = balanced(0.0, 36_000.0, 0.0, 0.0);
    run(&mut l, t0(), 120, c, &[car("charger-1", 0.0)]);
    let e = l.flush().unwrap_err();
    assert_eq!(e.path(), path.as_path());
    let (from, to) = day();
    assert!(close(l.totals(from, to).sum.import_wh, 1200.0, 1e-6));
    assert!(l.open_session("charger-1").is_some());
    assert!(!l.healthy());
}

#[test]
fn missing_directory_is_reported_and_the_ledger_recovers_once_it_exists() {
    let dir = temp_db("missing").with_file_name("not-yet");
    let path = dir.join("ledger.sqlite");
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    assert!(!l.healthy());
    assert!(l
        .health()
        .last_error
        .unwrap()
        .contains(&path.display().to_string()));
    let c = balanced(0.0, 36_000.0, 0.0, 0.0);
    let at = run(&mut l, t0(), 100, c, &[]);
    assert!(!l.healthy());
    std::fs::create_dir_all(&dir).unwrap();
    run(&mut l, at, 40, c, &[]); // crosses a flush: retried and written
    assert!(l.healthy(), "{:?}", l.health());
    drop(l);
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    let (from, to) = day();
    assert!(close(l.totals(from, to).sum.import_wh, 1400.0, 1e-6));
}

#[test]
fn path_that_is_a_directory_is_reported_and_records_continue() {
    let path = temp_db("isdir");
    std::fs::create_dir_all(&path).unwrap();
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    assert!(!l.healthy());
    assert!(l
        .health()
        .last_error
        .unwrap()
        .contains(&path.display().to_string()));
    run(&mut l, t0(), 90, balanced(0.0, 3_600.0, 0.0, 0.0), &[]);
    assert!(l.flush().is_err());
    let (from, to) = day();
    assert!(close(l.totals(from, to).sum.building_wh, 90.0, 1e-6));
}

#[test]
fn csv_has_a_header_and_one_line_per_record() {
    let mut l = Ledger::in_memory();
    let c = balanced(5_000.0, 1_000.0, 7_000.0, 0.0);
    let at = run(&mut l, t0(), 1000, c, &[car("charger,\"x\"", 7_000.0)]);
    record(&mut l, at, 1.0, c, &[unplugged("charger,\"x\"")]);
    let (from, to) = day();
    let b = l.buckets(from, to);
    let csv = buckets_csv(&b);
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines.len(), b.len() + 1);
    assert_eq!(lines[0].split(',').count(), BUCKET_COLUMNS.len() + 2);
    assert!(lines[0].ends_with(",estimated_s,estimated"), "{}", lines[0]);
    assert!(lines[1].ends_with(",0,false"), "{}", lines[1]);
    assert!(lines[1].starts_with("2026-06-01T00:00:00+00:00,"));
    let s = l.sessions(from, to);
    let csv = sessions_csv(&s);
    assert_eq!(csv.lines().count(), 2);
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("\"charger,\"\"x\"\"\","));
    let json = serde_json::to_string(&s[0]).unwrap();
    assert!(json.contains("\"green_share_pct\""));
    let json = serde_json::to_string(&l.totals(from, to)).unwrap();
    assert!(json.contains("\"ev_green_share_pct\""));
}

fn segment() -> impl Strategy<Value = (f64, f64, [f64; 3], f64, f64)> {
    (
        0.0..135_000.0f64,
        0.0..80_000.0f64,
        [0.0..22_000.0f64, 0.0..22_000.0f64, 0.0..22_000.0f64],
        -120_000.0..120_000.0f64,
        -500.0..500.0f64,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn flows_add_up_to_the_measured_energy_over_a_synthetic_day(
        segments in proptest::collection::vec(segment(), 96)
    ) {
        let mut l = Ledger::in_memory();
        let ids = ["charger-1", "charger-2", "charger-3"];
        let (mut pv, mut building, mut vehicles, mut import, mut export, mut noise) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let mut at = t0();
        for (pv_w, building_w, cars, battery_w, noise_w) in &segments {
            let chargers: Vec<ChargerInput> =
                ids.iter().zip(cars).map(|(id, p)| car(id, *p)).collect();
            let vehicles_w: f64 = cars.iter().sum();
            let mut c = balanced(*pv_w, *building_w, vehicles_w, *battery_w);
            c.grid_w += noise_w;
            for _ in 0..15 {
                at += chrono::Duration::seconds(60);
                record(&mut l, at, 60.0, c, &chargers);
                pv += pv_w / 60.0;
                building += building_w / 60.0;
                vehicles += vehicles_w / 60.0;
                import += c.grid_w.max(0.0) / 60.0;
                export += (-c.grid_w).max(0.0) / 60.0;
                noise += noise_w / 60.0;
            }
        }
        let t = l.totals(t0(), t0() + chrono::Duration::days(2)).sum;
        let tol = 1e-6 * (pv + building + vehicles + import + export + 1.0);
        prop_assert!(close(t.pv_wh, pv, tol));
        prop_assert!(close(t.building_wh, building, tol));
        prop_assert!(close(t.vehicles_wh, vehicles, tol));
        prop_assert!(close(t.import_wh, import, tol));
        prop_assert!(close(t.export_wh, export, tol));
        // Every load Wh has an origin.
        prop_assert!(close(
            t.pv_to_building_wh + t.battery_to_building_wh + t.grid_to_building_wh,
            building, tol));
        prop_assert!(close(
            t.pv_to_vehicles_wh + t.battery_to_vehicles_wh + t.grid_to_vehicles_wh,
            vehicles, tol));
        prop_assert!(close(t.pv_to_battery_wh + t.grid_to_battery_wh, t.battery_charge_wh, tol));
        // The residual is exactly the meter noise we injected.
        prop_assert!(close(t.unaccounted_wh, noise, tol));
        // Measured grid = grid the flows imply - residual + unplaced source energy.
        let pv_unplaced = t.pv_wh - t.pv_to_building_wh - t.pv_to_vehicles_wh
            - t.pv_to_battery_wh - t.pv_to_grid_wh;
        let bat_unplaced = t.battery_discharge_wh - t.battery_to_building_wh
            - t.battery_to_vehicles_wh - t.battery_to_grid_wh;
        prop_assert!(pv_unplaced >= -tol && bat_unplaced >= -tol);
        let implied = t.grid_to_building_wh + t.grid_to_vehicles_wh + t.grid_to_battery_wh
            - t.pv_to_grid_wh - t.battery_to_grid_wh;
        prop_assert!(close(import - export, implied + t.unaccounted_wh - pv_unplaced - bat_unplaced, tol));
        // Sessions get all the vehicle energy, green never above energy.
        let sessions = l.sessions(t0(), t0() + chrono::Duration::days(2));
        prop_assert_eq!(sessions.len(), 3);
        let session_wh: f64 = sessions.iter().map(|s| s.energy_wh).sum();
        prop_assert!(close(session_wh, vehicles, tol));
        for s in &sessions {
            prop_assert!(s.green_wh <= s.energy_wh + 1e-6);
            prop_assert!((0.0..=100.0).contains(&s.green_share_pct));
            prop_assert!(close(s.from_pv_wh + s.from_battery_wh + s.from_grid_wh, s.energy_wh, tol));
        }
    }

    #[test]
    fn every_split_is_non_negative_and_balances(
        pv_w in -1_000.0..200_000.0f64,
        building_w in -1_000.0..100_000.0f64,
        vehicles_w in 0.0..180_000.0f64,
        battery_w in -150_000.0..150_000.0f64,
        grid_w in -150_000.0..200_000.0f64,
        dt_s in 0.0..10.0f64,
    ) {
        let f = split_flows(&FlowInput { pv_w, building_w, vehicles_w, battery_w, grid_w, dt_s });
        for x in [f.pv_to_building_wh, f.pv_to_vehicles_wh, f.pv_to_battery_wh, f.pv_to_grid_wh,
                  f.battery_to_building_wh, f.battery_to_vehicles_wh, f.battery_to_grid_wh,
                  f.grid_to_building_wh, f.grid_to_vehicles_wh, f.grid_to_battery_wh] {
            prop_assert!(x >= -1e-9, "{:?}", f);
        }
        prop_assert!(f.pv_unplaced_wh() >= -1e-6);
        prop_assert!(f.battery_unplaced_wh() >= -1e-6);
        prop_assert!(f.grid_mismatch_wh().abs() < 1e-6, "{:?}", f);
        let consistent = split_flows(&FlowInput {
            pv_w: pv_w.max(0.0), building_w: building_w.max(0.0), vehicles_w, battery_w,
            grid_w: building_w.max(0.0) + vehicles_w - pv_w.max(0.0) - battery_w, dt_s,
        });
        prop_assert!(consistent.unaccounted_wh.abs() < 1e-6);
        prop_assert!(consistent.pv_unplaced_wh().abs() < 1e-6, "{:?}", consistent);
        prop_assert!(consistent.battery_unplaced_wh().abs() < 1e-6, "{:?}", consistent);
    }
}

#[test]
fn database_is_in_wal_mode_with_a_schema_version() {
    let path = temp_db("wal");
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    run(&mut l, t0(), 10, balanced(0.0, 3_600.0, 0.0, 0.0), &[]);
    l.flush().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, station_controller::ledger::store::SCHEMA_VERSION);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM buckets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn database_from_a_newer_program_is_refused_with_its_path() {
    let path = temp_db("newer");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (99);",
        )
        .unwrap();
    }
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    let err = l.health().last_error.unwrap();
    assert!(err.contains("99"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    run(&mut l, t0(), 40, balanced(0.0, 3_600.0, 0.0, 0.0), &[]);
    let (from, to) = day();
    assert!(close(l.totals(from, to).sum.building_wh, 40.0, 1e-6));
    assert!(!l.healthy());
}

#[test]
fn a_cycle_with_an_estimated_flow_marks_its_bucket_and_books_unread_chargers_in_no_session() {
    let mut l = Ledger::in_memory();
    let (from, to) = day();
    let c = balanced(5_000.0, 2_000.0, 7_000.0, 0.0);
    let chargers = [car("charger-1", 3_000.0)];
    let mut at = t0();
    for _ in 0..60 {
        at += chrono::Duration::seconds(1);
        l.record(&CycleInput {
            at,
            dt_s: 1.0,
            pv_w: c.pv_w,
            building_w: c.building_w,
            battery_w: c.battery_w,
            grid_w: c.grid_w,
            chargers: &chargers,
            unread_vehicles_w: 4_000.0,
            estimated: true,
            price_cny_per_kwh: c.price,
            export_price_cny_per_kwh: 0.39,
            co2_kg_per_kwh: CO2,
        });
    }
    let b = l.buckets(from, to);
    assert_eq!(b.len(), 1);
    assert!(b[0].is_estimated());
    assert!(close(b[0].estimated_s, 60.0, 1e-9));
    assert!(close(b[0].vehicles_wh, 7_000.0 / 60.0, 1e-6));
    assert!(b[0].unaccounted_wh.abs() < 1e-6, "{}", b[0].unaccounted_wh);
    let session = l.open_session("charger-1").unwrap();
    assert!(close(session.energy_wh, 3_000.0 / 60.0, 1e-6));
    let json = serde_json::to_value(&b[0]).unwrap();
    assert_eq!(json["estimated"], true);
    assert_eq!(json["estimated_s"], 60.0);
    let csv = buckets_csv(&b);
    assert!(csv.lines().nth(1).unwrap().ends_with(",60,true"), "{csv}");
}

#[test]
fn the_demand_state_survives_a_restart_of_the_ledger() {
    let path = temp_db("demand");
    let state = DemandState {
        window_start_s: Some(t0().timestamp()),
        energy_ws: 12_345_678.0,
        month_key: 2026 * 12 + 5,
        month_peak_w: 61_500.0,
    };
    {
        let mut l = Ledger::open(&path, Duration::from_secs(30));
        assert_eq!(l.demand_state(), None);
        l.save_demand_state(state);
        l.flush().unwrap();
    }
    let l = Ledger::open(&path, Duration::from_secs(30));
    assert!(l.healthy(), "{:?}", l.health());
    assert_eq!(l.demand_state(), Some(state));
    // A tracker restored from it keeps the month's peak.
    let tracker = DemandTracker::from_state(l.demand_state().unwrap());
    assert_eq!(tracker.month_peak().value(), 61_500.0);
    assert_eq!(tracker.state(), state);
}

#[test]
fn the_energy_counters_state_survives_a_restart_of_the_ledger() {
    use station_controller::ledger::SavedCounter;
    let path = temp_db("counters");
    let saved = vec![
        SavedCounter {
            name: "import".into(),
            value: 123_456.0,
            booked_wh: 12.5,
            at_s: 1_780_000_000.25,
        },
        SavedCounter {
            name: "charger:charger-1".into(),
            value: 9_876.0,
            booked_wh: 0.0,
            at_s: 1_780_000_001.0,
        },
    ];
    {
        let mut l = Ledger::open(&path, Duration::from_secs(30));
        assert!(l.counter_state().is_empty());
        l.save_counters(saved.clone());
        l.flush().unwrap();
        // A later flush replaces the states (a charger's counter no longer saved goes).
        l.save_counters(saved[..1].to_vec());
        l.flush().unwrap();
    }
    let l = Ledger::open(&path, Duration::from_secs(30));
    assert!(l.healthy(), "{:?}", l.health());
    assert_eq!(l.counter_state(), &saved[..1]);
}

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_buckets() {
    let path = temp_db("migrate");
    let (from, to) = day();
    let c = balanced(5_000.0, 1_000.0, 0.0, 0.0);
    {
        let mut l = Ledger::open(&path, Duration::from_secs(30));
        run(&mut l, t0(), 60, c, &[]);
        l.flush().unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE buckets DROP COLUMN estimated_s;
             DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES (1);",
        )
        .unwrap();
    }
    let mut l = Ledger::open(&path, Duration::from_secs(30));
    assert!(l.healthy(), "{:?}", l.health());
    let b = l.buckets(from, to);
    assert_eq!(b.len(), 1);
    assert!(close(b[0].pv_wh, 5_000.0 / 60.0, 1e-6));
    assert!(!b[0].is_estimated());
    let at = t0() + chrono::Duration::seconds(61);
    record(&mut l, at, 1.0, c, &[]);
    l.flush().unwrap();
    assert_eq!(l.buckets(from, to).len(), 1);
}

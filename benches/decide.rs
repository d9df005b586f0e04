//! `decide` with 16 chargers in a busy, import-limited situation. Target: < 5 us per call.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{Duration, TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use station_controller::dispatch::{
    decide, decide_into, ChargeMode, DispatchState, Plan, Policy, Reading, Snapshot,
};
use station_controller::units::{Amps, Watts};

fn busy_station() -> Snapshot {
    let mut s = Snapshot::reference_idle(16);
    s.building = Reading::fresh(Watts::from_kw(70.0));
    s.pv.power = Reading::fresh(Watts::from_kw(60.0));
    s.grid.power = Reading::fresh(Watts::from_kw(140.0));
    for (i, c) in s.chargers.iter_mut().enumerate() {
        let a = Amps(6.0 + i as f64);
        c.current = [a; 3];
        c.power = Watts(a.0 * 690.0);
    }
    s
}

fn bench_decide(c: &mut Criterion) {
    let policy = Policy::default();
    let mut mixed = Policy::default();
    mixed.vehicles.default_mode = ChargeMode::MinSolar;
    let snapshot = busy_station();
    let t0 = Utc.with_ymd_and_hms(2026, 6, 10, 4, 0, 0).unwrap();

    c.bench_function("decide_into 16 chargers fast", |b| {
        let mut state = DispatchState::new();
        let mut plan = Plan::default();
        let mut k = 0i64;
        b.iter(|| {
            k += 1;
            decide_into(
                black_box(&snapshot),
                &policy,
                &mut state,
                t0 + Duration::seconds(k),
                &mut plan,
            );
            black_box(&plan);
        })
    });

    c.bench_function("decide_into 16 chargers min_solar", |b| {
        let mut state = DispatchState::new();
        let mut plan = Plan::default();
        let mut k = 0i64;
        b.iter(|| {
            k += 1;
            decide_into(
                black_box(&snapshot),
                &mixed,
                &mut state,
                t0 + Duration::seconds(k),
                &mut plan,
            );
            black_box(&plan);
        })
    });

    c.bench_function("decide 16 chargers (allocating Plan)", |b| {
        let mut state = DispatchState::new();
        let mut k = 0i64;
        b.iter(|| {
            k += 1;
            black_box(decide(
                black_box(&snapshot),
                &policy,
                &mut state,
                t0 + Duration::seconds(k),
            ))
        })
    });
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);

//! Plant stepping speed: 16 chargers, dt = 1 s. Throughput is in simulated seconds.

// Test and bench code may panic on a broken invariant and time itself with the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use station_sim::physics::Plant;
use station_sim::scenario::Scenario;
use station_sim::view::Command;

fn sixteen_chargers() -> Scenario {
    let mut s = Scenario::reference();
    s.chargers.count = 16;
    s.vehicles.arrival_scale = 2.0;
    s
}

fn bench_plant(c: &mut Criterion) {
    let s = sixteen_chargers();
    let mut group = c.benchmark_group("plant");
    group.throughput(Throughput::Elements(3600));
    let mut plant = Plant::new(&s, 1);
    plant.apply(Command::BatterySetpointRevertS(0)).ok();
    plant.apply(Command::BatterySetpointW(-30_000.0)).ok();
    for i in 0..16 {
        plant
            .apply(Command::ChargerSafeCurrentA {
                index: i,
                amps: 16.0,
            })
            .ok();
    }
    group.bench_function("step_1s_16_chargers_one_hour", |b| {
        b.iter(|| {
            for _ in 0..3600 {
                plant.step(black_box(1.0));
            }
        })
    });
    group.finish();
    // Same workload at dt = 60 s; throughput again in simulated seconds.
    let mut group = c.benchmark_group("plant_dt60");
    group.throughput(Throughput::Elements(3600 * 60));
    let mut plant60 = Plant::new(&s, 1);
    group.bench_function("step_60s_16_chargers_60_hours", |b| {
        b.iter(|| {
            for _ in 0..3600 {
                plant60.step(black_box(60.0));
            }
        })
    });
    group.finish();
}

/// A fresh view against one view overwritten in place, 8 chargers with cars coming and going.
fn bench_view(c: &mut Criterion) {
    let mut s = Scenario::reference();
    s.vehicles.arrival_scale = 2.0;
    let mut plant = Plant::new(&s, 1);
    // Midday with cars plugged.
    plant.step(6.0 * 3600.0);
    let mut group = c.benchmark_group("plant_view");
    group.bench_function("view_8_chargers", |b| b.iter(|| black_box(plant.view())));
    let mut buf = plant.view();
    group.bench_function("view_into_8_chargers", |b| {
        b.iter(|| plant.view_into(black_box(&mut buf)))
    });
    group.finish();
}

criterion_group!(benches, bench_plant, bench_view);
criterion_main!(benches);

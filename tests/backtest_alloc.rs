//! The backtest's closed loop allocates nothing per cycle in the steady state: the plant's
//! view is overwritten in place, the snapshot is refreshed in place and the commands go to a
//! reused vector.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use station_controller::backtest::plant_io::{plan_changes, SnapshotBuilder};
use station_controller::backtest::run::{Controller, PolicyController};
use station_controller::dispatch::{decide_into, DispatchState, Plan, Policy};
use station_sim::physics::{Plant, VehicleKind, VehicleSpec};
use station_sim::scenario::Scenario;
use station_sim::view::Command;
use support::alloc::{allocations, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The reference station at 10:00 without random arrivals, three cars plugged for a day.
fn plant_with_cars() -> Plant {
    let mut s = Scenario::reference();
    s.vehicles.arrival_scale = 0.0;
    s.start.time = "10:00".to_string();
    let mut p = Plant::new(&s, 4);
    for c in [1, 4, 6] {
        p.plug_vehicle(
            c,
            VehicleSpec {
                kind: VehicleKind::Manual,
                battery_wh: 80_000.0,
                soc_pct: 10.0,
                target_soc_pct: 90.0,
                onboard_max_a: 32.0,
                phases: 3,
                stay_s: 86_400.0,
            },
        )
        .unwrap();
    }
    p
}

#[test]
fn snapshot_update_and_plan_changes_do_not_allocate_in_the_steady_state() {
    let mut p = plant_with_cars();
    let mut view = p.view();
    let policy = Policy::default();
    let mut state = DispatchState::new();
    let mut plan = Plan::default();
    let mut builder = SnapshotBuilder::new(0.95);
    let mut out: Vec<Command> = Vec::with_capacity(32);
    // Warm up: the first update builds the snapshot, the first decision sizes the plan.
    decide_into(
        builder.update(&view),
        &policy,
        &mut state,
        view.sim_time,
        &mut plan,
    );
    let before = allocations();
    let mut written = 0;
    for _ in 0..3_000 {
        p.step(1.0);
        p.view_into(&mut view);
        builder.update(&view);
        plan_changes(&plan, &view, 1.0, &mut out);
        written += out.len();
        for c in out.drain(..) {
            p.apply(c).unwrap();
        }
    }
    assert_eq!(allocations() - before, 0);
    assert!(written > 0, "the loop wrote setpoints");
    let s = builder.last().unwrap();
    assert!(s.chargers[1].plugged && !s.chargers[0].plugged);
}

#[test]
fn policy_closed_loop_cycle_does_not_allocate_in_the_steady_state() {
    let mut p = plant_with_cars();
    let mut view = p.view();
    let mut controller = PolicyController::new(Policy::default(), 0.95);
    let mut out: Vec<Command> = Vec::with_capacity(32);
    let mut cycle = |p: &mut Plant, view: &mut station_sim::view::StationView| {
        p.view_into(view);
        controller.control(view, &mut out);
        for c in out.drain(..) {
            p.apply(c).unwrap();
        }
        p.step(1.0);
    };
    for _ in 0..120 {
        cycle(&mut p, &mut view);
    }
    let before = allocations();
    for _ in 0..3_600 {
        cycle(&mut p, &mut view);
    }
    assert_eq!(allocations() - before, 0);
    assert!(
        p.kpis().ev_delivered_kwh > 10.0,
        "the policy charged the cars"
    );
    // The counter does see allocations: a fresh view allocates its charger list and ids.
    p.view_into(&mut view);
    let fresh = p.view();
    assert!(allocations() > before);
    assert_eq!(fresh, view);
}

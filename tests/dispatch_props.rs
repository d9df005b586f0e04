//! Invariants of `decide` over random snapshots and policies.
// Test and bench code may unwrap, and times itself with the clocks the product may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use station_controller::config::{Issues, RawChargerOverride, RawEveningReserve, RawPolicy};
use station_controller::dispatch::{
    decide, BatterySnapshot, ChargeMode, ChargerId, ChargerSnapshot, ChargerState, DispatchState,
    Freshness, GridSnapshot, HealthLimits, Plan, Policy, PvSnapshot, Reading, ServeFirst, Sharing,
    Snapshot,
};
use station_controller::units::{Amps, Percent, WattHours, Watts};

const EPS_W: f64 = 1e-3;

fn freshness() -> impl Strategy<Value = Freshness> {
    prop_oneof![
        8 => Just(Freshness::Fresh),
        1 => Just(Freshness::Stale),
        1 => Just(Freshness::Missing),
    ]
}

fn reading_w(max_w: f64) -> impl Strategy<Value = Reading<Watts>> {
    (0.0..=max_w, freshness()).prop_map(|(v, freshness)| Reading {
        value: Watts(v),
        freshness,
    })
}

fn charger_state() -> impl Strategy<Value = ChargerState> {
    prop_oneof![
        1 => Just(ChargerState::A),
        1 => Just(ChargerState::B1),
        1 => Just(ChargerState::B2),
        1 => Just(ChargerState::C1),
        3 => Just(ChargerState::C2),
        1 => Just(ChargerState::D),
        1 => Just(ChargerState::E),
        1 => Just(ChargerState::F),
        1 => Just(ChargerState::Unknown),
    ]
}

fn charger(i: usize) -> impl Strategy<Value = ChargerSnapshot> {
    (
        prop::bool::weighted(0.9),
        charger_state(),
        prop_oneof![1 => Just(1u8), 3 => Just(3u8)],
        prop_oneof![Just(16.0), Just(32.0), Just(63.0)],
        0.0..=1.0f64,
        0.0..=1.0f64,
        any::<bool>(),
    )
        .prop_map(
            move |(online, state, phases, rating, safe_frac, draw_frac, plugged)| {
                let draw = Amps(rating * draw_frac);
                ChargerSnapshot {
                    id: ChargerId::new(&format!("charger-{}", i + 1)),
                    online,
                    state,
                    current: [draw; 3],
                    power: Watts(draw.0 * 230.0 * f64::from(phases)),
                    phases,
                    min_current: Amps(6.0),
                    rating: Amps(rating),
                    safe_current: Amps((rating * safe_frac).round()),
                    plugged: plugged || state != ChargerState::A,
                }
            },
        )
}

/// Health limits from the battery's measured health: neutral half the time, else a random
/// narrowed window, power factors and wear price.
fn health() -> impl Strategy<Value = HealthLimits> {
    prop_oneof![
        1 => Just(HealthLimits::default()),
        1 => (0.0..=60.0f64, 40.0..=100.0f64, 0.0..=1.0f64, 0.0..=1.0f64, prop::option::of(0.0..=2.0f64))
            .prop_map(|(lo, hi, c, d, wear)| HealthLimits {
                soc_min: Percent(lo),
                soc_max: Percent(hi),
                charge_factor: c,
                discharge_factor: d,
                wear_cny_per_kwh: wear,
                capacity_wh: None,
            }),
    ]
}

fn battery() -> impl Strategy<Value = BatterySnapshot> {
    (
        health(),
        (
            prop::bool::weighted(0.9),
            (0.0..=100.0f64, freshness()),
            -150_000.0..=150_000.0f64,
            0.0..=150_000.0f64,
            0.0..=150_000.0f64,
            -20.0..=60.0f64,
            prop::bool::weighted(0.1),
            0.0..=500_000.0f64,
        ),
    )
        .prop_map(
            |(
                health,
                (online, (soc, soc_fresh), power, max_charge, max_discharge, temp, alarm, usable),
            )| {
                BatterySnapshot {
                    online,
                    soc: Reading {
                        value: Percent(soc),
                        freshness: soc_fresh,
                    },
                    soh: Percent(72.0),
                    power: Reading::fresh(Watts(power)),
                    max_charge: Watts(max_charge),
                    max_discharge: Watts(max_discharge),
                    temperature_c: temp,
                    alarm,
                    usable_capacity: WattHours(usable),
                    health,
                }
            },
        )
}

fn snapshot(n: usize) -> impl Strategy<Value = Snapshot> {
    let chargers: Vec<_> = (0..n).map(charger).collect();
    (
        (-150_000.0..=300_000.0f64, freshness()),
        (prop::array::uniform3(-50_000.0..=120_000.0f64), freshness()),
        (
            0.0..=200_000.0f64,
            0.0..=1.0f64,
            0.0..=100.0f64,
            freshness(),
        ),
        battery(),
        reading_w(250_000.0),
        chargers,
    )
        .prop_map(
            |(
                (grid, gf),
                (phase, pf),
                (rating, pv_frac, limit, pvf),
                battery,
                building,
                chargers,
            )| {
                Snapshot {
                    grid: GridSnapshot {
                        power: Reading {
                            value: Watts(grid),
                            freshness: gf,
                        },
                        phase_power: Reading {
                            value: phase.map(Watts),
                            freshness: pf,
                        },
                    },
                    pv: PvSnapshot {
                        power: Reading {
                            value: Watts(rating * pv_frac),
                            freshness: pvf,
                        },
                        rating: Watts(rating),
                        limit: Percent(if limit > 80.0 { 100.0 } else { limit }),
                    },
                    battery,
                    building,
                    chargers,
                }
            },
        )
}

fn mode() -> impl Strategy<Value = ChargeMode> {
    prop_oneof![
        Just(ChargeMode::Fast),
        Just(ChargeMode::Solar),
        Just(ChargeMode::MinSolar)
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        (
            20.0..=300.0f64,
            0.0..=150.0f64,
            prop::option::of(50.0..=400.0f64),
            0.0..=1.0f64,
            0.0..=0.2f64,
        ),
        prop_oneof![Just(ServeFirst::Dealer), Just(ServeFirst::Vehicles)],
        (
            mode(),
            prop_oneof![
                Just(Sharing::Equal),
                Just(Sharing::FirstCome),
                Just(Sharing::Priority)
            ],
            0.0..=600.0f64,
            0.0..=600.0f64,
            0.0..=2000.0f64,
            0.5..=10.0f64,
        ),
        (
            prop::option::of((
                mode(),
                prop::option::of(6.0..=12.0f64),
                prop::option::of(10.0..=40.0f64),
                -5..=5i32,
            )),
            0.0..=40.0f64,
            50.0..=100.0f64,
            0.1..=2.0f64,
            prop::option::of((0.0..=1.0f64, 0u16..24, 0u16..24)),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (import_kw, export_kw, fuse, target_frac, margin_frac),
                serve_first,
                (mode, sharing, min_on, min_off, hyst, ramp),
                (ovr, soc_min, soc_max, c_rate, reserve, valley),
            )| {
                let mut raw = RawPolicy::default();
                raw.grid.import_limit_kw = import_kw;
                raw.grid.export_limit_kw = export_kw;
                raw.grid.phase_fuse_a = fuse;
                raw.grid.demand_target_kw = import_kw * target_frac;
                raw.grid.import_margin_kw = import_kw * margin_frac;
                raw.serve_first = serve_first;
                raw.vehicles.default_mode = mode;
                raw.vehicles.sharing = sharing;
                raw.vehicles.min_on_s = min_on;
                raw.vehicles.min_off_s = min_off;
                raw.vehicles.hysteresis_w = hyst;
                raw.vehicles.ramp_up_a_per_s = ramp;
                if let Some((m, min_a, max_a, priority)) = ovr {
                    let max_a = match (min_a, max_a) {
                        (Some(lo), Some(hi)) => Some(hi.max(lo)),
                        (_, hi) => hi,
                    };
                    raw.vehicles.chargers.insert(
                        "charger-2".into(),
                        RawChargerOverride {
                            mode: Some(m),
                            min_a,
                            max_a,
                            priority,
                        },
                    );
                }
                raw.battery.soc_min_pct = soc_min;
                raw.battery.soc_max_pct = soc_max;
                raw.battery.c_rate_cap = c_rate;
                raw.battery.evening_reserve = reserve.map(|(f, from, before)| RawEveningReserve {
                    soc_pct: soc_min + f * (soc_max - soc_min),
                    from: format!("{from:02}:00"),
                    before: format!("{before:02}:30"),
                });
                raw.battery.grid_charging_in_valley = valley;
                let mut issues = Issues::new();
                match raw.validate("policy", &mut issues) {
                    Some(p) => p,
                    None => panic!("generated policy invalid: {issues}"),
                }
            },
        )
}

fn start_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..365 * 86_400)
        .prop_map(|s| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(s))
}

fn scenario() -> impl Strategy<Value = (Policy, Vec<Snapshot>, DateTime<Utc>)> {
    (0usize..=10).prop_flat_map(|n| {
        (
            policy(),
            prop::collection::vec(snapshot(n), 1..5),
            start_time(),
        )
    })
}

/// The charger's current range as `decide` must respect it.
fn range(p: &Policy, c: &ChargerSnapshot) -> (f64, f64) {
    let cp = p.vehicles.for_charger(c.id.as_str());
    let min = c.min_current.0.max(cp.min.map_or(0.0, |a| a.0));
    let max = c.rating.0.min(cp.max.map_or(c.rating.0, |a| a.0));
    (min, max)
}

/// The SoC window after the health derating (never wider than the policy's).
fn window(p: &Policy, b: &BatterySnapshot) -> (f64, f64) {
    (
        p.battery.soc_min.0.max(b.health.soc_min.0),
        p.battery.soc_max.0.min(b.health.soc_max.0),
    )
}

/// The largest discharge the battery may give (BMS derated by temperature, C-rate, the
/// derated SoC window), 0 when unusable.
fn discharge_bound(p: &Policy, b: &BatterySnapshot) -> f64 {
    let usable = b.usable_capacity.0.max(0.0);
    let (soc_min, _) = window(p, b);
    match b.soc.fresh_value() {
        Some(soc)
            if b.online
                && !b.alarm
                && (-10.0..=55.0).contains(&b.temperature_c)
                && soc.0 > soc_min =>
        {
            (b.max_discharge.0 * b.health.discharge_factor)
                .min(usable * p.battery.c_rate_cap)
                .min((soc.0 - soc_min) / 100.0 * usable * 3600.0 / p.cycle_s)
        }
        _ => 0.0,
    }
}

fn check(p: &Policy, s: &Snapshot, plan: &Plan, prev_battery: Watts) -> Result<(), TestCaseError> {
    let grid_fresh = s.grid.power.is_fresh();
    prop_assert_eq!(plan.chargers.len(), s.chargers.len());
    let mut chargers_w = 0.0;
    for (c, sp) in s.chargers.iter().zip(&plan.chargers) {
        prop_assert_eq!(&sp.id, &c.id);
        let a = sp.amps.0;
        prop_assert!(a.is_finite() && a >= 0.0, "{} amps {}", c.id, a);
        let (min, max) = range(p, c);
        if a > 0.0 {
            prop_assert!(
                a >= min - 1e-9 && a <= max + 1e-9,
                "{} at {a} outside [{min}, {max}]",
                c.id
            );
            prop_assert!(a <= c.rating.0 + 1e-9);
            prop_assert!(
                c.online && c.state.can_charge(),
                "{} gets {a} A in {:?}",
                c.id,
                c.state
            );
        }
        if !grid_fresh {
            prop_assert!(a <= c.safe_current.0 + 1e-9, "{} above safe current", c.id);
        }
        chargers_w += a * 230.0 * f64::from(sp.phases);
    }

    // Power balance of the plan.
    let b = &plan.balance;
    prop_assert!((b.chargers.0 - chargers_w).abs() < 1e-6 * (1.0 + chargers_w));
    prop_assert!((b.grid.0 - b.implied_grid().0).abs() < 1e-6);
    prop_assert_eq!(b.battery, plan.battery);
    prop_assert!(b.pv.0 >= 0.0);

    // Battery within BMS limits, C-rate cap and SoC window.
    let bat = plan.battery.0;
    let usable = s.battery.usable_capacity.0;
    prop_assert!(bat.is_finite());
    let usable_ok = s.battery.online && !s.battery.alarm && s.battery.soc.is_fresh();
    if !usable_ok {
        prop_assert_eq!(bat, 0.0);
    }
    // The health derating (cell spread narrows the window, temperature scales the BMS
    // limits) is never exceeded.
    let (soc_min, soc_max) = window(p, &s.battery);
    let h = &s.battery.health;
    if bat > 0.0 {
        prop_assert!(bat <= s.battery.max_discharge.0 * h.discharge_factor + EPS_W);
        prop_assert!(bat <= usable * p.battery.c_rate_cap + EPS_W);
        prop_assert!(
            s.battery.soc.value.0 > soc_min,
            "discharge at/below the derated soc_min {soc_min}"
        );
    }
    if bat < 0.0 {
        prop_assert!(-bat <= s.battery.max_charge.0 * h.charge_factor + EPS_W);
        prop_assert!(-bat <= usable * p.battery.c_rate_cap + EPS_W);
        prop_assert!(
            s.battery.soc.value.0 < soc_max,
            "charge at/above the derated soc_max {soc_max}"
        );
    }
    if !grid_fresh {
        prop_assert!(
            bat <= prev_battery.0.max(0.0) + EPS_W,
            "discharge grew with a stale grid meter"
        );
    }

    // PV limit and export.
    prop_assert!((0.0..=100.0).contains(&plan.pv_limit.0));
    prop_assert!(
        b.grid.0 >= -p.grid.export_limit.0 - EPS_W,
        "export {:?} above limit",
        b.grid
    );

    // Import under the limit, or a reason says why and nothing was left to do.
    if grid_fresh && b.grid.0 > p.grid.import_limit.0 + EPS_W {
        prop_assert!(plan.has_reason("import_limit_unreachable"), "{:?}", plan);
        prop_assert!(plan.chargers.iter().all(|c| c.amps.0 == 0.0), "{:?}", plan);
        let bound = discharge_bound(p, &s.battery);
        prop_assert!(
            (bat - bound).abs() < 1e-6 * (1.0 + bound),
            "battery {bat} below its bound {bound}"
        );
    }
    // The chargers never take the import margin: with any car charging on a fresh meter, the
    // plan imports at most the limit less the margin.
    if grid_fresh && plan.chargers.iter().any(|c| c.amps.0 > 0.0) {
        prop_assert!(
            b.grid.0 <= p.grid.import_budget().0 + EPS_W,
            "grid {:?} above the budget {:?} with cars charging: {:?}",
            b.grid,
            p.grid.import_budget(),
            plan
        );
    }
    for r in &plan.reasons {
        prop_assert!(!r.to_string().is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_plan_keeps_the_invariants((policy, snapshots, t0) in scenario()) {
        let mut state = DispatchState::new();
        let mut prev_battery = Watts::ZERO;
        for (k, s) in snapshots.iter().enumerate() {
            let plan = decide(s, &policy, &mut state, t0 + Duration::seconds(k as i64));
            check(&policy, s, &plan, prev_battery)?;
            prev_battery = plan.battery;
        }
    }

    #[test]
    fn decide_is_deterministic((policy, snapshots, t0) in scenario()) {
        let mut a = DispatchState::new();
        let mut b = DispatchState::new();
        for (k, s) in snapshots.iter().enumerate() {
            let now = t0 + Duration::seconds(k as i64);
            prop_assert_eq!(decide(s, &policy, &mut a, now), decide(s, &policy, &mut b, now));
        }
    }

    #[test]
    fn steady_state_settles_under_the_import_limit((policy, snapshots, t0) in scenario()) {
        // The same snapshot for a minute with a fresh grid meter: ramps finish, and the last
        // plan still keeps every invariant.
        let mut s = snapshots[0].clone();
        s.grid.power.freshness = Freshness::Fresh;
        let mut state = DispatchState::new();
        let mut prev = Watts::ZERO;
        for k in 0..60 {
            let plan = decide(&s, &policy, &mut state, t0 + Duration::seconds(k));
            check(&policy, &s, &plan, prev)?;
            prev = plan.battery;
        }
    }
}

//! Behaviour tests of `decide`, one sentence each.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::units::{charger_power_nominal, WattHours};
use chrono::TimeZone;

/// UTC instant of a local (Asia/Shanghai, UTC+8) time on Wednesday 2026-06-10.
fn local(h: u32, m: u32) -> DateTime<Utc> {
    local_on(6, 10, h, m)
}

/// Station-local (Shanghai) time on a day of 2026.
fn local_on(month: u32, day: u32, h: u32, m: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, month, day, h, m, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn secs(t: DateTime<Utc>, s: i64) -> DateTime<Utc> {
    t + chrono::Duration::seconds(s)
}

/// A station with the battery out of the way (offline) unless a test brings it back.
fn no_battery(n: usize) -> Snapshot {
    let mut s = Snapshot::reference_idle(n);
    s.battery.online = false;
    s
}

/// The grid meter as the plant would read it: building + chargers - PV - battery.
fn meter_grid(s: &mut Snapshot, pv: Watts) {
    let chargers = s.chargers.iter().fold(Watts::ZERO, |sum, c| sum + c.power);
    s.grid.power = Reading::fresh(s.building.value + chargers - pv - s.battery.power.value);
}

/// A snapshot whose grid meter agrees with its other meters.
fn metered(mut s: Snapshot) -> Snapshot {
    let pv = s.pv.power.value;
    meter_grid(&mut s, pv);
    s
}

/// Make the snapshot's chargers draw what the plan asked for, the PV and battery deliver it,
/// and the grid meter read what the plant then imports.
fn follow(s: &mut Snapshot, plan: &Plan) {
    for (c, sp) in s.chargers.iter_mut().zip(&plan.chargers) {
        c.current = [sp.amps; 3];
        c.power = charger_power_nominal(sp.amps, c.phases);
    }
    s.battery.power = Reading::fresh(plan.battery);
    let pv = s.pv.power.value.min(plan.balance.pv);
    meter_grid(s, pv);
}

/// Run `cycles` one-second cycles from `start`, the plant following each plan.
fn run(
    s: &mut Snapshot,
    p: &Policy,
    st: &mut DispatchState,
    start: DateTime<Utc>,
    cycles: i64,
) -> Plan {
    let pv = s.pv.power.value;
    meter_grid(s, pv);
    let mut plan = decide(s, p, st, start);
    for k in 1..cycles {
        follow(s, &plan);
        plan = decide(s, p, st, secs(start, k));
    }
    follow(s, &plan);
    plan
}

fn amps(plan: &Plan) -> Vec<f64> {
    plan.chargers.iter().map(|c| c.amps.0).collect()
}

/// `p` with wear priced three times higher, so the flat price (0.70) no longer pays for
/// discharging (0.39 / 0.9 + 0.42) and only peak shaving moves the battery in the flat period.
fn shaving_only(mut p: Policy) -> Policy {
    p.battery.pack_value_cny *= 3.0;
    p
}

/// The default policy planning right at the import limit (no margin) with a 100 kW demand
/// target: the arithmetic of the sharing and battery tests below is written against it.
fn exact() -> Policy {
    let mut p = Policy::default();
    p.grid.import_margin = Watts::ZERO;
    p.grid.demand_target = Watts::from_kw(100.0);
    p
}

fn with_mode(mut p: Policy, mode: ChargeMode) -> Policy {
    p.vehicles.default_mode = mode;
    p
}

#[test]
fn fast_chargers_share_the_import_limit_equally_and_say_why() {
    let mut s = no_battery(8);
    s.building = Reading::fresh(Watts::from_kw(100.0));
    let p = exact();
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    let each = 50_000.0 / 8.0 / 690.0;
    for a in amps(&plan) {
        assert!((a - each).abs() < 1e-6, "{a} vs {each}");
    }
    assert!((plan.balance.grid.0 - 150_000.0).abs() < 1.0);
    assert!(plan.has_reason("charger_import_limited"));
    let text = plan
        .reasons
        .iter()
        .find(|r| r.code() == "charger_import_limited")
        .unwrap()
        .to_string();
    assert!(text.ends_with(": grid import limit"), "{text}");
}

#[test]
fn fast_chargers_reach_their_rating_when_the_limit_allows() {
    let mut s = no_battery(4);
    s.building = Reading::fresh(Watts::from_kw(30.0));
    let p = Policy::default();
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    assert_eq!(amps(&plan), vec![32.0; 4]);
    assert_eq!(
        plan.reasons,
        vec![Reason::BatteryIdle {
            cause: BatteryIdleCause::Offline
        }]
    );
}

#[test]
fn a_sudden_building_load_step_cuts_chargers_in_the_same_cycle() {
    let mut s = no_battery(8);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    let p = Policy::default();
    let mut st = DispatchState::new();
    let t0 = local(8, 0);
    let plan = run(&mut s, &p, &mut st, t0, 30);
    assert!(plan.balance.grid.0 <= 150_000.0 + 1e-6);
    // The workshop switches on 60 kW: the very next decision already fits the limit.
    s.building = Reading::fresh(Watts::from_kw(80.0));
    s.grid.power = Reading::fresh(s.grid.power.value + Watts::from_kw(60.0));
    let plan = decide(&s, &p, &mut st, secs(t0, 30));
    assert!(
        plan.balance.grid.0 <= 150_000.0 + 1e-6,
        "{:?}",
        plan.balance
    );
    let total: f64 = amps(&plan).iter().map(|a| a * 690.0).sum();
    assert!(total <= 70_000.0 + 1e-6);
}

#[test]
fn ramp_up_is_limited_but_decreases_are_immediate() {
    let mut s = no_battery(1);
    let p = exact(); // 2 A/s
    let mut st = DispatchState::new();
    let t0 = local(8, 0);
    let first = decide(&s, &p, &mut st, t0);
    assert_eq!(
        first.chargers[0].amps,
        Amps(6.0),
        "a start jumps to the minimum"
    );
    follow(&mut s, &first);
    let second = decide(&s, &p, &mut st, secs(t0, 1));
    assert_eq!(second.chargers[0].amps, Amps(8.0));
    assert!(second.has_reason("charger_ramp_limited"));
    let plan = run(&mut s, &p, &mut st, secs(t0, 2), 20);
    assert_eq!(plan.chargers[0].amps, Amps(32.0));
    // Building jumps so that only 10 A fit: the drop happens at once.
    s.building = Reading::fresh(Watts::from_kw(150.0) - Watts(10.0 * 690.0));
    let plan = decide(&s, &p, &mut st, secs(t0, 23));
    assert!((plan.chargers[0].amps.0 - 10.0).abs() < 1e-6);
}

#[test]
fn a_charger_gets_nothing_rather_than_less_than_its_minimum() {
    let mut s = no_battery(2);
    // Room for 1.5 x the minimum of one charger.
    s.building = Reading::fresh(Watts::from_kw(150.0) - Watts(9.0 * 690.0));
    let p = exact();
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 10);
    let a = amps(&plan);
    assert!((a[0] - 9.0).abs() < 1e-6 && a[1] == 0.0, "{a:?}");
}

#[test]
fn priority_sharing_serves_the_highest_priority_first() {
    let mut raw = crate::config::RawPolicy::default();
    raw.grid.import_margin_kw = 0.0;
    raw.vehicles.sharing = Sharing::Priority;
    raw.vehicles.chargers.insert(
        "charger-2".into(),
        crate::config::RawChargerOverride {
            priority: 10,
            ..Default::default()
        },
    );
    let p = raw
        .validate("policy", &mut crate::config::Issues::new())
        .unwrap();
    let mut s = no_battery(3);
    s.building = Reading::fresh(Watts::from_kw(150.0) - Watts(40.0 * 690.0));
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    let a = amps(&plan);
    assert_eq!(a[1], 32.0);
    assert!((a[0] - 8.0).abs() < 1e-6 && a[2] == 0.0, "{a:?}");
}

#[test]
fn first_come_sharing_serves_the_earliest_car_fully() {
    let mut raw = crate::config::RawPolicy::default();
    raw.grid.import_margin_kw = 0.0;
    raw.vehicles.sharing = Sharing::FirstCome;
    let p = raw
        .validate("policy", &mut crate::config::Issues::new())
        .unwrap();
    let mut s = no_battery(2);
    s.chargers[0].plugged = false;
    s.chargers[0].state = ChargerState::A;
    let mut st = DispatchState::new();
    let t0 = local(8, 0);
    run(&mut s, &p, &mut st, t0, 5);
    // Car on charger-1 arrives later than the one on charger-2.
    s.chargers[0].plugged = true;
    s.chargers[0].state = ChargerState::C2;
    s.building = Reading::fresh(Watts::from_kw(150.0) - Watts(40.0 * 690.0));
    let plan = run(&mut s, &p, &mut st, secs(t0, 5), 30);
    let a = amps(&plan);
    assert_eq!(a[1], 32.0);
    assert!((a[0] - 8.0).abs() < 1e-6, "{a:?}");
}

#[test]
fn solar_mode_charges_from_pv_surplus_only() {
    let p = with_mode(Policy::default(), ChargeMode::Solar);
    let mut s = no_battery(1);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    s.pv.power = Reading::fresh(Watts::from_kw(30.0));
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(12, 0), 30);
    let a = plan.chargers[0].amps.0;
    assert!((a - 10_000.0 / 690.0).abs() < 1e-6, "{a}");
    assert!(plan.balance.grid.0.abs() < 1.0, "{:?}", plan.balance);
}

#[test]
fn solar_mode_does_not_start_below_minimum_plus_hysteresis() {
    let p = with_mode(Policy::default(), ChargeMode::Solar);
    let mut s = no_battery(1);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    // Surplus 4.3 kW: above 6 A x 690 W/A = 4.14 kW but below 4.64 kW.
    s.pv.power = Reading::fresh(Watts::from_kw(24.3));
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(12, 0), 5);
    assert_eq!(plan.chargers[0].amps, Amps(0.0));
    assert!(plan.has_reason("charger_paused_no_surplus"));
}

#[test]
fn solar_mode_does_not_flap_when_the_surplus_hovers_around_the_minimum() {
    let mut p = with_mode(Policy::default(), ChargeMode::Solar);
    p.vehicles.min_on_s = 0.0;
    p.vehicles.min_off_s = 0.0;
    let mut s = no_battery(1);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    s.pv.power = Reading::fresh(Watts::from_kw(26.0));
    let mut st = DispatchState::new();
    let t0 = local(12, 0);
    let plan = run(&mut s, &p, &mut st, t0, 3);
    assert!(plan.chargers[0].amps.0 > 0.0);
    // Surplus wobbles between 3.9 kW and 4.4 kW, all within 500 W of the 4.14 kW minimum.
    let mut switches = 0;
    let mut on = true;
    for k in 0..60 {
        let surplus = if k % 2 == 0 { 3.9 } else { 4.4 };
        s.pv.power = Reading::fresh(Watts::from_kw(20.0 + surplus));
        let plan = decide(&s, &p, &mut st, secs(t0, 3 + k));
        follow(&mut s, &plan);
        let now_on = plan.chargers[0].amps.0 > 0.0;
        switches += usize::from(now_on != on);
        on = now_on;
    }
    assert_eq!(switches, 0);
    assert!(s.chargers[0].current[0].0 >= 6.0);
}

#[test]
fn solar_mode_keeps_min_on_and_min_off_times() {
    let p = with_mode(Policy::default(), ChargeMode::Solar); // 300 s each
    let mut s = no_battery(1);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    s.pv.power = Reading::fresh(Watts::from_kw(30.0));
    let mut st = DispatchState::new();
    let t0 = local(12, 0);
    run(&mut s, &p, &mut st, t0, 10);
    // A cloud: no surplus at all, but the charger started only 10 s ago.
    s.pv.power = Reading::fresh(Watts::from_kw(5.0));
    let plan = run(&mut s, &p, &mut st, secs(t0, 10), 100);
    assert_eq!(plan.chargers[0].amps, Amps(6.0));
    assert!(plan.has_reason("charger_held_on_min_on_time"));
    let plan = run(&mut s, &p, &mut st, secs(t0, 110), 200);
    assert_eq!(plan.chargers[0].amps, Amps(0.0));
    // Sun back right after the pause: min_off keeps it paused for 300 s.
    s.pv.power = Reading::fresh(Watts::from_kw(30.0));
    let plan = run(&mut s, &p, &mut st, secs(t0, 310), 100);
    assert_eq!(plan.chargers[0].amps, Amps(0.0));
    assert!(plan.has_reason("charger_held_off_min_off_time"));
    let plan = run(&mut s, &p, &mut st, secs(t0, 410), 300);
    assert!(plan.chargers[0].amps.0 > 6.0);
}

#[test]
fn min_solar_mode_keeps_the_minimum_without_surplus_and_adds_surplus() {
    let p = with_mode(Policy::default(), ChargeMode::MinSolar);
    let mut s = no_battery(1);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    let mut st = DispatchState::new();
    let t0 = local(12, 0);
    let plan = run(&mut s, &p, &mut st, t0, 5);
    assert_eq!(plan.chargers[0].amps, Amps(6.0));
    s.pv.power = Reading::fresh(Watts::from_kw(35.0));
    let plan = run(&mut s, &p, &mut st, secs(t0, 5), 30);
    let a = plan.chargers[0].amps.0;
    assert!((a - 15_000.0 / 690.0).abs() < 1e-6, "{a}");
}

#[test]
fn serve_first_dealer_cuts_vehicles_when_the_battery_cannot_carry_the_building() {
    let mut p = exact();
    p.serve_first = ServeFirst::Dealer;
    p.grid.demand_target = p.grid.import_limit;
    let mut s = Snapshot::reference_idle(4);
    s.building = Reading::fresh(Watts::from_kw(140.0));
    s.battery.soc = Reading::fresh(Percent(10.0)); // at soc_min
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30); // flat tariff
                                                          // 10 kW of room: not enough for 6 A on all four, so two share it and two wait.
    let a = amps(&plan);
    let two = 10_000.0 / 2.0 / 690.0;
    assert!(
        (a[0] - two).abs() < 1e-6 && (a[1] - two).abs() < 1e-6,
        "{a:?}"
    );
    assert_eq!(&a[2..], &[0.0, 0.0]);
    assert_eq!(plan.battery, Watts::ZERO);
}

#[test]
fn serve_first_vehicles_discharges_the_battery_to_keep_cars_charging() {
    let mut p = exact();
    p.serve_first = ServeFirst::Vehicles;
    p.grid.demand_target = p.grid.import_limit;
    let mut s = Snapshot::reference_idle(4);
    s.building = Reading::fresh(Watts::from_kw(140.0));
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    assert_eq!(amps(&plan), vec![32.0; 4]);
    let cars = 4.0 * 32.0 * 690.0;
    assert!((plan.battery.0 - (140_000.0 + cars - 150_000.0)).abs() < 1.0);
    assert!(plan.has_reason("battery_import_limit"));
    assert!(plan.balance.grid.0 <= 150_000.0 + 1e-6);
}

#[test]
fn battery_discharges_for_the_peak_tariff_and_says_so() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(60.0));
    s.battery.soc = Reading::fresh(Percent(80.0));
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(19, 0)); // evening peak, reserve window over
    assert_eq!(plan.battery, Watts::from_kw(60.0));
    assert!(plan
        .reasons
        .iter()
        .any(|r| r.to_string() == "battery discharging 60 kW: tariff"));
}

#[test]
fn battery_keeps_the_evening_reserve_in_the_midday_peak() {
    let p = Policy::default(); // 50 % from 07:00 before 18:00
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(60.0));
    s.battery.soc = Reading::fresh(Percent(45.0));
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert_eq!(plan.battery, Watts::ZERO);
    assert!(plan.has_reason("battery_evening_reserve"));
    // Same SoC in the evening peak: the reserve is there to be used now.
    let plan = decide(&s, &p, &mut st, local(19, 0));
    assert_eq!(plan.battery, Watts::from_kw(60.0));
}

#[test]
fn battery_does_not_discharge_in_the_flat_period_below_the_demand_target() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(60.0));
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(16, 0));
    assert_eq!(plan.battery, Watts::ZERO);
}

#[test]
fn in_the_flat_period_the_battery_covers_the_building_when_the_price_pays_for_it() {
    // Flat 0.70 CNY/kWh against 0.39 / 0.9 stored value + 0.14 wear: worth discharging, down
    // to the evening reserve; with wear priced higher it is not.
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.battery.soc = Reading::fresh(Percent(80.0));
    s.building = Reading::fresh(Watts::from_kw(30.0));
    let plan = decide(&s, &p, &mut DispatchState::new(), local(16, 0));
    assert!(
        (plan.battery.0 - 30_000.0).abs() < 1.0,
        "{:?}",
        plan.battery
    );
    assert!(plan.has_reason("battery_peak_tariff"));
    s.battery.soc = Reading::fresh(Percent(45.0)); // below the reserve until 18:00
    let plan = decide(&s, &p, &mut DispatchState::new(), local(16, 0));
    assert_eq!(plan.battery, Watts::ZERO);
    s.battery.soc = Reading::fresh(Percent(80.0));
    let plan = decide(
        &s,
        &shaving_only(p),
        &mut DispatchState::new(),
        local(16, 0),
    );
    assert_eq!(plan.battery, Watts::ZERO);
}

#[test]
fn battery_shaves_peaks_above_the_demand_target() {
    let p = shaving_only(exact()); // target 100 kW
    let mut s = Snapshot::reference_idle(0);
    s.battery.soc = Reading::fresh(Percent(80.0)); // above the evening reserve
    s.building = Reading::fresh(Watts::from_kw(130.0));
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(16, 0));
    assert!(
        (plan.battery.0 - 30_000.0).abs() < 1.0,
        "{:?}",
        plan.battery
    );
    assert!(plan.has_reason("battery_peak_shaving"));
}

#[test]
fn battery_charges_from_pv_surplus_within_its_limits() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    s.pv.power = Reading::fresh(Watts::from_kw(120.0));
    s.battery.max_charge = Watts::from_kw(70.0);
    let s = metered(s);
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert_eq!(plan.battery, Watts::from_kw(-70.0));
    assert!((plan.balance.grid.0 + 30_000.0).abs() < 1.0);
    assert_eq!(plan.pv_limit, Percent(100.0));
}

#[test]
fn zero_export_limits_pv_to_what_the_site_absorbs() {
    let mut p = Policy::default();
    p.grid.export_limit = Watts::ZERO;
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    s.pv.power = Reading::fresh(Watts::from_kw(120.0));
    s.battery.soc = Reading::fresh(Percent(90.0)); // full: cannot absorb
    let s = metered(s);
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert_eq!(plan.battery, Watts::ZERO);
    let expected = 20_000.0 / 135_000.0 * 100.0;
    assert!(
        (plan.pv_limit.0 - expected).abs() < 1e-9,
        "{:?}",
        plan.pv_limit
    );
    assert!(plan.balance.grid.0.abs() < 1e-6);
    assert!(plan.has_reason("pv_curtailed"));
}

#[test]
fn a_car_that_asks_for_nothing_neither_lets_pv_export_nor_makes_the_battery_shave_a_phantom_peak() {
    let mut p = Policy::default();
    p.grid.export_limit = Watts::ZERO;
    let mut s = Snapshot::reference_idle(2);
    // Both cars full: plugged in, offered current, asking for none (B2).
    for c in &mut s.chargers {
        c.state = ChargerState::B2;
    }
    s.building = Reading::fresh(Watts::from_kw(20.0));
    s.pv.power = Reading::fresh(Watts::from_kw(120.0));
    s.battery.soc = Reading::fresh(Percent(90.0)); // full: cannot absorb
    let s = metered(s);
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(12, 0));
    // The offers stand (a car may start asking any second), but PV is held to what the
    // building takes: counting the offers as load would export 2 x 22 kW.
    assert!(amps(&plan).iter().all(|&a| a >= 6.0), "{plan:?}");
    let expected = 20_000.0 / 135_000.0 * 100.0;
    assert!(
        (plan.pv_limit.0 - expected).abs() < 1e-9,
        "{:?}",
        plan.pv_limit
    );

    // Evening, no PV, 10 kW of building against a 5 kW demand target: the battery shaves the
    // building's import, never the chargers' offers on top of it (that would export).
    let mut p = exact();
    p.grid.demand_target = Watts::from_kw(5.0);
    let mut s = Snapshot::reference_idle(2);
    for c in &mut s.chargers {
        c.state = ChargerState::B2;
    }
    s.building = Reading::fresh(Watts::from_kw(10.0));
    let mut st = DispatchState::new();
    for k in 0..5 {
        meter_grid(&mut s, Watts::ZERO);
        let plan = decide(&s, &p, &mut st, secs(local(19, 0), k));
        assert!(plan.battery.0 > 1_000.0, "{:?}", plan.battery);
        assert!(plan.battery.0 <= 10_000.0 + 1.0, "{:?}", plan.battery);
        s.battery.power = Reading::fresh(plan.battery);
    }
}

#[test]
fn a_one_phase_car_on_a_three_phase_charger_is_counted_on_one_phase_once_seen_drawing() {
    let p = exact();
    let mut s = no_battery(1);
    let mut st = DispatchState::new();
    let start = local(12, 0);
    let mut plan = decide(&metered(s.clone()), &p, &mut st, start);
    for k in 1..40 {
        let a = plan.chargers[0].amps;
        s.chargers[0].current = [a, Amps::ZERO, Amps::ZERO];
        s.chargers[0].power = charger_power_nominal(a, 1);
        s = metered(s);
        plan = decide(&s, &p, &mut st, secs(start, k));
    }
    let a = plan.chargers[0].amps;
    assert!(a.0 >= 31.0, "{a:?}");
    assert!(
        (plan.balance.chargers.0 - charger_power_nominal(a, 1).0).abs() < 1e-6,
        "{:?}",
        plan.balance
    );
    // A new session starts from the charger's own phases again.
    s.chargers[0].plugged = false;
    s.chargers[0].state = ChargerState::A;
    s.chargers[0].current = [Amps::ZERO; 3];
    s.chargers[0].power = Watts::ZERO;
    decide(&metered(s.clone()), &p, &mut st, secs(start, 41));
    s.chargers[0].plugged = true;
    s.chargers[0].state = ChargerState::C2;
    let plan = decide(&metered(s), &p, &mut st, secs(start, 42));
    let a = plan.chargers[0].amps;
    assert!(
        (plan.balance.chargers.0 - charger_power_nominal(a, 3).0).abs() < 1e-6,
        "{:?}",
        plan.balance
    );
}

#[test]
fn valley_grid_charging_charges_only_up_to_the_months_peak_so_far() {
    let mut p = Policy::default();
    p.battery.grid_charging_in_valley = true;
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(15.0));
    // No peak yet this month: charging would set one, so the battery waits.
    let plan = decide(&s, &p, &mut DispatchState::new(), local(3, 0));
    assert_eq!(plan.battery, Watts::ZERO);
    // A whole window at 60 kW without the battery sets this month's peak.
    let mut st = DispatchState::new();
    s.battery.online = false;
    s.building = Reading::fresh(Watts::from_kw(60.0));
    run(&mut s, &p, &mut st, local(2, 45), 901);
    assert!((st.demand().month_peak().0 - 60_000.0).abs() < 200.0);
    // Back at 15 kW: the battery charges with the 45 kW of room under that peak, not up to
    // the 40 kW demand target's or the import limit's room.
    s.battery.online = true;
    s.building = Reading::fresh(Watts::from_kw(15.0));
    let plan = run(&mut s, &p, &mut st, secs(local(3, 0), 1), 60);
    assert!(
        (plan.battery.0 + 45_000.0).abs() < 1_000.0,
        "{:?}",
        plan.battery
    );
    assert!(plan.has_reason("battery_charging_valley"));
    assert!(st.demand().window_average().0 <= 60_000.0);
}

#[test]
fn battery_holds_the_import_limit_when_the_building_alone_exceeds_it() {
    let p = exact();
    let mut s = Snapshot::reference_idle(2);
    s.building = Reading::fresh(Watts::from_kw(170.0));
    // Just enough discharge to hold the limit: nothing is left for the cars.
    s.battery.max_discharge = Watts::from_kw(20.0);
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(8, 0));
    assert_eq!(amps(&plan), vec![0.0, 0.0]);
    assert!(plan.balance.grid.0 <= 150_000.0 + 1e-6);
    assert!(!plan.has_reason("import_limit_unreachable"));
    // Without a battery the controller says it cannot make it.
    s.battery.online = false;
    let plan = decide(&s, &p, &mut st, local(8, 0));
    assert!(plan.has_reason("import_limit_unreachable"));
}

#[test]
fn stale_grid_puts_every_car_at_its_safe_current_and_holds_the_battery() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(3);
    s.building = Reading::fresh(Watts::from_kw(130.0));
    let mut st = DispatchState::new();
    let t0 = local(16, 0);
    let before = run(&mut s, &p, &mut st, t0, 30);
    s.grid.power = Reading::stale(Watts::from_kw(120.0));
    s.chargers[2].safe_current = Amps(0.0);
    s.building = Reading::fresh(Watts::from_kw(160.0));
    let plan = decide(&s, &p, &mut st, secs(t0, 30));
    assert_eq!(amps(&plan), vec![6.0, 6.0, 0.0]);
    assert!(plan.battery.0 <= before.battery.0 + 1e-9);
    assert!(plan.has_reason("grid_stale"));
    assert!(plan
        .reasons
        .iter()
        .any(|r| r.to_string() == "grid meter stale: chargers at safe current"));
}

#[test]
fn an_offline_charger_counts_at_its_rating_against_the_limit() {
    let mut s = no_battery(2);
    s.building = Reading::fresh(Watts::from_kw(100.0));
    s.chargers[1].online = false;
    let p = exact();
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    let room: f64 = 50_000.0 - 32.0 * 690.0;
    assert!((plan.chargers[0].amps.0 - (room / 690.0).min(32.0)).abs() < 1e-6);
    assert_eq!(plan.chargers[1].amps, Amps(0.0));
    assert!(plan.has_reason("charger_offline_counted"));
    assert_eq!(plan.balance.uncontrolled_chargers, Watts(32.0 * 690.0));
}

#[test]
fn chargers_not_in_a_charging_state_get_nothing() {
    let mut s = no_battery(5);
    s.chargers[0].state = ChargerState::A;
    s.chargers[1].state = ChargerState::E;
    s.chargers[2].state = ChargerState::F;
    s.chargers[3].state = ChargerState::Unknown;
    s.chargers[4].state = ChargerState::B2;
    let p = Policy::default();
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(8, 0));
    assert_eq!(amps(&plan), vec![0.0, 0.0, 0.0, 0.0, 6.0]);
}

#[test]
fn battery_in_alarm_or_offline_or_without_soc_stays_idle() {
    let p = Policy::default();
    let mut st = DispatchState::new();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(170.0));
    s.battery.alarm = true;
    let plan = decide(&s, &p, &mut st, local(19, 0));
    assert_eq!(plan.battery, Watts::ZERO);
    assert!(plan
        .reasons
        .iter()
        .any(|r| r.to_string() == "battery idle: BMS alarm"));
    s.battery.alarm = false;
    s.battery.soc = Reading::stale(Percent(60.0));
    assert_eq!(decide(&s, &p, &mut st, local(19, 0)).battery, Watts::ZERO);
    s.battery.soc = Reading::fresh(Percent(60.0));
    s.battery.online = false;
    assert_eq!(decide(&s, &p, &mut st, local(19, 0)).battery, Watts::ZERO);
}

#[test]
fn battery_respects_the_soc_window_and_the_c_rate_cap() {
    let p = Policy::default();
    let mut st = DispatchState::new();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(200.0));
    s.battery.usable_capacity = WattHours::from_kwh(100.0); // 0.5 C = 50 kW
    let plan = decide(&s, &p, &mut st, local(19, 0));
    assert_eq!(plan.battery, Watts::from_kw(50.0));
    s.battery.soc = Reading::fresh(Percent(10.0)); // at soc_min
    let plan = decide(&s, &p, &mut st, local(19, 0));
    assert_eq!(plan.battery, Watts::ZERO);
    s.building = Reading::fresh(Watts::ZERO);
    s.pv.power = Reading::fresh(Watts::from_kw(100.0));
    s.battery.soc = Reading::fresh(Percent(90.0)); // at soc_max
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert_eq!(plan.battery, Watts::ZERO);
}

#[test]
fn phase_fuse_limits_the_chargers_per_phase() {
    let mut p = Policy::default();
    p.grid.phase_fuse = Some(Amps(100.0));
    let mut s = no_battery(4);
    // 60 A per phase of building load.
    s.building = Reading::fresh(Watts(3.0 * 60.0 * 230.0));
    s.grid.phase_power = Reading::fresh([Watts(60.0 * 230.0); 3]);
    let mut st = DispatchState::new();
    let mut plan = decide(&s, &p, &mut st, local(8, 0));
    for k in 1..30 {
        follow(&mut s, &plan);
        let per_phase: f64 = s.chargers.iter().map(|c| c.current[0].0).sum();
        s.grid.phase_power = Reading::fresh([Watts((60.0 + per_phase) * 230.0); 3]);
        plan = decide(&s, &p, &mut st, secs(local(8, 0), k));
    }
    let total: f64 = amps(&plan).iter().sum();
    assert!((total - 40.0).abs() < 1e-6, "{:?}", amps(&plan));
    assert!(plan.has_reason("charger_phase_fuse_limited"));
}

#[test]
fn decide_into_reuses_the_plan_buffers() {
    let p = Policy::default();
    let s = Snapshot::reference_idle(16);
    let mut st = DispatchState::new();
    let mut plan = Plan::default();
    decide_into(&s, &p, &mut st, local(8, 0), &mut plan);
    let caps = (plan.chargers.capacity(), plan.reasons.capacity());
    let ptr = plan.chargers.as_ptr();
    decide_into(&s, &p, &mut st, secs(local(8, 0), 1), &mut plan);
    assert_eq!(plan.chargers.len(), 16);
    assert_eq!(plan.chargers.as_ptr(), ptr);
    assert!(plan.chargers.capacity() == caps.0 && plan.reasons.capacity() >= caps.1);
}

#[test]
fn curtailed_pv_is_released_when_loads_can_take_it() {
    let mut p = Policy::default();
    p.grid.export_limit = Watts::ZERO;
    let mut s = no_battery(1);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    s.pv.limit = Percent(20.0);
    s.pv.power = Reading::fresh(Watts::from_kw(27.0)); // sitting at its 20 % limit
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(12, 0), 20);
    assert_eq!(plan.chargers[0].amps, Amps(32.0));
    assert_eq!(plan.pv_limit, Percent(100.0));
}

#[test]
fn serve_first_vehicles_gives_solar_cars_pv_before_the_building() {
    let mut p = with_mode(Policy::default(), ChargeMode::Solar);
    p.serve_first = ServeFirst::Vehicles;
    let mut s = no_battery(1);
    s.building = Reading::fresh(Watts::from_kw(40.0));
    s.pv.power = Reading::fresh(Watts::from_kw(30.0));
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(12, 0), 20);
    assert_eq!(plan.chargers[0].amps, Amps(32.0));
    // The dealer first: no surplus after the building, the car waits.
    p.serve_first = ServeFirst::Dealer;
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(12, 0), 20);
    assert_eq!(plan.chargers[0].amps, Amps(0.0));
}

#[test]
fn peak_shaving_target_rises_to_the_months_peak() {
    let p = shaving_only(exact()); // target 100 kW
    let mut s = Snapshot::reference_idle(0);
    s.battery.soc = Reading::fresh(Percent(80.0)); // above the evening reserve
    s.battery.online = false;
    s.building = Reading::fresh(Watts::from_kw(130.0));
    let mut st = DispatchState::new();
    let t0 = local_on(6, 10, 16, 0);
    // A whole window at 130 kW without a battery sets this month's peak.
    run(&mut s, &p, &mut st, t0, 901);
    assert!((st.demand().month_peak().0 - 130_000.0).abs() < 200.0);
    // With the battery back, 120 kW is below the month's peak: no need to shave.
    s.battery.online = true;
    s.building = Reading::fresh(Watts::from_kw(120.0));
    let plan = run(&mut s, &p, &mut st, secs(t0, 901), 5);
    assert_eq!(plan.battery, Watts::ZERO);
    // A new month starts from the configured target again.
    let july = local_on(7, 1, 16, 0);
    let plan = run(&mut s, &p, &mut st, july, 5);
    assert!(plan.battery.0 > 15_000.0, "{:?}", plan.battery);
}

#[test]
fn stale_grid_never_charges_the_battery_from_the_grid() {
    let mut p = Policy::default();
    p.battery.grid_charging_in_valley = true;
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(15.0));
    s.grid.power = Reading::stale(Watts::from_kw(15.0));
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(3, 0));
    assert_eq!(plan.battery, Watts::ZERO);
}

#[test]
fn the_plan_keeps_the_import_margin_below_the_limit() {
    let mut s = no_battery(8);
    s.building = Reading::fresh(Watts::from_kw(80.0));
    let p = Policy::default(); // 150 kW limit, 25 kW margin
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    assert!(
        (plan.balance.grid.0 - 125_000.0).abs() < 1.0,
        "{:?}",
        plan.balance
    );
    let each = 45_000.0 / 8.0 / 690.0;
    for a in amps(&plan) {
        assert!((a - each).abs() < 1e-6, "{a} vs {each}");
    }
    // A load step as large as the margin, seen one cycle late, stays within the limit.
    let stepped = plan.balance.grid + Watts::from_kw(25.0);
    assert!(stepped.0 <= p.grid.import_limit.0 + 1e-6);
}

#[test]
fn the_battery_holds_import_at_the_margin_not_at_the_limit() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(160.0));
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(8, 0));
    assert!(
        (plan.balance.grid.0 - 125_000.0).abs() < 1.0,
        "{:?}",
        plan.balance
    );
    assert!(plan.has_reason("battery_import_limit"));
    assert!(!plan.has_reason("import_limit_unreachable"));
}

#[test]
fn serve_first_dealer_lets_the_battery_carry_the_building_so_cars_get_the_grid() {
    let mut p = Policy::default();
    p.serve_first = ServeFirst::Dealer;
    let mut s = Snapshot::reference_idle(8);
    s.building = Reading::fresh(Watts::from_kw(60.0));
    s.battery.soc = Reading::fresh(Percent(40.0)); // below the evening reserve
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(14, 0), 30);
    // The battery takes the building (60 kW), the grid's 125 kW go to the cars.
    let each = 125_000.0 / 8.0 / 690.0;
    for a in amps(&plan) {
        assert!((a - each).abs() < 1e-3, "{a} vs {each}");
    }
    assert!(
        (plan.battery.0 - 60_000.0).abs() < 1.0,
        "{:?}",
        plan.battery
    );
    assert!(plan.balance.grid.0 <= 125_000.0 + 1e-3);
    // The battery never covers more than the building: the cars get no more than the grid.
    assert!(plan.balance.chargers.0 <= 125_000.0 + 1e-3);
}

#[test]
fn serve_first_dealer_does_not_discharge_for_cars_the_grid_can_serve() {
    let mut p = Policy::default();
    p.serve_first = ServeFirst::Dealer;
    let mut s = Snapshot::reference_idle(2);
    s.building = Reading::fresh(Watts::from_kw(30.0));
    s.battery.soc = Reading::fresh(Percent(40.0));
    let mut st = DispatchState::new();
    let plan = run(&mut s, &p, &mut st, local(16, 0), 30);
    assert_eq!(amps(&plan), vec![32.0, 32.0]);
    assert_eq!(plan.battery, Watts::ZERO);
}

#[test]
fn peak_shaving_keeps_the_evening_reserve() {
    let p = shaving_only(Policy::default()); // 40 kW target, 50 % reserve 07:00-18:00
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(70.0));
    s.battery.soc = Reading::fresh(Percent(45.0));
    let mut st = DispatchState::new();
    let plan = decide(&s, &p, &mut st, local(16, 0));
    assert_eq!(plan.battery, Watts::ZERO);
    // Above the reserve it shaves down to the target.
    s.battery.soc = Reading::fresh(Percent(70.0));
    let plan = decide(&s, &p, &mut DispatchState::new(), local(16, 0));
    assert!(
        (plan.battery.0 - 30_000.0).abs() < 1.0,
        "{:?}",
        plan.battery
    );
    assert!(plan.has_reason("battery_peak_shaving"));
    // Outside the reserve window it may use the energy down to soc_min.
    s.battery.soc = Reading::fresh(Percent(45.0));
    let plan = decide(&s, &p, &mut DispatchState::new(), local(6, 0));
    assert!(
        (plan.battery.0 - 30_000.0).abs() < 1.0,
        "{:?}",
        plan.battery
    );
}

#[test]
fn default_demand_target_is_below_the_reference_buildings_business_hours_peak() {
    let p = Policy::default();
    assert_eq!(p.grid.demand_target, Watts::from_kw(40.0));
    assert_eq!(p.grid.import_margin, Watts::from_kw(25.0));
    assert_eq!(p.grid.import_budget(), Watts::from_kw(125.0));
}

/// One cycle of a plant whose true building load is `building`, whatever its meter says: the
/// chargers draw what the plan asked (or `stuck` amps for the charger at that index), the battery
/// delivers its setpoint, and the grid meter reads the true import.
fn true_plant(s: &mut Snapshot, plan: &Plan, building: Watts, stuck: Option<(usize, Amps)>) {
    for (i, (c, sp)) in s.chargers.iter_mut().zip(&plan.chargers).enumerate() {
        let a = match stuck {
            Some((j, a)) if j == i => a,
            _ => sp.amps,
        };
        c.current = [a; 3];
        c.power = charger_power_nominal(a, c.phases);
    }
    s.battery.power = Reading::fresh(plan.battery);
    let chargers = s.chargers.iter().fold(Watts::ZERO, |sum, c| sum + c.power);
    let pv = s.pv.power.value.min(plan.balance.pv);
    s.grid.power = Reading::fresh(building + chargers - pv - plan.battery);
}

#[test]
fn a_building_meter_reading_zero_cannot_hide_the_building_from_the_import_limit() {
    let p = exact(); // 150 kW limit, no margin
    let mut s = Snapshot::reference_idle(4);
    s.battery.soc = Reading::fresh(Percent(10.0)); // at soc_min: no help from the battery
    s.building = Reading::fresh(Watts::ZERO); // the meter is wrong
    let building = Watts::from_kw(120.0); // the truth
    let mut st = DispatchState::new();
    let t0 = local(8, 0);
    s.grid.power = Reading::fresh(building);
    let mut worst = Watts::ZERO;
    for k in 0..30 {
        let plan = decide(&s, &p, &mut st, secs(t0, k));
        true_plant(&mut s, &plan, building, None);
        if k >= 1 {
            worst = worst.max(s.grid.power.value);
            assert!(plan.has_reason("grid_above_expected"), "{:?}", plan.reasons);
        }
    }
    assert!(worst.0 <= 150_000.0 + 1.0, "true import reached {worst:?}");
    // The cars share the 30 kW the building leaves.
    let cars: f64 = s.chargers.iter().map(|c| c.power.0).sum();
    assert!((cars - 30_000.0).abs() < 100.0, "cars draw {cars} W");
}

#[test]
fn a_charger_that_ignores_its_setpoint_is_paid_for_by_the_other_cars() {
    let p = exact();
    let mut s = Snapshot::reference_idle(3);
    s.battery.online = false;
    let building = Watts::from_kw(100.0);
    s.building = Reading::fresh(building);
    let mut st = DispatchState::new();
    let t0 = local(8, 0);
    s.grid.power = Reading::fresh(building);
    let stuck = Some((0, Amps(32.0))); // charger-1 draws 32 A whatever it is told
    let mut over_s = 0;
    for k in 0..60 {
        let plan = decide(&s, &p, &mut st, secs(t0, k));
        true_plant(&mut s, &plan, building, stuck);
        over_s += i32::from(s.grid.power.value.0 > 150_000.0 + 1.0);
    }
    // The first cycles ramp up on the open-loop plan; from then on the grid meter governs.
    assert!(over_s <= 2, "over the limit for {over_s} s");
    assert!(
        s.grid.power.value.0 <= 150_000.0 + 1.0,
        "{:?}",
        s.grid.power
    );
}

fn budget(until: DateTime<Utc>, soc_target: f64, chargers: Vec<(ChargerId, f64)>) -> PlanBudget {
    PlanBudget {
        until,
        import_ceiling: Watts::from_kw(60.0),
        planned_import: None,
        planned_export: None,
        battery_soc_target_pct: Some(soc_target),
        battery_efficiency: 1.0,
        chargers: chargers
            .into_iter()
            .map(|(id, step_wh)| {
                let car = CarBudget {
                    step_wh,
                    wish_wh: step_wh,
                    departs: until + chrono::Duration::hours(8),
                    max_w: 22_080.0,
                };
                (id, car)
            })
            .collect(),
    }
}

/// A quarter ending 8:15 whose budget gives one car nothing more this step: only its wish
/// (Wh), departure and power limit (W) remain.
fn one_deferred_car(id: ChargerId, wish_wh: f64, departs: DateTime<Utc>, max_w: f64) -> PlanBudget {
    PlanBudget {
        chargers: vec![(
            id,
            CarBudget {
                step_wh: 0.0,
                wish_wh,
                departs,
                max_w,
            },
        )],
        ..budget(local(8, 15), 50.0, Vec::new())
    }
}

#[test]
fn without_a_plan_budget_or_after_it_expires_decide_runs_the_rule_policy() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(2);
    s.building = Reading::fresh(Watts::from_kw(60.0));
    let t = local(19, 0);
    let rule = decide(&s, &p, &mut DispatchState::new(), t);
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(budget(t, 20.0, Vec::new())));
    let expired = decide(&s, &p, &mut st, t);
    assert_eq!(expired, rule);
}

#[test]
fn a_plan_budget_moves_the_battery_to_its_soc_target_by_the_end_of_the_step() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(30.0));
    let usable_wh = s.battery.usable_capacity.0;
    let mut st = DispatchState::new();
    // 50 % -> 45 % in the 15 minutes left: 5 % of the usable energy over a quarter hour.
    st.set_plan_budget(Some(budget(local(19, 15), 45.0, Vec::new())));
    let plan = decide(&s, &p, &mut st, local(19, 0));
    let expected = 0.05 * usable_wh / 0.25;
    assert!(
        (plan.battery.0 - expected).abs() < 1.0,
        "{:?}",
        plan.battery
    );
    // The plant follows (the grid meter reads the discharge), then a target above the SoC
    // charges, also in the evening peak where the rule would discharge.
    follow(&mut s, &plan);
    st.set_plan_budget(Some(budget(local(19, 15), 52.0, Vec::new())));
    let plan = decide(&s, &p, &mut st, local(19, 0));
    assert!(plan.battery.0 < -1000.0, "{:?}", plan.battery);
}

#[test]
fn import_above_the_plans_is_served_from_the_battery_while_discharging_pays() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(30.0));
    // The plan holds the battery at 50 % and expects 20 kW of import; the building draws 30.
    let expecting_20_kw = |until| PlanBudget {
        planned_import: Some(Watts::from_kw(20.0)),
        ..budget(until, 50.0, Vec::new())
    };
    // Evening peak (1.10 CNY/kWh): the battery serves the 10 kW the plan did not expect.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(expecting_20_kw(local(19, 15))));
    let plan = decide(&s, &p, &mut st, local(19, 0));
    assert!(
        (plan.battery.0 - 10_000.0).abs() < 100.0,
        "{:?}",
        plan.battery
    );
    assert!(plan.has_reason("battery_above_plan"));
    // Valley (0.30): the grid's energy is the cheaper; the battery keeps to its target.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(expecting_20_kw(local(3, 15))));
    let plan = decide(&s, &p, &mut st, local(3, 0));
    assert!(plan.battery.0.abs() < 100.0, "{:?}", plan.battery);
}

#[test]
fn a_surplus_the_plan_does_not_export_is_stored_in_the_battery_not_sold() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(30.0));
    s.pv.power = Reading::fresh(Watts::from_kw(50.0));
    s.grid.power = Reading::fresh(Watts::from_kw(-20.0));
    // The plan holds the battery at 50 % (where it is) and expects 5 kW of import and no
    // export; PV runs 20 kW above the building.
    let expecting = |import_kw, export_kw| PlanBudget {
        planned_import: Some(Watts::from_kw(import_kw)),
        planned_export: Some(Watts::from_kw(export_kw)),
        ..budget(local(12, 15), 50.0, Vec::new())
    };
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(expecting(5.0, 0.0)));
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert!(
        (plan.battery.0 + 20_000.0).abs() < 100.0,
        "{:?}",
        plan.battery
    );
    assert!(plan.balance.grid.0.abs() < 100.0, "{:?}", plan.balance);
    assert!(plan.has_reason("battery_below_plan"));
    // A plan that exports on purpose (20 kW planned out) keeps the battery at its target.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(expecting(0.0, 20.0)));
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert!(plan.battery.0.abs() < 100.0, "{:?}", plan.battery);
    assert!(
        (plan.balance.grid.0 + 20_000.0).abs() < 100.0,
        "{:?}",
        plan.balance
    );
}

#[test]
fn a_battery_discharging_to_its_target_keeps_what_a_lighter_load_leaves_for_later() {
    let p = Policy::default();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(80.0));
    s.grid.power = Reading::fresh(Watts::from_kw(80.0));
    // 50 % -> 47.5 % of 360 kWh by 12:15: 36 kW. The plan counted on 60 kW of import (its cars
    // drawing more than they now do), so the load leaves the battery only 20 kW to give.
    let expecting = |import_kw| PlanBudget {
        import_ceiling: Watts::from_kw(100.0),
        planned_import: Some(Watts::from_kw(import_kw)),
        planned_export: Some(Watts::ZERO),
        ..budget(local(12, 15), 47.5, Vec::new())
    };
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(expecting(60.0)));
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert!(
        (plan.battery.0 - 20_000.0).abs() < 100.0,
        "{:?}",
        plan.battery
    );
    assert!(
        (plan.balance.grid.0 - 60_000.0).abs() < 100.0,
        "{:?}",
        plan.balance
    );
    assert!(plan.has_reason("battery_kept_for_plan"));
    // A step that plans to carry the site from the battery (no import) follows its target.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(expecting(0.0)));
    let plan = decide(&s, &p, &mut st, local(12, 0));
    assert!(
        (plan.battery.0 - 36_000.0).abs() < 100.0,
        "{:?}",
        plan.battery
    );
    assert!(!plan.has_reason("battery_kept_for_plan"));
}

#[test]
fn a_plan_budget_never_lifts_the_import_above_the_limit() {
    let p = exact();
    let mut s = Snapshot::reference_idle(0);
    s.building = Reading::fresh(Watts::from_kw(140.0));
    let mut st = DispatchState::new();
    // The plan wants the battery charged at full power: only 10 kW fit under the limit.
    st.set_plan_budget(Some(budget(local(3, 15), 90.0, Vec::new())));
    let plan = decide(&s, &p, &mut st, local(3, 0));
    assert!(
        plan.balance.grid.0 <= 150_000.0 + 1e-6,
        "{:?}",
        plan.balance
    );
    assert!(!plan.has_reason("import_limit_unreachable"));
}

#[test]
fn a_budgeted_charger_gets_the_power_that_delivers_its_step_energy_and_then_stops() {
    let p = Policy::default();
    let mut s = no_battery(2);
    s.building = Reading::fresh(Watts::from_kw(20.0));
    let id = s.chargers[0].id.clone();
    let mut st = DispatchState::new();
    // 2.76 kWh in the quarter hour: 11.04 kW, 16 A on three phases at the start; 29 s later
    // the same energy (nothing was booked against it here) over 871 s.
    st.set_plan_budget(Some(budget(
        local(8, 15),
        50.0,
        vec![(id.clone(), 2_760.0)],
    )));
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    let expected = 2_760.0 / (871.0 / 3600.0) / 690.0;
    assert!(
        (plan.chargers[0].amps.0 - expected).abs() < 1e-6,
        "{:?}",
        amps(&plan)
    );
    // The unbudgeted charger follows the rule policy (fast: its rating).
    assert!(plan.chargers[1].amps.0 > 30.0, "{:?}", amps(&plan));
    st.set_plan_budget(Some(budget(local(8, 15), 50.0, vec![(id, 0.0)])));
    let plan = decide(&s, &p, &mut st, secs(local(8, 0), 31));
    assert_eq!(plan.chargers[0].amps.0, 0.0);
}

#[test]
fn a_budgeted_car_the_plan_defers_waits_unless_its_wish_would_no_longer_fit() {
    let p = Policy::default();
    let mut s = no_battery(1);
    let id = s.chargers[0].id.clone();
    // The plan gives it nothing this step (it ends 8:15); the car wants 11.04 kWh and takes at
    // most 11.04 kW (16 A on three phases).
    let budget_for = |departs| one_deferred_car(id.clone(), 11_040.0, departs, 11_040.0);
    // Leaving at 10:30, 2.25 h after the step, of which the guard counts on all but the last
    // half hour at 90 % of 11.04 kW (17.4 kWh), cover the wish: it waits.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(budget_for(local(10, 30))));
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    assert_eq!(plan.chargers[0].amps.0, 0.0, "{:?}", amps(&plan));
    // Leaving at 9:30, the 1.25 h after the step cover 0.9 x 11.04 kW x 0.75 h = 7.452 kWh:
    // the 3.588 kWh left must come now, over the 871 s left of the step.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(budget_for(local(9, 30))));
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    let expected = 3_588.0 / (871.0 / 3600.0) / 690.0;
    assert!(
        (plan.chargers[0].amps.0 - expected).abs() < 1e-6,
        "{:?}",
        amps(&plan)
    );
}

#[test]
fn budgeted_cars_are_held_back_toward_their_musts_when_the_plans_ceiling_binds() {
    let p = Policy::default();
    let mut s = no_battery(2);
    s.building = Reading::fresh(Watts::from_kw(45.0));
    let (a, b) = (s.chargers[0].id.clone(), s.chargers[1].id.clone());
    // The plan lets both cars take their full 22.08 kW (5.52 kWh this quarter). Both leave at
    // 9:30, 1.25 h after the step, in which the guard counts on 90 % of their power for all
    // but the last half hour, 14.904 kWh: A wants 12 kWh (nothing must come now), B 17.104 kWh
    // (2.2 kWh must come in this step: 9.1 kW over its 871 s).
    let car = |wish_wh| CarBudget {
        step_wh: 5_520.0,
        wish_wh,
        departs: local(9, 30),
        max_w: 22_080.0,
    };
    let with_ceiling = |kw| PlanBudget {
        import_ceiling: Watts::from_kw(kw),
        chargers: vec![(a.clone(), car(12_000.0)), (b.clone(), car(17_104.0))],
        ..budget(local(8, 15), 50.0, Vec::new())
    };
    let amps_for = |wh: f64| wh / (871.0 / 3600.0) / 690.0;
    // A ceiling of 100 kW leaves the cars 55 kW: both take their full power.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(with_ceiling(100.0)));
    let plan = run(&mut s.clone(), &p, &mut st, local(8, 0), 30);
    assert!(amps(&plan).iter().all(|&x| x > 31.9), "{:?}", amps(&plan));
    // A ceiling of 60 kW leaves them 15 kW: both give up the same share of what they have
    // beyond their musts (A all of its power, B what exceeds its 9.1 kW): A's 5.4 A are under
    // a charger's 6 A minimum and it pauses, B gets 16.4 A, and the import stays under the
    // ceiling.
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(with_ceiling(60.0)));
    let mut at_60 = s.clone();
    let plan = run(&mut at_60, &p, &mut st, local(8, 0), 30);
    let got = amps(&plan);
    assert_eq!(got[0], 0.0, "{got:?}");
    assert!(got[1] > amps_for(2_200.0) + 2.0 && got[1] < 18.0, "{got:?}");
    let grid = at_60.grid.power.value.0;
    assert!(grid <= 60_000.0 + 1.0, "{grid}");
    // A ceiling of 50 kW leaves them 5 kW, less than B must get: A stops, B gets its must and
    // the import goes above the ceiling by what the wish needs (a wish beats the plan).
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(with_ceiling(50.0)));
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    let got = amps(&plan);
    assert_eq!(got[0], 0.0, "{got:?}");
    assert!((got[1] - amps_for(2_200.0)).abs() < 0.05, "{got:?}");
}

#[test]
fn a_car_leaving_before_the_step_ends_gets_its_wish_before_it_leaves() {
    let p = Policy::default();
    let mut s = no_battery(1);
    let id = s.chargers[0].id.clone();
    // The step ends at 8:15 but the car leaves at 8:10 wanting 1.84 kWh, which the plan no
    // longer budgets: it must come in the 571 s the car has left, not spread over the step's
    // 871 s (which would leave a third of it undelivered).
    let mut st = DispatchState::new();
    st.set_plan_budget(Some(one_deferred_car(id, 1_840.0, local(8, 10), 22_080.0)));
    let plan = run(&mut s, &p, &mut st, local(8, 0), 30);
    let expected = 1_840.0 / (571.0 / 3600.0) / 690.0;
    assert!(
        (plan.chargers[0].amps.0 - expected).abs() < 1e-6,
        "{:?}",
        amps(&plan)
    );
}

#[test]
fn the_months_peak_at_a_quarters_start_counts_the_window_that_just_ended() {
    let p = shaving_only(exact());
    let mut s = Snapshot::reference_idle(0);
    s.battery.online = false;
    s.building = Reading::fresh(Watts::from_kw(130.0));
    let mut st = DispatchState::new();
    // 900 cycles from 8:00:00 fill the 8:00 window; the cycle at 8:15:00 has not run yet.
    run(&mut s, &p, &mut st, local(8, 0), 900);
    assert_eq!(st.demand().month_peak(), Watts::ZERO);
    let june = month_key(local(8, 0), p.timezone);
    let at_quarter = st.demand().month_peak_at(local(8, 15), june).0;
    assert!((at_quarter - 130_000.0).abs() < 200.0, "{at_quarter}");
    // Inside the open window nothing has closed yet.
    assert_eq!(
        st.demand().month_peak_at(secs(local(8, 0), 899), june),
        Watts::ZERO
    );
}

#[test]
fn a_new_month_starts_without_the_last_ones_peak_even_before_its_first_cycle() {
    let p = shaving_only(exact());
    let mut s = Snapshot::reference_idle(0);
    s.battery.online = false;
    s.building = Reading::fresh(Watts::from_kw(130.0));
    let mut st = DispatchState::new();
    // The last quarter of June, local time: 130 kW from 23:45 to midnight.
    let last_quarter = local_on(6, 30, 23, 45);
    run(&mut s, &p, &mut st, last_quarter, 900);
    let midnight = secs(last_quarter, 900);
    let (june, july) = (
        month_key(last_quarter, p.timezone),
        month_key(midnight, p.timezone),
    );
    assert_eq!(july, june + 1);
    // A planner looking at midnight, before the cycle's update, plans July from nothing: the
    // window that just ended is June's.
    assert_eq!(st.demand().month_peak_at(midnight, july), Watts::ZERO);
    let in_june = st.demand().month_peak_at(midnight, june).0;
    assert!((in_june - 130_000.0).abs() < 200.0, "{in_june}");
    // And after July's first cycle the tracker agrees.
    run(&mut s, &p, &mut st, midnight, 1);
    assert_eq!(st.demand().month_peak(), Watts::ZERO);
}

//! Plant physics behaviour tests.

// Test and bench code may panic on a broken invariant and time itself with the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use chrono::Duration;
use proptest::prelude::*;
use station_sim::physics::{exogenous_forecast, Plant, PlugError, VehicleKind, VehicleSpec};
use station_sim::scenario::Scenario;
use station_sim::view::{BatteryState, Command, CommandError, Mode3State, PvStatus, StationView};
use std::path::Path;

// The controller's test support holds the one counting allocator; this crate installs it.
#[path = "../../tests/support/alloc.rs"]
mod alloc;
use alloc::{allocations, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Reference station without random cars, starting at `time` local.
fn quiet(time: &str) -> Scenario {
    let mut s = Scenario::reference();
    s.vehicles.arrival_scale = 0.0;
    s.start.time = time.to_string();
    s
}

fn car() -> VehicleSpec {
    VehicleSpec {
        kind: VehicleKind::Manual,
        battery_wh: 60_000.0,
        soc_pct: 20.0,
        target_soc_pct: 80.0,
        onboard_max_a: 32.0,
        phases: 3,
        stay_s: 4.0 * 3600.0,
    }
}

fn check_balance(v: &StationView) {
    let ev: f64 = v.chargers.iter().map(|c| c.power_w).sum();
    let expected = v.building_meter.power_w + ev - v.pv.power_w - v.battery.power_w;
    assert!(
        (v.grid_meter.power_w - expected).abs() < 1e-6,
        "grid {} expected {}",
        v.grid_meter.power_w,
        expected
    );
    let phases: f64 = v.grid_meter.phase_w.iter().sum();
    assert!((phases - v.grid_meter.power_w).abs() < 1e-6);
}

#[test]
fn grid_meter_closes_the_energy_balance_every_step() {
    let s = Scenario::reference();
    let mut p = Plant::new(&s, 7);
    let mut import_wh = 0.0;
    let mut export_wh = 0.0;
    for i in 0..(24 * 360) {
        if i % 30 == 0 {
            let w = if (i / 700) % 2 == 0 {
                -60_000.0
            } else {
                40_000.0
            };
            p.apply(Command::BatterySetpointW(w)).unwrap();
            for c in 0..8 {
                p.apply(Command::ChargerSetpointA {
                    index: c,
                    amps: 10.0 + c as f64 * 3.0,
                })
                .unwrap();
            }
        }
        p.step(10.0);
        let v = p.view();
        check_balance(&v);
        let g = v.grid_meter.power_w;
        if g > 0.0 {
            import_wh += g * 10.0 / 3600.0;
        } else {
            export_wh -= g * 10.0 / 3600.0;
        }
    }
    let v = p.view();
    // dt = 10 s never straddles a minute, so the meter's counters equal the step sums.
    assert!((v.grid_meter.import_wh - import_wh).abs() < 1e-3);
    assert!((v.grid_meter.export_wh - export_wh).abs() < 1e-3);
    let k = p.kpis();
    assert!((k.grid_import_kwh * 1000.0 - v.grid_meter.import_wh).abs() < 1e-3);
    assert!(k.ev_delivered_kwh > 0.0);
    assert!(k.pv_kwh > 500.0, "sunny day PV {}", k.pv_kwh);
}

#[test]
fn stepping_does_not_allocate_even_across_days() {
    let mut s = Scenario::reference();
    s.chargers.count = 16;
    s.vehicles.arrival_scale = 2.0;
    let mut p = Plant::new(&s, 3);
    p.apply(Command::BatterySetpointRevertS(0)).unwrap();
    p.apply(Command::BatterySetpointW(-20_000.0)).unwrap();
    let before = allocations();
    for _ in 0..(3 * 86_400 / 5) {
        p.step(5.0);
    }
    assert_eq!(allocations() - before, 0);
    assert!(p.kpis().ev_delivered_kwh > 0.0);
    // The counter does see allocations.
    let v = p.view();
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn view_into_equals_a_fresh_view_through_plugs_unplugs_and_days() {
    let mut s = Scenario::reference();
    s.vehicles.arrival_scale = 2.0;
    let mut p = Plant::new(&s, 11);
    // Start from a buffer of another roster (16 chargers, ids and cars in the wrong places)
    // so that truncation, id rewrites and vehicle replacement are all exercised.
    let mut big = Scenario::reference();
    big.chargers.count = 16;
    let mut other = Plant::new(&big, 5);
    other.plug_vehicle(3, car()).unwrap();
    other.step(60.0);
    let mut buf = other.view();
    buf.chargers.swap(0, 3);
    buf.chargers[1].id = "charger-02".to_string();
    buf.chargers[2].id = "charger-+3".to_string();
    p.view_into(&mut buf);
    assert_eq!(buf, p.view());

    let mut plugs = 0;
    let mut unplugs = 0;
    let mut was_plugged = vec![false; s.chargers.count];
    for i in 0..(2 * 86_400 / 7) {
        if i % 500 == 0 {
            // Manual cars on free chargers, short stays, on top of the random arrivals.
            let spec = VehicleSpec {
                stay_s: 900.0,
                ..car()
            };
            let _ = p.plug_vehicle(i / 500 % 8, spec);
        }
        if i % 40 == 0 {
            p.apply(Command::BatterySetpointW(if i % 80 == 0 {
                -30_000.0
            } else {
                25_000.0
            }))
            .unwrap();
            for c in 0..8 {
                p.apply(Command::ChargerSetpointA {
                    index: c,
                    amps: ((i / 40 + c) % 5) as f64 * 8.0,
                })
                .unwrap();
            }
        }
        p.step(7.0);
        p.view_into(&mut buf);
        assert_eq!(buf, p.view(), "step {i}");
        for (was, c) in was_plugged.iter_mut().zip(&buf.chargers) {
            let now = c.vehicle.is_some();
            plugs += u32::from(now && !*was);
            unplugs += u32::from(!now && *was);
            *was = now;
        }
    }
    assert!(
        plugs > 20 && unplugs > 20,
        "plugs {plugs} unplugs {unplugs}"
    );
}

#[test]
fn view_into_does_not_allocate_in_the_steady_state() {
    let mut p = Plant::new(&quiet("10:00"), 2);
    for c in [0, 3, 7] {
        p.plug_vehicle(
            c,
            VehicleSpec {
                stay_s: 86_400.0,
                ..car()
            },
        )
        .unwrap();
    }
    p.step(1.0);
    let mut buf = p.view();
    let before = allocations();
    for i in 0..20_000 {
        if i % 10 == 0 {
            p.apply(Command::ChargerSetpointA {
                index: 3,
                amps: (i % 30) as f64,
            })
            .unwrap();
        }
        p.step(1.0);
        p.view_into(&mut buf);
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(buf, p.view());
    assert!(buf.chargers[3].vehicle.as_ref().unwrap().session_wh > 0.0);
}

#[test]
fn battery_soc_stays_in_its_window_when_driven_to_both_ends() {
    let mut s = quiet("00:00");
    s.battery.initial_soc_pct = 60.0;
    let mut p = Plant::new(&s, 1);
    let window_max = s.battery.soc_max_pct - s.battery.imbalance_mv * 0.1;
    for _ in 0..(6 * 360) {
        p.apply(Command::BatterySetpointW(-120_000.0)).unwrap();
        p.step(10.0);
        let b = p.view().battery;
        assert!(b.soc_pct <= window_max + 1e-9, "{}", b.soc_pct);
    }
    let b = p.view().battery;
    assert!(b.soc_pct > window_max - 1.0, "charged to {}", b.soc_pct);
    assert!(
        b.power_w.abs() < 1_000.0,
        "charge stops at the top: {}",
        b.power_w
    );
    for _ in 0..(8 * 360) {
        p.apply(Command::BatterySetpointW(120_000.0)).unwrap();
        p.step(10.0);
        let b = p.view().battery;
        assert!(
            b.soc_pct >= s.battery.soc_reserve_min_pct - 1e-9,
            "{}",
            b.soc_pct
        );
    }
    assert!(p.view().battery.soc_pct < s.battery.soc_reserve_min_pct + 1.0);
    assert_eq!(p.kpis().soc_window_violation_s, 0.0);
}

#[test]
fn battery_reverts_to_zero_after_revert_timeout() {
    let p0 = quiet("02:00");
    let mut p = Plant::new(&p0, 1);
    p.apply(Command::BatterySetpointRevertS(30)).unwrap();
    p.apply(Command::BatterySetpointW(50_000.0)).unwrap();
    for _ in 0..20 {
        p.step(1.0);
    }
    assert!((p.view().battery.power_w - 50_000.0).abs() < 1.0);
    for _ in 0..15 {
        p.step(1.0);
    }
    let b = p.view().battery;
    assert_eq!(b.setpoint_w, 0.0);
    assert!(b.power_w.abs() < 1e-9, "{}", b.power_w);
    assert_eq!(b.state, BatteryState::Standby);
}

#[test]
fn battery_setpoint_outside_pcs_rating_is_refused() {
    let mut p = Plant::new(&quiet("02:00"), 1);
    let err = p.apply(Command::BatterySetpointW(200_000.0)).unwrap_err();
    assert_eq!(
        err,
        CommandError::OutOfRange {
            field: "battery setpoint W",
            value: 200_000.0,
            lo: -120_000.0,
            hi: 120_000.0
        }
    );
    assert_eq!(
        err.to_string(),
        "battery setpoint W 200000 outside -120000..=120000"
    );
    assert!(p.apply(Command::BatterySetpointW(f64::NAN)).is_err());
    let err = p
        .apply(Command::ChargerSetpointA {
            index: 8,
            amps: 10.0,
        })
        .unwrap_err();
    assert_eq!(err, CommandError::NoSuchCharger { index: 8, count: 8 });
    assert_eq!(err.to_string(), "charger index 8 outside 0..8");
    let err = p
        .apply(Command::ChargerPhases {
            index: 0,
            phases: 2,
        })
        .unwrap_err();
    assert_eq!(err, CommandError::Phases { phases: 2 });
}

#[test]
fn bms_alarm_drops_limits_and_power_to_zero() {
    let mut p = Plant::new(&quiet("02:00"), 1);
    p.apply(Command::BatterySetpointW(60_000.0)).unwrap();
    p.step(10.0);
    assert!(p.view().battery.power_w > 50_000.0);
    p.set_bms_alarm(true);
    p.step(1.0);
    let b = p.view().battery;
    assert_eq!(b.power_w, 0.0);
    assert_eq!((b.max_charge_w, b.max_discharge_w), (0.0, 0.0));
    assert_eq!(b.state, BatteryState::Fault);
    assert_ne!(b.alarms, 0);
    p.set_bms_alarm(false);
    p.apply(Command::BatterySetpointW(60_000.0)).unwrap();
    p.step(10.0);
    assert!(p.view().battery.power_w > 50_000.0);
}

#[test]
fn charger_falls_back_to_safe_current_after_validity() {
    let mut p = Plant::new(&quiet("09:00"), 1);
    p.plug_vehicle(0, car()).unwrap();
    p.apply(Command::ChargerSetpointA {
        index: 0,
        amps: 20.0,
    })
    .unwrap();
    for _ in 0..30 {
        p.step(1.0);
    }
    let c = &p.view().chargers[0];
    assert_eq!(c.applied_max_a, 20.0);
    assert_eq!(c.remaining_validity_s, 30);
    assert!((c.power_w - 3.0 * 230.0 * 20.0).abs() < 1e-6);
    for _ in 0..31 {
        p.step(1.0);
    }
    let c = &p.view().chargers[0];
    assert_eq!(c.remaining_validity_s, 0);
    assert_eq!(c.applied_max_a, 6.0);
    assert!((c.power_w - 3.0 * 230.0 * 6.0).abs() < 1e-6);
    // A fresh setpoint restarts the validity.
    p.apply(Command::ChargerSetpointA {
        index: 0,
        amps: 16.0,
    })
    .unwrap();
    p.step(1.0);
    assert_eq!(p.view().chargers[0].applied_max_a, 16.0);
}

#[test]
fn car_under_six_amps_pauses_and_resumes() {
    let mut p = Plant::new(&quiet("09:00"), 1);
    p.plug_vehicle(2, car()).unwrap();
    p.apply(Command::ChargerSetpointA {
        index: 2,
        amps: 5.0,
    })
    .unwrap();
    p.step(1.0);
    let c = &p.view().chargers[2];
    assert_eq!(c.state, Mode3State::C1);
    assert_eq!(c.power_w, 0.0);
    p.apply(Command::ChargerSetpointA {
        index: 2,
        amps: 16.0,
    })
    .unwrap();
    p.step(1.0);
    let c = &p.view().chargers[2];
    assert_eq!(c.state, Mode3State::C2);
    assert!((c.power_w - 3.0 * 230.0 * 16.0).abs() < 1e-6);
    assert_eq!(p.view().chargers[3].state, Mode3State::A);
}

#[test]
fn full_car_shows_b2_and_leaves_at_departure_recording_its_session() {
    let mut p = Plant::new(&quiet("09:00"), 1);
    let mut spec = car();
    spec.soc_pct = 79.0;
    spec.target_soc_pct = 80.0;
    spec.stay_s = 1800.0;
    p.plug_vehicle(0, spec).unwrap();
    assert_eq!(
        p.plug_vehicle(0, car()),
        Err(PlugError::Occupied { number: 1 })
    );
    assert_eq!(
        p.plug_vehicle(99, car()),
        Err(PlugError::NoSuchCharger {
            index: 99,
            count: 8
        })
    );
    let mut bad = car();
    bad.soc_pct = 120.0;
    let err = p.plug_vehicle(1, bad).unwrap_err();
    assert_eq!(err.to_string(), "vehicle soc_pct 120 outside 0..=100");
    p.apply(Command::ChargerSafeCurrentA {
        index: 0,
        amps: 32.0,
    })
    .unwrap();
    for _ in 0..600 {
        p.step(1.0);
    }
    let c = &p.view().chargers[0];
    assert_eq!(c.state, Mode3State::B2);
    assert!((c.vehicle.as_ref().unwrap().session_wh - 600.0).abs() < 1e-6);
    for _ in 0..1300 {
        p.step(1.0);
    }
    assert!(p.view().chargers[0].vehicle.is_none());
    let k = p.kpis();
    assert_eq!(k.ev_sessions_fully_served_pct, 100.0);
    assert!(k.ev_unmet_kwh < 1e-9);
}

#[test]
fn pv_limit_lowers_output_and_reverts() {
    let mut p = Plant::new(&quiet("12:00"), 3);
    p.step(1.0);
    let before = p.view().pv;
    assert!(before.power_w > 90_000.0, "noon PV {}", before.power_w);
    assert_eq!(before.status, PvStatus::Mppt);
    p.apply(Command::PvLimitRevertS(60)).unwrap();
    p.apply(Command::PvLimitPct(40.0)).unwrap();
    p.apply(Command::PvLimitEnabled(true)).unwrap();
    for _ in 0..20 {
        p.step(1.0);
    }
    let pv = p.view().pv;
    assert!(pv.power_w <= 0.4 * pv.rating_w + 1e-6, "{}", pv.power_w);
    assert_eq!(pv.status, PvStatus::Throttled);
    assert!(p.kpis().pv_curtailed_kwh > 0.0);
    for _ in 0..60 {
        p.step(1.0);
    }
    let pv = p.view().pv;
    assert!(!pv.limit_enabled);
    assert!(pv.power_w > 0.4 * pv.rating_w + 10_000.0);
}

#[test]
fn pv_sleeps_at_night() {
    let p = Plant::new(&quiet("01:00"), 3);
    let pv = p.view().pv;
    assert_eq!(pv.power_w, 0.0);
    assert_eq!(pv.status, PvStatus::Sleeping);
}

#[test]
fn soh_falls_over_a_simulated_year() {
    let mut s = quiet("00:00");
    s.building.noise_kw = 0.0;
    let mut p = Plant::new(&s, 5);
    let soh0 = p.view().battery.soh_pct;
    let steps_per_day = 24 * 60;
    for day in 0..365 {
        for m in 0..steps_per_day {
            // one cycle a day: charge at night, discharge in the afternoon
            let w = match m {
                0..=299 => -60_000.0,
                720..=1019 => 60_000.0,
                _ => 0.0,
            };
            p.apply(Command::BatterySetpointW(w)).unwrap();
            p.step(60.0);
        }
        let _ = day;
    }
    let v = p.view().battery;
    let k = p.kpis();
    assert!(k.battery_efc > 150.0, "efc {}", k.battery_efc);
    let loss = soh0 - v.soh_pct;
    assert!(loss > 2.0 && loss < 10.0, "SoH loss over a year {loss}");
    assert!((k.soh_change_pct + loss).abs() < 1e-9);
    assert!(p.now() - s.start_utc() == Duration::days(365));
}

#[test]
fn same_seed_gives_identical_days() {
    let s = Scenario::reference();
    let run = |seed| {
        let mut p = Plant::new(&s, seed);
        for _ in 0..(24 * 60) {
            p.step(60.0);
        }
        (p.view(), p.kpis())
    };
    let (a_view, a_kpi) = run(11);
    let (b_view, b_kpi) = run(11);
    assert_eq!(a_view, b_view);
    assert_eq!(a_kpi, b_kpi);
    let (c_view, _) = run(12);
    assert_ne!(
        a_view.building_meter.import_wh,
        c_view.building_meter.import_wh
    );
}

/// Per-minute PV available, building load and arrivals seen by a plant run.
fn observe(s: &Scenario, seed: u64, control: bool) -> (Vec<f64>, Vec<f64>, Vec<(usize, String)>) {
    let mut p = Plant::new(s, seed);
    let mut pv = Vec::new();
    let mut bl = Vec::new();
    let mut seen = Vec::new();
    let mut last: Vec<Option<String>> = vec![None; s.chargers.count];
    for i in 0..(24 * 60 * 2) {
        if control && i % 7 == 0 {
            let k = i as f64;
            p.apply(Command::BatterySetpointW(((k * 0.37).sin()) * 100_000.0))
                .unwrap();
            p.apply(Command::PvLimitPct(
                ((k * 0.11).cos() * 50.0 + 50.0).clamp(0.0, 100.0),
            ))
            .unwrap();
            p.apply(Command::PvLimitEnabled(i % 3 == 0)).unwrap();
            for c in 0..s.chargers.count {
                p.apply(Command::ChargerSetpointA {
                    index: c,
                    amps: (k * 0.3 + c as f64) % 33.0,
                })
                .unwrap();
            }
        }
        p.step(30.0);
        let v = p.view();
        pv.push(v.pv.available_w);
        bl.push(v.building_meter.power_w);
        for (c, ch) in v.chargers.iter().enumerate() {
            let id = ch.vehicle.as_ref().map(|x| x.arrived.to_rfc3339());
            if id.is_some() && id != last[c] {
                seen.push((c, id.clone().unwrap()));
            }
            last[c] = id;
        }
    }
    (pv, bl, seen)
}

#[test]
fn exogenous_processes_do_not_depend_on_control() {
    let s = Scenario::reference();
    let quiet = observe(&s, 42, false);
    let driven = observe(&s, 42, true);
    assert!(!quiet.2.is_empty(), "the day has arrivals");
    assert_eq!(quiet, driven);
}

#[test]
fn forecast_matches_what_the_plant_sees() {
    let s = Scenario::reference();
    let seed = 9;
    let f = exogenous_forecast(&s, seed, s.start_utc(), 1);
    assert_eq!(f.pv_available_w.len(), 96);
    let mut p = Plant::new(&s, seed);
    let mut arrivals = Vec::new();
    let mut last: Vec<Option<chrono::DateTime<chrono::Utc>>> = vec![None; 8];
    for q in 0..96 {
        let (mut pv, mut bl) = (0.0, 0.0);
        for _ in 0..900 {
            p.step(1.0);
            let v = p.view();
            pv += v.pv.available_w;
            bl += v.building_meter.power_w;
            for (c, ch) in v.chargers.iter().enumerate() {
                let a = ch.vehicle.as_ref().map(|x| x.arrived);
                if let (Some(t), true) = (a, a != last[c]) {
                    let veh = ch.vehicle.as_ref().unwrap();
                    arrivals.push((c, t, veh.departs, veh.wanted_wh + veh.session_wh));
                }
                last[c] = a;
            }
        }
        assert!(
            (pv / 900.0 - f.pv_available_w[q]).abs() < 1e-6,
            "pv at step {q}"
        );
        assert!(
            (bl / 900.0 - f.building_w[q]).abs() < 1e-6,
            "building at step {q}"
        );
    }
    let forecast: Vec<_> = f
        .sessions
        .iter()
        .map(|x| (x.charger, x.arrive, x.depart, x.wanted_wh))
        .collect();
    assert_eq!(forecast.len(), arrivals.len());
    for (a, b) in forecast.iter().zip(&arrivals) {
        assert_eq!((a.0, a.1, a.2), (b.0, b.1, b.2));
        assert!((a.3 - b.3).abs() < 1e-6);
    }
    assert!(
        arrivals.len() >= 3,
        "a weekday has cars: {}",
        arrivals.len()
    );
}

#[test]
fn plant_forecast_from_now_includes_plugged_cars() {
    let s = Scenario::reference();
    let mut p = Plant::new(&s, 9);
    for _ in 0..(10 * 60) {
        p.step(60.0);
    }
    let plugged = p
        .view()
        .chargers
        .iter()
        .filter(|c| c.vehicle.is_some())
        .count();
    let f = p.exogenous(1);
    assert_eq!(f.start, p.now());
    let current = f.sessions.iter().filter(|x| x.arrive <= p.now()).count();
    assert_eq!(current, plugged);
}

#[test]
fn every_scenario_file_loads_and_runs_an_hour() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut p = Plant::new(&s, 1);
        for _ in 0..60 {
            p.step(60.0);
        }
        check_balance(&p.view());
        n += 1;
    }
    assert!(n >= 5, "found {n} scenario files");
}

#[test]
fn sunny_weekday_file_equals_the_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let file = Scenario::load(&dir.join("sunny-weekday.toml")).unwrap();
    let mut a = Plant::new(&file, 4);
    let mut b = Plant::new(&Scenario::reference(), 4);
    for _ in 0..(24 * 12) {
        a.step(300.0);
        b.step(300.0);
    }
    assert_eq!(a.kpis(), b.kpis());
}

#[test]
fn ev_rush_breaches_the_import_limit_at_full_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let s = Scenario::load(&dir.join("ev-rush.toml")).unwrap();
    let mut p = Plant::new(&s, 1);
    let mut all_plugged = false;
    for i in 0..(24 * 3600 / 10) {
        if i % 3 == 0 {
            for c in 0..8 {
                p.apply(Command::ChargerSetpointA {
                    index: c,
                    amps: 32.0,
                })
                .unwrap();
            }
        }
        p.step(10.0);
        all_plugged |= p.view().chargers.iter().all(|c| c.vehicle.is_some());
    }
    assert!(all_plugged);
    let k = p.kpis();
    assert!(
        k.import_limit_exceeded_s > 600.0,
        "{}",
        k.import_limit_exceeded_s
    );
    assert!(k.peak_import_kw > 150.0);
    assert!(k.ev_delivered_kwh > 200.0);
}

#[test]
fn faults_day_raises_the_scheduled_bms_alarm() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let s = Scenario::load(&dir.join("faults-day.toml")).unwrap();
    let mut p = Plant::new(&s, 1);
    for _ in 0..(12 * 60 + 5) {
        p.step(60.0);
    }
    assert_eq!(p.view().battery.state, BatteryState::Fault);
    let at = s.resolve_local("14:01").unwrap();
    let wf = s.wire_faults("battery", at);
    assert_eq!(wf.bad_values, vec![("soc_pct".to_string(), 250.0)]);
    for _ in 0..20 {
        p.step(60.0);
    }
    assert_ne!(p.view().battery.state, BatteryState::Fault);
}

#[test]
fn cold_battery_charges_slower() {
    let mut s = quiet("02:00");
    s.battery.ambient_c = 5.0;
    let cold = Plant::new(&s, 1).view().battery;
    let warm = Plant::new(&quiet("02:00"), 1).view().battery;
    assert!((cold.max_charge_a - 0.5 * warm.max_charge_a).abs() < 1e-6);
    assert_eq!(cold.max_discharge_a, warm.max_discharge_a);
}

#[test]
fn kpis_cost_counts_import_at_the_valley_price() {
    let mut s = quiet("00:00");
    s.tariff.demand_cny_per_kw = 0.0;
    s.building.noise_kw = 0.0;
    s.building.workshop_steps_per_day = 0.0;
    let mut p = Plant::new(&s, 1);
    for _ in 0..60 {
        p.step(60.0);
    }
    let k = p.kpis();
    // One night hour: 15 kW building, nothing else, valley price.
    assert!(
        (k.grid_import_kwh - 15.0).abs() < 1e-6,
        "{}",
        k.grid_import_kwh
    );
    let degr = -k.soh_change_pct * s.battery.pack_value_cny / s.battery.allowed_soh_loss_pct;
    assert!((k.cost - (15.0 * 0.30 + degr)).abs() < 1e-6, "{}", k.cost);
    assert!((k.co2_kg - 15.0 * 0.5703).abs() < 1e-9);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn battery_never_leaves_soc_bounds_nor_its_limits(
        initial in 0.0f64..100.0,
        moves in proptest::collection::vec((-120_000.0f64..120_000.0, 1.0f64..600.0, any::<bool>()), 1..60),
    ) {
        let mut s = quiet("00:00");
        s.battery.initial_soc_pct = initial;
        let mut p = Plant::new(&s, 2);
        for (w, dt, reserve) in moves {
            p.apply(Command::BatterySetpointW(w)).unwrap();
            if reserve {
                p.apply(Command::BatterySocReserveMinPct(30.0)).unwrap();
            }
            p.step(dt);
            let b = p.view().battery;
            prop_assert!((0.0..=100.0).contains(&b.soc_pct), "soc {}", b.soc_pct);
            prop_assert!(b.power_w.abs() <= b.pcs_rating_w + 1e-6);
            let tol = 0.01;
            if b.current_a > 0.0 {
                prop_assert!(b.current_a <= b.max_discharge_a * (1.0 + tol) + 1e-6, "{} > {}", b.current_a, b.max_discharge_a);
            } else {
                prop_assert!(-b.current_a <= b.max_charge_a * (1.0 + tol) + 1e-6, "{} > {}", -b.current_a, b.max_charge_a);
            }
        }
    }
}

#[test]
fn session_energy_has_a_mean_near_12_kwh_and_a_heavy_tail() {
    let s = Scenario::reference();
    let f = exogenous_forecast(&s, 77, s.start_utc(), 120);
    let n = f.sessions.len() as f64;
    let mean_kwh = f.sessions.iter().map(|x| x.wanted_wh).sum::<f64>() / n / 1000.0;
    let tail = f.sessions.iter().filter(|x| x.wanted_wh > 33_000.0).count() as f64 / n;
    let per_day = n / 120.0;
    println!("sessions/day {per_day:.2} mean {mean_kwh:.2} kWh tail>33 {tail:.3}");
    assert!((6.0..=14.0).contains(&per_day), "{per_day}");
    assert!((10.0..=14.0).contains(&mean_kwh), "{mean_kwh}");
    assert!((0.05..=0.15).contains(&tail), "{tail}");
    assert!(f
        .sessions
        .iter()
        .all(|x| x.depart > x.arrive && x.wanted_wh >= 0.0));
}

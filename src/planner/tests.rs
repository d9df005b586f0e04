use super::*;
use chrono::TimeZone;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 7, 15, h, m, 0).unwrap()
}

/// A 100 kWh battery at 50 %, 150 kW limit, no export, 40 CNY/kW demand charge for a whole
/// month, 20 CNY/kWh unmet, stored energy worth 0.30 / 0.95.
fn config(horizon_steps: usize) -> PlannerConfig {
    PlannerConfig {
        horizon_steps,
        battery: BatteryInput {
            usable_wh: 100_000.0,
            soc0_pct: 0.0,
            soc_min_pct: 10.0,
            soc_max_pct: 90.0,
            max_charge_w: 50_000.0,
            max_discharge_w: 50_000.0,
            charge_eff: 0.95,
            discharge_eff: 0.95,
            wear_cost_cny_per_kwh_discharged: 0.1,
            calendar_cny_per_kwh_h: 0.0,
        },
        grid: GridInput {
            import_limit_w: 150_000.0,
            export_limit_w: 0.0,
        },
        export_price_cny_per_kwh: 0.0,
        demand_charge_cny_per_kw: 40.0,
        demand_charge_fraction: 1.0,
        period_end: None,
        unmet_cny_per_kwh: 20.0,
        stored_cny_per_kwh: 0.30 / 0.95,
    }
}

fn flat_forecast(start: DateTime<Utc>, n: usize, building_w: f64) -> Forecast {
    Forecast {
        start,
        pv_w: vec![0.0; n],
        building_w: vec![building_w; n],
        import_price_cny_per_kwh: vec![0.70; n],
        arrivals: Vec::new(),
    }
}

fn state(soc_pct: f64, peak_w: f64, plugged: Vec<PluggedCar>) -> PlanState {
    PlanState {
        soc_pct,
        month_peak_so_far_w: peak_w,
        plugged,
    }
}

fn car(wanted_kwh: f64, departs: DateTime<Utc>) -> PluggedCar {
    PluggedCar {
        charger: 3,
        wanted_wh: wanted_kwh * 1000.0,
        departs,
        max_w: 22_000.0,
        wish_stated: true,
        taper: None,
    }
}

#[test]
fn a_plan_made_inside_a_quarter_starts_now_and_keeps_the_clocks_quarters() {
    let f = flat_forecast(at(10, 0), 8, 20_000.0);
    let p = plan(&config(8), &state(50.0, 0.0, Vec::new()), &f, at(10, 5)).unwrap();
    assert_eq!(p.steps.len(), 8);
    assert_eq!((p.steps[0].start, p.steps[0].end), (at(10, 5), at(10, 15)));
    assert_eq!((p.steps[1].start, p.steps[1].end), (at(10, 15), at(10, 30)));
    assert_eq!(p.steps[7].end, at(12, 0));
}

#[test]
fn a_plugged_car_is_charged_in_the_cheap_hour_before_it_leaves() {
    // 0.70 in the first hour, 0.30 in the second; the car leaves at 12:30 wanting 10 kWh.
    let mut f = flat_forecast(at(10, 0), 8, 0.0);
    for p in &mut f.import_price_cny_per_kwh[4..] {
        *p = 0.30;
    }
    let mut cfg = config(8);
    cfg.demand_charge_cny_per_kw = 0.0;
    let s = state(10.0, 0.0, vec![car(10.0, at(12, 30))]);
    let p = plan(&cfg, &s, &f, at(10, 0)).unwrap();
    let first = &p.steps[0].cars[0];
    assert_eq!(first.charger, 3);
    assert!(first.in_step_wh < 1.0, "{first:?}");
    assert!((first.by_departure_wh - 10_000.0).abs() < 1.0, "{first:?}");
    let cheap: f64 = p.steps[4..].iter().map(|s| s.cars[0].in_step_wh).sum();
    assert!((cheap - 10_000.0).abs() < 1.0);
    assert_eq!(p.plugged_unmet_wh, 0.0);
}

#[test]
fn the_demand_charge_applies_only_above_the_months_peak_so_far() {
    // 40 kW building, battery at its floor, a car wanting 22 kWh by 12:00 (22 kW max). With
    // 80 kW already billed, any import up to 80 kW costs energy only: the ceiling stays at
    // 80 kW. With 40 kW billed, every kW above costs 4 CNY: the car is spread evenly until
    // half an hour before it leaves, when the dispatch core's lateness guard wants it done
    // (22 kWh over 1.5 h), so the import peaks at 54.7 kW.
    let f = flat_forecast(at(10, 0), 8, 40_000.0);
    let mut cfg = config(8);
    cfg.demand_charge_fraction = 0.1;
    let plugged = || vec![car(22.0, at(12, 0))];
    let billed = plan(&cfg, &state(10.0, 80_000.0, plugged()), &f, at(10, 0)).unwrap();
    assert!((billed.steps[0].import_ceiling_w - 80_000.0).abs() < 1.0);
    let fresh = plan(&cfg, &state(10.0, 40_000.0, plugged()), &f, at(10, 0)).unwrap();
    assert!(
        (fresh.steps[0].import_ceiling_w - (40_000.0 + 22_000.0 / 1.5)).abs() < 1.0,
        "{fresh:?}"
    );
    assert!((fresh.steps[0].cars[0].in_step_wh - 22_000.0 / 6.0).abs() < 1.0);
    assert!((fresh.steps[0].cars[0].by_departure_wh - 22_000.0).abs() < 1.0);
}

#[test]
fn a_plan_across_the_months_end_starts_the_next_months_peak_from_zero() {
    // 100 kW billed this month, 20 kW building, cheap energy worth storing (2 CNY/kWh stored):
    // until the month ends at 11:00 the battery charges at its 50 kW for free below the
    // month's peak. From 11:00 a new month bills from zero and a kW of its peak costs 40 CNY,
    // far more than a kWh stored brings: the battery it has just filled carries the building
    // and the new month's peak stays at zero.
    let mut f = flat_forecast(at(10, 0), 8, 20_000.0);
    f.import_price_cny_per_kwh = vec![0.30; 8];
    let mut cfg = config(8);
    cfg.stored_cny_per_kwh = 2.0;
    cfg.period_end = Some(PeriodEnd {
        at: at(11, 0),
        next_fraction: 1.0,
    });
    let p = plan(&cfg, &state(10.0, 100_000.0, Vec::new()), &f, at(10, 0)).unwrap();
    for s in &p.steps[..4] {
        assert!((s.import_ceiling_w - 100_000.0).abs() < 1.0, "{s:?}");
        assert!((s.planned_import_w - 70_000.0).abs() < 1.0, "{s:?}");
    }
    for s in &p.steps[4..] {
        assert!(s.import_ceiling_w.abs() < 1.0, "{s:?}");
        assert!(s.planned_import_w.abs() < 1.0, "{s:?}");
    }
    // Without the month's end in the horizon the free 100 kW runs on until the battery is full.
    cfg.period_end = None;
    let p = plan(&cfg, &state(10.0, 100_000.0, Vec::new()), &f, at(10, 0)).unwrap();
    assert!(
        (p.steps[4].planned_import_w - 70_000.0).abs() < 1.0,
        "{:?}",
        p.steps[4]
    );
}

#[test]
fn the_months_end_inside_a_horizon_is_found_with_the_next_months_share() {
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let h48 = 48.0 * 3600.0;
    // 2026-07-31 23:00 local: August starts an hour later; 47 of its 31 x 24 h are planned.
    let now = Utc.with_ymd_and_hms(2026, 7, 31, 15, 0, 0).unwrap();
    let end = period_end(now, h48, tz).unwrap();
    assert_eq!(end.at, Utc.with_ymd_and_hms(2026, 7, 31, 16, 0, 0).unwrap());
    assert!((end.next_fraction - 47.0 / (31.0 * 24.0)).abs() < 1e-12);
    // Three days before the end the horizon stops short of it.
    let now = Utc.with_ymd_and_hms(2026, 7, 28, 15, 0, 0).unwrap();
    assert_eq!(period_end(now, h48, tz), None);
}

#[test]
fn a_wish_the_car_cannot_take_before_it_leaves_is_reported_unmet() {
    // The car leaves at 10:30 wanting 30 kWh: the plan aims 15 minutes early, at the full
    // 22 kW of a car behind the lateness guard, 5.5 kWh.
    let f = flat_forecast(at(10, 0), 8, 0.0);
    let p = plan(
        &config(8),
        &state(50.0, 0.0, vec![car(30.0, at(10, 30))]),
        &f,
        at(10, 0),
    )
    .unwrap();
    assert!(
        (p.plugged_unmet_wh - 24_500.0).abs() < 1.0,
        "{}",
        p.plugged_unmet_wh
    );
    assert!(p.steps[2].cars.is_empty());
}

#[test]
fn the_battery_target_follows_the_plan_and_the_soc_window() {
    // Peak prices after an hour of valley: the plan fills the battery first, then spends it.
    let mut f = flat_forecast(at(10, 0), 8, 30_000.0);
    for (t, p) in f.import_price_cny_per_kwh.iter_mut().enumerate() {
        *p = if t < 4 { 0.30 } else { 1.10 };
    }
    let mut cfg = config(8);
    cfg.demand_charge_cny_per_kw = 0.0;
    let p = plan(&cfg, &state(50.0, 0.0, Vec::new()), &f, at(10, 0)).unwrap();
    let soc: Vec<f64> = p.steps.iter().map(|s| s.battery_soc_target_pct).collect();
    assert!(soc[3] > 50.0, "{soc:?}");
    assert!(soc[7] < soc[3], "{soc:?}");
    assert!(soc.iter().all(|s| (10.0 - 1e-6..=90.0 + 1e-6).contains(s)));
}

#[test]
fn a_forecast_that_is_short_or_not_aligned_is_refused_by_name() {
    let cfg = config(8);
    let s = state(50.0, 0.0, Vec::new());
    let short = flat_forecast(at(10, 0), 4, 0.0);
    assert_eq!(
        plan(&cfg, &s, &short, at(10, 0)).unwrap_err().to_string(),
        "forecast.pv_w: 4 steps, the horizon needs 8"
    );
    let late = flat_forecast(at(10, 0), 8, 0.0);
    assert!(matches!(
        plan(&cfg, &s, &late, at(10, 20)),
        Err(PlanError::Misaligned { .. })
    ));
    assert!(matches!(
        plan(&config(0), &s, &late, at(10, 0)),
        Err(PlanError::NoHorizon)
    ));
}

#[test]
fn expected_cars_shape_the_plan_but_get_no_budget_before_they_plug_in() {
    let mut f = flat_forecast(at(10, 0), 8, 0.0);
    f.arrivals.push(ExpectedCar {
        arrives: at(11, 0),
        departs: at(12, 0),
        wanted_wh: 9_000.0,
        max_w: 22_000.0,
    });
    let input = program(&config(8), &state(50.0, 0.0, Vec::new()), &f, at(10, 0)).unwrap();
    assert_eq!(input.sessions.len(), 1);
    assert_eq!(
        (input.sessions[0].arrive_step, input.sessions[0].depart_step),
        (4, 7)
    );
    assert!((input.sessions[0].max_w - 22_000.0 * CAR_POWER_SHARE).abs() < 1e-9);
    let p = plan(&config(8), &state(50.0, 0.0, Vec::new()), &f, at(10, 0)).unwrap();
    assert!(p.steps.iter().all(|s| s.cars.is_empty()));
}

#[test]
fn a_car_whose_stated_wish_is_met_is_held_by_a_budget_of_nothing_until_it_leaves() {
    // A full car (nothing wanted) leaving at 10:50: with a stated wish, the quarters starting
    // before it leaves hold it at nothing, so dispatch does not fall back to the rule policy
    // for its charger; a charger's default wish met leaves it to the rule policy.
    let budgets = |wish_stated| {
        let f = flat_forecast(at(10, 0), 8, 0.0);
        let full = PluggedCar {
            wish_stated,
            ..car(0.0, at(10, 50))
        };
        let p = plan(&config(8), &state(50.0, 0.0, vec![full]), &f, at(10, 0)).unwrap();
        p.steps
            .iter()
            .map(|s| s.cars.iter().map(|c| (c.charger, c.in_step_wh)).collect())
            .collect::<Vec<Vec<(usize, f64)>>>()
    };
    for (t, b) in budgets(true).iter().enumerate() {
        let expected = if t < 4 { vec![(3, 0.0)] } else { Vec::new() };
        assert_eq!(b, &expected, "step {t}");
    }
    assert!(budgets(false).iter().all(Vec::is_empty));
}

#[test]
fn a_car_that_arrives_behind_the_lateness_guard_is_planned_at_its_full_power() {
    // 9 kWh in an hour at 22 kW is within what the guard counts on (90 % of its power until
    // half an hour before it leaves: 9.9 kWh): planned at the usual share. 15 kWh is not:
    // dispatch will charge it at full power from arrival, and so does the plan.
    let share_of = |wanted_wh| {
        let mut f = flat_forecast(at(10, 0), 8, 0.0);
        f.arrivals.push(ExpectedCar {
            arrives: at(11, 0),
            departs: at(12, 0),
            wanted_wh,
            max_w: 22_000.0,
        });
        let input = program(&config(8), &state(50.0, 0.0, Vec::new()), &f, at(10, 0)).unwrap();
        input.sessions[0].max_w / 22_000.0
    };
    assert!((share_of(9_000.0) - CAR_POWER_SHARE).abs() < 1e-9);
    assert!((share_of(15_000.0) - 1.0).abs() < 1e-9);
}

#[test]
fn a_plan_weighs_a_new_peak_with_the_share_of_the_period_left_that_its_horizon_covers() {
    let day = 86_400.0;
    // A 48 h plan at the start of a 30-day month: 2 of the 30 days left.
    assert!((demand_fraction(2.0 * day, 30.0 * day, 1.0) - 2.0 / 30.0).abs() < 1e-12);
    // Five days before the month's end: 2 of 5.
    assert!((demand_fraction(2.0 * day, 5.0 * day, 1.0) - 0.4).abs() < 1e-12);
    // The horizon reaches the period's end: the whole charge.
    assert_eq!(demand_fraction(2.0 * day, 1.5 * day, 1.0), 1.0);
    // A 7-day backtest window pays 7/30 of a month, of which a 48 h plan at its start sees 2/7.
    let f = demand_fraction(2.0 * day, 7.0 * day, 7.0 / 30.0);
    assert!((f - 2.0 / 30.0).abs() < 1e-12);
    assert_eq!(demand_fraction(0.0, 7.0 * day, 7.0 / 30.0), 0.0);
}

#[test]
fn what_is_left_of_the_month_is_counted_to_the_next_local_midnight_of_the_first() {
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    // 2026-07-31 12:00 local = 04:00 UTC; the month ends 12 h later.
    let now = Utc.with_ymd_and_hms(2026, 7, 31, 4, 0, 0).unwrap();
    assert!((left_in_month_s(now, tz) - 12.0 * 3600.0).abs() < 1e-9);
    // December rolls into January.
    let now = Utc.with_ymd_and_hms(2026, 12, 30, 16, 0, 0).unwrap();
    assert!((left_in_month_s(now, tz) - 86_400.0).abs() < 1e-9);
}

#[test]
fn a_plan_keeps_each_car_ahead_of_the_dispatch_cores_lateness_guard() {
    // 0.70 in the first hour, 0.30 in the second; the car leaves at 12:00 wanting 20 kWh. The
    // cheap hour alone would do (at 18.7 kW), but the dispatch core charges any car harder
    // that it sees falling behind 90 % of its power until half an hour before it leaves: a
    // plan that waits for the cheap hour would be overridden at 10:xx, whatever its import
    // ceiling. So by the end of every step the car is no further behind than that.
    let mut f = flat_forecast(at(10, 0), 8, 0.0);
    for p in &mut f.import_price_cny_per_kwh[4..] {
        *p = 0.30;
    }
    let mut cfg = config(8);
    cfg.demand_charge_cny_per_kw = 0.0;
    let s = state(10.0, 0.0, vec![car(20.0, at(12, 0))]);
    let p = plan(&cfg, &s, &f, at(10, 0)).unwrap();
    let mut delivered = 0.0;
    for step in &p.steps {
        delivered += step.cars.first().map_or(0.0, |c| c.in_step_wh);
        let after_h = seconds(step.end, at(12, 0)).max(0.0) / 3600.0;
        assert!(
            20_000.0 - delivered <= later_wh(22_000.0, after_h) + 1.0,
            "behind the guard at {}: {delivered} Wh delivered",
            step.end
        );
    }
    assert!((delivered - 20_000.0).abs() < 1.0, "{delivered}");
    assert_eq!(p.plugged_unmet_wh, 0.0);
    // The guard costs only what it must: it wants the car done by 11:30, half an hour before
    // it leaves, so the cheap hour has half an hour for it, at the plan's share of the car's
    // power (0.85 x 22 kW x 0.5 h = 9.35 kWh); the rest comes before.
    let dear: f64 = p.steps[..4].iter().map(|s| s.cars[0].in_step_wh).sum();
    assert!((dear - 10_650.0).abs() < 1.0, "{dear}");
}

#[test]
fn a_car_is_planned_only_for_the_part_of_a_quarter_it_is_still_plugged_in() {
    // 30 kWh wanted, 22 kW, leaving at 11:05: the plan aims 15 minutes early, at 10:50, so the
    // quarter from 10:45 holds 5 minutes of charging and the plan can deliver 22 x 50 / 60 kWh.
    let f = flat_forecast(at(10, 0), 8, 0.0);
    let mut cfg = config(8);
    cfg.demand_charge_cny_per_kw = 0.0;
    let s = state(10.0, 0.0, vec![car(30.0, at(11, 5))]);
    let p = plan(&cfg, &s, &f, at(10, 0)).unwrap();
    let last = p.steps[3].cars[0].in_step_wh;
    assert!(last <= 22_000.0 * 5.0 / 60.0 + 1.0, "{last}");
    let deliverable_wh = 22_000.0 * 50.0 / 60.0;
    assert!(
        (p.plugged_unmet_wh - (30_000.0 - deliverable_wh)).abs() < 1.0,
        "{}",
        p.plugged_unmet_wh
    );
}

#[test]
fn a_car_known_to_be_nearly_full_is_started_before_its_taper_would_leave_it_short() {
    // As above, but the car's wish was stated as a target SoC: 60 kWh at 90 %, 5 kWh to go.
    // Near full it takes less than its power, so the cheap hour alone cannot give it 6 kWh:
    // the plan starts it in the dear hour. Without the taper the plan waits for the cheap hour.
    let mut f = flat_forecast(at(10, 0), 8, 0.0);
    for p in &mut f.import_price_cny_per_kwh[4..] {
        *p = 0.30;
    }
    let mut cfg = config(8);
    cfg.demand_charge_cny_per_kw = 0.0;
    let nearly_full = |taper| PluggedCar {
        max_w: 7_000.0,
        taper,
        ..car(5.0, at(12, 30))
    };
    let dear_wh = |taper| {
        let s = state(10.0, 0.0, vec![nearly_full(taper)]);
        let p = plan(&cfg, &s, &f, at(10, 0)).unwrap();
        assert_eq!(p.plugged_unmet_wh, 0.0, "{p:?}");
        p.steps[..4]
            .iter()
            .map(|s| s.cars[0].in_step_wh)
            .sum::<f64>()
    };
    assert!(dear_wh(None) < 1.0);
    let tapered = dear_wh(Some(Taper {
        battery_wh: 60_000.0,
        soc_pct: 90.0,
    }));
    assert!(tapered > 500.0, "{tapered} Wh in the dear hour");
}

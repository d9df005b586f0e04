//! The perfect-foresight optimum of a scenario, scored like the simulator scores a run.
//!
//! [`optimum_input`] turns the scenario's realized exogenous processes
//! ([`station_sim::physics::exogenous_forecast`] with the same seed and start as the plant) and
//! its plant limits into an [`OptimumInput`] with 15-minute steps; [`optimum_run`] solves it and
//! replays the optimal schedule through the simulator's own [`KpiTracker`], so every scorecard
//! key, the cost above all, is computed by the same code as for a closed-loop run.
//!
//! # How the program matches the plant
//! * Battery: usable capacity = nameplate x SoH; the SoC window is the BMS's (narrowed by
//!   the cell imbalance, discharge floor raised to `SoCRsvMin`); power limits are the PCS rating
//!   and the BMS limits at mid SoC and ambient temperature (so the cold winter container's
//!   charge derating applies); one-way efficiency as the scenario's. The BMS's linear derating in
//!   the last 5 % before the window edges is not modelled (the program may use full power
//!   there): a relaxation, so the bound stays a lower bound.
//! * Wear in the objective: the simulator's cycle aging, linearised at the start. SoH loses
//!   `100 x 7.58e-5 x 1.08 x EFC0^0.08` points per equivalent full cycle, an AC kWh discharged
//!   costs `1 / (eta x usable0)` cycles (its own charge included), and a SoH point is worth
//!   `pack_value / allowed_soh_loss`. Calendar aging, which the scorecard charges by the
//!   pack's SoC minute by minute, enters as the slope of its rate in stored energy at the
//!   middle of the SoC window (`calendar_slope`; the rate grows as `exp(2.15 x 162 soc / T)`,
//!   2.5 times from 10 to 90 % at 25 °C): a tangent of a convex cost, so it never prices a
//!   schedule's aging above the law's. Without it the program was blind to when the battery
//!   is charged within a flat-priced valley, and the replayed optimum's wear moved by up to
//!   18 CNY a week between schedules of equal program cost (sunny weekday seed 3: 311 or 329).
//! * Vehicles: a session may charge in every step it overlaps, in a step it is present for only
//!   part of at up to its power for that part, and above the taper's knee at up to the taper's
//!   limit at the SoC it has at the step's start ([`super::optimum::Taper`]): a relaxation of
//!   the car still (the limit falls within the step), but no longer one that charges a car
//!   before it arrives or at full power when full (the two raised the bound by up to 3 CNY a
//!   window: sunny weekday seed 4, 7 days, 503.1 -> 506.2 CNY; ev-rush seed 1, one day,
//!   861.4 -> 863.5 CNY). A session still plugged in at the end of the window must
//!   get what it wants by then, as far as its power allows, as the controllers do when charging
//!   on arrival; so every run delivers comparable vehicle energy. The objective
//!   ([`super::objective`]) charges every run for what such cars still want at the end.
//! * Battery end state: free, valued by the objective's stored value (the program's
//!   `stored_value_cny_per_kwh`), as every run is scored.
//! * Grid: import limit, export limit, demand charge on the highest 15-minute average import,
//!   prorated to the window (days / 30) like the simulator. A window that crosses a month
//!   boundary is optimised with one peak for the whole window (the simulator bills each month's
//!   own peak); the scored cost uses the simulator's rule either way.
//!
//! # How the schedule is scored
//! Each 15-minute step is recorded into a [`KpiTracker`] with the step's average flows (the
//! import price is the step's average, so the import cost is exact for a constant import). The
//! degradation cost is the simulator's: pack value x SoH points lost / allowed loss, with SoH from
//! the simulator's aging law (calendar loss by the equivalent-time method at ambient temperature
//! and the step's SoC, minute by minute, plus cycle loss from the schedule's DC throughput).
//! Differences from a plant run: no I^2R heating of the pack (the plant's pack runs a little
//! warmer and so ages a little faster), and usable capacity held at its start value during the
//! window (SoH changes by hundredths of a point per day).
//!
//! The meter nets import and export: where the program imports and exports in the same step
//! (the relaxation artefact of [`super::optimum`], possible only where export pays more than
//! import, i.e. valley steps after sunrise) the scorecard sees the net flow, so the scored cost
//! can exceed the program's own energy cost by up to `simultaneous_import_export_kwh x
//! (export price - import price)` (0.37 CNY on the sunny weekday, seed 1). The scored cost is
//! the cost of a dispatch the plant can carry out; the program's objective is the strict bound.

use super::objective::{Objective, ObjectiveValues, RunOutcome};
use super::optimum::{
    solve, BatteryInput, GridInput, OptimumError, OptimumInput, OptimumResult, Presence,
    SessionInput, Taper, TariffInput,
};
use chrono::{DateTime, Datelike, Utc};
use station_sim::physics::battery::{
    k_cal, Battery, CALENDAR_EXPONENT, CALENDAR_SOC_K, CYCLE_AGING_A, CYCLE_AGING_B,
};
use station_sim::physics::kpi::{Flows, KpiTracker};
use station_sim::physics::{exogenous_forecast, CostParts, Exogenous, Kpis, FORECAST_STEP_S};
use station_sim::scenario::Scenario;

/// Aging sub-step, s (the simulator ages the pack minute by minute).
const AGING_STEP_S: f64 = 60.0;

/// The optimum's scorecard and the program's own result.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimumRun {
    /// Scored by the simulator's [`KpiTracker`] (see the module documentation).
    pub kpis: Kpis,
    /// The backtest's objective of the replayed schedule (the unmet energy of every session,
    /// including the ones still plugged in at the end of the window).
    pub objective: Objective,
    /// The program's result (schedule, its own cost breakdown with the linearised wear).
    pub result: OptimumResult,
    /// Most the meter's netting of the program's simultaneous import and export can add to
    /// the replayed cost: that energy x (export price - lowest import price), CNY.
    pub netting_bound_cny: f64,
    /// Wall time of building and solving the program.
    pub solve_wall: std::time::Duration,
    /// Battery state of charge at the start and at the end, %.
    pub soc_start_pct: f64,
    pub soc_end_pct: f64,
}

/// Battery figures of the plant at the start of a scenario.
struct PlantBattery {
    usable_wh: f64,
    soc0_pct: f64,
    soc_min_pct: f64,
    soc_max_pct: f64,
    max_charge_w: f64,
    max_discharge_w: f64,
    eff: f64,
    soh0_pct: f64,
    cal0: f64,
    efc0: f64,
    ambient_k: f64,
    wear_cny_per_kwh: f64,
    calendar_cny_per_kwh_h: f64,
}

/// The slope of the calendar loss rate in the state of charge at `soc` (fraction), per day
/// and unit of SoC, for a pack with calendar loss `cal_loss` at `t_k`. The simulator's law
/// `L = k(T, soc) x t^0.464` stepped by equivalent time ages at
/// `dL/dt = 0.464 x k^(1/0.464) x L^(1 - 1/0.464)`, and `k` grows as `exp(162 soc / T)`, so the
/// rate's slope is the rate x `162 / (0.464 T)`. A pack with no calendar loss yet is taken a
/// day old.
fn calendar_slope(cal_loss: f64, t_k: f64, soc: f64) -> f64 {
    let k = k_cal(t_k, soc);
    let loss = cal_loss.max(k);
    let rate = CALENDAR_EXPONENT
        * k.powf(1.0 / CALENDAR_EXPONENT)
        * loss.powf(1.0 - 1.0 / CALENDAR_EXPONENT);
    rate * CALENDAR_SOC_K / (CALENDAR_EXPONENT * t_k)
}

fn plant_battery(sc: &Scenario) -> PlantBattery {
    let p = &sc.battery;
    let mut b = Battery::new(p);
    let soc_min_pct = b.discharge_floor_pct();
    let soc_max_pct = b.soc_max_pct.max(soc_min_pct);
    let soc0_pct = b.soc_pct.clamp(soc_min_pct, soc_max_pct);
    // Power limits at mid SoC and ambient temperature.
    b.soc_pct = 0.5 * (soc_min_pct + soc_max_pct);
    b.temp_c = p.ambient_c;
    b.update_limits();
    let eff = p.efficiency.clamp(1e-3, 1.0);
    let max_charge_w = b.pcs_w.min(b.max_charge_w() / eff).max(0.0);
    let max_discharge_w = b.pcs_w.min(b.max_discharge_w() * eff).max(0.0);
    let usable0_kwh = b.usable0_wh / 1000.0;
    let soh_points_per_efc =
        100.0 * CYCLE_AGING_A * CYCLE_AGING_B * b.efc0.max(1e-9).powf(CYCLE_AGING_B - 1.0);
    let cny_per_point = if p.allowed_soh_loss_pct > 0.0 {
        p.pack_value_cny / p.allowed_soh_loss_pct
    } else {
        0.0
    };
    let wear_cny_per_kwh = if usable0_kwh > 0.0 {
        cny_per_point * soh_points_per_efc / (eff * usable0_kwh)
    } else {
        0.0
    };
    let calendar_cny_per_kwh_h = calendar_slope(
        b.cal_loss,
        p.ambient_c + 273.15,
        0.5 * (soc_min_pct + soc_max_pct) / 100.0,
    ) * 100.0
        * cny_per_point
        / (usable0_kwh.max(1e-9) * 24.0);
    PlantBattery {
        usable_wh: b.usable0_wh,
        calendar_cny_per_kwh_h,
        soc0_pct,
        soc_min_pct,
        soc_max_pct,
        max_charge_w,
        max_discharge_w,
        eff,
        soh0_pct: b.soh0_pct,
        cal0: b.cal_loss,
        efc0: b.efc0,
        ambient_k: p.ambient_c + 273.15,
        wear_cny_per_kwh,
    }
}

/// The program's battery for `scenario`'s plant at its start (see the module documentation).
pub fn battery_input(scenario: &Scenario) -> BatteryInput {
    let pb = plant_battery(scenario);
    BatteryInput {
        usable_wh: pb.usable_wh,
        soc0_pct: pb.soc0_pct,
        soc_min_pct: pb.soc_min_pct,
        soc_max_pct: pb.soc_max_pct,
        max_charge_w: pb.max_charge_w,
        max_discharge_w: pb.max_discharge_w,
        charge_eff: pb.eff,
        discharge_eff: pb.eff,
        wear_cost_cny_per_kwh_discharged: pb.wear_cny_per_kwh,
        calendar_cny_per_kwh_h: pb.calendar_cny_per_kwh_h,
    }
}

/// Wear cost per AC kWh discharged that the program uses for `scenario`'s pack, CNY/kWh.
pub fn wear_cost_cny_per_kwh(scenario: &Scenario) -> f64 {
    plant_battery(scenario).wear_cny_per_kwh
}

fn step_index(start: DateTime<Utc>, t: DateTime<Utc>, step_s: f64) -> f64 {
    (t - start).num_milliseconds() as f64 / 1000.0 / step_s
}

/// The program of a scenario window and what it was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Foresight {
    pub input: OptimumInput,
    /// The realized exogenous processes (15-minute steps).
    pub exogenous: Exogenous,
    /// Per session of `input`: whether the car leaves before the window ends (the plant
    /// scores a session when the car leaves).
    pub leaves_inside: Vec<bool>,
    /// Per session of `input`: energy the car wants that no controller can deliver within the
    /// window (at full power from arrival it tapers near full, or it leaves after the window
    /// ends), Wh. The program is asked for the rest; this part is unmet for every controller.
    pub unavoidable_wh: Vec<f64>,
    /// Energy of sessions too short for a program step, all unmet, Wh.
    pub dropped_wh: f64,
}

impl Foresight {
    /// Unmet car energy no controller can avoid, kWh.
    pub fn unavoidable_unmet_kwh(&self) -> f64 {
        (self.unavoidable_wh.iter().sum::<f64>() + self.dropped_wh) / 1000.0
    }
}

/// The program for `days` days of `scenario` from its start with `seed`.
pub fn optimum_input(scenario: &Scenario, seed: u64, days: u32) -> Foresight {
    let start = scenario.start_utc();
    let exo = exogenous_forecast(scenario, seed, start, days);
    let step_s = f64::from(FORECAST_STEP_S);
    let n = exo.pv_available_w.len();
    let end = window_end(&exo, step_s);
    let mut leaves_inside = Vec::with_capacity(exo.sessions.len());
    let mut unavoidable_wh = Vec::with_capacity(exo.sessions.len());
    let mut dropped_wh = 0.0;
    let sessions = exo
        .sessions
        .iter()
        .filter_map(|s| {
            let a = step_index(start, s.arrive, step_s).floor().max(0.0) as usize;
            let d = (step_index(start, s.depart, step_s).ceil().max(0.0) as usize).min(n);
            let wanted = s.wanted_wh.max(0.0);
            if a >= d || wanted <= 0.0 {
                dropped_wh += wanted;
                return None;
            }
            let served = s.deliverable_wh(end).min(wanted);
            leaves_inside.push(s.depart < end);
            unavoidable_wh.push(wanted - served);
            Some(SessionInput {
                arrive_step: a,
                depart_step: d,
                wanted_wh: served,
                max_w: s.max_w,
                keep_up: None,
                present: Some(Presence {
                    arrive_s: (s.arrive - start).num_milliseconds() as f64 / 1000.0,
                    depart_s: (s.depart - start).num_milliseconds() as f64 / 1000.0,
                }),
                taper: Some(Taper {
                    battery_wh: s.battery_wh,
                    soc_pct: s.soc_pct,
                }),
            })
        })
        .collect();
    let values = ObjectiveValues::of(scenario);
    let input = OptimumInput {
        step_s,
        first_step_s: None,
        demand_peak_so_far_w: 0.0,
        next_period: None,
        pv_available_w: exo.pv_available_w.clone(),
        building_w: exo.building_w.clone(),
        sessions,
        battery: battery_input(scenario),
        grid: GridInput {
            import_limit_w: scenario.import_limit_w(),
            export_limit_w: scenario.export_limit_w(),
        },
        tariff: TariffInput {
            import_price_cny_per_kwh: exo.import_price_cny_per_kwh.clone(),
            export_price_cny_per_kwh: scenario.tariff.export_cny_per_kwh,
            demand_charge_cny_per_kw: scenario.tariff.demand_cny_per_kw,
            demand_charge_fraction: None,
        },
        unmet_penalty_cny_per_kwh: values.unmet_cny_per_kwh,
        stored_value_cny_per_kwh: values.stored_cny_per_kwh,
    };
    Foresight {
        input,
        exogenous: exo,
        leaves_inside,
        unavoidable_wh,
        dropped_wh,
    }
}

/// Solve the optimum of `days` days of `scenario` (seed `seed`) and score it.
pub fn optimum_run(scenario: &Scenario, seed: u64, days: u32) -> Result<OptimumRun, OptimumError> {
    let started = crate::clock::monotonic();
    let f = optimum_input(scenario, seed, days);
    let result = solve(&f.input)?;
    let solve_wall = started.elapsed();
    let replay = score_schedule(scenario, &f, &result);
    let unavoidable_kwh = f.unavoidable_unmet_kwh();
    let input = f.input;
    let outcome = RunOutcome {
        unmet_kwh: result.ev_unmet_kwh + unavoidable_kwh,
        stored_change_kwh: (replay.soc_end_pct - input.battery.soc0_pct) / 100.0
            * input.battery.usable_wh
            / 1000.0,
    };
    let objective = Objective::score(&replay.cost_parts, outcome, ObjectiveValues::of(scenario));
    let soc_end_pct = replay.soc_end_pct;
    let spread = (scenario.tariff.export_cny_per_kwh - scenario.lowest_import_price()).max(0.0);
    Ok(OptimumRun {
        netting_bound_cny: result.simultaneous_import_export_kwh * spread,
        kpis: replay.kpis,
        objective,
        result,
        solve_wall,
        soc_start_pct: input.battery.soc0_pct,
        soc_end_pct,
    })
}

/// What replaying a schedule through the simulator's scorecard gave.
struct Replay {
    kpis: Kpis,
    cost_parts: CostParts,
    soc_end_pct: f64,
}

/// Replay the optimal schedule through the simulator's scorecard.
fn score_schedule(scenario: &Scenario, f: &Foresight, result: &OptimumResult) -> Replay {
    let input = &f.input;
    let exo = &f.exogenous;
    let pb = plant_battery(scenario);
    let tz = scenario.tz();
    let mut tracker = KpiTracker::new(
        scenario.import_limit_w(),
        scenario.tariff.export_cny_per_kwh,
        scenario.tariff.demand_cny_per_kw,
        scenario.co2_kg_per_kwh,
    );
    let step_s = input.step_s;
    let start_unix_s = exo.start.timestamp_millis() as f64 / 1000.0;
    let usable = pb.usable_wh;
    let mut soc_pct = pb.soc0_pct;
    let mut solar_wh = 0.0_f64;
    let mut throughput_dc_wh = 0.0_f64;
    let mut cal = pb.cal0;
    let sub_steps = (step_s / AGING_STEP_S).round().max(1.0) as usize;
    let sub_s = step_s / sub_steps as f64;
    let mut soc_outside_s = 0.0;
    for (t, step) in result.schedule.iter().enumerate() {
        let unix_s = start_unix_s + t as f64 * step_s;
        let at = exo.start + chrono::Duration::milliseconds((t as f64 * step_s * 1000.0) as i64);
        let local = at.with_timezone(&tz);
        let month = local.year().max(0) as u32 * 12 + local.month();
        let building_w = input.building_w[t];
        let stored_wh = soc_pct / 100.0 * usable;
        let solar_fraction = if stored_wh > 1e-9 {
            (solar_wh / stored_wh).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let flows = Flows {
            pv_w: step.pv_used_w,
            pv_available_w: input.pv_available_w[t],
            building_w,
            ev_w: step.vehicles_w,
            battery_w: step.battery_w,
            grid_w: step.import_w - step.export_w,
            battery_solar_fraction: solar_fraction,
            import_price: input.tariff.import_price_cny_per_kwh[t],
            soc_outside_window: false,
        };
        tracker.record(step_s, unix_s, month, &flows);
        // Battery bookkeeping, minute by minute as the plant does.
        let h = sub_s / 3600.0;
        let dc_w = if step.battery_w > 0.0 {
            step.battery_w / pb.eff
        } else {
            step.battery_w * pb.eff
        };
        let pv_surplus_w = (step.pv_used_w - building_w - step.vehicles_w).max(0.0);
        for _ in 0..sub_steps {
            let dc_wh = dc_w * h;
            let stored = soc_pct / 100.0 * usable;
            if dc_wh > 0.0 {
                if stored > 1e-9 {
                    solar_wh -= solar_wh / stored * dc_wh;
                }
            } else if dc_wh < 0.0 {
                solar_wh += (-step.battery_w).min(pv_surplus_w) * pb.eff * h;
            }
            soc_pct = (soc_pct - dc_wh / usable * 100.0).clamp(0.0, 100.0);
            solar_wh = solar_wh.clamp(0.0, soc_pct / 100.0 * usable);
            throughput_dc_wh += dc_wh.abs();
            let k = k_cal(pb.ambient_k, soc_pct / 100.0);
            let t_eq_days = if cal > 0.0 && k > 0.0 {
                (cal / k).powf(1.0 / CALENDAR_EXPONENT)
            } else {
                0.0
            };
            cal = k * (t_eq_days + sub_s / 86_400.0).powf(CALENDAR_EXPONENT);
            if soc_pct < pb.soc_min_pct - 1e-6 || soc_pct > pb.soc_max_pct + 1e-6 {
                soc_outside_s += sub_s;
            }
        }
    }
    // The plant counts a session when the car leaves; cars still plugged in at the end of the
    // window are not counted.
    for ((outcome, &inside), &unavoidable) in result
        .sessions
        .iter()
        .zip(&f.leaves_inside)
        .zip(&f.unavoidable_wh)
    {
        if inside {
            tracker.session_ended(outcome.unmet_kwh * 1000.0 + unavoidable);
        }
    }
    let efc = if usable > 0.0 {
        throughput_dc_wh / (2.0 * usable)
    } else {
        0.0
    };
    let q = (1.0 - cal - CYCLE_AGING_A * (pb.efc0 + efc).powf(CYCLE_AGING_B)).clamp(0.0, 1.0);
    let soh_change = 100.0 * q - pb.soh0_pct;
    let p = &scenario.battery;
    let degradation = if p.allowed_soh_loss_pct > 0.0 {
        p.pack_value_cny * (-soh_change).max(0.0) / p.allowed_soh_loss_pct
    } else {
        0.0
    };
    let mut kpis = tracker.kpis(efc, soh_change, degradation);
    kpis.soc_window_violation_s = soc_outside_s;
    Replay {
        kpis,
        cost_parts: tracker.cost_parts(degradation),
        soc_end_pct: soc_pct,
    }
}

fn window_end(exo: &Exogenous, step_s: f64) -> DateTime<Utc> {
    exo.start
        + chrono::Duration::milliseconds(
            (exo.pv_available_w.len() as f64 * step_s * 1000.0).round() as i64,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::run::{run_closed_loop, Uncontrolled};

    fn degradation_cny(sc: &Scenario, k: &Kpis) -> f64 {
        sc.battery.pack_value_cny * (-k.soh_change_pct).max(0.0) / sc.battery.allowed_soh_loss_pct
    }

    #[test]
    fn wear_cost_of_the_reference_pack_is_in_the_range_of_the_reference_station_doc() {
        let w = wear_cost_cny_per_kwh(&Scenario::reference());
        assert!(w > 0.1 && w < 0.3, "{w}");
    }

    #[test]
    fn the_calendar_slope_is_the_simulators_aging_rate_difference_across_the_soc() {
        // Finite difference of the simulator's own equivalent-time step over a tenth of a day.
        let (cal, t_k, soc, dt, ds) = (0.1, 298.15, 0.5, 0.1, 0.02);
        let rate =
            |s: f64| (station_sim::physics::battery::calendar_step(cal, t_k, s, dt) - cal) / dt;
        let difference = (rate(soc + ds) - rate(soc - ds)) / (2.0 * ds);
        let slope = calendar_slope(cal, t_k, soc);
        assert!(
            (slope / difference - 1.0).abs() < 0.02,
            "slope {slope}, difference {difference}"
        );
        // The reference pack: an idle kWh costs a few thousandths of a CNY an hour.
        let c = battery_input(&Scenario::reference()).calendar_cny_per_kwh_h;
        assert!(c > 5e-4 && c < 1e-2, "{c}");
    }

    #[test]
    fn program_uses_the_plant_limits_of_the_scenario() {
        let sc = Scenario::reference();
        let f = optimum_input(&sc, 1, 2);
        let b = &f.input.battery;
        assert_eq!(f.input.steps(), 192);
        assert!((b.usable_wh - 360_000.0).abs() < 1e-6);
        // Window 8..92 % narrowed by 30 mV imbalance, floor raised to SoCRsvMin 10 %.
        assert!((b.soc_min_pct - 10.0).abs() < 1e-9 && (b.soc_max_pct - 92.0).abs() < 1e-9);
        assert_eq!(b.soc0_pct, 50.0);
        assert_eq!(b.max_discharge_w, 120_000.0);
        assert_eq!(f.input.grid.import_limit_w, 150_000.0);
        assert_eq!(f.input.sessions.len(), f.leaves_inside.len());
        assert!(
            f.leaves_inside.iter().any(|&x| x)
                && f.input
                    .sessions
                    .iter()
                    .all(|s| { s.arrive_step < s.depart_step && s.depart_step <= 192 })
        );
        // The cold container of the winter scenario (5 C) halves the BMS charge current.
        let winter = Scenario::from_toml_str("[battery]\nambient_c = 5.0\n").unwrap();
        let w = optimum_input(&winter, 1, 1).input.battery;
        assert!(
            w.max_charge_w < 0.85 * b.max_charge_w,
            "{} vs {}",
            w.max_charge_w,
            b.max_charge_w
        );
    }

    #[test]
    fn idle_battery_ages_in_the_replay_as_in_the_plant() {
        // Without a battery in the program the schedule leaves the pack idle at its start SoC:
        // the replay's calendar aging must match the plant's idle pack (uncontrolled run).
        let sc = Scenario::reference();
        let mut f = optimum_input(&sc, 1, 1);
        f.input.battery = super::super::optimum::BatteryInput::none();
        let result = solve(&f.input).unwrap();
        let Replay {
            kpis,
            soc_end_pct: soc_end,
            ..
        } = score_schedule(&sc, &f, &result);
        assert_eq!(soc_end, 50.0);
        let plant = run_closed_loop(&sc, 1, 1, &mut Uncontrolled, 5.0).unwrap();
        let (a, b) = (kpis.soh_change_pct, plant.kpis.soh_change_pct);
        assert!(
            a < 0.0 && (a - b).abs() < 0.02 * b.abs(),
            "replay {a} plant {b}"
        );
        assert_eq!(kpis.battery_efc, 0.0);
    }

    #[test]
    fn scored_cost_is_the_programs_energy_and_demand_cost_plus_the_plants_degradation() {
        let sc = Scenario::reference();
        let o = optimum_run(&sc, 1, 1).unwrap();
        let r = &o.result;
        let energy_and_demand = r.import_cost_cny - r.export_revenue_cny + r.demand_charge_cny;
        let expected = energy_and_demand + degradation_cny(&sc, &o.kpis);
        // The meter nets the program's simultaneous import and export (valley steps at
        // sunrise, where export pays more than import): each netted kWh loses at most the
        // export price minus the valley price.
        let netting = r.simultaneous_import_export_kwh * (0.39 - 0.30);
        assert!(
            o.kpis.cost >= expected - 0.01 && o.kpis.cost <= expected + netting + 0.01,
            "{} vs {expected}; simultaneous {} kWh; import {} vs {}; export {} vs {}",
            o.kpis.cost,
            r.simultaneous_import_export_kwh,
            o.kpis.grid_import_kwh,
            r.grid_import_kwh,
            o.kpis.grid_export_kwh,
            r.grid_export_kwh,
        );
        let simultaneous = r.simultaneous_import_export_kwh;
        assert!((o.kpis.grid_import_kwh - (r.grid_import_kwh - simultaneous)).abs() < 1e-6);
        assert!((o.kpis.peak_import_kw - r.peak_import_kw).abs() < 1e-6);
        assert!((o.kpis.ev_delivered_kwh - r.ev_delivered_kwh).abs() < 1e-6);
        // The linearised wear of the program is close to the aging law's cycle cost.
        assert!(o.kpis.battery_efc > 0.0);
        assert!((o.objective.cost_cny - o.kpis.cost).abs() < 1e-9);
    }
}

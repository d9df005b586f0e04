//! The planner in the closed loop: [`PlannerHook`] re-plans every clock-aligned quarter and
//! whenever a car plugs in or leaves, and hands the running step's budget to the dispatch core
//! ([`crate::dispatch::DispatchState::set_plan_budget`]), which follows it and still enforces
//! every hard limit each cycle.
//!
//! Forecasts: perfect only (`planner_perfect`): the scenario's realized exogenous processes
//! from the quarter of the plan on (PV, building load, prices, the cars still to come with
//! their energy and dwell). Forecasters a station can run (clear-sky PV, weekday load history,
//! session statistics) are not written yet, so there is no causal `planner` run.
//!
//! Horizon: 48 h, cut at the end of the scored window (the objective charges what the cars
//! still plugged in at the end want, as the optimum is charged; a station has no window end).
//!
//! State carried in, from what the controller sees: the battery's SoC, the month's peak so far
//! as the dispatch core measured it, each plugged car's remaining energy wish and departure
//! (the simulated car's, as a departure-aware session would give them).

use super::foresight::battery_input;
use super::objective::ObjectiveValues;
use super::optimum::GridInput;
use crate::dispatch::{CarBudget, ChargerId, DispatchState, PlanBudget, Policy};
use crate::planner::{
    plan, ExpectedCar, Forecast, PlanBudgets, PlanState, PlannerConfig, PluggedCar, PLAN_STEP_S,
};
use crate::units::Watts;
use chrono::{DateTime, Duration, Utc};
use station_sim::physics::{exogenous_forecast, Exogenous};
use station_sim::scenario::Scenario;
use station_sim::view::StationView;

/// Steps planned ahead: 48 h.
pub const HORIZON_STEPS: usize = 192;

/// Nominal phase voltage the plant's chargers run at, V.
const PHASE_V: f64 = 230.0;

/// Share of a car's power the plan counts on: cars taper near full, so a plan that needs the
/// full power to the last minute leaves energy unserved.
const CAR_POWER_SHARE: f64 = 0.85;

/// The plan aims to finish each car this long before it leaves, s.
const DEPARTURE_MARGIN_S: i64 = 900;

/// Re-plans and the budget of the running step.
#[derive(Debug, Clone)]
pub struct PlannerHook {
    cfg: PlannerConfig,
    exo: Exogenous,
    plan: Option<PlanBudgets>,
    next_plan_at: Option<DateTime<Utc>>,
    plugged: Vec<bool>,
    /// Per charger, the car's session energy when the running step's plan was made, Wh.
    session_wh_at_plan: Vec<f64>,
    /// Wall time of every solve, ms.
    pub solve_ms: Vec<f64>,
    /// Solves that failed (the rule policy ran until the next plan).
    pub failures: u64,
}

impl PlannerHook {
    /// A planner with perfect forecasts for `days` days of `scenario` (seed `seed`).
    /// Its import limit is the policy's import budget (the limit less the margin the dispatch
    /// core keeps for load steps it sees a cycle late), so the plan asks for no more than
    /// dispatch will give.
    pub fn perfect(scenario: &Scenario, policy: &Policy, seed: u64, days: u32) -> Self {
        let values = ObjectiveValues::of(scenario);
        let cfg = PlannerConfig {
            horizon_steps: HORIZON_STEPS,
            battery: battery_input(scenario),
            grid: GridInput {
                import_limit_w: policy.grid.import_budget().0.min(scenario.import_limit_w()),
                export_limit_w: scenario.export_limit_w(),
            },
            export_price_cny_per_kwh: scenario.tariff.export_cny_per_kwh,
            demand_charge_cny_per_kw: scenario.tariff.demand_cny_per_kw,
            demand_charge_fraction: f64::from(days) / 30.0,
            unmet_cny_per_kwh: values.unmet_cny_per_kwh,
            stored_cny_per_kwh: values.stored_cny_per_kwh,
        };
        // The scored window only: the backtest's objective charges every car still plugged in
        // at its end for what it wants, so the plan ends where the window ends (like the
        // optimum), at most `HORIZON_STEPS` ahead. A station has no window end.
        let exo = exogenous_forecast(scenario, seed, scenario.start_utc(), days);
        PlannerHook {
            cfg,
            exo,
            plan: None,
            next_plan_at: None,
            plugged: Vec::new(),
            session_wh_at_plan: Vec::new(),
            solve_ms: Vec::new(),
            failures: 0,
        }
    }

    /// The plan in force, if any.
    pub fn current_plan(&self) -> Option<&PlanBudgets> {
        self.plan.as_ref()
    }

    /// Re-plan when due, then give `state` the running step's budget (none when there is no
    /// plan for now: the rule policy runs).
    pub fn update(&mut self, view: &StationView, state: &mut DispatchState) {
        let now = view.sim_time;
        let plugged: Vec<bool> = view.chargers.iter().map(|c| c.vehicle.is_some()).collect();
        let due = self.next_plan_at.is_none_or(|t| now >= t) || plugged != self.plugged;
        if due {
            self.plugged = plugged;
            self.replan(view, state);
        }
        state.set_plan_budget(self.budget(view));
    }

    fn replan(&mut self, view: &StationView, state: &DispatchState) {
        let now = view.sim_time;
        let quarter = now.timestamp() - now.timestamp().rem_euclid(PLAN_STEP_S);
        let start = DateTime::from_timestamp(quarter, 0).unwrap_or(now);
        self.next_plan_at = Some(start + Duration::seconds(PLAN_STEP_S));
        self.session_wh_at_plan = view
            .chargers
            .iter()
            .map(|c| c.vehicle.as_ref().map_or(0.0, |v| v.session_wh))
            .collect();
        let Some((cfg, forecast)) = self.forecast(start, now) else {
            self.plan = None;
            return;
        };
        let plan_state = PlanState {
            soc_pct: view.battery.soc_pct,
            month_peak_so_far_w: state.demand().month_peak().0,
            plugged: plugged_cars(view),
        };
        let started = crate::clock::monotonic();
        let made = plan(&cfg, &plan_state, &forecast, now);
        self.solve_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        match made {
            Ok(p) => self.plan = Some(p),
            Err(_) => {
                self.failures += 1;
                self.plan = None;
            }
        }
    }

    /// The perfect forecast from the quarter `start`, and the config cut to the steps left.
    fn forecast(
        &self,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(PlannerConfig, Forecast)> {
        let step_s = f64::from(self.exo.step_s);
        let k0 = ((start - self.exo.start).num_seconds() as f64 / step_s).round() as usize;
        let left = self.exo.pv_available_w.len().checked_sub(k0)?;
        let n = self.cfg.horizon_steps.min(left);
        if n == 0 {
            return None;
        }
        let range = k0..k0 + n;
        let window_end = self.exo.start
            + Duration::seconds(i64::from(self.exo.step_s) * self.exo.pv_available_w.len() as i64);
        let mut cfg = self.cfg.clone();
        cfg.horizon_steps = n;
        let arrivals = self
            .exo
            .sessions
            .iter()
            .filter(|s| s.arrive > now && s.arrive < window_end)
            .map(|s| ExpectedCar {
                arrives: s.arrive,
                departs: early(s.arrive, s.depart),
                wanted_wh: s.wanted_wh,
                max_w: s.max_w * CAR_POWER_SHARE,
            })
            .collect();
        let forecast = Forecast {
            start,
            pv_w: self.exo.pv_available_w[range.clone()].to_vec(),
            building_w: self.exo.building_w[range.clone()].to_vec(),
            import_price_cny_per_kwh: self.exo.import_price_cny_per_kwh[range].to_vec(),
            arrivals,
        };
        Some((cfg, forecast))
    }

    /// The running step's budget: the plan's first step, each car's energy less what it got
    /// since the plan was made.
    fn budget(&self, view: &StationView) -> Option<PlanBudget> {
        let step = self.plan.as_ref()?.steps.first()?;
        let chargers = step
            .cars
            .iter()
            .filter_map(|b| {
                let c = view.chargers.get(b.charger)?;
                let v = c.vehicle.as_ref()?;
                let got = v.session_wh
                    - self
                        .session_wh_at_plan
                        .get(b.charger)
                        .copied()
                        .unwrap_or(0.0);
                let car = CarBudget {
                    step_wh: (b.in_step_wh - got).max(0.0),
                    wish_wh: v.wanted_wh,
                    departs: v.departs,
                    max_w: v.onboard_max_a.min(c.rating_a) * f64::from(c.phases) * PHASE_V,
                };
                Some((ChargerId::new(&c.id), car))
            })
            .collect();
        Some(PlanBudget {
            until: step.end,
            import_ceiling: Watts(step.import_ceiling_w),
            battery_soc_target_pct: Some(step.battery_soc_target_pct),
            battery_efficiency: self.cfg.battery.charge_eff,
            chargers,
        })
    }
}

/// The cars plugged in now with what they still want and when they leave.
fn plugged_cars(view: &StationView) -> Vec<PluggedCar> {
    let now = view.sim_time;
    view.chargers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let v = c.vehicle.as_ref()?;
            Some(PluggedCar {
                charger: i,
                wanted_wh: v.wanted_wh,
                departs: early(now, v.departs),
                max_w: v.onboard_max_a.min(c.rating_a)
                    * f64::from(c.phases)
                    * PHASE_V
                    * CAR_POWER_SHARE,
            })
        })
        .collect()
}

/// The departure the plan aims at: [`DEPARTURE_MARGIN_S`] early, but not before `from`'s next
/// step.
fn early(from: DateTime<Utc>, departs: DateTime<Utc>) -> DateTime<Utc> {
    let aimed = departs - Duration::seconds(DEPARTURE_MARGIN_S);
    aimed.max(from + Duration::seconds(PLAN_STEP_S).min(departs - from))
}

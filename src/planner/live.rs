//! From a plan to the running step's budget, the same for the daemon and the backtest.
//!
//! [`running_step`] finds the plan's step that contains `now` (a plan made at 10:07 has a step
//! 10:07-10:15, then 10:15-10:30, ...): a plan that is late to be replaced keeps budgeting its
//! later steps, and one whose last step has ended has expired (`None`: the rule policy runs).
//! [`StepMeter`] remembers each charger's session energy when the running step began, so a
//! car's step budget is what its plan gives the step less what it got in it since.
//! [`budget`] puts them together into the [`PlanBudget`] the dispatch core follows.

use super::{PlanBudgets, StepBudget};
use crate::dispatch::{CarBudget, ChargerId, PlanBudget};
use crate::units::Watts;
use chrono::{DateTime, Utc};

/// A plugged car as the 1 s layer sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct CarNow {
    /// Charger index (the plan's `CarBudget::charger`).
    pub charger: usize,
    pub id: ChargerId,
    /// Energy of the running session so far, Wh.
    pub session_wh: f64,
    /// Energy the car still wants, Wh, and when it leaves.
    pub wish_wh: f64,
    pub departs: DateTime<Utc>,
    /// The car's charging power limit (on-board charger, phases; the charger's rating), W.
    pub max_w: f64,
}

/// The plan's step containing `now` (None: the plan has expired, or starts later).
pub fn running_step(plan: &PlanBudgets, now: DateTime<Utc>) -> Option<&StepBudget> {
    plan.steps.iter().find(|s| s.start <= now && now < s.end)
}

/// Each charger's session energy at the start of the running step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepMeter {
    step: Option<(DateTime<Utc>, DateTime<Utc>)>,
    at_start_wh: Vec<(usize, f64)>,
}

impl StepMeter {
    /// Energy each car got since `step` began, Wh (the step changes: counting restarts).
    pub fn delivered(&mut self, step: &StepBudget, cars: &[CarNow]) -> Vec<(usize, f64)> {
        if self.step != Some((step.start, step.end)) {
            self.step = Some((step.start, step.end));
            self.at_start_wh = cars.iter().map(|c| (c.charger, c.session_wh)).collect();
        }
        cars.iter()
            .map(|c| {
                let start = self
                    .at_start_wh
                    .iter()
                    .find(|(i, _)| *i == c.charger)
                    .map_or(c.session_wh, |(_, wh)| *wh);
                // A car plugged in during the step starts from its own session start.
                let start = if start > c.session_wh { 0.0 } else { start };
                (c.charger, (c.session_wh - start).max(0.0))
            })
            .collect()
    }
}

/// Share of a car's full power for a whole step above which the plan is read as "charge it at
/// full power" (the planners count on 85 % of a car's power).
const FULL_POWER_SHARE: f64 = 0.8;

fn step_hours(step: &StepBudget) -> f64 {
    (step.end - step.start).num_milliseconds() as f64 / 3.6e6
}

/// The budget of the running step of `plan` for the cars plugged in now (None: no step runs).
pub fn budget(
    plan: &PlanBudgets,
    now: DateTime<Utc>,
    cars: &[CarNow],
    meter: &mut StepMeter,
    battery_efficiency: f64,
) -> Option<PlanBudget> {
    let step = running_step(plan, now)?;
    let got = meter.delivered(step, cars);
    let chargers = step
        .cars
        .iter()
        .filter_map(|b| {
            let car = cars.iter().find(|c| c.charger == b.charger)?;
            let got = got
                .iter()
                .find(|(i, _)| *i == b.charger)
                .map_or(0.0, |(_, wh)| *wh);
            // A plan that charges the car near its full power for the step (the program counts
            // on a derated share of it) lets it take its full power: a car held to the derated
            // figure falls behind and meets its taper late.
            let full_wh = car.max_w.max(0.0) * step_hours(step);
            let planned_wh = if b.in_step_wh >= FULL_POWER_SHARE * full_wh {
                full_wh.max(b.in_step_wh)
            } else {
                b.in_step_wh
            };
            Some((
                car.id.clone(),
                CarBudget {
                    step_wh: (planned_wh - got).max(0.0),
                    wish_wh: car.wish_wh,
                    departs: car.departs,
                    max_w: car.max_w,
                },
            ))
        })
        .collect();
    Some(PlanBudget {
        until: step.end,
        import_ceiling: Watts(step.import_ceiling_w),
        planned_import: Some(Watts(step.planned_import_w)),
        planned_export: Some(Watts(step.planned_export_w)),
        battery_soc_target_pct: Some(step.battery_soc_target_pct),
        battery_efficiency,
        chargers,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::planner::CarBudget as PlanCar;
    use chrono::{Duration, TimeZone};

    fn t(m: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 15, 2, 0, 0).unwrap() + Duration::minutes(m)
    }

    fn plan() -> PlanBudgets {
        let step = |a: i64, b: i64, wh: f64| StepBudget {
            start: t(a),
            end: t(b),
            import_ceiling_w: 80_000.0,
            planned_import_w: 50_000.0,
            planned_export_w: 0.0,
            battery_soc_target_pct: 50.0 + a as f64,
            cars: vec![PlanCar {
                charger: 2,
                in_step_wh: wh,
                by_departure_wh: 9_000.0,
            }],
        };
        PlanBudgets {
            made_at: t(7),
            steps: vec![step(7, 15, 2_000.0), step(15, 30, 3_000.0)],
            plugged_unmet_wh: 0.0,
            objective_cny: 1.0,
        }
    }

    fn car(wh: f64) -> CarNow {
        CarNow {
            charger: 2,
            id: ChargerId::new("charger-3"),
            session_wh: wh,
            wish_wh: 9_000.0,
            departs: t(120),
            max_w: 22_080.0,
        }
    }

    #[test]
    fn the_step_containing_now_is_budgeted_less_what_the_car_got_in_it() {
        let p = plan();
        let mut m = StepMeter::default();
        let b = budget(&p, t(8), &[car(100.0)], &mut m, 0.95).unwrap();
        assert_eq!(b.until, t(15));
        assert_eq!(b.chargers[0].1.step_wh, 2_000.0);
        let b = budget(&p, t(12), &[car(1_100.0)], &mut m, 0.95).unwrap();
        assert_eq!(b.chargers[0].1.step_wh, 1_000.0);
        // The next step restarts the count from what the session had at its start.
        let b = budget(&p, t(16), &[car(2_100.0)], &mut m, 0.95).unwrap();
        assert_eq!((b.until, b.chargers[0].1.step_wh), (t(30), 3_000.0));
        assert_eq!(b.battery_soc_target_pct, Some(65.0));
    }

    #[test]
    fn a_plan_near_a_cars_full_power_lets_it_take_its_full_power() {
        // Step 15-30 (0.25 h): 11.04 kW for the whole step is 2760 Wh; the plan's 2346 Wh
        // (85 %) is read as full power, 1000 Wh is followed as it is.
        let mut p = plan();
        let mut c = car(0.0);
        c.max_w = 11_040.0;
        let mut m = StepMeter::default();
        p.steps[1].cars[0].in_step_wh = 2_346.0;
        let b = budget(&p, t(16), &[c.clone()], &mut m, 0.95).unwrap();
        assert!((b.chargers[0].1.step_wh - 2_760.0).abs() < 1e-6);
        p.steps[1].cars[0].in_step_wh = 1_000.0;
        let b = budget(&p, t(16), &[c], &mut m, 0.95).unwrap();
        assert_eq!(b.chargers[0].1.step_wh, 1_000.0);
    }

    #[test]
    fn an_expired_plan_gives_no_budget_and_unplugged_cars_get_none() {
        let p = plan();
        let mut m = StepMeter::default();
        assert!(budget(&p, t(30), &[car(0.0)], &mut m, 0.95).is_none());
        assert!(budget(&p, t(6), &[car(0.0)], &mut m, 0.95).is_none());
        let b = budget(&p, t(20), &[], &mut m, 0.95).unwrap();
        assert!(b.chargers.is_empty());
    }
}

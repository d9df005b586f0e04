//! The one objective every backtest run is scored by, the same one the optimum's linear program
//! minimises at its 15-minute resolution (`docs/reference-station.md`, section Scorecard):
//!
//! ```text
//! total = import cost - export revenue + demand charge + battery wear
//!       + unmet car energy x unmet value
//!       - (stored energy at the end - stored energy at the start) x stored value
//! ```
//!
//! The cost parts are the simulator's (`CostParts`: time-of-use import cost, export revenue,
//! the demand charge prorated per month, degradation by the aging law). Unmet car energy counts
//! every session, the ones still plugged in at the end of the window with what they still want
//! (the plant's `ev_unmet_kwh` counts only cars that left): a controller cannot gain by keeping
//! a car waiting past the end of the window. Stored energy is SoC x usable capacity at the start;
//! crediting its *change* means a controller cannot gain by draining the battery, nor lose by
//! filling it. Both values come from the scenario (`[objective]`, see
//! [`station_sim::scenario::ObjectiveValues`]).

use serde::Serialize;
use station_sim::physics::CostParts;
use station_sim::scenario::Scenario;

/// The two values of the objective that no price list gives, CNY/kWh.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ObjectiveValues {
    /// Charged per kWh of car energy wanted and not delivered.
    pub unmet_cny_per_kwh: f64,
    /// Credited per kWh the battery holds more at the end than at the start.
    pub stored_cny_per_kwh: f64,
}

impl ObjectiveValues {
    /// The values of `scenario` (its `[objective]` section, or their defaults).
    pub fn of(scenario: &Scenario) -> Self {
        ObjectiveValues {
            unmet_cny_per_kwh: scenario.objective.unmet_cny_per_kwh,
            stored_cny_per_kwh: scenario.stored_energy_value_cny_per_kwh(),
        }
    }
}

/// What a run physically did that the objective needs beyond the cost parts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunOutcome {
    /// Car energy wanted and not delivered, departed and still plugged sessions together, kWh.
    pub unmet_kwh: f64,
    /// Energy stored in the battery at the end minus at the start, kWh.
    pub stored_change_kwh: f64,
}

/// One run's objective with its raw parts (all CNY unless the name says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Objective {
    pub import_cny: f64,
    pub export_revenue_cny: f64,
    pub demand_cny: f64,
    pub wear_cny: f64,
    /// import - export revenue + demand + wear: the scorecard's `cost`.
    pub cost_cny: f64,
    pub unmet_kwh: f64,
    /// `unmet_kwh` x the unmet value.
    pub unmet_cny: f64,
    pub stored_change_kwh: f64,
    /// `stored_change_kwh` x the stored value (subtracted from the total).
    pub stored_credit_cny: f64,
    /// cost + unmet - stored credit.
    pub total_cny: f64,
}

impl Objective {
    /// Score a run from its cost parts and outcome.
    pub fn score(parts: &CostParts, outcome: RunOutcome, values: ObjectiveValues) -> Self {
        let cost_cny = parts.total();
        let unmet_cny = outcome.unmet_kwh * values.unmet_cny_per_kwh;
        let stored_credit_cny = outcome.stored_change_kwh * values.stored_cny_per_kwh;
        Objective {
            import_cny: parts.import_cny,
            export_revenue_cny: parts.export_revenue_cny,
            demand_cny: parts.demand_cny,
            wear_cny: parts.degradation_cny,
            cost_cny,
            unmet_kwh: outcome.unmet_kwh,
            unmet_cny,
            stored_change_kwh: outcome.stored_change_kwh,
            stored_credit_cny,
            total_cny: cost_cny + unmet_cny - stored_credit_cny,
        }
    }

    /// Every part with its name, in the order of the fields (for tables).
    pub fn named(&self) -> [(&'static str, f64); 10] {
        [
            ("import_cny", self.import_cny),
            ("export_revenue_cny", self.export_revenue_cny),
            ("demand_cny", self.demand_cny),
            ("wear_cny", self.wear_cny),
            ("cost_cny", self.cost_cny),
            ("unmet_kwh", self.unmet_kwh),
            ("unmet_cny", self.unmet_cny),
            ("stored_change_kwh", self.stored_change_kwh),
            ("stored_credit_cny", self.stored_credit_cny),
            ("total_cny", self.total_cny),
        ]
    }
}

/// (O_uncontrolled - O_controller) / (O_uncontrolled - O_optimum) on the objective's totals;
/// `None` when the optimum is not better than the uncontrolled run by at least a fen.
pub fn savings_captured(uncontrolled: f64, controller: f64, optimum: f64) -> Option<f64> {
    let achievable = uncontrolled - optimum;
    (achievable > 0.01).then(|| (uncontrolled - controller) / achievable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> CostParts {
        CostParts {
            import_cny: 100.0,
            export_revenue_cny: 10.0,
            demand_cny: 5.0,
            degradation_cny: 2.0,
        }
    }

    const VALUES: ObjectiveValues = ObjectiveValues {
        unmet_cny_per_kwh: 20.0,
        stored_cny_per_kwh: 0.3,
    };

    #[test]
    fn the_total_is_the_cost_plus_unmet_energy_minus_the_stored_energy_gained() {
        let outcome = RunOutcome {
            unmet_kwh: 1.5,
            stored_change_kwh: -100.0,
        };
        let o = Objective::score(&parts(), outcome, VALUES);
        assert_eq!(o.cost_cny, 97.0);
        assert_eq!(o.unmet_cny, 30.0);
        assert_eq!(o.stored_credit_cny, -30.0);
        assert_eq!(o.total_cny, 97.0 + 30.0 + 30.0);
    }

    #[test]
    fn draining_the_battery_costs_what_refilling_it_would() {
        // Discharging 100 stored kWh into a 1.10 CNY peak saves 110 CNY of import, and the
        // objective takes back 100 x 0.3 for the emptier battery.
        let mut drained = parts();
        drained.import_cny -= 110.0;
        let outcome = RunOutcome {
            unmet_kwh: 0.0,
            stored_change_kwh: -100.0,
        };
        let o = Objective::score(&drained, outcome, VALUES);
        assert!((o.total_cny - (97.0 - 110.0 + 30.0)).abs() < 1e-9);
    }

    #[test]
    fn savings_captured_is_the_share_of_the_gap_to_the_optimum_closed() {
        assert_eq!(savings_captured(200.0, 150.0, 100.0), Some(0.5));
        assert_eq!(savings_captured(200.0, 200.0, 199.995), None);
    }

    #[test]
    fn the_reference_scenario_values_stored_energy_at_the_valley_price_over_efficiency() {
        let v = ObjectiveValues::of(&Scenario::reference());
        let eff = Scenario::reference().battery.efficiency;
        assert!((v.stored_cny_per_kwh - 0.30 / eff).abs() < 1e-12);
        assert_eq!(v.unmet_cny_per_kwh, 20.0);
    }
}

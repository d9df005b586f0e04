//! Backtesting: replaying recorded or synthetic days against controllers and benchmarks.

pub mod cli;
pub mod faults;
pub mod foresight;
pub mod objective;
pub mod optimum;
pub mod planned;
pub mod plant_io;
pub mod run;

#[cfg(test)]
mod tests {
    use crate::dispatch::Policy;
    use chrono::NaiveTime;
    use station_sim::scenario::Scenario;

    /// The controller's reference tariff (`RawTariff::default`, the policy's one source) and the
    /// simulator's reference scenario are written independently; a backtest of the default
    /// policy scores it against the scenario's prices, so they must be the same tariff.
    #[test]
    fn the_default_policy_prices_energy_like_the_reference_scenario() {
        let policy = Policy::default();
        let scenario = Scenario::reference();
        for minute in 0..1440u16 {
            let t = NaiveTime::from_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 30)
                .unwrap();
            assert_eq!(
                policy.tariff.price_at(minute),
                scenario.import_price_at(t),
                "import price at minute {minute}"
            );
        }
        assert_eq!(
            policy.tariff.export_price_cny_per_kwh,
            scenario.tariff.export_cny_per_kwh
        );
        assert_eq!(
            policy.tariff.demand_charge_cny_per_kw,
            scenario.tariff.demand_cny_per_kw
        );
    }
}

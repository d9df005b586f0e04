//! Deterministic synthetic inputs for the perfect-foresight optimum, shaped like the reference
//! station, for tests and benchmarks. Test crates take it as `support::fixtures`; a bench
//! includes the file on its own: `#[path = "../tests/support/fixtures.rs"] mod fixtures;`.

use station_controller::backtest::optimum::{
    BatteryInput, GridInput, OptimumInput, SessionInput, TariffInput, DEFAULT_STEP_S,
};

/// Deterministic SplitMix64 stream for [`synthetic_reference_window`].
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A deterministic synthetic window of `days` days at 15-minute steps shaped like the reference
/// dealer station (for benchmarks and tests): 135 kW PV bell curve 06:00-18:00 scaled by a fixed
/// weather pattern, building 15 kW at night and 45-70 kW in business hours with workshop steps,
/// 20 sessions a day of 1-8 h at 22 kW (about 12 kWh each, capped by dwell), the 360 kWh / 120 kW
/// battery, 150 kW import and 100 kW export limits, the reference time-of-use tariff, 0.39 CNY/kWh
/// export, 40 CNY/kW monthly demand charge and 5 CNY/kWh unmet penalty. `seed` varies the
/// sessions and workshop steps.
pub(crate) fn synthetic_reference_window(days: usize, seed: u64) -> OptimumInput {
    const STEPS_PER_DAY: usize = 96;
    const WEATHER: [f64; 7] = [1.0, 0.62, 0.91, 0.33, 0.97, 0.78, 0.88];
    let n = days * STEPS_PER_DAY;
    let mut rng = SplitMix64(seed);
    let mut pv_available_w = Vec::with_capacity(n);
    let mut building_w = Vec::with_capacity(n);
    let mut import_price_cny_per_kwh = Vec::with_capacity(n);
    let mut sessions = Vec::new();
    let tariff = station_controller::dispatch::Policy::default().tariff;
    for day in 0..days {
        let weather = WEATHER[day % WEATHER.len()];
        let weekend = day % 7 >= 5;
        for q in 0..STEPS_PER_DAY {
            let hour = (q as f64 + 0.5) / 4.0;
            let pv = if (6.0..18.0).contains(&hour) {
                let x = std::f64::consts::PI * (hour - 6.0) / 12.0;
                135_000.0 * weather * x.sin().powf(1.3)
            } else {
                0.0
            };
            let business = (8.0..19.0).contains(&hour);
            let base = if !business {
                15_000.0
            } else if weekend {
                35_000.0
            } else {
                45_000.0 + 25_000.0 * (std::f64::consts::PI * (hour - 8.0) / 11.0).sin()
            };
            let workshop = if business && !weekend && rng.unit() < 0.3 {
                10_000.0 + 10_000.0 * rng.unit()
            } else {
                0.0
            };
            pv_available_w.push(pv);
            building_w.push(base + workshop);
            // The reference tariff: the default policy's, the one source of it.
            import_price_cny_per_kwh.push(tariff.price_at((hour * 60.0) as u16));
        }
        for k in 0..20 {
            let day_start = day * STEPS_PER_DAY;
            // Staff cars in the morning, customers through the day, a few evening demo cars.
            let (arrive_q, dwell_steps) = match k {
                0..=5 => (
                    30 + (rng.unit() * 8.0) as usize,
                    28 + (rng.unit() * 5.0) as usize,
                ),
                6..=16 => (
                    36 + (rng.unit() * 40.0) as usize,
                    4 + (rng.unit() * 12.0) as usize,
                ),
                _ => (
                    72 + (rng.unit() * 12.0) as usize,
                    16 + (rng.unit() * 16.0) as usize,
                ),
            };
            let arrive_step = day_start + arrive_q;
            let depart_step = (arrive_step + dwell_steps).min(n);
            if depart_step <= arrive_step {
                continue;
            }
            let max_w = 22_000.0;
            let dwell_h = (depart_step - arrive_step) as f64 * 0.25;
            // Exponential-like heavy tail with mean about 12 kWh.
            let wanted = -12_000.0 * (1.0 - rng.unit()).ln();
            let wanted_wh = wanted.min(0.8 * dwell_h * max_w).min(60_000.0);
            sessions.push(SessionInput {
                arrive_step,
                depart_step,
                wanted_wh,
                max_w,
                keep_up: None,
                present: None,
                taper: None,
            });
        }
    }
    OptimumInput {
        step_s: DEFAULT_STEP_S,
        first_step_s: None,
        demand_peak_so_far_w: 0.0,
        next_period: None,
        pv_available_w,
        building_w,
        sessions,
        battery: BatteryInput {
            usable_wh: 360_000.0,
            soc0_pct: 50.0,
            soc_min_pct: 10.0,
            soc_max_pct: 90.0,
            max_charge_w: 120_000.0,
            max_discharge_w: 120_000.0,
            charge_eff: 0.95,
            discharge_eff: 0.95,
            wear_cost_cny_per_kwh_discharged: 0.15,
            calendar_cny_per_kwh_h: 0.0,
        },
        grid: GridInput {
            import_limit_w: 150_000.0,
            export_limit_w: 100_000.0,
        },
        tariff: TariffInput {
            import_price_cny_per_kwh,
            export_price_cny_per_kwh: 0.39,
            demand_charge_cny_per_kw: 40.0,
            demand_charge_fraction: None,
        },
        unmet_penalty_cny_per_kwh: 5.0,
        stored_value_cny_per_kwh: 0.30 / 0.95,
    }
}

//! The running scorecard: every KPI as `docs/reference-station.md` (section Scorecard) defines it.
//!
//! Choices (documented here because the scorecard leaves them open):
//! * Peak import = highest 15-minute average import over UTC-aligned quarter hours (energy in
//!   the quarter / 0.25 h; the running quarter counts with what it has so far).
//! * Demand charge: per local calendar month, rate x that month's peak x (simulated time in the
//!   month / 30 days), i.e. prorated so that a one-day run pays one thirtieth.
//! * Battery degradation cost = pack value x SoH points lost / allowed SoH loss.
//! * "Via the battery" counts only the PV-charged share of the battery's energy (its solar
//!   fraction), for self-sufficiency and for the EV green share alike.
//! * CO2 avoided = (site load - grid import) x emission factor.
//! * Sessions fully served: departed sessions with less than 0.1 kWh unmet; 0 when none left yet.

use serde::Serialize;

/// The scorecard since the start of the run.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Kpis {
    pub pv_kwh: f64,
    pub pv_curtailed_kwh: f64,
    pub self_consumption_pct: f64,
    pub self_sufficiency_pct: f64,
    pub grid_import_kwh: f64,
    pub grid_export_kwh: f64,
    pub peak_import_kw: f64,
    pub import_limit_exceeded_s: f64,
    pub import_limit_exceeded_kwh: f64,
    pub ev_delivered_kwh: f64,
    pub ev_unmet_kwh: f64,
    pub ev_sessions_fully_served_pct: f64,
    pub ev_green_share_pct: f64,
    pub battery_efc: f64,
    pub soh_change_pct: f64,
    pub cost: f64,
    pub co2_kg: f64,
    pub co2_avoided_kg: f64,
    pub soc_window_violation_s: f64,
}

/// Every scorecard key, in the order of the fields of [`Kpis`] (and of its JSON object): the
/// one list for anything that prints, checks or compares scorecards.
pub const KPI_KEYS: [&str; 19] = [
    "pv_kwh",
    "pv_curtailed_kwh",
    "self_consumption_pct",
    "self_sufficiency_pct",
    "grid_import_kwh",
    "grid_export_kwh",
    "peak_import_kw",
    "import_limit_exceeded_s",
    "import_limit_exceeded_kwh",
    "ev_delivered_kwh",
    "ev_unmet_kwh",
    "ev_sessions_fully_served_pct",
    "ev_green_share_pct",
    "battery_efc",
    "soh_change_pct",
    "cost",
    "co2_kg",
    "co2_avoided_kg",
    "soc_window_violation_s",
];

impl Kpis {
    /// Every key with its value, in [`KPI_KEYS`] order (for tables and reports).
    pub fn named(&self) -> [(&'static str, f64); 19] {
        [
            ("pv_kwh", self.pv_kwh),
            ("pv_curtailed_kwh", self.pv_curtailed_kwh),
            ("self_consumption_pct", self.self_consumption_pct),
            ("self_sufficiency_pct", self.self_sufficiency_pct),
            ("grid_import_kwh", self.grid_import_kwh),
            ("grid_export_kwh", self.grid_export_kwh),
            ("peak_import_kw", self.peak_import_kw),
            ("import_limit_exceeded_s", self.import_limit_exceeded_s),
            ("import_limit_exceeded_kwh", self.import_limit_exceeded_kwh),
            ("ev_delivered_kwh", self.ev_delivered_kwh),
            ("ev_unmet_kwh", self.ev_unmet_kwh),
            (
                "ev_sessions_fully_served_pct",
                self.ev_sessions_fully_served_pct,
            ),
            ("ev_green_share_pct", self.ev_green_share_pct),
            ("battery_efc", self.battery_efc),
            ("soh_change_pct", self.soh_change_pct),
            ("cost", self.cost),
            ("co2_kg", self.co2_kg),
            ("co2_avoided_kg", self.co2_avoided_kg),
            ("soc_window_violation_s", self.soc_window_violation_s),
        ]
    }
}

/// The parts of the scorecard's `cost` since the start, CNY.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct CostParts {
    /// Import energy at the time-of-use price.
    pub import_cny: f64,
    /// Export revenue (subtracted in the cost).
    pub export_revenue_cny: f64,
    /// Demand charge, prorated per month.
    pub demand_cny: f64,
    /// Battery degradation: pack value x SoH points lost / allowed loss.
    pub degradation_cny: f64,
}

impl CostParts {
    /// import - export revenue + demand + degradation: the scorecard's `cost`.
    pub fn total(&self) -> f64 {
        self.import_cny - self.export_revenue_cny + self.demand_cny + self.degradation_cny
    }
}

/// Power flows during one sub-step (all W, sign convention of the project).
#[derive(Clone, Copy, Debug, Default)]
pub struct Flows {
    pub pv_w: f64,
    pub pv_available_w: f64,
    pub building_w: f64,
    pub ev_w: f64,
    pub battery_w: f64,
    pub grid_w: f64,
    pub battery_solar_fraction: f64,
    pub import_price: f64,
    pub soc_outside_window: bool,
}

/// Session served threshold, Wh.
const FULLY_SERVED_TOLERANCE_WH: f64 = 100.0;
const MONTH_S: f64 = 30.0 * 86_400.0;

#[derive(Clone, Debug)]
pub struct KpiTracker {
    import_limit_w: f64,
    export_price: f64,
    demand_rate: f64,
    co2_factor: f64,
    pv_wh: f64,
    curtailed_wh: f64,
    pv_to_grid_wh: f64,
    load_wh: f64,
    green_load_wh: f64,
    import_wh: f64,
    export_wh: f64,
    import_cost: f64,
    export_revenue: f64,
    quarter: i64,
    quarter_wh: f64,
    peak_import_w: f64,
    exceeded_s: f64,
    exceeded_wh: f64,
    ev_wh: f64,
    ev_green_wh: f64,
    unmet_wh: f64,
    sessions: u64,
    sessions_full: u64,
    soc_violation_s: f64,
    month: u32,
    month_peak_w: f64,
    month_s: f64,
    demand_closed: f64,
}

impl KpiTracker {
    pub fn new(import_limit_w: f64, export_price: f64, demand_rate: f64, co2_factor: f64) -> Self {
        KpiTracker {
            import_limit_w,
            export_price,
            demand_rate,
            co2_factor,
            pv_wh: 0.0,
            curtailed_wh: 0.0,
            pv_to_grid_wh: 0.0,
            load_wh: 0.0,
            green_load_wh: 0.0,
            import_wh: 0.0,
            export_wh: 0.0,
            import_cost: 0.0,
            export_revenue: 0.0,
            quarter: i64::MIN,
            quarter_wh: 0.0,
            peak_import_w: 0.0,
            exceeded_s: 0.0,
            exceeded_wh: 0.0,
            ev_wh: 0.0,
            ev_green_wh: 0.0,
            unmet_wh: 0.0,
            sessions: 0,
            sessions_full: 0,
            soc_violation_s: 0.0,
            month: u32::MAX,
            month_peak_w: 0.0,
            month_s: 0.0,
            demand_closed: 0.0,
        }
    }

    /// Account one sub-step of `dt_s` starting at unix time `unix_s`, in local month `month`
    /// (any key that changes when the billing month changes).
    pub fn record(&mut self, dt_s: f64, unix_s: f64, month: u32, f: &Flows) {
        let h = dt_s / 3600.0;
        self.pv_wh += f.pv_w * h;
        self.curtailed_wh += (f.pv_available_w - f.pv_w).max(0.0) * h;
        let import_w = f.grid_w.max(0.0);
        let export_w = (-f.grid_w).max(0.0);
        self.pv_to_grid_wh += export_w.min(f.pv_w) * h;
        let load_w = f.building_w + f.ev_w;
        let pv_direct = f.pv_w.min(load_w);
        let batt_to_load = f.battery_w.max(0.0).min(load_w - pv_direct);
        let green_w = pv_direct + batt_to_load * f.battery_solar_fraction;
        let green_share = if load_w > 1e-9 { green_w / load_w } else { 0.0 };
        self.load_wh += load_w * h;
        self.green_load_wh += green_w * h;
        self.ev_wh += f.ev_w * h;
        self.ev_green_wh += f.ev_w * green_share * h;
        self.import_wh += import_w * h;
        self.export_wh += export_w * h;
        self.import_cost += import_w * h / 1000.0 * f.import_price;
        self.export_revenue += export_w * h / 1000.0 * self.export_price;
        if f.grid_w > self.import_limit_w {
            self.exceeded_s += dt_s;
            self.exceeded_wh += (f.grid_w - self.import_limit_w) * h;
        }
        if f.soc_outside_window {
            self.soc_violation_s += dt_s;
        }
        let q = (unix_s / 900.0).floor() as i64;
        if q != self.quarter {
            self.quarter = q;
            self.quarter_wh = 0.0;
        }
        self.quarter_wh += f.grid_w * h;
        let avg_w = (self.quarter_wh * 4.0).max(0.0);
        if month != self.month {
            self.close_month();
            self.month = month;
        }
        self.month_s += dt_s;
        self.month_peak_w = self.month_peak_w.max(avg_w);
        self.peak_import_w = self.peak_import_w.max(avg_w);
    }

    fn close_month(&mut self) {
        self.demand_closed += self.demand_cost(self.month_peak_w, self.month_s);
        self.month_peak_w = 0.0;
        self.month_s = 0.0;
    }

    fn demand_cost(&self, peak_w: f64, covered_s: f64) -> f64 {
        self.demand_rate * peak_w / 1000.0 * covered_s / MONTH_S
    }

    /// A session ended with `delivered_wh` and `unmet_wh` still wanted.
    pub fn session_ended(&mut self, unmet_wh: f64) {
        self.sessions += 1;
        self.unmet_wh += unmet_wh;
        if unmet_wh < FULLY_SERVED_TOLERANCE_WH {
            self.sessions_full += 1;
        }
    }

    /// The parts of the cost now; `degradation_cost` comes from the plant.
    pub fn cost_parts(&self, degradation_cost: f64) -> CostParts {
        CostParts {
            import_cny: self.import_cost,
            export_revenue_cny: self.export_revenue,
            demand_cny: self.demand_closed + self.demand_cost(self.month_peak_w, self.month_s),
            degradation_cny: degradation_cost,
        }
    }

    /// The scorecard now; `degradation_cost` and the battery figures come from the plant.
    pub fn kpis(&self, battery_efc: f64, soh_change_pct: f64, degradation_cost: f64) -> Kpis {
        let pct = |a: f64, b: f64| if b > 1e-9 { 100.0 * a / b } else { 0.0 };
        Kpis {
            pv_kwh: self.pv_wh / 1000.0,
            pv_curtailed_kwh: self.curtailed_wh / 1000.0,
            self_consumption_pct: pct(self.pv_wh - self.pv_to_grid_wh, self.pv_wh),
            self_sufficiency_pct: pct(self.green_load_wh, self.load_wh),
            grid_import_kwh: self.import_wh / 1000.0,
            grid_export_kwh: self.export_wh / 1000.0,
            peak_import_kw: self.peak_import_w / 1000.0,
            import_limit_exceeded_s: self.exceeded_s,
            import_limit_exceeded_kwh: self.exceeded_wh / 1000.0,
            ev_delivered_kwh: self.ev_wh / 1000.0,
            ev_unmet_kwh: self.unmet_wh / 1000.0,
            ev_sessions_fully_served_pct: pct(self.sessions_full as f64, self.sessions as f64),
            ev_green_share_pct: pct(self.ev_green_wh, self.ev_wh),
            battery_efc,
            soh_change_pct,
            cost: self.cost_parts(degradation_cost).total(),
            co2_kg: self.import_wh / 1000.0 * self.co2_factor,
            co2_avoided_kg: (self.load_wh - self.import_wh) / 1000.0 * self.co2_factor,
            soc_window_violation_s: self.soc_violation_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpi_keys_are_exactly_the_fields_of_the_scorecard_in_order() {
        let value = serde_json::to_value(Kpis::default()).unwrap();
        let mut fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let named: Vec<&str> = Kpis::default().named().iter().map(|(k, _)| *k).collect();
        assert_eq!(named, KPI_KEYS);
        let mut keys = KPI_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys);
        // Field order: serde_json's Map sorts, so check it with the Debug rendering instead.
        let debug = format!("{:?}", Kpis::default());
        let positions: Vec<usize> = KPI_KEYS
            .iter()
            .map(|k| debug.find(&format!(" {k}: ")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{debug}");
    }
}

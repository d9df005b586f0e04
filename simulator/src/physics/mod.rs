//! Pure plant physics of the station: no I/O, no clock reads, stepped by `dt`.
//!
//! Exogenous processes (weather, building load, vehicle arrivals) run on their own seeded RNG
//! streams and never depend on control, so [`exogenous_forecast`] gives a perfect-foresight
//! planner exactly what a [`Plant`] run will see.

pub mod battery;
pub mod charger;
pub mod exo;
pub mod kpi;
pub mod plant;
pub mod pv;
pub mod solar;
pub mod vehicles;

pub use kpi::{CostParts, Kpis, KPI_KEYS};
pub use plant::{Plant, PlugError};
pub use vehicles::{VehicleKind, VehicleSpec};

use crate::scenario::{ChargerParams, Scenario};
use chrono::{DateTime, Duration, Utc};
use exo::{ExoModel, NOMINAL_V};
use serde::Serialize;

/// Length of a forecast step, s.
pub const FORECAST_STEP_S: u32 = 900;

/// A charging session known in advance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionForecast {
    /// 0-based charger index.
    pub charger: usize,
    pub kind: VehicleKind,
    pub arrive: DateTime<Utc>,
    pub depart: DateTime<Utc>,
    /// Energy wanted at the charger, Wh.
    pub wanted_wh: f64,
    /// Highest power the car can draw on that charger, W (before tapering).
    pub max_w: f64,
    /// The car's battery, Wh, and its state of charge at `arrive` (or now, for a car plugged
    /// in now), %: with [`vehicles::deliverable_wh`] they bound what any controller can serve.
    pub battery_wh: f64,
    pub soc_pct: f64,
}

impl SessionForecast {
    /// The most energy the car can take from `from` (no earlier than its arrival) to `until`
    /// (no later than its departure), tapering near full, Wh.
    pub fn deliverable_wh(&self, until: DateTime<Utc>) -> f64 {
        let end = until.min(self.depart);
        let seconds = (end - self.arrive).num_milliseconds() as f64 / 1000.0;
        let target = self.soc_pct + self.wanted_wh / self.battery_wh.max(1.0) * 100.0;
        vehicles::deliverable_wh(self.battery_wh, self.soc_pct, target, self.max_w, seconds)
    }
}

/// The exogenous processes over a horizon, in 15-minute steps from `start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exogenous {
    pub start: DateTime<Utc>,
    pub step_s: u32,
    /// Mean PV power available (AC, before any limit) per step, W.
    pub pv_available_w: Vec<f64>,
    /// Mean building load per step, W.
    pub building_w: Vec<f64>,
    /// Mean import price per step, CNY/kWh.
    pub import_price_cny_per_kwh: Vec<f64>,
    /// Sessions that get a charger, in arrival order.
    pub sessions: Vec<SessionForecast>,
}

/// Run the exogenous processes alone for `days` days from `start` (as a plant built with
/// [`Plant::with_start`] at `start` with the same seed would see them).
pub fn exogenous_forecast(
    scenario: &Scenario,
    seed: u64,
    start: DateTime<Utc>,
    days: u32,
) -> Exogenous {
    forecast_from(
        ExoModel::new(scenario, seed, start),
        0.0,
        days,
        &scenario.chargers,
    )
}

pub(crate) fn forecast_from(
    mut exo: ExoModel,
    from_s: f64,
    days: u32,
    chargers: &ChargerParams,
) -> Exogenous {
    let steps = days as usize * 86_400 / FORECAST_STEP_S as usize;
    let step = f64::from(FORECAST_STEP_S);
    let mut out = Exogenous {
        start: exo.epoch() + Duration::milliseconds((from_s * 1000.0).round() as i64),
        step_s: FORECAST_STEP_S,
        pv_available_w: Vec::with_capacity(steps),
        building_w: Vec::with_capacity(steps),
        import_price_cny_per_kwh: Vec::with_capacity(steps),
        sessions: Vec::new(),
    };
    let epoch = exo.epoch();
    let at = |t_s: f64| epoch + Duration::milliseconds((t_s * 1000.0).round() as i64);
    for k in 0..steps {
        let a = from_s + k as f64 * step;
        let b = a + step;
        let (mut pv, mut bl, mut pr) = (0.0, 0.0, 0.0);
        let mut t = a;
        while t < b {
            exo.advance_to(t);
            let e = b.min(exo.minute_end_s());
            let e = if e <= t { b } else { e };
            let w = e - t;
            pv += exo.pv_available_w() * w;
            bl += exo.building_w() * w;
            pr += exo.import_price() * w;
            t = e;
        }
        out.pv_available_w.push(pv / step);
        out.building_w.push(bl / step);
        out.import_price_cny_per_kwh.push(pr / step);
        // Arrivals strictly before the end of this step.
        while let Some((c, arr)) = exo.pop_arrival(b - 1e-6) {
            let max_w = arr.onboard_a.min(chargers.rating_a)
                * f64::from(arr.phases.min(chargers.phases))
                * NOMINAL_V;
            out.sessions.push(SessionForecast {
                charger: c,
                kind: arr.kind,
                arrive: at(arr.t_s),
                depart: at(arr.depart_s),
                wanted_wh: (arr.target_soc_pct - arr.soc_pct) / 100.0 * arr.battery_wh,
                max_w,
                battery_wh: arr.battery_wh,
                soc_pct: arr.soc_pct,
            });
        }
    }
    out
}

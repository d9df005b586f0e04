//! Perfect-foresight optimum: the linear program that gives the theoretical lower bound on the
//! cost of running a station over a window.
//!
//! Every real controller is scored against this number ("C_optimum" in the scorecard): the
//! program knows the realized PV, building load, vehicle arrivals and departures and prices for
//! the whole window in advance and dispatches grid, battery, PV curtailment and vehicle charging
//! to minimise cost under the same plant limits the controller faces.
//!
//! # Model (all powers are step averages, in kW inside the program)
//!
//! Per step `t` of length `dt` hours (all steps equal, except that the first may be shorter:
//! [`OptimumInput::first_step_s`]):
//! - `import_t in [0, import_limit]`, `export_t in [0, export_limit]` (no variable at all when the
//!   export limit is 0), `pv_used_t in [0, pv_available_t]` (the rest is curtailed),
//!   `charge_t in [0, max_charge]`, `discharge_t in [0, max_discharge]`, stored energy
//!   `e_t in [soc_min, soc_max] x usable`, and per vehicle session present at `t` a charging
//!   power `v_{s,t} in [0, max_w_s x present_{s,t}]` (sessions have variables only while
//!   present, so a car is never charged before it arrives or after it leaves; `present` is the
//!   share of the step the car is plugged in for, 1 without [`SessionInput::present`]). A
//!   session with a [`Taper`] also has, in each step it could be above the knee in,
//!   `v_{s,t} <= max_w_s x ((1 - soc_{s,t}) / (1 - knee) + 0.1)` with `soc_{s,t}` its SoC at the
//!   step's start (linear in what it got before).
//! - Balance: `pv_used + import + discharge = building + sum_s v_{s,t} + charge + export`.
//! - Battery: `e_t = e_{t-1} + charge_eff * charge_t * dt - discharge_t * dt / discharge_eff`,
//!   `e_{-1} = soc0 x usable`. The end energy is free: instead of a constraint `e_end >= e_{-1}`
//!   the objective credits `(e_end - e_{-1}) x stored_value_cny_per_kwh`, exactly as the
//!   backtest's scorecard scores every controller (`super::objective`). A constraint would make
//!   the program no relaxation of the controllers (a controller may end emptier than it started,
//!   so it could score below the "bound"); the credit prices the energy taken from or left in
//!   the battery the same way for every run, so draining pays only where it pays more than the
//!   stored value.
//! - Sessions: `sum_t v_{s,t} dt + unmet_s = wanted_s`, `unmet_s >= 0` is penalised with
//!   `unmet_penalty_cny_per_kwh` (high, so cars are served whenever the limits allow it).
//! - Demand charge: one peak variable `peak >= import_t` for all `t` and `peak >=` the peak
//!   already billed in the period ([`OptimumInput::demand_peak_so_far_w`], so only a new peak
//!   costs), charged
//!   `demand_charge_cny_per_kw x demand_charge_fraction x peak`. The tariff charges the monthly
//!   peak; a window shorter than a month pays the prorated share `window days / 30` by default
//!   ([`TariffInput::demand_charge_fraction`] overrides it). A window that crosses into the
//!   next billing period ([`OptimumInput::next_period`], a plan near the month's end) has a
//!   second peak variable for the steps from then on, starting from zero, at that period's
//!   share.
//! - Import limit: a step whose building load alone exceeds `import_limit + pv_available` cannot
//!   be served within the limit (the battery cannot be relied on, it may be empty). Only such
//!   steps get a slack `over_t >= 0` that imports above the limit at a very high penalty; its
//!   energy is reported as [`OptimumResult::import_limit_infeasible_kwh`]. Every other step
//!   always has a feasible dispatch (serve the building from PV and grid, leave cars unmet),
//!   so the program is always feasible.
//!
//! Objective: the sum of import cost, minus export revenue, plus demand charge, battery wear
//! (per kWh discharged, and per kWh kept stored per hour for calendar aging:
//! [`BatteryInput::calendar_cny_per_kwh_h`]), unmet penalty and import-limit slack penalty,
//! minus the stored-energy credit, plus tie-breaking terms far
//! below a fen (a tiny cost on battery throughput so the battery never charges and discharges at
//! once to burn surplus, and a tiny preference for charging cars early among equally priced
//! steps). The reported [`OptimumResult::cost_cny`] is recomputed from the schedule and contains
//! neither penalty nor tie-breakers: import energy cost - export revenue + demand charge + wear;
//! [`OptimumResult::objective_cny`] adds the unmet penalty and subtracts the stored-energy credit
//! (the program's objective without slack, tie-breakers and the calendar term, which only
//! ranks schedules: the backtest scores their aging by the simulator's law).
//!
//! # Limitation: simultaneous import and export
//! Import and export are separate non-negative variables. When the export price is higher than
//! the import price of a step, a linear program can import and export at the same time for a
//! fictitious gain (a meter only sees the net flow); excluding that exactly needs integer
//! variables; left alone, the program would be a relaxation, still a lower bound but a loose
//! one. To keep the artefact small, in such steps export is capped at the PV surplus over
//! the building (`max(0, pv_available - building)`): this removes the night-time "import at the
//! valley price, export at the feed-in price" loop at the grid limits, at the price of also
//! forbidding battery export in those steps (which never pays more than exporting the same energy
//! in another step). [`OptimumResult::simultaneous_import_export_kwh`] reports what remains
//! (0 whenever every import price is at least the export price).

use good_lp::{microlp, variable, Expression, ProblemVariables, Solution, SolverModel, Variable};
use serde::{Deserialize, Serialize};
use station_sim::physics::vehicles::{TAPER_FLOOR, TAPER_KNEE};

/// The usual step of the backtest: 15 minutes, the metering interval of the demand charge.
pub const DEFAULT_STEP_S: f64 = 900.0;

/// Days in the demand-charge billing month used to prorate the demand charge to a window.
pub const DEMAND_CHARGE_MONTH_DAYS: f64 = 30.0;

/// Penalty (CNY/kWh) on energy imported above the import limit in steps where the limit cannot
/// be held; added to ten times the unmet penalty so breaching the limit is always worse than
/// leaving a car unserved.
const IMPORT_SLACK_BASE_PENALTY_CNY_PER_KWH: f64 = 1000.0;

/// Tie-breaking cost on every kWh through the battery (charge and discharge), CNY/kWh.
const BATTERY_THROUGHPUT_TIE_BREAK_CNY_PER_KWH: f64 = 1e-5;

/// Tie-breaking cost on vehicle energy at the last step of the window, CNY/kWh (linear in time).
const LATE_CHARGING_TIE_BREAK_CNY_PER_KWH: f64 = 1e-6;

/// Values below this (kW or kWh) are solver noise and are reported as 0.
const NOISE: f64 = 1e-7;

/// One vehicle session: the car is plugged in for steps `arrive_step..depart_step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInput {
    /// First step the car is present.
    pub arrive_step: usize,
    /// First step the car is gone (exclusive end), at most the number of steps.
    pub depart_step: usize,
    /// Energy the car wants during the session, Wh.
    pub wanted_wh: f64,
    /// Charging power limit (charger and on-board charger), W.
    pub max_w: f64,
    /// A floor on the session's progress (the planner's; the optimum has none).
    #[serde(default)]
    pub keep_up: Option<KeepUp>,
    /// When the car is really present, s from the start of step 0 (None: the whole of its
    /// first and last steps). In a step it is present for only part of, it gets at most its
    /// power for that part.
    #[serde(default)]
    pub present: Option<Presence>,
    /// The car's battery, for its taper above the knee (None: no taper).
    #[serde(default)]
    pub taper: Option<Taper>,
}

/// When a car arrives and leaves, s from the start of step 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub arrive_s: f64,
    pub depart_s: f64,
}

/// A car's battery: above the knee ([`station_sim::physics::vehicles::TAPER_KNEE`]) its
/// current falls as `I_max x clamp((1 - soc) / (1 - knee), 0.1, 1)`. The program bounds each
/// step's power by that limit at the SoC the car has at the step's start, with the floor
/// added rather than taken as a maximum (`(1 - soc) / (1 - knee) + 0.1`): above the true
/// limit everywhere below full, so the program stays a relaxation of the car.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Taper {
    pub battery_wh: f64,
    /// State of charge at arrival, %.
    pub soc_pct: f64,
}

/// A floor on a session's progress: at the end of every step, what the car still wants fits
/// before `departs_s` at `power_w`. The dispatch core overrides a plan that falls behind this
/// (it charges the car harder at once, whatever the plan's import ceiling), so a plan that
/// counts on charging a car late must not fall behind it either, or the override sets a demand
/// peak the plan never chose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KeepUp {
    /// Power the rest of the session can count on, W.
    pub power_w: f64,
    /// When the car stops counting on it, s from the start of step 0 (its departure less the
    /// dispatch core's margin, [`crate::dispatch::LATE_MARGIN_H`]).
    pub departs_s: f64,
}

/// The stationary battery behind its PCS. `usable_wh = 0` means no battery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatteryInput {
    /// Usable capacity (nameplate x SoH), Wh.
    pub usable_wh: f64,
    /// State of charge at the start of the window, % of usable; must lie in the SoC window.
    pub soc0_pct: f64,
    /// Lowest allowed state of charge, %.
    pub soc_min_pct: f64,
    /// Highest allowed state of charge, %.
    pub soc_max_pct: f64,
    /// AC charge power limit, W.
    pub max_charge_w: f64,
    /// AC discharge power limit, W.
    pub max_discharge_w: f64,
    /// Share of AC charge energy that ends up stored, in (0, 1].
    pub charge_eff: f64,
    /// Share of stored energy delivered as AC on discharge, in (0, 1].
    pub discharge_eff: f64,
    /// Degradation cost per AC kWh discharged, CNY/kWh.
    pub wear_cost_cny_per_kwh_discharged: f64,
    /// What a kWh kept stored costs per hour in calendar aging, CNY/(kWh h): the slope of the
    /// aging cost in the state of charge (a fuller pack ages faster). The program charges
    /// `calendar x e_t x dt` per step, so among plans of equal cost it keeps the pack emptier
    /// while idle; the aging at the window's floor is the same for every plan and left out.
    #[serde(default)]
    pub calendar_cny_per_kwh_h: f64,
}

impl BatteryInput {
    /// A station without a battery.
    pub fn none() -> Self {
        Self {
            usable_wh: 0.0,
            soc0_pct: 0.0,
            soc_min_pct: 0.0,
            soc_max_pct: 100.0,
            max_charge_w: 0.0,
            max_discharge_w: 0.0,
            charge_eff: 1.0,
            discharge_eff: 1.0,
            wear_cost_cny_per_kwh_discharged: 0.0,
            calendar_cny_per_kwh_h: 0.0,
        }
    }
}

/// The grid connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridInput {
    /// Contracted import limit, W (15-minute average).
    pub import_limit_w: f64,
    /// Export limit, W; 0 means zero export.
    pub export_limit_w: f64,
}

/// Prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TariffInput {
    /// Import energy price per step, CNY/kWh (one entry per step).
    pub import_price_cny_per_kwh: Vec<f64>,
    /// Export (feed-in) price, CNY/kWh.
    pub export_price_cny_per_kwh: f64,
    /// Demand charge per kW of the monthly peak step-average import, CNY/kW.
    pub demand_charge_cny_per_kw: f64,
    /// Share of the monthly demand charge this window pays. `None` = window days / 30
    /// (see [`OptimumInput::effective_demand_charge_fraction`]).
    pub demand_charge_fraction: Option<f64>,
}

/// Everything the perfect-foresight program knows, in SI units, one entry per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimumInput {
    /// Step length, s (normally [`DEFAULT_STEP_S`]).
    pub step_s: f64,
    /// Length of the first step when it is shorter (a plan made inside a clock-aligned
    /// quarter covers the rest of it), s, in (0, `step_s`]; `None`: `step_s`.
    #[serde(default)]
    pub first_step_s: Option<f64>,
    /// The highest step-average import already billed in this demand-charge period, W: the
    /// demand charge applies only to a peak above it (0 for a window that starts the period).
    #[serde(default)]
    pub demand_peak_so_far_w: f64,
    /// Steps billed in the next demand-charge period (a plan whose horizon crosses the end of
    /// the month); `None`: the whole window is one period.
    #[serde(default)]
    pub next_period: Option<NextPeriod>,
    /// Realized PV power available each step (before curtailment), W.
    pub pv_available_w: Vec<f64>,
    /// Building load each step, W.
    pub building_w: Vec<f64>,
    /// Vehicle sessions in the window.
    pub sessions: Vec<SessionInput>,
    /// The stationary battery.
    pub battery: BatteryInput,
    /// The grid connection.
    pub grid: GridInput,
    /// Prices.
    pub tariff: TariffInput,
    /// Penalty on vehicle energy wanted but not delivered, CNY/kWh (e.g. 5).
    pub unmet_penalty_cny_per_kwh: f64,
    /// Credit per kWh stored at the end of the window beyond the start (a charge per kWh
    /// below it), CNY/kWh; 0 leaves the end energy without value.
    #[serde(default)]
    pub stored_value_cny_per_kwh: f64,
}

/// The steps of a window that fall in the next demand-charge period: their peak starts from
/// zero (the month's peak so far is the period before's) and pays its own share of the
/// monthly charge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NextPeriod {
    /// First step of the next period, in 1..steps.
    pub first_step: usize,
    /// Share of the monthly demand charge a peak of the next period pays.
    pub demand_charge_fraction: f64,
}

impl OptimumInput {
    /// Number of steps in the window.
    pub fn steps(&self) -> usize {
        self.pv_available_w.len()
    }

    /// Length of step `t`, s.
    pub fn step_len_s(&self, t: usize) -> f64 {
        match (t, self.first_step_s) {
            (0, Some(first)) => first,
            _ => self.step_s,
        }
    }

    /// Window length, days.
    pub fn window_days(&self) -> f64 {
        (0..self.steps()).map(|t| self.step_len_s(t)).sum::<f64>() / 86_400.0
    }

    /// The demand-charge share this window pays: the explicit fraction, or window days / 30.
    pub fn effective_demand_charge_fraction(&self) -> f64 {
        self.tariff
            .demand_charge_fraction
            .unwrap_or_else(|| self.window_days() / DEMAND_CHARGE_MONTH_DAYS)
    }
}

/// The optimal dispatch of one step (step averages).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSchedule {
    /// Grid import, W (includes any import above the limit in infeasible steps).
    pub import_w: f64,
    /// Grid export, W.
    pub export_w: f64,
    /// Battery AC power, W, > 0 discharge, < 0 charge.
    pub battery_w: f64,
    /// All vehicles together, W.
    pub vehicles_w: f64,
    /// PV power used (available minus curtailed), W.
    pub pv_used_w: f64,
    /// Battery state of charge at the end of the step, % of usable (0 without battery).
    pub soc_pct: f64,
}

/// Energy delivered to one session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionOutcome {
    /// Energy delivered, kWh.
    pub delivered_kwh: f64,
    /// Energy wanted but not delivered, kWh.
    pub unmet_kwh: f64,
    /// Energy delivered in each step the car is present, (step, kWh).
    pub per_step_kwh: Vec<(usize, f64)>,
}

/// The optimum and its scorecard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimumResult {
    /// Import energy cost - export revenue + demand charge + wear cost, CNY (no unmet penalty).
    pub cost_cny: f64,
    /// `cost_cny` + unmet energy x unmet penalty - stored change x stored value, CNY.
    pub objective_cny: f64,
    /// Energy stored at the end minus at the start, kWh (0 without battery).
    pub stored_change_kwh: f64,
    /// Import energy cost, CNY.
    pub import_cost_cny: f64,
    /// Export revenue, CNY.
    pub export_revenue_cny: f64,
    /// Prorated demand charge, CNY.
    pub demand_charge_cny: f64,
    /// Battery wear cost, CNY.
    pub wear_cost_cny: f64,
    /// Highest step-average import, kW.
    pub peak_import_kw: f64,
    /// Grid import, kWh.
    pub grid_import_kwh: f64,
    /// Grid export, kWh.
    pub grid_export_kwh: f64,
    /// PV energy used (produced), kWh.
    pub pv_used_kwh: f64,
    /// PV energy available but curtailed, kWh.
    pub pv_curtailed_kwh: f64,
    /// Energy delivered to vehicles, kWh.
    pub ev_delivered_kwh: f64,
    /// Energy wanted by vehicles but not delivered, kWh.
    pub ev_unmet_kwh: f64,
    /// Battery AC energy discharged, kWh.
    pub battery_discharged_kwh: f64,
    /// Equivalent full cycles: energy discharged / usable capacity (0 without battery).
    pub battery_efc: f64,
    /// PV used on site (PV produced - export) / PV produced, % (0 when no PV was produced).
    pub self_consumption_pct: f64,
    /// Site load (building + vehicles) not served by grid import / site load, %
    /// (grid energy stored in the battery counts as grid; 0 when there is no load).
    pub self_sufficiency_pct: f64,
    /// Energy imported above the import limit in steps where the building alone exceeds the
    /// limit plus PV, kWh (0 whenever the limit can be held).
    pub import_limit_infeasible_kwh: f64,
    /// Sum over steps of min(import, export), kWh: the relaxation artefact described in the
    /// module documentation (0 whenever export never pays more than import).
    pub simultaneous_import_export_kwh: f64,
    /// Per session, in input order.
    pub sessions: Vec<SessionOutcome>,
    /// Per step, in input order.
    pub schedule: Vec<StepSchedule>,
}

/// Why no optimum could be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimumError {
    /// A field is out of its domain; `field` names it (e.g. `sessions[3].depart_step`).
    #[error("{field}: {reason}")]
    InvalidInput {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A per-step vector does not have one entry per step.
    #[error(
        "{field}: has {actual} entries, expected {expected} (one per step, as pv_available_w)"
    )]
    LengthMismatch {
        /// Name of the vector.
        field: &'static str,
        /// Number of steps (length of `pv_available_w`).
        expected: usize,
        /// Its length.
        actual: usize,
    },
    /// The LP solver failed (should not happen: the program is always feasible and bounded).
    #[error("LP solver failed: {0}")]
    Solver(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> OptimumError {
    OptimumError::InvalidInput {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_finite(field: &str, value: f64) -> Result<(), OptimumError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(invalid(field, "not a finite number"))
    }
}

fn check_non_negative(field: &str, value: f64) -> Result<(), OptimumError> {
    check_finite(field, value)?;
    if value < 0.0 {
        return Err(invalid(field, format!("negative ({value})")));
    }
    Ok(())
}

fn check_pct(field: &str, value: f64) -> Result<(), OptimumError> {
    check_finite(field, value)?;
    if !(0.0..=100.0).contains(&value) {
        return Err(invalid(field, format!("outside 0..=100 % ({value})")));
    }
    Ok(())
}

fn check_efficiency(field: &str, value: f64) -> Result<(), OptimumError> {
    check_finite(field, value)?;
    if value <= 0.0 || value > 1.0 {
        return Err(invalid(field, format!("outside (0, 1] ({value})")));
    }
    Ok(())
}

/// Checks every field; the error names the first offending one.
pub fn validate(input: &OptimumInput) -> Result<(), OptimumError> {
    let n = validate_steps(input)?;
    validate_sessions(input, n)?;
    validate_battery(&input.battery)?;
    check_non_negative("grid.import_limit_w", input.grid.import_limit_w)?;
    check_non_negative("grid.export_limit_w", input.grid.export_limit_w)?;
    check_finite(
        "tariff.export_price_cny_per_kwh",
        input.tariff.export_price_cny_per_kwh,
    )?;
    check_non_negative(
        "tariff.demand_charge_cny_per_kw",
        input.tariff.demand_charge_cny_per_kw,
    )?;
    if let Some(f) = input.tariff.demand_charge_fraction {
        check_non_negative("tariff.demand_charge_fraction", f)?;
    }
    check_non_negative("unmet_penalty_cny_per_kwh", input.unmet_penalty_cny_per_kwh)?;
    check_non_negative("stored_value_cny_per_kwh", input.stored_value_cny_per_kwh)?;
    Ok(())
}

/// The window's steps: their length, count, per-step series and the next period; returns the
/// number of steps.
fn validate_steps(input: &OptimumInput) -> Result<usize, OptimumError> {
    check_finite("step_s", input.step_s)?;
    if input.step_s <= 0.0 {
        return Err(invalid(
            "step_s",
            format!("not positive ({})", input.step_s),
        ));
    }
    if let Some(first) = input.first_step_s {
        check_finite("first_step_s", first)?;
        if first <= 0.0 || first > input.step_s {
            return Err(invalid(
                "first_step_s",
                format!("outside (0, step_s] ({first})"),
            ));
        }
    }
    check_non_negative("demand_peak_so_far_w", input.demand_peak_so_far_w)?;
    let n = input.pv_available_w.len();
    if n == 0 {
        return Err(invalid("pv_available_w", "empty: the window has no steps"));
    }
    if let Some(next) = input.next_period {
        check_non_negative(
            "next_period.demand_charge_fraction",
            next.demand_charge_fraction,
        )?;
        if next.first_step == 0 || next.first_step >= n {
            return Err(invalid(
                "next_period.first_step",
                format!("outside 1..{n} ({})", next.first_step),
            ));
        }
    }
    for (field, len) in [
        ("building_w", input.building_w.len()),
        (
            "tariff.import_price_cny_per_kwh",
            input.tariff.import_price_cny_per_kwh.len(),
        ),
    ] {
        if len != n {
            return Err(OptimumError::LengthMismatch {
                field,
                expected: n,
                actual: len,
            });
        }
    }
    for (t, &w) in input.pv_available_w.iter().enumerate() {
        check_non_negative(&format!("pv_available_w[{t}]"), w)?;
    }
    for (t, &w) in input.building_w.iter().enumerate() {
        check_non_negative(&format!("building_w[{t}]"), w)?;
    }
    for (t, &p) in input.tariff.import_price_cny_per_kwh.iter().enumerate() {
        check_finite(&format!("tariff.import_price_cny_per_kwh[{t}]"), p)?;
    }
    Ok(n)
}

fn validate_sessions(input: &OptimumInput, n: usize) -> Result<(), OptimumError> {
    for (i, s) in input.sessions.iter().enumerate() {
        if s.depart_step < s.arrive_step {
            return Err(invalid(
                format!("sessions[{i}].depart_step"),
                "before arrive_step",
            ));
        }
        if s.depart_step == s.arrive_step {
            return Err(invalid(
                format!("sessions[{i}].depart_step"),
                "equal to arrive_step (the car is never present)",
            ));
        }
        if s.depart_step > n {
            return Err(invalid(
                format!("sessions[{i}].depart_step"),
                format!(
                    "after the end of the window ({} > {n} steps)",
                    s.depart_step
                ),
            ));
        }
        check_non_negative(&format!("sessions[{i}].wanted_wh"), s.wanted_wh)?;
        check_non_negative(&format!("sessions[{i}].max_w"), s.max_w)?;
        validate_car(s, i)?;
    }
    Ok(())
}

/// A session's presence and taper, when given.
fn validate_car(s: &SessionInput, i: usize) -> Result<(), OptimumError> {
    if let Some(p) = s.present {
        check_finite(&format!("sessions[{i}].present.arrive_s"), p.arrive_s)?;
        check_finite(&format!("sessions[{i}].present.depart_s"), p.depart_s)?;
        if p.depart_s <= p.arrive_s {
            return Err(invalid(
                format!("sessions[{i}].present.depart_s"),
                format!("not after arrive_s ({} <= {})", p.depart_s, p.arrive_s),
            ));
        }
    }
    if let Some(t) = s.taper {
        check_non_negative(&format!("sessions[{i}].taper.battery_wh"), t.battery_wh)?;
        check_pct(&format!("sessions[{i}].taper.soc_pct"), t.soc_pct)?;
    }
    Ok(())
}

fn validate_battery(b: &BatteryInput) -> Result<(), OptimumError> {
    check_non_negative("battery.usable_wh", b.usable_wh)?;
    check_pct("battery.soc_min_pct", b.soc_min_pct)?;
    check_pct("battery.soc_max_pct", b.soc_max_pct)?;
    check_pct("battery.soc0_pct", b.soc0_pct)?;
    if b.soc_min_pct > b.soc_max_pct {
        return Err(invalid("battery.soc_min_pct", "above soc_max_pct"));
    }
    if b.usable_wh > 0.0 && !(b.soc_min_pct..=b.soc_max_pct).contains(&b.soc0_pct) {
        return Err(invalid(
            "battery.soc0_pct",
            format!(
                "outside the SoC window {}..={} %",
                b.soc_min_pct, b.soc_max_pct
            ),
        ));
    }
    check_non_negative("battery.max_charge_w", b.max_charge_w)?;
    check_non_negative("battery.max_discharge_w", b.max_discharge_w)?;
    check_efficiency("battery.charge_eff", b.charge_eff)?;
    check_efficiency("battery.discharge_eff", b.discharge_eff)?;
    check_non_negative(
        "battery.wear_cost_cny_per_kwh_discharged",
        b.wear_cost_cny_per_kwh_discharged,
    )?;
    check_non_negative("battery.calendar_cny_per_kwh_h", b.calendar_cny_per_kwh_h)?;
    Ok(())
}

/// Battery variables of one step.
struct BatteryStep {
    charge: Variable,
    discharge: Variable,
    energy: Variable,
}

/// Variables of one step.
struct StepVars {
    import: Variable,
    over_limit: Option<Variable>,
    export: Option<Variable>,
    pv_used: Option<Variable>,
    battery: Option<BatteryStep>,
    /// Charging power variables of the sessions present at this step.
    vehicles: Vec<Variable>,
}

/// Variables of one session.
struct SessionVars {
    /// (step, power variable) while present.
    power: Vec<(usize, Variable)>,
    unmet: Option<Variable>,
}

fn clean(x: f64) -> f64 {
    if x.abs() < NOISE {
        0.0
    } else {
        x
    }
}

/// Solves the perfect-foresight program for `input` (see the module documentation).
pub fn solve(input: &OptimumInput) -> Result<OptimumResult, OptimumError> {
    validate(input)?;
    let sc = Scale::of(input);
    let mut vars = ProblemVariables::new();
    let mut objective = Expression::with_capacity(8 * sc.n + input.sessions.len() * 16);
    let mut steps: Vec<StepVars> = (0..sc.n)
        .map(|t| step_variables(input, &sc, t, &mut vars, &mut objective))
        .collect();
    let sessions: Vec<SessionVars> = input
        .sessions
        .iter()
        .map(|s| session_variables(s, &sc, &mut steps, &mut vars, &mut objective))
        .collect();
    if let Some(last) = steps.last().and_then(|s| s.battery.as_ref()) {
        objective.add_mul(-input.stored_value_cny_per_kwh, last.energy);
    }
    let peak = (sc.demand_cny_per_kw > 0.0).then(|| {
        let p = vars.add(variable().min(kw(input.demand_peak_so_far_w)));
        objective.add_mul(sc.demand_cny_per_kw, p);
        p
    });
    let next_peak = (sc.next_demand_cny_per_kw > 0.0).then(|| {
        let p = vars.add(variable().min(0.0));
        objective.add_mul(sc.next_demand_cny_per_kw, p);
        p
    });
    let mut model = vars.minimise(objective).using(microlp);
    for (t, step) in steps.iter().enumerate() {
        let peak = if t < sc.next_first { peak } else { next_peak };
        step_constraints(&mut model, input, &sc, &steps, t, step, peak);
    }
    end_constraints(&mut model, input, &sc, &sessions);
    let solution = model
        .solve()
        .map_err(|e| OptimumError::Solver(e.to_string()))?;
    Ok(score(input, &sc, &steps, &sessions, &solution))
}

/// The window's sizes and prices in the program's units (kW, kWh, h).
struct Scale {
    n: usize,
    dt_h: f64,
    dt0_h: f64,
    has_battery: bool,
    usable_kwh: f64,
    e0_kwh: f64,
    import_limit_kw: f64,
    export_limit_kw: f64,
    demand_cny_per_kw: f64,
    /// First step of the next demand-charge period (`n` without one) and its charge per kW.
    next_first: usize,
    next_demand_cny_per_kw: f64,
    slack_penalty: f64,
    unmet_penalty: f64,
    stored_value: f64,
}

fn kw(w: f64) -> f64 {
    w / 1000.0
}

impl Scale {
    /// Length of step `t`, h.
    fn dt(&self, t: usize) -> f64 {
        if t == 0 {
            self.dt0_h
        } else {
            self.dt_h
        }
    }

    /// End of step `t`, h from the start of step 0.
    fn end_h(&self, t: usize) -> f64 {
        self.dt0_h + t as f64 * self.dt_h
    }

    /// Share of step `t` that session `s` is present for (1 without [`Presence`]).
    fn present_share(&self, s: &SessionInput, t: usize) -> f64 {
        let Some(p) = s.present else {
            return 1.0;
        };
        let (end, dt) = (self.end_h(t), self.dt(t));
        let overlap = (end.min(p.depart_s / 3600.0) - (end - dt).max(p.arrive_s / 3600.0)).max(0.0);
        (overlap / dt).clamp(0.0, 1.0)
    }

    fn of(input: &OptimumInput) -> Scale {
        let b = &input.battery;
        let usable_kwh = kw(b.usable_wh);
        Scale {
            n: input.steps(),
            dt_h: input.step_s / 3600.0,
            dt0_h: input.step_len_s(0) / 3600.0,
            has_battery: b.usable_wh > 0.0 && (b.max_charge_w > 0.0 || b.max_discharge_w > 0.0),
            usable_kwh,
            e0_kwh: usable_kwh * b.soc0_pct / 100.0,
            import_limit_kw: kw(input.grid.import_limit_w),
            export_limit_kw: kw(input.grid.export_limit_w),
            demand_cny_per_kw: input.tariff.demand_charge_cny_per_kw
                * input.effective_demand_charge_fraction(),
            next_first: input.next_period.map_or(input.steps(), |p| p.first_step),
            next_demand_cny_per_kw: input.next_period.map_or(0.0, |p| {
                input.tariff.demand_charge_cny_per_kw * p.demand_charge_fraction
            }),
            slack_penalty: IMPORT_SLACK_BASE_PENALTY_CNY_PER_KWH
                + 10.0 * input.unmet_penalty_cny_per_kwh,
            unmet_penalty: input.unmet_penalty_cny_per_kwh,
            stored_value: input.stored_value_cny_per_kwh,
        }
    }
}

/// The variables of step `t` (grid, PV, battery) and their costs.
fn step_variables(
    input: &OptimumInput,
    sc: &Scale,
    t: usize,
    vars: &mut ProblemVariables,
    objective: &mut Expression,
) -> StepVars {
    let dt_h = sc.dt(t);
    let price = input.tariff.import_price_cny_per_kwh[t];
    let pv_kw = kw(input.pv_available_w[t]);
    let building_kw = kw(input.building_w[t]);
    let import = vars.add(variable().min(0.0).max(sc.import_limit_kw));
    objective.add_mul(price * dt_h, import);
    let over_limit = (building_kw > sc.import_limit_kw + pv_kw).then(|| {
        let v = vars.add(variable().min(0.0));
        objective.add_mul((price + sc.slack_penalty) * dt_h, v);
        v
    });
    // Where export pays more than import, cap export at the PV surplus over the building
    // so the relaxation cannot import and export at the limits for a fictitious gain.
    let export_cap_kw = if input.tariff.export_price_cny_per_kwh > price {
        sc.export_limit_kw.min((pv_kw - building_kw).max(0.0))
    } else {
        sc.export_limit_kw
    };
    let export = (export_cap_kw > 0.0).then(|| {
        let v = vars.add(variable().min(0.0).max(export_cap_kw));
        objective.add_mul(-input.tariff.export_price_cny_per_kwh * dt_h, v);
        v
    });
    let pv_used = (pv_kw > 0.0).then(|| vars.add(variable().min(0.0).max(pv_kw)));
    let battery = sc
        .has_battery
        .then(|| battery_variables(&input.battery, sc, t, vars, objective));
    StepVars {
        import,
        over_limit,
        export,
        pv_used,
        battery,
        vehicles: Vec::new(),
    }
}

fn battery_variables(
    b: &BatteryInput,
    sc: &Scale,
    t: usize,
    vars: &mut ProblemVariables,
    objective: &mut Expression,
) -> BatteryStep {
    let charge = vars.add(variable().min(0.0).max(kw(b.max_charge_w)));
    let discharge = vars.add(variable().min(0.0).max(kw(b.max_discharge_w)));
    let energy = vars.add(
        variable()
            .min(sc.usable_kwh * b.soc_min_pct / 100.0)
            .max(sc.usable_kwh * b.soc_max_pct / 100.0),
    );
    objective.add_mul(BATTERY_THROUGHPUT_TIE_BREAK_CNY_PER_KWH * sc.dt(t), charge);
    objective.add_mul(b.calendar_cny_per_kwh_h * sc.dt(t), energy);
    objective.add_mul(
        (b.wear_cost_cny_per_kwh_discharged + BATTERY_THROUGHPUT_TIE_BREAK_CNY_PER_KWH) * sc.dt(t),
        discharge,
    );
    BatteryStep {
        charge,
        discharge,
        energy,
    }
}

/// A session's charging power while present, and its unmet energy with its penalty.
fn session_variables(
    s: &SessionInput,
    sc: &Scale,
    steps: &mut [StepVars],
    vars: &mut ProblemVariables,
    objective: &mut Expression,
) -> SessionVars {
    let wanted_kwh = kw(s.wanted_wh);
    let max_kw = kw(s.max_w);
    let mut power = Vec::new();
    if wanted_kwh > 0.0 && max_kw > 0.0 {
        for (t, step) in steps
            .iter_mut()
            .enumerate()
            .take(s.depart_step)
            .skip(s.arrive_step)
        {
            let v = vars.add(variable().min(0.0).max(max_kw * sc.present_share(s, t)));
            let late = LATE_CHARGING_TIE_BREAK_CNY_PER_KWH * t as f64 / sc.n as f64;
            objective.add_mul(late * sc.dt(t), v);
            step.vehicles.push(v);
            power.push((t, v));
        }
    }
    let unmet = (wanted_kwh > 0.0).then(|| {
        let u = vars.add(variable().min(0.0).max(wanted_kwh));
        objective.add_mul(sc.unmet_penalty, u);
        u
    });
    SessionVars { power, unmet }
}

/// Step `t`'s power balance, stored-energy continuity and demand peak.
fn step_constraints(
    model: &mut impl SolverModel,
    input: &OptimumInput,
    sc: &Scale,
    steps: &[StepVars],
    t: usize,
    step: &StepVars,
    peak: Option<Variable>,
) {
    // Supply - demand = building.
    let mut balance = Expression::with_capacity(8 + step.vehicles.len());
    balance.add_mul(1.0, step.import);
    if let Some(v) = step.over_limit {
        balance.add_mul(1.0, v);
    }
    if let Some(v) = step.pv_used {
        balance.add_mul(1.0, v);
    }
    if let Some(v) = step.export {
        balance.add_mul(-1.0, v);
    }
    if let Some(bs) = &step.battery {
        balance.add_mul(1.0, bs.discharge);
        balance.add_mul(-1.0, bs.charge);
    }
    for &v in &step.vehicles {
        balance.add_mul(-1.0, v);
    }
    model.add_constraint(balance.eq(kw(input.building_w[t])));

    if let Some(bs) = &step.battery {
        // e_t - e_{t-1} - eta_c dt charge + dt / eta_d discharge = 0
        let b = &input.battery;
        let mut soc = Expression::with_capacity(4);
        soc.add_mul(1.0, bs.energy);
        soc.add_mul(-b.charge_eff * sc.dt(t), bs.charge);
        soc.add_mul(sc.dt(t) / b.discharge_eff, bs.discharge);
        let previous = match t.checked_sub(1).and_then(|p| steps[p].battery.as_ref()) {
            Some(prev) => {
                soc.add_mul(-1.0, prev.energy);
                0.0
            }
            None => sc.e0_kwh,
        };
        model.add_constraint(soc.eq(previous));
    }

    if let Some(p) = peak {
        let mut above = Expression::with_capacity(3);
        above.add_mul(1.0, step.import);
        if let Some(v) = step.over_limit {
            above.add_mul(1.0, v);
        }
        above.add_mul(-1.0, p);
        model.add_constraint(above.leq(0.0));
    }
}

/// Each session's energy is delivered or unmet.
fn end_constraints(
    model: &mut impl SolverModel,
    input: &OptimumInput,
    sc: &Scale,
    sessions: &[SessionVars],
) {
    for (s, sv) in input.sessions.iter().zip(sessions) {
        if let Some(u) = sv.unmet {
            let mut energy = Expression::with_capacity(sv.power.len() + 1);
            for &(t, v) in &sv.power {
                energy.add_mul(sc.dt(t), v);
            }
            energy.add_mul(1.0, u);
            model.add_constraint(energy.eq(kw(s.wanted_wh)));
            if let Some(taper) = s.taper {
                taper_constraints(model, sc, s, taper, sv);
            }
            if let Some(k) = s.keep_up {
                keep_up_constraints(model, sc, s, k, sv, u);
            }
        }
    }
}

/// In each step the car could be above the knee in, its power stays under the taper's limit
/// at the SoC it has at the step's start (see [`Taper`]):
/// `v_t <= max x ((1 - soc0 - delivered_before_t / battery) / (1 - knee) + 0.1)`.
fn taper_constraints(
    model: &mut impl SolverModel,
    sc: &Scale,
    s: &SessionInput,
    taper: Taper,
    sv: &SessionVars,
) {
    let battery_kwh = kw(taper.battery_wh);
    let max_kw = kw(s.max_w);
    if battery_kwh <= 0.0 || max_kw <= 0.0 {
        return;
    }
    let (knee, soc0) = (TAPER_KNEE, taper.soc_pct / 100.0);
    let slope = max_kw / (battery_kwh * (1.0 - knee));
    let cap = max_kw * ((1.0 - soc0) / (1.0 - knee) + TAPER_FLOOR);
    let mut before = Expression::with_capacity(sv.power.len());
    let mut most_before_kwh: f64 = 0.0;
    for &(t, v) in &sv.power {
        // Redundant with `v <= max` while the car cannot yet be past the point where the
        // bound drops below its power.
        let soc_most = soc0 + most_before_kwh.min(kw(s.wanted_wh)) / battery_kwh;
        if (1.0 - soc_most) / (1.0 - knee) + TAPER_FLOOR < 1.0 {
            // v + slope x delivered_before <= cap
            let mut c = before.clone();
            c.add_mul(1.0, v);
            model.add_constraint(c.leq(cap));
        }
        before.add_mul(slope * sc.dt(t), v);
        most_before_kwh += max_kw * sc.present_share(s, t) * sc.dt(t);
    }
}

/// At the end of each of the session's steps: delivered + unmet >= wanted - what the rest of
/// the session can still deliver at the keep-up power (see [`KeepUp`]).
fn keep_up_constraints(
    model: &mut impl SolverModel,
    sc: &Scale,
    s: &SessionInput,
    k: KeepUp,
    sv: &SessionVars,
    unmet: Variable,
) {
    let mut delivered = Expression::with_capacity(sv.power.len() + 1);
    delivered.add_mul(1.0, unmet);
    // The most the program can deliver by each step's end: a guard the car is already behind
    // asks for that, not for unmet energy.
    let mut deliverable_kwh = 0.0;
    for &(t, v) in &sv.power {
        delivered.add_mul(sc.dt(t), v);
        deliverable_kwh += sc.dt(t) * kw(s.max_w) * sc.present_share(s, t);
        let end_h = sc.end_h(t);
        let after_h = (k.departs_s / 3600.0 - end_h).max(0.0);
        let floor_kwh = (kw(s.wanted_wh) - kw(k.power_w.max(0.0)) * after_h).min(deliverable_kwh);
        if floor_kwh > 0.0 {
            model.add_constraint(delivered.clone().geq(floor_kwh));
        }
    }
}

/// Running sums of the schedule, kWh and CNY.
#[derive(Default)]
struct Sums {
    import_cost_cny: f64,
    export_revenue_cny: f64,
    wear_cost_cny: f64,
    peak_import_kw: f64,
    /// Peak of the steps in the next demand-charge period.
    next_peak_import_kw: f64,
    grid_import_kwh: f64,
    grid_export_kwh: f64,
    pv_used_kwh: f64,
    pv_available_kwh: f64,
    battery_discharged_kwh: f64,
    import_limit_infeasible_kwh: f64,
    simultaneous_import_export_kwh: f64,
    building_kwh: f64,
}

/// Read the schedule out of the solution and score it.
fn score(
    input: &OptimumInput,
    sc: &Scale,
    steps: &[StepVars],
    sessions: &[SessionVars],
    solution: &impl Solution,
) -> OptimumResult {
    let value = |v: Variable| clean(solution.value(v)).max(0.0);
    let session_outcomes: Vec<SessionOutcome> = input
        .sessions
        .iter()
        .zip(sessions)
        .map(|(s, sv)| {
            let per_step_kwh: Vec<(usize, f64)> = sv
                .power
                .iter()
                .map(|&(t, v)| (t, value(v) * sc.dt(t)))
                .collect();
            let delivered_kwh: f64 = per_step_kwh.iter().map(|&(_, e)| e).sum();
            SessionOutcome {
                delivered_kwh,
                unmet_kwh: clean((kw(s.wanted_wh) - delivered_kwh).max(0.0)),
                per_step_kwh,
            }
        })
        .collect();
    let mut vehicles_kw = vec![0.0_f64; sc.n];
    for sv in sessions {
        for &(t, v) in &sv.power {
            vehicles_kw[t] += value(v);
        }
    }
    let mut sums = Sums::default();
    let schedule = steps
        .iter()
        .enumerate()
        .map(|(t, step)| schedule_step(input, sc, t, step, vehicles_kw[t], solution, &mut sums))
        .collect();
    result(sc, sums, session_outcomes, schedule)
}

/// Step `t` of the schedule, added to the running sums.
fn schedule_step(
    input: &OptimumInput,
    sc: &Scale,
    t: usize,
    step: &StepVars,
    vehicles_kw: f64,
    solution: &impl Solution,
    sums: &mut Sums,
) -> StepSchedule {
    let value = |v: Variable| clean(solution.value(v)).max(0.0);
    let opt_value = |v: Option<Variable>| v.map(value).unwrap_or(0.0);
    let b = &input.battery;
    let dt_h = sc.dt(t);
    let over_kw = opt_value(step.over_limit);
    let import_kw = value(step.import) + over_kw;
    let export_kw = opt_value(step.export);
    let pv_kw = opt_value(step.pv_used);
    let (charge_kw, discharge_kw, soc_pct) = match &step.battery {
        Some(bs) => (
            value(bs.charge),
            value(bs.discharge),
            100.0 * solution.value(bs.energy) / sc.usable_kwh,
        ),
        None => (0.0, 0.0, if sc.has_battery { b.soc0_pct } else { 0.0 }),
    };
    let price = input.tariff.import_price_cny_per_kwh[t];
    sums.import_cost_cny += price * import_kw * dt_h;
    sums.export_revenue_cny += input.tariff.export_price_cny_per_kwh * export_kw * dt_h;
    sums.wear_cost_cny += b.wear_cost_cny_per_kwh_discharged * discharge_kw * dt_h;
    if t < sc.next_first {
        sums.peak_import_kw = sums.peak_import_kw.max(import_kw);
    } else {
        sums.next_peak_import_kw = sums.next_peak_import_kw.max(import_kw);
    }
    sums.grid_import_kwh += import_kw * dt_h;
    sums.grid_export_kwh += export_kw * dt_h;
    sums.pv_used_kwh += pv_kw * dt_h;
    sums.pv_available_kwh += kw(input.pv_available_w[t]) * dt_h;
    sums.battery_discharged_kwh += discharge_kw * dt_h;
    sums.import_limit_infeasible_kwh += over_kw * dt_h;
    sums.simultaneous_import_export_kwh += import_kw.min(export_kw) * dt_h;
    sums.building_kwh += kw(input.building_w[t]) * dt_h;
    StepSchedule {
        import_w: import_kw * 1000.0,
        export_w: export_kw * 1000.0,
        battery_w: clean(discharge_kw - charge_kw) * 1000.0,
        vehicles_w: vehicles_kw * 1000.0,
        pv_used_w: pv_kw * 1000.0,
        soc_pct: clean(soc_pct),
    }
}

fn result(
    sc: &Scale,
    s: Sums,
    sessions: Vec<SessionOutcome>,
    schedule: Vec<StepSchedule>,
) -> OptimumResult {
    let demand_charge_cny =
        sc.demand_cny_per_kw * s.peak_import_kw + sc.next_demand_cny_per_kw * s.next_peak_import_kw;
    let ev_delivered_kwh: f64 = sessions.iter().map(|s| s.delivered_kwh).sum();
    let ev_unmet_kwh: f64 = sessions.iter().map(|s| s.unmet_kwh).sum();
    let stored_change_kwh = match schedule.last() {
        Some(last) if sc.has_battery => clean(last.soc_pct / 100.0 * sc.usable_kwh - sc.e0_kwh),
        _ => 0.0,
    };
    let cost_cny = s.import_cost_cny - s.export_revenue_cny + demand_charge_cny + s.wear_cost_cny;
    let site_load_kwh = s.building_kwh + ev_delivered_kwh;
    let self_consumption_pct = if s.pv_used_kwh > NOISE {
        (100.0 * (s.pv_used_kwh - s.grid_export_kwh) / s.pv_used_kwh).clamp(0.0, 100.0)
    } else {
        0.0
    };
    let self_sufficiency_pct = if site_load_kwh > NOISE {
        (100.0 * (site_load_kwh - s.grid_import_kwh) / site_load_kwh).clamp(0.0, 100.0)
    } else {
        0.0
    };
    OptimumResult {
        cost_cny,
        objective_cny: cost_cny + ev_unmet_kwh * sc.unmet_penalty
            - stored_change_kwh * sc.stored_value,
        stored_change_kwh,
        import_cost_cny: s.import_cost_cny,
        export_revenue_cny: s.export_revenue_cny,
        demand_charge_cny,
        wear_cost_cny: s.wear_cost_cny,
        peak_import_kw: s.peak_import_kw.max(s.next_peak_import_kw),
        grid_import_kwh: s.grid_import_kwh,
        grid_export_kwh: s.grid_export_kwh,
        pv_used_kwh: s.pv_used_kwh,
        pv_curtailed_kwh: clean(s.pv_available_kwh - s.pv_used_kwh).max(0.0),
        ev_delivered_kwh,
        ev_unmet_kwh,
        battery_discharged_kwh: s.battery_discharged_kwh,
        battery_efc: if sc.has_battery {
            s.battery_discharged_kwh / sc.usable_kwh
        } else {
            0.0
        },
        self_consumption_pct,
        self_sufficiency_pct,
        import_limit_infeasible_kwh: s.import_limit_infeasible_kwh,
        simultaneous_import_export_kwh: s.simultaneous_import_export_kwh,
        sessions,
        schedule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two 15-minute steps, 100 kW building, valley then peak price, a 100 kWh battery at 50 %.
    fn valley_then_peak(wear_cny_per_kwh: f64) -> OptimumInput {
        OptimumInput {
            step_s: DEFAULT_STEP_S,
            first_step_s: None,
            demand_peak_so_far_w: 0.0,
            next_period: None,
            pv_available_w: vec![0.0, 0.0],
            building_w: vec![100_000.0, 100_000.0],
            sessions: Vec::new(),
            battery: BatteryInput {
                usable_wh: 100_000.0,
                soc0_pct: 50.0,
                soc_min_pct: 0.0,
                soc_max_pct: 100.0,
                max_charge_w: 400_000.0,
                max_discharge_w: 400_000.0,
                charge_eff: 0.95,
                discharge_eff: 0.95,
                wear_cost_cny_per_kwh_discharged: wear_cny_per_kwh,
                calendar_cny_per_kwh_h: 0.0,
            },
            grid: GridInput {
                import_limit_w: 1_000_000.0,
                export_limit_w: 0.0,
            },
            tariff: TariffInput {
                import_price_cny_per_kwh: vec![0.30, 1.10],
                export_price_cny_per_kwh: 0.0,
                demand_charge_cny_per_kw: 0.0,
                demand_charge_fraction: None,
            },
            unmet_penalty_cny_per_kwh: 5.0,
            stored_value_cny_per_kwh: 0.30 / 0.95,
        }
    }

    /// A car present from step 0 to `depart_step` wanting 1 Wh at up to 1 W.
    fn one_watt_hour(depart_step: usize) -> SessionInput {
        SessionInput {
            arrive_step: 0,
            depart_step,
            wanted_wh: 1.0,
            max_w: 1.0,
            keep_up: None,
            present: None,
            taper: None,
        }
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "expected {expected}, got {actual}"
        );
    }

    #[test]
    fn the_peak_is_served_from_the_battery_when_its_price_beats_the_stored_value_and_wear() {
        // A stored kWh is worth 0.30 / 0.95 (refilling it in the valley), so an AC kWh from the
        // battery costs 0.30 / 0.95^2 + wear 0.10 = 0.432 CNY < 1.10 in the peak. Refilling in
        // step 0 costs exactly the stored value: the throughput tie-break leaves it out.
        let result = solve(&valley_then_peak(0.10)).unwrap();
        let taken_kwh = 25.0 / 0.95;
        assert_close(result.cost_cny, 0.30 * 25.0 + 0.10 * 25.0, 1e-4);
        assert_close(result.stored_change_kwh, -taken_kwh, 1e-6);
        let expected = 0.30 * 25.0 + 0.10 * 25.0 + 0.30 / 0.95 * taken_kwh;
        assert_close(result.objective_cny, expected, 1e-4);
        assert_close(result.schedule[1].battery_w, 100_000.0, 1e-2);
        assert_close(result.schedule[1].import_w, 0.0, 1e-3);
        assert_close(result.battery_discharged_kwh, 25.0, 1e-6);
        assert_close(result.battery_efc, 0.25, 1e-8);
    }

    #[test]
    fn stored_energy_is_kept_when_its_value_beats_the_peak_price() {
        let mut input = valley_then_peak(0.10);
        input.stored_value_cny_per_kwh = 1.5;
        let kept = solve(&input).unwrap();
        assert_close(kept.battery_discharged_kwh, 0.0, 1e-6);
        assert!(kept.stored_change_kwh >= 0.0);
        input.stored_value_cny_per_kwh = 0.0;
        // Without a value every stored kWh (50, at a floor of 0 %) serves the building.
        let drained = solve(&input).unwrap();
        assert_close(drained.battery_discharged_kwh, 50.0 * 0.95, 1e-6);
        assert_close(drained.stored_change_kwh, -50.0, 1e-6);
        assert_close(drained.objective_cny, drained.cost_cny, 1e-9);
    }

    #[test]
    fn battery_stays_idle_when_wear_cost_exceeds_spread_times_efficiency() {
        let result = solve(&valley_then_peak(0.90)).unwrap();
        assert_close(result.cost_cny, 0.30 * 25.0 + 1.10 * 25.0, 1e-6);
        assert!(result.schedule.iter().all(|s| s.battery_w == 0.0));
        assert_eq!(result.battery_efc, 0.0);
        assert_eq!(result.wear_cost_cny, 0.0);
    }

    #[test]
    fn cost_is_the_sum_of_its_parts_and_excludes_the_unmet_penalty() {
        let mut input = valley_then_peak(0.10);
        // 0.5 kW car cap: wants 10 kWh in 2 steps, at most 0.25 kWh can be delivered.
        input.sessions.push(SessionInput {
            arrive_step: 0,
            depart_step: 2,
            wanted_wh: 10_000.0,
            max_w: 500.0,
            keep_up: None,
            present: None,
            taper: None,
        });
        let result = solve(&input).unwrap();
        assert_close(result.ev_delivered_kwh, 0.25, 1e-6);
        assert_close(result.ev_unmet_kwh, 9.75, 1e-6);
        assert_close(
            result.cost_cny,
            result.import_cost_cny - result.export_revenue_cny
                + result.demand_charge_cny
                + result.wear_cost_cny,
            1e-9,
        );
        assert!(
            result.cost_cny < 30.0,
            "penalty leaked into cost: {}",
            result.cost_cny
        );
    }

    /// `valley_then_peak` stretched to `n` steps at the valley price, with one car on it.
    fn one_car(n: usize, car: SessionInput) -> OptimumInput {
        let mut input = valley_then_peak(0.10);
        input.pv_available_w = vec![0.0; n];
        input.building_w = vec![10_000.0; n];
        input.tariff.import_price_cny_per_kwh = vec![0.30; n];
        input.sessions.push(car);
        input
    }

    #[test]
    fn a_car_present_for_part_of_a_step_gets_its_power_for_that_part_only() {
        // 10 kW, plugged in 10 minutes into step 0 until the end of step 1: 20 minutes.
        let car = SessionInput {
            arrive_step: 0,
            depart_step: 2,
            wanted_wh: 10_000.0,
            max_w: 10_000.0,
            keep_up: None,
            present: Some(Presence {
                arrive_s: 600.0,
                depart_s: 1800.0,
            }),
            taper: None,
        };
        let result = solve(&one_car(2, car.clone())).unwrap();
        assert_close(result.ev_delivered_kwh, 10.0 / 3.0, 1e-6);
        assert_close(result.schedule[0].vehicles_w, 10_000.0 / 3.0, 1e-3);
        // Without the presence the car gets the whole of step 0.
        let whole = SessionInput {
            present: None,
            ..car
        };
        assert_close(
            solve(&one_car(2, whole)).unwrap().ev_delivered_kwh,
            5.0,
            1e-6,
        );
    }

    #[test]
    fn a_keep_up_floor_asks_a_car_arriving_mid_step_only_for_what_it_can_take_while_present() {
        // 10 kW from 10 minutes into step 0 to the end of step 1, wanting all it can take
        // (20 minutes: 3.33 kWh), kept up at 5 kW. Counted over the whole of step 0, the floor
        // at its end (3.33 - 5 x 0.25 = 2.08 kWh) is more than the 5 minutes present deliver
        // (0.83 kWh): the program had to book the difference as unmet, and then left that much
        // of the car's wish undelivered for free.
        let car = SessionInput {
            arrive_step: 0,
            depart_step: 2,
            wanted_wh: 10_000.0 / 3.0,
            max_w: 10_000.0,
            keep_up: Some(KeepUp {
                power_w: 5_000.0,
                departs_s: 1800.0,
            }),
            present: Some(Presence {
                arrive_s: 600.0,
                depart_s: 1800.0,
            }),
            taper: None,
        };
        let result = solve(&one_car(2, car)).unwrap();
        assert_close(result.ev_unmet_kwh, 0.0, 1e-6);
        assert_close(result.ev_delivered_kwh, 10.0 / 3.0, 1e-6);
    }

    #[test]
    fn a_car_above_the_knee_gets_no_more_than_its_taper_allows_and_no_less_than_the_car_takes() {
        // 60 kWh at 88 % to full at 11 kW over an hour: the taper holds it short of 7.2 kWh.
        let car = SessionInput {
            arrive_step: 0,
            depart_step: 4,
            wanted_wh: 7_200.0,
            max_w: 11_000.0,
            keep_up: None,
            present: None,
            taper: Some(Taper {
                battery_wh: 60_000.0,
                soc_pct: 88.0,
            }),
        };
        let tapered = solve(&one_car(4, car.clone())).unwrap();
        let takes_kwh =
            station_sim::physics::vehicles::deliverable_wh(60_000.0, 88.0, 100.0, 11_000.0, 3600.0)
                / 1000.0;
        assert!(
            tapered.ev_delivered_kwh < 7.1 && tapered.ev_delivered_kwh >= takes_kwh - 1e-6,
            "program {} kWh, the car takes {takes_kwh} kWh",
            tapered.ev_delivered_kwh
        );
        let untapered = SessionInput { taper: None, ..car };
        assert_close(
            solve(&one_car(4, untapered)).unwrap().ev_delivered_kwh,
            7.2,
            1e-6,
        );
    }

    #[test]
    fn a_battery_that_ages_faster_full_is_charged_as_late_as_the_valley_allows() {
        // Four valley steps, then the peak: the refill for the peak is as cheap in any of
        // them, and calendar aging picks the last.
        let mut input = valley_then_peak(0.10);
        input.pv_available_w = vec![0.0; 5];
        input.building_w = vec![100_000.0; 5];
        input.tariff.import_price_cny_per_kwh = vec![0.30, 0.30, 0.30, 0.30, 1.10];
        input.battery.soc0_pct = 0.0;
        input.stored_value_cny_per_kwh = 0.0;
        input.battery.calendar_cny_per_kwh_h = 0.002;
        let result = solve(&input).unwrap();
        let charged: Vec<f64> = result.schedule.iter().map(|s| -s.battery_w).collect();
        assert!(charged[..3].iter().all(|&w| w.abs() < 1e-3), "{charged:?}");
        assert!(charged[3] > 1_000.0, "{charged:?}");
        assert!(result.schedule[4].battery_w > 1_000.0);
    }

    #[test]
    fn demand_charge_fraction_defaults_to_window_days_over_thirty() {
        let mut input = valley_then_peak(0.1);
        assert_close(
            input.effective_demand_charge_fraction(),
            0.5 / 24.0 / 30.0,
            1e-12,
        );
        input.tariff.demand_charge_fraction = Some(1.0);
        assert_eq!(input.effective_demand_charge_fraction(), 1.0);
    }

    #[test]
    fn depart_before_arrive_is_named_with_the_session_index() {
        let mut input = valley_then_peak(0.1);
        for _ in 0..3 {
            input.sessions.push(SessionInput {
                arrive_step: 0,
                depart_step: 1,
                wanted_wh: 1000.0,
                max_w: 7000.0,
                keep_up: None,
                present: None,
                taper: None,
            });
        }
        input.sessions.push(SessionInput {
            arrive_step: 1,
            depart_step: 0,
            wanted_wh: 1000.0,
            max_w: 7000.0,
            keep_up: None,
            present: None,
            taper: None,
        });
        let err = solve(&input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sessions[3].depart_step: before arrive_step"
        );
    }

    #[test]
    fn vector_length_mismatch_is_named() {
        let mut input = valley_then_peak(0.1);
        input.tariff.import_price_cny_per_kwh.push(0.7);
        assert_eq!(
            solve(&input).unwrap_err(),
            OptimumError::LengthMismatch {
                field: "tariff.import_price_cny_per_kwh",
                expected: 2,
                actual: 3
            }
        );
    }

    #[test]
    fn invalid_scalar_fields_are_named() {
        type Mutation = Box<dyn Fn(&mut OptimumInput)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("step_s", Box::new(|i| i.step_s = 0.0)),
            ("pv_available_w", Box::new(|i| i.pv_available_w.clear())),
            (
                "pv_available_w[1]",
                Box::new(|i| i.pv_available_w[1] = -1.0),
            ),
            ("building_w[0]", Box::new(|i| i.building_w[0] = f64::NAN)),
            (
                "battery.soc0_pct",
                Box::new(|i| i.battery.soc_min_pct = 60.0),
            ),
            (
                "battery.charge_eff",
                Box::new(|i| i.battery.charge_eff = 1.5),
            ),
            (
                "battery.soc_max_pct",
                Box::new(|i| i.battery.soc_max_pct = 120.0),
            ),
            (
                "grid.import_limit_w",
                Box::new(|i| i.grid.import_limit_w = -5.0),
            ),
            (
                "tariff.demand_charge_fraction",
                Box::new(|i| i.tariff.demand_charge_fraction = Some(-0.1)),
            ),
            (
                "next_period.first_step",
                Box::new(|i| {
                    i.next_period = Some(NextPeriod {
                        first_step: 2,
                        demand_charge_fraction: 0.1,
                    })
                }),
            ),
            (
                "next_period.demand_charge_fraction",
                Box::new(|i| {
                    i.next_period = Some(NextPeriod {
                        first_step: 1,
                        demand_charge_fraction: f64::NAN,
                    })
                }),
            ),
            (
                "sessions[0].depart_step",
                Box::new(|i| i.sessions.push(one_watt_hour(3))),
            ),
            (
                "sessions[0].present.depart_s",
                Box::new(|i| {
                    i.sessions.push(SessionInput {
                        present: Some(Presence {
                            arrive_s: 600.0,
                            depart_s: 600.0,
                        }),
                        ..one_watt_hour(1)
                    })
                }),
            ),
            (
                "sessions[0].taper.soc_pct",
                Box::new(|i| {
                    i.sessions.push(SessionInput {
                        taper: Some(Taper {
                            battery_wh: 60_000.0,
                            soc_pct: 140.0,
                        }),
                        ..one_watt_hour(1)
                    })
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut input = valley_then_peak(0.1);
            if field == "pv_available_w" {
                input.building_w.clear();
                input.tariff.import_price_cny_per_kwh.clear();
            }
            mutate(&mut input);
            match solve(&input) {
                Err(OptimumError::InvalidInput { field: named, .. }) => {
                    assert_eq!(named, field)
                }
                other => panic!("{field}: expected InvalidInput, got {other:?}"),
            }
        }
    }
}

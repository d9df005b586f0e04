//! `stationd backtest`: the closed loop and the perfect-foresight optimum on a scenario,
//! printed as the scorecard of `docs/reference-station.md` (a table, or one JSON object, `--json`).

use super::foresight::{optimum_run, OptimumRun};
pub use super::objective::savings_captured;
use super::objective::{Objective, ObjectiveValues};
use super::planned::PlannerHook;
use super::run::{run_closed_loop, Controller, RunError, RunResult, Uncontrolled};
use crate::config::{Issues, RawPolicy};
use crate::dispatch::Policy;
use serde::Serialize;
use station_sim::physics::Kpis;
use station_sim::scenario::{FaultKind, Scenario, ScenarioError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `stationd backtest`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct BacktestArgs {
    /// Scenario file of the simulator, e.g. simulator/scenarios/sunny-weekday.toml.
    #[arg(long)]
    pub scenario: PathBuf,
    /// Simulated days from the scenario's start.
    #[arg(long, default_value_t = 1)]
    pub days: u32,
    /// TOML file whose `[policy]` table is the dispatch policy (default: the reference policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Also run `uncontrolled`, the planner with its own forecasts (`planner`) and with perfect
    /// forecasts (`planner_perfect`), and the perfect-foresight `optimum` on the same days, and
    /// report the share of the achievable savings the policy and the planners capture.
    #[arg(long)]
    pub compare: bool,
    /// Run only this controller (`uncontrolled`, `policy`, `planner`, `planner-perfect` or
    /// `optimum`);
    /// without it the policy runs, and with `--compare` all of them.
    #[arg(long, value_enum, conflicts_with = "compare")]
    pub controller: Option<ControllerName>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the scenario's random processes (weather, building, arrivals).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Control cycle, simulated seconds.
    #[arg(long = "cycle-s", default_value_t = 1.0)]
    pub cycle_s: f64,
}

impl BacktestArgs {
    /// Arguments for `scenario` with every default (1 day, seed 1, 1 s cycle, no compare).
    pub fn new(scenario: impl Into<PathBuf>) -> Self {
        BacktestArgs {
            scenario: scenario.into(),
            days: 1,
            policy: None,
            compare: false,
            controller: None,
            json: false,
            seed: 1,
            cycle_s: 1.0,
        }
    }
}

/// The runs a backtest can make.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerName {
    /// Cars at full power on arrival, battery idle, PV never limited.
    Uncontrolled,
    /// The dispatch core with the policy.
    Policy,
    /// The perfect-foresight linear program.
    Optimum,
    /// The dispatch core following the planner's budgets, the planner fed perfect forecasts.
    PlannerPerfect,
    /// The dispatch core following the planner's budgets, the planner fed its own forecasts.
    Planner,
}

/// A bad argument or a failed run; the message names the argument.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("--days: must be >= 1 (got {0})")]
    Days(u32),
    #[error("--cycle-s: must be > 0 and <= {max} s (got {got})")]
    Cycle { got: f64, max: f64 },
    #[error("--scenario: cannot read {path}: {reason}")]
    ScenarioRead { path: PathBuf, reason: String },
    #[error("--scenario: {path}: {reason}")]
    ScenarioInvalid { path: PathBuf, reason: String },
    #[error("--policy: cannot read {path}: {reason}")]
    PolicyRead { path: PathBuf, reason: String },
    #[error("--policy: {path}: {reason}")]
    PolicyInvalid { path: PathBuf, reason: String },
    #[error("optimum: {0}")]
    Optimum(#[from] super::optimum::OptimumError),
    #[error("cannot write the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// One controller's scorecard: the simulator's [`Kpis`], the one list of scorecard keys
/// (`station_sim::physics::KPI_KEYS`, defined in `docs/reference-station.md`, section Scorecard).
pub use station_sim::physics::Kpis as Scorecard;

/// Decimals a KPI is printed with in the table.
fn decimals(key: &str) -> usize {
    match key {
        "import_limit_exceeded_s" | "soc_window_violation_s" => 0,
        "import_limit_exceeded_kwh" | "ev_unmet_kwh" | "cost" => 2,
        "battery_efc" => 3,
        "soh_change_pct" => 4,
        _ => 1,
    }
}

/// One run of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerRun {
    /// `"uncontrolled"`, `"policy"`, `"planner"`, `"planner_perfect"` or `"optimum"`.
    pub controller: String,
    pub kpis: Scorecard,
    /// The objective every run is scored by, with its raw parts.
    pub objective: Objective,
    /// Not in the JSON: the plant's full scorecard (with `soc_window_violation_s`).
    #[serde(skip)]
    pub full_kpis: Kpis,
    /// Not in the JSON: battery SoC at the start and the end, %.
    #[serde(skip)]
    pub soc_start_pct: f64,
    #[serde(skip)]
    pub soc_end_pct: f64,
    /// Not in the JSON: for the optimum, most the meter's netting of its simultaneous import
    /// and export adds to its replayed cost, CNY (0 for closed loops).
    #[serde(skip)]
    pub netting_bound_cny: f64,
    /// Not in the JSON: wall time of the run (the solve for the optimum), s.
    #[serde(skip)]
    pub wall_s: f64,
}

/// Everything `stationd backtest` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestReport {
    pub scenario: String,
    pub days: u32,
    pub runs: Vec<ControllerRun>,
    /// The values the objective charges for unmet car energy and credits for stored energy.
    pub objective_values: ObjectiveValues,
    /// Per judged controller (`policy`, `planner`, `planner_perfect`), (O_uncontrolled - O_controller) /
    /// (O_uncontrolled - O_optimum) on the objective's totals; empty without `--compare`, and without an entry
    /// when the optimum is not better than the uncontrolled run by a fen.
    pub savings_captured: BTreeMap<String, f64>,
    /// Of the policy's closed loop, or of the one closed loop `--controller` chose (0 when
    /// only the optimum ran).
    pub sim_seconds_per_wall_second: f64,
    /// Remarks for stderr (policy/scenario mismatches, faults not replayed).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl BacktestReport {
    /// The run of `controller`, if it was run.
    pub fn run(&self, controller: &str) -> Option<&ControllerRun> {
        self.runs.iter().find(|r| r.controller == controller)
    }

    /// The report as one JSON object (the keys of the issue, nothing else).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The report as a table: one row per scorecard key, one column per controller.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "backtest of scenario {} over {} day(s)",
            self.scenario, self.days
        );
        let _ = write!(out, "{:<30}", "kpi");
        for r in &self.runs {
            let _ = write!(out, "{:>14}", r.controller);
        }
        out.push('\n');
        for (i, (name, _)) in Scorecard::default().named().into_iter().enumerate() {
            let _ = write!(out, "{name:<30}");
            for r in &self.runs {
                let _ = write!(out, "{:>14.*}", decimals(name), r.kpis.named()[i].1);
            }
            out.push('\n');
        }
        let _ = write!(out, "{:<30}", "battery_soc_start_end_pct");
        for r in &self.runs {
            let s = format!("{:.1}->{:.1}", r.soc_start_pct, r.soc_end_pct);
            let _ = write!(out, "{s:>14}");
        }
        out.push('\n');
        self.objective_rows(&mut out);
        self.savings_rows(&mut out);
        let _ = writeln!(
            out,
            "closed loop: {:.0} simulated seconds per wall second",
            self.sim_seconds_per_wall_second
        );
        out
    }
}

impl BacktestReport {
    /// The objective's values and parts, one row per part.
    fn objective_rows(&self, out: &mut String) {
        let v = &self.objective_values;
        let _ = writeln!(
            out,
            "objective = cost + unmet_kwh x {:.2} CNY/kWh - stored_change_kwh x {:.4} CNY/kWh",
            v.unmet_cny_per_kwh, v.stored_cny_per_kwh
        );
        let Some(first) = self.runs.first() else {
            return;
        };
        for (i, (name, _)) in first.objective.named().into_iter().enumerate() {
            let _ = write!(out, "{:<30}", format!("objective.{name}"));
            for r in &self.runs {
                let _ = write!(out, "{:>14.2}", r.objective.named()[i].1);
            }
            out.push('\n');
        }
    }

    /// One line per causal controller.
    fn savings_rows(&self, out: &mut String) {
        for (controller, s) in &self.savings_captured {
            let _ = writeln!(out, "savings_captured.{controller}: {:.1} %", 100.0 * s);
        }
        if self.savings_captured.is_empty() && self.run("optimum").is_some() {
            let _ = writeln!(out, "savings_captured: n/a (the optimum saves nothing)");
        }
    }
}

/// The planner's solve times as a note: count, p50, p99, max, failures.
fn solve_note(name: &str, ms: &[f64], failures: u64) -> String {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    format!(
        "{name}: {} plans, solve p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {failures} failed",
        sorted.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    )
}

/// Controllers judged by `savings_captured`: every run but `uncontrolled` (the baseline) and
/// `optimum` (the bound). `policy` and `planner` are causal; `planner_perfect` is fed perfect
/// forecasts.
fn is_judged(controller: &str) -> bool {
    !matches!(controller, "uncontrolled" | "optimum")
}

/// `savings_captured` of every causal run, when both the baseline and the bound were run.
fn savings_by_controller(runs: &[ControllerRun]) -> BTreeMap<String, f64> {
    let total = |name: &str| {
        runs.iter()
            .find(|r| r.controller == name)
            .map(|r| r.objective.total_cny)
    };
    let (Some(unc), Some(opt)) = (total("uncontrolled"), total("optimum")) else {
        return BTreeMap::new();
    };
    runs.iter()
        .filter(|r| is_judged(&r.controller))
        .filter_map(|r| {
            let s = savings_captured(unc, r.objective.total_cny, opt)?;
            Some((r.controller.clone(), s))
        })
        .collect()
}

/// Read the `[policy]` table of a TOML file (a full station config or a file with only that
/// table) and check it; errors name the key.
pub fn load_policy(path: &Path) -> Result<Policy, BacktestError> {
    let text = std::fs::read_to_string(path).map_err(|e| BacktestError::PolicyRead {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| BacktestError::PolicyInvalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let section = table
        .remove("policy")
        .ok_or_else(|| invalid("no [policy] table".to_string()))?;
    let raw: RawPolicy = section
        .try_into()
        .map_err(|e: toml::de::Error| invalid(format!("policy: {}", e.message())))?;
    let mut issues = Issues::new();
    match raw.validate("policy", &mut issues) {
        Some(p) if issues.is_empty() => Ok(p),
        _ => Err(invalid(issues.to_string().replace('\n', "; "))),
    }
}

/// Load and check a scenario file.
pub fn load_scenario(path: &Path) -> Result<Scenario, BacktestError> {
    Scenario::load(path).map_err(|e| match e {
        ScenarioError::Io { source, .. } => BacktestError::ScenarioRead {
            path: path.to_path_buf(),
            reason: source.to_string(),
        },
        other => BacktestError::ScenarioInvalid {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

fn closed_loop_run(name: &str, r: &RunResult, values: ObjectiveValues) -> ControllerRun {
    ControllerRun {
        controller: name.to_string(),
        objective: Objective::score(&r.cost_parts, r.outcome(), values),
        netting_bound_cny: 0.0,
        kpis: r.kpis.clone(),
        full_kpis: r.kpis.clone(),
        soc_start_pct: r.soc_start_pct,
        soc_end_pct: r.soc_end_pct,
        wall_s: r.wall.as_secs_f64(),
    }
}

fn optimum_controller_run(o: &OptimumRun) -> ControllerRun {
    ControllerRun {
        controller: "optimum".to_string(),
        objective: o.objective,
        netting_bound_cny: o.netting_bound_cny,
        kpis: o.kpis.clone(),
        full_kpis: o.kpis.clone(),
        soc_start_pct: o.soc_start_pct,
        soc_end_pct: o.soc_end_pct,
        wall_s: o.solve_wall.as_secs_f64(),
    }
}

fn run_error(e: RunError) -> BacktestError {
    match e {
        RunError::Days(d) => BacktestError::Days(d),
        RunError::Cycle(c) => BacktestError::Cycle {
            got: c,
            max: super::run::MAX_CYCLE_S,
        },
    }
}

/// Differences between the scenario's plant and the policy worth telling the user.
fn policy_notes(scenario: &Scenario, policy: &Policy) -> Vec<String> {
    let mut notes = Vec::new();
    let pairs = [
        (
            "import limit",
            policy.grid.import_limit.0,
            scenario.import_limit_w(),
        ),
        (
            "export limit",
            policy.grid.export_limit.0,
            scenario.export_limit_w(),
        ),
    ];
    for (what, p, s) in pairs {
        if (p - s).abs() > 1.0 {
            notes.push(format!(
                "note: the policy's {what} is {:.1} kW, the scenario's {:.1} kW: control uses \
                 the policy's, the scorecard the scenario's",
                p / 1000.0,
                s / 1000.0
            ));
        }
    }
    let latency = scenario
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::Latency)
        .count();
    if latency > 0 {
        notes.push(format!(
            "note: {latency} latency fault(s) of the scenario are not replayed in process; \
             the other wire faults are replayed on the policy's readings and writes"
        ));
    }
    notes
}

/// Run the backtest described by `args` and collect the report.
pub fn run_backtest(args: &BacktestArgs) -> Result<BacktestReport, BacktestError> {
    if args.days == 0 {
        return Err(BacktestError::Days(args.days));
    }
    let max = super::run::MAX_CYCLE_S;
    if !(args.cycle_s.is_finite() && args.cycle_s > 0.0 && args.cycle_s <= max) {
        return Err(BacktestError::Cycle {
            got: args.cycle_s,
            max,
        });
    }
    let scenario = load_scenario(&args.scenario)?;
    let policy = match &args.policy {
        Some(p) => load_policy(p)?,
        None => Policy::default(),
    };
    let mut notes = policy_notes(&scenario, &policy);
    let values = ObjectiveValues::of(&scenario);
    let wanted = |c: ControllerName| match args.controller {
        Some(only) => only == c,
        None => c == ControllerName::Policy || args.compare,
    };
    let closed_loop = |c: &mut dyn Controller| {
        run_closed_loop(&scenario, args.seed, args.days, c, args.cycle_s).map_err(run_error)
    };
    let mut runs = Vec::with_capacity(3);
    let mut speed = 0.0;
    if wanted(ControllerName::Uncontrolled) {
        let r = closed_loop(&mut Uncontrolled)?;
        runs.push(closed_loop_run("uncontrolled", &r, values));
        speed = r.speed();
    }
    if wanted(ControllerName::Policy) {
        let r = closed_loop(&mut super::run::policy_controller(
            policy.clone(),
            &scenario,
        ))?;
        runs.push(closed_loop_run("policy", &r, values));
        speed = r.speed();
    }
    for (name, make) in [
        (
            ControllerName::PlannerPerfect,
            PlannerHook::perfect as fn(&Scenario, &Policy, u64, u32) -> PlannerHook,
        ),
        (ControllerName::Planner, PlannerHook::causal),
    ] {
        if !wanted(name) {
            continue;
        }
        let hook = make(&scenario, &policy, args.seed, args.days);
        let mut c = super::run::policy_controller(policy.clone(), &scenario).with_planner(hook);
        let r = closed_loop(&mut c)?;
        runs.push(closed_loop_run(c.name(), &r, values));
        if !wanted(ControllerName::Policy) {
            speed = r.speed();
        }
        if let Some(p) = c.planner() {
            notes.push(solve_note(p.name(), &p.solve_ms, p.failures));
        }
    }
    if wanted(ControllerName::Optimum) {
        let opt = optimum_run(&scenario, args.seed, args.days)?;
        runs.push(optimum_controller_run(&opt));
    }
    Ok(BacktestReport {
        scenario: scenario.name.clone(),
        days: args.days,
        savings_captured: savings_by_controller(&runs),
        objective_values: values,
        runs,
        sim_seconds_per_wall_second: speed,
        notes,
    })
}

/// The entry point of `stationd backtest`: runs, prints the notes on stderr, and returns the
/// text to print on stdout (the table, or the JSON object with `--json`).
pub fn run_cli(args: &BacktestArgs) -> Result<String, BacktestError> {
    let report = run_backtest(args)?;
    for n in &report.notes {
        eprintln!("{n}");
    }
    if args.json {
        Ok(report.to_json()?)
    } else {
        Ok(report.to_table())
    }
}

//! The closed loop: the simulator's plant stepped in virtual time, a [`Controller`] consulted
//! every cycle. No sockets, no clock reads apart from measuring the wall time of the run.

use super::faults::FaultReplay;
use super::objective::RunOutcome;
use super::planned::PlannerHook;
use super::plant_io::{plan_changes, SnapshotBuilder};
use crate::dispatch::{decide_into, DispatchState, Plan, Policy, Reason};
use station_sim::physics::{CostParts, Kpis, Plant};
use station_sim::scenario::Scenario;
use station_sim::view::{Command, StationView};
use std::time::Duration;

/// Longest control cycle accepted, s: the simulated chargers drop to their safe current when a
/// setpoint is not refreshed within 60 s.
pub const MAX_CYCLE_S: f64 = 30.0;

/// Something that steers the plant: looks at what the devices show and writes setpoints.
pub trait Controller {
    /// Short name for reports (`"policy"`, `"uncontrolled"`).
    fn name(&self) -> &str;
    /// Append this cycle's commands to `out` (which the loop empties after applying them).
    /// `view.sim_time` is the time now.
    fn control(&mut self, view: &StationView, out: &mut Vec<Command>);
}

/// Cars charge at full power on arrival, the battery idles and PV is never limited: the
/// station as it would run without a controller. Every charger is offered its rating every
/// cycle (which also keeps the setpoints valid).
#[derive(Debug, Clone, Default)]
pub struct Uncontrolled;

impl Controller for Uncontrolled {
    fn name(&self) -> &str {
        "uncontrolled"
    }

    fn control(&mut self, view: &StationView, out: &mut Vec<Command>) {
        for (index, c) in view.chargers.iter().enumerate() {
            out.push(Command::ChargerSetpointA {
                index,
                amps: c.rating_a,
            });
        }
        out.push(Command::BatterySetpointW(0.0));
        if view.pv.limit_enabled {
            out.push(Command::PvLimitEnabled(false));
        }
    }
}

/// The dispatch core driving the plant: snapshot, `decide_into` and commands every cycle; a
/// command is written when it changes what the device shows or to refresh a setpoint before
/// it times out (see [`plan_changes`]).
#[derive(Debug, Clone)]
pub struct PolicyController {
    policy: Policy,
    state: DispatchState,
    plan: Plan,
    snapshots: SnapshotBuilder,
    cycles: u64,
    import_limit_unreachable_cycles: u64,
    last_battery_write: Option<chrono::DateTime<chrono::Utc>>,
    faults: Option<FaultReplay>,
    planner: Option<PlannerHook>,
    health: Option<crate::health::HealthTracker>,
}

impl PolicyController {
    /// The dispatch core with `policy` on a plant whose PCS converts with one-way efficiency
    /// `battery_efficiency` (the scenario's `battery.efficiency`; see [`SnapshotBuilder`]).
    pub fn new(policy: Policy, battery_efficiency: f64) -> Self {
        PolicyController {
            policy,
            state: DispatchState::new(),
            plan: Plan::default(),
            snapshots: SnapshotBuilder::new(battery_efficiency),
            cycles: 0,
            import_limit_unreachable_cycles: 0,
            last_battery_write: None,
            faults: None,
            planner: None,
            health: None,
        }
    }

    /// Follow the plans of `planner` (the run is then called `planner_perfect`).
    pub fn with_planner(mut self, planner: PlannerHook) -> Self {
        self.planner = Some(planner);
        self
    }

    /// The planner, when one steers this controller.
    pub fn planner(&self) -> Option<&PlannerHook> {
        self.planner.as_ref()
    }

    /// Replay these wire faults on the readings and the writes (see [`FaultReplay`]).
    pub fn with_faults(mut self, faults: Option<FaultReplay>) -> Self {
        self.faults = faults;
        self
    }

    /// Measure the battery's health as the daemon does and dispatch on it (measured capacity
    /// once confident, window narrowed by cell spread, power by temperature, measured wear).
    pub fn with_health(mut self, tracker: crate::health::HealthTracker) -> Self {
        self.health = Some(tracker);
        self
    }

    /// The health tracker, when measuring.
    pub fn health(&self) -> Option<&crate::health::HealthTracker> {
        self.health.as_ref()
    }

    /// The plan of the last cycle.
    pub fn last_plan(&self) -> &Plan {
        &self.plan
    }

    /// Cycles run so far.
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// Cycles whose plan said the import limit could not be held.
    pub fn import_limit_unreachable_cycles(&self) -> u64 {
        self.import_limit_unreachable_cycles
    }
}

impl Controller for PolicyController {
    fn name(&self) -> &str {
        self.planner.as_ref().map_or("policy", PlannerHook::name)
    }

    fn control(&mut self, view: &StationView, out: &mut Vec<Command>) {
        self.snapshots.update(view);
        if let (Some(f), Some(s)) = (self.faults.as_mut(), self.snapshots.last_mut()) {
            f.apply(view.sim_time, s);
        }
        if let (Some(h), Some(s)) = (self.health.as_mut(), self.snapshots.last_mut()) {
            h.observe(view.sim_time, super::plant_io::health_observation(view));
            h.apply_to_snapshot(&self.policy.battery, view.sim_time, &mut s.battery);
        }
        let Some(snapshot) = self.snapshots.last() else {
            return;
        };
        if let Some(p) = self.planner.as_mut() {
            p.update(view, &mut self.state);
        }
        decide_into(
            snapshot,
            &self.policy,
            &mut self.state,
            view.sim_time,
            &mut self.plan,
        );
        self.cycles += 1;
        if self
            .plan
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::ImportLimitUnreachable { .. }))
        {
            self.import_limit_unreachable_cycles += 1;
        }
        let since_battery_write_s = self.last_battery_write.map_or(f64::INFINITY, |t| {
            (view.sim_time - t).num_milliseconds() as f64 / 1000.0
        });
        let mut wrote_battery = plan_changes(&self.plan, view, since_battery_write_s, out);
        if let Some(f) = &self.faults {
            out.retain(|c| f.delivers(c));
            wrote_battery &= out
                .iter()
                .any(|c| matches!(c, Command::BatterySetpointW(_)));
        }
        if wrote_battery {
            self.last_battery_write = Some(view.sim_time);
        }
    }
}

/// The dispatch core with `policy` on the plant of `scenario`, with the scenario's wire faults
/// replayed.
pub fn policy_controller(policy: Policy, scenario: &Scenario) -> PolicyController {
    PolicyController::new(policy, scenario.battery.efficiency)
        .with_faults(FaultReplay::from_scenario(scenario))
}

/// What one closed-loop run gave.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The plant's scorecard at the end of the run.
    pub kpis: Kpis,
    /// Simulated time, s.
    pub sim_seconds: f64,
    /// Wall time of the loop.
    pub wall: Duration,
    /// Control cycles run.
    pub cycles: u64,
    /// Commands the plant refused as out of range (a controller bug when > 0).
    pub rejected_commands: u64,
    /// The first refusal, for the report.
    pub first_rejection: Option<String>,
    /// Battery state of charge at the start and at the end, %.
    pub soc_start_pct: f64,
    pub soc_end_pct: f64,
    /// Usable battery capacity at the start, Wh.
    pub usable_wh_start: f64,
    /// The parts of the scorecard's cost.
    pub cost_parts: CostParts,
    /// Energy the cars still plugged in at the end want, kWh (not in `kpis.ev_unmet_kwh`,
    /// which counts departed cars).
    pub unmet_plugged_kwh: f64,
}

impl RunResult {
    /// What the objective needs beyond the cost: unmet energy of every session, departed or
    /// still plugged, and the change of stored energy (at the start's usable capacity).
    pub fn outcome(&self) -> RunOutcome {
        RunOutcome {
            unmet_kwh: self.kpis.ev_unmet_kwh + self.unmet_plugged_kwh,
            stored_change_kwh: (self.soc_end_pct - self.soc_start_pct) / 100.0
                * self.usable_wh_start
                / 1000.0,
        }
    }

    /// Simulated seconds per wall-clock second.
    pub fn speed(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall > 0.0 {
            self.sim_seconds / wall
        } else {
            f64::INFINITY
        }
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("days: must be >= 1 (got {0})")]
    Days(u32),
    #[error("cycle_s: must be > 0 and <= {MAX_CYCLE_S} (got {0})")]
    Cycle(f64),
}

/// Run `controller` against the plant of `scenario` (seed `seed`) for `days` days from the
/// scenario's start, one control cycle every `cycle_s` simulated seconds. Each cycle: the
/// plant's view, the controller's commands applied, the plant stepped by `cycle_s`.
pub fn run_closed_loop(
    scenario: &Scenario,
    seed: u64,
    days: u32,
    controller: &mut dyn Controller,
    cycle_s: f64,
) -> Result<RunResult, RunError> {
    if days == 0 {
        return Err(RunError::Days(days));
    }
    if !(cycle_s.is_finite() && cycle_s > 0.0 && cycle_s <= MAX_CYCLE_S) {
        return Err(RunError::Cycle(cycle_s));
    }
    let total_s = f64::from(days) * 86_400.0;
    let started = crate::clock::monotonic();
    let mut plant = Plant::new(scenario, seed);
    // One view for the whole run, overwritten in place every cycle.
    let mut view = plant.view();
    let soc_start_pct = view.battery.soc_pct;
    let usable_wh_start = view.battery.usable_wh;
    let mut commands: Vec<Command> = Vec::with_capacity(16 + scenario.chargers.count);
    let mut rejected_commands = 0u64;
    let mut first_rejection = None;
    let mut cycles = 0u64;
    let mut t = 0.0;
    while t < total_s - 1e-9 {
        plant.view_into(&mut view);
        controller.control(&view, &mut commands);
        for cmd in commands.drain(..) {
            if let Err(e) = plant.apply(cmd) {
                rejected_commands += 1;
                if first_rejection.is_none() {
                    first_rejection = Some(format!("{}: {e}", controller.name()));
                }
            }
        }
        let dt = cycle_s.min(total_s - t);
        plant.step(dt);
        // Count cycles from the start so floating-point drift cannot add a cycle.
        cycles += 1;
        t = (cycles as f64 * cycle_s).min(total_s);
    }
    let kpis = plant.kpis();
    plant.view_into(&mut view);
    let soc_end_pct = view.battery.soc_pct;
    let unmet_plugged_kwh = view
        .chargers
        .iter()
        .filter_map(|c| c.vehicle.as_ref())
        .map(|v| v.wanted_wh / 1000.0)
        .sum();
    Ok(RunResult {
        usable_wh_start,
        cost_parts: plant.cost_parts(),
        unmet_plugged_kwh,
        kpis,
        sim_seconds: plant.elapsed_s(),
        wall: started.elapsed(),
        cycles,
        rejected_commands,
        first_rejection,
        soc_start_pct,
        soc_end_pct,
    })
}

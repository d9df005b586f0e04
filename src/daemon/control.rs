//! The control loop: every cycle read all devices concurrently, build the snapshot, call
//! `dispatch::decide`, write every setpoint (level-triggered), then publish status, ledger,
//! metrics and history.

use super::crosscheck::MeterCrossCheck;
use super::device_set::{Deadline, DeviceSet, Setpoint};
use super::planning::{self, CycleState, LivePlan};
use super::publish::{self, CounterReconciler, CycleView, Fitted, TermHold};
use super::snapshot::{self, Observation};
use super::status::{GridStatus, Status, TodayStatus};
use super::Shared;
use crate::clock::{Clock, Ticks};
use crate::config::{DeviceRole, StationConfig};
use crate::dispatch::{self, ChargeMode, ChargerPolicy, DispatchState, Plan, Policy};
use crate::ledger::actor::CycleRecord;
use crate::ledger::Totals;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use std::sync::Arc;
use std::time::Duration;

/// The least real time a cycle's reads and writes get, whatever the cycle period.
pub const MIN_IO_BUDGET: Duration = Duration::from_millis(100);

/// A cycle this many periods after the last one books its gap as estimated.
const LATE_CYCLES: f64 = 3.0;

/// Messages the control loop takes between cycles.
#[derive(Debug)]
pub enum ControlMsg {
    /// A reloaded, validated policy (SIGHUP).
    ReplacePolicy(Box<Policy>),
    /// Change one charger's mode (HTTP, authenticated).
    SetMode { id: String, mode: ChargeMode },
}

/// The control loop's state.
pub struct Controller {
    pub(crate) config: StationConfig,
    pub(crate) devices: DeviceSet,
    state: DispatchState,
    plan: Plan,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    cycle: u64,
    /// Station-monotonic time of the last cycle (for the ledger's cycle length).
    last_mono: Option<Duration>,
    ticks: Ticks,
    today: TodayStatus,
    setpoints: Vec<(usize, Setpoint)>,
    fitted: Fitted,
    crosscheck: MeterCrossCheck,
    /// The predictive planner's budgets, when `[planner]` is on.
    planning: Option<LivePlan>,
    /// The ledger's last measured balance terms (for cycles with several missing).
    held: TermHold,
    /// The ledger's energy held to the devices' counters.
    counters: CounterReconciler,
    health: Option<super::health::DaemonHealth>,
}

/// Local midnight of `now` in `tz`, as UTC.
fn local_midnight(now: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = now.with_timezone(&tz);
    tz.with_ymd_and_hms(local.year(), local.month(), local.day(), 0, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

/// Today's scorecard from the ledger's totals since local midnight.
fn today_status(t: &Totals, co2: f64) -> TodayStatus {
    let load_wh = t.sum.building_wh + t.sum.vehicles_wh;
    TodayStatus {
        pv_kwh: t.sum.pv_wh / 1000.0,
        grid_import_kwh: t.sum.import_wh / 1000.0,
        grid_export_kwh: t.sum.export_wh / 1000.0,
        self_consumption_pct: t.self_consumption_pct,
        self_sufficiency_pct: t.self_sufficiency_pct,
        peak_import_kw: t.peak_15min_import_w / 1000.0,
        ev_delivered_kwh: t.sum.vehicles_wh / 1000.0,
        ev_green_share_pct: t.ev_green_share_pct,
        co2_kg: t.sum.co2_kg,
        co2_avoided_kg: ((load_wh - t.sum.import_wh).max(0.0) / 1000.0) * co2,
        cost_cny: t.net_energy_cost_cny,
    }
}

impl Controller {
    pub fn new(
        config: StationConfig,
        clock: Arc<dyn Clock>,
        shared: Arc<Shared>,
        background: super::device_set::Background,
    ) -> Self {
        let devices = DeviceSet::new(&config, background);
        let ticks = Ticks::new(clock.speed());
        let has = |f: fn(&DeviceRole) -> bool| config.devices.iter().any(|d| f(&d.role));
        let fitted = Fitted {
            pv: has(|r| matches!(r, DeviceRole::Pv { .. })),
            battery: has(|r| matches!(r, DeviceRole::Battery { .. })),
        };
        Controller {
            fitted,
            crosscheck: MeterCrossCheck::default(),
            held: TermHold::default(),
            counters: CounterReconciler::default(),
            config,
            devices,
            state: DispatchState::new(),
            plan: Plan::default(),
            clock,
            shared,
            cycle: 0,
            last_mono: None,
            ticks,
            today: TodayStatus::default(),
            setpoints: Vec::new(),
            planning: None,
            health: None,
        }
    }

    /// Follow the plans of `planning` (the planner's task runs elsewhere).
    pub fn follow(&mut self, planning: std::sync::Arc<planning::Planning>) {
        self.planning = Some(LivePlan::new(planning, &self.config.policy));
    }

    /// Set this cycle's plan budget; the state to hand the planner after the decision.
    fn follow_plan(&mut self, now: DateTime<Utc>, snap: &dispatch::Snapshot) -> Option<CycleState> {
        let live = self.planning.as_mut()?;
        let ledger = self.shared.ledger_view();
        let tz = self.config.policy.timezone;
        let state = planning::cycle_state(now, tz, snap, &self.plan, &self.state, |id| {
            ledger
                .open_sessions
                .iter()
                .find(|o| o.charger_id == id)
                .map(|o| o.energy_wh)
        });
        self.state
            .set_plan_budget(live.budget(now, &state.chargers));
        Some(state)
    }

    /// Continue the energy counters' reconciliation from the ledger's saved states.
    pub fn restore_counters(&mut self, saved: &[crate::ledger::SavedCounter]) {
        self.counters.restore(saved, self.clock.now());
    }

    /// Measure the battery's health and dispatch on it (see `daemon::health`).
    pub fn set_health(&mut self, health: super::health::DaemonHealth) {
        self.health = Some(health);
    }

    /// Continue the demand charge (open window, month peak) from a persisted state.
    pub fn restore_demand(&mut self, state: crate::dispatch::DemandState) {
        self.state.restore_demand(state);
    }

    /// Deadlines of this cycle's reads (60 % of the budget) and writes (the whole budget): the
    /// budget is `control.cycle_budget_pct` of the real cycle period, at least
    /// [`MIN_IO_BUDGET`] (a demo at 60x has 17 ms cycles).
    fn io_deadlines(&self) -> (Deadline, Deadline) {
        let start = tokio::time::Instant::now();
        let budget = self
            .period()
            .mul_f64(self.config.cycle_budget)
            .max(MIN_IO_BUDGET);
        let reads = budget.mul_f64(0.6);
        (
            Deadline {
                at: start + reads,
                budget: reads,
            },
            Deadline {
                at: start + budget,
                budget,
            },
        )
    }

    /// Real time between cycles.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64((self.config.policy.cycle_s / self.clock.speed()).max(0.001))
    }

    pub fn handle(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::ReplacePolicy(p) => {
                tracing::info!("policy reloaded");
                self.config.policy = *p;
            }
            ControlMsg::SetMode { id, mode } => {
                let chargers = &mut self.config.policy.vehicles.chargers;
                match chargers.iter_mut().find(|(c, _)| *c == id) {
                    Some((_, p)) => p.mode = mode,
                    None => chargers.push((
                        id.clone(),
                        ChargerPolicy {
                            mode,
                            min: None,
                            max: None,
                            priority: 0,
                        },
                    )),
                }
                tracing::info!(charger = %id, ?mode, "charger mode changed");
            }
        }
    }

    /// One control cycle: read every device, observe, decide, write every setpoint, publish.
    pub async fn cycle(&mut self) {
        let started = crate::clock::monotonic();
        let now = self.clock.now();
        let mono = self.ticks.now();
        let (reads_by, writes_by) = self.io_deadlines();
        self.devices.read_all(now, mono, reads_by).await;
        let mut observed = snapshot::build(&self.devices, &self.config, mono);
        if let Some(h) = self.health.as_mut() {
            h.cycle(now, &mut observed, &self.config.policy);
        }
        let for_planner = self.follow_plan(now, &observed.snapshot);
        dispatch::decide_into(
            &observed.snapshot,
            &self.config.policy,
            &mut self.state,
            now,
            &mut self.plan,
        );
        if let (Some(live), Some(mut st)) = (&mut self.planning, for_planner) {
            st.pv_limited = self.plan.pv_limit.value() < 99.5;
            live.hand_over(st);
        }
        self.collect_setpoints(&observed.snapshot);
        self.devices.write_all(&self.setpoints, writes_by).await;
        let cycle_s = started.elapsed().as_secs_f64();
        self.cycle += 1;
        self.publish(now, mono, &observed, cycle_s);
        self.last_mono = Some(mono);
    }

    fn collect_setpoints(&mut self, snap: &dispatch::Snapshot) {
        self.setpoints.clear();
        for (i, d) in self.devices.devices.iter().enumerate() {
            match &d.config.role {
                DeviceRole::Charger(_) => {
                    if let Some(sp) = self.plan.chargers.iter().find(|c| c.id.as_str() == d.id()) {
                        self.setpoints
                            .push((i, Setpoint::ChargerA(sp.amps.value())));
                    }
                }
                DeviceRole::Battery { .. } => {
                    // A battery dispatch cannot use (offline, invalid readings, alarm, not
                    // operating) is told 0 W wherever its link still takes a write.
                    let w = if snap.battery.online {
                        self.plan.battery.value()
                    } else {
                        0.0
                    };
                    self.setpoints.push((i, Setpoint::BatteryW(w)));
                }
                DeviceRole::Pv { .. } if snap.pv.power.is_fresh() => {
                    self.setpoints
                        .push((i, Setpoint::PvLimitPct(self.plan.pv_limit.value())));
                }
                _ => {}
            }
        }
    }

    /// Publish the cycle: ledger, history, metrics and status, all from one [`CycleView`].
    fn publish(
        &mut self,
        now: DateTime<Utc>,
        mono: Duration,
        observed: &Observation,
        cycle_s: f64,
    ) {
        let policy = &self.config.policy;
        let view = CycleView {
            observed,
            plan: &self.plan,
            policy,
            fitted: self.fitted,
        };
        // The whole station-monotonic time since the last cycle is booked, late or not (a
        // stall longer than `LATE_CYCLES` cycles stretches one sample: estimated); only a gap
        // beyond `publish::HOLD_MAX` (a suspended host) is cut, its energy then comes from the
        // counters.
        let gap_s = self
            .last_mono
            .map_or(0.0, |t| mono.saturating_sub(t).as_secs_f64());
        let dt_s = gap_s.min(publish::HOLD_MAX.as_secs_f64());
        let late = gap_s > LATE_CYCLES * policy.cycle_s;
        let midnight = local_midnight(now, policy.timezone);
        // The meters are checked first: a building meter they overrule is booked as estimated.
        let disagreement = self.crosscheck.update(mono, view.meter_residual());
        let suspect = disagreement.is_some().then_some(publish::Term::Building);
        let flows = view.ledger_flows(&mut self.held, mono, suspect);
        let correction = self.counters.step(
            &flows.powers,
            &view.charger_counters(&flows),
            dt_s,
            &view.counters(),
            mono,
        );
        let record = CycleRecord {
            at: now,
            dt_s,
            pv_w: flows.powers.pv_w,
            building_w: flows.powers.building_w,
            battery_w: flows.powers.battery_w,
            grid_w: flows.powers.grid_w,
            unread_vehicles_w: flows.unread_vehicles_w,
            estimated: late || !flows.estimated.is_empty(),
            correction,
            counters: self.counters.saved(now, mono),
            chargers: flows.chargers,
            price_cny_per_kwh: policy.tariff.price_at(policy.local_minute(now)),
            export_price_cny_per_kwh: policy.tariff.export_price_cny_per_kwh,
            co2_kg_per_kwh: policy.co2_kg_per_kwh,
            demand: Some(self.state.demand().state()),
            today_from: midnight,
        };
        self.shared.record_ledger(record);
        let ledger = self.shared.ledger_view();
        if let Some(t) = &ledger.today {
            self.today = today_status(t, policy.co2_kg_per_kwh);
        }
        self.shared.record_history(now, view.history_sample());
        self.shared.record_cycle(&self.devices, cycle_s);
        let status = Status {
            station: self.config.name.clone(),
            timezone: policy.timezone.name().to_string(),
            time: now,
            cycle: self.cycle,
            cycle_ms: cycle_s * 1000.0,
            grid: GridStatus {
                month_peak_w: self.state.demand().month_peak().value(),
                demand_window_avg_w: self.state.demand().window_average().value(),
                ..view.grid()
            },
            pv: view.pv(),
            battery: view.battery(),
            building: view.building(),
            chargers: view
                .chargers(|id| {
                    ledger
                        .open_sessions
                        .iter()
                        .find(|o| o.charger_id == id)
                        .map(|o| (o.energy_wh, o.green_share_pct))
                })
                .into_iter()
                .map(|mut c| {
                    c.wish = self.planning.as_ref().and_then(|p| p.wish(&c.id));
                    c
                })
                .collect(),
            devices: publish::links(&self.devices, disagreement.as_ref()),
            reasons: self
                .plan
                .reasons
                .iter()
                .map(|r| r.to_string())
                .chain(disagreement.map(|d| d.reason()))
                .chain(self.planning.iter().flat_map(|p| p.reasons(now)))
                .chain(
                    self.health
                        .as_ref()
                        .and_then(|h| h.warning())
                        .map(|w| format!("battery_soh_disagreement: {w}")),
                )
                .collect(),
            today: self.today.clone(),
        };
        self.shared.publish(status);
    }

    /// Drop the requests of a cycle cut short (shutdown), closing their connections.
    pub fn abandon_cycle(&mut self) {
        self.devices
            .abandon_in_flight("finish before shutdown", Duration::ZERO);
    }

    /// Write safe setpoints to every device under the shutdown deadline.
    pub async fn shutdown(&mut self) {
        let deadline = self.config.shutdown_deadline;
        if tokio::time::timeout(deadline, self.devices.safe_all())
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "safe setpoints not all written before the deadline; devices fall back on their own"
            );
        }
    }
}

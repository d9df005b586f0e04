//! What [`super::decide`] remembers between cycles.

use super::snapshot::{ChargerId, ChargerSnapshot};
use crate::units::{Amps, Watts};
use chrono::{DateTime, Datelike, Utc};

/// Length of the demand-charge averaging window, s.
pub const DEMAND_WINDOW_S: i64 = 900;

/// Per-charger memory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChargerMemory {
    pub id: ChargerId,
    /// Whether the last setpoint was above 0 A.
    pub on: bool,
    /// When `on` last changed; `None` = long ago (min on/off times satisfied).
    pub switched_at: Option<DateTime<Utc>>,
    /// Last setpoint, for the ramp-up limit.
    pub last_amps: Amps,
    /// When the current vehicle was first seen plugged in (for first-come sharing).
    pub plugged_since: Option<DateTime<Utc>>,
    /// Most phases the plugged car has been seen drawing on this session (0: not seen drawing
    /// yet). A one-phase car on a three-phase charger draws a third of the power its current
    /// setpoint would give a three-phase one.
    pub car_phases: u8,
}

/// Current on a phase, A, at or above which the phase counts as drawn by the car (below it a
/// car is ramping, waking or idle; measurement noise on an unused phase stays well under it).
const PHASE_DRAWN_A: f64 = 2.0;

/// Phases `c`'s car draws on now: those carrying at least [`PHASE_DRAWN_A`] and a quarter of the
/// highest phase's current (0 when the car draws nothing worth counting).
pub(crate) fn phases_drawn(c: &ChargerSnapshot) -> u8 {
    let peak = c.current.iter().fold(0.0_f64, |m, a| m.max(a.0));
    if !c.online || !peak.is_finite() || peak < PHASE_DRAWN_A {
        return 0;
    }
    let floor = PHASE_DRAWN_A.max(0.25 * peak);
    c.current.iter().filter(|a| a.0 >= floor).count() as u8
}

impl ChargerMemory {
    fn fresh(c: &ChargerSnapshot, now: DateTime<Utc>) -> Self {
        // Start from what the charger draws now, so a restart does not ramp a running car
        // down and back up.
        let measured = if c.online {
            c.current.iter().fold(0.0_f64, |m, a| m.max(a.0)).max(0.0)
        } else {
            0.0
        };
        ChargerMemory {
            id: c.id.clone(),
            on: measured > 0.0,
            switched_at: None,
            last_amps: Amps(measured),
            plugged_since: if c.plugged { Some(now) } else { None },
            car_phases: if c.plugged { phases_drawn(c) } else { 0 },
        }
    }

    /// Phases the charger's power is counted on: the charger's own (1 or 3; 3 when it does
    /// not say), or fewer once the session's car has been seen drawing on fewer.
    pub(crate) fn counted_phases(&self, c: &ChargerSnapshot) -> u8 {
        let own = if c.phases == 0 { 3 } else { c.phases.min(3) };
        match self.car_phases {
            0 => own,
            seen => seen.min(own),
        }
    }

    /// Seconds since the last on/off switch (infinite when never switched).
    pub(crate) fn since_switch_s(&self, now: DateTime<Utc>) -> f64 {
        match self.switched_at {
            Some(t) => (now - t).num_milliseconds() as f64 / 1000.0,
            None => f64::INFINITY,
        }
    }
}

/// Unix time of the start of the clock-aligned demand window containing `now`, s.
fn window_start_s(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(DEMAND_WINDOW_S) * DEMAND_WINDOW_S
}

/// Tracks the 15-minute average import and the month's peak for the demand charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandTracker {
    /// Unix time of the start of the current window, s (`None` before the first reading).
    window_start_s: Option<i64>,
    /// Import energy in the current window so far, W*s.
    energy_ws: f64,
    /// Local `year * 12 + month` the peak belongs to.
    month_key: i32,
    /// Highest closed-window average import this month.
    month_peak: Watts,
}

impl Default for DemandTracker {
    fn default() -> Self {
        DemandTracker {
            window_start_s: None,
            energy_ws: 0.0,
            month_key: i32::MIN,
            month_peak: Watts::ZERO,
        }
    }
}

/// Local `year * 12 + month` of `now` in the site's time zone `tz`: the demand charge's
/// billing month.
pub fn month_key(now: DateTime<Utc>, tz: chrono_tz::Tz) -> i32 {
    let local = now.with_timezone(&tz);
    local.year() * 12 + local.month() as i32
}

impl DemandTracker {
    /// Account `grid` (import > 0; `None` when unknown) over the last `dt_s` seconds, closing
    /// the window when `now` has moved into a new one.
    pub(crate) fn update(
        &mut self,
        now: DateTime<Utc>,
        grid: Option<Watts>,
        dt_s: f64,
        month_key: i32,
    ) {
        let ws = window_start_s(now);
        if self.window_start_s != Some(ws) {
            if self.window_start_s.is_some() {
                let avg = Watts(self.energy_ws / DEMAND_WINDOW_S as f64);
                self.month_peak = self.month_peak.max(avg);
            }
            self.window_start_s = Some(ws);
            self.energy_ws = 0.0;
        }
        if self.month_key != month_key {
            self.month_key = month_key;
            self.month_peak = Watts::ZERO;
        }
        if let Some(g) = grid {
            self.energy_ws += g.0.max(0.0) * dt_s;
        }
    }

    /// Highest 15-minute average import of closed windows this month.
    pub fn month_peak(&self) -> Watts {
        self.month_peak
    }

    /// The month's peak as it stands at `now`, in the billing month `month_key`
    /// ([`month_key`] of `now`): with the open window's average once `now` has moved past it
    /// (the cycle's next update closes it), so a caller that looks before the cycle's update
    /// does not miss the window that just ended; zero once `now` is in a month the tracker has
    /// not seen yet (the window that just ended belongs to the month before, whose peak the new
    /// month does not inherit).
    pub fn month_peak_at(&self, now: DateTime<Utc>, month_key: i32) -> Watts {
        if month_key != self.month_key {
            return Watts::ZERO;
        }
        let ws = window_start_s(now);
        match self.window_start_s {
            Some(open) if open != ws => self
                .month_peak
                .max(Watts(self.energy_ws / DEMAND_WINDOW_S as f64)),
            _ => self.month_peak,
        }
    }

    /// Average import of the current window so far, over the full 15 minutes.
    pub fn window_average(&self) -> Watts {
        Watts(self.energy_ws / DEMAND_WINDOW_S as f64)
    }

    /// Instantaneous import allowed for the rest of this window so that its average stays at
    /// or below `target`, within `[0, cap]`.
    pub(crate) fn instant_target(
        &self,
        now: DateTime<Utc>,
        target: Watts,
        cap: Watts,
        cycle_s: f64,
    ) -> Watts {
        let start = self.window_start_s.unwrap_or(now.timestamp());
        let elapsed = (now.timestamp() - start).clamp(0, DEMAND_WINDOW_S) as f64;
        let remaining = (DEMAND_WINDOW_S as f64 - elapsed).max(cycle_s);
        let budget = (target.0 * DEMAND_WINDOW_S as f64 - self.energy_ws) / remaining;
        Watts(budget).clamp(Watts::ZERO, cap)
    }
}

/// What a [`DemandTracker`] must keep across a restart: the open 15-minute window and the
/// month's peak (the ledger persists it, see `ledger::Ledger::save_demand_state`), so a
/// restarted daemon neither forgets the energy already imported in the window nor bills a new
/// peak below the one already reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandState {
    /// Unix time of the start of the open window, s (`None` before the first reading).
    pub window_start_s: Option<i64>,
    /// Import energy in the open window so far, W*s.
    pub energy_ws: f64,
    /// Local `year * 12 + month` the peak belongs to.
    pub month_key: i32,
    /// Highest closed-window average import of that month, W.
    pub month_peak_w: f64,
}

impl DemandTracker {
    /// The state to persist.
    pub fn state(&self) -> DemandState {
        DemandState {
            window_start_s: self.window_start_s,
            energy_ws: self.energy_ws,
            month_key: self.month_key,
            month_peak_w: self.month_peak.0,
        }
    }

    /// A tracker continuing from a persisted state. Non-finite or negative energies count as
    /// 0; a window or month that has passed is closed by the next update as usual.
    pub fn from_state(s: DemandState) -> Self {
        let clean = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        DemandTracker {
            window_start_s: s.window_start_s,
            energy_ws: clean(s.energy_ws),
            month_key: s.month_key,
            month_peak: Watts(clean(s.month_peak_w)),
        }
    }
}

/// Role of a charger in one decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Role {
    /// Gets 0 A (offline, not charging-capable, empty current range).
    #[default]
    Idle,
    Fast,
    MinSolar,
    /// Solar charger kept on by `min_on_s`.
    SolarHeld,
    Solar,
}

/// Per-charger scratch used inside one decision (kept to avoid allocating every cycle).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Work {
    pub role: Role,
    /// W per A: phases x 230 V.
    pub w_per_a: f64,
    /// Minimum current and ramp-limited maximum this cycle, A.
    pub min: f64,
    pub cap: f64,
    /// Maximum without the ramp limit, A.
    pub max: f64,
    /// Allocation bounds for the pass being run, A.
    pub lo: f64,
    pub hi: f64,
    /// Allocation result of the pass being run, A.
    pub got: f64,
    /// Results of the firm and the solar pass, A.
    pub firm: f64,
    pub extra: f64,
    /// Under a plan budget: the car's planned and floor current this cycle, A.
    pub planned: Option<(f64, f64)>,
    /// Sort keys.
    pub priority: i32,
    pub plugged_rank: i64,
}

/// Everything that persists between cycles. Create once with [`DispatchState::new`] and pass
/// the same value to every [`super::decide`] call of one station.
#[derive(Debug, Clone, Default)]
pub struct DispatchState {
    pub(crate) chargers: Vec<ChargerMemory>,
    pub(crate) last_now: Option<DateTime<Utc>>,
    pub(crate) last_battery: Watts,
    pub(crate) demand: DemandTracker,
    pub(crate) work: Vec<Work>,
    pub(crate) order: Vec<usize>,
    pub(crate) plan_budget: Option<PlanBudget>,
}

/// What a planner ([`crate::planner`]) asks of the running step; `decide` follows it until
/// `until` and still enforces every hard limit. Without one `decide` runs the rule policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanBudget {
    /// End of the step the budget is for; ignored from then on.
    pub until: DateTime<Utc>,
    /// The 15-minute average import the step may reach (the planned demand peak).
    pub import_ceiling: Watts,
    /// The import the plan expects over the rest of the step (None: not given). Import above
    /// it is served from the battery while discharging pays at the price now.
    pub planned_import: Option<Watts>,
    /// The export the plan expects over the rest of the step (None: not given). While it is
    /// zero, a surplus the grid would take is stored in the battery instead.
    pub planned_export: Option<Watts>,
    /// Battery state of charge to reach by `until`, %.
    pub battery_soc_target_pct: Option<f64>,
    /// The PCS's one-way efficiency, to turn stored energy into AC power (1.0: lossless).
    pub battery_efficiency: f64,
    /// Per charger with a car in the plan; chargers not listed follow the rule policy.
    pub chargers: Vec<(ChargerId, CarBudget)>,
}

/// What the plan asks for one plugged car.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CarBudget {
    /// Energy still to deliver by the step's end, Wh.
    pub step_wh: f64,
    /// Energy the car still wants, Wh, and when it leaves: `decide` never gives it so little
    /// that the rest of the wish no longer fits before then (the plan's timing is a
    /// preference, the wish is the customer's).
    pub wish_wh: f64,
    pub departs: DateTime<Utc>,
    /// The car's own charging power limit (on-board charger, phases), W; the charger's rating
    /// caps it too.
    pub max_w: f64,
}

impl DispatchState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follow `budget` from the next decision on (`None`: the rule policy).
    pub fn set_plan_budget(&mut self, budget: Option<PlanBudget>) {
        self.plan_budget = budget;
    }

    /// The plan budget in force at `now`, if any.
    pub fn plan_budget(&self, now: DateTime<Utc>) -> Option<&PlanBudget> {
        self.plan_budget.as_ref().filter(|b| now < b.until)
    }

    /// Phases the car plugged in at `id` has been seen drawing on this session (`None`: not
    /// seen drawing yet).
    pub fn car_phases(&self, id: &ChargerId) -> Option<u8> {
        self.chargers
            .iter()
            .find(|m| &m.id == id)
            .and_then(|m| (m.car_phases > 0).then_some(m.car_phases))
    }

    /// The demand-charge tracker (month peak, current window average).
    pub fn demand(&self) -> &DemandTracker {
        &self.demand
    }

    /// Continue the demand charge from a persisted state (at start, before the first cycle).
    pub fn restore_demand(&mut self, s: DemandState) {
        self.demand = DemandTracker::from_state(s);
    }

    /// The last battery setpoint decided (> 0 discharge).
    pub fn last_battery(&self) -> Watts {
        self.last_battery
    }

    /// The last current decided for charger `id`, if it is known.
    pub fn last_amps(&self, id: &str) -> Option<Amps> {
        self.chargers
            .iter()
            .find(|m| m.id.as_str() == id)
            .map(|m| m.last_amps)
    }

    /// Seconds since the previous decision, within `[0, 10 x cycle]`; one cycle at first.
    pub(crate) fn elapsed_s(&self, now: DateTime<Utc>, cycle_s: f64) -> f64 {
        match self.last_now {
            Some(t) => ((now - t).num_milliseconds() as f64 / 1000.0).clamp(0.0, 10.0 * cycle_s),
            None => cycle_s,
        }
    }

    /// Line the per-charger memory up with the snapshot's chargers (same order, same ids).
    /// Allocates only when the roster changes.
    pub(crate) fn sync_roster(&mut self, chargers: &[ChargerSnapshot], now: DateTime<Utc>) {
        let aligned = self.chargers.len() == chargers.len()
            && self
                .chargers
                .iter()
                .zip(chargers)
                .all(|(m, c)| m.id == c.id);
        if !aligned {
            let mut old = std::mem::take(&mut self.chargers);
            self.chargers = chargers
                .iter()
                .map(|c| match old.iter().position(|m| m.id == c.id) {
                    Some(i) => old.swap_remove(i),
                    None => ChargerMemory::fresh(c, now),
                })
                .collect();
        }
        for (m, c) in self.chargers.iter_mut().zip(chargers) {
            if !c.plugged {
                m.plugged_since = None;
                m.car_phases = 0;
            } else {
                if m.plugged_since.is_none() {
                    m.plugged_since = Some(now);
                }
                m.car_phases = m.car_phases.max(phases_drawn(c));
            }
        }
        if self.work.len() != chargers.len() {
            self.work.resize(chargers.len(), Work::default());
        }
    }
}

//! The dispatch core: [`decide`] turns a [`Snapshot`] of the plant, the checked [`Policy`],
//! the [`DispatchState`] carried between cycles and the time `now` into a [`Plan`].
//!
//! `decide` is pure apart from the state it is handed: no clock, no I/O, no async, it cannot
//! fail, and after the first cycle with a given charger roster it does not allocate when used
//! through [`decide_into`] with a reused [`Plan`]. The daemon, the closed-loop tests and the
//! backtests all call it once per cycle (1 s).
//!
//! Sign convention: grid > 0 import, battery > 0 discharge, PV > 0 generation, loads > 0
//! consume. The plan's balance is `grid = base + uncontrolled chargers + chargers - pv - battery`.
//!
//! # Algorithm (one cycle)
//!
//! 1. **Inputs.** Local time (policy time zone) gives the tariff price from a per-minute table
//!    precomputed by the policy. The base load is the building meter (fresh), else derived
//!    from the grid meter (`grid - chargers + pv + battery`), never below 0. Chargers that
//!    cannot be steered count as fixed load: an offline charger at its full rating
//!    (`phases x 230 V x rating`), an online one in a non-charging state at its measured
//!    power. PV for import decisions is the measured output (0 when unknown); PV for surplus
//!    decisions adds a 5 %-of-rating probe while the inverter sits at its limit, so a curtailed
//!    array can be released when loads appear.
//! 2. **Battery bounds.** Idle (0 W) when offline, in alarm, SoC not fresh, or temperature
//!    outside -10..55 °C (charging also needs 0..45 °C). Otherwise charge up to
//!    min(BMS, C-rate cap x usable Wh, energy left to `soc_max`) and 0 at/above `soc_max`;
//!    discharge up to min(BMS, C-rate cap, energy above `soc_min`) and 0 at/below `soc_min`.
//!    The battery's measured health (`BatterySnapshot::health`, see `crate::health`) narrows
//!    the SoC window (cell spread) and scales the BMS limits (module temperatures).
//!    The evening reserve lowers the *economic* discharge bound (tariff arbitrage and peak
//!    shaving) to the energy above the reserve while its window is open; only the import
//!    limit may use the energy down to `soc_min` (serving the cars that are here now is what
//!    the reserve keeps energy for).
//! 3. **Grid budget for vehicles** (all in the same cycle, from measurements now):
//!    `G = import_budget - base - uncontrolled chargers + pv + D`, where `import_budget` is
//!    `import_limit - import_margin` (load steps, PV drops and falling BMS limits show up one
//!    cycle late, so the plan never sits right at the limit) and `D` is the battery's full
//!    discharge bound when vehicles are served first. With the dealer served first `D` is at
//!    most the building's net load (`base + uncontrolled - pv`): the battery may carry the
//!    building so that the grid's share of the limit goes to the cars, never the cars
//!    themselves; it discharges for that only when the limit binds. A per-phase amp budget
//!    from `phase_fuse_a` applies too when per-phase grid power is fresh (each charger's
//!    amps are counted on every phase, which is conservative for 1-phase chargers).
//! 4. **Firm pass.** Fast chargers ask up to their cap, min_solar ones and solar ones held
//!    on by `min_on_s` ask their minimum; the budget is shared (`equal`: everyone who fits
//!    gets the minimum in first-come order, then equal amps by water-filling; `first_come`
//!    and `priority`: served fully in order). A charger gets 0 A or at least its minimum.
//!    The cap of a charger is `min(max, max(min, last + ramp x dt))`: increases are
//!    ramp-limited, decreases immediate, a start jumps straight to the minimum.
//! 5. **Solar pass.** The PV surplus left (`pv - chargers so far`, and with the dealer first
//!    also minus the building; the battery charges from what the cars leave), capped by what
//!    is left of `G`,
//!    is shared among solar and min_solar chargers. A paused solar charger starts only when
//!    its share reaches `min + hysteresis_w` and `min_off_s` has passed; a running one
//!    follows its share, stays at the minimum while the share is within the hysteresis below
//!    it (if `G` allows), and pauses below that once `min_on_s` has passed.
//! 6. **Battery.** With a surplus it charges from PV (up to the charge bound). With import,
//!    whenever the price pays for it, `price > stored value / efficiency + wear cost` (in
//!    the flat period as in the peak; the evening reserve keeps what the evening peak needs),
//!    it discharges to cover the building (dealer first) or the whole net load (vehicles
//!    first); in the cheapest period with `grid_charging_in_valley` it charges from the grid
//!    only up to the month's peak so far (cheap energy never pays for a new demand peak).
//!    Then it discharges what is needed to keep import under the import budget and under the
//!    15-minute demand target (peak shaving with the economic bound; the target rises to the
//!    month's peak). If import still exceeds the hard limit a reason says so.
//! 7. **PV limit.** Only when export would exceed the export limit: PV is limited to
//!    `loads + battery charge + export limit` (zero export possible).
//!
//! **Plan budgets.** While the state carries a [`PlanBudget`] for the running step (from the
//! predictive planner, [`crate::planner`]), step 4 caps each budgeted car at the power that
//! delivers its step energy over the rest of the step, but never below what it must get now
//! for the rest of its wish to fit before departure at 50 % of the car's power (a budgeted
//! solar car charges like a fast one; a car leaving inside the step gets it before it
//! leaves), and when the budgeted cars' powers exceed what the plan's import ceiling leaves
//! them now (battery at its hard discharge bound), each is held back in proportion toward
//! that must; step 6's economic choice is replaced by the power that reaches the SoC target
//! by the step's end (within the charge and hard discharge bounds), or more while discharging
//! pays at the price now and the import would exceed the plan's (up to the economic bound: a
//! forecast miss or a car at its full-power allowance is served from the battery, not bought
//! at that price; the next plan starts from the SoC this leaves), or more charging when the
//! grid would export a surplus the plan's step does not (stored, not sold), and peak shaving
//! works toward the plan's import ceiling with the hard discharge bound. The import limit, the SoC
//! window, the BMS and charger limits and the stale-grid rules apply unchanged. Without a
//! budget (or after it expires) nothing of this runs.
//!
//! **Conservative handling.** Stale or missing grid power: every charger gets at most its
//! safe current (0 if that is below its minimum), the battery's discharge does not increase
//! and it does not charge from the grid. A charger not in B1/B2/C1/C2/D, or offline, gets 0 A.

pub mod plan;
pub mod policy;
pub mod snapshot;
pub mod state;
#[cfg(test)]
mod tests;

pub use plan::{BatteryIdleCause, ChargerSetpoint, Plan, PowerBalance, Reason};
pub use policy::{
    BatteryPolicy, ChargeMode, ChargerPolicy, EveningReserve, GridPolicy, Policy, ServeFirst,
    Sharing, Tariff, TariffPeriod, VehiclePolicy,
};
pub use snapshot::{
    BatterySnapshot, ChargerId, ChargerSnapshot, ChargerState, Freshness, GridSnapshot,
    HealthLimits, PvSnapshot, Reading, Snapshot,
};
pub use state::{month_key, CarBudget, DemandState, DemandTracker, DispatchState, PlanBudget};

use crate::units::{Amps, Percent, Watts, NOMINAL_VOLTAGE};
use chrono::{DateTime, Utc};
use state::{Role, Work};

/// Share of the PV rating added to the measured output while the inverter sits at its limit.
const PV_PROBE_FRACTION: f64 = 0.05;
/// Unseen load (measured grid above the planned import) worth a reason on the dashboard, W.
const GRID_FEEDBACK_REPORT_W: f64 = 500.0;
/// Amps below which a value counts as 0.
const EPS_A: f64 = 1e-6;
/// Watts below which a value counts as 0.
const EPS_W: f64 = 1e-3;
/// Battery temperature windows, °C (docs/reference-station.md): discharge -10..55, charge 0..45.
const DISCHARGE_TEMP_C: (f64, f64) = (-10.0, 55.0);
const CHARGE_TEMP_C: (f64, f64) = (0.0, 45.0);

/// Decide the setpoints for this cycle. See the module doc for the algorithm.
pub fn decide(
    snapshot: &Snapshot,
    policy: &Policy,
    state: &mut DispatchState,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan {
        chargers: Vec::with_capacity(snapshot.chargers.len()),
        reasons: Vec::with_capacity(4),
        ..Plan::default()
    };
    decide_into(snapshot, policy, state, now, &mut plan);
    plan
}

/// [`decide`] writing into a reused plan (no allocation once capacities are reached). Each step
/// of the module doc's algorithm is one function below.
pub fn decide_into(
    snapshot: &Snapshot,
    policy: &Policy,
    state: &mut DispatchState,
    now: DateTime<Utc>,
    plan: &mut Plan,
) {
    plan.chargers.clear();
    plan.reasons.clear();
    let clock = cycle_clock(snapshot, policy, state, now, plan);
    let mut inputs = grid_feedback(inputs(snapshot, plan), snapshot, state, plan);
    let bounds = battery_bounds(snapshot, policy, clock.minute, plan);
    inputs.planned = planned_now(snapshot, state, now, &bounds);
    let tariff = tariff_position(policy, clock.price, &bounds, inputs.grid_fresh);
    let budgets = vehicle_budgets(snapshot, policy, &inputs, &bounds, &tariff);
    charger_roles(snapshot, policy, state, now, clock.dt, plan);
    let room_w = inputs.planned.map(|p| {
        (planned_ceiling(policy, state, now, p) - inputs.fixed
            + inputs.pv_firm
            + bounds.discharge_hard)
            .0
    });
    planned_charger_caps(snapshot, state, now, room_w);
    if inputs.grid_fresh {
        allocate_chargers(snapshot, policy, state, now, plan, budgets);
    } else {
        safe_currents(snapshot, state);
    }
    let (chargers_w, expected_w) = charger_setpoints(snapshot, state, plan);
    let net = NetLoad {
        firm: inputs.fixed + chargers_w - inputs.pv_firm,
        expected: inputs.fixed + expected_w - inputs.pv_firm,
        avail: inputs.fixed + expected_w - inputs.pv_avail,
    };
    let battery = battery_setpoint(policy, state, now, &inputs, &bounds, &tariff, net, plan);
    let (pv_limit, pv_planned) = pv_limit(policy, &inputs, expected_w, battery, plan);
    let balance = PowerBalance {
        base_load: inputs.base,
        uncontrolled_chargers: inputs.uncontrolled,
        chargers: chargers_w,
        pv: pv_planned,
        battery,
        grid: Watts::ZERO,
    };
    plan.balance = PowerBalance {
        grid: balance.implied_grid(),
        ..balance
    };
    plan.battery = battery;
    plan.pv_limit = pv_limit;
    let firm_grid = net.firm - battery;
    let import_limit = policy.grid.import_limit;
    if inputs.grid_fresh && firm_grid.0 > import_limit.0 + EPS_W {
        plan.reasons.push(Reason::ImportLimitUnreachable {
            excess: firm_grid - import_limit,
        });
    }
    remember(state, plan, battery, now);
}

/// Where this cycle sits in time: seconds since the last cycle, the local minute and its price.
struct CycleClock {
    dt: f64,
    minute: u16,
    price: f64,
}

/// Advance the state's clocks (roster, demand window) to `now`.
fn cycle_clock(
    snapshot: &Snapshot,
    policy: &Policy,
    state: &mut DispatchState,
    now: DateTime<Utc>,
    plan: &mut Plan,
) -> CycleClock {
    let dt = state.elapsed_s(now, policy.cycle_s);
    let minute = policy.local_minute(now);
    let month_key = state::month_key(now, policy.timezone);
    state.sync_roster(&snapshot.chargers, now);
    let grid_now = snapshot.grid.power.fresh_value();
    state.demand.update(now, grid_now, dt, month_key);
    if grid_now.is_none() {
        plan.reasons.push(Reason::GridStale);
    }
    CycleClock {
        dt,
        minute,
        price: policy.tariff.price_at(minute),
    }
}

/// Step 1: what the plant gives and takes that dispatch cannot steer this cycle.
struct Inputs {
    grid_fresh: bool,
    pv_rating: Watts,
    /// PV reading if fresh.
    pv_reading: Option<Watts>,
    /// PV for import decisions: measured, 0 when unknown.
    pv_firm: Watts,
    /// PV for surplus decisions: measured plus the probe while at the limit.
    pv_avail: Watts,
    uncontrolled: Watts,
    base: Watts,
    /// base + uncontrolled chargers.
    fixed: Watts,
    battery_measured: Watts,
    /// The plan budget's battery power and import ceiling, while one is in force.
    planned: Option<Planned>,
}

/// A plan budget turned into powers for this cycle.
#[derive(Clone, Copy)]
struct Planned {
    /// Power that reaches the SoC target by the step's end (> 0 discharge), within the bounds.
    battery: Option<Watts>,
    import_ceiling: Watts,
    import: Option<Watts>,
    export: Option<Watts>,
}

/// Share of a charger's full power a car is counted on for after the running step when
/// checking that its wish can still be met, up to [`LATE_MARGIN_H`] before it leaves (the
/// lateness guard, [`later_wh`]). The planner keeps its plans ahead of this guard
/// ([`crate::backtest::optimum::KeepUp`]).
pub const LATE_POWER_SHARE: f64 = 0.9;

/// The last part of a car's stay the lateness guard does not count on, h. A car's taper near
/// full costs it an absolute time (about as long as its last 10 % of SoC takes at full power),
/// not a share of its stay: counted as half its power throughout instead (the guard until this
/// round), a car staying three hours was overridden to full power while it still had 50
/// minutes to spare, and eight cars plugged in together drew every kW the battery could not
/// cover (ev-rush, perfect forecasts, 7 days: 89.0 % of the savings then, 91.4 % now; mean car
/// energy unserved within 0.1 kWh a week of before on every shipped scenario). A plan kept
/// ahead of it finishes each car by this long before it leaves.
pub const LATE_MARGIN_H: f64 = 0.5;

/// The lateness guard for one car: the power it is counted on for and until when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LateGuard {
    /// W.
    pub power_w: f64,
    /// s from the reference time the car's departure was given from.
    pub until_s: f64,
}

/// The lateness guard for a car of `max_w` that leaves `leaves_in_s` after a reference time
/// (the one source of the guard's formula: the dispatch core checks cars against it, the
/// planner keeps its plans ahead of it).
pub fn late_guard(max_w: f64, leaves_in_s: f64) -> LateGuard {
    LateGuard {
        power_w: LATE_POWER_SHARE * max_w.max(0.0),
        until_s: leaves_in_s - LATE_MARGIN_H * 3600.0,
    }
}

/// Energy a car can be counted on to take in the `after_h` hours before it leaves at up to
/// `max_w`: what the lateness guard lets a budgeted car leave for later.
pub fn later_wh(max_w: f64, after_h: f64) -> f64 {
    let g = late_guard(max_w, after_h * 3600.0);
    g.power_w * g.until_s.max(0.0) / 3600.0
}

/// Seconds left in the budget's step (at least 1 s).
fn seconds_left(budget: &PlanBudget, now: DateTime<Utc>) -> f64 {
    ((budget.until - now).num_milliseconds() as f64 / 1000.0).max(1.0)
}

/// The budget in force as powers: the battery moves its stored energy to the target evenly
/// over the rest of the step (AC power through the PCS's efficiency).
fn planned_now(
    snapshot: &Snapshot,
    state: &DispatchState,
    now: DateTime<Utc>,
    bounds: &BatteryBounds,
) -> Option<Planned> {
    let budget = state.plan_budget(now)?;
    let hours = seconds_left(budget, now) / 3600.0;
    let battery = match (
        budget.battery_soc_target_pct,
        snapshot.battery.soc.fresh_value(),
    ) {
        (Some(target), Some(soc)) => {
            let dc_w = (soc.0 - target) / 100.0 * bounds.usable_wh / hours;
            let eff = budget.battery_efficiency.clamp(0.5, 1.0);
            let ac_w = if dc_w > 0.0 { dc_w * eff } else { dc_w / eff };
            Some(Watts(
                ac_w.clamp(-bounds.charge_max.0, bounds.discharge_hard.0),
            ))
        }
        _ => None,
    };
    Some(Planned {
        battery,
        import_ceiling: budget.import_ceiling,
        import: budget.planned_import,
        export: budget.planned_export,
    })
}

/// Chargers the plan budgets get at most the power that delivers their step's energy evenly
/// over the rest of the step (until the car leaves, if sooner), raised to what the car must
/// get now so that the rest of its wish still fits before it leaves ([`later_wh`] of the
/// charger's power: at least their minimum while energy is left, nothing after). A
/// plan that defers a car to a cheaper hour is followed; a plan that has fallen behind a car
/// is overridden before the car is lost.
///
/// `room_w` is what the budgeted cars may draw under the plan's import ceiling now (with the
/// battery at its hard discharge bound). When their powers exceed it, each is held back toward
/// what it must get, in proportion: a quarter that ends above the ceiling sets a peak that
/// every later plan takes as paid for and fills. (Held back only to the plan's own energy for
/// them, the cars on sunny weekday seed 4 took the peak from 18 to 40 kW over a night with an
/// empty battery and a building above its forecast: 7 days, the station's own forecasts, 71 %
/// of the savings against 86 % now. Over seeds 1-4: sunny +4.5 points, weekend +2.4, cloudy
/// -0.2, ev-rush -1.8, where the rush's cars gain from the plan's energy.)
fn planned_charger_caps(
    snapshot: &Snapshot,
    state: &mut DispatchState,
    now: DateTime<Utc>,
    room_w: Option<f64>,
) {
    let DispatchState {
        plan_budget, work, ..
    } = state;
    let Some(budget) = plan_budget.as_ref().filter(|b| now < b.until) else {
        return;
    };
    let step_h = seconds_left(budget, now) / 3600.0;
    for (w, c) in work.iter_mut().zip(&snapshot.chargers) {
        let Some(&(_, car)) = budget.chargers.iter().find(|(id, _)| *id == c.id) else {
            continue;
        };
        if w.role == Role::Idle {
            continue;
        }
        let after_h = ((car.departs - budget.until).num_milliseconds() as f64 / 3.6e6).max(0.0);
        let later_wh = later_wh(car.max_w.min(w.max * w.w_per_a), after_h);
        let must_wh = (car.wish_wh.max(0.0) - later_wh).max(0.0);
        let wh = car.step_wh.max(must_wh);
        if wh <= 1.0 {
            w.role = Role::Idle;
            continue;
        }
        // A car leaving within the step gets its energy before it leaves, not by the step's end.
        let to_leave_h = (car.departs - now).num_milliseconds() as f64 / 3.6e6;
        let hours = step_h.min(to_leave_h).max(1.0 / 3600.0);
        let amps = (wh / hours / w.w_per_a).max(w.min);
        let floor_wh = must_wh.min(wh);
        w.planned = Some((amps, (floor_wh / hours / w.w_per_a).min(amps)));
    }
    let (planned_w, floor_w) = work.iter().fold((0.0, 0.0), |(p, f), w| match w.planned {
        Some((a, fl)) => (p + a * w.w_per_a, f + fl * w.w_per_a),
        None => (p, f),
    });
    let share = match room_w {
        Some(room) if planned_w > room && planned_w > floor_w => {
            ((room - floor_w) / (planned_w - floor_w)).clamp(0.0, 1.0)
        }
        _ => 1.0,
    };
    for w in work.iter_mut() {
        if let Some((amps, floor)) = w.planned {
            w.role = Role::Fast;
            w.max = w.max.min(floor + (amps - floor) * share);
            w.cap = w.cap.min(w.max);
        }
    }
}

fn inputs(snapshot: &Snapshot, plan: &mut Plan) -> Inputs {
    let grid_now = snapshot.grid.power.fresh_value();
    let pv_rating = snapshot.pv.rating.max(Watts::ZERO);
    let pv_reading = snapshot.pv.power.fresh_value();
    let pv_firm = pv_reading
        .unwrap_or(Watts::ZERO)
        .clamp(Watts::ZERO, pv_rating);
    let pv_limit_w = pv_rating * snapshot.pv.limit.fraction().clamp(0.0, 1.0);
    let pv_at_limit = pv_reading.is_some()
        && snapshot.pv.limit.0 < 100.0
        && pv_firm.0 >= pv_limit_w.0 - 0.01 * pv_rating.0;
    let pv_avail = if pv_at_limit {
        (pv_firm + pv_rating * PV_PROBE_FRACTION).min(pv_rating)
    } else {
        pv_firm
    };
    let (uncontrolled, measured_chargers) = charger_loads(snapshot, plan);
    let battery_measured = snapshot.battery.power.fresh_value().unwrap_or(Watts::ZERO);
    let base = match (snapshot.building.fresh_value(), grid_now) {
        (Some(b), _) => b,
        (None, Some(g)) => g - measured_chargers + pv_firm + battery_measured,
        (None, None) => snapshot.building.value,
    }
    .max(Watts::ZERO);
    Inputs {
        grid_fresh: grid_now.is_some(),
        pv_rating,
        pv_reading,
        pv_firm,
        pv_avail,
        uncontrolled,
        base,
        fixed: base + uncontrolled,
        battery_measured,
        planned: None,
    }
}

/// Step 1b: the grid meter governs. What the measured grid import exceeds the import this cycle
/// was planned to cause (the other meters now, the chargers at their last setpoints, the battery
/// at its last setpoint) is load the plan did not see: a building meter that reads low, zero,
/// frozen or inverted, an unmetered circuit, a charger or a PCS that does not follow its
/// setpoint. It is added to the base load, so the vehicle budget, the import-limit battery and
/// peak shaving all act on the measured import. Only an excess counts: a car drawing less than
/// its setpoint may draw it next second.
fn grid_feedback(
    mut inputs: Inputs,
    snapshot: &Snapshot,
    state: &DispatchState,
    plan: &mut Plan,
) -> Inputs {
    let Some(measured) = snapshot.grid.power.fresh_value() else {
        return inputs;
    };
    let planned_chargers: Watts = snapshot
        .chargers
        .iter()
        .zip(&state.chargers)
        .filter(|(c, _)| c.online && c.state.can_charge())
        .map(|(c, m)| {
            let offered = crate::units::charger_power_nominal(m.last_amps, m.counted_phases(c));
            expected_draw(c, offered)
        })
        .fold(Watts::ZERO, |sum, w| sum + w);
    // Before the first plan the battery does what it was doing.
    let battery = match state.last_now {
        Some(_) => state.last_battery,
        None => inputs.battery_measured,
    };
    let expected = inputs.fixed + planned_chargers - inputs.pv_firm - battery;
    let unseen = (measured - expected).max(Watts::ZERO);
    if unseen.0 > GRID_FEEDBACK_REPORT_W {
        plan.reasons
            .push(Reason::GridAboveExpected { excess: unseen });
    }
    inputs.base += unseen;
    inputs.fixed += unseen;
    inputs
}

/// Chargers dispatch cannot steer (offline at full rating, non-charging at their measured
/// power) and the measured power of all online chargers.
fn charger_loads(snapshot: &Snapshot, plan: &mut Plan) -> (Watts, Watts) {
    let mut uncontrolled = Watts::ZERO;
    let mut measured = Watts::ZERO;
    for c in &snapshot.chargers {
        if !c.online {
            let phases = if c.phases == 0 { 3 } else { c.phases.min(3) };
            let p = crate::units::charger_power_nominal(c.rating.max(Amps::ZERO), phases);
            uncontrolled += p;
            plan.reasons.push(Reason::ChargerOfflineCounted {
                id: c.id.clone(),
                power: p,
            });
        } else {
            measured += c.power.max(Watts::ZERO);
            if !c.state.can_charge() {
                uncontrolled += c.power.max(Watts::ZERO);
            }
        }
    }
    (uncontrolled, measured)
}

/// Step 2: how far the battery may charge and discharge this cycle.
#[derive(Default)]
struct BatteryBounds {
    usable_wh: f64,
    charge_max: Watts,
    /// Down to `soc_min`: the import limit's bound.
    discharge_hard: Watts,
    /// Down to the evening reserve while it is open: arbitrage and peak shaving.
    discharge_econ: Watts,
    /// The reserve SoC when it holds the battery at 0 W.
    reserve_blocks: Option<Percent>,
    /// Wear price from the measured fade, CNY/kWh.
    wear_override: Option<f64>,
}

fn battery_idle_cause(bat: &BatterySnapshot) -> Option<BatteryIdleCause> {
    if !bat.online {
        Some(BatteryIdleCause::Offline)
    } else if bat.alarm {
        Some(BatteryIdleCause::Alarm)
    } else if bat.soc.fresh_value().is_none() {
        Some(BatteryIdleCause::SocUnknown)
    } else if !(bat.temperature_c >= DISCHARGE_TEMP_C.0 && bat.temperature_c <= DISCHARGE_TEMP_C.1)
    {
        Some(BatteryIdleCause::Temperature)
    } else {
        None
    }
}

fn battery_bounds(
    snapshot: &Snapshot,
    policy: &Policy,
    minute: u16,
    plan: &mut Plan,
) -> BatteryBounds {
    let bp = &policy.battery;
    let bat = &snapshot.battery;
    let h = &bat.health;
    let mut b = BatteryBounds {
        usable_wh: bat.usable_capacity.0.max(0.0),
        wear_override: h.wear_cny_per_kwh.filter(|w| w.is_finite() && *w >= 0.0),
        ..BatteryBounds::default()
    };
    let idle_cause = battery_idle_cause(bat);
    if let Some(cause) = idle_cause {
        plan.reasons.push(Reason::BatteryIdle { cause });
        return b;
    }
    let Some(soc) = bat.soc.fresh_value() else {
        return b;
    };
    let c_cap = Watts(b.usable_wh * bp.c_rate_cap);
    let usable_wh = b.usable_wh;
    let per_cycle = |pct: f64| Watts((pct / 100.0) * usable_wh * 3600.0 / policy.cycle_s);
    let charge_temp_ok =
        bat.temperature_c >= CHARGE_TEMP_C.0 && bat.temperature_c <= CHARGE_TEMP_C.1;
    // The health window (cell spread) narrows the policy's, never widens it.
    let soc_max = bp.soc_max.0.min(h.soc_max.0);
    let soc_min = bp.soc_min.0.max(h.soc_min.0);
    let factor = |f: f64| {
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    if soc.0 < soc_max && charge_temp_ok {
        b.charge_max = (bat.max_charge.max(Watts::ZERO) * factor(h.charge_factor))
            .min(c_cap)
            .min(per_cycle(soc_max - soc.0));
    }
    if soc.0 > soc_min {
        b.discharge_hard = (bat.max_discharge.max(Watts::ZERO) * factor(h.discharge_factor))
            .min(c_cap)
            .min(per_cycle(soc.0 - soc_min));
    }
    b.discharge_econ = b.discharge_hard;
    if let Some(r) = bp.evening_reserve.filter(|r| r.active_at(minute)) {
        let above = soc.0 - r.soc.0;
        b.discharge_econ = if above > 0.0 {
            b.discharge_econ.min(per_cycle(above))
        } else {
            b.reserve_blocks = Some(r.soc);
            Watts::ZERO
        };
    }
    b
}

/// Where the price stands: whether discharging for the tariff pays now, and whether charging
/// from the grid in the valley does.
struct TariffPosition {
    arbitrage: bool,
    valley_charging: bool,
}

fn tariff_position(
    policy: &Policy,
    price: f64,
    bounds: &BatteryBounds,
    grid_fresh: bool,
) -> TariffPosition {
    let tariff = &policy.tariff;
    let bp = &policy.battery;
    let spread_exists = tariff.max_price() > tariff.min_price() + 1e-9;
    let is_valley = spread_exists && price <= tariff.min_price() + 1e-9;
    let eta = bp.round_trip_efficiency;
    let wear = bounds
        .wear_override
        .unwrap_or_else(|| bp.wear_cost_cny_per_kwh(bounds.usable_wh / 1000.0));
    let export_value = if policy.grid.export_limit.0 > 0.0 {
        tariff.export_price_cny_per_kwh
    } else {
        0.0
    };
    let stored_value = if bp.grid_charging_in_valley {
        export_value.min(tariff.min_price())
    } else {
        export_value
    };
    TariffPosition {
        arbitrage: spread_exists && price > stored_value / eta + wear,
        valley_charging: bp.grid_charging_in_valley
            && is_valley
            && grid_fresh
            && tariff.max_price() > tariff.min_price() / eta + wear,
    }
}

/// Step 3: the grid budget (W) and the per-phase amp budget for the vehicles.
fn vehicle_budgets(
    snapshot: &Snapshot,
    policy: &Policy,
    inputs: &Inputs,
    bounds: &BatteryBounds,
    tariff: &TariffPosition,
) -> Budgets {
    let building_net = (inputs.fixed - inputs.pv_firm).max(Watts::ZERO);
    let arbitrage_for_dealer = if tariff.arbitrage {
        bounds.discharge_econ.min(building_net)
    } else {
        Watts::ZERO
    };
    // Dealer first: the battery serves the building (never the cars directly), but when the
    // import limit binds it may carry the building's whole net load so that the grid's
    // share of the limit goes to the cars; like every import-limit use, down to `soc_min`.
    // Under a plan the cars are capped by their step energy and the plan has already decided
    // what the battery carries: the battery may back the cars up to its hard bound.
    let battery_for_vehicles = match policy.serve_first {
        _ if inputs.planned.is_some() => bounds.discharge_hard,
        ServeFirst::Vehicles => bounds.discharge_hard,
        ServeFirst::Dealer => arbitrage_for_dealer.max(bounds.discharge_hard.min(building_net)),
    };
    let grid_budget =
        policy.grid.import_budget() - inputs.fixed + inputs.pv_firm + battery_for_vehicles;
    Budgets {
        grid_w: grid_budget.0,
        amps: phase_amps_budget(
            snapshot,
            policy,
            inputs.pv_firm + battery_for_vehicles,
            inputs.battery_measured,
            inputs.pv_firm,
        ),
        pv_avail: inputs.pv_avail.0,
        uncontrolled: inputs.uncontrolled.0,
        fixed: inputs.fixed.0,
    }
}

/// Step 4 (set-up): each charger's role, range and ramp-limited cap for the allocation.
fn charger_roles(
    snapshot: &Snapshot,
    policy: &Policy,
    state: &mut DispatchState,
    now: DateTime<Utc>,
    dt: f64,
    plan: &mut Plan,
) {
    let vp = &policy.vehicles;
    for (i, c) in snapshot.chargers.iter().enumerate() {
        let cp = vp.for_charger(c.id.as_str());
        let mem = &state.chargers[i];
        let phases = if c.phases == 0 {
            0
        } else {
            mem.counted_phases(c)
        };
        let min = c.min_current.max(cp.min.unwrap_or(Amps::ZERO)).0.max(0.0);
        let max = c.rating.min(cp.max.unwrap_or(c.rating)).0;
        let capable = c.online && c.state.can_charge() && phases > 0;
        let range_ok = max >= min && max > EPS_A;
        if capable && !range_ok {
            plan.reasons
                .push(Reason::ChargerRangeEmpty { id: c.id.clone() });
        }
        let role = if !(capable && range_ok) {
            Role::Idle
        } else {
            match cp.mode {
                ChargeMode::Fast => Role::Fast,
                ChargeMode::MinSolar => Role::MinSolar,
                ChargeMode::Solar if mem.on && mem.since_switch_s(now) < vp.min_on_s => {
                    Role::SolarHeld
                }
                ChargeMode::Solar => Role::Solar,
            }
        };
        state.work[i] = Work {
            role,
            w_per_a: f64::from(phases) * NOMINAL_VOLTAGE.0,
            min,
            cap: max.min(min.max(mem.last_amps.0 + vp.ramp_up_a_per_s * dt)),
            max,
            priority: cp.priority,
            plugged_rank: mem.plugged_since.map_or(i64::MAX, |t| t.timestamp_millis()),
            ..Work::default()
        };
    }
}

/// With the grid meter stale: every charger at most its safe current, nothing else.
fn safe_currents(snapshot: &Snapshot, state: &mut DispatchState) {
    for (w, c) in state.work.iter_mut().zip(&snapshot.chargers) {
        let a = c.safe_current.0.min(w.cap);
        w.got = if w.role != Role::Idle && a >= w.min && a > EPS_A {
            a
        } else {
            0.0
        };
    }
}

/// The chargers' setpoints into the plan; returns their total power, and the power they are
/// expected to draw (a vehicle that does not ask for current draws what it is measured at).
fn charger_setpoints(
    snapshot: &Snapshot,
    state: &DispatchState,
    plan: &mut Plan,
) -> (Watts, Watts) {
    let mut chargers_w = Watts::ZERO;
    let mut expected_w = Watts::ZERO;
    for (i, c) in snapshot.chargers.iter().enumerate() {
        let w = &state.work[i];
        let a = if w.got > EPS_A { w.got } else { 0.0 };
        chargers_w += Watts(a * w.w_per_a);
        expected_w += expected_draw(c, Watts(a * w.w_per_a));
        plan.chargers.push(ChargerSetpoint {
            id: c.id.clone(),
            amps: Amps(a),
            phases: c.phases,
        });
    }
    (chargers_w, expected_w)
}

/// What a controllable charger given `offered` is expected to draw: all of it while its
/// vehicle asks for current, else what it is measured at (a full or sleeping car). Only the
/// battery's soft targets (surplus charging, the tariff, peak shaving) and the export limit
/// count on it; the import limit counts every offer in full.
fn expected_draw(c: &ChargerSnapshot, offered: Watts) -> Watts {
    if !c.online || !c.state.can_charge() {
        // Counted among the uncontrolled loads already.
        Watts::ZERO
    } else if c.state.requesting() {
        offered
    } else {
        c.power.max(Watts::ZERO).min(offered)
    }
}

/// The station's net load with the planned chargers, before the battery: with firm PV, and
/// with PV including the probe.
#[derive(Clone, Copy)]
struct NetLoad {
    /// Chargers at their setpoints: the import limit's view.
    firm: Watts,
    /// Chargers at what they are expected to draw: the soft targets' view.
    expected: Watts,
    /// As `expected`, with PV including the probe.
    avail: Watts,
}

/// Step 6: the battery's setpoint, > 0 discharge.
#[allow(clippy::too_many_arguments)]
fn battery_setpoint(
    policy: &Policy,
    state: &DispatchState,
    now: DateTime<Utc>,
    inputs: &Inputs,
    bounds: &BatteryBounds,
    tariff: &TariffPosition,
    net: NetLoad,
    plan: &mut Plan,
) -> Watts {
    let mut battery = economic_battery(policy, state, now, inputs, bounds, tariff, net, plan);
    if let Some(soc) = bounds.reserve_blocks {
        if tariff.arbitrage && battery.0 <= EPS_W && net.expected.0 > 0.0 {
            plan.reasons.push(Reason::BatteryEveningReserve { soc });
        }
    }
    let import_budget = policy.grid.import_budget();
    if (net.firm - battery).0 > import_budget.0 {
        let want = bounds.discharge_hard.min(net.firm - import_budget);
        if want.0 > battery.0 + EPS_W {
            battery = want;
            plan.reasons
                .push(Reason::BatteryImportLimit { power: battery });
        }
    }
    if policy.tariff.demand_charge_cny_per_kw > 0.0 {
        let (target, bound) = match inputs.planned {
            Some(p) => (
                planned_ceiling(policy, state, now, p),
                bounds.discharge_hard,
            ),
            None => (demand_ceiling(policy, state, now), bounds.discharge_econ),
        };
        if (net.expected - battery).0 > target.0 && bound.0 > battery.0 {
            let want = bound.min(net.expected - target);
            if want.0 > battery.0 + EPS_W {
                battery = want;
                plan.reasons.push(Reason::BatteryPeakShaving {
                    power: battery,
                    target,
                });
            }
        }
    }
    if !inputs.grid_fresh {
        let ceiling = state.last_battery.max(Watts::ZERO);
        if battery.0 > ceiling.0 {
            battery = ceiling;
            plan.reasons
                .push(Reason::BatteryHeldGridStale { power: battery });
        }
    }
    battery
}

/// The battery's choice before the limits: charge from a PV surplus, discharge for the peak
/// tariff, or charge from the grid in the valley.
#[allow(clippy::too_many_arguments)]
fn economic_battery(
    policy: &Policy,
    state: &DispatchState,
    now: DateTime<Utc>,
    inputs: &Inputs,
    bounds: &BatteryBounds,
    tariff: &TariffPosition,
    net: NetLoad,
    plan: &mut Plan,
) -> Watts {
    if let Some(p) = inputs.planned {
        if let Some(battery) = p.battery {
            return absorbed(battery, &p, net, bounds, tariff, plan);
        }
    }
    if net.avail.0 < 0.0 {
        let battery = -bounds.charge_max.min(-net.avail);
        if battery.0 < -EPS_W {
            plan.reasons
                .push(Reason::BatteryChargingPv { power: -battery });
        }
        return battery;
    }
    if tariff.arbitrage {
        let cover = match policy.serve_first {
            ServeFirst::Dealer => (inputs.fixed - inputs.pv_firm)
                .max(Watts::ZERO)
                .min(net.expected),
            ServeFirst::Vehicles => net.expected,
        };
        let battery = bounds.discharge_econ.min(cover.max(Watts::ZERO));
        if battery.0 > EPS_W {
            plan.reasons
                .push(Reason::BatteryPeakTariff { power: battery });
        }
        return battery;
    }
    if !tariff.valley_charging {
        return Watts::ZERO;
    }
    // Only up to the month's peak so far: cheap energy is not worth a new demand peak.
    let import_budget = policy.grid.import_budget();
    let ceiling = state.demand.instant_target(
        now,
        state.demand.month_peak().min(import_budget),
        import_budget,
        policy.cycle_s,
    );
    let room = ceiling - net.expected;
    if room.0 <= 0.0 {
        return Watts::ZERO;
    }
    let battery = -bounds.charge_max.min(room);
    if battery.0 < -EPS_W {
        plan.reasons
            .push(Reason::BatteryChargingValley { power: -battery });
    }
    battery
}

/// Under a plan the battery moves to its SoC target, and deviations from the plan's import
/// land on the battery where that pays:
/// - import above what the plan expects (a car taking its full-power allowance, a load above
///   its forecast) is served from the battery while discharging pays at the price now
///   ([`TariffPosition::arbitrage`]) rather than bought at that price;
/// - export the plan does not expect (a car tapering, a load below its forecast, PV above it)
///   is stored in the battery up to its charge bound rather than sold at the export price
///   ([`stored_surplus`]).
///
/// The next plan starts from the SoC this leaves.
fn absorbed(
    battery: Watts,
    planned: &Planned,
    net: NetLoad,
    bounds: &BatteryBounds,
    tariff: &TariffPosition,
    plan: &mut Plan,
) -> Watts {
    if let Some(stored) = stored_surplus(battery, planned.export, net, bounds) {
        plan.reasons
            .push(Reason::BatteryBelowPlan { power: stored });
        return stored;
    }
    if let Some(kept) = kept_for_plan(battery, planned.import, net) {
        plan.reasons.push(Reason::BatteryKeptForPlan {
            power: kept,
            planned_import: planned.import.unwrap_or(Watts::ZERO),
        });
        return kept;
    }
    let Some(planned_import) = planned.import.filter(|_| tariff.arbitrage) else {
        return battery;
    };
    let want = (net.expected - planned_import).min(bounds.discharge_econ);
    if want.0 > battery.0 + EPS_W {
        plan.reasons.push(Reason::BatteryAbovePlan {
            power: want,
            planned_import,
        });
        return want;
    }
    battery
}

/// The battery's discharge when the site imports less than the plan's step expects while the
/// battery discharges toward its SoC target (a car tapering or leaving early, a load below its
/// forecast): only what keeps the import at the plan's, the rest stays stored for the steps
/// the plan counted on it for. The plan's import is paid for (its energy at the price the plan
/// chose, its peak within the plan's ceiling); the battery's energy spent in its place is
/// missing later. None when the plan imports nothing in this step (the battery carries the
/// site on purpose, e.g. through the peak tariff) or the target already keeps it. Without it,
/// on the EV rush (7 days, seed 7, perfect forecasts) the battery reached its floor an hour
/// before the last cars were done and the grid set a 122 kW peak over the plan's 107.
fn kept_for_plan(battery: Watts, planned_import: Option<Watts>, net: NetLoad) -> Option<Watts> {
    let planned_import = planned_import.filter(|i| i.0 > EPS_W)?;
    if battery.0 <= EPS_W {
        return None;
    }
    let kept = (net.expected - planned_import).max(Watts::ZERO);
    (kept.0 < battery.0 - EPS_W).then_some(kept)
}

/// The battery's setpoint that stores a surplus the plan does not export (its step plans no
/// export) but the SoC target would send to the grid: the whole surplus, up to the charge
/// bound, or only a smaller discharge. None when the target already keeps it, the plan exports
/// on purpose in this step (its battery may be kept for a later surplus), or the plan does not
/// say what it exports. Without it, a car tapering or a load below its quarter's forecast sold
/// energy at the export price that the next peak bought back: 71 kWh in a week of the cloudy
/// winter weekday (seed 4) with perfect forecasts.
fn stored_surplus(
    battery: Watts,
    planned_export: Option<Watts>,
    net: NetLoad,
    bounds: &BatteryBounds,
) -> Option<Watts> {
    let grid = net.avail - battery;
    if planned_export.is_none_or(|e| e.0 > EPS_W) || grid.0 >= -EPS_W {
        return None;
    }
    let stored = (-bounds.charge_max).max(net.avail);
    (stored.0 < battery.0 - EPS_W).then_some(stored)
}

/// Step 7: the PV limit (only when export would exceed its limit) and the PV planned.
fn pv_limit(
    policy: &Policy,
    inputs: &Inputs,
    chargers_w: Watts,
    battery: Watts,
    plan: &mut Plan,
) -> (Percent, Watts) {
    let pv_upper = if inputs.pv_reading.is_some() {
        inputs.pv_avail
    } else {
        inputs.pv_rating
    };
    let pv_cap = (inputs.fixed + chargers_w - battery + policy.grid.export_limit).max(Watts::ZERO);
    if pv_upper.0 > pv_cap.0 + EPS_W && inputs.pv_rating.0 > 0.0 {
        let pct = Percent::from_fraction(pv_cap.0 / inputs.pv_rating.0)
            .clamp(Percent(0.0), Percent(100.0));
        plan.reasons.push(Reason::PvCurtailed { limit: pct });
        (pct, inputs.pv_avail.min(pv_cap))
    } else {
        (Percent(100.0), inputs.pv_avail)
    }
}

/// Carry what the next cycle needs: each charger's on/off switch time and last current, the
/// battery setpoint, and `now`.
fn remember(state: &mut DispatchState, plan: &Plan, battery: Watts, now: DateTime<Utc>) {
    for (mem, sp) in state.chargers.iter_mut().zip(&plan.chargers) {
        let on = sp.amps.0 > 0.0;
        if on != mem.on {
            mem.on = on;
            mem.switched_at = Some(now);
        }
        mem.last_amps = sp.amps;
    }
    state.last_battery = battery;
    state.last_now = Some(now);
}

/// Budgets and PV figures for the charger allocation, W (amps for `amps`).
#[derive(Clone, Copy)]
struct Budgets {
    grid_w: f64,
    amps: f64,
    pv_avail: f64,
    uncontrolled: f64,
    fixed: f64,
}

/// Steps 4 and 5 of the algorithm: the firm pass, the solar pass and the on/off rules.
/// Leaves each charger's current in `work[i].got`.
fn allocate_chargers(
    snapshot: &Snapshot,
    policy: &Policy,
    state: &mut DispatchState,
    now: DateTime<Utc>,
    plan: &mut Plan,
    b: Budgets,
) {
    let vp = &policy.vehicles;
    let DispatchState {
        work,
        order,
        chargers: mems,
        ..
    } = state;
    sort_order(order, work, vp.sharing);

    // Firm pass.
    for w in work.iter_mut() {
        (w.lo, w.hi) = match w.role {
            Role::Fast => (w.min, w.cap),
            Role::MinSolar | Role::SolarHeld => (w.min, w.min),
            Role::Solar | Role::Idle => (0.0, 0.0),
        };
    }
    let (firm_w, firm_a) = allocate(work, order, b.grid_w, b.amps, vp.sharing);
    for w in work.iter_mut() {
        w.firm = w.got;
    }
    let firm_left_w = (b.grid_w - firm_w).max(0.0);
    let firm_left_a = (b.amps - firm_a).max(0.0);

    // Solar pass.
    let pool = match policy.serve_first {
        ServeFirst::Vehicles => b.pv_avail - b.uncontrolled - firm_w,
        // Solar cars take the surplus the building leaves before the battery does: cars leave,
        // the battery can fill up from what is left and later in the day.
        ServeFirst::Dealer => b.pv_avail - b.fixed - firm_w,
    }
    .max(0.0)
    .min(firm_left_w);
    for (w, m) in work.iter_mut().zip(mems.iter()) {
        (w.lo, w.hi) = match w.role {
            Role::MinSolar | Role::SolarHeld if w.firm > 0.0 => (0.0, (w.cap - w.firm).max(0.0)),
            // A paused charger bids for its full range so the start test sees the real surplus
            // even while its ramp cap is still at the minimum.
            Role::Solar if !m.on => (w.min, w.max),
            Role::Solar => (0.0, w.cap),
            _ => (0.0, 0.0),
        };
    }
    let (solar_w, solar_a) = allocate(work, order, pool, firm_left_a, vp.sharing);

    let mut left = Left {
        w: firm_left_w - solar_w,
        a: firm_left_a - solar_a,
    };
    for (i, c) in snapshot.chargers.iter().enumerate() {
        let w = &mut work[i];
        w.got = settle(w, &mems[i], &c.id, vp, now, &mut left, plan);
        explain(w, &c.id, firm_left_w, firm_left_a, plan);
    }
}

/// Grid budget still free after the passes, W and A.
struct Left {
    w: f64,
    a: f64,
}

/// The current a charger gets from its firm share and its solar share (`w.got` on entry),
/// with the solar on/off rules: hysteresis, `min_on_s`, `min_off_s`.
fn settle(
    w: &Work,
    m: &state::ChargerMemory,
    id: &ChargerId,
    vp: &VehiclePolicy,
    now: DateTime<Utc>,
    left: &mut Left,
    plan: &mut Plan,
) -> f64 {
    let h = vp.hysteresis.0;
    let share = w.got;
    let share_w = share * w.w_per_a;
    let min_w = w.min * w.w_per_a;
    match w.role {
        Role::Idle => 0.0,
        Role::Fast => w.firm,
        Role::MinSolar | Role::SolarHeld if w.firm > 0.0 => (w.firm + share).min(w.cap),
        Role::MinSolar | Role::SolarHeld => 0.0,
        Role::Solar if m.on => {
            if share >= w.min - EPS_A {
                share.min(w.cap)
            } else if share_w >= min_w - h && left.w + share_w >= min_w && left.a + share >= w.min {
                // Within the hysteresis band: stay at the minimum, a little from the grid.
                left.w -= min_w - share_w;
                left.a -= w.min - share;
                w.min
            } else {
                plan.reasons
                    .push(Reason::ChargerPausedNoSurplus { id: id.clone() });
                0.0
            }
        }
        Role::Solar => {
            if share > EPS_A && share_w >= min_w + h - EPS_W {
                if m.since_switch_s(now) >= vp.min_off_s {
                    share.min(w.cap)
                } else {
                    plan.reasons
                        .push(Reason::ChargerHeldOffMinOffTime { id: id.clone() });
                    0.0
                }
            } else {
                plan.reasons
                    .push(Reason::ChargerPausedNoSurplus { id: id.clone() });
                0.0
            }
        }
    }
}

/// Explain a current below what the charger's mode asked for.
fn explain(w: &Work, id: &ChargerId, firm_left_w: f64, firm_left_a: f64, plan: &mut Plan) {
    let asked = match w.role {
        Role::Fast => w.cap,
        Role::MinSolar | Role::SolarHeld => w.min,
        Role::Solar | Role::Idle => 0.0,
    };
    if w.firm + 1e-3 < asked {
        let fuse_bound = firm_left_a * w.w_per_a < firm_left_w;
        plan.reasons.push(if fuse_bound {
            Reason::ChargerPhaseFuseLimited {
                id: id.clone(),
                amps: Amps(w.got),
            }
        } else {
            Reason::ChargerImportLimited {
                id: id.clone(),
                amps: Amps(w.got),
            }
        });
    } else if w.role == Role::SolarHeld && w.got > 0.0 {
        plan.reasons
            .push(Reason::ChargerHeldOnMinOnTime { id: id.clone() });
    } else if w.role == Role::Fast && w.cap + 1e-3 < w.max {
        plan.reasons.push(Reason::ChargerRampLimited {
            id: id.clone(),
            amps: Amps(w.got),
        });
    }
}

/// Order in which chargers are served: first come (plug-in time, then position), or by
/// priority (highest first, then first come).
fn sort_order(order: &mut Vec<usize>, work: &[Work], sharing: Sharing) {
    order.clear();
    order.extend(0..work.len());
    match sharing {
        Sharing::Priority => order.sort_unstable_by(|&a, &b| {
            work[b]
                .priority
                .cmp(&work[a].priority)
                .then(work[a].plugged_rank.cmp(&work[b].plugged_rank))
                .then(a.cmp(&b))
        }),
        Sharing::Equal | Sharing::FirstCome => {
            order.sort_unstable_by_key(|&i| (work[i].plugged_rank, i));
        }
    }
}

/// Share `budget_w` watts and `budget_a` amps (per phase) among the entries with `hi > 0`:
/// each gets 0 or at least `lo`, at most `hi`. Minimums go out in `order` while they fit;
/// the rest is shared equally in amps (water-filling) or handed out in `order`.
/// Returns the watts and amps given out; results are in `got`.
fn allocate(
    work: &mut [Work],
    order: &[usize],
    budget_w: f64,
    budget_a: f64,
    sharing: Sharing,
) -> (f64, f64) {
    let mut bw = budget_w.max(0.0);
    let mut ba = budget_a.max(0.0);
    for w in work.iter_mut() {
        w.got = 0.0;
    }
    match sharing {
        Sharing::Equal => {
            // Minimums first, in order, while they fit.
            for &i in order {
                let Some(w) = work.get_mut(i) else { continue };
                if w.hi <= EPS_A || w.lo > w.hi {
                    w.hi = 0.0;
                    continue;
                }
                let need_w = w.lo * w.w_per_a;
                if need_w <= bw + 1e-9 && w.lo <= ba + 1e-9 {
                    w.got = w.lo;
                    bw = (bw - need_w).max(0.0);
                    ba = (ba - w.lo).max(0.0);
                } else {
                    w.hi = 0.0;
                }
            }
            // Then equal amps for everyone with room (water-filling).
            for _ in 0..=work.len() {
                let mut sum_w = 0.0;
                let mut count = 0.0;
                for w in work.iter() {
                    if w.hi - w.got > EPS_A {
                        sum_w += w.w_per_a;
                        count += 1.0;
                    }
                }
                if count == 0.0 || bw <= EPS_W || ba <= EPS_A || sum_w <= 0.0 {
                    break;
                }
                let delta = (bw / sum_w).min(ba / count);
                let mut saturated = false;
                for w in work.iter_mut() {
                    let room = w.hi - w.got;
                    if room > EPS_A {
                        let inc = delta.min(room);
                        saturated |= inc >= room - EPS_A;
                        w.got += inc;
                        bw = (bw - inc * w.w_per_a).max(0.0);
                        ba = (ba - inc).max(0.0);
                    }
                }
                if !saturated {
                    break;
                }
            }
        }
        Sharing::FirstCome | Sharing::Priority => {
            // Each in order as much as fits, if at least its minimum fits.
            for &i in order {
                let Some(w) = work.get_mut(i) else { continue };
                if w.hi <= EPS_A || w.lo > w.hi || w.w_per_a <= 0.0 {
                    continue;
                }
                let fit = w.hi.min(bw / w.w_per_a).min(ba);
                if fit >= w.lo - 1e-9 && fit > EPS_A {
                    w.got = fit.max(w.lo);
                    bw = (bw - w.got * w.w_per_a).max(0.0);
                    ba = (ba - w.got).max(0.0);
                }
            }
        }
    }
    work.iter().fold((0.0, 0.0), |(pw, pa), w| {
        (pw + w.got * w.w_per_a, pa + w.got)
    })
}

/// Amps per phase left for the steerable chargers under `grid.phase_fuse_a`, infinite when
/// no fuse is configured or per-phase grid power is not fresh (the total limit still holds).
/// `relief` is the PV and battery output the allocation counts on.
fn phase_amps_budget(
    snapshot: &Snapshot,
    policy: &Policy,
    relief: Watts,
    battery_measured: Watts,
    pv_measured: Watts,
) -> f64 {
    let (Some(fuse), Some(phase)) = (
        policy.grid.phase_fuse,
        snapshot.grid.phase_power.fresh_value(),
    ) else {
        return f64::INFINITY;
    };
    let v = NOMINAL_VOLTAGE.0;
    let mut offline_a = 0.0;
    for c in &snapshot.chargers {
        if !c.online {
            offline_a += c.rating.0.max(0.0);
        }
    }
    let mut worst = f64::NEG_INFINITY;
    for (p, phase_w) in phase.iter().enumerate() {
        let mut steerable_a = 0.0;
        for c in &snapshot.chargers {
            if c.online && c.state.can_charge() {
                steerable_a += c.current[p].0.max(0.0);
            }
        }
        let without =
            phase_w.0 / v - steerable_a + (battery_measured.0 + pv_measured.0) / (3.0 * v);
        worst = worst.max(without - relief.0 / (3.0 * v));
    }
    (fuse.0 - worst - offline_a).max(0.0)
}

/// Instantaneous import allowed now under the plan's ceiling (at least the month's peak so
/// far, within the import budget).
fn planned_ceiling(
    policy: &Policy,
    state: &DispatchState,
    now: DateTime<Utc>,
    planned: Planned,
) -> Watts {
    let cap = policy.grid.import_budget();
    let target = planned
        .import_ceiling
        .max(state.demand.month_peak())
        .min(policy.grid.import_limit);
    state
        .demand
        .instant_target(now, target, cap, policy.cycle_s)
}

/// Instantaneous import allowed now for the demand charge: the 15-minute budget toward
/// max(configured target, month peak so far), within the import budget (limit less margin).
fn demand_ceiling(policy: &Policy, state: &DispatchState, now: DateTime<Utc>) -> Watts {
    let cap = policy.grid.import_budget();
    let target = policy
        .grid
        .demand_target
        .max(state.demand.month_peak())
        .min(policy.grid.import_limit);
    state
        .demand
        .instant_target(now, target, cap, policy.cycle_s)
}

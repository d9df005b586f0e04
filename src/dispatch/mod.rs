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
//!    in the dearest tariff period and when `price > stored value / efficiency + wear cost`
//!    it discharges to cover the building (dealer first) or the whole net load (vehicles
//!    first); in the cheapest period with `grid_charging_in_valley` it charges from the grid
//!    only up to the month's peak so far (cheap energy never pays for a new demand peak).
//!    Then it discharges what is needed to keep import under the import budget and under the
//!    15-minute demand target (peak shaving with the economic bound; the target rises to the
//!    month's peak). If import still exceeds the hard limit a reason says so.
//! 7. **PV limit.** Only when export would exceed the export limit: PV is limited to
//!    `loads + battery charge + export limit` (zero export possible).
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
    BatteryPolicy, ChargeMode, ChargerPolicy, EveningReserve, GridPolicy, Policy, RawBatteryPolicy,
    RawChargerOverride, RawEveningReserve, RawGridPolicy, RawPolicy, RawTariff, RawTariffPeriod,
    RawVehiclePolicy, ServeFirst, Sharing, Tariff, TariffPeriod, VehiclePolicy,
};
pub use snapshot::{
    BatterySnapshot, ChargerId, ChargerSnapshot, ChargerState, Freshness, GridSnapshot, PvSnapshot,
    Reading, Snapshot,
};
pub use state::{DemandTracker, DispatchState};

use crate::units::{Amps, Percent, Watts, NOMINAL_VOLTAGE};
use chrono::{DateTime, Datelike, Timelike, Utc};
use state::{Role, Work};

/// Share of the PV rating added to the measured output while the inverter sits at its limit.
const PV_PROBE_FRACTION: f64 = 0.05;
/// Amps below which a value counts as 0.
const EPS_A: f64 = 1e-6;
/// Watts below which a value counts as 0.
const EPS_W: f64 = 1e-3;
/// Battery temperature windows, °C (`docs/reference-station.md`): discharge -10..55, charge 0..45.
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

/// [`decide`] writing into a reused plan (no allocation once capacities are reached).
pub fn decide_into(
    snapshot: &Snapshot,
    policy: &Policy,
    state: &mut DispatchState,
    now: DateTime<Utc>,
    plan: &mut Plan,
) {
    plan.chargers.clear();
    plan.reasons.clear();

    let dt = state.elapsed_s(now, policy.cycle_s);
    let local = now.with_timezone(&policy.timezone);
    let minute = (local.hour() * 60 + local.minute()) as u16;
    let month_key = local.year() * 12 + local.month() as i32;
    let price = policy.tariff.price_at(minute);

    state.sync_roster(&snapshot.chargers, now);
    let grid_now = snapshot.grid.power.fresh_value();
    state.demand.update(now, grid_now, dt, month_key);
    let grid_fresh = grid_now.is_some();
    if !grid_fresh {
        plan.reasons.push(Reason::GridStale);
    }

    // ---- 1. inputs -------------------------------------------------------------------
    let import_limit = policy.grid.import_limit;
    // What the plan allows itself: the limit less the margin for one cycle of lag.
    let import_budget = policy.grid.import_budget();
    let export_limit = policy.grid.export_limit;
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

    let mut uncontrolled = Watts::ZERO;
    let mut measured_chargers = Watts::ZERO;
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
            measured_chargers += c.power.max(Watts::ZERO);
            if !c.state.can_charge() {
                uncontrolled += c.power.max(Watts::ZERO);
            }
        }
    }
    let battery_measured = snapshot.battery.power.fresh_value().unwrap_or(Watts::ZERO);
    let base = match (snapshot.building.fresh_value(), grid_now) {
        (Some(b), _) => b,
        (None, Some(g)) => g - measured_chargers + pv_firm + battery_measured,
        (None, None) => snapshot.building.value,
    }
    .max(Watts::ZERO);
    let fixed = base + uncontrolled;

    // ---- 2. battery bounds -----------------------------------------------------------
    let bp = &policy.battery;
    let bat = &snapshot.battery;
    let usable_wh = bat.usable_capacity.0.max(0.0);
    let mut charge_max = Watts::ZERO;
    let mut discharge_hard = Watts::ZERO;
    let mut discharge_econ = Watts::ZERO;
    let mut reserve_blocks = None;
    let soc = bat.soc.fresh_value();
    let idle_cause = if !bat.online {
        Some(BatteryIdleCause::Offline)
    } else if bat.alarm {
        Some(BatteryIdleCause::Alarm)
    } else if soc.is_none() {
        Some(BatteryIdleCause::SocUnknown)
    } else if !(bat.temperature_c >= DISCHARGE_TEMP_C.0 && bat.temperature_c <= DISCHARGE_TEMP_C.1)
    {
        Some(BatteryIdleCause::Temperature)
    } else {
        None
    };
    if let (None, Some(soc)) = (idle_cause, soc) {
        let c_cap = Watts(usable_wh * bp.c_rate_cap);
        let per_cycle = |pct: f64| Watts((pct / 100.0) * usable_wh * 3600.0 / policy.cycle_s);
        let charge_temp_ok =
            bat.temperature_c >= CHARGE_TEMP_C.0 && bat.temperature_c <= CHARGE_TEMP_C.1;
        if soc.0 < bp.soc_max.0 && charge_temp_ok {
            charge_max = bat
                .max_charge
                .max(Watts::ZERO)
                .min(c_cap)
                .min(per_cycle(bp.soc_max.0 - soc.0));
        }
        if soc.0 > bp.soc_min.0 {
            discharge_hard = bat
                .max_discharge
                .max(Watts::ZERO)
                .min(c_cap)
                .min(per_cycle(soc.0 - bp.soc_min.0));
        }
        discharge_econ = discharge_hard;
        if let Some(r) = bp.evening_reserve.filter(|r| r.active_at(minute)) {
            let above = soc.0 - r.soc.0;
            discharge_econ = if above > 0.0 {
                discharge_econ.min(per_cycle(above))
            } else {
                reserve_blocks = Some(r.soc);
                Watts::ZERO
            };
        }
    }
    if let Some(cause) = idle_cause {
        plan.reasons.push(Reason::BatteryIdle { cause });
    }

    // Tariff position.
    let tariff = &policy.tariff;
    let spread_exists = tariff.max_price() > tariff.min_price() + 1e-9;
    let is_peak = spread_exists && price >= tariff.max_price() - 1e-9;
    let is_valley = spread_exists && price <= tariff.min_price() + 1e-9;
    let eta = bp.round_trip_efficiency;
    let wear = bp.wear_cost_cny_per_kwh(usable_wh / 1000.0);
    let export_value = if export_limit.0 > 0.0 {
        tariff.export_price_cny_per_kwh
    } else {
        0.0
    };
    let stored_value = if bp.grid_charging_in_valley {
        export_value.min(tariff.min_price())
    } else {
        export_value
    };
    let arbitrage = is_peak && price > stored_value / eta + wear;
    let valley_charging = bp.grid_charging_in_valley
        && is_valley
        && grid_fresh
        && tariff.max_price() > tariff.min_price() / eta + wear;

    // ---- 3. grid budget for vehicles ---------------------------------------------------
    let arbitrage_for_dealer = if arbitrage {
        discharge_econ.min((fixed - pv_firm).max(Watts::ZERO))
    } else {
        Watts::ZERO
    };
    // Dealer first: the battery serves the building (never the cars directly), but when the
    // import limit binds it may carry the building's whole net load so that the grid's
    // share of the limit goes to the cars; like every import-limit use, down to `soc_min`.
    let building_net = (fixed - pv_firm).max(Watts::ZERO);
    let battery_for_vehicles = match policy.serve_first {
        ServeFirst::Vehicles => discharge_hard,
        ServeFirst::Dealer => arbitrage_for_dealer.max(discharge_hard.min(building_net)),
    };
    let grid_budget = import_budget - fixed + pv_firm + battery_for_vehicles;
    let amps_budget = phase_amps_budget(
        snapshot,
        policy,
        pv_firm + battery_for_vehicles,
        battery_measured,
        pv_firm,
    );

    // ---- 4./5. chargers ---------------------------------------------------------------
    let vp = &policy.vehicles;
    for (i, c) in snapshot.chargers.iter().enumerate() {
        let cp = vp.for_charger(c.id.as_str());
        let mem = &state.chargers[i];
        let phases = c.phases.min(3);
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

    if !grid_fresh {
        // Conservative: at most the safe current, nothing else.
        for (w, c) in state.work.iter_mut().zip(&snapshot.chargers) {
            let a = c.safe_current.0.min(w.cap);
            w.got = if w.role != Role::Idle && a >= w.min && a > EPS_A {
                a
            } else {
                0.0
            };
        }
    } else {
        allocate_chargers(
            snapshot,
            policy,
            state,
            now,
            plan,
            Budgets {
                grid_w: grid_budget.0,
                amps: amps_budget,
                pv_avail: pv_avail.0,
                uncontrolled: uncontrolled.0,
                fixed: fixed.0,
            },
        );
    }

    // Setpoints and their power.
    let mut chargers_w = Watts::ZERO;
    for (i, c) in snapshot.chargers.iter().enumerate() {
        let w = &state.work[i];
        let a = if w.got > EPS_A { w.got } else { 0.0 };
        chargers_w += Watts(a * w.w_per_a);
        plan.chargers.push(ChargerSetpoint {
            id: c.id.clone(),
            amps: Amps(a),
            phases: c.phases,
        });
    }

    // ---- 6. battery ---------------------------------------------------------------------
    let net_firm = fixed + chargers_w - pv_firm;
    let net_avail = fixed + chargers_w - pv_avail;
    let mut battery = Watts::ZERO;
    if net_avail.0 < 0.0 {
        battery = -charge_max.min(-net_avail);
        if battery.0 < -EPS_W {
            plan.reasons
                .push(Reason::BatteryChargingPv { power: -battery });
        }
    } else if arbitrage {
        let cover = match policy.serve_first {
            ServeFirst::Dealer => (fixed - pv_firm).max(Watts::ZERO).min(net_firm),
            ServeFirst::Vehicles => net_firm,
        };
        battery = discharge_econ.min(cover.max(Watts::ZERO));
        if battery.0 > EPS_W {
            plan.reasons
                .push(Reason::BatteryPeakTariff { power: battery });
        }
    } else if valley_charging {
        // Only up to the month's peak so far: cheap energy is not worth a new demand peak.
        let ceiling = state.demand.instant_target(
            now,
            state.demand.month_peak().min(import_budget),
            import_budget,
            policy.cycle_s,
        );
        let room = ceiling - net_firm;
        if room.0 > 0.0 {
            battery = -charge_max.min(room);
            if battery.0 < -EPS_W {
                plan.reasons
                    .push(Reason::BatteryChargingValley { power: -battery });
            }
        }
    }
    if let Some(soc) = reserve_blocks {
        if arbitrage && battery.0 <= EPS_W && net_firm.0 > 0.0 {
            plan.reasons.push(Reason::BatteryEveningReserve { soc });
        }
    }
    if (net_firm - battery).0 > import_budget.0 {
        let want = discharge_hard.min(net_firm - import_budget);
        if want.0 > battery.0 + EPS_W {
            battery = want;
            plan.reasons
                .push(Reason::BatteryImportLimit { power: battery });
        }
    }
    if tariff.demand_charge_cny_per_kw > 0.0 {
        let target = demand_ceiling(policy, state, now);
        if (net_firm - battery).0 > target.0 && discharge_econ.0 > battery.0 {
            let want = discharge_econ.min(net_firm - target);
            if want.0 > battery.0 + EPS_W {
                battery = want;
                plan.reasons.push(Reason::BatteryPeakShaving {
                    power: battery,
                    target,
                });
            }
        }
    }
    if !grid_fresh {
        let ceiling = state.last_battery.max(Watts::ZERO);
        if battery.0 > ceiling.0 {
            battery = ceiling;
            plan.reasons
                .push(Reason::BatteryHeldGridStale { power: battery });
        }
    }

    // ---- 7. PV limit ----------------------------------------------------------------------
    let pv_upper = if pv_reading.is_some() {
        pv_avail
    } else {
        pv_rating
    };
    let pv_cap = (fixed + chargers_w - battery + export_limit).max(Watts::ZERO);
    let (pv_limit, pv_planned) = if pv_upper.0 > pv_cap.0 + EPS_W && pv_rating.0 > 0.0 {
        let pct =
            Percent::from_fraction(pv_cap.0 / pv_rating.0).clamp(Percent(0.0), Percent(100.0));
        plan.reasons.push(Reason::PvCurtailed { limit: pct });
        (pct, pv_avail.min(pv_cap))
    } else {
        (Percent(100.0), pv_avail)
    };

    let balance = PowerBalance {
        base_load: base,
        uncontrolled_chargers: uncontrolled,
        chargers: chargers_w,
        pv: pv_planned,
        battery,
        grid: Watts::ZERO,
    };
    let grid = balance.implied_grid();
    plan.balance = PowerBalance { grid, ..balance };
    plan.battery = battery;
    plan.pv_limit = pv_limit;

    let firm_grid = net_firm - battery;
    if grid_fresh && firm_grid.0 > import_limit.0 + 1.0 {
        plan.reasons.push(Reason::ImportLimitUnreachable {
            excess: firm_grid - import_limit,
        });
    }

    // ---- remember ---------------------------------------------------------------------------
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
    let mut left_w = firm_left_w - solar_w;
    let mut left_a = firm_left_a - solar_a;

    let h = vp.hysteresis.0;
    for (i, c) in snapshot.chargers.iter().enumerate() {
        let w = &mut work[i];
        let m = &mems[i];
        let share = w.got;
        let share_w = share * w.w_per_a;
        let min_w = w.min * w.w_per_a;
        w.got = match w.role {
            Role::Idle => 0.0,
            Role::Fast => w.firm,
            Role::MinSolar | Role::SolarHeld if w.firm > 0.0 => (w.firm + share).min(w.cap),
            Role::MinSolar | Role::SolarHeld => 0.0,
            Role::Solar if m.on => {
                if share >= w.min - EPS_A {
                    share.min(w.cap)
                } else if share_w >= min_w - h
                    && left_w + share_w >= min_w
                    && left_a + share >= w.min
                {
                    // Within the hysteresis band: stay at the minimum, a little from the grid.
                    left_w -= min_w - share_w;
                    left_a -= w.min - share;
                    w.min
                } else {
                    plan.reasons
                        .push(Reason::ChargerPausedNoSurplus { id: c.id.clone() });
                    0.0
                }
            }
            Role::Solar => {
                if share > EPS_A && share_w >= min_w + h - EPS_W {
                    if m.since_switch_s(now) >= vp.min_off_s {
                        share.min(w.cap)
                    } else {
                        plan.reasons
                            .push(Reason::ChargerHeldOffMinOffTime { id: c.id.clone() });
                        0.0
                    }
                } else {
                    plan.reasons
                        .push(Reason::ChargerPausedNoSurplus { id: c.id.clone() });
                    0.0
                }
            }
        };

        // Explain currents below what the mode asked for.
        let asked = match w.role {
            Role::Fast => w.cap,
            Role::MinSolar | Role::SolarHeld => w.min,
            Role::Solar | Role::Idle => 0.0,
        };
        if w.firm + 1e-3 < asked {
            let fuse_bound = firm_left_a * w.w_per_a < firm_left_w;
            plan.reasons.push(if fuse_bound {
                Reason::ChargerPhaseFuseLimited {
                    id: c.id.clone(),
                    amps: Amps(w.got),
                }
            } else {
                Reason::ChargerImportLimited {
                    id: c.id.clone(),
                    amps: Amps(w.got),
                }
            });
        } else if w.role == Role::SolarHeld && w.got > 0.0 {
            plan.reasons
                .push(Reason::ChargerHeldOnMinOnTime { id: c.id.clone() });
        } else if w.role == Role::Fast && w.cap + 1e-3 < w.max {
            plan.reasons.push(Reason::ChargerRampLimited {
                id: c.id.clone(),
                amps: Amps(w.got),
            });
        }
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

//! Pure split of one control cycle's measured powers into energy flows, and the battery's
//! origin account (how much of the stored energy came from PV).
//!
//! # Allocation rule
//!
//! Inputs are clamped to their physical sign (`pv_w`, `building_w`, `vehicles_w` below zero are
//! read as zero). The loads (building + vehicles) are the truth for consumption; every Wh they
//! consumed is given an origin. The rule, applied to powers and then multiplied by `dt_s / 3600`:
//!
//! 1. PV serves the loads first, pro rata between building and vehicles by their powers.
//! 2. PV surplus charges the battery (up to the measured charge power), then is exported (up to
//!    the measured export power).
//! 3. Battery discharge serves the remaining loads, again pro rata; discharge beyond the loads
//!    goes to the grid (up to the export left after PV export).
//! 4. The grid covers the rest of the loads, and whatever battery charge PV did not cover.
//!
//! The meters never agree exactly. The balance residual
//! `pv + battery + grid - building - vehicles` (sources minus sinks, in Wh) is recorded as
//! [`Flows::unaccounted_wh`]: positive when more energy entered the site than the meters show
//! consumed (unmetered loads, losses, a meter reading high), negative when the loads consumed
//! more than the sources delivered (the grid is then credited with the missing part, because the
//! loads are the truth). Nothing is silently dropped: the identity checked by
//! [`Flows::grid_mismatch_wh`] holds for every input.

/// Measured powers of one control cycle.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FlowInput {
    /// PV generation, >= 0.
    pub pv_w: f64,
    /// Building consumption, >= 0.
    pub building_w: f64,
    /// All vehicles together, >= 0.
    pub vehicles_w: f64,
    /// Battery power, > 0 discharge, < 0 charge.
    pub battery_w: f64,
    /// Grid power, > 0 import, < 0 export.
    pub grid_w: f64,
    /// Cycle length in seconds.
    pub dt_s: f64,
}

/// Energy flows of one cycle (Wh). All flows are >= 0 except `unaccounted_wh`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Flows {
    pub pv_to_building_wh: f64,
    pub pv_to_vehicles_wh: f64,
    pub pv_to_battery_wh: f64,
    pub pv_to_grid_wh: f64,
    pub battery_to_building_wh: f64,
    pub battery_to_vehicles_wh: f64,
    pub battery_to_grid_wh: f64,
    pub grid_to_building_wh: f64,
    pub grid_to_vehicles_wh: f64,
    pub grid_to_battery_wh: f64,
    /// Balance residual `pv + battery + grid - building - vehicles` in Wh (signed).
    pub unaccounted_wh: f64,
    /// Measured energies, clamped as described in the module docs.
    pub pv_wh: f64,
    pub building_wh: f64,
    pub vehicles_wh: f64,
    pub battery_charge_wh: f64,
    pub battery_discharge_wh: f64,
    pub grid_import_wh: f64,
    pub grid_export_wh: f64,
}

impl Flows {
    /// Every source-to-sink flow with its `(from, to)` names, as `/metrics` labels them
    /// (`station_energy_watt_hours_total{from="pv",to="vehicles"}`).
    pub fn named(&self) -> [(&'static str, &'static str, f64); 10] {
        [
            ("pv", "building", self.pv_to_building_wh),
            ("pv", "vehicles", self.pv_to_vehicles_wh),
            ("pv", "battery", self.pv_to_battery_wh),
            ("pv", "grid", self.pv_to_grid_wh),
            ("battery", "building", self.battery_to_building_wh),
            ("battery", "vehicles", self.battery_to_vehicles_wh),
            ("battery", "grid", self.battery_to_grid_wh),
            ("grid", "building", self.grid_to_building_wh),
            ("grid", "vehicles", self.grid_to_vehicles_wh),
            ("grid", "battery", self.grid_to_battery_wh),
        ]
    }

    /// PV energy the split could not place (more PV than loads, charging and export took).
    pub fn pv_unplaced_wh(&self) -> f64 {
        self.pv_wh
            - self.pv_to_building_wh
            - self.pv_to_vehicles_wh
            - self.pv_to_battery_wh
            - self.pv_to_grid_wh
    }

    /// Discharge energy the split could not place.
    pub fn battery_unplaced_wh(&self) -> f64 {
        self.battery_discharge_wh
            - self.battery_to_building_wh
            - self.battery_to_vehicles_wh
            - self.battery_to_grid_wh
    }

    /// Net grid energy the flows imply (import flows minus export flows).
    pub fn implied_grid_wh(&self) -> f64 {
        self.grid_to_building_wh + self.grid_to_vehicles_wh + self.grid_to_battery_wh
            - self.pv_to_grid_wh
            - self.battery_to_grid_wh
    }

    /// Measured net grid minus the grid the flows imply, once the residual and the unplaced
    /// source energy are taken into account. Zero (up to rounding) for every input: this is the
    /// "nothing is lost" identity.
    pub fn grid_mismatch_wh(&self) -> f64 {
        let measured = self.grid_import_wh - self.grid_export_wh;
        measured - self.implied_grid_wh() - self.unaccounted_wh
            + self.pv_unplaced_wh()
            + self.battery_unplaced_wh()
    }
}

/// Splits one cycle into flows following the rule in the module docs.
pub fn split_flows(input: &FlowInput) -> Flows {
    let dt_h = if input.dt_s.is_finite() && input.dt_s > 0.0 {
        input.dt_s / 3600.0
    } else {
        0.0
    };
    let pv = finite_non_negative(input.pv_w);
    let building = finite_non_negative(input.building_w);
    let vehicles = finite_non_negative(input.vehicles_w);
    let battery = finite_or_zero(input.battery_w);
    let grid = finite_or_zero(input.grid_w);
    let discharge = battery.max(0.0);
    let charge = (-battery).max(0.0);
    let import = grid.max(0.0);
    let export = (-grid).max(0.0);
    let loads = building + vehicles;
    let building_part = if loads > 0.0 { building / loads } else { 0.0 };

    // 1. PV to loads.
    let pv_loads = pv.min(loads);
    let pv_building = pv_loads * building_part;
    let pv_vehicles = pv_loads - pv_building;
    // 2. PV surplus to battery, then to export.
    let surplus = pv - pv_loads;
    let pv_battery = surplus.min(charge);
    let pv_grid = (surplus - pv_battery).min(export);
    // 3. Battery discharge to remaining loads, then to export left.
    let rest = loads - pv_loads;
    let bat_loads = discharge.min(rest);
    let bat_building = bat_loads * building_part;
    let bat_vehicles = bat_loads - bat_building;
    let bat_grid = (discharge - bat_loads).min(export - pv_grid);
    // 4. Grid covers the rest of the loads and the remaining charge.
    let rest = rest - bat_loads;
    let grid_building = rest * building_part;
    let grid_vehicles = rest - grid_building;
    let grid_battery = charge - pv_battery;

    let residual = pv + battery + grid - loads;
    Flows {
        pv_to_building_wh: pv_building * dt_h,
        pv_to_vehicles_wh: pv_vehicles * dt_h,
        pv_to_battery_wh: pv_battery * dt_h,
        pv_to_grid_wh: pv_grid * dt_h,
        battery_to_building_wh: bat_building * dt_h,
        battery_to_vehicles_wh: bat_vehicles * dt_h,
        battery_to_grid_wh: bat_grid * dt_h,
        grid_to_building_wh: grid_building * dt_h,
        grid_to_vehicles_wh: grid_vehicles * dt_h,
        grid_to_battery_wh: grid_battery * dt_h,
        unaccounted_wh: residual * dt_h,
        pv_wh: pv * dt_h,
        building_wh: building * dt_h,
        vehicles_wh: vehicles * dt_h,
        battery_charge_wh: charge * dt_h,
        battery_discharge_wh: discharge * dt_h,
        grid_import_wh: import * dt_h,
        grid_export_wh: export * dt_h,
    }
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

fn finite_non_negative(x: f64) -> f64 {
    finite_or_zero(x).max(0.0)
}

/// Default one-way battery efficiency used for the origin account (about 95 % each way).
pub const DEFAULT_ONE_WAY_EFFICIENCY: f64 = 0.95;

/// What a battery discharge was made of, per the origin account.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DischargeOrigin {
    /// Share of the discharged energy that was charged from PV, 0..=1.
    pub green_fraction: f64,
    /// Average cost of the discharged energy, CNY per Wh delivered.
    pub cost_cny_per_wh: f64,
    /// Average CO2 of the discharged energy, kg per Wh delivered.
    pub co2_kg_per_wh: f64,
}

/// The battery's stored energy, split by origin (PV-charged "green" vs grid-charged "grey"),
/// with the money and CO2 that went into the grey part.
///
/// Charging adds `energy x charge_efficiency` to the pool of its origin. Discharging `E` Wh
/// takes `E / discharge_efficiency` from the pool, proportionally from green and grey. Energy
/// whose origin is unknown (the pack held charge before the ledger started, or the meters show
/// more discharge than the account holds) is counted as grey with no cost or CO2 recorded.
/// That is the conservative reading: it never inflates the green share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatteryOrigin {
    pub green_wh: f64,
    pub grey_wh: f64,
    /// Money spent on the grey energy still stored (CNY).
    pub grey_cost_cny: f64,
    /// CO2 emitted for the grey energy still stored (kg).
    pub grey_co2_kg: f64,
    pub charge_efficiency: f64,
    pub discharge_efficiency: f64,
}

impl Default for BatteryOrigin {
    fn default() -> Self {
        Self::new(DEFAULT_ONE_WAY_EFFICIENCY, DEFAULT_ONE_WAY_EFFICIENCY)
    }
}

impl BatteryOrigin {
    /// An empty account with the given one-way efficiencies (clamped to 0.5..=1).
    pub fn new(charge_efficiency: f64, discharge_efficiency: f64) -> Self {
        Self {
            green_wh: 0.0,
            grey_wh: 0.0,
            grey_cost_cny: 0.0,
            grey_co2_kg: 0.0,
            charge_efficiency: clamp_efficiency(charge_efficiency),
            discharge_efficiency: clamp_efficiency(discharge_efficiency),
        }
    }

    /// Share of the stored energy that came from PV, 0..=1 (0 for an empty account).
    pub fn green_fraction(&self) -> f64 {
        let total = self.green_wh + self.grey_wh;
        if total > 0.0 {
            self.green_wh / total
        } else {
            0.0
        }
    }

    /// Books a charge: `from_pv_wh` and `from_grid_wh` at the battery terminals, the grid part
    /// bought at `price_cny_per_kwh` with `co2_kg_per_kwh`.
    pub fn charge(
        &mut self,
        from_pv_wh: f64,
        from_grid_wh: f64,
        price_cny_per_kwh: f64,
        co2_kg_per_kwh: f64,
    ) {
        let from_pv_wh = finite_non_negative(from_pv_wh);
        let from_grid_wh = finite_non_negative(from_grid_wh);
        self.green_wh += from_pv_wh * self.charge_efficiency;
        self.grey_wh += from_grid_wh * self.charge_efficiency;
        self.grey_cost_cny += from_grid_wh / 1000.0 * finite_non_negative(price_cny_per_kwh);
        self.grey_co2_kg += from_grid_wh / 1000.0 * finite_non_negative(co2_kg_per_kwh);
    }

    /// Books a discharge of `delivered_wh` at the battery terminals and returns its origin.
    pub fn discharge(&mut self, delivered_wh: f64) -> DischargeOrigin {
        let delivered_wh = finite_non_negative(delivered_wh);
        if delivered_wh <= 0.0 {
            return self.peek();
        }
        let needed_wh = delivered_wh / self.discharge_efficiency;
        let stored_wh = self.green_wh + self.grey_wh;
        let taken_wh = needed_wh.min(stored_wh);
        if taken_wh <= 0.0 {
            return DischargeOrigin::default();
        }
        let take = taken_wh / stored_wh;
        let green_taken = self.green_wh * take;
        let grey_taken = self.grey_wh * take;
        let cost_taken = self.grey_cost_cny * take;
        let co2_taken = self.grey_co2_kg * take;
        self.green_wh -= green_taken;
        self.grey_wh -= grey_taken;
        self.grey_cost_cny -= cost_taken;
        self.grey_co2_kg -= co2_taken;
        if self.green_wh + self.grey_wh <= 1e-9 {
            self.green_wh = 0.0;
            self.grey_wh = 0.0;
            self.grey_cost_cny = 0.0;
            self.grey_co2_kg = 0.0;
        }
        DischargeOrigin {
            green_fraction: green_taken / needed_wh,
            cost_cny_per_wh: cost_taken / delivered_wh,
            co2_kg_per_wh: co2_taken / delivered_wh,
        }
    }

    /// The origin a discharge would have now, without booking it.
    pub fn peek(&self) -> DischargeOrigin {
        let stored_wh = self.green_wh + self.grey_wh;
        if stored_wh <= 0.0 {
            return DischargeOrigin::default();
        }
        let delivered_per_stored = self.discharge_efficiency;
        DischargeOrigin {
            green_fraction: self.green_wh / stored_wh,
            cost_cny_per_wh: self.grey_cost_cny / stored_wh / delivered_per_stored,
            co2_kg_per_wh: self.grey_co2_kg / stored_wh / delivered_per_stored,
        }
    }
}

fn clamp_efficiency(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.5, 1.0)
    } else {
        DEFAULT_ONE_WAY_EFFICIENCY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(pv_w: f64, building_w: f64, vehicles_w: f64, battery_w: f64, grid_w: f64) -> Flows {
        split_flows(&FlowInput {
            pv_w,
            building_w,
            vehicles_w,
            battery_w,
            grid_w,
            dt_s: 3600.0,
        })
    }

    #[test]
    fn pv_serves_building_and_vehicles_pro_rata_then_charges_then_exports() {
        let f = input(100.0, 30.0, 10.0, -40.0, -20.0);
        assert!((f.pv_to_building_wh - 30.0).abs() < 1e-9);
        assert!((f.pv_to_vehicles_wh - 10.0).abs() < 1e-9);
        assert!((f.pv_to_battery_wh - 40.0).abs() < 1e-9);
        assert!((f.pv_to_grid_wh - 20.0).abs() < 1e-9);
        assert_eq!(f.grid_to_building_wh, 0.0);
        assert!(f.unaccounted_wh.abs() < 1e-9);
    }

    #[test]
    fn battery_then_grid_cover_loads_pv_cannot() {
        let f = input(20.0, 60.0, 20.0, 40.0, 20.0);
        assert!((f.pv_to_building_wh - 15.0).abs() < 1e-9);
        assert!((f.pv_to_vehicles_wh - 5.0).abs() < 1e-9);
        assert!((f.battery_to_building_wh - 30.0).abs() < 1e-9);
        assert!((f.battery_to_vehicles_wh - 10.0).abs() < 1e-9);
        assert!((f.grid_to_building_wh - 15.0).abs() < 1e-9);
        assert!((f.grid_to_vehicles_wh - 5.0).abs() < 1e-9);
        assert!(f.unaccounted_wh.abs() < 1e-9);
    }

    #[test]
    fn grid_charging_at_night_is_grid_to_battery() {
        let f = input(0.0, 10.0, 0.0, -50.0, 60.0);
        assert!((f.grid_to_battery_wh - 50.0).abs() < 1e-9);
        assert!((f.grid_to_building_wh - 10.0).abs() < 1e-9);
    }

    #[test]
    fn battery_export_is_recorded_as_battery_to_grid() {
        let f = input(0.0, 10.0, 0.0, 50.0, -40.0);
        assert!((f.battery_to_building_wh - 10.0).abs() < 1e-9);
        assert!((f.battery_to_grid_wh - 40.0).abs() < 1e-9);
    }

    #[test]
    fn meter_mismatch_lands_in_unaccounted_and_loads_stay_whole() {
        // Grid meter reads 8 W while the loads need 10 W from the grid.
        let f = input(0.0, 10.0, 0.0, 0.0, 8.0);
        assert!((f.grid_to_building_wh - 10.0).abs() < 1e-9);
        assert!((f.unaccounted_wh + 2.0).abs() < 1e-9);
        assert!(f.grid_mismatch_wh().abs() < 1e-9);
        // PV surplus that neither charging nor export explains.
        let f = input(10.0, 5.0, 0.0, 0.0, 0.0);
        assert!((f.unaccounted_wh - 5.0).abs() < 1e-9);
        assert!((f.pv_unplaced_wh() - 5.0).abs() < 1e-9);
        assert!(f.grid_mismatch_wh().abs() < 1e-9);
    }

    #[test]
    fn non_finite_and_wrong_sign_inputs_are_clamped() {
        let f = input(f64::NAN, -5.0, f64::INFINITY, 0.0, 0.0);
        assert_eq!(f.pv_wh, 0.0);
        assert_eq!(f.building_wh, 0.0);
        assert_eq!(f.vehicles_wh, 0.0);
    }

    #[test]
    fn pv_charged_battery_discharges_green_with_losses() {
        let mut b = BatteryOrigin::new(0.9, 0.9);
        b.charge(1000.0, 0.0, 0.7, 0.57);
        assert!((b.green_wh - 900.0).abs() < 1e-9);
        let o = b.discharge(405.0);
        assert!((o.green_fraction - 1.0).abs() < 1e-9);
        assert!((b.green_wh - 450.0).abs() < 1e-9);
    }

    #[test]
    fn mixed_battery_discharges_in_proportion_and_carries_cost() {
        let mut b = BatteryOrigin::new(1.0, 1.0);
        b.charge(300.0, 100.0, 0.3, 0.5);
        let o = b.discharge(200.0);
        assert!((o.green_fraction - 0.75).abs() < 1e-9);
        // 100 Wh grey bought for 0.03 CNY; half of the pack leaves -> 0.015 CNY for 200 Wh.
        assert!((o.cost_cny_per_wh * 200.0 - 0.015).abs() < 1e-12);
        assert!((o.co2_kg_per_wh * 200.0 - 0.025).abs() < 1e-12);
    }

    #[test]
    fn discharge_beyond_the_account_counts_as_grey() {
        let mut b = BatteryOrigin::new(1.0, 1.0);
        b.charge(100.0, 0.0, 0.0, 0.0);
        let o = b.discharge(400.0);
        assert!((o.green_fraction - 0.25).abs() < 1e-9);
        assert_eq!(b.green_wh, 0.0);
        let o = b.discharge(100.0);
        assert_eq!(o.green_fraction, 0.0);
    }
}

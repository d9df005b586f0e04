//! Second-life battery (BMS) and its PCS.
//!
//! * Usable energy = nameplate x SoH; SoC changes with the DC energy, one-way efficiency
//!   `efficiency` (AC -> DC when charging, DC -> AC when discharging).
//! * BMS current limits (DC side) = C-rate cap x derates: SoC (linear to 0 over the last 5 %
//!   before the window ends; discharge also stops at `SoCRsvMin`), temperature (charge 0-45 C
//!   with ramps 0-10 and 35-45, discharge -10..55 with ramps -10..0 and 45..55), cell voltage
//!   (linear to 0 from 100 mV to 50 mV before the cell limits; cell voltages from an NMC OCV
//!   curve plus an imbalance spread growing towards the SoC ends), and alarms (0).
//! * The SoC window of the BMS narrows by 0.1 % per mV of imbalance on each end. The imbalance
//!   (cell spread at mid SoC) grows with cycling, faster when hot: per minute
//!   `d imbalance = imbalance_growth_mv_per_efc x d EFC x 2^((T - 25) / 10)` (no growth from
//!   heat alone below 25 C is modelled as the same law), so an ageing pack's window narrows.
//! * What the BMS reports as SoH is not the truth: `bms_soh_bias_pct` offsets it, it starts at
//!   `bms_soh_reported_pct` when given, and it is refreshed (to truth + bias) only every
//!   `bms_soh_update_days` (never when 0; every step when absent). The SoC the BMS reports is
//!   the true one (OCV-calibrated), so energy between SoC readings measures the true capacity.
//! * Modules (SunSpec 804 groups): the pack's one string has `modules` modules. The weakest
//!   module (the middle one, `modules / 2 + 1`) holds the cell that is highest above mid SoC
//!   and lowest below it, and it runs hottest (its resistance is highest); module 1 holds the
//!   other extreme and is the coolest (end of the rack). The module temperature spread is
//!   0.5 C plus 30 % of the pack's rise above ambient from I^2 R heat.
//! * Lumped thermal model: `C dT/dt = I^2 R - UA (T - T_amb)`.
//! * Aging, per minute: SoH = 100 x q with `q = 1 - cal - 7.58e-5 EFC^1.08`, the calendar
//!   loss `cal = k_cal t^0.464` integrated with the equivalent-time method under varying T and
//!   SoC, `k_cal = 3.25e8 exp(-7580/T) exp(162 soc/T)` (soc as a fraction, T in K). The pack's
//!   first life is part of the curve: it starts `calendar_age_days` old (at 25 C, mid SoC) and
//!   the first-life cycles are back-solved so that q equals the initial SoH exactly. This puts
//!   the second life on the flat part of the calendar curve (about 1 SoH point a year) while
//!   each cycle costs about 0.014 SoH points, so daily cycling shows clearly over a year.
//! * PCS: follows `WSet` (W, > 0 discharge) when enabled, within the BMS limits and its rating,
//!   with a ramp; the setpoint reverts to 0 when not refreshed within `WSetRvrtTms` (> 0).

use crate::scenario::BatteryParams;
use crate::view::{battery_alarm, BatteryState};

const OCV_SOC: [f64; 13] = [
    0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0,
];
const OCV_V: [f64; 13] = [
    3.00, 3.30, 3.45, 3.56, 3.62, 3.67, 3.72, 3.78, 3.85, 3.93, 4.03, 4.08, 4.15,
];
/// Cell voltage limits, V.
pub const CELL_V_MAX: f64 = 4.20;
pub const CELL_V_MIN: f64 = 2.80;
const CELL_V_NOMINAL: f64 = 3.7;
/// Pack resistance per series cell, ohm.
const R_CELL_OHM: f64 = 0.0003;
/// Heat capacity per nameplate kWh, J/K, and loss to ambient per nameplate kWh, W/K.
const HEAT_CAP_J_PER_K_PER_KWH: f64 = 6000.0;
const UA_W_PER_K_PER_KWH: f64 = 0.8;
/// Width of the SoC derating band, %.
const SOC_DERATE_BAND_PCT: f64 = 5.0;

/// Open-circuit cell voltage at a SoC in %.
pub fn ocv_cell_v(soc_pct: f64) -> f64 {
    let s = soc_pct.clamp(0.0, 100.0);
    for i in 1..OCV_SOC.len() {
        if s <= OCV_SOC[i] {
            let f = (s - OCV_SOC[i - 1]) / (OCV_SOC[i] - OCV_SOC[i - 1]);
            return OCV_V[i - 1] + f * (OCV_V[i] - OCV_V[i - 1]);
        }
    }
    OCV_V[OCV_V.len() - 1]
}

/// Time exponent of calendar aging (`cal = k_cal t^0.464`).
pub const CALENDAR_EXPONENT: f64 = 0.464;
/// SoC coefficient of calendar aging, K (`k_cal` grows as `exp(162 soc / T)`).
pub const CALENDAR_SOC_K: f64 = 162.0;
/// Cycle aging `A x EFC^B`: its coefficient and exponent.
pub const CYCLE_AGING_A: f64 = 7.58e-5;
pub const CYCLE_AGING_B: f64 = 1.08;

/// Calendar aging rate per day^0.464 (T in K, soc as a fraction), as
/// `docs/reference-station.md` (Battery aging) gives it.
pub fn k_cal(t_k: f64, soc: f64) -> f64 {
    3.25e8 * (-7580.0 / t_k).exp() * (CALENDAR_SOC_K * soc / t_k).exp()
}

/// The calendar loss after `dt_days` more at `t_k` and `soc` (fraction), from `cal_loss`: the
/// equivalent-time step of the law (`Battery::age` runs it every simulated minute).
pub fn calendar_step(cal_loss: f64, t_k: f64, soc: f64, dt_days: f64) -> f64 {
    let k = k_cal(t_k, soc);
    let t_eq_days = if cal_loss > 0.0 {
        (cal_loss / k).powf(1.0 / CALENDAR_EXPONENT)
    } else {
        0.0
    };
    k * (t_eq_days + dt_days).powf(CALENDAR_EXPONENT)
}

/// The cycle loss (fraction of capacity) after `efc_total` equivalent full cycles, first life
/// included.
pub fn cycle_loss(efc_total: f64) -> f64 {
    CYCLE_AGING_A * efc_total.max(0.0).powf(CYCLE_AGING_B)
}

fn ramp(x: f64, lo0: f64, lo1: f64, hi1: f64, hi0: f64) -> f64 {
    if x <= lo0 || x >= hi0 {
        0.0
    } else if x < lo1 {
        (x - lo0) / (lo1 - lo0)
    } else if x > hi1 {
        (hi0 - x) / (hi0 - hi1)
    } else {
        1.0
    }
}

#[derive(Debug, Clone)]
pub struct Battery {
    pub nameplate_wh: f64,
    pub soh0_pct: f64,
    pub soh_pct: f64,
    pub usable0_wh: f64,
    pub soc_pct: f64,
    pub soc_min_pct: f64,
    pub soc_max_pct: f64,
    pub soc_reserve_min_pct: f64,
    pub pcs_w: f64,
    pub c_rate: f64,
    pub efficiency: f64,
    pub ambient_c: f64,
    pub temp_c: f64,
    pub imbalance_mv: f64,
    pub series: f64,
    pub r_pack_ohm: f64,
    pub heat_cap_j_per_k: f64,
    pub ua_w_per_k: f64,
    pub setpoint_w: f64,
    pub setpoint_enabled: bool,
    pub setpoint_revert_s: u32,
    pub since_setpoint_s: f64,
    pub ramp_w_per_s: f64,
    pub power_w: f64,
    pub current_a: f64,
    /// Open-circuit cell voltage at the current SoC (cached), V.
    pub ocv_v: f64,
    pub alarm_manual: bool,
    pub alarm_scheduled: bool,
    pub max_charge_a: f64,
    pub max_discharge_a: f64,
    pub soc_limited: bool,
    pub cal_loss: f64,
    /// Equivalent full cycles of the first life (back-solved from the initial SoH).
    pub efc0: f64,
    pub dc_throughput_wh: f64,
    age_acc_s: f64,
    age_temp_acc: f64,
    age_soc_acc: f64,
    /// Energy in the pack that came from PV, Wh (for the green share).
    pub solar_wh: f64,
    /// SoC window before the imbalance narrows it, %.
    pub soc_min_base_pct: f64,
    pub soc_max_base_pct: f64,
    pub imbalance_growth_mv_per_efc: f64,
    /// EFC at the last aging step (for the imbalance growth).
    efc_aged: f64,
    /// SoH the BMS reports, %.
    pub bms_soh_pct: f64,
    pub bms_soh_bias_pct: f64,
    /// Refresh period of the reported SoH, s (`None` = every step, `Some(0)` = never).
    pub bms_soh_update_s: Option<f64>,
    since_bms_update_s: f64,
    pub modules: u16,
}

impl Battery {
    pub fn new(p: &BatteryParams) -> Self {
        let loss0 = 1.0 - p.soh_pct / 100.0;
        let k_ref = k_cal(298.15, 0.5);
        let cal0 = (k_ref * p.calendar_age_days.max(0.0).powf(CALENDAR_EXPONENT)).min(loss0);
        let efc0 = ((loss0 - cal0).max(0.0) / CYCLE_AGING_A).powf(1.0 / CYCLE_AGING_B);
        let mut b = Battery {
            nameplate_wh: p.nameplate_kwh * 1000.0,
            soh0_pct: p.soh_pct,
            soh_pct: p.soh_pct,
            usable0_wh: p.nameplate_kwh * 1000.0 * p.soh_pct / 100.0,
            soc_pct: p.initial_soc_pct,
            soc_min_pct: p.soc_min_pct,
            soc_max_pct: p.soc_max_pct,
            soc_reserve_min_pct: p.soc_reserve_min_pct,
            pcs_w: p.pcs_kw * 1000.0,
            c_rate: p.c_rate_cap,
            efficiency: p.efficiency,
            ambient_c: p.ambient_c,
            temp_c: p.initial_temp_c.unwrap_or(p.ambient_c),
            imbalance_mv: p.imbalance_mv,
            series: f64::from(p.series_cells),
            r_pack_ohm: f64::from(p.series_cells) * R_CELL_OHM,
            heat_cap_j_per_k: HEAT_CAP_J_PER_K_PER_KWH * p.nameplate_kwh,
            ua_w_per_k: UA_W_PER_K_PER_KWH * p.nameplate_kwh,
            setpoint_w: 0.0,
            setpoint_enabled: p.setpoint_enabled,
            setpoint_revert_s: p.setpoint_revert_s,
            since_setpoint_s: 0.0,
            ramp_w_per_s: p.ramp_kw_per_s * 1000.0,
            power_w: 0.0,
            current_a: 0.0,
            ocv_v: ocv_cell_v(p.initial_soc_pct),
            alarm_manual: false,
            alarm_scheduled: false,
            max_charge_a: 0.0,
            max_discharge_a: 0.0,
            soc_limited: false,
            cal_loss: cal0,
            efc0,
            dc_throughput_wh: 0.0,
            age_acc_s: 0.0,
            age_temp_acc: 0.0,
            age_soc_acc: 0.0,
            solar_wh: 0.0,
            soc_min_base_pct: p.soc_min_pct,
            soc_max_base_pct: p.soc_max_pct,
            imbalance_growth_mv_per_efc: p.imbalance_growth_mv_per_efc,
            efc_aged: 0.0,
            bms_soh_pct: p
                .bms_soh_reported_pct
                .unwrap_or(p.soh_pct + p.bms_soh_bias_pct)
                .clamp(0.0, 100.0),
            bms_soh_bias_pct: p.bms_soh_bias_pct,
            bms_soh_update_s: p.bms_soh_update_days.map(|d| d * 86_400.0),
            since_bms_update_s: 0.0,
            modules: p.modules.max(1),
        };
        b.narrow_window();
        b.update_limits();
        b
    }

    /// Narrow the BMS window by 0.1 % per mV of imbalance at each end.
    fn narrow_window(&mut self) {
        let narrowing = self.imbalance_mv * 0.1;
        self.soc_min_pct = (self.soc_min_base_pct + narrowing).min(50.0);
        self.soc_max_pct = (self.soc_max_base_pct - narrowing).max(50.0);
    }

    /// Energy between the BMS window's ends at the true capacity, Wh.
    pub fn window_wh(&self) -> f64 {
        (self.soc_max_pct - self.soc_min_pct).max(0.0) / 100.0 * self.usable_wh()
    }

    /// The weakest module (1-based): hottest, and holds the extreme cell towards the SoC end.
    pub fn weak_module(&self) -> u16 {
        self.modules / 2 + 1
    }

    /// Modules holding the highest and the lowest cell now (1-based).
    pub fn cell_extreme_modules(&self) -> (u16, u16) {
        if self.soc_pct >= 50.0 {
            (self.weak_module(), 1)
        } else {
            (1, self.weak_module())
        }
    }

    /// Module temperatures now: (hottest C, its module, coolest C, its module).
    pub fn module_temps(&self) -> (f64, u16, f64, u16) {
        let rise = (self.temp_c - self.ambient_c).max(0.0);
        let spread = 0.5 + 0.3 * rise;
        (
            self.temp_c + spread / 2.0,
            self.weak_module(),
            self.temp_c - spread / 2.0,
            1,
        )
    }

    pub fn usable_wh(&self) -> f64 {
        self.nameplate_wh * self.soh_pct / 100.0
    }

    pub fn stored_wh(&self) -> f64 {
        self.soc_pct / 100.0 * self.usable_wh()
    }

    /// Share of the stored energy that came from PV, 0..1.
    pub fn solar_fraction(&self) -> f64 {
        let s = self.stored_wh();
        if s > 1e-9 {
            (self.solar_wh / s).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Equivalent full cycles since the start.
    pub fn efc(&self) -> f64 {
        self.dc_throughput_wh / (2.0 * self.usable0_wh)
    }

    pub fn alarm(&self) -> bool {
        self.alarm_manual || self.alarm_scheduled
    }

    fn spread_v(&self) -> f64 {
        self.imbalance_mv / 1000.0 * (1.0 + 2.0 * (self.soc_pct - 50.0).abs() / 50.0)
    }

    /// Cell voltages (max, min) now, including the I R drop.
    pub fn cell_v(&self) -> (f64, f64) {
        let ocv = self.ocv_v;
        let ir = self.current_a * R_CELL_OHM;
        let half = self.spread_v() / 2.0;
        (ocv + half - ir, ocv - half - ir)
    }

    /// Pack voltage now, V.
    pub fn voltage_v(&self) -> f64 {
        self.series * self.ocv_v - self.current_a * self.r_pack_ohm
    }

    fn ocv_pack_v(&self) -> f64 {
        self.series * self.ocv_v
    }

    /// Lowest SoC discharge may reach: the window or the reserve, whichever is higher.
    pub fn discharge_floor_pct(&self) -> f64 {
        self.soc_min_pct.max(self.soc_reserve_min_pct)
    }

    /// Recompute the BMS current limits.
    pub fn update_limits(&mut self) {
        self.ocv_v = ocv_cell_v(self.soc_pct);
        if self.alarm() {
            self.max_charge_a = 0.0;
            self.max_discharge_a = 0.0;
            self.soc_limited = false;
            return;
        }
        let base_a = self.c_rate * self.usable_wh() / (self.series * CELL_V_NOMINAL);
        let soc_c = ((self.soc_max_pct - self.soc_pct) / SOC_DERATE_BAND_PCT).clamp(0.0, 1.0);
        let soc_d =
            ((self.soc_pct - self.discharge_floor_pct()) / SOC_DERATE_BAND_PCT).clamp(0.0, 1.0);
        let t = self.temp_c;
        let temp_c = ramp(t, 0.0, 10.0, 35.0, 45.0);
        let temp_d = ramp(t, -10.0, 0.0, 45.0, 55.0);
        let ocv = self.ocv_v;
        let half = self.spread_v() / 2.0;
        let v_c = ((CELL_V_MAX - (ocv + half) - 0.05) / 0.05).clamp(0.0, 1.0);
        let v_d = (((ocv - half) - CELL_V_MIN - 0.05) / 0.05).clamp(0.0, 1.0);
        self.max_charge_a = base_a * soc_c * temp_c * v_c;
        self.max_discharge_a = base_a * soc_d * temp_d * v_d;
        self.soc_limited = soc_c == 0.0 || soc_d == 0.0;
    }

    pub fn max_charge_w(&self) -> f64 {
        self.max_charge_a * self.ocv_pack_v()
    }

    pub fn max_discharge_w(&self) -> f64 {
        self.max_discharge_a * self.ocv_pack_v()
    }

    /// A fresh setpoint restarts the revert timer.
    pub fn set_setpoint(&mut self, w: f64) {
        self.setpoint_w = w;
        self.since_setpoint_s = 0.0;
    }

    /// Advance by `dt_s`. `pv_surplus_w` is the PV power left after the site loads (the part
    /// of a charge that counts as solar). Returns the DC energy moved, Wh (> 0 discharge).
    pub fn step(&mut self, dt_s: f64, pv_surplus_w: f64) -> f64 {
        self.since_setpoint_s += dt_s;
        if self.setpoint_revert_s > 0 && self.since_setpoint_s > f64::from(self.setpoint_revert_s) {
            self.setpoint_w = 0.0;
        }
        self.update_limits();
        let max_dis_ac = self.pcs_w.min(self.max_discharge_w() * self.efficiency);
        let max_cha_ac = self.pcs_w.min(self.max_charge_w() / self.efficiency);
        let target = if self.setpoint_enabled {
            self.setpoint_w
        } else {
            0.0
        };
        let target = target.clamp(-max_cha_ac, max_dis_ac);
        let max_move = self.ramp_w_per_s * dt_s;
        let mut p = self.power_w + (target - self.power_w).clamp(-max_move, max_move);
        // Never leave the limits, even when a limit fell faster than the ramp.
        p = p.clamp(-max_cha_ac, max_dis_ac);
        // Energy bound to the window edges so one long step cannot overshoot.
        let usable = self.usable_wh();
        let h = dt_s / 3600.0;
        let mut dc_w = if p > 0.0 {
            p / self.efficiency
        } else {
            p * self.efficiency
        };
        if dc_w > 0.0 {
            let room = ((self.soc_pct - self.discharge_floor_pct()) / 100.0 * usable).max(0.0);
            if dc_w * h > room {
                dc_w = room / h;
                p = dc_w * self.efficiency;
            }
        } else if dc_w < 0.0 {
            let room = ((self.soc_max_pct - self.soc_pct) / 100.0 * usable).max(0.0);
            if -dc_w * h > room {
                dc_w = -room / h;
                p = dc_w / self.efficiency;
            }
        }
        self.power_w = p;
        let dc_wh = dc_w * h;
        let stored_before = self.stored_wh();
        if dc_wh > 0.0 {
            if stored_before > 1e-9 {
                self.solar_wh -= self.solar_wh / stored_before * dc_wh;
            }
        } else if dc_wh < 0.0 {
            let solar_ac = (-p).min(pv_surplus_w.max(0.0));
            self.solar_wh += solar_ac * self.efficiency * h;
        }
        self.soc_pct = (self.soc_pct - dc_wh / usable * 100.0).clamp(0.0, 100.0);
        self.solar_wh = self.solar_wh.clamp(0.0, self.stored_wh());
        self.dc_throughput_wh += dc_wh.abs();
        self.ocv_v = ocv_cell_v(self.soc_pct);
        let v = self.ocv_pack_v().max(1.0);
        self.current_a = dc_w / v;
        let heat_w = self.current_a * self.current_a * self.r_pack_ohm;
        let dt_temp = (heat_w - self.ua_w_per_k * (self.temp_c - self.ambient_c)) * dt_s
            / self.heat_cap_j_per_k;
        self.temp_c += dt_temp;
        self.age(dt_s);
        dc_wh
    }

    fn age(&mut self, dt_s: f64) {
        self.age_acc_s += dt_s;
        self.age_temp_acc += (self.temp_c + 273.15) * dt_s;
        self.age_soc_acc += self.soc_pct / 100.0 * dt_s;
        if self.age_acc_s < 60.0 {
            return;
        }
        let acc_s = self.age_acc_s;
        let t_k = self.age_temp_acc / self.age_acc_s;
        let soc = self.age_soc_acc / self.age_acc_s;
        self.cal_loss = calendar_step(self.cal_loss, t_k, soc, self.age_acc_s / 86_400.0);
        self.age_acc_s = 0.0;
        self.age_temp_acc = 0.0;
        self.age_soc_acc = 0.0;
        let efc = self.efc();
        let q = (1.0 - self.cal_loss - cycle_loss(self.efc0 + efc)).clamp(0.0, 1.0);
        self.soh_pct = 100.0 * q;
        let heat = 2f64.powf((t_k - 298.15) / 10.0);
        let grown = self.imbalance_growth_mv_per_efc * (efc - self.efc_aged).max(0.0) * heat;
        self.efc_aged = efc;
        if grown > 0.0 {
            self.imbalance_mv = (self.imbalance_mv + grown).min(500.0);
            self.narrow_window();
        }
        self.report_soh(acc_s);
    }

    /// The BMS refreshes its reported SoH on its own schedule.
    fn report_soh(&mut self, elapsed_s: f64) {
        let fresh = (self.soh_pct + self.bms_soh_bias_pct).clamp(0.0, 100.0);
        match self.bms_soh_update_s {
            None => self.bms_soh_pct = fresh,
            Some(period) if period > 0.0 => {
                self.since_bms_update_s += elapsed_s;
                if self.since_bms_update_s >= period {
                    self.since_bms_update_s = 0.0;
                    self.bms_soh_pct = fresh;
                }
            }
            Some(_) => {}
        }
    }

    /// Model 802 `Evt1` bits now.
    pub fn alarms(&self) -> u32 {
        let mut a = 0;
        if self.alarm() {
            a |= battery_alarm::CONTACTOR_ERROR;
        }
        if self.temp_c >= 55.0 {
            a |= battery_alarm::OVER_TEMP_ALARM;
        } else if self.temp_c >= 45.0 {
            a |= battery_alarm::OVER_TEMP_WARNING;
        }
        if self.temp_c <= -10.0 {
            a |= battery_alarm::UNDER_TEMP_ALARM;
        } else if self.temp_c <= 0.0 {
            a |= battery_alarm::UNDER_TEMP_WARNING;
        }
        if self.soc_pct <= self.soc_min_pct + 1e-9 {
            a |= battery_alarm::UNDER_SOC_MIN_WARNING;
        }
        if self.soc_pct >= self.soc_max_pct - 1e-9 {
            a |= battery_alarm::OVER_SOC_MAX_WARNING;
        }
        if self.spread_v() > 0.1 {
            a |= battery_alarm::VOLTAGE_IMBALANCE_WARNING;
        }
        a
    }

    /// Model 802 `State` now.
    pub fn state(&self) -> BatteryState {
        if self.alarm() {
            BatteryState::Fault
        } else if self.soc_limited
            && ((self.max_charge_a == 0.0 && self.setpoint_w < 0.0)
                || (self.max_discharge_a == 0.0 && self.setpoint_w > 0.0))
        {
            BatteryState::SocProtection
        } else if self.power_w.abs() < 1.0 {
            BatteryState::Standby
        } else {
            BatteryState::Connected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocv_rises_with_soc() {
        assert!((ocv_cell_v(0.0) - 3.0).abs() < 1e-12);
        assert!((ocv_cell_v(100.0) - 4.15).abs() < 1e-12);
        assert!(ocv_cell_v(55.0) > ocv_cell_v(45.0));
    }

    #[test]
    fn charging_is_forbidden_below_freezing_and_above_45_c() {
        let mut b = Battery::new(&BatteryParams::default());
        b.temp_c = -5.0;
        b.update_limits();
        assert_eq!(b.max_charge_a, 0.0);
        assert!(b.max_discharge_a > 0.0);
        b.temp_c = 50.0;
        b.update_limits();
        assert_eq!(b.max_charge_a, 0.0);
        assert!(b.max_discharge_a > 0.0);
        b.temp_c = 25.0;
        b.update_limits();
        assert!(b.max_charge_a > 0.0);
    }

    #[test]
    fn c_rate_caps_the_current_at_mid_soc() {
        let b = Battery::new(&BatteryParams::default());
        // 0.5 C of 360 kWh at 192 x 3.7 V
        let expected = 0.5 * 360_000.0 / (192.0 * 3.7);
        assert!(
            (b.max_charge_a - expected).abs() < 1e-6,
            "{}",
            b.max_charge_a
        );
        assert!((b.max_discharge_a - expected).abs() < 1e-6);
    }

    #[test]
    fn second_life_pack_starts_at_its_soh_and_one_cycle_costs_about_0_014_points() {
        let p = BatteryParams::default();
        let mut b = Battery::new(&p);
        assert!((b.soh_pct - 72.0).abs() < 1e-12);
        b.age(60.0);
        let after_minute = b.soh_pct;
        assert!(after_minute < 72.0 && after_minute > 72.0 - 1e-4);
        b.dc_throughput_wh += 2.0 * b.usable0_wh;
        b.age(60.0);
        let per_cycle = after_minute - b.soh_pct;
        assert!(per_cycle > 0.01 && per_cycle < 0.02, "{per_cycle}");
        // Cycling cost per kWh discharged with the default pack value, CNY.
        let cny_per_kwh =
            p.pack_value_cny * per_cycle / p.allowed_soh_loss_pct / (b.usable0_wh / 1000.0);
        assert!(cny_per_kwh > 0.1 && cny_per_kwh < 0.3, "{cny_per_kwh}");
    }

    /// Run `cycles` full cycles through the physics (0.25 C) at a fixed temperature.
    fn cycle(b: &mut Battery, cycles: usize, temp_c: f64) {
        for _ in 0..cycles {
            for sign in [-1.0, 1.0] {
                b.set_setpoint(sign * 90_000.0);
                for _ in 0..(6 * 3600) {
                    b.temp_c = temp_c;
                    b.since_setpoint_s = 0.0;
                    b.step(1.0, 0.0);
                }
            }
        }
    }

    #[test]
    fn cell_spread_grows_with_cycling_faster_when_hot_and_narrows_the_window_at_both_ends() {
        let p = BatteryParams::default();
        let mut cool = Battery::new(&p);
        let (min0, max0) = (cool.soc_min_pct, cool.soc_max_pct);
        assert!((min0 - 8.0).abs() < 1e-9 && (max0 - 92.0).abs() < 1e-9);
        let mut hot = cool.clone();
        cycle(&mut cool, 10, 25.0);
        cycle(&mut hot, 10, 35.0);
        let efc = cool.efc();
        assert!(efc > 5.0, "{efc}");
        let grown_cool = cool.imbalance_mv - p.imbalance_mv;
        let grown_hot = hot.imbalance_mv - p.imbalance_mv;
        assert!(
            (grown_cool - 0.05 * efc).abs() < 0.05 * efc * 0.05,
            "{grown_cool}"
        );
        assert!(grown_hot > 1.8 * grown_cool, "{grown_hot} vs {grown_cool}");
        assert!(cool.soc_min_pct > min0 && cool.soc_max_pct < max0);
        assert!((cool.soc_min_pct - (5.0 + 0.1 * cool.imbalance_mv)).abs() < 1e-9);
        assert!(hot.window_wh() < cool.window_wh());
    }

    #[test]
    fn the_bms_reports_its_biased_soh_and_refreshes_it_only_on_its_schedule() {
        let p = BatteryParams {
            soh_pct: 68.0,
            bms_soh_reported_pct: Some(80.0),
            bms_soh_update_days: Some(0.0),
            ..BatteryParams::default()
        };
        let mut stale = Battery::new(&p);
        assert_eq!(stale.bms_soh_pct, 80.0);
        cycle(&mut stale, 3, 25.0);
        assert_eq!(stale.bms_soh_pct, 80.0, "never refreshed");
        assert!(stale.soh_pct < 68.0);

        let p = BatteryParams {
            soh_pct: 68.0,
            bms_soh_bias_pct: 5.0,
            bms_soh_update_days: Some(1.0),
            ..BatteryParams::default()
        };
        let mut daily = Battery::new(&p);
        assert_eq!(daily.bms_soh_pct, 73.0);
        cycle(&mut daily, 1, 25.0); // 12 h: no refresh yet
        assert_eq!(daily.bms_soh_pct, 73.0);
        cycle(&mut daily, 1, 25.0); // 24 h: refreshed to truth + bias
        assert!((daily.bms_soh_pct - (daily.soh_pct + 5.0)).abs() < 0.01);
        assert!(daily.bms_soh_pct < 73.0);
    }

    #[test]
    fn the_weak_module_is_the_hottest_and_holds_the_extreme_cell_towards_each_end() {
        let mut b = Battery::new(&BatteryParams::default());
        b.soc_pct = 80.0;
        assert_eq!(b.cell_extreme_modules(), (7, 1));
        b.soc_pct = 20.0;
        assert_eq!(b.cell_extreme_modules(), (1, 7));
        b.temp_c = 35.0;
        let (hi, hi_mod, lo, lo_mod) = b.module_temps();
        assert_eq!((hi_mod, lo_mod), (7, 1));
        assert!(hi > 35.0 && lo < 35.0 && (hi - lo - 3.5).abs() < 1e-9);
    }

    #[test]
    fn alarm_drops_both_limits_to_zero() {
        let mut b = Battery::new(&BatteryParams::default());
        b.alarm_manual = true;
        b.update_limits();
        assert_eq!((b.max_charge_a, b.max_discharge_a), (0.0, 0.0));
        assert_eq!(b.state(), BatteryState::Fault);
        assert_ne!(b.alarms() & battery_alarm::CONTACTOR_ERROR, 0);
    }
}

//! PV inverter: available power from the exogenous weather, AC rating clip (already in the
//! available power), SunSpec model 123 active-power limit with ramp and revert timeout.

use crate::view::PvStatus;

#[derive(Debug, Clone)]
pub struct PvInverter {
    pub rating_w: f64,
    pub efficiency: f64,
    pub limit_pct: f64,
    pub limit_enabled: bool,
    pub limit_revert_s: u32,
    /// Time since the last limit command, s.
    pub since_limit_cmd_s: f64,
    /// Output cap the inverter is ramping towards the limit, W.
    pub cap_w: f64,
    pub ramp_w_per_s: f64,
    pub available_w: f64,
    pub power_w: f64,
    pub energy_wh: f64,
}

impl PvInverter {
    pub fn new(rating_w: f64, efficiency: f64, ramp_pct_per_s: f64, limit_revert_s: u32) -> Self {
        PvInverter {
            rating_w,
            efficiency,
            limit_pct: 100.0,
            limit_enabled: false,
            limit_revert_s,
            since_limit_cmd_s: 0.0,
            cap_w: rating_w,
            ramp_w_per_s: rating_w * ramp_pct_per_s / 100.0,
            available_w: 0.0,
            power_w: 0.0,
            energy_wh: 0.0,
        }
    }

    /// A limit command (percentage or enable) restarts the revert timer.
    pub fn limit_command(&mut self) {
        self.since_limit_cmd_s = 0.0;
    }

    /// Advance by `dt_s` with `available_w` AC available; returns the AC energy produced, Wh.
    pub fn step(&mut self, dt_s: f64, available_w: f64) -> f64 {
        self.since_limit_cmd_s += dt_s;
        if self.limit_enabled
            && self.limit_revert_s > 0
            && self.since_limit_cmd_s > f64::from(self.limit_revert_s)
        {
            self.limit_enabled = false;
        }
        let target = if self.limit_enabled {
            self.rating_w * self.limit_pct / 100.0
        } else {
            self.rating_w
        };
        let max_move = self.ramp_w_per_s * dt_s;
        self.cap_w += (target - self.cap_w).clamp(-max_move, max_move);
        self.available_w = available_w.max(0.0);
        self.power_w = self.available_w.min(self.cap_w).max(0.0);
        let e = self.power_w * dt_s / 3600.0;
        self.energy_wh += e;
        e
    }

    pub fn status(&self) -> PvStatus {
        if self.available_w <= 0.0 {
            PvStatus::Sleeping
        } else if self.power_w < self.available_w - 1e-6 {
            PvStatus::Throttled
        } else {
            PvStatus::Mppt
        }
    }

    pub fn dc_power_w(&self) -> f64 {
        self.power_w / self.efficiency
    }
}

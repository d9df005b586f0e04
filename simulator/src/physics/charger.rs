//! AC charger (Alfen NG9xx behaviour): setpoint with validity, safe-current fallback, IEC 61851
//! mode-3 states.

use super::exo::NOMINAL_V;
use super::vehicles::Vehicle;
use crate::view::Mode3State;

/// IEC 61851 minimum current; an offer below it pauses charging.
pub const MIN_CURRENT_A: f64 = 6.0;
/// Charging pause after a phase switch, s.
pub const PHASE_SWITCH_PAUSE_S: f64 = 30.0;

#[derive(Debug, Clone)]
pub struct Charger {
    pub phases: u8,
    pub rating_a: f64,
    pub setpoint_a: f64,
    pub safe_current_a: f64,
    pub validity_s: u32,
    pub remaining_validity_s: f64,
    pub pause_s: f64,
    /// Line used by single-phase charging (0..3), spreads single-phase load over the phases.
    pub line: usize,
    pub energy_wh: f64,
    pub current_a: f64,
    pub power_w: f64,
    pub state: Mode3State,
    pub vehicle: Option<Vehicle>,
}

impl Charger {
    pub fn new(
        index: usize,
        phases: u8,
        rating_a: f64,
        safe_current_a: f64,
        validity_s: u32,
    ) -> Self {
        Charger {
            phases,
            rating_a,
            setpoint_a: 0.0,
            safe_current_a,
            validity_s,
            remaining_validity_s: 0.0,
            pause_s: 0.0,
            line: index % 3,
            energy_wh: 0.0,
            current_a: 0.0,
            power_w: 0.0,
            state: Mode3State::A,
            vehicle: None,
        }
    }

    /// The max current applied now (register 1206), A.
    pub fn applied_max_a(&self) -> f64 {
        let a = if self.remaining_validity_s > 0.0 {
            self.setpoint_a
        } else {
            self.safe_current_a
        };
        a.min(self.rating_a)
    }

    /// A fresh max-current setpoint restarts the validity.
    pub fn set_setpoint(&mut self, amps: f64) {
        self.setpoint_a = amps;
        self.remaining_validity_s = f64::from(self.validity_s);
    }

    pub fn set_phases(&mut self, phases: u8) {
        if phases != self.phases {
            self.phases = phases;
            self.pause_s = PHASE_SWITCH_PAUSE_S;
        }
    }

    /// Phases the current car actually uses.
    pub fn active_phases(&self) -> u8 {
        self.vehicle
            .as_ref()
            .map_or(0, |v| v.phases.min(self.phases))
    }

    /// Per-line current now, A.
    pub fn line_currents_a(&self) -> [f64; 3] {
        match self.active_phases() {
            3 => [self.current_a; 3],
            1 => {
                let mut c = [0.0; 3];
                c[self.line] = self.current_a;
                c
            }
            _ => [0.0; 3],
        }
    }

    /// Advance by `dt_s`; returns the energy delivered, Wh.
    pub fn step(&mut self, dt_s: f64) -> f64 {
        let offered = self.applied_max_a();
        let phases = f64::from(self.active_phases());
        let pausing = self.pause_s > 0.0;
        self.pause_s = (self.pause_s - dt_s).max(0.0);
        self.remaining_validity_s = (self.remaining_validity_s - dt_s).max(0.0);
        let Some(v) = self.vehicle.as_mut() else {
            self.state = Mode3State::A;
            self.current_a = 0.0;
            self.power_w = 0.0;
            return 0.0;
        };
        let wants = v.wants_energy();
        if pausing || offered < MIN_CURRENT_A {
            self.state = if wants {
                Mode3State::C1
            } else {
                Mode3State::B1
            };
            self.current_a = 0.0;
            self.power_w = 0.0;
            return 0.0;
        }
        let amps = offered.min(v.accept_a());
        if amps <= 0.0 {
            self.state = Mode3State::B2;
            self.current_a = 0.0;
            self.power_w = 0.0;
            return 0.0;
        }
        let mut energy_wh = phases * NOMINAL_V * amps * dt_s / 3600.0;
        let wanted = v.wanted_wh();
        let mut scale = 1.0;
        if energy_wh > wanted {
            scale = wanted / energy_wh;
            energy_wh = wanted;
        }
        v.soc_pct = (v.soc_pct + energy_wh / v.battery_wh * 100.0).min(100.0);
        if scale < 1.0 {
            v.soc_pct = v.soc_pct.max(v.target_soc_pct);
        }
        v.session_wh += energy_wh;
        self.current_a = amps * scale;
        self.power_w = phases * NOMINAL_V * self.current_a;
        self.energy_wh += energy_wh;
        self.state = Mode3State::C2;
        energy_wh
    }
}

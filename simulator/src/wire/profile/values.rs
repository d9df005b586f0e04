//! Which physics value a profile point shows: the point names of the profile format
//! (`power_w`, `soc_pct`, `current_l2_a`, ...) looked up in the device's part of the view.

use crate::view::{BatteryState, MeterView, PvStatus, StationView};
use crate::wire::DeviceKind;

/// What a point shows before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// An engineering value in the project's sign convention.
    Number(f64),
    /// A state to find in the point's state map (`operating`, `fault`, or an IEC 61851
    /// state such as `C2`).
    State(&'static str),
}

/// `l1` .. `l3` in a point name (`voltage_l2_v`) as a phase index.
fn phase(name: &str, prefix: &str, suffix: &str) -> Option<usize> {
    let n: usize = name
        .strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()?;
    (1..=3).contains(&n).then(|| n - 1)
}

fn per_phase(name: &str, v: [f64; 3], prefix: &str, suffix: &str) -> Option<f64> {
    phase(name, prefix, suffix).map(|i| v[i])
}

fn meter(m: &MeterView, name: &str) -> Option<f64> {
    Some(match name {
        "power_w" => m.power_w,
        "frequency_hz" => m.frequency_hz,
        "import_wh" => m.import_wh,
        "export_wh" => m.export_wh,
        n => per_phase(n, m.phase_w, "power_l", "_w")
            .or_else(|| per_phase(n, m.voltage_v, "voltage_l", "_v"))
            .or_else(|| per_phase(n, m.current_a, "current_l", "_a"))?,
    })
}

fn pv_state(s: PvStatus) -> &'static str {
    match s {
        PvStatus::Mppt => "operating",
        PvStatus::Throttled => "throttled",
        PvStatus::Standby | PvStatus::Sleeping => "standby",
        PvStatus::Off => "off",
        PvStatus::Fault => "fault",
    }
}

fn battery_state(s: BatteryState) -> &'static str {
    match s {
        BatteryState::Connected => "operating",
        BatteryState::Standby | BatteryState::SocProtection => "standby",
        BatteryState::Disconnected => "off",
        BatteryState::Fault => "fault",
    }
}

/// The value point `name` of device `kind` shows in `view`; `None` for a name the physics
/// has no value for (the image then shows what the probe expects, or zero).
pub fn shown(kind: DeviceKind, name: &str, view: &StationView) -> Option<Shown> {
    let n = |v: f64| Some(Shown::Number(v));
    match kind {
        DeviceKind::GridMeter => meter(&view.grid_meter, name).map(Shown::Number),
        DeviceKind::BuildingMeter => meter(&view.building_meter, name).map(Shown::Number),
        DeviceKind::Pv => {
            let pv = &view.pv;
            match name {
                "power_w" => n(pv.power_w),
                "dc_power_w" => n(pv.dc_power_w),
                "energy_wh" => n(pv.energy_wh),
                "rating_w" => n(pv.rating_w),
                "frequency_hz" => n(pv.frequency_hz),
                "limit_pct" => n(if pv.limit_enabled {
                    pv.limit_pct
                } else {
                    100.0
                }),
                "temperature_c" => n(pv.cabinet_temp_c),
                "status" | "state" => Some(Shown::State(pv_state(pv.status))),
                other => per_phase(other, pv.voltage_v, "voltage_l", "_v")
                    .or_else(|| per_phase(other, pv.current_a, "current_l", "_a"))
                    .map(Shown::Number),
            }
        }
        DeviceKind::Battery => {
            let b = &view.battery;
            match name {
                "power_w" => n(b.power_w),
                "soc_pct" => n(b.soc_pct),
                "soh_pct" => n(b.soh_pct),
                "capacity_wh" => n(b.usable_wh),
                "max_charge_w" => n(b.max_charge_w),
                "max_discharge_w" => n(b.max_discharge_w),
                "voltage_v" => n(b.voltage_v),
                "current_a" => n(b.current_a),
                "temperature_c" => n(b.temp_c),
                "state" | "status" => Some(Shown::State(battery_state(b.state))),
                _ => None,
            }
        }
        DeviceKind::Charger { index } => {
            let c = view.chargers.get(index)?;
            match name {
                "state" => Some(Shown::State(c.state.as_str())),
                "power_w" => n(c.power_w),
                "energy_wh" => n(c.energy_wh),
                "applied_max_a" => n(c.applied_max_a),
                "max_rated_a" | "rating_a" => n(c.rating_a),
                "session_energy_wh" => n(c.vehicle.as_ref().map_or(0.0, |v| v.session_wh)),
                "temperature_c" => n(c.temperature_c),
                other => per_phase(other, c.current_a, "current_l", "_a")
                    .or_else(|| per_phase(other, c.voltage_v, "voltage_l", "_v"))
                    .map(Shown::Number),
            }
        }
    }
}

/// The code of `state` in a point's state map: the exact state, else one of the same IEC
/// 61851 letter (`B1` shown where the map knows only `B2`), else a near operating state.
pub fn state_code<'a>(states: &'a [(String, String)], state: &str) -> Option<&'a str> {
    let exact = states.iter().find(|(_, s)| s == state);
    let letter = || {
        let first = state.chars().next()?;
        states
            .iter()
            .find(|(_, s)| s.len() <= 2 && s.starts_with(first) && state.len() <= 2)
    };
    let near = || {
        let alt = match state {
            "throttled" => "operating",
            "starting" | "off" => "standby",
            _ => return None,
        };
        states.iter().find(|(_, s)| s == alt)
    };
    exact
        .or_else(letter)
        .or_else(near)
        .map(|(code, _)| code.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_map_to_indices_and_others_do_not() {
        assert_eq!(phase("voltage_l2_v", "voltage_l", "_v"), Some(1));
        assert_eq!(phase("voltage_l4_v", "voltage_l", "_v"), None);
        assert_eq!(phase("voltage_v", "voltage_l", "_v"), None);
    }

    #[test]
    fn a_state_without_an_exact_code_takes_its_letter_or_a_near_state() {
        let charx: Vec<(String, String)> = [("A", "A"), ("B", "B2"), ("C", "C2")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(state_code(&charx, "B1"), Some("B"));
        assert_eq!(state_code(&charx, "C2"), Some("C"));
        assert_eq!(state_code(&charx, "E"), None);
        let pv: Vec<(String, String)> = [("512", "operating"), ("0", "standby")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(state_code(&pv, "throttled"), Some("512"));
        assert_eq!(state_code(&pv, "off"), Some("0"));
    }
}

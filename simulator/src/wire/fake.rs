//! A stand-in [`Station`] for tests, benchmarks and manual checks of the maps with third-party
//! tools: it shows a fixed, settable view, records the commands written and lets the caller set
//! wire faults per device. It has no physics: applied commands do not change the view.

use crate::view::{
    BatteryState, BatteryView, ChargerView, Command, CommandError, MeterView, Mode3State, PvStatus,
    PvView, Station, StationView, WireFaults,
};
use chrono::{TimeZone, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A station with a fixed view; see the module docs.
#[derive(Debug)]
pub struct FakeStation {
    view: Mutex<Arc<StationView>>,
    commands: Mutex<Vec<Command>>,
    faults: Mutex<HashMap<String, WireFaults>>,
    fault_queries: AtomicU64,
}

impl FakeStation {
    pub fn new(view: StationView) -> Self {
        FakeStation {
            view: Mutex::new(Arc::new(view)),
            commands: Mutex::new(Vec::new()),
            faults: Mutex::new(HashMap::new()),
            fault_queries: AtomicU64::new(0),
        }
    }

    /// Replaces the view (as the physics would after a step).
    pub fn set_view(&self, view: StationView) {
        *self.view.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
    }

    /// Sets the wire faults of `device`.
    pub fn set_faults(&self, device: &str, faults: WireFaults) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(device.to_string(), faults);
    }

    /// How many times the wire layer asked for faults (once per request and per connection).
    pub fn fault_queries(&self) -> u64 {
        self.fault_queries.load(Ordering::Acquire)
    }

    /// The commands applied so far, in order.
    pub fn commands(&self) -> Vec<Command> {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Station for FakeStation {
    fn view(&self) -> Arc<StationView> {
        Arc::clone(&self.view.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn apply(&self, command: Command) -> Result<(), CommandError> {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(command);
        Ok(())
    }

    fn wire_faults(&self, device: &str) -> WireFaults {
        self.fault_queries.fetch_add(1, Ordering::AcqRel);
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(device)
            .cloned()
            .unwrap_or_default()
    }
}

/// A plausible midday view of the reference station (135 kW PV, 500 kWh / 120 kW battery,
/// `chargers` 32 A three-phase chargers, the first one charging in state C2).
pub fn sample_view(chargers: usize) -> StationView {
    let sim_time = Utc
        .with_ymd_and_hms(2026, 6, 1, 4, 0, 0)
        .single()
        .unwrap_or_default();
    StationView {
        sim_time,
        pv: sample_pv(),
        battery: sample_battery(),
        grid_meter: MeterView {
            power_w: 23_450.0,
            phase_w: [7_800.0, 7_850.0, 7_800.0],
            voltage_v: [230.1, 230.5, 229.9],
            current_a: [34.0, 34.1, 33.9],
            frequency_hz: 50.01,
            import_wh: 987_654_321.0,
            export_wh: 12_345_678.0,
        },
        building_meter: MeterView {
            power_w: 61_200.0,
            phase_w: [20_400.0, 20_400.0, 20_400.0],
            voltage_v: [230.1, 230.5, 229.9],
            current_a: [88.7, 88.5, 88.8],
            frequency_hz: 50.01,
            import_wh: 456_789_012.0,
            export_wh: 0.0,
        },
        chargers: (0..chargers)
            .map(|i| {
                let charging = i == 0;
                ChargerView {
                    id: format!("charger-{}", i + 1),
                    phases: 3,
                    rating_a: 32.0,
                    state: if charging {
                        Mode3State::C2
                    } else {
                        Mode3State::A
                    },
                    voltage_v: [230.1, 230.5, 229.9],
                    current_a: if charging {
                        [15.9, 16.0, 15.8]
                    } else {
                        [0.0; 3]
                    },
                    power_w: if charging { 11_020.0 } else { 0.0 },
                    energy_wh: 4_567_890.5,
                    applied_max_a: 16.0,
                    setpoint_a: 16.0,
                    safe_current_a: 6.0,
                    validity_s: 60,
                    remaining_validity_s: 42,
                    temperature_c: 35.5,
                    vehicle: None,
                }
            })
            .collect(),
    }
}

/// The sample PV inverter: 135 kW, throttled to 80 %.
fn sample_pv() -> PvView {
    PvView {
        rating_w: 135_000.0,
        power_w: 98_760.0,
        dc_power_w: 101_230.0,
        available_w: 110_000.0,
        energy_wh: 123_456_789.0,
        limit_pct: 80.0,
        limit_enabled: true,
        limit_revert_s: 600,
        status: PvStatus::Throttled,
        voltage_v: [229.8, 230.4, 231.1],
        current_a: [143.2, 142.9, 143.5],
        frequency_hz: 50.02,
        cabinet_temp_c: 41.3,
    }
}

/// The sample battery: 500 kWh at 72 % SoH, charging at about 45 kW.
fn sample_battery() -> BatteryView {
    BatteryView {
        nameplate_wh: 500_000.0,
        usable_wh: 360_000.0,
        soc_pct: 63.4,
        soh_pct: 72.0,
        true_soh_pct: 70.5,
        soc_min_pct: 8.0,
        soc_max_pct: 92.0,
        window_wh: 296_100.0,
        imbalance_mv: 30.0,
        modules: 12,
        cells_per_module: 16,
        cell_v_max_module: 7,
        cell_v_min_module: 1,
        module_temp_max_c: 29.6,
        module_temp_max_module: 7,
        module_temp_min_c: 27.4,
        module_temp_min_module: 1,
        power_w: -45_600.0,
        setpoint_w: -45_000.0,
        setpoint_enabled: true,
        setpoint_revert_s: 900,
        pcs_rating_w: 120_000.0,
        max_charge_w: 118_000.0,
        max_discharge_w: 120_000.0,
        max_charge_a: 160.5,
        max_discharge_a: 171.2,
        voltage_v: 702.3,
        current_a: -64.9,
        cell_v_max: 3.912,
        cell_v_min: 3.874,
        temp_c: 28.5,
        state: BatteryState::Connected,
        alarms: crate::view::battery_alarm::OVER_TEMP_WARNING,
        cycles: 1234,
        soc_reserve_min_pct: 10.0,
    }
}

//! Simulated stations for fleet tests and the fleet bench: the daemon's real MQTT publishing
//! code (`mqtt::spawn`) fed with synthetic statuses instead of a control loop, so a hundred
//! stations fit in one process.
//!
//! `benches/fleet.rs` includes the file on its own: `#[path = "../tests/support/fleet_sim.rs"]`.

use chrono::{DateTime, Utc};
use station_controller::daemon::control::ControlMsg;
use station_controller::daemon::status::{
    BatteryStatus, BuildingStatus, ChargerStatus, DeviceStatus, GridStatus, LinkState, PvStatus,
    Status, TodayStatus,
};
use station_controller::mqtt::{self, MqttConfig, StationLink};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A plausible status of station number `n` at `time`, cycle `cycle`.
pub(crate) fn status(n: usize, time: DateTime<Utc>, cycle: u64) -> Status {
    let wave = ((cycle as f64 / 30.0) + n as f64).sin();
    let pv = 40_000.0 + 20_000.0 * wave;
    let charger = |i: usize| ChargerStatus {
        id: format!("charger-{i}"),
        state: if i == 1 { "C2".into() } else { "A1".into() },
        current_a: Some(if i == 1 { 16.0 } else { 0.0 }),
        setpoint_a: if i == 1 { 16.0 } else { 0.0 },
        power_w: Some(if i == 1 { 11_000.0 } else { 0.0 }),
        phases: 3,
        rating_a: 32.0,
        session_wh: (i == 1).then_some(1000.0 + cycle as f64),
        session_green_pct: (i == 1).then_some(80.0),
        mode: "solar".into(),
        wish: None,
    };
    let device = |id: &str| DeviceStatus {
        id: id.into(),
        link: LinkState::Online,
        last_ok: Some(time),
        last_error: None,
        errors_total: 0,
        warning: None,
    };
    Status {
        station: format!("dealer {n}"),
        timezone: "Asia/Shanghai".into(),
        time,
        cycle,
        cycle_ms: 1.0,
        grid: GridStatus {
            power_w: Some(30_000.0 - pv / 2.0),
            phase_w: [None; 3],
            import_limit_w: 150_000.0,
            export_limit_w: 50_000.0,
            fresh: true,
            month_peak_w: 60_000.0,
            demand_window_avg_w: 20_000.0,
        },
        pv: PvStatus {
            power_w: Some(pv),
            rating_w: Some(135_000.0),
            limit_pct: 100.0,
            energy_wh: None,
        },
        battery: BatteryStatus {
            soc_pct: Some(40.0 + (n % 50) as f64),
            soh_pct: Some(72.0),
            power_w: Some(-5_000.0),
            setpoint_w: -5_000.0,
            max_charge_w: Some(100_000.0),
            max_discharge_w: Some(100_000.0),
            temp_c: Some(25.0),
            usable_wh: Some(300_000.0),
            alarms: 0,
            state: Some("on".into()),
        },
        building: BuildingStatus {
            power_w: Some(25_000.0),
        },
        chargers: vec![charger(1), charger(2)],
        devices: vec![
            device("pv"),
            device("battery"),
            device("grid-meter"),
            device("charger-1"),
            device("charger-2"),
        ],
        reasons: vec!["battery charging 5 kW: PV surplus".into()],
        today: TodayStatus {
            pv_kwh: 100.0 + cycle as f64 / 100.0,
            ev_delivered_kwh: 40.0,
            cost_cny: 50.0,
            ..TodayStatus::default()
        },
    }
}

/// One simulated station publishing through the real MQTT code.
pub(crate) struct SimStation {
    pub(crate) n: usize,
    pub(crate) id: String,
    status: watch::Sender<Option<Arc<Status>>>,
    /// Kept open so commands reach "a control loop" (nobody reads them).
    _control: mpsc::Receiver<ControlMsg>,
    pub(crate) cancel: CancellationToken,
}

impl SimStation {
    /// Start station `n` (id `dealer-NNN`) against the broker on `port`.
    pub(crate) fn start(
        n: usize,
        port: u16,
        parent: &CancellationToken,
        tracker: &TaskTracker,
    ) -> SimStation {
        let id = format!("dealer-{n:03}");
        let (status, rx) = watch::channel(None);
        let (control, control_rx) = mpsc::channel(4);
        let mut cfg = MqttConfig::plain("127.0.0.1", port, &id);
        cfg.dashboard_url = Some(format!("http://{id}.dealers.example:8080/"));
        cfg.discovery = false;
        let cancel = parent.child_token();
        mqtt::spawn(
            cfg,
            StationLink {
                status: rx,
                control,
            },
            None,
            cancel.clone(),
            tracker,
        )
        .expect("mqtt spawn");
        SimStation {
            n,
            id,
            status,
            _control: control_rx,
            cancel,
        }
    }

    /// Publish a new status, as the control loop does after a cycle.
    pub(crate) fn cycle(&self, time: DateTime<Utc>, cycle: u64) {
        self.status
            .send_replace(Some(Arc::new(status(self.n, time, cycle))));
    }
}

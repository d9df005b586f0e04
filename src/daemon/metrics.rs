//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! Gauges come from the last published [`Status`]; counters and histograms are accumulated by
//! the control loop in [`Metrics`]. Names follow Prometheus conventions: base units in the name
//! (`_watts`, `_watt_hours_total`, `_seconds`), `device="charger-3"` labels.

use crate::daemon::planning::{PlanView, PLAN_VALID_FOR};
use crate::daemon::status::{ChargerStatus, LinkState, Status};
use crate::planner::forecast::Bookings;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A cumulative histogram with fixed upper bounds, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Buckets for request latency and cycle duration, seconds.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Per-device request counters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceMetrics {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram,
}

impl Default for DeviceMetrics {
    fn default() -> Self {
        DeviceMetrics {
            requests: 0,
            errors: 0,
            latency: Histogram::new(LATENCY_BUCKETS_S),
        }
    }
}

/// Counters and histograms the control loop accumulates.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub cycles: u64,
    pub cycle_duration: Histogram,
    pub devices: BTreeMap<String, DeviceMetrics>,
    /// Energy per flow since start, Wh, keyed by `(from, to)`: `("pv", "vehicles")`.
    pub energy_wh: BTreeMap<(&'static str, &'static str), f64>,
    /// Cycles the ledger did not book because its queue was full (or its task had stopped).
    pub ledger_dropped: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            cycles: 0,
            cycle_duration: Histogram::new(LATENCY_BUCKETS_S),
            devices: BTreeMap::new(),
            // Every flow's counter exists from the start, at 0 until energy takes that path.
            energy_wh: crate::ledger::Flows::default()
                .named()
                .into_iter()
                .map(|(from, to, _)| ((from, to), 0.0))
                .collect(),
            ledger_dropped: 0,
        }
    }
}

impl Metrics {
    /// Record one device request: its latency and whether it failed.
    pub fn request(&mut self, device: &str, latency_s: f64, ok: bool) {
        let d = match self.devices.get_mut(device) {
            Some(d) => d,
            None => self.devices.entry(device.to_string()).or_default(),
        };
        d.requests += 1;
        if !ok {
            d.errors += 1;
        }
        d.latency.observe(latency_s);
    }

    /// Add energy to a flow counter.
    pub fn add_energy(&mut self, from: &'static str, to: &'static str, wh: f64) {
        if wh.is_finite() && wh > 0.0 {
            *self.energy_wh.entry((from, to)).or_insert(0.0) += wh;
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, Option<f64>)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, v) in samples {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
}

fn one(v: Option<f64>) -> Vec<(String, Option<f64>)> {
    vec![(String::new(), v)]
}

/// One counter with a sample per device.
fn device_counter(
    out: &mut String,
    name: &str,
    help: &str,
    metrics: &Metrics,
    value: impl Fn(&DeviceMetrics) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (id, d) in &metrics.devices {
        let _ = writeln!(out, "{name}{{device=\"{}\"}} {}", escape(id), value(d));
    }
}

/// A station-level gauge: name, help, and its value in the status.
type StationGauge = (&'static str, &'static str, fn(&Status) -> Option<f64>);

/// Every station-level gauge, in output order.
const STATION_GAUGES: &[StationGauge] = &[
    ("station_grid_power_watts", "Grid power, > 0 import.", |s| {
        s.grid.power_w
    }),
    (
        "station_grid_import_limit_watts",
        "Contracted grid import limit.",
        |s| Some(s.grid.import_limit_w),
    ),
    (
        "station_grid_export_limit_watts",
        "Grid export limit.",
        |s| Some(s.grid.export_limit_w),
    ),
    (
        "station_pv_power_watts",
        "PV AC power, > 0 generation.",
        |s| s.pv.power_w,
    ),
    (
        "station_pv_limit_ratio",
        "PV active-power limit the plan asks for, fraction of rating.",
        |s| Some(s.pv.limit_pct / 100.0),
    ),
    (
        "station_battery_power_watts",
        "Battery power, > 0 discharge.",
        |s| s.battery.power_w,
    ),
    (
        "station_battery_setpoint_watts",
        "Battery power setpoint, > 0 discharge.",
        |s| Some(s.battery.setpoint_w),
    ),
    (
        "station_battery_soc_ratio",
        "Battery state of charge.",
        |s| s.battery.soc_pct.map(|v| v / 100.0),
    ),
    (
        "station_battery_soh_ratio",
        "Battery state of health.",
        |s| s.battery.soh_pct.map(|v| v / 100.0),
    ),
    (
        "station_battery_max_charge_watts",
        "BMS charge power limit.",
        |s| s.battery.max_charge_w,
    ),
    (
        "station_battery_max_discharge_watts",
        "BMS discharge power limit.",
        |s| s.battery.max_discharge_w,
    ),
    (
        "station_battery_temperature_celsius",
        "Battery temperature, where the battery reports one.",
        |s| s.battery.temp_c,
    ),
    (
        "station_building_power_watts",
        "Dealership building load.",
        |s| s.building.power_w,
    ),
];

/// A per-charger gauge: name, help, and its value on the charger's card.
type ChargerGauge = (
    &'static str,
    &'static str,
    fn(&ChargerStatus) -> Option<f64>,
);

const CHARGER_GAUGES: &[ChargerGauge] = &[
    ("station_charger_power_watts", "Charger power.", |c| {
        c.power_w
    }),
    (
        "station_charger_current_amperes",
        "Highest phase current of a charger.",
        |c| c.current_a,
    ),
    (
        "station_charger_setpoint_amperes",
        "Charger max-current setpoint written this cycle.",
        |c| Some(c.setpoint_a),
    ),
    (
        "station_charger_rating_amperes",
        "Charger rating per phase.",
        |c| Some(c.rating_a),
    ),
];

/// Render every metric in the text exposition format.
pub fn render(status: Option<&Status>, metrics: &Metrics) -> String {
    let mut out = String::with_capacity(8192);
    if let Some(s) = status {
        render_status(&mut out, s);
    }
    render_counters(&mut out, metrics);
    out
}

/// The gauges of the last published status.
fn render_status(out: &mut String, s: &Status) {
    for (name, help, value) in STATION_GAUGES {
        gauge(out, name, help, &one(value(s)));
    }
    for (name, help, value) in CHARGER_GAUGES {
        let samples: Vec<_> = s
            .chargers
            .iter()
            .map(|c| (format!("device=\"{}\"", escape(&c.id)), value(c)))
            .collect();
        gauge(out, name, help, &samples);
    }
    let states = [LinkState::Online, LinkState::Degraded, LinkState::Offline];
    let links: Vec<(String, Option<f64>)> = s
        .devices
        .iter()
        .flat_map(|d| {
            states.into_iter().map(move |l| {
                (
                    format!("device=\"{}\",state=\"{}\"", escape(&d.id), l.as_str()),
                    Some(if d.link == l { 1.0 } else { 0.0 }),
                )
            })
        })
        .collect();
    gauge(
        out,
        "station_device_link",
        "Device link state (1 for the current state).",
        &links,
    );
}

/// The predictive planner's counters and gauges (when `[planner]` is on): solves, failures and
/// late solves, the last solve's time, the plan's age and whether it budgets now (0: the rule
/// policy runs), the cars it expects and the bookings by state.
pub fn render_planner(view: &PlanView, bookings: &Bookings, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let counters = [
        ("station_planner_solves_total", "Plans made.", view.solves),
        (
            "station_planner_solve_failures_total",
            "Solves that failed.",
            view.failures,
        ),
        (
            "station_planner_solve_timeouts_total",
            "Solves past their time limit.",
            view.timeouts,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let age_s = view
        .plan
        .as_ref()
        .map(|p| (now - p.made_at).num_milliseconds() as f64 / 1000.0);
    // As `LivePlan::budget` takes it: a plan made at most `PLAN_VALID_FOR` ago.
    let in_force = age_s.is_some_and(|a| a <= PLAN_VALID_FOR.num_seconds() as f64);
    let expected_cars = view.forecast.as_ref().map(|f| f.arrivals.len() as f64);
    let gauges: [(&str, &str, Option<f64>); 4] = [
        (
            "station_planner_last_solve_seconds",
            "Wall time of the last solve.",
            view.last_solve_ms.map(|ms| ms / 1000.0),
        ),
        (
            "station_planner_plan_age_seconds",
            "Station time since the plan in force was made.",
            age_s,
        ),
        (
            "station_planner_plan_in_force",
            "1 while a plan budgets the cycle, 0 while the rule policy runs.",
            Some(if in_force { 1.0 } else { 0.0 }),
        ),
        (
            "station_planner_expected_cars",
            "Cars the plan expects to arrive (booked and forecast).",
            expected_cars,
        ),
    ];
    for (name, help, v) in gauges {
        gauge(&mut out, name, help, &one(v));
    }
    let by_state: Vec<(String, Option<f64>)> = ["expected", "fulfilled", "lapsed"]
        .into_iter()
        .map(|state| {
            let n = bookings
                .all()
                .iter()
                .filter(|b| match state {
                    "fulfilled" => b.fulfilled_by.is_some(),
                    "expected" => b.expected_at(now),
                    _ => b.fulfilled_by.is_none() && !b.expected_at(now),
                })
                .count();
            (format!("state=\"{state}\""), Some(n as f64))
        })
        .collect();
    gauge(
        &mut out,
        "station_planner_bookings",
        "Bookings held, by state.",
        &by_state,
    );
    out
}

/// The counters and histograms the control loop accumulates.
fn render_counters(out: &mut String, metrics: &Metrics) {
    let _ = writeln!(
        out,
        "# HELP station_control_cycles_total Control cycles run.\n# TYPE station_control_cycles_total counter\nstation_control_cycles_total {}",
        metrics.cycles
    );
    let _ = writeln!(
        out,
        "# HELP station_ledger_dropped_cycles_total Cycles the ledger did not book (queue full or ledger stopped).\n# TYPE station_ledger_dropped_cycles_total counter\nstation_ledger_dropped_cycles_total {}",
        metrics.ledger_dropped
    );
    let _ = writeln!(
        out,
        "# HELP station_energy_watt_hours_total Energy per flow since start (from the ledger's split).\n# TYPE station_energy_watt_hours_total counter"
    );
    for ((from, to), wh) in &metrics.energy_wh {
        let _ = writeln!(
            out,
            "station_energy_watt_hours_total{{from=\"{from}\",to=\"{to}\"}} {wh}"
        );
    }
    device_counter(
        out,
        "station_device_requests_total",
        "Modbus requests per device.",
        metrics,
        |d| d.requests,
    );
    device_counter(
        out,
        "station_device_request_errors_total",
        "Failed Modbus requests per device.",
        metrics,
        |d| d.errors,
    );
    let _ = writeln!(
        out,
        "# HELP station_device_request_duration_seconds Modbus request latency.\n# TYPE station_device_request_duration_seconds histogram"
    );
    for (id, d) in &metrics.devices {
        d.latency.render(
            out,
            "station_device_request_duration_seconds",
            &format!("device=\"{}\"", escape(id)),
        );
    }
    let _ = writeln!(
        out,
        "# HELP station_control_cycle_duration_seconds Time to read, decide and write one cycle.\n# TYPE station_control_cycle_duration_seconds histogram"
    );
    metrics
        .cycle_duration
        .render(out, "station_control_cycle_duration_seconds", "");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_planner_metrics_say_whether_a_plan_runs_and_count_bookings_by_state() {
        use crate::planner::forecast::Booking;
        use crate::planner::PlanBudgets;
        use chrono::{Duration, TimeZone};
        let now = Utc.with_ymd_and_hms(2026, 7, 15, 5, 0, 0).unwrap();
        let mut view = PlanView {
            solves: 7,
            timeouts: 1,
            last_solve_ms: Some(40.0),
            ..PlanView::default()
        };
        let mut book = Bookings::default();
        for (h, m) in [(6, 0), (4, 0), (4, 50)] {
            let arrives = Utc.with_ymd_and_hms(2026, 7, 15, h, m, 0).unwrap();
            book.add(Booking {
                id: 0,
                charger: None,
                arrives,
                departs: arrives + Duration::hours(3),
                energy_wh: None,
                max_w: None,
                fulfilled_by: None,
            })
            .unwrap();
        }
        book.plugged(2, now - Duration::minutes(10));
        let text = render_planner(&view, &book, now);
        for line in [
            "station_planner_solves_total 7",
            "station_planner_solve_timeouts_total 1",
            "station_planner_last_solve_seconds 0.04",
            "station_planner_plan_in_force 0",
            "station_planner_bookings{state=\"expected\"} 1",
            "station_planner_bookings{state=\"fulfilled\"} 1",
            "station_planner_bookings{state=\"lapsed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("station_planner_plan_age_seconds ")),
            "no plan, no age: {text}"
        );
        view.plan = Some(std::sync::Arc::new(PlanBudgets {
            made_at: now - Duration::minutes(20),
            steps: Vec::new(),
            plugged_unmet_wh: 0.0,
            objective_cny: 0.0,
        }));
        let text = render_planner(&view, &book, now);
        assert!(
            text.contains("station_planner_plan_age_seconds 1200\n"),
            "{text}"
        );
        assert!(text.contains("station_planner_plan_in_force 1\n"), "{text}");
        let text = render_planner(&view, &book, now + Duration::hours(1));
        assert!(text.contains("station_planner_plan_in_force 0\n"), "{text}");
    }

    #[test]
    fn a_histogram_counts_cumulatively_and_renders_inf_bucket() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(f64::NAN);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "device=\"pv\"");
        assert!(
            out.contains("x_seconds_bucket{device=\"pv\",le=\"0.1\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{device=\"pv\",le=\"1\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{device=\"pv\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{device=\"pv\"} 3"), "{out}");
    }

    #[test]
    fn request_errors_and_energy_flows_are_counted_per_label() {
        let mut m = Metrics::default();
        m.request("charger-3", 0.002, true);
        m.request("charger-3", 0.5, false);
        m.add_energy("pv", "vehicles", 10.0);
        m.add_energy("pv", "vehicles", 5.0);
        m.add_energy("grid", "building", f64::NAN);
        let text = render(None, &m);
        assert!(text.contains("station_device_requests_total{device=\"charger-3\"} 2"));
        assert!(text.contains("station_device_request_errors_total{device=\"charger-3\"} 1"));
        assert!(text.contains("station_energy_watt_hours_total{from=\"pv\",to=\"vehicles\"} 15"));
        // A NaN is not counted: the flow's counter stays at its start value.
        assert!(text.contains("station_energy_watt_hours_total{from=\"grid\",to=\"building\"} 0\n"));
    }
}

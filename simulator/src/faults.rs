//! Fault injection: requests (from the control API or a scenario file), validation, and the table
//! of active faults with expiry in simulated time.
//!
//! Wire faults (`offline`, `latency`, `exception`, `frozen`, `bad_value`) are resolved per device
//! into a [`WireFaults`] the Modbus layer consults on every request; `bms_alarm` acts on the
//! battery physics instead.

use crate::view::WireFaults;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest fault, simulated seconds (about 31 years; omit `duration_s` for "until deleted").
pub const MAX_DURATION_S: f64 = 1e9;

/// The kinds of fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKindName {
    Offline,
    Latency,
    Exception,
    Frozen,
    BadValue,
    BmsAlarm,
}

/// A fault request as JSON (`POST /faults`) or in a scenario's `[[faults]]` table.
///
/// `{"device": "grid-meter", "kind": "offline", "duration_s": 120}`;
/// `latency` needs `latency_ms`; `exception` takes `code` (default 4, server device failure);
/// `bad_value` needs `point` and `value` (a number, or the string "NaN").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub device: String,
    pub kind: FaultKindName,
    /// How long the fault lasts in simulated seconds; absent = until cleared.
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub code: Option<u8>,
    #[serde(default)]
    pub point: Option<String>,
    #[serde(default)]
    pub value: Option<FaultValue>,
}

/// A bad value: a number or a string such as "NaN", "inf", "-inf".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FaultValue {
    Number(f64),
    Text(String),
}

/// A validated, resolved fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Offline,
    Latency(Duration),
    Exception(u8),
    Frozen,
    BadValue { point: String, value: f64 },
    BmsAlarm,
}

/// A fault in the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveFault {
    pub id: u64,
    pub device: String,
    pub kind: FaultKindName,
    #[serde(skip)]
    pub fault: Fault,
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

/// Why a fault request was refused; the message names the request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FaultError {
    pub field: &'static str,
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> FaultError {
    FaultError {
        field,
        problem: problem.into(),
    }
}

/// Points a `bad_value` fault may override, per device kind.
pub fn bad_value_points(device: &str) -> &'static [&'static str] {
    match device {
        "battery" => &["soc_pct", "soh_pct", "power_w", "voltage_v"],
        "pv" | "grid-meter" | "building-meter" => &["power_w"],
        d if d.starts_with("charger-") => &["power_w", "current_a"],
        _ => &[],
    }
}

impl FaultRequest {
    /// Check the request against the station's device ids and resolve it.
    pub fn validate(&self, device_ids: &[String]) -> Result<Fault, FaultError> {
        if !device_ids.iter().any(|d| d == &self.device) {
            return Err(err(
                "device",
                format!(
                    "unknown device {:?} (known: {})",
                    self.device,
                    device_ids.join(", ")
                ),
            ));
        }
        if let Some(d) = self.duration_s {
            if !(d.is_finite() && d > 0.0 && d <= MAX_DURATION_S) {
                return Err(err(
                    "duration_s",
                    format!("must be > 0 and at most {MAX_DURATION_S} s (got {d})"),
                ));
            }
        }
        let fault = match self.kind {
            FaultKindName::Offline => Fault::Offline,
            FaultKindName::Frozen => Fault::Frozen,
            FaultKindName::Latency => match self.latency_ms {
                Some(ms) if ms > 0 && ms <= 60_000 => Fault::Latency(Duration::from_millis(ms)),
                Some(ms) => return Err(err("latency_ms", format!("must be 1..=60000 (got {ms})"))),
                None => return Err(err("latency_ms", "required for kind latency")),
            },
            FaultKindName::Exception => {
                let code = self.code.unwrap_or(4);
                if !matches!(code, 1..=4 | 5 | 6 | 8 | 10 | 11) {
                    return Err(err(
                        "code",
                        format!("not a Modbus exception code (got {code})"),
                    ));
                }
                Fault::Exception(code)
            }
            FaultKindName::BadValue => {
                let point = self
                    .point
                    .clone()
                    .ok_or_else(|| err("point", "required for kind bad_value"))?;
                let allowed = bad_value_points(&self.device);
                if !allowed.contains(&point.as_str()) {
                    return Err(err(
                        "point",
                        format!(
                            "{point:?} is not a point of {} (one of: {})",
                            self.device,
                            allowed.join(", ")
                        ),
                    ));
                }
                let value = match &self.value {
                    Some(FaultValue::Number(v)) => *v,
                    Some(FaultValue::Text(t)) => match t.to_ascii_lowercase().as_str() {
                        "nan" => f64::NAN,
                        "inf" | "+inf" => f64::INFINITY,
                        "-inf" => f64::NEG_INFINITY,
                        other => other.parse::<f64>().map_err(|_| {
                            err("value", format!("not a number, NaN or inf (got {t:?})"))
                        })?,
                    },
                    None => return Err(err("value", "required for kind bad_value")),
                };
                Fault::BadValue { point, value }
            }
            FaultKindName::BmsAlarm => {
                if self.device != "battery" {
                    return Err(err(
                        "device",
                        format!("bms_alarm applies to battery only (got {:?})", self.device),
                    ));
                }
                Fault::BmsAlarm
            }
        };
        Ok(fault)
    }
}

/// The active faults. Expiry is in simulated time.
#[derive(Debug, Default, Clone)]
pub struct FaultTable {
    next_id: u64,
    active: Vec<ActiveFault>,
}

impl FaultTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate and add a fault starting at `now`; returns its id.
    pub fn add(
        &mut self,
        req: &FaultRequest,
        device_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, FaultError> {
        let fault = req.validate(device_ids)?;
        let until = match req.duration_s {
            None => None,
            Some(d) => Some(
                ChronoDuration::try_milliseconds((d * 1000.0).round() as i64)
                    .and_then(|span| now.checked_add_signed(span))
                    .ok_or_else(|| {
                        err(
                            "duration_s",
                            format!("ends beyond the representable time (got {d})"),
                        )
                    })?,
            ),
        };
        self.next_id += 1;
        self.active.push(ActiveFault {
            id: self.next_id,
            device: req.device.clone(),
            kind: req.kind,
            fault,
            since: now,
            until,
        });
        Ok(self.next_id)
    }

    /// Remove every fault.
    pub fn clear(&mut self) {
        self.active.clear();
    }

    /// Drop faults whose time is up; returns whether anything changed.
    pub fn expire(&mut self, now: DateTime<Utc>) -> bool {
        let before = self.active.len();
        self.active.retain(|f| f.until.is_none_or(|u| u > now));
        before != self.active.len()
    }

    pub fn active(&self) -> &[ActiveFault] {
        &self.active
    }

    /// Whether a BMS alarm is injected now.
    pub fn bms_alarm(&self) -> bool {
        self.active.iter().any(|f| f.fault == Fault::BmsAlarm)
    }

    /// The wire faults of one device now.
    pub fn wire_faults(&self, device: &str) -> WireFaults {
        let mut out = WireFaults::default();
        for f in self.active.iter().filter(|f| f.device == device) {
            match &f.fault {
                Fault::Offline => out.offline = true,
                Fault::Latency(d) => out.latency = Some(out.latency.map_or(*d, |l| l.max(*d))),
                Fault::Exception(c) => out.exception = Some(*c),
                Fault::Frozen => out.frozen = true,
                Fault::BadValue { point, value } => out.bad_values.push((point.clone(), *value)),
                Fault::BmsAlarm => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ids() -> Vec<String> {
        ["pv", "battery", "grid-meter", "building-meter", "charger-1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 17, 2, 0, 0).single().unwrap()
    }

    fn parse(json: &str) -> FaultRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_offline_fault_expires_after_its_duration_in_simulated_time() {
        let mut table = FaultTable::new();
        let req = parse(r#"{"device": "grid-meter", "kind": "offline", "duration_s": 120}"#);
        table.add(&req, &ids(), t0()).unwrap();
        assert!(table.wire_faults("grid-meter").offline);
        assert!(!table.wire_faults("pv").offline);
        assert!(!table.expire(t0() + ChronoDuration::seconds(119)));
        assert!(table.wire_faults("grid-meter").offline);
        assert!(table.expire(t0() + ChronoDuration::seconds(120)));
        assert_eq!(table.wire_faults("grid-meter"), WireFaults::default());
    }

    #[test]
    fn unknown_devices_and_missing_fields_are_named_in_the_error() {
        let e = parse(r#"{"device": "charger-9", "kind": "offline"}"#)
            .validate(&ids())
            .unwrap_err();
        assert_eq!(e.field, "device");
        assert!(e.problem.contains("charger-9"), "{e}");
        let e = parse(r#"{"device": "pv", "kind": "latency"}"#)
            .validate(&ids())
            .unwrap_err();
        assert_eq!(e.field, "latency_ms");
        let e = parse(r#"{"device": "pv", "kind": "bms_alarm"}"#)
            .validate(&ids())
            .unwrap_err();
        assert_eq!(e.field, "device");
        let e =
            parse(r#"{"device": "battery", "kind": "bad_value", "point": "colour", "value": 1}"#)
                .validate(&ids())
                .unwrap_err();
        assert_eq!(e.field, "point");
        let e = parse(r#"{"device": "pv", "kind": "offline", "duration_s": -3}"#)
            .validate(&ids())
            .unwrap_err();
        assert_eq!(e.field, "duration_s");
        for huge in ["1e300", "1e10", "1.7976931348623157e308"] {
            let text = format!(r#"{{"device": "pv", "kind": "offline", "duration_s": {huge}}}"#);
            let e = parse(&text).validate(&ids()).unwrap_err();
            assert_eq!(e.field, "duration_s", "{huge}");
            assert!(e.problem.contains("at most"), "{}", e.problem);
        }
        assert!(serde_json::from_str::<FaultRequest>(
            r#"{"device": "pv", "kind": "offline", "colour": 1}"#
        )
        .is_err());
    }

    #[test]
    fn bad_values_accept_nan_written_as_text() {
        let mut table = FaultTable::new();
        let req = parse(
            r#"{"device": "battery", "kind": "bad_value", "point": "soc_pct", "value": "NaN"}"#,
        );
        table.add(&req, &ids(), t0()).unwrap();
        let req =
            parse(r#"{"device": "battery", "kind": "bad_value", "point": "soh_pct", "value": -5}"#);
        table.add(&req, &ids(), t0()).unwrap();
        let wf = table.wire_faults("battery");
        assert_eq!(wf.bad_values.len(), 2);
        assert!(wf.bad_values[0].1.is_nan());
        assert_eq!(wf.bad_values[1], ("soh_pct".to_string(), -5.0));
    }

    #[test]
    fn bms_alarm_is_active_until_cleared() {
        let mut table = FaultTable::new();
        table
            .add(
                &parse(r#"{"device": "battery", "kind": "bms_alarm"}"#),
                &ids(),
                t0(),
            )
            .unwrap();
        assert!(table.bms_alarm());
        table.expire(t0() + ChronoDuration::days(365));
        assert!(table.bms_alarm());
        table.clear();
        assert!(!table.bms_alarm());
    }

    #[test]
    fn latency_and_exception_faults_combine_on_one_device() {
        let mut table = FaultTable::new();
        table
            .add(
                &parse(r#"{"device": "pv", "kind": "latency", "latency_ms": 300}"#),
                &ids(),
                t0(),
            )
            .unwrap();
        table
            .add(
                &parse(r#"{"device": "pv", "kind": "exception", "code": 6}"#),
                &ids(),
                t0(),
            )
            .unwrap();
        let wf = table.wire_faults("pv");
        assert_eq!(wf.latency, Some(Duration::from_millis(300)));
        assert_eq!(wf.exception, Some(6));
    }
}

//! The commissioning walk behind `stationd probe`: connect, run the identification probe, read
//! every point once with its plausibility verdict, and optionally exercise every setpoint
//! (read, write a test value, read back, restore). The result is a [`ProbeReport`] that prints
//! as the integrator sees it on site.

use super::driver::{point_label, probe_holds, state_key, ProfileDevice, Value};
use super::model::{Point, ProbeCheck, Profile, Setpoint};
use crate::devices::error::DeviceError;
use std::fmt;

/// Outcome of one identification check.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeLine {
    pub point: String,
    pub check: ProbeCheck,
    pub result: Result<Value, DeviceError>,
}

impl ProbeLine {
    /// True when the value was read and satisfies the check.
    pub fn passed(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(|v| probe_holds(&self.check, v))
    }
}

/// Outcome of exercising one setpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteLine {
    pub setpoint: String,
    pub unit: String,
    /// (before, test value, read back, restored) or the step that failed.
    pub result: Result<(f64, f64, f64, f64), String>,
}

impl WriteLine {
    /// True when the read-back matched the written test value and the restore landed.
    pub fn passed(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(|(before, test, back, restored)| {
                close(*test, *back) && close(*before, *restored)
            })
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Everything `stationd probe` found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    pub profile: Profile,
    pub target: String,
    pub identification: Vec<ProbeLine>,
    pub points: Vec<(Point, Result<Value, DeviceError>)>,
    pub writes: Vec<WriteLine>,
}

impl ProbeReport {
    /// True when the device was identified, every point is plausible and every exercised
    /// setpoint read back what was written.
    pub fn passed(&self) -> bool {
        self.identification.iter().all(ProbeLine::passed)
            && self.points.iter().all(|(_, r)| r.is_ok())
            && self.writes.iter().all(WriteLine::passed)
    }
}

/// The value a setpoint is exercised with: its safe value unless that is the current value,
/// then the middle of its range, then a tenth of the way from the middle to the top, then its
/// low end (a gentle step: the device acts on it for a moment).
pub fn test_value(sp: &Setpoint, current: f64) -> f64 {
    let mid = (sp.min + sp.max) / 2.0;
    [sp.safe, mid, mid + (sp.max - mid) / 10.0, sp.min]
        .into_iter()
        .find(|v| !close(*v, current))
        .unwrap_or(sp.max)
}

async fn exercise(dev: &mut ProfileDevice, sp: &Setpoint) -> WriteLine {
    let result = async {
        let before = dev
            .read_setpoint(&sp.name)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let test = test_value(sp, before);
        let sent = dev
            .write_setpoint(&sp.name, test)
            .await
            .map_err(|e| format!("write {test}: {e}"))?;
        let back = dev
            .read_setpoint(&sp.name)
            .await
            .map_err(|e| format!("read back: {e}"))?;
        let restore = before.clamp(sp.min, sp.max);
        dev.write_setpoint(&sp.name, restore)
            .await
            .map_err(|e| format!("restore {restore}: {e}"))?;
        let restored = dev
            .read_setpoint(&sp.name)
            .await
            .map_err(|e| format!("read restored: {e}"))?;
        Ok((before, sent, back, restored))
    }
    .await;
    WriteLine {
        setpoint: sp.name.clone(),
        unit: sp.unit.clone(),
        result,
    }
}

/// Walk the device: identification, every point, and with `write` every setpoint. A link
/// failure (nothing answers) ends the walk with the error.
pub async fn probe(
    dev: &mut ProfileDevice,
    target: &str,
    write: bool,
) -> Result<ProbeReport, DeviceError> {
    let profile = dev.profile().clone();
    let reads = dev.read_each().await?;
    let value_of = |name: &str| {
        reads
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.value.clone())
    };
    let identification = profile
        .probe
        .iter()
        .map(|p| ProbeLine {
            point: p.point.clone(),
            check: p.check.clone(),
            result: value_of(&p.point)
                .unwrap_or_else(|| Err(DeviceError::bad_data(&p.point, "not read"))),
        })
        .collect();
    let points = profile
        .points
        .iter()
        .map(|p| {
            (
                p.clone(),
                value_of(&p.name)
                    .unwrap_or_else(|| Err(DeviceError::bad_data(&p.name, "not read"))),
            )
        })
        .collect();
    let mut writes = Vec::new();
    if write {
        for sp in &profile.setpoints {
            writes.push(exercise(dev, sp).await);
        }
    }
    Ok(ProbeReport {
        profile,
        target: target.to_string(),
        identification,
        points,
        writes,
    })
}

/// "(operating)" for a state point whose code the state map knows.
fn state_of(pt: &Point, v: &Value) -> String {
    if pt.states.is_empty() {
        return String::new();
    }
    match pt.states.get(&state_key(v)) {
        Some(s) => format!(" ({})", s.as_str()),
        None => " (not in the state map)".to_string(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok  "
    } else {
        "FAIL"
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.profile;
        writeln!(
            f,
            "{} {} ({} {}, profile {}) at {}",
            p.vendor,
            p.model,
            p.kind.as_str(),
            p.file,
            p.name,
            self.target
        )?;
        writeln!(f, "source: {}", p.source)?;
        writeln!(f, "identification:")?;
        for line in &self.identification {
            let got = match &line.result {
                Ok(v) => v.to_string(),
                Err(e) => e.to_string(),
            };
            writeln!(
                f,
                "  {} {:<16} {got} (expected {:?})",
                verdict(line.passed()),
                line.point,
                line.check
            )?;
        }
        writeln!(f, "points:")?;
        for (pt, r) in &self.points {
            let (ok, shown) = match r {
                Ok(v) => (
                    true,
                    format!("{v} {}{}", pt.unit, state_of(pt, v))
                        .trim()
                        .replace("  ", " "),
                ),
                Err(e) => (false, e.to_string()),
            };
            let range = pt.range.map_or(String::new(), |(lo, hi)| {
                format!("  plausible [{lo}, {hi}]")
            });
            writeln!(
                f,
                "  {} {:<44} {:<4} {shown}{range}",
                verdict(ok),
                point_label(pt),
                pt.ty
            )?;
        }
        self.fmt_writes(f)?;
        writeln!(
            f,
            "{}",
            if self.passed() {
                "result: ok"
            } else {
                "result: FAILED"
            }
        )
    }
}

impl ProbeReport {
    fn fmt_writes(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.writes.is_empty() {
            return Ok(());
        }
        writeln!(f, "setpoints (write, read back, restore):")?;
        for w in &self.writes {
            match &w.result {
                Ok((before, test, back, restored)) => writeln!(
                    f,
                    "  {} {:<16} was {before} {u}, wrote {test} {u}, read back {back} {u}, restored {restored} {u}",
                    verdict(w.passed()),
                    w.setpoint,
                    u = w.unit
                )?,
                Err(e) => writeln!(f, "  FAIL {:<16} {e}", w.setpoint)?,
            }
        }
        Ok(())
    }
}

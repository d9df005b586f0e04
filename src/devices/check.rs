//! Validation shared by the drivers: a reading that fails here is reported as
//! `DeviceError::BadData` naming the point, never passed on as a value.

use super::error::DeviceError;

/// How far beyond its rating a power reading may go before it is rejected.
pub const POWER_RATING_MARGIN: f64 = 1.5;

/// A finite value, or `BadData`.
pub fn finite(point: &str, v: f64) -> Result<f64, DeviceError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DeviceError::bad_data(point, format!("not finite ({v})")))
    }
}

/// A mandatory point: missing is `BadData`.
pub fn required(point: &str, v: Option<f64>) -> Result<f64, DeviceError> {
    match v {
        Some(v) => finite(point, v),
        None => Err(DeviceError::bad_data(point, "not implemented / missing")),
    }
}

/// An optional point: missing stays `None`, present must be finite.
pub fn optional(point: &str, v: Option<f64>) -> Result<Option<f64>, DeviceError> {
    v.map(|v| finite(point, v)).transpose()
}

/// An energy counter (lifetime Wh): finite and never negative.
pub fn counter(point: &str, v: Option<f64>) -> Result<Option<f64>, DeviceError> {
    match optional(point, v)? {
        Some(e) if e < 0.0 => Err(DeviceError::bad_data(
            point,
            format!("negative energy {e} Wh"),
        )),
        other => Ok(other),
    }
}

/// A percentage that must lie in 0..=100.
pub fn percent(point: &str, v: f64) -> Result<f64, DeviceError> {
    let v = finite(point, v)?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(DeviceError::bad_data(
            point,
            format!("{v} % outside 0..=100"),
        ))
    }
}

/// A power that must not exceed `POWER_RATING_MARGIN` x `rating_w` in magnitude.
pub fn power_within(point: &str, power_w: f64, rating_w: Option<f64>) -> Result<f64, DeviceError> {
    let p = finite(point, power_w)?;
    if let Some(r) = rating_w.filter(|r| r.is_finite() && *r > 0.0) {
        if p.abs() > POWER_RATING_MARGIN * r {
            return Err(DeviceError::bad_data(
                point,
                format!("{p} W beyond {POWER_RATING_MARGIN} x rating {r} W"),
            ));
        }
    }
    Ok(p)
}

/// Apply the per-device sign flag.
pub fn signed(v: f64, invert: bool) -> f64 {
    if invert {
        -v
    } else {
        v
    }
}

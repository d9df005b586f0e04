//! A day-ahead PV forecast from an outside provider, parsed (the daemon's shell reads the file
//! or the HTTP endpoint; see docs/planner-forecasts.md for the formats).
//!
//! Two formats, told apart by the first non-blank character:
//! * JSON (`{`): `{"pv": [{"start": "2026-07-15T08:00:00Z", "w": 61000.0}, ...]}`
//! * CSV: a header `start,pv_w`, then one row per interval: `2026-07-15T08:00:00+08:00,61000`
//!
//! `start` is RFC 3339 with an offset; each value is the average AC power (W) from its start
//! until the next entry's start (the last entry lasts as long as the one before it, or 15
//! minutes when it is alone). Entries must be in strictly increasing time order and the gap
//! between two must not exceed [`MAX_INTERVAL_S`]. Any resolution works: a quarter gets the
//! time-weighted average of the entries that cover it, and a quarter not fully covered gets
//! nothing (the clear-sky forecast fills it).

use crate::planner::PLAN_STEP_S;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

/// Longest interval one entry may cover, s (hourly products are the coarsest expected).
pub const MAX_INTERVAL_S: i64 = 3600;

/// A parsed day-ahead product: intervals with their average power.
#[derive(Debug, Clone, PartialEq)]
pub struct DayAhead {
    /// (start, end, W), in time order, contiguous or with gaps.
    intervals: Vec<(DateTime<Utc>, DateTime<Utc>, f64)>,
}

/// What is wrong with a day-ahead product (the entry is counted from 1).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DayAheadError {
    #[error("day-ahead JSON: {0}")]
    Json(String),
    #[error("day-ahead CSV: header must be `start,pv_w`, found `{0}`")]
    Header(String),
    #[error("day-ahead entry {entry}: {field}: {problem}")]
    Entry {
        entry: usize,
        field: &'static str,
        problem: String,
    },
    #[error("day-ahead: no entries")]
    Empty,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDoc {
    pv: Vec<JsonEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry {
    start: String,
    w: f64,
}

fn entry_err(entry: usize, field: &'static str, problem: impl Into<String>) -> DayAheadError {
    DayAheadError::Entry {
        entry,
        field,
        problem: problem.into(),
    }
}

fn parse_start(entry: usize, s: &str) -> Result<DateTime<Utc>, DayAheadError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| entry_err(entry, "start", format!("`{s}` is not RFC 3339 ({e})")))
}

fn check_w(entry: usize, w: f64) -> Result<f64, DayAheadError> {
    if w.is_finite() && w >= 0.0 {
        Ok(w)
    } else {
        Err(entry_err(entry, "w", format!("{w} is not a power >= 0")))
    }
}

/// Parse a day-ahead product in either format.
pub fn parse_day_ahead(text: &str) -> Result<DayAhead, DayAheadError> {
    let points = if text.trim_start().starts_with('{') {
        parse_json(text)?
    } else {
        parse_csv(text)?
    };
    DayAhead::from_points(&points)
}

fn parse_json(text: &str) -> Result<Vec<(DateTime<Utc>, f64)>, DayAheadError> {
    let doc: JsonDoc =
        serde_json::from_str(text).map_err(|e| DayAheadError::Json(e.to_string()))?;
    doc.pv
        .iter()
        .enumerate()
        .map(|(i, e)| Ok((parse_start(i + 1, &e.start)?, check_w(i + 1, e.w)?)))
        .collect()
}

fn parse_csv(text: &str) -> Result<Vec<(DateTime<Utc>, f64)>, DayAheadError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines.next().unwrap_or_default();
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols != ["start", "pv_w"] {
        return Err(DayAheadError::Header(header.to_string()));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let entry = i + 1;
            let (start, w) = line
                .split_once(',')
                .ok_or_else(|| entry_err(entry, "pv_w", format!("missing in `{line}`")))?;
            let w: f64 = w
                .trim()
                .parse()
                .map_err(|_| entry_err(entry, "pv_w", format!("`{}` is not a number", w.trim())))?;
            Ok((parse_start(entry, start)?, check_w(entry, w)?))
        })
        .collect()
}

impl DayAhead {
    /// Intervals from points in time order (see the module documentation).
    pub fn from_points(points: &[(DateTime<Utc>, f64)]) -> Result<DayAhead, DayAheadError> {
        if points.is_empty() {
            return Err(DayAheadError::Empty);
        }
        let mut intervals = Vec::with_capacity(points.len());
        let mut last_len = Duration::seconds(PLAN_STEP_S);
        for (i, &(start, w)) in points.iter().enumerate() {
            let end = match points.get(i + 1) {
                Some(&(next, _)) => {
                    let len = next - start;
                    if len <= Duration::zero() {
                        return Err(entry_err(i + 2, "start", "not after the entry before it"));
                    }
                    last_len = len.min(Duration::seconds(MAX_INTERVAL_S));
                    if len.num_seconds() > MAX_INTERVAL_S {
                        // A gap: this entry lasts as long as the one before it would allow.
                        start + last_len
                    } else {
                        next
                    }
                }
                None => start + last_len,
            };
            intervals.push((start, end, w));
        }
        Ok(DayAhead { intervals })
    }

    /// Average power over the quarter starting at `start` (None unless fully covered), W.
    pub fn quarter_w(&self, start: DateTime<Utc>) -> Option<f64> {
        let end = start + Duration::seconds(PLAN_STEP_S);
        let first = self.intervals.partition_point(|&(_, e, _)| e <= start);
        let mut covered = 0.0;
        let mut energy = 0.0;
        let mut at = start;
        for &(a, b, w) in &self.intervals[first..] {
            if a >= end {
                break;
            }
            if a > at {
                return None;
            }
            let to = b.min(end);
            let s = (to - at).num_milliseconds() as f64 / 1000.0;
            covered += s;
            energy += w * s;
            at = to;
        }
        (covered >= PLAN_STEP_S as f64 - 1e-6).then(|| energy / covered)
    }

    /// The last instant covered.
    pub fn end(&self) -> Option<DateTime<Utc>> {
        self.intervals.last().map(|&(_, e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 15, h, m, 0).unwrap()
    }

    #[test]
    fn an_hourly_csv_product_gives_every_quarter_of_its_hours() {
        let da = parse_day_ahead(
            "start,pv_w\n2026-07-15T08:00:00+08:00,60000\n2026-07-15T09:00:00+08:00,80000\n",
        )
        .unwrap();
        assert_eq!(da.quarter_w(t(0, 0)), Some(60_000.0));
        assert_eq!(da.quarter_w(t(0, 45)), Some(60_000.0));
        assert_eq!(da.quarter_w(t(1, 30)), Some(80_000.0));
        assert_eq!(da.quarter_w(t(2, 0)), None);
        assert_eq!(da.quarter_w(t(23, 45) - Duration::days(1)), None);
    }

    #[test]
    fn a_five_minute_json_product_is_averaged_into_quarters() {
        let da = parse_day_ahead(
            r#"{"pv": [{"start": "2026-07-15T00:00:00Z", "w": 10},
                       {"start": "2026-07-15T00:05:00Z", "w": 20},
                       {"start": "2026-07-15T00:10:00Z", "w": 60}]}"#,
        )
        .unwrap();
        assert!((da.quarter_w(t(0, 0)).unwrap() - 30.0).abs() < 1e-9);
        assert_eq!(da.quarter_w(t(0, 15)), None);
    }

    #[test]
    fn bad_products_name_the_entry_and_field() {
        let e = parse_day_ahead("start,pv_w\n2026-07-15T08:00:00Z,-5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "day-ahead entry 1: w: -5 is not a power >= 0"
        );
        let e = parse_day_ahead("start,pv_w\n2026-07-15T08:00:00Z,1\nyesterday,2\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("day-ahead entry 2: start: `yesterday`"),
            "{e}"
        );
        let e = parse_day_ahead("time,w\n").unwrap_err();
        assert!(matches!(e, DayAheadError::Header(_)));
        let e =
            parse_day_ahead(r#"{"pv": [{"start": "2026-07-15T00:00:00Z", "kw": 1}]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `kw`"), "{e}");
        let e = parse_day_ahead("start,pv_w\n2026-07-15T08:00:00Z,1\n2026-07-15T07:00:00Z,2\n")
            .unwrap_err();
        assert!(e.to_string().contains("entry 2: start: not after"), "{e}");
        assert_eq!(parse_day_ahead("start,pv_w\n"), Err(DayAheadError::Empty));
    }
}

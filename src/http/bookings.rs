//! Bookings over HTTP: cars the operator knows are coming, for the planner to expect
//! ([`crate::planner::forecast::bookings`]).
//!
//! - `POST /api/bookings` (token): `{"arrives": "2026-07-15T13:00:00+08:00", "departs":
//!   "2026-07-15T16:00:00+08:00", "charger": "charger-3", "energy_kwh": 40, "max_kw": 22}`;
//!   `charger`, `energy_kwh` and `max_kw` are optional (whichever charger is free, the
//!   planner's configured default energy and power). 201 with the booking as held; 400 names
//!   the field that is wrong; 409 when the planner is off or the book is full.
//! - `GET /api/bookings`: every booking held, with its state: `expected`, `fulfilled` (with
//!   the charger whose car fulfilled it) or `lapsed` (its car did not come within the grace);
//!   503 before the first control cycle (which tells the chargers' ids and the station time).
//! - `DELETE /api/bookings/{id}` (token): 204, or 404 for an unknown id.

use super::api::{authorize, error, AppState};
use super::session::planner_request;
use crate::daemon::planning::CycleState;
use crate::planner::forecast::bookings::{Booking, BookingError, GRACE_MIN};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// Furthest ahead a booking may be, days.
pub const MAX_AHEAD_DAYS: i64 = 31;

/// Longest stay a booking may name, h.
pub const MAX_STAY_H: i64 = 72;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingBody {
    pub arrives: String,
    pub departs: String,
    pub charger: Option<String>,
    pub energy_kwh: Option<f64>,
    pub max_kw: Option<f64>,
}

fn field(f: &str, problem: impl std::fmt::Display) -> String {
    format!("{f}: {problem}")
}

fn time(f: &str, v: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(v.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| field(f, format!("`{v}` is not RFC 3339 ({e})")))
}

fn positive(f: &str, v: Option<f64>, hi: f64) -> Result<Option<f64>, String> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0 && x <= hi) => {
            Err(field(f, format!("must be within (0, {hi}] (got {x})")))
        }
        _ => Ok(v),
    }
}

/// The booking `b` asks for, checked against the station's chargers as the last cycle saw them.
pub fn check_booking(b: &BookingBody, cycle: &CycleState) -> Result<Booking, String> {
    let now = cycle.now;
    let arrives = time("arrives", &b.arrives)?;
    let departs = time("departs", &b.departs)?;
    if arrives < now - Duration::minutes(GRACE_MIN) {
        return Err(field(
            "arrives",
            format!("more than {GRACE_MIN} min ago (now {})", now.to_rfc3339()),
        ));
    }
    if arrives > now + Duration::days(MAX_AHEAD_DAYS) {
        return Err(field(
            "arrives",
            format!("at most {MAX_AHEAD_DAYS} days ahead"),
        ));
    }
    if departs <= arrives || departs > arrives + Duration::hours(MAX_STAY_H) {
        return Err(field(
            "departs",
            format!("must be after arrives and at most {MAX_STAY_H} h after it"),
        ));
    }
    let charger = match &b.charger {
        None => None,
        Some(id) => Some(
            cycle
                .chargers
                .iter()
                .position(|c| &c.id == id)
                .ok_or_else(|| field("charger", format!("no charger {id:?}")))?,
        ),
    };
    let rating_w = match charger {
        Some(i) => cycle.chargers.get(i).map_or(0.0, |c| c.max_w),
        None => cycle.chargers.iter().map(|c| c.max_w).fold(0.0, f64::max),
    };
    let energy_kwh = positive("energy_kwh", b.energy_kwh, 200.0)?;
    let max_kw = positive("max_kw", b.max_kw, (rating_w / 1000.0).max(0.1))?;
    Ok(Booking {
        id: 0,
        charger,
        arrives,
        departs,
        energy_wh: energy_kwh.map(|e| e * 1000.0),
        max_w: max_kw.map(|p| p * 1000.0),
        fulfilled_by: None,
    })
}

/// A booking as the API shows it (`ids`: charger ids in charger order).
pub fn booking_json(b: &Booking, ids: &[String], now: DateTime<Utc>) -> Value {
    let id_of = |i: usize| ids.get(i).cloned();
    let state = match b.fulfilled_by {
        Some(_) => "fulfilled",
        None if b.expected_at(now) => "expected",
        None => "lapsed",
    };
    json!({
        "id": b.id,
        "charger": b.charger.and_then(id_of),
        "arrives": b.arrives,
        "departs": b.departs,
        "energy_kwh": b.energy_wh.map(|e| e / 1000.0),
        "max_kw": b.max_w.map(|w| w / 1000.0),
        "state": state,
        "fulfilled_by": b.fulfilled_by.and_then(id_of),
    })
}

fn charger_ids(cycle: Option<&CycleState>) -> Vec<String> {
    cycle.map_or_else(Vec::new, |c| {
        c.chargers.iter().map(|c| c.id.clone()).collect()
    })
}

const PLANNER_OFF: &str = "planner: off ([planner] enabled = false): bookings need the planner";

pub(crate) async fn add(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<BookingBody>, JsonRejection>,
) -> Response {
    let (body, planning, cycle) = match planner_request(&s, &headers, body, "bookings") {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let booking = match check_booking(&body, &cycle) {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match planning.add_booking(booking, cycle.now) {
        Ok(b) => {
            let ids = charger_ids(Some(&cycle));
            (StatusCode::CREATED, Json(booking_json(&b, &ids, cycle.now))).into_response()
        }
        Err(e @ BookingError::Full) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

pub(crate) async fn list(State(s): State<AppState>) -> Response {
    let Some(planning) = s.shared.planning() else {
        return error(StatusCode::CONFLICT, PLANNER_OFF);
    };
    // Charger ids and station time come with the first cycle.
    let Some(cycle) = planning.cycle_state() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop has not run yet",
        );
    };
    let ids = charger_ids(Some(&cycle));
    let now = cycle.now;
    let book = planning.bookings();
    let all: Vec<Value> = book
        .all()
        .iter()
        .map(|b| booking_json(b, &ids, now))
        .collect();
    Json(json!({ "bookings": all })).into_response()
}

pub(crate) async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&s, &headers) {
        return e;
    }
    let Some(planning) = s.shared.planning() else {
        return error(StatusCode::CONFLICT, PLANNER_OFF);
    };
    let Ok(n) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("id: {id:?} is not a number"),
        );
    };
    if planning.cancel_booking(n) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("id: no booking {n}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::daemon::planning::ChargerNow;
    use crate::dispatch::snapshot::HealthLimits;
    use chrono::TimeZone;

    fn cycle() -> CycleState {
        let charger = |id: &str| ChargerNow {
            id: id.into(),
            plugged: false,
            session_wh: 0.0,
            max_w: 22_080.0,
        };
        CycleState {
            now: Utc.with_ymd_and_hms(2026, 7, 15, 2, 0, 0).unwrap(),
            soc_pct: Some(50.0),
            usable_wh: 100_000.0,
            max_charge_w: 50_000.0,
            max_discharge_w: 50_000.0,
            health: HealthLimits::default(),
            month_peak_w: 0.0,
            pv_limited: false,
            chargers: vec![charger("charger-1"), charger("charger-2")],
        }
    }

    fn body(arrives: &str, departs: &str) -> BookingBody {
        BookingBody {
            arrives: arrives.into(),
            departs: departs.into(),
            charger: None,
            energy_kwh: None,
            max_kw: None,
        }
    }

    #[test]
    fn a_booking_names_the_field_that_is_wrong() {
        let c = cycle();
        let ok = body("2026-07-15T13:00:00+08:00", "2026-07-15T16:00:00+08:00");
        let b = check_booking(&ok, &c).unwrap();
        assert_eq!(b.departs - b.arrives, Duration::hours(3));
        let bad = |f: &dyn Fn(&mut BookingBody)| {
            let mut x = body("2026-07-15T13:00:00+08:00", "2026-07-15T16:00:00+08:00");
            f(&mut x);
            check_booking(&x, &c).unwrap_err()
        };
        assert!(bad(&|b| b.arrives = "1pm".into()).starts_with("arrives: `1pm` is not RFC 3339"));
        assert!(bad(&|b| b.arrives = "2026-07-15T08:00:00+08:00".into())
            .starts_with("arrives: more than 30 min ago"));
        assert!(bad(&|b| b.departs = "2026-07-15T12:00:00+08:00".into())
            .starts_with("departs: must be after arrives"));
        assert_eq!(
            bad(&|b| b.charger = Some("charger-9".into())),
            "charger: no charger \"charger-9\""
        );
        assert!(bad(&|b| b.energy_kwh = Some(-3.0)).starts_with("energy_kwh: must be within"));
        assert!(bad(&|b| b.max_kw = Some(50.0)).starts_with("max_kw: must be within (0, 22.08]"));
    }

    #[test]
    fn a_booking_shows_whether_its_car_is_expected_came_or_lapsed() {
        let c = cycle();
        let mut b = check_booking(
            &body("2026-07-15T13:00:00+08:00", "2026-07-15T16:00:00+08:00"),
            &c,
        )
        .unwrap();
        let ids = vec!["charger-1".to_string(), "charger-2".to_string()];
        assert_eq!(booking_json(&b, &ids, c.now)["state"], "expected");
        let late = b.arrives + Duration::minutes(GRACE_MIN);
        assert_eq!(booking_json(&b, &ids, late)["state"], "lapsed");
        b.fulfilled_by = Some(1);
        let v = booking_json(&b, &ids, c.now);
        assert_eq!(
            (v["state"].as_str(), v["fulfilled_by"].as_str()),
            (Some("fulfilled"), Some("charger-2"))
        );
    }
}

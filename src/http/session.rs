//! The planner's HTTP surface.
//!
//! - `POST /api/chargers/{id}/session` (token, like every POST): the plugged car's departure
//!   and energy wish, `{"departure": "2026-07-15T17:30:00+08:00", "energy_kwh": 30}` or, by
//!   target SoC, `{"departure": ..., "target_soc_pct": 80, "soc_pct": 35, "battery_kwh": 60}`.
//!   A wish the charger cannot physically deliver by the departure (its rating x the time left)
//!   is refused at once (422, naming `energy_kwh` or `target_soc_pct`); an accepted one is
//!   planned at once, and the charger's `wish.state` in the status turns `planned` or
//!   `cannot_meet` (with the reason) when the plan is made. 400 names the field that is wrong,
//!   404 an unknown charger, 409 a charger without a car or a station without the planner.
//! - `GET /api/plan`: the plan in force with the forecast it was made from, per step (the
//!   dashboard draws it ahead of now), the cars it expects (`arrivals`: booked and forecast),
//!   the solver's counters and why the plan does not run, if it does not.

use super::api::{authorize, error, json_body, AppState};
use crate::daemon::planning::{CycleState, PlanView, Planning, SessionWish};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Furthest departure a wish may name.
pub const MAX_DEPARTURE_H: i64 = 72;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    pub departure: String,
    pub energy_kwh: Option<f64>,
    pub target_soc_pct: Option<f64>,
    pub soc_pct: Option<f64>,
    pub battery_kwh: Option<f64>,
}

/// A refusal: status and message (naming the field).
type Refusal = (StatusCode, String);

fn field(f: &str, problem: impl std::fmt::Display) -> Refusal {
    (StatusCode::BAD_REQUEST, format!("{f}: {problem}"))
}

fn within(f: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<f64, Refusal> {
    match v {
        Some(v) if v.is_finite() && v > lo && v <= hi => Ok(v),
        Some(v) => Err(field(f, format!("must be within ({lo}, {hi}] (got {v})"))),
        None => Err(field(f, "required with target_soc_pct")),
    }
}

/// The energy the wish asks for, kWh.
fn wished_kwh(b: &SessionBody) -> Result<(f64, &'static str), Refusal> {
    match (b.energy_kwh, b.target_soc_pct) {
        (Some(e), None) => {
            if b.soc_pct.is_some() || b.battery_kwh.is_some() {
                return Err(field("soc_pct", "only with target_soc_pct"));
            }
            Ok((within("energy_kwh", Some(e), 0.0, 200.0)?, "energy_kwh"))
        }
        (None, Some(t)) => {
            let t = within("target_soc_pct", Some(t), 0.0, 100.0)?;
            let soc = within("soc_pct", b.soc_pct.map(|s| s + 1e-9), 0.0, 100.0)? - 1e-9;
            let cap = within("battery_kwh", b.battery_kwh, 0.0, 250.0)?;
            if t <= soc {
                return Err(field(
                    "target_soc_pct",
                    format!("must be above soc_pct ({soc})"),
                ));
            }
            Ok(((t - soc) / 100.0 * cap, "target_soc_pct"))
        }
        (Some(_), Some(_)) => Err(field(
            "energy_kwh",
            "give energy_kwh or target_soc_pct, not both",
        )),
        (None, None) => Err(field(
            "energy_kwh",
            "required (or target_soc_pct with soc_pct and battery_kwh)",
        )),
    }
}

/// Check a wish for a car on a charger of `max_w` with `session_wh` so far, at `now`.
pub fn check_wish(
    b: &SessionBody,
    id: &str,
    now: DateTime<Utc>,
    max_w: f64,
    session_wh: f64,
) -> Result<SessionWish, Refusal> {
    let departs = DateTime::parse_from_rfc3339(b.departure.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            field(
                "departure",
                format!("`{}` is not RFC 3339 ({e})", b.departure),
            )
        })?;
    if departs <= now + Duration::minutes(1) {
        return Err(field(
            "departure",
            format!("must be after now ({})", now.to_rfc3339()),
        ));
    }
    if departs > now + Duration::hours(MAX_DEPARTURE_H) {
        return Err(field(
            "departure",
            format!("at most {MAX_DEPARTURE_H} h ahead"),
        ));
    }
    let (kwh, key) = wished_kwh(b)?;
    let hours = (departs - now).num_seconds() as f64 / 3600.0;
    let most_kwh = max_w / 1000.0 * hours;
    if kwh > most_kwh {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{key}: {kwh:.1} kWh cannot be delivered by {}: {id} gives at most {:.1} kW, {most_kwh:.1} kWh in {hours:.1} h",
                departs.to_rfc3339(),
                max_w / 1000.0
            ),
        ));
    }
    // A wish by target SoC (checked above) tells the car's SoC and battery.
    let car_soc = match (b.target_soc_pct, b.soc_pct, b.battery_kwh) {
        (Some(_), Some(soc), Some(kwh)) => Some((soc, kwh * 1000.0)),
        _ => None,
    };
    Ok(SessionWish {
        departs,
        energy_wh: kwh * 1000.0,
        session_wh_at_wish: session_wh,
        car_soc,
        version: 0,
    })
}

/// A behaviour-changing planner request, checked in order: the token, the JSON body, the
/// planner on (409 naming what `needs` it), a cycle run (503). Gives the body, the planner and
/// the last cycle's state.
// The error is a ready `Response`, built once per failed request (as in `api`).
#[allow(clippy::result_large_err)]
pub(crate) fn planner_request<T>(
    s: &AppState,
    headers: &HeaderMap,
    body: Result<Json<T>, JsonRejection>,
    needs: &str,
) -> Result<(T, Arc<Planning>, Arc<CycleState>), Response> {
    authorize(s, headers)?;
    let body = json_body(body)?;
    let Some(planning) = s.shared.planning() else {
        return Err(error(
            StatusCode::CONFLICT,
            format!("planner: off ([planner] enabled = false): {needs} need the planner"),
        ));
    };
    let Some(cycle) = planning.cycle_state() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop has not run yet",
        ));
    };
    Ok((body, planning.clone(), cycle))
}

pub(crate) async fn set_session(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SessionBody>, JsonRejection>,
) -> Response {
    let (body, planning, cycle) = match planner_request(&s, &headers, body, "session wishes") {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let Some(charger) = cycle.chargers.iter().find(|c| c.id == id) else {
        return error(StatusCode::NOT_FOUND, format!("id: no charger {id:?}"));
    };
    if !charger.plugged {
        return error(
            StatusCode::CONFLICT,
            format!("id: no car is plugged in at {id}"),
        );
    }
    match check_wish(&body, &id, cycle.now, charger.max_w, charger.session_wh) {
        Ok(wish) => {
            let answer = json!({
                "charger": id,
                "departure": wish.departs,
                "energy_kwh": wish.energy_wh / 1000.0,
                "state": "pending",
            });
            planning.set_wish(&id, wish);
            Json(answer).into_response()
        }
        Err((status, message)) => error(status, message),
    }
}

fn plan_json(v: &PlanView, now: DateTime<Utc>) -> Value {
    let steps: Vec<Value> = v
        .plan
        .iter()
        .flat_map(|p| p.steps.iter().enumerate())
        .map(|(t, st)| {
            let f = v.forecast.as_deref();
            let at = |xs: Option<&Vec<f64>>| xs.and_then(|x| x.get(t)).copied();
            json!({
                "start": st.start,
                "end": st.end,
                "import_ceiling_w": st.import_ceiling_w,
                "planned_import_w": st.planned_import_w,
                "planned_export_w": st.planned_export_w,
                "battery_soc_target_pct": st.battery_soc_target_pct,
                "pv_forecast_w": at(f.map(|f| &f.pv_w)),
                "building_forecast_w": at(f.map(|f| &f.building_w)),
                "import_price_cny_per_kwh": at(f.map(|f| &f.import_price_cny_per_kwh)),
                "cars": st.cars.iter().map(|c| json!({
                    "charger": c.charger,
                    "in_step_wh": c.in_step_wh,
                    "by_departure_wh": c.by_departure_wh,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "enabled": true,
        "made_at": v.plan.as_ref().map(|p| p.made_at),
        "objective_cny": v.plan.as_ref().map(|p| p.objective_cny),
        "plugged_unmet_kwh": v.plan.as_ref().map(|p| p.plugged_unmet_wh / 1000.0),
        "expected_cars": v.forecast.as_ref().map_or(0, |f| f.arrivals.len()),
        "arrivals": v.forecast.as_ref().map_or_else(Vec::new, |f| {
            f.arrivals.iter().map(|a| json!({
                "arrives": a.arrives,
                "departs": a.departs,
                "energy_kwh": a.wanted_wh / 1000.0,
                "max_kw": a.max_w / 1000.0,
            })).collect::<Vec<_>>()
        }),
        "reason": v.reason(now),
        "solves": v.solves,
        "failures": v.failures,
        "timeouts": v.timeouts,
        "last_solve_ms": v.last_solve_ms,
        "last_error": v.last_error,
        "wishes": v.wishes,
        "history_quarters": v.history_quarters,
        "history_sessions": v.history_sessions,
        "steps": steps,
    })
}

pub(crate) async fn plan(State(s): State<AppState>) -> Response {
    match s.shared.planning() {
        Some(p) => Json(plan_json(&p.view(), s.shared.now())).into_response(),
        None => Json(json!({
            "enabled": false,
            "reason": "planner: off ([planner] enabled = false)",
            "steps": [],
        }))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 15, 2, 0, 0).unwrap()
    }

    fn body(json: &str) -> SessionBody {
        serde_json::from_str(json).unwrap()
    }

    fn refused(json: &str) -> String {
        check_wish(&body(json), "charger-3", now(), 22_080.0, 0.0)
            .unwrap_err()
            .1
    }

    #[test]
    fn a_wish_by_energy_or_by_target_soc_is_taken_and_the_second_tells_the_cars_battery() {
        let w = check_wish(
            &body(r#"{"departure": "2026-07-15T12:00:00+08:00", "energy_kwh": 30}"#),
            "charger-3",
            now(),
            22_080.0,
            500.0,
        )
        .unwrap();
        assert_eq!(w.departs, now() + Duration::hours(2));
        assert_eq!((w.energy_wh, w.session_wh_at_wish), (30_000.0, 500.0));
        assert_eq!(
            w.car_soc, None,
            "an energy wish says nothing of the car's battery"
        );
        let w = check_wish(
            &body(r#"{"departure": "2026-07-15T04:00:00Z", "target_soc_pct": 80, "soc_pct": 30, "battery_kwh": 60}"#),
            "charger-3",
            now(),
            22_080.0,
            0.0,
        )
        .unwrap();
        assert!((w.energy_wh - 30_000.0).abs() < 1e-6);
        assert_eq!(w.car_soc, Some((30.0, 60_000.0)));
    }

    #[test]
    fn bad_wishes_are_refused_naming_the_field() {
        assert!(
            refused(r#"{"departure": "5 pm", "energy_kwh": 3}"#).starts_with("departure: `5 pm`")
        );
        assert!(
            refused(r#"{"departure": "2026-07-15T01:00:00Z", "energy_kwh": 3}"#)
                .starts_with("departure: must be after now")
        );
        assert!(
            refused(r#"{"departure": "2026-07-19T01:00:00Z", "energy_kwh": 3}"#)
                .starts_with("departure: at most 72 h")
        );
        assert!(
            refused(r#"{"departure": "2026-07-15T04:00:00Z", "energy_kwh": -3}"#)
                .starts_with("energy_kwh: must be within")
        );
        assert!(
            refused(r#"{"departure": "2026-07-15T04:00:00Z"}"#).starts_with("energy_kwh: required")
        );
        assert!(refused(
            r#"{"departure": "2026-07-15T04:00:00Z", "target_soc_pct": 80, "battery_kwh": 60}"#
        )
        .starts_with("soc_pct: required"));
        assert!(refused(r#"{"departure": "2026-07-15T04:00:00Z", "target_soc_pct": 20, "soc_pct": 30, "battery_kwh": 60}"#)
            .starts_with("target_soc_pct: must be above"));
        let (status, msg) = check_wish(
            &body(r#"{"departure": "2026-07-15T03:00:00Z", "energy_kwh": 40}"#),
            "charger-3",
            now(),
            22_080.0,
            0.0,
        )
        .unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            msg.starts_with("energy_kwh: 40.0 kWh cannot be delivered"),
            "{msg}"
        );
        assert!(msg.contains("at most 22.1 kW, 22.1 kWh in 1.0 h"), "{msg}");
    }
}

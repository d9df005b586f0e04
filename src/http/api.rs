//! The daemon's HTTP surface (loopback by default):
//!
//! - `GET /`: the dashboard (served from the binary).
//! - `GET /api/status`: the last cycle's [`Status`](crate::daemon::status::Status) as JSON.
//! - `GET /api/events`: server-sent events, one `status` event per cycle.
//! - `GET /api/history?hours=24`: minute points for the charts.
//! - `GET /api/health`: 200 while the control loop runs, 503 otherwise.
//! - `GET /metrics`: Prometheus text.
//! - `GET /api/energy?from=..&to=..[&format=csv]`: 15-minute ledger buckets and totals.
//! - `GET /api/sessions?from=..&to=..[&format=csv]`: charging sessions.
//! - `POST /api/chargers/{id}/mode` `{"mode": "solar"}`: needs `Authorization: Bearer <api.token>`;
//!   refused when no token is configured.
//!
//! Malformed requests get 400 with `{"error": "..."}` naming the parameter.

// Handlers return a ready `Response` as their error; it is built once per failed request.
#![allow(clippy::result_large_err)]

use crate::daemon::control::ControlMsg;
use crate::daemon::Shared;
use crate::dispatch::ChargeMode;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

/// The API and dashboard router.
fn router(shared: Arc<Shared>, cancel: CancellationToken) -> Router {
    let api = Router::new()
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/history", get(history))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/energy", get(energy))
        .route("/api/sessions", get(sessions))
        .route("/api/chargers/{id}/mode", post(set_mode))
        .with_state(AppState { shared, cancel });
    crate::http::assets::router().merge(api)
}

/// Serve until `cancel` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let app = router(shared, cancel.clone());
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn status(State(s): State<AppState>) -> Response {
    match s.shared.status() {
        Some(st) => Json(&*st).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no control cycle has completed yet",
        ),
    }
}

async fn events(State(s): State<AppState>) -> Response {
    let rx = s.shared.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let latest = rx.borrow_and_update().clone();
        let event = match latest {
            Some(st) => Event::default()
                .event("status")
                .json_data(&*st)
                .unwrap_or_else(|_| Event::default().comment("unencodable status")),
            None => Event::default().comment("waiting for the first cycle"),
        };
        Some((Ok::<_, Infallible>(event), rx))
    })
    .take_until(s.cancel.cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    hours: Option<f64>,
}

async fn history(
    State(s): State<AppState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let hours = q.hours.unwrap_or(24.0);
    if !(hours.is_finite() && hours > 0.0 && hours <= 24.0) {
        return bad_request(format!("hours: must be within (0, 24] (got {hours})"));
    }
    let (limit, points) = s.shared.history(hours);
    Json(json!({ "import_limit_w": limit, "points": points })).into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    let ledger = s.shared.ledger_health();
    if s.shared.healthy() {
        Json(json!({ "status": "ok", "ledger": ledger })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "control loop not running", "ledger": ledger })),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.shared.metrics_text(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

enum Format {
    Json,
    Csv,
}

fn parse_time(field: &str, v: &str) -> Result<DateTime<Utc>, Response> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad_request(format!("{field}: expected an RFC 3339 time (got {v:?})")))
}

/// The range asked for; defaults to the 24 h before the station's current time.
fn range(
    s: &AppState,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<(DateTime<Utc>, DateTime<Utc>, Format), Response> {
    let Query(q) = q.map_err(|e| bad_request(e.body_text()))?;
    let now = s
        .shared
        .status()
        .map_or_else(|| s.shared.now(), |st| st.time);
    let to = match &q.to {
        Some(v) => parse_time("to", v)?,
        None => now + TimeDelta::seconds(1),
    };
    let from = match &q.from {
        Some(v) => parse_time("from", v)?,
        None => to - TimeDelta::hours(24),
    };
    if from >= to {
        return Err(bad_request(format!(
            "from: must be before to (got {from} >= {to})"
        )));
    }
    let format = match q.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(bad_request(format!(
                "format: expected json or csv (got {other:?})"
            )))
        }
    };
    Ok((from, to, format))
}

fn csv(body: String, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn energy(
    State(s): State<AppState>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let (from, to, format) = match range(&s, q) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let buckets = s.shared.ledger_buckets(from, to);
    match format {
        Format::Csv => csv(crate::ledger::buckets_csv(&buckets), "energy"),
        Format::Json => {
            let totals = s.shared.ledger_totals(from, to);
            Json(json!({ "from": from, "to": to, "buckets": buckets, "totals": totals }))
                .into_response()
        }
    }
}

async fn sessions(
    State(s): State<AppState>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Response {
    let (from, to, format) = match range(&s, q) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let sessions = s.shared.ledger_sessions(from, to);
    match format {
        Format::Csv => csv(crate::ledger::sessions_csv(&sessions), "sessions"),
        Format::Json => {
            Json(json!({ "from": from, "to": to, "sessions": sessions })).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: ChargeMode,
}

/// Check the bearer token: refused outright when none is configured.
fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = s.shared.token() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "behaviour-changing endpoints are disabled: no api.token is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "Authorization: expected \"Bearer <api.token>\"",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn set_mode(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ModeBody>, JsonRejection>,
) -> Response {
    if let Err(e) = authorize(&s, &headers) {
        return e;
    }
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(e.body_text()),
    };
    let known = s
        .shared
        .status()
        .is_some_and(|st| st.chargers.iter().any(|c| c.id == id));
    if !known {
        return error(StatusCode::NOT_FOUND, format!("id: no charger {id:?}"));
    }
    if s.shared
        .control(ControlMsg::SetMode {
            id: id.clone(),
            mode: body.mode,
        })
        .await
    {
        Json(json!({ "charger": id, "mode": crate::daemon::publish::mode_name(body.mode) }))
            .into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop is not running",
        )
    }
}

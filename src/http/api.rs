//! The daemon's HTTP surface (loopback by default):
//!
//! - `GET /`: the dashboard (served from the binary).
//! - `GET /api/status`: the last cycle's [`Status`](crate::daemon::status::Status) as JSON.
//! - `GET /api/events`: server-sent events, one `status` event per cycle.
//! - `GET /api/history?hours=24`: minute points for the charts.
//! - `GET /api/health`: 200 while the control loop runs, 503 otherwise; `ledger.ok` false (and
//!   `status` `"degraded"`) when the ledger's storage or task is broken.
//! - `GET /metrics`: Prometheus text.
//! - `GET /api/energy?from=..&to=..[&format=csv]`: 15-minute ledger buckets and totals
//!   (at most [`MAX_SPAN_DAYS`] days per request).
//! - `GET /api/sessions?from=..&to=..[&format=csv]`: charging sessions (same cap).
//! - `POST /api/chargers/{id}/mode` `{"mode": "solar"}`: needs `Authorization: Bearer <api.token>`;
//!   refused when no token is configured.
//! - `POST /api/chargers/{id}/session`, `GET /api/plan`: the planner ([`super::session`]).
//!
//! Malformed requests get 400 with `{"error": "..."}` naming the parameter.
//!
//! The server ([`serve`]) caps connections at [`MAX_CONNECTIONS`] (more wait in the backlog),
//! drops a connection whose request headers take longer than [`HEADER_TIMEOUT`], answers 503
//! when a handler takes longer than [`REQUEST_TIMEOUT`], refuses bodies over [`BODY_LIMIT`]
//! bytes (413), and answers 421 to a `Host` that is not the listen address, `localhost`,
//! `127.0.0.1` or `[::1]` with the listen port, or a name in `api.hosts` (DNS rebinding).

// Handlers return a ready `Response` as their error; it is built once per failed request.
#![allow(clippy::result_large_err)]

use super::session;
use crate::daemon::control::ControlMsg;
use crate::daemon::Shared;
use crate::dispatch::ChargeMode;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Open connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a handler has to produce its response (SSE streams start within it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request body accepted, bytes.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Longest `from`..`to` span of one ledger query, days.
pub const MAX_SPAN_DAYS: i64 = 31;

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(crate) fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// A JSON request body, or the answer to a bad one: 413 for a body over the limit, 400 naming
/// what is wrong with anything else.
pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    match body {
        Ok(Json(b)) => Ok(b),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(error(e.status(), e.body_text()))
        }
        Err(e) => Err(bad_request(e.body_text())),
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) shared: Arc<Shared>,
    cancel: CancellationToken,
}

/// The API and dashboard router, with the request timeout, body limit and Host check.
fn router(shared: Arc<Shared>, cancel: CancellationToken, listen: SocketAddr) -> Router {
    let hosts = Arc::new(AllowedHosts::new(listen, shared.hosts()));
    let api = Router::new()
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/history", get(history))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/energy", get(energy))
        .route("/api/sessions", get(sessions))
        .route("/api/chargers/{id}/mode", post(set_mode))
        .route("/api/chargers/{id}/session", post(session::set_session))
        .route("/api/plan", get(session::plan))
        .route(
            "/api/bookings",
            get(crate::http::bookings::list).post(crate::http::bookings::add),
        )
        .route("/api/bookings/{id}", delete(crate::http::bookings::cancel))
        .route(
            "/api/battery/health",
            get(|State(s): State<AppState>| crate::http::battery_health::get(s.shared)),
        )
        .with_state(AppState { shared, cancel });
    crate::http::assets::router()
        .merge(api)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(request_timeout))
        .layer(middleware::from_fn_with_state(hosts, check_host))
}

/// Serve until `cancel` fires: at most [`MAX_CONNECTIONS`] at once, each on `tracker`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let listen = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "HTTP server: no local address");
            return;
        }
    };
    let app = router(shared, cancel.clone(), listen);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                tracker.spawn(connection(stream, app.clone(), cancel.clone(), permit));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// One HTTP/1.1 connection, closed gracefully when `cancel` fires.
async fn connection(
    stream: TcpStream,
    app: Router,
    cancel: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

async fn request_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// The `Host` values the API answers to.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHosts {
    port: u16,
    /// Host names without a port (the port must be the listen port).
    names: Vec<String>,
    /// Configured entries with an explicit port, matched whole.
    full: Vec<String>,
}

impl AllowedHosts {
    /// The listen address, `localhost`, `127.0.0.1`, `[::1]` and `configured` (`api.hosts`).
    pub fn new(listen: SocketAddr, configured: &[String]) -> Self {
        let ip = match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let mut names = vec![ip, "localhost".into(), "127.0.0.1".into(), "[::1]".into()];
        let mut full = Vec::new();
        for c in configured {
            let c = c.to_ascii_lowercase();
            match split_host(&c) {
                (_, Some(_)) => full.push(c),
                (name, None) => names.push(name.to_string()),
            }
        }
        AllowedHosts {
            port: listen.port(),
            names,
            full,
        }
    }

    /// Whether a request's `Host` header value is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.full.contains(&host) {
            return true;
        }
        let (name, port) = split_host(&host);
        let port_ok = match port {
            Some(p) => p.parse::<u16>().ok() == Some(self.port),
            None => self.port == 80,
        };
        port_ok && self.names.iter().any(|n| n == name)
    }
}

/// `name[:port]` or `[v6][:port]` into name and port text.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => {
                let port = host[i + 1..].strip_prefix(':');
                (&host[..=i], port)
            }
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

async fn check_host(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    match host {
        Some(h) if hosts.allows(&h) => next.run(req).await,
        Some(h) => error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host: {h:?} is not this station's address; add the name to api.hosts to allow it"
            ),
        ),
        None => error(StatusCode::MISDIRECTED_REQUEST, "Host: missing"),
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
    let ledger = s.shared.ledger_status();
    if s.shared.healthy() {
        let status = if ledger.ok { "ok" } else { "degraded" };
        Json(json!({ "status": status, "ledger": ledger })).into_response()
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
    if to - from > TimeDelta::days(MAX_SPAN_DAYS) {
        return Err(bad_request(format!(
            "from, to: at most {MAX_SPAN_DAYS} days per request (got {from} to {to}); ask for the range in parts"
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
    let (buckets, totals) = match s.shared.ledger_buckets(from, to).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match format {
        Format::Csv => csv(crate::ledger::buckets_csv(&buckets), "energy"),
        Format::Json => {
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
    let sessions = match s.shared.ledger_sessions(from, to).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
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
pub(crate) fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), Response> {
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
    let body = match json_body(body) {
        Ok(b) => b,
        Err(answer) => return answer,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, configured: &[&str]) -> AllowedHosts {
        let configured: Vec<String> = configured.iter().map(|s| s.to_string()).collect();
        AllowedHosts::new(listen.parse().unwrap(), &configured)
    }

    #[test]
    fn an_ipv6_listen_address_and_configured_names_with_or_without_a_port_are_allowed() {
        let h = hosts("[::1]:8080", &["Station.lan", "proxy.lan:9000"]);
        for ok in [
            "[::1]:8080",
            "localhost:8080",
            "station.lan:8080",
            "STATION.LAN:8080",
            "proxy.lan:9000",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "[::1]",
            "[::2]:8080",
            "proxy.lan:8080",
            "station.lan:9000",
            "evil.example:8080",
            "localhost:8080:1",
            "",
            "[::1",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
    }

    #[test]
    fn on_port_80_a_host_without_a_port_is_allowed() {
        let h = hosts("127.0.0.1:80", &[]);
        assert!(h.allows("localhost"));
        assert!(h.allows("127.0.0.1:80"));
        assert!(!h.allows("localhost:8080"));
    }
}

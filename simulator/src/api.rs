//! The simulator's HTTP control API (loopback by default).
//!
//! - `GET /truth`: true state and the running scorecard.
//! - `POST /faults`: inject a fault (`{"device": "grid-meter", "kind": "offline", "duration_s": 120}`).
//! - `DELETE /faults`: clear every fault.
//! - `POST /vehicles`: plug a car into a charger (`{"charger": "charger-3", "soc_pct": 20}`).
//! - `GET /health`: 200 while the simulator runs.
//!
//! Malformed requests get 400 with `{"error": "..."}` naming the field.

use crate::faults::FaultRequest;
use crate::runtime::{PlugRequest, Shared};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Reply = (StatusCode, Json<Value>);

fn bad_request(message: impl Into<String>) -> Reply {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message.into() })),
    )
}

/// The router, for tests that want to drive it without a socket.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/truth", get(truth))
        .route("/health", get(|| async { "ok" }))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/vehicles", post(plug))
        .with_state(shared)
}

/// Serve the control API until `cancel` fires.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "control API stopped");
    }
}

async fn truth(State(shared): State<Arc<Shared>>) -> Reply {
    match serde_json::to_value(shared.truth()) {
        Ok(v) => (StatusCode::OK, Json(v)),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": format!("cannot encode truth: {e}") })),
        ),
    }
}

async fn add_fault(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<FaultRequest>, JsonRejection>,
) -> Reply {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(e.body_text()),
    };
    match shared.inject(&req) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Reply {
    shared.clear_faults();
    (StatusCode::OK, Json(json!({ "cleared": true })))
}

async fn plug(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<PlugRequest>, JsonRejection>,
) -> Reply {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(e.body_text()),
    };
    match shared.plug(&req) {
        Ok(()) => (StatusCode::CREATED, Json(json!({ "plugged": req.charger }))),
        Err(e) => bad_request(e.to_string()),
    }
}

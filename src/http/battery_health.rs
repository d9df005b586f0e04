//! `GET /api/battery/health`: the battery health report (see `crate::health`): the measured
//! capacity with its 95 % band and samples, the BMS's SoH, the capacity dispatch uses and
//! where it comes from, equivalent full cycles, throughput, cell spread, module temperatures,
//! the derated window and power factors, the fade, the projected end of life with its range,
//! the wear price, the BMS-disagreement warning, and an hourly history (last 60 days).
//! `503` with a reason before the first cycle has read the battery.

use crate::daemon::Shared;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// The handler's body (the route lives in `http::api`).
pub async fn get(shared: Arc<Shared>) -> Response {
    match shared.battery_health() {
        Some(r) => Json(&*r).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "no battery health yet: the control loop has not run a cycle" })),
        )
            .into_response(),
    }
}

//! `GET /healthz`: unauthenticated liveness with per-worker status.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::SharedState;
use crate::openapi::schemas;
use crate::wire::ts;

/// 200 with `status: healthy` while the delivery engine runs, else 503 with `status: failed`.
/// No error details are exposed; they are in the logs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "Health",
    operation_id = "healthCheck",
    summary = "Health check",
    security(()),
    responses((status = 200, description = "Healthy.", body = schemas::Health), (status = 503, description = "A worker failed.", body = schemas::Health)),
)]
pub async fn healthz(State(state): State<SharedState>) -> (StatusCode, Json<Value>) {
    health(&state)
}

/// The same check at the root (`/healthz`, outside `/api/v1`), where load balancers,
/// orchestrators and uptime checks look for it first; Outpost serves both.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "Health",
    operation_id = "healthCheckRoot",
    summary = "Health check at the root",
    security(()),
    responses((status = 200, description = "Healthy.", body = schemas::Health), (status = 503, description = "A worker failed.", body = schemas::Health)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn healthz_root(State(state): State<SharedState>) -> (StatusCode, Json<Value>) {
    health(&state)
}

fn health(state: &SharedState) -> (StatusCode, Json<Value>) {
    let delivery_ok = state.engine.healthy();
    let word = |ok: bool| if ok { "healthy" } else { "failed" };
    let body = json!({
        "status": word(delivery_ok),
        "timestamp": ts(state.engine.clock().now()),
        "version": state.config.version,
        "workers": {
            "http-server": { "status": "healthy" },
            "delivery": { "status": word(delivery_ok) },
        },
    });
    let code = if delivery_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

//! Herald extension: bulk replay of a destination's finished deliveries.
//!
//! `POST /tenants/{t}/destinations/{d}/replay` with an optional body
//! `{"status": ["failed"], "topics": ["user.created"], "start": "<RFC 3339>", "end": "<RFC 3339>"}`
//! re-queues every matching delivery (created in `[start, end)`) with a fresh retry schedule
//! and answers `202 {"count": n}`. A delivery whose event already has a pending delivery to the
//! destination is skipped, so a replay never duplicates pending work; replaying twice in a row
//! re-queues nothing the second time while the first is still pending. The destination must
//! be enabled.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::DeliveryStatus;
use herald_store::{ReplayQuery, TimeRange};
use serde_json::{Value, json};

use super::{Params, load_destination, tenant_scope};
use crate::SharedState;
use crate::auth::Caller;
use crate::body::{Fields, JsonBody, Patch};
use crate::error::ApiError;
use crate::openapi::schemas;

fn string_list(f: &mut Fields<'_>, key: &str) -> Vec<String> {
    match f.raw(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, v) in items.iter().enumerate() {
                match v.as_str() {
                    Some(s) if !s.is_empty() => out.push(s.to_string()),
                    _ => f
                        .problems
                        .push(format!("{key}[{i}]"), "expected a non-empty string"),
                }
            }
            out
        }
        Some(_) => {
            f.problems
                .push(key, "expected a string or an array of strings");
            Vec::new()
        }
    }
}

/// `POST /tenants/{t}/destinations/{d}/replay`.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/destinations/{destination_id}/replay",
    tag = "Destinations",
    operation_id = "replayTenantDestination",
    summary = "Replay deliveries",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    request_body = schemas::ReplayRequest,
    responses((status = 202, description = "Deliveries queued again.", body = schemas::ReplayResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn replay(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    let obj = body.object(false)?;
    let d = load_destination(&state, &tenant_id, &id).await?;
    let mut f = Fields::new(&obj);
    let mut statuses = Vec::new();
    for s in string_list(&mut f, "status") {
        match DeliveryStatus::parse(&s) {
            Some(st) if st != DeliveryStatus::Pending => statuses.push(st),
            _ => f.problems.push(
                "status",
                format!("{s:?} is not one of failed, cancelled, success"),
            ),
        }
    }
    let topics = string_list(&mut f, "topics");
    let mut time = TimeRange::default();
    if let Patch::Set(t) = f.timestamp("start") {
        time.gte = Some(t);
    }
    if let Patch::Set(t) = f.timestamp("end") {
        time.lt = Some(t);
    }
    if let (Some(a), Some(b)) = (time.gte, time.lt)
        && a >= b
    {
        f.problems.push("end", "must be after start");
    }
    for key in obj.keys() {
        if !["status", "topics", "start", "end"].contains(&key.as_str()) {
            f.problems.push(
                key,
                "is not a replay option (use status, topics, start, end)",
            );
        }
    }
    f.problems.finish()?;
    if !d.is_enabled() {
        return Err(ApiError::bad_request(format!(
            "destination {id:?} is disabled; enable it before replaying"
        )));
    }
    if d.is_expired(state.engine.clock().now()) {
        return Err(ApiError::bad_request(format!(
            "destination {id:?} has expired; renew it before replaying"
        )));
    }
    let q = ReplayQuery {
        tenant_id,
        destination_id: id,
        statuses,
        topics,
        time,
    };
    let count = state.engine.replay(&q).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "count": count }))))
}

//! `GET /events` and `GET /events/{id}`. A tenant token sees only its tenant's events; the
//! `tenant_id` query parameter is then ignored, as the contract says.

use axum::Json;
use axum::extract::{RawQuery, State};
use herald_store::EventQuery;
use serde_json::{Value, json};

use super::{Params, find_event};
use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::query::{self, Params as Query};
use crate::wire;

/// `GET /events`: filters `id`, `tenant_id`, `destination_id`, `topic`, `time[…]`; seek
/// pagination by event time (limit 1–1000, default 100).
#[utoipa::path(
    get,
    path = "/events",
    tag = "Events",
    operation_id = "listEvents",
    summary = "List events",
    params(("tenant_id" = Option<String>, Query, description = "Only this tenant's events."), ("id" = Option<String>, Query), ("destination_id" = Option<String>, Query), ("topic" = Option<String>, Query), ("time[gte]" = Option<String>, Query, format = DateTime, description = "At or after this instant."), ("time[lt]" = Option<String>, Query, format = DateTime, description = "Before this instant."), ("limit" = Option<u32>, Query, description = "Page size."), ("next" = Option<String>, Query, description = "Cursor of the next page."), ("prev" = Option<String>, Query, description = "Cursor of the previous page."), ("dir" = Option<schemas::Dir>, Query, description = "Sort direction.")),
    responses((status = 200, description = "A page of events.", body = schemas::EventPaginatedResult)),
)]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Query::parse(raw.as_deref());
    query::order_by(&params, "time")?;
    let page = query::page(&params, 100, 1000)?;
    let (limit, dir) = (page.limit, page.dir);
    let tenant_ids = match caller.tenant() {
        Some(t) => vec![t.to_string()],
        None => params.list("tenant_id"),
    };
    let q = EventQuery {
        ids: params.list("id"),
        tenant_ids,
        destination_ids: params.list("destination_id"),
        topics: params.list("topic"),
        time: query::time_range(&params, "time")?,
        page,
    };
    let page = state.engine.store().list_events(&q).await?;
    Ok(Json(json!({
        "models": page.models.iter().map(wire::event).collect::<Vec<_>>(),
        "pagination": wire::pagination("time", dir, limit, page.next, page.prev),
    })))
}

/// `GET /events/{id}`: 404 when the event belongs to another tenant than the token's, or than
/// the admin's `tenant_id` query parameter.
#[utoipa::path(
    get,
    path = "/events/{event_id}",
    tag = "Events",
    operation_id = "getEvent",
    summary = "Get an event",
    params(("event_id" = String, Path, description = "The event id.", example = "evt_example"), ("tenant_id" = Option<String>, Query, description = "The event's tenant (admin).")),
    responses((status = 200, description = "The event.", body = schemas::Event), (status = 422, description = "An admin named no `tenant_id` and several tenants use the event id.", body = schemas::ApiErrorResponse)),
)]
pub async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    Params(event_id): Params<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Query::parse(raw.as_deref());
    let scope = caller.tenant().or(params.get("tenant_id"));
    let event = find_event(&state, scope, &event_id).await?;
    Ok(Json(wire::event(&event)))
}

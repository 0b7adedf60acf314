//! The Operator Events API under `/operator-events/…`, admin only, wire-compatible with the
//! `operator_events` module of Outpost's SDK (`outpost-sdk` 1.7.0): destination types,
//! operator destinations (list, create, get, update, delete, enable, disable), operator
//! events (list, get, an event's attempts), attempts (list, get) and retry.
//!
//! Operator destinations are destinations of the reserved tenant
//! [`OPERATOR_TENANT`]: the handlers are the tenant destination handlers with that tenant
//! fixed and the operator topics as catalog. The status codes are the SDK's: create answers
//! `200` (not `201`), retry `200` (not `202`).

use axum::Json;
use axum::extract::{RawQuery, State};
use herald_core::operator::OPERATOR_TENANT;
use herald_store::EventQuery;
use serde_json::{Value, json};

use super::destinations::{self, Owner};
use super::{Params, attempts, load_destination};
use crate::SharedState;
use crate::auth::Caller;
use crate::body::{Fields, JsonBody};
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::query::{self, Params as Query};
use crate::wire;

/// `GET /operator-events/destination-types`: every type an operator destination may use.
#[utoipa::path(
    get,
    path = "/operator-events/destination-types",
    tag = "Operator events",
    operation_id = "listOperatorDestinationTypes",
    summary = "List operator destination types",
    responses((status = 200, description = "Every type of this build.", body = Vec<schemas::DestinationTypeSchema>)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn destination_types(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(Value::Array(
        state
            .engine
            .registry()
            .specs()
            .iter()
            .map(wire::type_spec)
            .collect(),
    )))
}

/// `GET /operator-events/destinations`: a plain array, oldest first.
#[utoipa::path(
    get,
    path = "/operator-events/destinations",
    tag = "Operator events",
    operation_id = "listOperatorDestinations",
    summary = "List operator destinations",
    responses((status = 200, description = "Every operator destination.", body = Vec<schemas::OperatorDestinationDoc>)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn list_destinations(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let all = state
        .engine
        .store()
        .list_destinations(OPERATOR_TENANT)
        .await?;
    let registry = state.engine.registry();
    Ok(Json(Value::Array(
        all.iter()
            .map(|d| wire::destination(registry, d, state.engine.clock().now()))
            .collect(),
    )))
}

/// A destination's wire form at the engine's current time.
fn destination_json(state: &SharedState, d: &herald_core::Destination) -> Json<Value> {
    Json(wire::destination(
        state.engine.registry(),
        d,
        state.engine.clock().now(),
    ))
}

/// `POST /operator-events/destinations`: `200` with the stored destination.
#[utoipa::path(
    post,
    path = "/operator-events/destinations",
    tag = "Operator events",
    operation_id = "createOperatorDestination",
    summary = "Create an operator destination",
    request_body = schemas::OperatorDestinationCreateDoc,
    responses((status = 200, description = "Created.", body = schemas::OperatorDestinationDoc), (status = 409, description = "The id is taken.", body = schemas::ApiErrorResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn create_destination(
    State(state): State<SharedState>,
    caller: Caller,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let d = destinations::create_in(
        &state,
        &caller,
        OPERATOR_TENANT.to_string(),
        Owner::Operator,
        body,
    )
    .await?;
    Ok(destination_json(&state, &d))
}

/// `GET /operator-events/destinations/{id}`.
#[utoipa::path(
    get,
    path = "/operator-events/destinations/{destination_id}",
    tag = "Operator events",
    operation_id = "getOperatorDestination",
    summary = "Get an operator destination",
    params(("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "The destination.", body = schemas::OperatorDestinationDoc)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn get_destination(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let d = load_destination(&state, OPERATOR_TENANT, &id).await?;
    Ok(destination_json(&state, &d))
}

/// `PATCH /operator-events/destinations/{id}`: merge-patch, `topics` replaced whole.
#[utoipa::path(
    patch,
    path = "/operator-events/destinations/{destination_id}",
    tag = "Operator events",
    operation_id = "updateOperatorDestination",
    summary = "Update an operator destination",
    params(("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    request_body = schemas::OperatorDestinationUpdateDoc,
    responses((status = 200, description = "Updated.", body = schemas::OperatorDestinationDoc)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn update_destination(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let d = destinations::update_in(&state, &caller, OPERATOR_TENANT, &id, Owner::Operator, body)
        .await?;
    Ok(destination_json(&state, &d))
}

/// `DELETE /operator-events/destinations/{id}`: `{"success": true}`.
#[utoipa::path(
    delete,
    path = "/operator-events/destinations/{destination_id}",
    tag = "Operator events",
    operation_id = "deleteOperatorDestination",
    summary = "Delete an operator destination",
    params(("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "Deleted.", body = schemas::SuccessResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn delete_destination(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    destinations::delete_in(&state, OPERATOR_TENANT, &id).await
}

/// `PUT /operator-events/destinations/{id}/enable`.
#[utoipa::path(
    put,
    path = "/operator-events/destinations/{destination_id}/enable",
    tag = "Operator events",
    operation_id = "enableOperatorDestination",
    summary = "Enable an operator destination",
    params(("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "Enabled.", body = schemas::OperatorDestinationDoc)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn enable_destination(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    destinations::set_disabled_in(&state, OPERATOR_TENANT, &id, false).await
}

/// `PUT /operator-events/destinations/{id}/disable`: cancels its pending deliveries.
#[utoipa::path(
    put,
    path = "/operator-events/destinations/{destination_id}/disable",
    tag = "Operator events",
    operation_id = "disableOperatorDestination",
    summary = "Disable an operator destination",
    params(("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "Disabled.", body = schemas::OperatorDestinationDoc)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn disable_destination(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    destinations::set_disabled_in(&state, OPERATOR_TENANT, &id, true).await
}

/// `GET /operator-events/events`: the 100 most recent operator events, newest first (the
/// SDK sends no query; `topic`, `time[…]` and `limit` are accepted as in `GET /events`).
#[utoipa::path(
    get,
    path = "/operator-events/events",
    tag = "Operator events",
    operation_id = "listOperatorEvents",
    summary = "List operator events",
    params(("topic" = Option<String>, Query), ("time[gte]" = Option<String>, Query, format = DateTime, description = "At or after this instant."), ("time[lt]" = Option<String>, Query, format = DateTime, description = "Before this instant."), ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "A page of operator events.", body = schemas::EventPaginatedResult)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn list_events(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let params = Query::parse(raw.as_deref());
    query::order_by(&params, "time")?;
    let page = query::page(&params, 100, 1000)?;
    let (limit, dir) = (page.limit, page.dir);
    let q = EventQuery {
        ids: params.list("id"),
        tenant_ids: vec![OPERATOR_TENANT.to_string()],
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

/// An operator event by id; 404 for any other event.
async fn load_event(state: &SharedState, id: &str) -> Result<herald_store::StoredEvent, ApiError> {
    state
        .engine
        .store()
        .get_event(OPERATOR_TENANT, id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))
}

/// `GET /operator-events/events/{id}`.
#[utoipa::path(
    get,
    path = "/operator-events/events/{event_id}",
    tag = "Operator events",
    operation_id = "getOperatorEvent",
    summary = "Get an operator event",
    params(("event_id" = String, Path, description = "The event id.", example = "evt_example")),
    responses((status = 200, description = "The event.", body = schemas::Event)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn get_event(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(wire::event(&load_event(&state, &id).await?)))
}

/// `GET /operator-events/events/{id}/attempts`: its 100 most recent attempts, newest first.
#[utoipa::path(
    get,
    path = "/operator-events/events/{event_id}/attempts",
    tag = "Operator events",
    operation_id = "listOperatorEventAttempts",
    summary = "List an operator event's attempts",
    params(("event_id" = String, Path, description = "The event id.", example = "evt_example")),
    responses((status = 200, description = "A page of attempts.", body = schemas::AttemptPaginatedResult)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn list_event_attempts(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    load_event(&state, &id).await?;
    let params = Query::parse(raw.as_deref());
    let mut q = attempts::attempt_query(&params)?;
    q.tenant_ids = vec![OPERATOR_TENANT.to_string()];
    q.event_ids = vec![id];
    attempts::list_page(&state, q, attempts::Includes::parse(&params)).await
}

/// `GET /operator-events/attempts`: `event_id`, `destination_id`, `status`, `topic`,
/// `time[gte|gt|lte|lt]`, `limit` (default 100).
#[utoipa::path(
    get,
    path = "/operator-events/attempts",
    tag = "Operator events",
    operation_id = "listOperatorAttempts",
    summary = "List operator attempts",
    params(("destination_id" = Option<String>, Query), ("event_id" = Option<String>, Query, description = "Only attempts of this event."), ("status" = Option<schemas::AttemptStatus>, Query, description = "Only this outcome."), ("topic" = Option<String>, Query, description = "Only this topic."), ("time[gte]" = Option<String>, Query, format = DateTime, description = "At or after this instant."), ("time[lt]" = Option<String>, Query, format = DateTime, description = "Before this instant."), ("limit" = Option<u32>, Query, description = "Page size."), ("next" = Option<String>, Query, description = "Cursor of the next page."), ("prev" = Option<String>, Query, description = "Cursor of the previous page."), ("dir" = Option<schemas::Dir>, Query, description = "Sort direction."), ("include" = Option<String>, Query, description = "`event`, `event.data`, `response_data` or `destination`, comma-separated.")),
    responses((status = 200, description = "A page of attempts.", body = schemas::AttemptPaginatedResult)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn list_attempts(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let params = Query::parse(raw.as_deref());
    let mut q = attempts::attempt_query(&params)?;
    q.tenant_ids = vec![OPERATOR_TENANT.to_string()];
    attempts::list_page(&state, q, attempts::Includes::parse(&params)).await
}

/// `GET /operator-events/attempts/{id}`.
#[utoipa::path(
    get,
    path = "/operator-events/attempts/{attempt_id}",
    tag = "Operator events",
    operation_id = "getOperatorAttempt",
    summary = "Get an operator attempt",
    params(("attempt_id" = String, Path, description = "The attempt id."), ("include" = Option<String>, Query, description = "`event`, `event.data`, `response_data` or `destination`, comma-separated.")),
    responses((status = 200, description = "The attempt.", body = schemas::Attempt)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn get_attempt(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let params = Query::parse(raw.as_deref());
    let attempt = state
        .engine
        .store()
        .get_attempt(&id)
        .await?
        .filter(|a| a.tenant_id == OPERATOR_TENANT)
        .ok_or_else(|| ApiError::not_found("attempt"))?;
    let mut v = attempts::render(
        &state,
        std::slice::from_ref(&attempt),
        attempts::Includes::parse(&params),
    )
    .await?;
    Ok(Json(v.pop().unwrap_or(Value::Null)))
}

/// `POST /operator-events/retry` `{event_id, destination_id}`: one more delivery of an
/// operator event to an operator destination; `200 {"success": true}`. 404 when either does
/// not exist; 422 when the destination is disabled, does not subscribe to the event, or never
/// had an attempt for it.
#[utoipa::path(
    post,
    path = "/operator-events/retry",
    tag = "Operator events",
    operation_id = "retryOperatorEvent",
    summary = "Retry an operator event",
    request_body = schemas::RetryRequest,
    responses((status = 200, description = "A manual delivery was queued.", body = schemas::SuccessResponse), (status = 404, description = "The event or the destination does not exist.", body = schemas::ApiErrorResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn retry(
    State(state): State<SharedState>,
    caller: Caller,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let obj = body.object(true)?;
    let mut f = Fields::new(&obj);
    let event_id = f.required_string("event_id");
    let destination_id = f.required_string("destination_id");
    let problems = f.problems;
    let (Some(event_id), Some(destination_id)) = (event_id, destination_id) else {
        return Err(problems
            .finish()
            .err()
            .unwrap_or_else(|| ApiError::invalid("body", "incomplete request")));
    };
    let event = load_event(&state, &event_id).await?;
    let destination = load_destination(&state, OPERATOR_TENANT, &destination_id).await?;
    if !destination.is_enabled() {
        return Err(ApiError::invalid(
            "destination_id",
            format!("destination {destination_id:?} is disabled; enable it before retrying"),
        ));
    }
    if !herald_core::operator::subscribes(
        &destination.topics,
        destination.filter.as_ref(),
        &event.event,
    ) {
        return Err(ApiError::invalid(
            "destination_id",
            format!(
                "destination {destination_id:?} does not subscribe to topic {:?}",
                event.event.topic
            ),
        ));
    }
    let tried = state
        .engine
        .store()
        .list_attempts(&herald_store::AttemptQuery {
            tenant_ids: vec![OPERATOR_TENANT.to_string()],
            event_ids: vec![event_id.clone()],
            destination_ids: vec![destination_id.clone()],
            page: herald_store::PageRequest {
                limit: 1,
                ..Default::default()
            },
            ..Default::default()
        })
        .await?;
    if tried.models.is_empty() {
        return Err(ApiError::invalid(
            "destination_id",
            format!("destination {destination_id:?} has no attempt for event {event_id:?} yet"),
        ));
    }
    match state.engine.retry(&event, &destination).await {
        Ok(()) => Ok(Json(json!({ "success": true }))),
        Err(herald_engine::RetryError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::invalid("destination_id", e.to_string())),
    }
}

//! Attempts: `GET /attempts`, `GET /attempts/{id}`, and the same scoped to one destination
//! under `/tenants/{t}/destinations/{d}/attempts`.
//!
//! `include` adds related records: `event` (summary), `event.data` (with payload),
//! `response_data`, `destination`. Without `include=response_data` the response data is
//! omitted. Unknown include values are ignored.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use herald_core::{Attempt, AttemptStatus, Destination};
use herald_store::{AttemptQuery, StoredEvent};
use serde_json::{Value, json};

use super::{Params, load_destination, tenant_scope};
use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::query::{self, Params as Query};
use crate::wire;

/// Which related records to embed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Includes {
    event: bool,
    event_data: bool,
    response_data: bool,
    destination: bool,
}

impl Includes {
    pub(crate) fn parse(params: &Query) -> Self {
        let mut inc = Includes::default();
        for v in params.list_split("include") {
            match v.as_str() {
                "event" => inc.event = true,
                "event.data" => inc.event_data = true,
                "response_data" => inc.response_data = true,
                "destination" => inc.destination = true,
                _ => {}
            }
        }
        inc
    }
}

/// Renders attempts with their includes, loading each related record once.
pub(crate) async fn render(
    state: &SharedState,
    attempts: &[Attempt],
    inc: Includes,
) -> Result<Vec<Value>, ApiError> {
    let store = state.engine.store();
    // Ids are unique per tenant: related records are keyed by (tenant, id).
    let mut events: HashMap<(String, String), Option<StoredEvent>> = HashMap::new();
    let mut destinations: HashMap<(String, String), Option<Destination>> = HashMap::new();
    let mut out = Vec::with_capacity(attempts.len());
    for a in attempts {
        let mut m = wire::attempt(a, inc.response_data);
        if inc.event || inc.event_data {
            let key = (a.tenant_id.clone(), a.event_id.clone());
            if !events.contains_key(&key) {
                let e = store.get_event(&a.tenant_id, &a.event_id).await?;
                events.insert(key.clone(), e);
            }
            let v = match events.get(&key).and_then(Option::as_ref) {
                Some(e) if inc.event_data => wire::event_full(&e.event, Some(&a.destination_id)),
                Some(e) => wire::event_summary(&e.event, Some(&a.destination_id)),
                None => Value::Null,
            };
            m.insert("event".into(), v);
        }
        if inc.destination {
            let key = (a.tenant_id.clone(), a.destination_id.clone());
            if !destinations.contains_key(&key) {
                let d = store
                    .get_destination(&a.tenant_id, &a.destination_id)
                    .await?;
                destinations.insert(key.clone(), d);
            }
            let v = match destinations.get(&key).and_then(Option::as_ref) {
                Some(d) => {
                    wire::destination(state.engine.registry(), d, state.engine.clock().now())
                }
                None => Value::Null,
            };
            m.insert("destination".into(), v);
        }
        out.push(Value::Object(m));
    }
    Ok(out)
}

/// The filters shared by both list endpoints.
pub(crate) fn attempt_query(params: &Query) -> Result<AttemptQuery, ApiError> {
    query::order_by(params, "time")?;
    let status = match params.get("status") {
        None => None,
        Some(s) => Some(AttemptStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "status",
                format!("must be \"success\" or \"failed\", got {s:?}"),
            )
        })?),
    };
    Ok(AttemptQuery {
        tenant_ids: params.list("tenant_id"),
        event_ids: params.list("event_id"),
        destination_ids: params.list("destination_id"),
        destination_types: params.list("destination_type"),
        status,
        topics: params.list("topic"),
        time: query::time_range(params, "time")?,
        page: query::page(params, 100, 1000)?,
    })
}

pub(crate) async fn list_page(
    state: &SharedState,
    q: AttemptQuery,
    inc: Includes,
) -> Result<Json<Value>, ApiError> {
    let (limit, dir) = (q.page.limit, q.page.dir);
    let page = state.engine.store().list_attempts(&q).await?;
    Ok(Json(json!({
        "models": render(state, &page.models, inc).await?,
        "pagination": wire::pagination("time", dir, limit, page.next, page.prev),
    })))
}

/// `GET /attempts`: a tenant token sees only its tenant's attempts.
#[utoipa::path(
    get,
    path = "/attempts",
    tag = "Attempts",
    operation_id = "listAttempts",
    summary = "List attempts",
    params(("tenant_id" = Option<String>, Query), ("destination_id" = Option<String>, Query), ("destination_type" = Option<String>, Query), ("event_id" = Option<String>, Query, description = "Only attempts of this event."), ("status" = Option<schemas::AttemptStatus>, Query, description = "Only this outcome."), ("topic" = Option<String>, Query, description = "Only this topic."), ("time[gte]" = Option<String>, Query, format = DateTime, description = "At or after this instant."), ("time[lt]" = Option<String>, Query, format = DateTime, description = "Before this instant."), ("limit" = Option<u32>, Query, description = "Page size."), ("next" = Option<String>, Query, description = "Cursor of the next page."), ("prev" = Option<String>, Query, description = "Cursor of the previous page."), ("dir" = Option<schemas::Dir>, Query, description = "Sort direction."), ("include" = Option<String>, Query, description = "`event`, `event.data`, `response_data` or `destination`, comma-separated.")),
    responses((status = 200, description = "A page of attempts.", body = schemas::AttemptPaginatedResult)),
)]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Query::parse(raw.as_deref());
    let mut q = attempt_query(&params)?;
    if let Some(t) = caller.tenant() {
        q.tenant_ids = vec![t.to_string()];
    }
    list_page(&state, q, Includes::parse(&params)).await
}

/// `GET /attempts/{id}`: 404 when it belongs to another tenant than the token's, or than the
/// admin's `tenant_id` query parameter.
#[utoipa::path(
    get,
    path = "/attempts/{attempt_id}",
    tag = "Attempts",
    operation_id = "getAttempt",
    summary = "Get an attempt",
    params(("attempt_id" = String, Path, description = "The attempt id."), ("tenant_id" = Option<String>, Query), ("include" = Option<String>, Query, description = "`event`, `event.data`, `response_data` or `destination`, comma-separated.")),
    responses((status = 200, description = "The attempt.", body = schemas::Attempt)),
)]
pub async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    Params(attempt_id): Params<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Query::parse(raw.as_deref());
    let scope = caller
        .tenant()
        .or(params.get("tenant_id"))
        .map(str::to_string);
    let attempt = state
        .engine
        .store()
        .get_attempt(&attempt_id)
        .await?
        .filter(|a| scope.as_ref().is_none_or(|t| *t == a.tenant_id))
        .ok_or_else(|| ApiError::not_found("attempt"))?;
    let mut v = render(
        &state,
        std::slice::from_ref(&attempt),
        Includes::parse(&params),
    )
    .await?;
    Ok(Json(v.pop().unwrap_or(Value::Null)))
}

/// `GET /tenants/{t}/destinations/{d}/attempts`.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/destinations/{destination_id}/attempts",
    tag = "Attempts",
    operation_id = "listTenantDestinationAttempts",
    summary = "List a destination's attempts",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example"), ("event_id" = Option<String>, Query, description = "Only attempts of this event."), ("status" = Option<schemas::AttemptStatus>, Query, description = "Only this outcome."), ("topic" = Option<String>, Query, description = "Only this topic."), ("time[gte]" = Option<String>, Query, format = DateTime, description = "At or after this instant."), ("time[lt]" = Option<String>, Query, format = DateTime, description = "Before this instant."), ("limit" = Option<u32>, Query, description = "Page size."), ("next" = Option<String>, Query, description = "Cursor of the next page."), ("prev" = Option<String>, Query, description = "Cursor of the previous page."), ("dir" = Option<schemas::Dir>, Query, description = "Sort direction."), ("include" = Option<String>, Query, description = "`event`, `event.data`, `response_data` or `destination`, comma-separated.")),
    responses((status = 200, description = "A page of attempts.", body = schemas::AttemptPaginatedResult)),
)]
pub async fn list_for_destination(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, destination_id)): Params<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    load_destination(&state, &tenant_id, &destination_id).await?;
    let params = Query::parse(raw.as_deref());
    let mut q = attempt_query(&params)?;
    q.tenant_ids = vec![tenant_id];
    q.destination_ids = vec![destination_id];
    list_page(&state, q, Includes::parse(&params)).await
}

/// `GET /tenants/{t}/destinations/{d}/attempts/{a}`.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/destinations/{destination_id}/attempts/{attempt_id}",
    tag = "Attempts",
    operation_id = "getTenantDestinationAttempt",
    summary = "Get a destination's attempt",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example"), ("attempt_id" = String, Path, description = "The attempt id."), ("include" = Option<String>, Query, description = "`event`, `event.data`, `response_data` or `destination`, comma-separated.")),
    responses((status = 200, description = "The attempt.", body = schemas::Attempt)),
)]
pub async fn get_for_destination(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, destination_id, attempt_id)): Params<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    load_destination(&state, &tenant_id, &destination_id).await?;
    let params = Query::parse(raw.as_deref());
    let attempt = state
        .engine
        .store()
        .get_attempt(&attempt_id)
        .await?
        .filter(|a| a.tenant_id == tenant_id && a.destination_id == destination_id)
        .ok_or_else(|| ApiError::not_found("attempt"))?;
    let mut v = render(
        &state,
        std::slice::from_ref(&attempt),
        Includes::parse(&params),
    )
    .await?;
    Ok(Json(v.pop().unwrap_or(Value::Null)))
}

//! `POST /publish` (admin) and `POST /retry`.
//!
//! Publishing does not require the tenant (or a targeted `destination_id`) to exist, as in
//! Outpost: platforms publish for every customer and only those with matching destinations
//! receive anything, so an unknown tenant simply matches no destination. The answer says so
//! with `tenant_found: false` (an extension), and `publish.require_known_tenant` turns it
//! into a `404` for those who would rather learn about a mistyped tenant id.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::{Event, ids};
use herald_engine::{PublishError, RetryError};
use serde_json::{Value, json};

use crate::SharedState;
use crate::auth::Caller;
use crate::body::{Fields, JsonBody, Patch, kind};
use crate::error::ApiError;
use crate::openapi::schemas;

/// What is wrong with a value holding a control character.
const CONTROL_PROBLEM: &str =
    "contains a control character (CR, LF, NUL, …), which cannot travel in a header";

/// Whether `s` holds a control character (C0, DEL or C1).
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// `POST /publish`: 202 `{id, duplicate, destination_ids, tenant_found}` once the event is
/// durable; 404 for an unknown tenant when the engine requires known tenants.
#[utoipa::path(
    post,
    path = "/publish",
    tag = "Publish",
    operation_id = "publishEvent",
    summary = "Publish an event",
    request_body = schemas::PublishRequest,
    responses((status = 202, description = "Accepted: durably stored with its deliveries.", body = schemas::PublishResponse), (status = 404, description = "The tenant does not exist and `publish.require_known_tenant` is set.", body = schemas::ApiErrorResponse), (status = 409, description = "This tenant used the id for an event accepted before the idempotency window.", body = schemas::ApiErrorResponse)),
)]
pub async fn publish(
    State(state): State<SharedState>,
    caller: Caller,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Caller::Tenant(_) = caller {
        return Err(ApiError::forbidden(
            "publishing requires the admin API key or an API key with the publish scope",
        ));
    }
    let obj = body.object(true)?;
    let now = state.engine.clock().now();
    let mut f = Fields::new(&obj);
    let id = f
        .string("id")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| ids::new_id(ids::EVENT));
    let tenant_id = f.required_string("tenant_id");
    if tenant_id.as_deref() == Some(herald_core::operator::OPERATOR_TENANT) {
        f.problems.push(
            "tenant_id",
            "is reserved for operator events, which only Herald publishes",
        );
    }
    let destination_id = f.string("destination_id").filter(|s| !s.is_empty());
    let topic = f.string("topic").unwrap_or_default();
    if state.has_catalog() {
        if topic.is_empty() {
            f.problems
                .push("topic", "is required because a topic catalog is configured");
        } else if !state.in_catalog(&topic) {
            f.problems
                .push("topic", format!("{topic:?} is not in the topic catalog"));
        }
    }
    let time = match f.timestamp("time") {
        Patch::Set(t) => t,
        Patch::Absent | Patch::Null => now,
    };
    let eligible_for_retry = f.boolean("eligible_for_retry").unwrap_or(true);
    let metadata = match f.string_map("metadata") {
        Patch::Set(m) => m,
        Patch::Absent | Patch::Null => Default::default(),
    };
    let data = match f.raw("data") {
        Some(d @ Value::Object(_)) => Some(d.clone()),
        None | Some(Value::Null) => {
            f.problems.push("data", "is required");
            None
        }
        Some(other) => {
            f.problems.push(
                "data",
                format!("must be a JSON object, got {}", kind(other)),
            );
            None
        }
    };
    // These travel in headers, attributes and properties of every protocol: a control
    // character would be dropped there (or split a header), so it is refused here.
    for (field, value) in [
        ("id", Some(id.as_str())),
        ("tenant_id", tenant_id.as_deref()),
        ("destination_id", destination_id.as_deref()),
        ("topic", Some(topic.as_str())),
    ] {
        if let Some(v) = value
            && has_control(v)
        {
            f.problems.push(field, CONTROL_PROBLEM);
        }
    }
    for (k, v) in &metadata {
        if has_control(k) {
            f.problems.push(format!("metadata.{}", k.escape_debug()), "the key contains a control character (CR, LF, NUL, …), which cannot travel in a header");
        } else if has_control(v) {
            f.problems.push(format!("metadata.{k}"), CONTROL_PROBLEM);
        }
    }
    let problems = f.problems;
    let (Some(tenant_id), Some(data)) = (tenant_id, data) else {
        return Err(problems
            .finish()
            .err()
            .unwrap_or_else(|| ApiError::invalid("body", "incomplete event")));
    };
    problems.finish()?;
    caller.check_tenant(&tenant_id)?;
    let event = Event {
        id,
        tenant_id,
        destination_id,
        topic,
        time,
        metadata,
        data,
        eligible_for_retry,
    };
    match state.engine.publish(event).await {
        Ok(p) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "id": p.id,
                "duplicate": p.duplicate,
                "destination_ids": p.destination_ids,
                "tenant_found": p.tenant_found,
            })),
        )),
        Err(PublishError::IdTaken(id)) => Err(ApiError::conflict(format!(
            "this tenant already has an event with id {id:?}, accepted before the idempotency window; publish it under a new id"
        ))),
        Err(PublishError::UnknownTenant(_)) => Err(ApiError::not_found("tenant")),
        Err(PublishError::Store(e)) => Err(e.into()),
    }
}

/// `POST /retry` `{event_id, destination_id}`: queues one manual attempt; 202.
/// The event must be visible to the caller (404 otherwise) and the destination must belong to
/// the event's tenant (404), be enabled and subscribe to the event's topic (400). Event ids
/// are unique per tenant: an admin may add `tenant_id` (an extension), and must when several
/// tenants use the id.
#[utoipa::path(
    post,
    path = "/retry",
    tag = "Publish",
    operation_id = "retryEvent",
    summary = "Retry an event to a destination",
    request_body = schemas::RetryRequest,
    responses((status = 202, description = "A manual delivery was queued.", body = schemas::SuccessResponse), (status = 404, description = "The event or the destination does not exist.", body = schemas::ApiErrorResponse), (status = 422, description = "An admin named no `tenant_id` and several tenants use the event id.", body = schemas::ApiErrorResponse)),
)]
pub async fn retry(
    State(state): State<SharedState>,
    caller: Caller,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let obj = body.object(true)?;
    let mut f = Fields::new(&obj);
    let event_id = f.required_string("event_id");
    let destination_id = f.required_string("destination_id");
    let tenant_id = f.string("tenant_id");
    let problems = f.problems;
    let (Some(event_id), Some(destination_id)) = (event_id, destination_id) else {
        return Err(problems
            .finish()
            .err()
            .unwrap_or_else(|| ApiError::invalid("body", "incomplete request")));
    };
    let store = state.engine.store();
    if let (Some(own), Some(named)) = (caller.tenant(), tenant_id.as_deref())
        && own != named
    {
        return Err(ApiError::not_found("event"));
    }
    let scope = caller.tenant().or(tenant_id.as_deref());
    let event = super::find_event(&state, scope, &event_id).await?;
    let destination = store
        .get_destination(&event.event.tenant_id, &destination_id)
        .await?
        .ok_or_else(|| ApiError::not_found("destination"))?;
    match state.engine.retry(&event, &destination).await {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({ "success": true })))),
        Err(
            e @ (RetryError::Disabled(_)
            | RetryError::Expired(_)
            | RetryError::TopicMismatch { .. }),
        ) => Err(ApiError::bad_request(e.to_string())),
        Err(RetryError::Store(e)) => Err(e.into()),
    }
}

//! `POST /publish` (admin), `POST /publish/batch` (extension) and `POST /retry`.
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
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::SharedState;
use crate::auth::Caller;
use crate::body::{BatchBody, Fields, JsonBody, Patch, kind};
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
    let event = parse_event(&state, &obj, now, "")?;
    caller.check_tenant(&event.tenant_id)?;
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
        Err(e) => Err(publish_error(e)),
    }
}

/// The answer to a refused publish (also one refused event of a batch).
fn publish_error(e: PublishError) -> ApiError {
    match e {
        PublishError::IdTaken(id) => ApiError::conflict(format!(
            "this tenant already has an event with id {id:?}, accepted before the idempotency window; publish it under a new id"
        )),
        PublishError::UnknownTenant(_) => ApiError::not_found("tenant"),
        PublishError::Store(e) => e.into(),
    }
}

/// Reads one publish request; every problem names its field as `{prefix}{field}`
/// (`events[3].topic` in a batch). A 422 lists them all.
fn parse_event(
    state: &SharedState,
    obj: &Map<String, Value>,
    now: Timestamp,
    prefix: &str,
) -> Result<Event, ApiError> {
    let field = |k: &str| format!("{prefix}{k}");
    let mut f = Fields::with_prefix(obj, prefix);
    let id = f
        .string("id")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| ids::new_id(ids::EVENT));
    let tenant_id = f.required_string("tenant_id");
    if tenant_id.as_deref() == Some(herald_core::operator::OPERATOR_TENANT) {
        f.problems.push(
            field("tenant_id"),
            "is reserved for operator events, which only Herald publishes",
        );
    }
    let destination_id = f.string("destination_id").filter(|s| !s.is_empty());
    let topic = f.string("topic").unwrap_or_default();
    if state.has_catalog() {
        if topic.is_empty() {
            f.problems.push(
                field("topic"),
                "is required because a topic catalog is configured",
            );
        } else if !state.in_catalog(&topic) {
            f.problems.push(
                field("topic"),
                format!("{topic:?} is not in the topic catalog"),
            );
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
            f.problems.push(field("data"), "is required");
            None
        }
        Some(other) => {
            f.problems.push(
                field("data"),
                format!("must be a JSON object, got {}", kind(other)),
            );
            None
        }
    };
    // These travel in headers, attributes and properties of every protocol: a control
    // character would be dropped there (or split a header), so it is refused here.
    for (name, value) in [
        ("id", Some(id.as_str())),
        ("tenant_id", tenant_id.as_deref()),
        ("destination_id", destination_id.as_deref()),
        ("topic", Some(topic.as_str())),
    ] {
        if let Some(v) = value
            && has_control(v)
        {
            f.problems.push(field(name), CONTROL_PROBLEM);
        }
    }
    for (k, v) in &metadata {
        if has_control(k) {
            f.problems.push(format!("{}.{}", field("metadata"), k.escape_debug()), "the key contains a control character (CR, LF, NUL, …), which cannot travel in a header");
        } else if has_control(v) {
            f.problems
                .push(format!("{}.{k}", field("metadata")), CONTROL_PROBLEM);
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
    Ok(Event {
        id,
        tenant_id,
        destination_id,
        topic,
        time,
        metadata,
        data,
        eligible_for_retry,
    })
}

/// Most events in one `POST /publish/batch`.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// `POST /publish/batch` `{"events": [<publish body>, …]}`: 202 `{"results": […]}` once every
/// accepted event is durable, one result per event in order. The accepted events of a request
/// are committed in one transaction; an event refused on its own (invalid, its id taken, an
/// unknown tenant with `publish.require_known_tenant`) gets its error in its place and does
/// not stop the others. An id repeated inside the request is a duplicate of its first use.
#[utoipa::path(
    post,
    path = "/publish/batch",
    tag = "Publish",
    operation_id = "publishEventBatch",
    summary = "Publish up to 1,000 events at once",
    description = "Each element of `events` is exactly what `POST /publish` accepts. The \
        answer holds one result per event, in order: the single publish's answer plus its \
        `index`, or that event's `error` in the error shape (its status, message and the \
        `events[i].field: problem` lines). Every accepted event is committed in one \
        transaction before the 202, which is given even when every event was refused. An id \
        repeated inside the request is reported as a duplicate of its first occurrence.",
    request_body = schemas::PublishBatchRequest,
    responses(
        (status = 202, description = "Every accepted event is durably stored with its deliveries; each result says what became of its event.", body = schemas::PublishBatchResponse),
        (status = 400, description = "The body is not JSON, or is empty.", body = schemas::ApiErrorResponse),
        (status = 403, description = "A tenant token, a key without the `publish` scope, or a tenant-bound key naming another tenant in any event (nothing is stored).", body = schemas::ApiErrorResponse),
        (status = 413, description = "The body is larger than `max_batch_body_bytes`.", body = schemas::ApiErrorResponse),
        (status = 422, description = "The body is not an object, or `events` is missing, not an array, empty or longer than 1,000.", body = schemas::ApiErrorResponse),
    ),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn publish_batch(
    State(state): State<SharedState>,
    caller: Caller,
    BatchBody(body): BatchBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Caller::Tenant(_) = caller {
        return Err(ApiError::forbidden(
            "publishing requires the admin API key or an API key with the publish scope",
        ));
    }
    let obj = body.object(true)?;
    let events = match obj.get("events") {
        None | Some(Value::Null) => return Err(ApiError::invalid("events", "is required")),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ApiError::invalid(
                "events",
                format!("expected an array of events, got {}", kind(other)),
            ));
        }
    };
    if events.is_empty() {
        return Err(ApiError::invalid("events", "must hold at least one event"));
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::invalid(
            "events",
            format!(
                "holds {} events; one request takes at most {MAX_BATCH_EVENTS}",
                events.len()
            ),
        ));
    }
    let now = state.engine.clock().now();
    let parsed: Vec<Result<Event, ApiError>> = events
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(o) => parse_event(&state, o, now, &format!("events[{i}].")),
            other => Err(ApiError::invalid(
                &format!("events[{i}]"),
                format!("expected a JSON object, got {}", kind(other)),
            )),
        })
        .collect();
    // A key bound to one tenant publishing for another is a mistake in the caller, not in one
    // event: nothing is stored.
    for (i, e) in parsed.iter().enumerate() {
        if let Ok(e) = e
            && let Err(refused) = caller.check_tenant(&e.tenant_id)
        {
            return Err(ApiError::forbidden(format!(
                "events[{i}].tenant_id: {}",
                refused.message()
            )));
        }
    }
    let mut valid = Vec::with_capacity(parsed.len());
    let mut results: Vec<Option<Value>> = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(e) => {
                valid.push(e);
                results.push(None);
            }
            Err(e) => results.push(Some(json!({ "index": i, "error": e.into_body() }))),
        }
    }
    let mut published = state.engine.publish_batch(valid).await?.into_iter();
    let results: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(refused) => refused,
            None => match published.next() {
                Some(Ok(p)) => json!({
                    "index": i,
                    "id": p.id,
                    "duplicate": p.duplicate,
                    "destination_ids": p.destination_ids,
                    "tenant_found": p.tenant_found,
                }),
                Some(Err(e)) => json!({ "index": i, "error": publish_error(e).into_body() }),
                // The engine answers every event it is given.
                None => json!({ "index": i, "error": ApiError::internal("publish batch answered fewer events than it was given").into_body() }),
            },
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "results": results }))))
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

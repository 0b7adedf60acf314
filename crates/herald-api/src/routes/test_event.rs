//! Herald extension: send a test event to one destination.
//!
//! `POST /tenants/{t}/destinations/{d}/test` with an optional body `{"topic": "…"}` publishes
//! the topic's sample payload from the topic catalog, aimed at that destination only, and
//! answers `202 {"id": "<event id>", "destination_ids": [...]}`. Without a topic, the first
//! subscribed topic that has a sample is used (for `*`, the first catalog topic with one).
//! The event carries the metadata `test: "true"`, which is how the events list and the portal
//! tell test events apart (and what receivers see among the metadata headers).
//!
//! Refusals, each naming the problem: a disabled destination (400); a topic that is not in the
//! catalog, has no sample, is not subscribed, or whose sample the destination's filter rejects
//! (422). Tenant tokens may call it; it is not a general publish for tenants, since the payload
//! always comes from the operator's catalog.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::{Event, Topics, ids, topic};
use herald_engine::PublishError;
use serde_json::{Value, json};

use super::{Params, load_destination, tenant_scope};
use crate::auth::Caller;
use crate::body::{Fields, JsonBody};
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::{AppState, SharedState};

/// The metadata key (value `"true"`) that marks a test event.
pub const TEST_METADATA_KEY: &str = "test";

/// The catalog sample of `name`, when it has one (a JSON object).
fn sample<'a>(state: &'a AppState, name: &str) -> Option<&'a Value> {
    state
        .config
        .topics
        .iter()
        .find(|t| t.name == name)
        .map(|t| &t.sample)
        .filter(|s| s.is_object())
}

/// The default topic of a test event: the first subscribed topic with a catalog sample.
fn default_topic(state: &AppState, topics: &Topics) -> Option<String> {
    let catalog = &state.config.topics;
    let with_sample = |name: &str| sample(state, name).is_some();
    match topics {
        Topics::All => catalog
            .iter()
            .find(|t| with_sample(&t.name))
            .map(|t| t.name.clone()),
        Topics::List(list) => list.iter().find_map(|t| {
            if t.contains('*') {
                catalog
                    .iter()
                    .find(|c| topic::pattern_matches(t, &c.name) && with_sample(&c.name))
                    .map(|c| c.name.clone())
            } else {
                with_sample(t).then(|| t.clone())
            }
        }),
    }
}

/// `POST /tenants/{t}/destinations/{d}/test`.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/destinations/{destination_id}/test",
    tag = "Destinations",
    operation_id = "testTenantDestination",
    summary = "Send a test event",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    request_body = schemas::TestEventRequest,
    responses((status = 202, description = "A test event was published to this destination.", body = schemas::TestEventResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn send(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    let obj = body.object(false)?;
    let d = load_destination(&state, &tenant_id, &id).await?;
    let mut f = Fields::new(&obj);
    let asked = f.string("topic").filter(|t| !t.is_empty());
    for key in obj.keys() {
        if key != "topic" {
            f.problems
                .push(key, "is not a test event option (only topic is)");
        }
    }
    f.problems.finish()?;
    if !d.is_enabled() {
        return Err(ApiError::bad_request(format!(
            "destination {id:?} is disabled; enable it before sending a test event"
        )));
    }
    if d.is_expired(state.engine.clock().now()) {
        return Err(ApiError::bad_request(format!(
            "destination {id:?} has expired; renew it before sending a test event"
        )));
    }
    let topic = match asked {
        Some(t) => {
            if !state.in_catalog(&t) {
                return Err(ApiError::invalid(
                    "topic",
                    format!("{t:?} is not in the topic catalog"),
                ));
            }
            if sample(&state, &t).is_none() {
                return Err(ApiError::invalid(
                    "topic",
                    format!("{t:?} has no sample payload in the topic catalog"),
                ));
            }
            if !d.topics.matches(&t) {
                return Err(ApiError::invalid(
                    "topic",
                    format!("destination {id:?} does not subscribe to {t:?}"),
                ));
            }
            t
        }
        None => default_topic(&state, &d.topics).ok_or_else(|| {
            ApiError::invalid(
                "topic",
                "none of this destination's topics has a sample payload in the topic catalog",
            )
        })?,
    };
    let data = sample(&state, &topic).cloned().unwrap_or_else(|| json!({}));
    let event = Event {
        id: ids::new_id(ids::EVENT),
        tenant_id,
        destination_id: Some(d.id.clone()),
        topic: topic.clone(),
        time: state.engine.clock().now(),
        metadata: BTreeMap::from([(TEST_METADATA_KEY.to_string(), "true".to_string())]),
        data,
        eligible_for_retry: true,
    };
    if !d.accepts(&event) {
        return Err(ApiError::invalid(
            "topic",
            format!("the sample payload of {topic:?} does not match this destination's filter"),
        ));
    }
    match state.engine.publish(event).await {
        Ok(p) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": p.id, "topic": topic, "destination_ids": p.destination_ids })),
        )),
        Err(PublishError::IdTaken(id)) => Err(ApiError::conflict(format!(
            "an event with id {id:?} already exists"
        ))),
        // The destination was just read, so its tenant exists (unless deleted meanwhile).
        Err(PublishError::UnknownTenant(_)) => Err(ApiError::not_found("tenant")),
        Err(PublishError::Store(e)) => Err(e.into()),
    }
}

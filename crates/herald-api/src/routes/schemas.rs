//! Destination type schemas and the topic catalog.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::Params;
use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::wire;

/// `GET /destination-types`: every type this binary was built with that tenants may use.
#[utoipa::path(
    get,
    path = "/destination-types",
    tag = "Schemas",
    operation_id = "listDestinationTypeSchemas",
    summary = "List destination types",
    responses((status = 200, description = "Every type tenants may use.", body = Vec<schemas::DestinationTypeSchema>)),
)]
pub async fn destination_types(State(state): State<SharedState>, _caller: Caller) -> Json<Value> {
    Json(Value::Array(
        state
            .engine
            .registry()
            .all()
            .filter(|t| t.tenant_usable())
            .map(|t| wire::type_spec(t.spec()))
            .collect(),
    ))
}

/// `GET /destination-types/{type}`.
#[utoipa::path(
    get,
    path = "/destination-types/{type}",
    tag = "Schemas",
    operation_id = "getDestinationTypeSchema",
    summary = "Get a destination type",
    params(("type" = String, Path, description = "The type key.", example = "webhook")),
    responses((status = 200, description = "The type's fields.", body = schemas::DestinationTypeSchema)),
)]
pub async fn destination_type(
    State(state): State<SharedState>,
    _caller: Caller,
    Params(kind): Params<String>,
) -> Result<Json<Value>, ApiError> {
    let t = state
        .engine
        .registry()
        .get(&kind)
        .filter(|t| t.tenant_usable())
        .ok_or_else(|| ApiError::not_found("destination type"))?;
    Ok(Json(wire::type_spec(t.spec())))
}

/// `GET /topics`: the catalog's topic names (empty when no catalog is configured).
#[utoipa::path(
    get,
    path = "/topics",
    tag = "Schemas",
    operation_id = "listTopics",
    summary = "List topics",
    responses((status = 200, description = "The catalog's topic names.", body = Vec<String>)),
)]
pub async fn topics(State(state): State<SharedState>, _caller: Caller) -> Json<Value> {
    Json(json!(
        state
            .config
            .topics
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
    ))
}

/// `GET /topics/catalog` (extension): names with descriptions and sample payloads.
#[utoipa::path(
    get,
    path = "/topics/catalog",
    tag = "Schemas",
    operation_id = "getTopicCatalog",
    summary = "Get the topic catalog",
    responses((status = 200, description = "Topics with descriptions and sample payloads.", body = Vec<schemas::TopicCatalogEntry>)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn topic_catalog(State(state): State<SharedState>, _caller: Caller) -> Json<Value> {
    Json(Value::Array(
        state
            .config
            .topics
            .iter()
            .map(|t| json!({ "name": t.name, "description": t.description, "sample": t.sample }))
            .collect(),
    ))
}

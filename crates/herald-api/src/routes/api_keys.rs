//! Scoped API keys (`admin` scope): create, list, get, revoke, and rotating the bootstrap
//! admin key. Checking them is [`crate::keys`]'s; which route needs which scope is
//! [`crate::auth::required_scope`]'s.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::ids;
use herald_store::ApiKey;
use serde_json::{Value, json};

use super::Params;
use crate::SharedState;
use crate::auth::{Caller, Scope};
use crate::body::{Fields, JsonBody, Patch};
use crate::error::ApiError;
use crate::keys::{self, BOOTSTRAP_ID};
use crate::openapi::schemas;
use crate::wire;

/// Longest accepted key name.
const MAX_NAME_LEN: usize = 255;

/// `POST /api-keys` `{name, scopes, tenant_id?, expires_at?}`: 201 with the key and its
/// `secret`, shown this once.
#[utoipa::path(
    post,
    path = "/api-keys",
    tag = "API keys",
    operation_id = "createApiKey",
    summary = "Create an API key",
    request_body = schemas::ApiKeyCreate,
    responses((status = 201, description = "The key, with its secret (shown this once).", body = schemas::ApiKeyCreated)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let obj = body.object(true)?;
    let now = state.engine.clock().now();
    let mut f = Fields::new(&obj);
    let name = f.required_string("name");
    if let Some(n) = &name
        && (n.len() > MAX_NAME_LEN || n.chars().any(char::is_control))
    {
        f.problems.push(
            "name",
            format!("must be at most {MAX_NAME_LEN} printable characters"),
        );
    }
    let mut scopes: Vec<Scope> = Vec::new();
    match f.raw("scopes") {
        Some(Value::Array(list)) if !list.is_empty() => {
            for (i, v) in list.iter().enumerate() {
                match v.as_str().map(|s| (s, Scope::parse(s))) {
                    Some((_, Some(sc))) => {
                        if !scopes.contains(&sc) {
                            scopes.push(sc);
                        }
                    }
                    Some((s, None)) => f.problems.push(
                        format!("scopes[{i}]"),
                        format!(
                            "{s:?} is not a scope; expected one of {}",
                            Scope::ALL.map(Scope::as_str).join(", ")
                        ),
                    ),
                    None => f.problems.push(
                        format!("scopes[{i}]"),
                        format!("expected a string, got {}", crate::body::kind(v)),
                    ),
                }
            }
        }
        None | Some(Value::Null) => f.problems.push("scopes", "is required"),
        Some(Value::Array(_)) => f.problems.push("scopes", "must not be empty"),
        Some(other) => f.problems.push(
            "scopes",
            format!(
                "expected an array of scopes, got {}",
                crate::body::kind(other)
            ),
        ),
    }
    let tenant_id = f.string("tenant_id").filter(|t| !t.is_empty());
    let expires_at = match f.timestamp("expires_at") {
        Patch::Set(t) if t <= now => {
            f.problems.push("expires_at", "must be in the future");
            None
        }
        Patch::Set(t) => Some(t),
        Patch::Absent | Patch::Null => None,
    };
    let problems = f.problems;
    let Some(name) = name else {
        return Err(problems
            .finish()
            .err()
            .unwrap_or_else(|| ApiError::invalid("name", "is required")));
    };
    problems.finish()?;
    if let Some(t) = &tenant_id
        && state.engine.store().get_tenant(t).await?.is_none()
    {
        return Err(ApiError::invalid(
            "tenant_id",
            format!("tenant {t:?} does not exist"),
        ));
    }
    let id = ids::new_id("key");
    let secret = keys::new_secret(&id);
    let key = ApiKey {
        id,
        name,
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        tenant_id,
        secret_hash: keys::hash_secret(&secret),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    state.engine.store().insert_api_key(&key).await?;
    state.auth.forget(&key.id);
    let mut out = wire::api_key(&key);
    out["secret"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /api-keys`: every key that is not revoked, oldest first, without secrets.
#[utoipa::path(
    get,
    path = "/api-keys",
    tag = "API keys",
    operation_id = "listApiKeys",
    summary = "List API keys",
    responses((status = 200, description = "The keys that are not revoked.", body = Vec<schemas::ApiKey>)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let all = state.engine.store().list_api_keys().await?;
    Ok(Json(Value::Array(all.iter().map(wire::api_key).collect())))
}

/// `GET /api-keys/{id}`: 404 when unknown or revoked.
#[utoipa::path(
    get,
    path = "/api-keys/{key_id}",
    tag = "API keys",
    operation_id = "getApiKey",
    summary = "Get an API key",
    params(("key_id" = String, Path, description = "The API key id.")),
    responses((status = 200, description = "The key.", body = schemas::ApiKey)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let key = state
        .engine
        .store()
        .get_api_key(&id)
        .await?
        .filter(|k| k.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found("api key"))?;
    Ok(Json(wire::api_key(&key)))
}

/// `DELETE /api-keys/{id}`: revokes the key; it is refused from then on, on every node.
#[utoipa::path(
    delete,
    path = "/api-keys/{key_id}",
    tag = "API keys",
    operation_id = "revokeApiKey",
    summary = "Revoke an API key",
    params(("key_id" = String, Path, description = "The API key id.")),
    responses((status = 200, description = "Revoked.", body = schemas::SuccessResponse), (status = 409, description = "The bootstrap key can only be rotated.", body = schemas::ApiErrorResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn revoke(
    State(state): State<SharedState>,
    caller: Caller,
    Params(id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    if id == BOOTSTRAP_ID {
        return Err(ApiError::conflict(
            "the bootstrap admin key cannot be revoked; replace it with POST /api/v1/api-keys/rotate-admin",
        ));
    }
    let now = state.engine.clock().now();
    let revoked = state.engine.store().revoke_api_key(&id, now).await?;
    state.auth.forget(&id);
    if !revoked {
        return Err(ApiError::not_found("api key"));
    }
    Ok(Json(json!({ "success": true })))
}

/// `POST /api-keys/rotate-admin`: a new bootstrap admin key, returned once; the previous one
/// (configured, generated or rotated) stops working on every node.
#[utoipa::path(
    post,
    path = "/api-keys/rotate-admin",
    tag = "API keys",
    operation_id = "rotateAdminKey",
    summary = "Rotate the admin key",
    responses((status = 201, description = "The new admin key, with its secret (shown this once).", body = schemas::ApiKeyCreated)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn rotate_admin(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let now = state.engine.clock().now();
    let secret = keys::new_admin_secret();
    let key = ApiKey {
        id: BOOTSTRAP_ID.into(),
        name: "bootstrap admin key".into(),
        scopes: vec![Scope::Admin.as_str().into()],
        tenant_id: None,
        secret_hash: keys::hash_secret(&secret),
        created_at: now,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    state.engine.store().replace_api_key(&key).await?;
    state.auth.forget(BOOTSTRAP_ID);
    tracing::info!("the bootstrap admin API key was rotated");
    let mut out = wire::api_key(&key);
    out["secret"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

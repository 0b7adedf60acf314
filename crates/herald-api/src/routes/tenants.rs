//! Tenants: list, upsert, get, delete, token and portal link.
//!
//! As in Outpost, a tenant token may read, upsert (update) and delete its own tenant; token
//! and portal links are admin-only.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use herald_store::TenantQuery;
use serde_json::{Value, json};

use super::{Params, tenant_scope};
use crate::SharedState;
use crate::auth::{self, Caller};
use crate::body::{Fields, JsonBody, Patch};
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::query::{self, Params as Query};
use crate::wire;

/// Longest accepted tenant id.
const MAX_ID_LEN: usize = 255;

/// `GET /tenants`: seek-paginated by creation time, with the total `count`. Operator only
/// (the admin key or a key with `read` and no tenant): a tenant token or tenant-bound key
/// gets 403.
#[utoipa::path(
    get,
    path = "/tenants",
    tag = "Tenants",
    operation_id = "listTenants",
    summary = "List tenants",
    params(("id" = Option<String>, Query, description = "Only these tenant ids."), ("limit" = Option<u32>, Query, description = "Page size."), ("next" = Option<String>, Query, description = "Cursor of the next page."), ("prev" = Option<String>, Query, description = "Cursor of the previous page."), ("dir" = Option<schemas::Dir>, Query, description = "Sort direction.")),
    responses((status = 200, description = "A page of tenants.", body = schemas::TenantPaginatedResult)),
)]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if caller.tenant().is_some() {
        return Err(ApiError::forbidden(
            "listing tenants requires the admin API key or an API key not bound to a tenant",
        ));
    }
    let params = Query::parse(raw.as_deref());
    let page = query::page(&params, 20, 100)?;
    let ids = params.list("id");
    let (limit, dir) = (page.limit, page.dir);
    let (page, count) = state
        .engine
        .store()
        .list_tenants(&TenantQuery { ids, page })
        .await?;
    Ok(Json(json!({
        "models": page.models.iter().map(wire::tenant).collect::<Vec<_>>(),
        "pagination": wire::pagination("created_at", dir, limit, page.next, page.prev),
        "count": count,
    })))
}

/// `PUT /tenants/{tenant_id}`: creates (201) or updates (200); the body `{metadata}` is
/// optional and replaces the stored metadata.
#[utoipa::path(
    put,
    path = "/tenants/{tenant_id}",
    tag = "Tenants",
    operation_id = "upsertTenant",
    summary = "Create or update a tenant",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    request_body = schemas::TenantUpsert,
    responses((status = 200, description = "Updated.", body = schemas::Tenant), (status = 201, description = "Created.", body = schemas::Tenant)),
)]
pub async fn upsert(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.check_tenant(&tenant_id)?;
    if tenant_id.trim().is_empty()
        || tenant_id.len() > MAX_ID_LEN
        || tenant_id.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "tenant_id",
            format!("must be 1 to {MAX_ID_LEN} printable characters"),
        ));
    }
    if tenant_id == herald_core::operator::OPERATOR_TENANT {
        return Err(ApiError::invalid(
            "tenant_id",
            "is reserved for operator events (see /api/v1/operator-events)",
        ));
    }
    let obj = body.object(false)?;
    let mut fields = Fields::new(&obj);
    let metadata = match fields.string_map("metadata") {
        Patch::Set(m) => Some(m),
        Patch::Absent | Patch::Null => None,
    };
    fields.problems.finish()?;
    let store = state.engine.store();
    let (tenant, created) = store
        .upsert_tenant(&tenant_id, metadata, state.engine.clock().now())
        .await?;
    let summary = if created {
        herald_core::TenantSummary {
            tenant,
            destinations_count: 0,
            topics: Vec::new(),
        }
    } else {
        store
            .get_tenant(&tenant_id)
            .await?
            .ok_or_else(|| ApiError::internal("tenant vanished right after upsert"))?
    };
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(wire::tenant(&summary))))
}

/// `GET /tenants/{tenant_id}`.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}",
    tag = "Tenants",
    operation_id = "getTenant",
    summary = "Get a tenant",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    responses((status = 200, description = "The tenant.", body = schemas::Tenant)),
)]
pub async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(wire::tenant(
        &tenant_scope(&state, &caller, &tenant_id).await?,
    )))
}

/// `DELETE /tenants/{tenant_id}`: removes the tenant and its destinations, cancelling their
/// pending deliveries.
#[utoipa::path(
    delete,
    path = "/tenants/{tenant_id}",
    tag = "Tenants",
    operation_id = "deleteTenant",
    summary = "Delete a tenant",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    responses((status = 200, description = "Deleted, with its destinations.", body = schemas::SuccessResponse)),
)]
pub async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    if !state
        .engine
        .store()
        .delete_tenant(&tenant_id, state.engine.clock().now())
        .await?
    {
        return Err(ApiError::not_found("tenant"));
    }
    state.engine.tenant_removed(&tenant_id);
    Ok(Json(json!({ "success": true })))
}

/// `POST /tenants/{tenant_id}/tokens/revoke` (admin): every tenant token issued so far stops
/// working, on every node (the generation is in the store and checked per request), and
/// portal sessions opened with them end. Tokens issued afterwards work.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/tokens/revoke",
    tag = "Tenants",
    operation_id = "revokeTenantTokens",
    summary = "Revoke every token of a tenant",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    responses((status = 200, description = "Tokens issued so far are refused from now on.", body = schemas::TokensRevoked)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn revoke_tokens(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let now = state.engine.clock().now();
    let Some(tenant) = state
        .engine
        .store()
        .revoke_tenant_tokens(&tenant_id, now)
        .await?
    else {
        return Err(ApiError::not_found("tenant"));
    };
    Ok(Json(json!({
        "success": true,
        "tenant_id": tenant_id,
        "revoked_at": wire::ts(tenant.tokens_revoked_at.unwrap_or(now)),
    })))
}

fn mint(state: &SharedState, tenant: &herald_core::Tenant) -> Result<String, ApiError> {
    if state.config.jwt_secret.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "tenant tokens are disabled: no JWT secret is configured",
        ));
    }
    Ok(auth::issue(
        &state.config.jwt_secret,
        &tenant.id,
        tenant.token_generation(),
        state.engine.clock().now(),
    ))
}

/// `GET /tenants/{tenant_id}/token` (admin): a 24-hour tenant token.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/token",
    tag = "Tenants",
    operation_id = "getTenantToken",
    summary = "Get a tenant token",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    responses((status = 200, description = "A tenant JWT.", body = schemas::TenantToken), (status = 501, description = "No JWT secret is configured.", body = schemas::ApiErrorResponse)),
)]
pub async fn token(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let tenant = tenant_scope(&state, &caller, &tenant_id).await?;
    let token = mint(&state, &tenant.tenant)?;
    Ok(Json(json!({ "token": token, "tenant_id": tenant_id })))
}

/// `GET /tenants/{tenant_id}/portal` (admin): a portal link carrying a tenant token;
/// `theme` (`light` / `dark`) is passed on, other values are ignored.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/portal",
    tag = "Tenants",
    operation_id = "getTenantPortalUrl",
    summary = "Get a portal link",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("theme" = Option<String>, Query, description = "`light` or `dark`.")),
    responses((status = 200, description = "Where to send the tenant.", body = schemas::PortalRedirect), (status = 501, description = "No JWT secret is configured.", body = schemas::ApiErrorResponse)),
)]
pub async fn portal(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let tenant = tenant_scope(&state, &caller, &tenant_id).await?;
    let token = mint(&state, &tenant.tenant)?;
    let params = Query::parse(raw.as_deref());
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("token", &token)
        .append_pair("tenant_id", &tenant_id);
    if let Some(theme @ ("light" | "dark")) = params.get("theme") {
        query.append_pair("theme", theme);
    }
    let base = &state.config.portal_url;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(Json(
        json!({ "redirect_url": format!("{base}{sep}{}", query.finish()), "tenant_id": tenant_id }),
    ))
}

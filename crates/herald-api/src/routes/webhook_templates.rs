//! CSV webhook templates (BalkanID's bulk format, docs/csv.md): pre-signed upload and
//! download URLs, and the two routes those URLs point at. The format and its mapping are
//! [`crate::templates`]'s.
//!
//! The URL routes carry no credentials: the URL's signature is the authorisation, decided
//! when it was handed out (`destinations:write` to upload, `read` to download, and whether
//! the caller may see tokens unmasked).

use std::io::{Seek, Write};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Params, tenant_scope};
use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::templates::{self, Grant, GrantError, Mapper, Op};

fn presign_disabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "pre-signed URLs are disabled: no JWT secret is configured",
    )
}

fn url_for(state: &SharedState, grant: &Grant) -> String {
    let portal = state.config.portal_url.trim_end_matches('/');
    let base = portal.strip_suffix("/portal").unwrap_or(portal);
    format!(
        "{base}/api/v1/webhook-templates/{}?{}",
        grant.op.as_str(),
        grant.query(&state.config.jwt_secret)
    )
}

async fn presign(
    state: SharedState,
    caller: Caller,
    tenant_id: String,
    op: Op,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    if state.config.jwt_secret.is_empty() {
        return Err(presign_disabled());
    }
    let grant = Grant::new(
        op,
        &tenant_id,
        caller.is_admin(),
        state.engine.clock().now(),
    );
    Ok(Json(json!({
        "url": url_for(&state, &grant),
        "expires_at": crate::wire::ts(jiff::Timestamp::from_second(grant.expires).unwrap_or_default()),
    })))
}

/// `POST /tenants/{t}/webhook-templates/upload-url`: `{url}` to `PUT` a CSV to, valid 15
/// minutes, once.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/webhook-templates/upload-url",
    tag = "Webhook templates",
    operation_id = "getTemplateUploadUrl",
    summary = "Get a CSV upload URL",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    responses((status = 200, description = "A pre-signed URL to `PUT` a CSV to, valid 15 minutes, once.", body = schemas::PresignedUrl), (status = 501, description = "No JWT secret is configured.", body = schemas::ApiErrorResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn upload_url(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    presign(state, caller, tenant_id, Op::Upload).await
}

/// `POST /tenants/{t}/webhook-templates/download-url`: `{url}` to `GET` the CSV from, valid 15
/// minutes, once.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/webhook-templates/download-url",
    tag = "Webhook templates",
    operation_id = "getTemplateDownloadUrl",
    summary = "Get a CSV download URL",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    responses((status = 200, description = "A pre-signed URL to `GET` the CSV from, valid 15 minutes, once.", body = schemas::PresignedUrl), (status = 501, description = "No JWT secret is configured.", body = schemas::ApiErrorResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn download_url(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
) -> Result<Json<Value>, ApiError> {
    presign(state, caller, tenant_id, Op::Download).await
}

/// Checks a pre-signed URL and spends its nonce.
async fn redeem(state: &SharedState, op: Op, query: Option<String>) -> Result<Grant, ApiError> {
    if state.config.jwt_secret.is_empty() {
        return Err(presign_disabled());
    }
    let now = state.engine.clock().now();
    let grant = Grant::verify(
        op,
        query.as_deref().unwrap_or(""),
        &state.config.jwt_secret,
        now,
    )
    .map_err(|e| match e {
        GrantError::Signature => ApiError::forbidden(e.to_string()),
        GrantError::Expired => ApiError::forbidden(e.to_string()),
    })?;
    let expires = jiff::Timestamp::from_second(grant.expires).unwrap_or(now);
    if !state
        .engine
        .store()
        .use_nonce(&grant.nonce, expires, now)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::GONE,
            "this URL was already used; ask for a new one",
        ));
    }
    if state
        .engine
        .store()
        .get_tenant(&grant.tenant_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(grant)
}

/// `PUT /webhook-templates/upload?…` (pre-signed): applies the CSV body, all or nothing, and
/// answers the report `{created, updated, unchanged, errors: [{line, column, message}]}` —
/// 200 when applied, 422 (and nothing applied) when any row is invalid.
#[utoipa::path(
    put,
    path = "/webhook-templates/upload",
    tag = "Webhook templates",
    operation_id = "uploadTemplates",
    summary = "Upload a CSV (pre-signed)",
    params(("tenant_id" = String, Query), ("expires" = String, Query), ("nonce" = String, Query), ("admin" = String, Query), ("signature" = String, Query)),
    request_body(content = String, content_type = "text/csv"),
    security(()),
    responses((status = 200, description = "Applied.", body = schemas::CsvImportReport), (status = 403, description = "A bad or expired signature.", body = schemas::ApiErrorResponse), (status = 404, description = "The URL's tenant no longer exists.", body = schemas::ApiErrorResponse), (status = 410, description = "This URL was already used.", body = schemas::ApiErrorResponse), (status = 422, description = "Refused rows; nothing was applied.", body = schemas::CsvImportReport), (status = 501, description = "No JWT secret is configured.", body = schemas::ApiErrorResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn upload(
    State(state): State<SharedState>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let grant = redeem(&state, Op::Upload, query).await?;
    let started = std::time::Instant::now();
    let file = spool(body).await?;
    let spooled = started.elapsed();
    let store = state.engine.store().clone();
    let existing = store
        .list_destinations(&grant.tenant_id)
        .await?
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect();
    let mapper = Arc::new(Mapper {
        tenant_id: grant.tenant_id.clone(),
        existing,
        registry: state.engine.registry().clone(),
        catalog: state.config.topics.iter().map(|t| t.name.clone()).collect(),
        signing_mode: state.engine.config().signing.mode,
        now: state.engine.clock().now(),
        max_lifetime: crate::routes::destinations::max_lifetime(&state),
    });
    let (check, file) = {
        let mapper = mapper.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            let checked = templates::check(&mapper, &mut file);
            (checked, file)
        })
        .await
        .map_err(ApiError::internal)?
    };
    let checked = started.elapsed();
    if check.error_count > 0 {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(check.report())));
    }
    let mut file = file;
    file.rewind().map_err(ApiError::internal)?;
    match store
        .import_destinations(templates::writes(mapper, file))
        .await
    {
        Ok(_) => {}
        Err(herald_store::StoreError::Conflict { id, .. }) => {
            let line = check.lines.get(&id).copied().unwrap_or(0);
            let refused = templates::Check {
                error_count: 1,
                errors: vec![templates::RowError {
                    line,
                    column: templates::COLUMNS[0].into(),
                    message: format!(
                        "destination id {id:?} was created in this tenant while the file was being imported; upload the file again"
                    ),
                }],
                ..Default::default()
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(refused.report())));
        }
        Err(e) => return Err(e.into()),
    }
    let written = started.elapsed();
    // The routing table is rebuilt only when the file changed something: rebuilding holds the
    // old table and the new one at once, so a no-op re-import must not pay for it.
    if check.created + check.updated > 0 {
        state.engine.reload_destinations().await?;
    }
    tracing::info!(
        tenant_id = %grant.tenant_id,
        created = check.created,
        updated = check.updated,
        unchanged = check.unchanged,
        spool_ms = spooled.as_millis() as u64,
        check_ms = (checked - spooled).as_millis() as u64,
        write_ms = (written - checked).as_millis() as u64,
        reload_ms = (started.elapsed() - written).as_millis() as u64,
        "imported webhook templates"
    );
    Ok((StatusCode::OK, Json(check.report())))
}

/// Writes the request body to an anonymous temporary file, refusing more than
/// [`templates::MAX_UPLOAD_BYTES`]; the file is read from its start afterwards.
async fn spool(body: Body) -> Result<std::fs::File, ApiError> {
    let mut file = tempfile::tempfile().map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut buf = Vec::with_capacity(1 << 20);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        total += chunk.len() as u64;
        if total > templates::MAX_UPLOAD_BYTES {
            return Err(ApiError::too_large(templates::MAX_UPLOAD_BYTES as usize));
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= 1 << 20 {
            file.write_all(&buf).map_err(ApiError::internal)?;
            buf.clear();
        }
    }
    file.write_all(&buf).map_err(ApiError::internal)?;
    file.rewind().map_err(ApiError::internal)?;
    Ok(file)
}

/// `GET /webhook-templates/download?…` (pre-signed): the tenant's template destinations as
/// `text/csv`, columns in the format's order, Auth Token masked unless the URL was handed to
/// an admin.
#[utoipa::path(
    get,
    path = "/webhook-templates/download",
    tag = "Webhook templates",
    operation_id = "downloadTemplates",
    summary = "Download the CSV (pre-signed)",
    params(("tenant_id" = String, Query), ("expires" = String, Query), ("nonce" = String, Query), ("admin" = String, Query), ("signature" = String, Query)),
    security(()),
    responses((status = 200, description = "The tenant's webhook destinations.", content_type = "text/csv", body = String), (status = 403, description = "A bad or expired signature.", body = schemas::ApiErrorResponse), (status = 404, description = "The URL's tenant no longer exists.", body = schemas::ApiErrorResponse), (status = 410, description = "This URL was already used.", body = schemas::ApiErrorResponse), (status = 501, description = "No JWT secret is configured.", body = schemas::ApiErrorResponse)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn download(
    State(state): State<SharedState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let grant = redeem(&state, Op::Download, query).await?;
    let all = state
        .engine
        .store()
        .list_destinations(&grant.tenant_id)
        .await?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(templates::COLUMNS)
        .map_err(ApiError::internal)?;
    for d in &all {
        if let Some(row) = templates::export_row(d, grant.admin) {
            w.write_record(&row).map_err(ApiError::internal)?;
        }
    }
    let bytes = w.into_inner().map_err(ApiError::internal)?;
    let name: String = grant
        .tenant_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"webhook-templates-{name}.csv\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

//! Herald's HTTP API, wire-compatible with the Outpost API v1 (`/api/v1`): tenants,
//! destinations, publish, retry, events, attempts, schemas, topics and metrics.
//!
//! This crate is the only one that knows JSON wire shapes: handlers read request bodies field
//! by field (`body`), turn domain records into the contract's shapes (`wire`), and answer
//! every failure in the contract's error shape ([`error::ApiError`]). It knows stores and
//! destination types only through the [`Engine`] it is given; it never delivers anything
//! itself.
//!
//! Map of the crate:
//! - [`auth`]: tenant JWTs, scopes and the route → scope table, the [`auth::Caller`] extractor;
//! - [`keys`]: checking credentials (bootstrap admin key, scoped API keys, tenant tokens);
//! - `query`: query strings in bracket / deepObject notation, pagination parameters;
//! - `body`: the JSON body extractor (size limit → 413, bad JSON → 400) and field readers;
//! - `wire`: response shapes, credential masking;
//! - `routes/*`: one module per resource;
//! - [`templates`]: the CSV webhook-template format, its mapping onto destinations, and
//!   pre-signed URLs;
//! - [`portal`]: the tenant portal (server-rendered HTML under `/portal`), a client of the
//!   routes above.

pub mod auth;
mod body;
pub mod error;
pub mod keys;
pub mod openapi;
pub mod portal;
mod query;
mod routes;
pub mod templates;
mod wire;

use std::fmt;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use herald_engine::Engine;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

/// Settings of the API.
#[derive(Clone)]
pub struct ApiConfig {
    /// The admin API key, sent as `Authorization: Bearer <key>`. Empty disables admin access.
    pub api_key: String,
    /// HS256 secret for tenant tokens. Empty disables tenant tokens (issuing and accepting).
    pub jwt_secret: Vec<u8>,
    /// The topic catalog. Empty means any topic is allowed.
    pub topics: Vec<TopicSpec>,
    /// Base URL of the tenant portal, used in `GET /tenants/{id}/portal`'s `redirect_url`,
    /// e.g. `http://localhost:3333/portal`.
    pub portal_url: String,
    /// Largest accepted request body in bytes; larger bodies get a 413.
    pub max_body_bytes: usize,
    /// Largest accepted body of `POST /publish/batch` (up to 1,000 events), in bytes.
    pub max_batch_body_bytes: usize,
    /// Herald's version, reported by `/healthz`.
    pub version: String,
    /// Tenant portal settings (branding, session cookies).
    pub portal: portal::PortalConfig,
}

impl ApiConfig {
    /// The default request body limit: 1 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// The default batch publish body limit: 8 MiB, room for 1,000 events of about 8 KB.
    pub const DEFAULT_MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            jwt_secret: Vec::new(),
            topics: Vec::new(),
            portal_url: "http://localhost:3333/portal".to_string(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_batch_body_bytes: Self::DEFAULT_MAX_BATCH_BODY_BYTES,
            version: env!("CARGO_PKG_VERSION").to_string(),
            portal: portal::PortalConfig::default(),
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs.
        f.debug_struct("ApiConfig")
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    "<unset>"
                } else {
                    "<redacted>"
                },
            )
            .field(
                "jwt_secret",
                &if self.jwt_secret.is_empty() {
                    "<unset>"
                } else {
                    "<redacted>"
                },
            )
            .field(
                "topics",
                &self
                    .topics
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("portal_url", &self.portal_url)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch_body_bytes", &self.max_batch_body_bytes)
            .field("version", &self.version)
            .field("portal", &self.portal)
            .finish()
    }
}

/// One entry of the topic catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Topic name, e.g. `user.created`.
    pub name: String,
    /// What the topic means.
    pub description: String,
    /// A sample `data` payload (used by test events and shown in the portal).
    pub sample: serde_json::Value,
}

/// What every handler can reach.
pub(crate) struct AppState {
    pub engine: Engine,
    pub config: ApiConfig,
    pub auth: keys::Authenticator,
    /// The OpenAPI document as JSON, set once the router is built.
    pub openapi: OnceLock<Arc<str>>,
}

impl AppState {
    /// Whether a topic catalog is configured.
    pub fn has_catalog(&self) -> bool {
        !self.config.topics.is_empty()
    }

    /// Whether `topic` is in the catalog.
    pub fn in_catalog(&self, topic: &str) -> bool {
        self.config.topics.iter().any(|t| t.name == topic)
    }

    /// The OpenAPI document (`openapi`), as JSON.
    pub fn openapi_json(&self) -> Arc<str> {
        self.openapi
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from("{}"))
    }
}

pub(crate) type SharedState = Arc<AppState>;

/// The whole API, every route under `/api/v1`, and the tenant portal under `/portal`.
pub fn router(engine: Engine, config: ApiConfig) -> Router {
    build(engine, config).0
}

/// [`router`], and the [`keys::Authenticator`] it checks credentials with, for routes served
/// beside it (`/metrics` needs the `metrics` scope).
pub fn build(engine: Engine, config: ApiConfig) -> (Router, keys::Authenticator) {
    let limit = config.max_body_bytes;
    let batch_limit = config.max_batch_body_bytes;
    let auth = keys::Authenticator::new(
        engine.store().clone(),
        engine.clock().clone(),
        &config.api_key,
        config.jwt_secret.clone(),
    );
    let state: SharedState = Arc::new(AppState {
        engine,
        config,
        auth: auth.clone(),
        openapi: OnceLock::new(),
    });
    use routes::*;
    // Each `routes!` adds the route to the router and its operation to the OpenAPI document
    // (`openapi`), so the two cannot disagree.
    let (api, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::rotate_admin))
        .routes(routes!(api_keys::get, api_keys::revoke))
        .routes(routes!(tenants::list))
        .routes(routes!(tenants::upsert, tenants::get, tenants::delete))
        .routes(routes!(tenants::token))
        .routes(routes!(tenants::revoke_tokens))
        .routes(routes!(webhook_templates::upload_url))
        .routes(routes!(webhook_templates::download_url))
        .routes(routes!(webhook_templates::upload))
        .routes(routes!(webhook_templates::download))
        .routes(routes!(tenants::portal))
        .routes(routes!(destinations::list, destinations::create))
        .routes(routes!(
            destinations::get,
            destinations::update,
            destinations::delete
        ))
        .routes(routes!(destinations::enable))
        .routes(routes!(destinations::disable))
        .routes(routes!(destinations::renew))
        .routes(routes!(replay::replay))
        .routes(routes!(test_event::send))
        .routes(routes!(attempts::list_for_destination))
        .routes(routes!(attempts::get_for_destination))
        .routes(routes!(publish::publish))
        // Its own, larger body limit: the inner layer's limit is the one the body is read
        // under (the router-wide one below is applied first and overridden).
        .merge(
            OpenApiRouter::new()
                .routes(routes!(publish::publish_batch))
                .layer(DefaultBodyLimit::max(batch_limit)),
        )
        .routes(routes!(publish::retry))
        .routes(routes!(events::list))
        .routes(routes!(events::get))
        .routes(routes!(attempts::list))
        .routes(routes!(attempts::get))
        .routes(routes!(schemas::destination_types))
        .routes(routes!(schemas::destination_type))
        .routes(routes!(schemas::topics))
        .routes(routes!(schemas::topic_catalog))
        .routes(routes!(operator_events::destination_types))
        .routes(routes!(
            operator_events::list_destinations,
            operator_events::create_destination
        ))
        .routes(routes!(
            operator_events::get_destination,
            operator_events::update_destination,
            operator_events::delete_destination
        ))
        .routes(routes!(operator_events::enable_destination))
        .routes(routes!(operator_events::disable_destination))
        .routes(routes!(operator_events::list_events))
        .routes(routes!(operator_events::get_event))
        .routes(routes!(operator_events::list_event_attempts))
        .routes(routes!(operator_events::list_attempts))
        .routes(routes!(operator_events::get_attempt))
        .routes(routes!(operator_events::retry))
        .routes(routes!(metrics::events))
        .routes(routes!(metrics::attempts))
        .split_for_parts();
    let api = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone());
    // `/healthz` also at the root, where load balancers, orchestrators and uptime checks look
    // for it first; the contract's `/api/v1/healthz` stays.
    let (root, root_doc) = OpenApiRouter::new()
        .routes(routes!(health::healthz_root))
        .split_for_parts();
    let api = Router::new()
        .nest("/api/v1", api)
        .merge(root.with_state(state.clone()));
    // The portal calls the API in-process, through the same routes, so its authorisation
    // and validation are the API's own.
    let types: Vec<&dyn herald_core::destination::DestinationType> =
        state.engine.registry().all().map(|t| t.as_ref()).collect();
    // `build` runs once per router and sets it first, so this `set` cannot find it taken.
    let _ = state.openapi.set(openapi::finish(
        prefixed(doc, "/api/v1").merge_from(root_doc),
        &types,
    ));
    let portal = portal::router(state, api.clone());
    (api.merge(portal).fallback(not_found), auth)
}

/// The document's paths under `prefix` (where the router is nested), except `/metrics`, which
/// the binary mounts at the root.
fn prefixed(mut doc: utoipa::openapi::OpenApi, prefix: &str) -> utoipa::openapi::OpenApi {
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(p, item)| {
            if p == "/metrics" {
                (p, item)
            } else {
                (format!("{prefix}{p}"), item)
            }
        })
        .collect();
    doc
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

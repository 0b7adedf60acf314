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
pub mod portal;
mod query;
mod routes;
pub mod templates;
mod wire;

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use herald_engine::Engine;

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
    /// Herald's version, reported by `/healthz`.
    pub version: String,
    /// Tenant portal settings (branding, session cookies).
    pub portal: portal::PortalConfig,
}

impl ApiConfig {
    /// The default request body limit: 1 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            jwt_secret: Vec::new(),
            topics: Vec::new(),
            portal_url: "http://localhost:3333/portal".to_string(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
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
    });
    use routes::*;
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api-keys/rotate-admin", post(api_keys::rotate_admin))
        .route(
            "/api-keys/{key_id}",
            get(api_keys::get).delete(api_keys::revoke),
        )
        .route("/tenants", get(tenants::list))
        .route(
            "/tenants/{tenant_id}",
            put(tenants::upsert)
                .get(tenants::get)
                .delete(tenants::delete),
        )
        .route("/tenants/{tenant_id}/token", get(tenants::token))
        .route(
            "/tenants/{tenant_id}/tokens/revoke",
            post(tenants::revoke_tokens),
        )
        .route(
            "/tenants/{tenant_id}/webhook-templates/upload-url",
            post(webhook_templates::upload_url),
        )
        .route(
            "/tenants/{tenant_id}/webhook-templates/download-url",
            post(webhook_templates::download_url),
        )
        .route("/webhook-templates/upload", put(webhook_templates::upload))
        .route(
            "/webhook-templates/download",
            get(webhook_templates::download),
        )
        .route("/tenants/{tenant_id}/portal", get(tenants::portal))
        .route(
            "/tenants/{tenant_id}/destinations",
            get(destinations::list).post(destinations::create),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}",
            get(destinations::get)
                .patch(destinations::update)
                .delete(destinations::delete),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}/enable",
            put(destinations::enable),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}/disable",
            put(destinations::disable),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}/renew",
            post(destinations::renew),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}/replay",
            post(replay::replay),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}/test",
            post(test_event::send),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}/attempts",
            get(attempts::list_for_destination),
        )
        .route(
            "/tenants/{tenant_id}/destinations/{destination_id}/attempts/{attempt_id}",
            get(attempts::get_for_destination),
        )
        .route("/publish", post(publish::publish))
        .route("/retry", post(publish::retry))
        .route("/events", get(events::list))
        .route("/events/{event_id}", get(events::get))
        .route("/attempts", get(attempts::list))
        .route("/attempts/{attempt_id}", get(attempts::get))
        .route("/destination-types", get(schemas::destination_types))
        .route("/destination-types/{type}", get(schemas::destination_type))
        .route("/topics", get(schemas::topics))
        .route("/topics/catalog", get(schemas::topic_catalog))
        .route(
            "/operator-events/destination-types",
            get(operator_events::destination_types),
        )
        .route(
            "/operator-events/destinations",
            get(operator_events::list_destinations).post(operator_events::create_destination),
        )
        .route(
            "/operator-events/destinations/{destination_id}",
            get(operator_events::get_destination)
                .patch(operator_events::update_destination)
                .delete(operator_events::delete_destination),
        )
        .route(
            "/operator-events/destinations/{destination_id}/enable",
            put(operator_events::enable_destination),
        )
        .route(
            "/operator-events/destinations/{destination_id}/disable",
            put(operator_events::disable_destination),
        )
        .route("/operator-events/events", get(operator_events::list_events))
        .route(
            "/operator-events/events/{event_id}",
            get(operator_events::get_event),
        )
        .route(
            "/operator-events/events/{event_id}/attempts",
            get(operator_events::list_event_attempts),
        )
        .route(
            "/operator-events/attempts",
            get(operator_events::list_attempts),
        )
        .route(
            "/operator-events/attempts/{attempt_id}",
            get(operator_events::get_attempt),
        )
        .route("/operator-events/retry", post(operator_events::retry))
        .route("/metrics/events", get(metrics::events))
        .route("/metrics/attempts", get(metrics::attempts))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state.clone());
    // `/healthz` also at the root, where load balancers, orchestrators and uptime checks look
    // for it first; the contract's `/api/v1/healthz` stays.
    let api = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health::healthz).with_state(state.clone()));
    // The portal calls the API in-process, through the same routes, so its authorisation
    // and validation are the API's own.
    let portal = portal::router(state, api.clone());
    (api.merge(portal).fallback(not_found), auth)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

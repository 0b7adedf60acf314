//! The tenant portal: server-rendered HTML pages under `/portal` where one tenant manages its
//! destinations, browses the topic catalog and inspects events and delivery attempts.
//!
//! What it is: a client of the HTTP API running in the same process. Every read and write a
//! page makes is a request to the API router (`/api/v1/…`), sent in-process with a tenant
//! token minted for the session's tenant. Authorisation (tenant scoping), validation and the
//! JSON shapes are therefore the API's own, not a second copy that could drift: a session for
//! tenant A asking for tenant B's destination gets the API's 404, whatever URL it types.
//!
//! What it is not: a single-page app, or a second API. Pages work without JavaScript; the
//! embedded script only adds conveniences (instant catalog search, the topic picker's "all
//! topics" toggle). Nothing is fetched from elsewhere at run time.
//!
//! Map of the module:
//! - `session`: the link-token exchange, the signed session cookie, CSRF checks;
//! - `html`: escaping and the page shell (branding, navigation, messages);
//! - `pages`: the read-only pages (destinations, topics, events, attempts);
//! - `forms`: the add-destination wizard, settings and every state-changing action;
//! - `assets`: the stylesheet and script, embedded in the binary.

mod assets;
mod forms;
mod html;
mod pages;
mod session;

pub use assets::is_hex_color;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tower::ServiceExt;

use crate::SharedState;

/// Operator settings of the portal (`[portal]` in Herald's configuration).
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// Where an expired or invalid session sends the user back to (the operator's own app),
    /// Outpost's `PORTAL_REFERER_URL`. Empty shows no link.
    pub referer_url: String,
    /// Organisation name shown in the header and page titles.
    pub organization_name: String,
    /// URL of a logo shown in the header (Outpost's `PORTAL_LOGO`); empty shows none.
    pub logo: String,
    /// Accent colour as `#rgb` or `#rrggbb` (Outpost's `PORTAL_BRAND_COLOR`); other values are
    /// ignored.
    pub brand_color: String,
    /// `light` or `dark` forces that theme; empty follows the link's `theme` parameter,
    /// then the browser's preference.
    pub force_theme: String,
    /// Whether the session cookie is marked `Secure` (off only in `--dev`).
    pub secure_cookies: bool,
    /// The destination type the add-destination wizard preselects; empty (or a type this
    /// build lacks) preselects the first one.
    pub default_type: String,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            referer_url: String::new(),
            organization_name: String::new(),
            logo: String::new(),
            brand_color: String::new(),
            force_theme: String::new(),
            secure_cookies: true,
            default_type: String::new(),
        }
    }
}

/// What the portal's handlers share.
pub(crate) struct Portal {
    /// The API's state (configuration, engine).
    pub app: SharedState,
    /// The API router, called in-process.
    pub api: Router,
    /// Key of session cookies and CSRF tokens, derived from the JWT secret.
    pub key: [u8; 32],
}

pub(crate) type PortalState = Arc<Portal>;

/// The portal's routes, mounted under `/portal`.
pub(crate) fn router(app: SharedState, api: Router) -> Router {
    let key = session::derive_key(&app.config.jwt_secret);
    let state: PortalState = Arc::new(Portal { app, api, key });
    Router::new()
        .route("/portal", get(session::exchange))
        .route("/portal/", get(session::exchange))
        .route("/portal/logout", post(session::logout))
        .route("/portal/assets/{name}", get(assets::serve))
        .route("/portal/destinations", get(pages::destinations))
        .route("/portal/destinations/new", get(forms::pick_type))
        .route(
            "/portal/destinations/new/{kind}",
            get(forms::new_form).post(forms::create),
        )
        .route("/portal/destinations/{id}", get(pages::destination))
        .route(
            "/portal/destinations/{id}/settings",
            get(forms::settings).post(forms::save_settings),
        )
        .route("/portal/destinations/{id}/enable", post(forms::enable))
        .route("/portal/destinations/{id}/disable", post(forms::disable))
        .route("/portal/destinations/{id}/rotate", post(forms::rotate))
        .route("/portal/destinations/{id}/test", post(forms::send_test))
        .route(
            "/portal/destinations/{id}/delete",
            get(forms::confirm_delete).post(forms::delete),
        )
        .route("/portal/topics", get(pages::topics))
        .route("/portal/events", get(pages::events))
        .route("/portal/events/{id}", get(pages::event))
        .route("/portal/attempts/{id}", get(pages::attempt))
        .route("/portal/retry", post(forms::retry))
        .fallback(pages::not_found)
        .with_state(state)
}

/// A failed API call, as the API answered it.
#[derive(Debug, Clone)]
pub(crate) struct ApiFailure {
    /// The API's status.
    pub status: StatusCode,
    /// Its message.
    pub message: String,
    /// `field: problem` lines of a 422.
    pub problems: Vec<String>,
}

impl ApiFailure {
    fn internal(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: msg.into(),
            problems: Vec::new(),
        }
    }

    /// The problems that name `field` (exactly, or `field[…]` / `field.…`).
    pub fn for_field(&self, field: &str) -> Vec<&str> {
        self.problems
            .iter()
            .filter_map(|p| {
                let (name, problem) = p.split_once(": ")?;
                let hit = name == field
                    || name
                        .strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'));
                hit.then_some(problem)
            })
            .collect()
    }
}

/// The API, as one tenant: every call carries a fresh tenant token for the session's tenant.
pub(crate) struct Api {
    router: Router,
    token: String,
}

impl Api {
    /// Sends one request to the API and returns its JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiFailure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| ApiFailure::internal(format!("cannot build an API request: {e}")))?;
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| ApiFailure::internal(format!("API call failed: {e}")))?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .map_err(|e| ApiFailure::internal(format!("cannot read an API answer: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiFailure::internal(format!("API answered non-JSON: {e}")))?
        };
        if status.is_success() {
            return Ok(value);
        }
        Err(ApiFailure {
            status,
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("request failed")
                .to_string(),
            problems: value
                .get("data")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// `GET`.
    pub async fn get(&self, path: &str) -> Result<Value, ApiFailure> {
        self.call(Method::GET, path, None).await
    }
}

/// A `303 See Other` to a portal path.
pub(crate) fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

/// Percent-encodes one path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

//! Test harness: the real router over a temporary SQLite store and a running engine, with two
//! fake destination types (the real ones live in a crate this one must not depend on):
//! - `webhook`: `config.url` (required, http(s)), `config.custom_headers`; signs, with its
//!   secret in `credentials.secret`. Delivery succeeds unless the URL contains `fail`
//!   (permanent failure) or `retry` (retryable failure).
//! - `queue`: `config.name` (required), `credentials.password` (required, sensitive); does not
//!   sign.
//! - `stream`: `config.stream` (required), `credentials.password` (required, sensitive); signs
//!   under `credentials.signing_secret`, like every type but the webhook.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use herald_api::{ApiConfig, TopicSpec, build};
use herald_core::destination::{
    DeliveryError, Driver, FieldError, OutboundMessage, Receipt, Registry,
};
use herald_core::spec::{About, SigningField, Spec, Typed};
use herald_core::{Secret, SystemClock};
use herald_engine::{Engine, EngineConfig};
use herald_store::sqlite::SqliteStore;
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-key";
pub const JWT_SECRET: &[u8] = b"jwt-secret-for-tests";

/// `config` of the fake webhook.
#[derive(Deserialize, JsonSchema)]
struct WebhookConfig {
    /// url
    ///
    /// the url
    url: String,
    /// Custom headers
    ///
    /// the custom_headers
    #[serde(default)]
    custom_headers: BTreeMap<String, String>,
}

#[derive(Deserialize, JsonSchema)]
struct NoCredentials {}

/// `config` of the fake queue.
#[derive(Deserialize, JsonSchema)]
struct QueueConfig {
    /// Name
    ///
    /// the name
    name: String,
}

/// `credentials` of the fake queue.
#[derive(Deserialize, JsonSchema)]
struct QueueCredentials {
    /// Password
    ///
    /// the password
    #[allow(dead_code)]
    password: Secret,
}

/// `config` of the fake stream.
#[derive(Deserialize, JsonSchema)]
struct StreamConfig {
    /// Stream
    ///
    /// the stream name
    stream: String,
}

struct FakeWebhook;
struct FakeQueue;
/// A type that signs under `signing_secret` and has a secret of its own (`password`).
struct FakeStream;

struct FakeDriver {
    fail: bool,
    /// Fails with a retryable error (the URL contains `retry`).
    retry: bool,
}

#[async_trait]
impl Driver for FakeDriver {
    async fn deliver(&self, _msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        if self.retry {
            return Err(DeliveryError::retry("503", "unavailable"));
        }
        if self.fail {
            let mut e = DeliveryError::permanent("400", "rejected");
            e.response = Some(json!({"status_code": 400, "body": "no"}));
            return Err(e);
        }
        Ok(Receipt {
            code: "200".into(),
            response: Some(json!({"status_code": 200, "body": "ok"})),
        })
    }
}

fn about(kind: &'static str) -> About {
    About {
        kind,
        label: kind,
        description: "fake",
        icon: "<svg/>",
        instructions: "none",
    }
}

impl Spec for FakeWebhook {
    type Config = WebhookConfig;
    type Credentials = NoCredentials;

    fn about(&self) -> About {
        about("webhook")
    }

    fn signing(&self) -> Option<SigningField> {
        Some(SigningField {
            key: "secret",
            generate: true,
        })
    }

    fn check(&self, config: &WebhookConfig, _: &NoCredentials) -> Vec<FieldError> {
        if config.url.starts_with("http://") || config.url.starts_with("https://") {
            Vec::new()
        } else {
            vec![FieldError::new("config.url", "must be an http(s) URL")]
        }
    }

    fn build(
        &self,
        _id: &str,
        config: WebhookConfig,
        _: NoCredentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(FakeDriver {
            fail: config.url.contains("fail"),
            retry: config.url.contains("retry"),
        }))
    }

    fn target(&self, config: &WebhookConfig) -> (String, Option<String>) {
        let host = config
            .url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        (host, Some(config.url.clone()))
    }
}

impl Spec for FakeQueue {
    type Config = QueueConfig;
    type Credentials = QueueCredentials;

    fn about(&self) -> About {
        about("queue")
    }

    fn signing(&self) -> Option<SigningField> {
        None
    }

    fn build(
        &self,
        _id: &str,
        _: QueueConfig,
        _: QueueCredentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(FakeDriver {
            fail: false,
            retry: false,
        }))
    }

    fn target(&self, config: &QueueConfig) -> (String, Option<String>) {
        (config.name.clone(), None)
    }
}

impl Spec for FakeStream {
    type Config = StreamConfig;
    type Credentials = QueueCredentials;

    fn about(&self) -> About {
        about("stream")
    }

    fn build(
        &self,
        _id: &str,
        _: StreamConfig,
        _: QueueCredentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(FakeDriver {
            fail: false,
            retry: false,
        }))
    }

    fn target(&self, config: &StreamConfig) -> (String, Option<String>) {
        (config.stream.clone(), None)
    }
}

pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register(Arc::new(Typed::new(FakeWebhook, true)));
    r.register(Arc::new(Typed::new(FakeQueue, true)));
    r.register(Arc::new(Typed::new(FakeStream, true)));
    r
}

pub struct App {
    pub router: Router,
    pub engine: Engine,
    /// What the router checks credentials with (as `/metrics` uses it).
    pub auth: herald_api::keys::Authenticator,
    /// The data directory (the database file is `herald.db` in it).
    pub dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub fn catalog(names: &[&str]) -> Vec<TopicSpec> {
    names
        .iter()
        .map(|n| TopicSpec {
            name: n.to_string(),
            description: format!("{n} happened"),
            sample: json!({"id": 1}),
        })
        .collect()
}

pub async fn app_with(topics: Vec<TopicSpec>, max_body_bytes: usize) -> App {
    app_on(
        topics,
        max_body_bytes,
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .await
}

/// An app whose engine and API read time from `clock` (a `ManualClock` in tests of expiry).
pub async fn app_with_clock(clock: Arc<dyn herald_core::Clock>) -> App {
    app_on(
        Vec::new(),
        ApiConfig::DEFAULT_MAX_BODY_BYTES,
        clock,
        EngineConfig::default(),
    )
    .await
}

pub async fn app_on(
    topics: Vec<TopicSpec>,
    max_body_bytes: usize,
    clock: Arc<dyn herald_core::Clock>,
    engine_config: EngineConfig,
) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(
        &dir.path().join("herald.db"),
        &herald_store::seal::Keyring::single("k", &herald_store::seal::Keyring::generate_key())
            .expect("key"),
    )
    .expect("open store");
    let engine = Engine::start(Arc::new(store), registry(), clock, engine_config, true)
        .await
        .expect("engine");
    let config = ApiConfig {
        api_key: ADMIN.into(),
        jwt_secret: JWT_SECRET.to_vec(),
        topics,
        portal_url: "http://localhost:3333/portal".into(),
        portal: Default::default(),
        max_body_bytes,
        max_batch_body_bytes: herald_api::ApiConfig::DEFAULT_MAX_BATCH_BODY_BYTES,
        version: "test".into(),
    };
    let (router, auth) = build(engine.clone(), config);
    App {
        router,
        engine,
        auth,
        dir: dir.path().to_path_buf(),
        _dir: dir,
    }
}

pub async fn app() -> App {
    app_with(Vec::new(), ApiConfig::DEFAULT_MAX_BODY_BYTES).await
}

impl App {
    /// Sends a request; `body` is sent as-is when it is a string, else as JSON.
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = auth {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b)
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body for {uri}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    /// Sends a request with extra headers (and no `Authorization` unless given in them).
    pub async fn with_headers(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.raw(method, uri, auth, body.map(|b| b.to_string()))
            .await
    }

    pub async fn admin(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, uri, Some(ADMIN), body).await
    }

    /// Like [`App::admin`] but asserts the status.
    pub async fn ok(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        want: StatusCode,
    ) -> Value {
        let (status, v) = self.admin(method.clone(), uri, body).await;
        assert_eq!(status, want, "{method} {uri}: {v}");
        v
    }

    pub async fn tenant(&self, id: &str) {
        self.ok(
            Method::PUT,
            &format!("/api/v1/tenants/{id}"),
            None,
            StatusCode::CREATED,
        )
        .await;
    }

    pub async fn token(&self, tenant: &str) -> String {
        let v = self
            .ok(
                Method::GET,
                &format!("/api/v1/tenants/{tenant}/token"),
                None,
                StatusCode::OK,
            )
            .await;
        v["token"].as_str().expect("token").to_string()
    }

    pub async fn webhook(&self, tenant: &str, id: &str, topics: Value) -> Value {
        self.ok(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/destinations"),
            Some(json!({"id": id, "type": "webhook", "topics": topics, "config": {"url": "https://example.com/hook"}})),
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn publish(&self, body: Value) -> Value {
        self.ok(
            Method::POST,
            "/api/v1/publish",
            Some(body),
            StatusCode::ACCEPTED,
        )
        .await
    }

    /// Waits until `GET uri` lists at least `n` models.
    pub async fn wait_for_models(&self, uri: &str, n: usize) -> Value {
        for _ in 0..200 {
            let v = self.ok(Method::GET, uri, None, StatusCode::OK).await;
            if v["models"].as_array().is_some_and(|m| m.len() >= n) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{uri} never listed {n} models");
    }
}

/// Asserts the contract's error shape and that the message mentions `needle`.
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, needle: &str) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(body["status"], json!(want.as_u16()), "body: {body}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {body}"));
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

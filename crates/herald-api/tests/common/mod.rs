//! Test harness: the real router over a temporary SQLite store and a running engine, with two
//! fake destination types (the real ones live in a crate this one must not depend on):
//! - `webhook`: `config.url` (required, http(s)), `config.custom_headers`; credentials
//!   `secret`, `previous_secret` (sensitive), `previous_secret_invalid_at`. Delivery succeeds
//!   unless the URL contains `fail`.
//! - `queue`: `config.name` (required), `credentials.password` (required, sensitive).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use herald_api::{ApiConfig, TopicSpec, router};
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, FieldSpec, OutboundMessage, Receipt,
    Registry, TypeSpec,
};
use herald_core::{Destination, SystemClock};
use herald_engine::{Engine, EngineConfig};
use herald_store::sqlite::SqliteStore;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-key";
pub const JWT_SECRET: &[u8] = b"jwt-secret-for-tests";

fn field(key: &str, required: bool, sensitive: bool) -> FieldSpec {
    FieldSpec {
        key: key.into(),
        kind: "text".into(),
        label: key.into(),
        description: format!("the {key}"),
        required,
        sensitive,
        default: None,
        pattern: None,
    }
}

struct FakeWebhook(TypeSpec);
struct FakeQueue(TypeSpec);

struct FakeDriver {
    fail: bool,
}

#[async_trait]
impl Driver for FakeDriver {
    async fn deliver(&self, _msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
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

impl DestinationType for FakeWebhook {
    fn spec(&self) -> &TypeSpec {
        &self.0
    }

    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        _credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        match config.get("url") {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Vec::new(),
            _ => vec![FieldError::new("config.url", "must be an http(s) URL")],
        }
    }

    fn build(&self, d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(FakeDriver {
            fail: d.config.get("url").is_some_and(|u| u.contains("fail")),
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let url = d.config.get("url").cloned().unwrap_or_default();
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        (host, Some(url))
    }
}

impl DestinationType for FakeQueue {
    fn spec(&self) -> &TypeSpec {
        &self.0
    }

    fn validate(
        &self,
        _config: &BTreeMap<String, String>,
        _credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        Vec::new()
    }

    fn build(&self, _d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(FakeDriver { fail: false }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        (d.config.get("name").cloned().unwrap_or_default(), None)
    }
}

fn spec(kind: &str, config_fields: Vec<FieldSpec>, credential_fields: Vec<FieldSpec>) -> TypeSpec {
    TypeSpec {
        kind: kind.into(),
        label: kind.into(),
        description: format!("fake {kind}"),
        icon: "<svg/>".into(),
        instructions: "none".into(),
        config_fields,
        credential_fields,
    }
}

pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register(Arc::new(FakeWebhook(spec(
        "webhook",
        vec![
            field("url", true, false),
            field("custom_headers", false, false),
        ],
        vec![
            field("secret", false, true),
            field("previous_secret", false, true),
            field("previous_secret_invalid_at", false, false),
        ],
    ))));
    r.register(Arc::new(FakeQueue(spec(
        "queue",
        vec![field("name", true, false)],
        vec![field("password", true, true)],
    ))));
    r
}

pub struct App {
    pub router: Router,
    pub engine: Engine,
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
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("herald.db")).expect("open store");
    let engine = Engine::start(
        Arc::new(store),
        registry(),
        Arc::new(SystemClock),
        EngineConfig::default(),
        true,
    )
    .await
    .expect("engine");
    let config = ApiConfig {
        api_key: ADMIN.into(),
        jwt_secret: JWT_SECRET.to_vec(),
        topics,
        portal_url: "http://localhost:3333/portal".into(),
        portal: Default::default(),
        max_body_bytes,
        version: "test".into(),
    };
    App {
        router: router(engine.clone(), config),
        engine,
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

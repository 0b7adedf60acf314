//! Request bodies through the real API router (`herald_api::router` over a real embedded
//! store and engine): whatever bytes a client sends to a route that reads a body, the answer is
//! never a 5xx, and every error is the JSON error shape `{status, message[, data]}` with the
//! response's own status.
//!
//! Input: the first byte picks the route (publish, create destination, update destination,
//! create tenant, retry, replay, create a test event); the rest is the body, sent as-is.
//! Webhook deliveries go through an egress proxy at 127.0.0.1:9, which refuses connections, so
//! nothing leaves the machine and no name is resolved.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use herald_api::{ApiConfig, router};
use herald_core::SystemClock;
use herald_destinations::{DestinationsConfig, registry};
use herald_engine::{Engine, EngineConfig};
use herald_store::seal::Keyring;
use herald_store::sqlite::SqliteStore;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;

const ADMIN: &str = "fuzz-admin-key";

struct App {
    rt: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // Memory-backed when available: the store syncs every commit.
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let router = rt.block_on(async {
            let keys = Keyring::single("k", &Keyring::generate_key()).expect("key");
            let store = SqliteStore::open(&dir.path().join("herald.db"), &keys).expect("store");
            let registry = registry(&DestinationsConfig {
                target_policy: Default::default(),
                proxy: Some(herald_core::Secret::new("http://127.0.0.1:9")),
                response_body_limit: 1024,
                user_agent: "herald-fuzz".into(),
                retry_on_status: Vec::new(),
                tls_ca: None,
                no_generated_secret: Vec::new(),
                ..DestinationsConfig::default()
            })
            .expect("registry");
            let engine = Engine::start(
                Arc::new(store),
                registry,
                Arc::new(SystemClock),
                EngineConfig::default(),
                true,
            )
            .await
            .expect("engine");
            let config = ApiConfig {
                api_key: ADMIN.into(),
                jwt_secret: b"fuzz-jwt-secret".to_vec(),
                topics: Vec::new(),
                portal_url: "http://localhost/portal".into(),
                portal: Default::default(),
                max_body_bytes: 64 * 1024,
                max_batch_body_bytes: 256 * 1024,
                version: "fuzz".into(),
            };
            let router = router(engine, config);
            // A tenant and a destination for the routes that need them.
            for (method, uri, body) in [
                ("PUT", "/api/v1/tenants/fz", String::new()),
                (
                    "POST",
                    "/api/v1/tenants/fz/destinations",
                    r#"{"id":"d1","type":"webhook","topics":"*","config":{"url":"https://example.com/in"}}"#
                        .to_string(),
                ),
            ] {
                let (status, v) = send(&router, method, uri, body.into_bytes()).await;
                assert!(status < 300, "{method} {uri}: {status} {v}");
            }
            router
        });
        App {
            rt,
            router,
            _dir: dir,
        }
    })
}

async fn send(router: &Router, method: &str, uri: &str, body: Vec<u8>) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{method} {uri}: {status} with a body that is not JSON ({e})")
        })
    };
    (status, value)
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/publish"),
    ("POST", "/api/v1/tenants/fz/destinations"),
    ("PATCH", "/api/v1/tenants/fz/destinations/d1"),
    ("PUT", "/api/v1/tenants/fz2"),
    ("POST", "/api/v1/retry"),
    ("POST", "/api/v1/tenants/fz/destinations/d1/replay"),
    ("POST", "/api/v1/tenants/fz/destinations/d1/test"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, uri) = ROUTES[pick as usize % ROUTES.len()];
    let app = app();
    let (status, v) = app
        .rt
        .block_on(send(&app.router, method, uri, body.to_vec()));
    assert!(status < 500, "{method} {uri} answered {status}: {v}");
    if status >= 400 {
        assert_eq!(
            v["status"].as_u64(),
            Some(u64::from(status)),
            "{method} {uri}: {status} without the error shape: {v}"
        );
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {uri}: {status} without a message: {v}"
        );
    }
});

//! The served OpenAPI document against the router it describes: every documented operation is
//! served, every method the router serves on a documented path is documented, routes are only
//! registered through `routes!` (which documents them), and the docs page renders the document
//! with nothing loaded from elsewhere. (The comparison with the Outpost contract needs the real
//! destination types: `crates/herald/tests/e2e/openapi.rs`.)

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::Value;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
];

/// `/a/{x}/b` → `/a/x/b`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "x"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn document(app: &App) -> Value {
    let (status, doc) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

#[tokio::test]
async fn every_documented_operation_is_served_and_every_served_method_documented() {
    let app = app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 40, "only {} paths", paths.len());
    let mut wrong = Vec::new();
    for (path, item) in paths {
        // Mounted by the binary beside this router; its e2e test checks it is served.
        if path == "/metrics" {
            continue;
        }
        // The root health check (an extension) is this router's one route outside /api/v1.
        assert!(
            path.starts_with("/api/v1/") || path == "/healthz",
            "{path} is outside /api/v1"
        );
        let uri = concrete(path);
        for method in METHODS {
            // No credentials: a matched route answers 401/403/4xx from its handler, an
            // unmatched one the router's own 404 `route not found` or 405.
            let (status, body) = app.with_headers(method.clone(), &uri, &[], None).await;
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && body["message"] == "route not found");
            let documented = item.get(method.as_str().to_lowercase()).is_some();
            match (documented, unrouted) {
                (true, true) => wrong.push(format!("{method} {path}: documented, not served")),
                (false, false) => wrong.push(format!(
                    "{method} {path}: served ({status}), not in the document"
                )),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A route added with `.route(…)` would be served without being documented; the router is
/// built only with `routes!`, so the library's router code must not call it.
#[test]
fn routes_are_registered_only_through_the_documenting_macro() {
    let src = include_str!("../src/lib.rs");
    for call in [".route(", ".route_service(", ".nest_service("] {
        assert!(
            !src.contains(call),
            "src/lib.rs calls {call}: register API routes with `routes!` so they are documented"
        );
    }
}

#[tokio::test]
async fn every_operation_has_an_id_a_tag_and_documented_answers() {
    let app = app().await;
    let doc = document(&app).await;
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(op["tags"][0].is_string(), "{method} {path} has no tag");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{method} {path} documents no success"
            );
            if op["security"] != serde_json::json!([{}]) {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} needs credentials but documents no 401"
                );
            }
        }
    }
    // The destination shapes come from the registry: one variant per type of this build.
    let variants = doc["components"]["schemas"]["Destination"]["oneOf"]
        .as_array()
        .expect("Destination is a oneOf");
    assert_eq!(variants.len(), registry().all().count());
}

#[tokio::test]
async fn the_docs_page_renders_the_document_from_this_server_only() {
    let app = app().await;
    let resp = app
        .with_headers(Method::GET, "/api/v1/docs", &[], None)
        .await;
    assert_eq!(resp.0, StatusCode::OK);
    let req = axum::http::Request::get("/api/v1/docs")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .expect("response");
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_string();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let html = String::from_utf8(bytes.to_vec()).expect("utf-8");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(html.contains("fetch(\"openapi.json\")"));
    assert!(!html.contains("<script src"), "the page loads a script");
    assert!(!html.contains("<link"), "the page loads a stylesheet");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
}

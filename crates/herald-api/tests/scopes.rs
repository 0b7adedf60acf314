//! Scoped API keys over the real router: the route × principal table, key management,
//! both header forms, expiry by the clock, revocation, bootstrap rotation and what is stored.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use common::*;
use herald_api::auth::Scope;
use herald_core::ManualClock;
use serde_json::{Value, json};

/// Creates a key with the admin key; returns (id, secret).
async fn key(app: &App, scopes: &[&str], tenant: Option<&str>) -> (String, String) {
    let mut body = json!({"name": format!("{scopes:?}"), "scopes": scopes});
    if let Some(t) = tenant {
        body["tenant_id"] = json!(t);
    }
    let v = app
        .ok(
            Method::POST,
            "/api/v1/api-keys",
            Some(body),
            StatusCode::CREATED,
        )
        .await;
    (
        v["id"].as_str().expect("id").to_string(),
        v["secret"].as_str().expect("secret").to_string(),
    )
}

/// The principals of the table, in column order.
const COLUMNS: [&str; 9] = [
    "admin",
    "k:admin",
    "k:publish",
    "k:read",
    "k:dw",
    "k:metrics",
    "k:t",
    "k:tadmin",
    "jwt",
];

#[tokio::test]
async fn route_scope_table() {
    let app = app().await;
    app.tenant("acme").await;
    app.tenant("other").await;
    app.webhook("acme", "d1", json!("*")).await;
    let ev = app
        .publish(json!({"tenant_id": "acme", "topic": "t", "data": {"a": 1}}))
        .await;
    let event_id = ev["id"].as_str().unwrap().to_string();
    let mut tokens = vec![ADMIN.to_string()];
    for (scopes, tenant) in [
        (&["admin"][..], None),
        (&["publish"][..], None),
        (&["read"][..], None),
        (&["destinations:write"][..], None),
        (&["metrics"][..], None),
        (&["read", "destinations:write", "publish"][..], Some("acme")),
        (&["admin"][..], Some("acme")),
    ] {
        tokens.push(key(&app, scopes, tenant).await.1);
    }
    tokens.push(app.token("acme").await);
    assert_eq!(tokens.len(), COLUMNS.len());

    let ev = event_id.as_str();
    let metrics_q = "/api/v1/metrics/events?time[start]=2024-01-01T00:00:00Z&time[end]=2024-01-02T00:00:00Z&measures=count";
    // Expected status per column: admin, k:admin, k:publish, k:read, k:dw, k:metrics,
    // k:t (read+dw+publish on acme), k:tadmin (admin on acme), jwt (acme).
    #[rustfmt::skip]
    let table: Vec<(Method, String, Option<Value>, [u16; 9])> = vec![
        (Method::GET, "/api/v1/healthz".into(), None, [200, 200, 200, 200, 200, 200, 200, 200, 200]),
        // Tenants.
        (Method::GET, "/api/v1/tenants".into(), None, [200, 200, 403, 200, 403, 403, 403, 403, 403]),
        (Method::PUT, "/api/v1/tenants/acme".into(), None, [200, 200, 403, 403, 403, 403, 403, 200, 200]),
        (Method::GET, "/api/v1/tenants/acme".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, "/api/v1/tenants/other".into(), None, [200, 200, 403, 200, 403, 403, 403, 403, 403]),
        (Method::DELETE, "/api/v1/tenants/nope".into(), None, [404, 404, 403, 403, 403, 403, 403, 403, 403]),
        (Method::GET, "/api/v1/tenants/acme/token".into(), None, [200, 200, 403, 403, 403, 403, 403, 403, 403]),
        (Method::GET, "/api/v1/tenants/acme/portal".into(), None, [200, 200, 403, 403, 403, 403, 403, 403, 403]),
        // Destinations.
        (Method::GET, "/api/v1/tenants/acme/destinations".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::POST, "/api/v1/tenants/acme/destinations".into(), Some(json!({})), [422, 422, 403, 403, 422, 403, 422, 422, 422]),
        (Method::POST, "/api/v1/tenants/other/destinations".into(), Some(json!({})), [422, 422, 403, 403, 422, 403, 403, 403, 403]),
        (Method::GET, "/api/v1/tenants/acme/destinations/d1".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::PATCH, "/api/v1/tenants/acme/destinations/nope".into(), Some(json!({})), [404, 404, 403, 403, 404, 403, 404, 404, 404]),
        (Method::DELETE, "/api/v1/tenants/acme/destinations/nope".into(), None, [404, 404, 403, 403, 404, 403, 404, 404, 404]),
        (Method::PUT, "/api/v1/tenants/acme/destinations/nope/enable".into(), None, [404, 404, 403, 403, 404, 403, 404, 404, 404]),
        (Method::PUT, "/api/v1/tenants/acme/destinations/nope/disable".into(), None, [404, 404, 403, 403, 404, 403, 404, 404, 404]),
        (Method::POST, "/api/v1/tenants/acme/destinations/nope/replay".into(), Some(json!({})), [404, 404, 403, 403, 404, 403, 404, 404, 404]),
        (Method::POST, "/api/v1/tenants/acme/destinations/nope/test".into(), Some(json!({})), [404, 404, 403, 403, 404, 403, 404, 404, 404]),
        (Method::GET, "/api/v1/tenants/acme/destinations/d1/attempts".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, "/api/v1/tenants/acme/destinations/d1/attempts/nope".into(), None, [404, 404, 403, 404, 403, 403, 404, 404, 404]),
        (Method::POST, "/api/v1/tenants/acme/destinations/nope/renew".into(), None, [404, 404, 403, 403, 404, 403, 404, 404, 404]),
        // CSV webhook templates: handing out URLs is scoped; the URLs carry no credentials
        // (a request without a valid signature is 403 whoever sends it).
        (Method::POST, "/api/v1/tenants/acme/webhook-templates/upload-url".into(), None, [200, 200, 403, 403, 200, 403, 200, 200, 200]),
        (Method::POST, "/api/v1/tenants/other/webhook-templates/upload-url".into(), None, [200, 200, 403, 403, 200, 403, 403, 403, 403]),
        (Method::POST, "/api/v1/tenants/acme/webhook-templates/download-url".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::PUT, "/api/v1/webhook-templates/upload".into(), None, [403, 403, 403, 403, 403, 403, 403, 403, 403]),
        (Method::GET, "/api/v1/webhook-templates/download".into(), None, [403, 403, 403, 403, 403, 403, 403, 403, 403]),
        // Publishing and retries.
        (Method::POST, "/api/v1/publish".into(), Some(json!({})), [422, 422, 422, 403, 403, 403, 422, 422, 403]),
        (Method::POST, "/api/v1/publish/batch".into(), Some(json!({})), [422, 422, 422, 403, 403, 403, 422, 422, 403]),
        (Method::POST, "/api/v1/retry".into(), Some(json!({})), [422, 422, 403, 403, 422, 403, 422, 422, 422]),
        // Events, attempts, schemas, topics, metrics.
        (Method::GET, "/api/v1/events".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, format!("/api/v1/events/{ev}"), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, "/api/v1/attempts".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, "/api/v1/attempts/nope".into(), None, [404, 404, 403, 404, 403, 403, 404, 404, 404]),
        (Method::GET, "/api/v1/destination-types".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, "/api/v1/destination-types/webhook".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, "/api/v1/topics".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, "/api/v1/topics/catalog".into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        (Method::GET, metrics_q.into(), None, [200, 200, 403, 200, 403, 403, 200, 200, 200]),
        // API keys.
        (Method::GET, "/api/v1/api-keys".into(), None, [200, 200, 403, 403, 403, 403, 403, 403, 403]),
        (Method::POST, "/api/v1/api-keys".into(), Some(json!({})), [422, 422, 403, 403, 403, 403, 403, 403, 403]),
        (Method::GET, "/api/v1/api-keys/nope".into(), None, [404, 404, 403, 403, 403, 403, 403, 403, 403]),
        (Method::DELETE, "/api/v1/api-keys/nope".into(), None, [404, 404, 403, 403, 403, 403, 403, 403, 403]),
    ];
    let mut failures = Vec::new();
    for (method, uri, body, want) in &table {
        for (col, token) in tokens.iter().enumerate() {
            let (status, v) = app
                .call(method.clone(), uri, Some(token), body.clone())
                .await;
            if status.as_u16() != want[col] {
                failures.push(format!(
                    "{method} {uri} as {}: got {status}, want {} ({v})",
                    COLUMNS[col], want[col]
                ));
            }
            // A key refused for its scope is told which one it needs.
            if status == StatusCode::FORBIDDEN
                && COLUMNS[col].starts_with("k:")
                && let Some(needed) = v["data"]["required_scope"].as_str()
            {
                assert!(v["message"].as_str().unwrap().contains(needed), "{v}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A missing scope is named in the message and in `data`.
    let (status, v) = app
        .call(Method::GET, "/api/v1/tenants/acme", Some(&tokens[2]), None)
        .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "\"read\" scope");
    assert_eq!(v["data"]["required_scope"], "read");
    let (status, v) = app
        .call(
            Method::POST,
            "/api/v1/publish",
            Some(&tokens[3]),
            Some(json!({})),
        )
        .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "\"publish\" scope");

    // The `/metrics` scope, as the server's Prometheus route checks it.
    for (col, token) in tokens.iter().enumerate() {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let ok = app.auth.authorize(&h, Scope::Metrics).await.is_ok();
        let want = matches!(COLUMNS[col], "admin" | "k:admin" | "k:metrics" | "k:tadmin");
        assert_eq!(ok, want, "/metrics as {}", COLUMNS[col]);
    }
    assert!(
        app.auth
            .authorize(&HeaderMap::new(), Scope::Metrics)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_tenant_bound_publish_key_publishes_only_for_its_tenant() {
    let app = app().await;
    app.tenant("acme").await;
    let (_, secret) = key(&app, &["publish"], Some("acme")).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/publish",
            Some(&secret),
            Some(json!({"tenant_id": "acme", "topic": "t", "data": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, v) = app
        .call(
            Method::POST,
            "/api/v1/publish",
            Some(&secret),
            Some(json!({"tenant_id": "other", "topic": "t", "data": {}})),
        )
        .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "another tenant");
}

#[tokio::test]
async fn keys_are_created_listed_revoked_and_never_shown_again() {
    let app = app().await;
    app.tenant("acme").await;
    let v = app
        .ok(
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "ci", "scopes": ["read", "read", "publish"], "tenant_id": "acme", "expires_at": "2999-01-01T00:00:00Z"})),
            StatusCode::CREATED,
        )
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(id.starts_with("key_"), "{v}");
    assert!(secret.starts_with(&format!("hk_{id}.")), "{v}");
    assert_eq!(v["scopes"], json!(["read", "publish"]));
    assert_eq!(v["tenant_id"], "acme");
    assert_eq!(v["expires_at"], "2999-01-01T00:00:00Z");
    assert!(
        v["created_at"].is_string() && v["last_used_at"].is_null(),
        "{v}"
    );

    // Bearer and the header pair both work.
    let (status, _) = app
        .call(Method::GET, "/api/v1/tenants/acme", Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .with_headers(
            Method::GET,
            "/api/v1/tenants/acme",
            &[("x-api-key-id", &id), ("x-api-key-secret", &secret)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A wrong secret, a secret of another id, an unknown id: 401.
    for headers in [
        [
            ("x-api-key-id", id.as_str()),
            ("x-api-key-secret", "hk_x.0"),
        ],
        [
            ("x-api-key-id", "key_nope"),
            ("x-api-key-secret", secret.as_str()),
        ],
    ] {
        let (status, v) = app
            .with_headers(Method::GET, "/api/v1/tenants/acme", &headers, None)
            .await;
        assert_error(status, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The last character changed (to one it is not: a secret ending in `0` once made this
    // "tampered" secret the real one).
    let last = if secret.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &secret[..secret.len() - 1]);
    let (status, _) = app
        .call(Method::GET, "/api/v1/tenants/acme", Some(&tampered), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Listing and getting never show a secret; last_used_at appears (written in the
    // background, so poll with a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let one = app
            .ok(
                Method::GET,
                &format!("/api/v1/api-keys/{id}"),
                None,
                StatusCode::OK,
            )
            .await;
        assert!(one.get("secret").is_none(), "{one}");
        if one["last_used_at"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last_used_at never set: {one}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = app
        .ok(Method::GET, "/api/v1/api-keys", None, StatusCode::OK)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&secret[secret.len() - 64..]));

    // The database holds the digest, not the secret.
    let db = std::fs::read(app.dir.join("herald.db")).unwrap();
    let wal = std::fs::read(app.dir.join("herald.db-wal")).unwrap_or_default();
    let random = &secret[secret.len() - 64..];
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(random.len()).any(|w| w == random.as_bytes()),
            "the secret is in the database file"
        );
    }

    // Revoked: 401 at once, gone from the list, 404 on a second revoke.
    app.ok(
        Method::DELETE,
        &format!("/api/v1/api-keys/{id}"),
        None,
        StatusCode::OK,
    )
    .await;
    let (status, _) = app
        .call(Method::GET, "/api/v1/tenants/acme", Some(&secret), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let list = app
        .ok(Method::GET, "/api/v1/api-keys", None, StatusCode::OK)
        .await;
    assert_eq!(list, json!([]));
    let (status, _) = app
        .admin(Method::DELETE, &format!("/api/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn key_bodies_are_validated() {
    let app = app().await;
    for (body, field) in [
        (json!({"scopes": ["read"]}), "name: is required"),
        (json!({"name": "x"}), "scopes: is required"),
        (
            json!({"name": "x", "scopes": []}),
            "scopes: must not be empty",
        ),
        (
            json!({"name": "x", "scopes": ["root"]}),
            "scopes[0]: \"root\" is not a scope",
        ),
        (
            json!({"name": "x", "scopes": [1]}),
            "scopes[0]: expected a string",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "tenant_id": "ghost"}),
            "tenant_id: tenant \"ghost\" does not exist",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at: must be in the future",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "expires_at": "soon"}),
            "expires_at: \"soon\" is not",
        ),
    ] {
        let (status, v) = app
            .admin(Method::POST, "/api/v1/api-keys", Some(body))
            .await;
        assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, field);
    }
    assert_eq!(
        app.ok(Method::GET, "/api/v1/api-keys", None, StatusCode::OK)
            .await,
        json!([])
    );
}

#[tokio::test]
async fn a_key_expires_by_the_clock() {
    let clock = Arc::new(ManualClock::new("2030-01-01T00:00:00Z".parse().unwrap()));
    let app = app_with_clock(clock.clone()).await;
    app.tenant("acme").await;
    let v = app
        .ok(
            Method::POST,
            "/api/v1/api-keys",
            Some(
                json!({"name": "short", "scopes": ["read"], "expires_at": "2030-01-01T01:00:00Z"}),
            ),
            StatusCode::CREATED,
        )
        .await;
    let secret = v["secret"].as_str().unwrap();
    let get = || app.call(Method::GET, "/api/v1/tenants/acme", Some(secret), None);
    assert_eq!(get().await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(3599));
    assert_eq!(get().await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(1));
    assert_eq!(get().await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_bootstrap_admin_key_rotates_without_a_restart() {
    let app = app().await;
    let (_, scoped_admin) = key(&app, &["admin"], None).await;
    let v = app
        .ok(
            Method::POST,
            "/api/v1/api-keys/rotate-admin",
            None,
            StatusCode::CREATED,
        )
        .await;
    let new = v["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("hrld_"), "{v}");
    assert_eq!(v["id"], "bootstrap");
    // The configured key stops working; the new one and scoped admin keys work.
    let (status, _) = app.admin(Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for token in [&new, &scoped_admin] {
        let (status, _) = app
            .call(Method::GET, "/api/v1/tenants", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // The bootstrap record cannot be used as a scoped key or revoked; rotating again
    // retires the previous rotated key.
    let (status, _) = app
        .with_headers(
            Method::GET,
            "/api/v1/tenants",
            &[("x-api-key-id", "bootstrap"), ("x-api-key-secret", &new)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(
            Method::DELETE,
            "/api/v1/api-keys/bootstrap",
            Some(&new),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, v) = app
        .call(
            Method::POST,
            "/api/v1/api-keys/rotate-admin",
            Some(&scoped_admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let newer = v["secret"].as_str().unwrap();
    let (status, _) = app
        .call(Method::GET, "/api/v1/tenants", Some(&new), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(Method::GET, "/api/v1/tenants", Some(newer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Keys without admin may not rotate.
    let (_, reader) = key_with(&app, newer, &["read"]).await;
    let (status, v) = app
        .call(
            Method::POST,
            "/api/v1/api-keys/rotate-admin",
            Some(&reader),
            None,
        )
        .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "\"admin\" scope");
}

async fn key_with(app: &App, admin: &str, scopes: &[&str]) -> (String, String) {
    let (status, v) = app
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(admin),
            Some(json!({"name": "k", "scopes": scopes})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

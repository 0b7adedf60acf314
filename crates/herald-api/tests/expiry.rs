//! Destination expiry over the real router and engine, driven by a `ManualClock`: the field
//! on create and PATCH, `destinations.max_lifetime`, renew, routing and pending deliveries
//! after expiry, and expiry notices produced once each.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use herald_api::ApiConfig;
use herald_core::ManualClock;
use herald_engine::EngineConfig;
use serde_json::json;

const START: &str = "2030-01-01T00:00:00Z";

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(START.parse().unwrap()))
}

async fn app_max(clock: Arc<ManualClock>, max_days: Option<u64>) -> App {
    let config = EngineConfig {
        max_lifetime: max_days.map(|d| Duration::from_secs(d * 86_400)),
        expiry_check_interval: Duration::from_secs(3600 * 24 * 365),
        ..EngineConfig::default()
    };
    app_on(Vec::new(), ApiConfig::DEFAULT_MAX_BODY_BYTES, clock, config).await
}

fn hook(id: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut b = json!({"id": id, "type": "webhook", "topics": "*", "config": {"url": "https://example.com/hook"}});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[tokio::test]
async fn expires_at_is_kept_validated_and_patched() {
    let app = app_max(clock(), None).await;
    app.tenant("acme").await;
    let d = app
        .ok(
            Method::POST,
            "/api/v1/tenants/acme/destinations",
            Some(hook("d1", json!({"expires_at": "2030-02-01T00:00:00Z"}))),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(d["expires_at"], "2030-02-01T00:00:00Z");
    assert_eq!(d["expired"], false);
    let d = app
        .ok(
            Method::GET,
            "/api/v1/tenants/acme/destinations/d1",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(d["expires_at"], "2030-02-01T00:00:00Z");
    // Without max_lifetime nothing is filled in.
    let d = app.webhook("acme", "d2", json!("*")).await;
    assert!(d["expires_at"].is_null(), "{d}");
    for (body, needle) in [
        (
            json!({"expires_at": "2029-12-31T00:00:00Z"}),
            "expires_at: must be in the future",
        ),
        (
            json!({"expires_at": "tomorrow"}),
            "expires_at: \"tomorrow\" is not",
        ),
    ] {
        let (status, v) = app
            .admin(
                Method::POST,
                "/api/v1/tenants/acme/destinations",
                Some(hook("d3", body.clone())),
            )
            .await;
        assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, needle);
        let (status, v) = app
            .admin(
                Method::PATCH,
                "/api/v1/tenants/acme/destinations/d1",
                Some(body),
            )
            .await;
        assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, needle);
    }
    let d = app
        .ok(
            Method::PATCH,
            "/api/v1/tenants/acme/destinations/d1",
            Some(json!({"expires_at": "2030-03-01T00:00:00Z"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(d["expires_at"], "2030-03-01T00:00:00Z");
    let d = app
        .ok(
            Method::PATCH,
            "/api/v1/tenants/acme/destinations/d1",
            Some(json!({"expires_at": null})),
            StatusCode::OK,
        )
        .await;
    assert!(d["expires_at"].is_null());
    // Renew needs expires_at without a max lifetime.
    let (status, v) = app
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/destinations/d1/renew",
            None,
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "expires_at: is required",
    );
    let (status, v) = app
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/destinations/d1/renew",
            Some(json!({"expires_at": "2030-01-02T00:00:00Z", "days": 3})),
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "days: is not a renew option",
    );
    let d = app
        .ok(
            Method::POST,
            "/api/v1/tenants/acme/destinations/d1/renew",
            Some(json!({"expires_at": "2030-01-02T00:00:00Z"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(d["expires_at"], "2030-01-02T00:00:00Z");
}

#[tokio::test]
async fn max_lifetime_caps_and_fills_and_renew_extends_by_it() {
    let clock = clock();
    let app = app_max(clock.clone(), Some(90)).await;
    app.tenant("acme").await;
    let d = app.webhook("acme", "d1", json!("*")).await;
    assert_eq!(d["expires_at"], "2030-04-01T00:00:00Z", "now + 90 days");
    let (status, v) = app
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/destinations",
            Some(hook("d2", json!({"expires_at": "2030-04-01T00:00:01Z"}))),
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "must be at most 90 days from now",
    );
    let (status, v) = app
        .admin(
            Method::PATCH,
            "/api/v1/tenants/acme/destinations/d1",
            Some(json!({"expires_at": null})),
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "cannot be removed",
    );
    clock.advance(Duration::from_secs(10 * 86_400));
    let d = app
        .ok(
            Method::POST,
            "/api/v1/tenants/acme/destinations/d1/renew",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(d["expires_at"], "2030-04-11T00:00:00Z");
}

#[tokio::test]
async fn an_expired_destination_gets_nothing_new_and_its_pending_deliveries_stop() {
    let clock = clock();
    let app = app_max(clock.clone(), None).await;
    app.tenant("acme").await;
    app.ok(
        Method::POST,
        "/api/v1/tenants/acme/destinations",
        Some(hook("live", json!({"expires_at": "2030-01-01T01:00:00Z"}))),
        StatusCode::CREATED,
    )
    .await;
    // A destination whose deliveries keep failing: they stay pending, waiting for retries.
    app.ok(
        Method::POST,
        "/api/v1/tenants/acme/destinations",
        Some(json!({"id": "stuck", "type": "webhook", "topics": "*", "config": {"url": "https://example.com/retry"}, "expires_at": "2030-01-01T01:00:00Z"})),
        StatusCode::CREATED,
    )
    .await;
    let out = app
        .publish(json!({"tenant_id": "acme", "topic": "t", "data": {}}))
        .await;
    assert_eq!(out["destination_ids"].as_array().unwrap().len(), 2, "{out}");
    let store = app.engine.store().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The first attempt of `stuck` fails and leaves its delivery pending (retry later).
    while store.pending_count().await.unwrap() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the failing delivery never settled into a retry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    clock.advance(Duration::from_secs(3600));
    let out = app
        .publish(json!({"tenant_id": "acme", "topic": "t", "data": {}}))
        .await;
    assert_eq!(
        out["destination_ids"],
        json!([]),
        "expired destinations get nothing new"
    );
    let d = app
        .ok(
            Method::GET,
            "/api/v1/tenants/acme/destinations/live",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(d["expired"], true);
    let list = app
        .ok(
            Method::GET,
            "/api/v1/tenants/acme/destinations",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|d| d["expired"] == true),
        "{list}"
    );
    let report = app.engine.check_expiry().await;
    let mut expired = report.expired.clone();
    expired.sort();
    assert_eq!(expired, ["live", "stuck"]);
    assert_eq!(
        store.pending_count().await.unwrap(),
        0,
        "pending deliveries stop"
    );
    // Retries, replays and test events are refused while expired.
    let (status, v) = app
        .admin(
            Method::POST,
            "/api/v1/tenants/acme/destinations/live/test",
            Some(json!({})),
        )
        .await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "has expired");

    // Renewed: it receives again.
    app.ok(
        Method::POST,
        "/api/v1/tenants/acme/destinations/live/renew",
        Some(json!({"expires_at": "2030-06-01T00:00:00Z"})),
        StatusCode::OK,
    )
    .await;
    let out = app
        .publish(json!({"tenant_id": "acme", "topic": "t", "data": {}}))
        .await;
    assert_eq!(out["destination_ids"], json!(["live"]));
}

#[tokio::test]
async fn each_expiry_notice_is_produced_once_per_expiry() {
    let clock = clock();
    let app = app_max(clock.clone(), None).await;
    app.tenant("acme").await;
    app.ok(
        Method::POST,
        "/api/v1/tenants/acme/destinations",
        Some(hook("d1", json!({"expires_at": "2030-01-11T00:00:00Z"}))),
        StatusCode::CREATED,
    )
    .await;
    // An operator destination for the expiry topics: every notice is also an operator event.
    app.ok(
        Method::POST,
        "/api/v1/operator-events/destinations",
        Some(hook(
            "ops",
            json!({"topics": ["destination.expiring", "destination.expired"]}),
        )),
        StatusCode::OK,
    )
    .await;
    let engine = &app.engine;
    let none = herald_engine::expiry::ExpiryReport::default();
    assert_eq!(
        engine.check_expiry().await,
        none,
        "10 days out: nothing yet"
    );
    clock.advance(Duration::from_secs(3 * 86_400 - 1));
    assert_eq!(
        engine.check_expiry().await,
        none,
        "just outside the 7-day lead"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(engine.check_expiry().await.expiring, ["d1"]);
    assert_eq!(engine.check_expiry().await, none, "once");
    clock.advance(Duration::from_secs(7 * 86_400));
    let r = engine.check_expiry().await;
    assert_eq!((r.expiring.len(), r.expired), (0, vec!["d1".to_string()]));
    assert_eq!(engine.check_expiry().await, none, "once");
    // A renewal is a new expiry: a new round of notices; a late first check produces both.
    app.ok(
        Method::POST,
        "/api/v1/tenants/acme/destinations/d1/renew",
        Some(json!({"expires_at": "2030-01-12T00:00:00Z"})),
        StatusCode::OK,
    )
    .await;
    clock.advance(Duration::from_secs(86_400));
    let r = engine.check_expiry().await;
    assert_eq!(
        (r.expiring, r.expired),
        (vec!["d1".to_string()], vec!["d1".to_string()])
    );
    assert_eq!(engine.check_expiry().await, none);

    // Four notices, four operator events (one per topic and expiry), each for d1.
    let events = app
        .ok(
            Method::GET,
            "/api/v1/operator-events/events",
            None,
            StatusCode::OK,
        )
        .await;
    let mut seen: Vec<(String, String)> = events["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            // The event's data is the operator envelope; its own `data` is the payload.
            let payload = &e["data"]["data"];
            assert_eq!(payload["destination"]["id"], "d1", "{e}");
            (
                e["topic"].as_str().unwrap().to_string(),
                payload["expires_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let pair = |t: &str, at: &str| (t.to_string(), at.to_string());
    assert_eq!(
        seen,
        [
            pair("destination.expired", "2030-01-11T00:00:00Z"),
            pair("destination.expired", "2030-01-12T00:00:00Z"),
            pair("destination.expiring", "2030-01-11T00:00:00Z"),
            pair("destination.expiring", "2030-01-12T00:00:00Z"),
        ],
        "{events}"
    );
}

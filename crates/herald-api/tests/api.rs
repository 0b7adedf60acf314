//! The API through `oneshot`: auth and tenant isolation, tenants, destinations, publish,
//! events, attempts, metrics, and bad input everywhere.

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use herald_api::ApiConfig;
use serde_json::{Value, json};

const GET: Method = Method::GET;
const PUT: Method = Method::PUT;
const POST: Method = Method::POST;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

#[tokio::test]
async fn healthz_needs_no_auth() {
    let app = app().await;
    let (status, v) = app.call(GET, "/api/v1/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["workers"]["http-server"]["status"], "healthy");
    assert_eq!(v["workers"]["delivery"]["status"], "healthy");
    assert!(v["timestamp"].is_string());
}

#[tokio::test]
async fn healthz_also_answers_at_the_root() {
    let app = app().await;
    let (status, v) = app.call(GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["workers"]["delivery"]["status"], "healthy");
    // The root has only that route: other API paths stay under /api/v1.
    let (status, _) = app.call(GET, "/tenants", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn authentication() {
    let app = app().await;
    app.tenant("t1").await;
    for auth in [None, Some("wrong-key"), Some("a.b.c"), Some("")] {
        let (status, v) = app.call(GET, "/api/v1/tenants/t1", auth, None).await;
        assert_error(status, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (status, v) = app.raw(GET, "/api/v1/tenants", None, None).await;
    assert_error(status, &v, StatusCode::UNAUTHORIZED, "unauthorized");

    let token = app.token("t1").await;
    let (status, v) = app
        .call(GET, "/api/v1/tenants/t1", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "t1");

    // An expired token, and a token signed with another secret.
    let old = herald_api::auth::issue(JWT_SECRET, "t1", 0, "2020-01-01T00:00:00Z".parse().unwrap());
    let forged = herald_api::auth::issue(b"not-the-secret", "t1", 0, jiff::Timestamp::now());
    for t in [old, forged] {
        let (status, _) = app.call(GET, "/api/v1/tenants/t1", Some(&t), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    // A token outlives nothing: once the tenant is deleted it is stale.
    app.ok(DELETE, "/api/v1/tenants/t1", None, StatusCode::OK)
        .await;
    let (status, _) = app
        .call(GET, "/api/v1/destination-types", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Portal link for an existing tenant.
    app.tenant("t2").await;
    let v = app
        .ok(
            GET,
            "/api/v1/tenants/t2/portal?theme=dark",
            None,
            StatusCode::OK,
        )
        .await;
    let url = v["redirect_url"].as_str().unwrap();
    assert!(
        url.starts_with("http://localhost:3333/portal?token="),
        "{url}"
    );
    assert!(url.ends_with("&tenant_id=t2&theme=dark"), "{url}");
    let (status, v) = app.admin(GET, "/api/v1/tenants/nope/token", None).await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "tenant not found");
}

#[tokio::test]
async fn tenant_tokens_cannot_reach_other_tenants() {
    let app = app().await;
    app.tenant("a").await;
    app.tenant("b").await;
    app.webhook("a", "da", json!("*")).await;
    app.webhook("b", "db", json!("*")).await;
    let pa = app
        .publish(json!({"id": "ea", "tenant_id": "a", "topic": "x", "data": {}}))
        .await;
    assert_eq!(pa["destination_ids"], json!(["da"]));
    app.publish(json!({"id": "eb", "tenant_id": "b", "topic": "x", "data": {}}))
        .await;
    let attempts = app.wait_for_models("/api/v1/attempts?tenant_id=b", 1).await;
    let attempt_b = attempts["models"][0]["id"].as_str().unwrap().to_string();
    app.wait_for_models("/api/v1/attempts?tenant_id=a", 1).await;

    let token = app.token("a").await;
    let t = Some(token.as_str());
    let forbidden: Vec<(Method, String, Option<Value>)> = vec![
        (GET, "/api/v1/tenants/b".into(), None),
        (PUT, "/api/v1/tenants/b".into(), None),
        (DELETE, "/api/v1/tenants/b".into(), None),
        (GET, "/api/v1/tenants/b/destinations".into(), None),
        (POST, "/api/v1/tenants/b/destinations".into(), Some(json!({"type": "webhook", "topics": "*", "config": {"url": "https://x.io"}}))),
        (GET, "/api/v1/tenants/b/destinations/db".into(), None),
        (PATCH, "/api/v1/tenants/b/destinations/db".into(), Some(json!({"topics": ["y"]}))),
        (DELETE, "/api/v1/tenants/b/destinations/db".into(), None),
        (PUT, "/api/v1/tenants/b/destinations/db/enable".into(), None),
        (PUT, "/api/v1/tenants/b/destinations/db/disable".into(), None),
        (GET, "/api/v1/tenants/b/destinations/db/attempts".into(), None),
        (GET, format!("/api/v1/tenants/b/destinations/db/attempts/{attempt_b}"), None),
        // Admin-only routes, even for the token's own tenant.
        (GET, "/api/v1/tenants/a/token".into(), None),
        (GET, "/api/v1/tenants/a/portal".into(), None),
        (POST, "/api/v1/publish".into(), Some(json!({"tenant_id": "a", "topic": "x", "data": {}}))),
        (GET, "/api/v1/metrics/events?time[start]=2020-01-01T00:00:00Z&time[end]=2030-01-01T00:00:00Z&measures=count&dimensions=tenant_id".into(), None),
        (GET, "/api/v1/metrics/attempts?time[start]=2020-01-01T00:00:00Z&time[end]=2030-01-01T00:00:00Z&measures=count&filters[tenant_id]=b".into(), None),
    ];
    for (method, uri, body) in forbidden {
        let (status, v) = app.call(method.clone(), &uri, t, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {v}");
        assert_eq!(v["status"], 403);
    }
    let hidden: Vec<(Method, String, Option<Value>)> = vec![
        (GET, "/api/v1/events/eb".into(), None),
        (GET, format!("/api/v1/attempts/{attempt_b}"), None),
        (
            POST,
            "/api/v1/retry".into(),
            Some(json!({"event_id": "eb", "destination_id": "db"})),
        ),
        (
            POST,
            "/api/v1/retry".into(),
            Some(json!({"event_id": "ea", "destination_id": "db"})),
        ),
    ];
    for (method, uri, body) in hidden {
        let (status, v) = app.call(method.clone(), &uri, t, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {v}");
    }
    // Lists are narrowed to the token's tenant, whatever tenant_id says.
    let (_, v) = app.call(GET, "/api/v1/events?tenant_id=b", t, None).await;
    assert_eq!(ids(&v["models"]), ["ea"]);
    let (_, v) = app.call(GET, "/api/v1/attempts?tenant_id=b", t, None).await;
    assert_eq!(v["models"].as_array().unwrap().len(), 1);
    assert_eq!(v["models"][0]["tenant_id"], "a");
    // Listing tenants is the operator's (docs/api.md), not a tenant token's.
    let (status, v) = app.call(GET, "/api/v1/tenants", t, None).await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "listing tenants");
    // And the own tenant works.
    let (status, _) = app
        .call(GET, "/api/v1/tenants/a/destinations/da", t, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = app.call(GET, "/api/v1/events/ea", t, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) =
        app.call(GET, "/api/v1/metrics/events?time[start]=2020-01-01T00:00:00Z&time[end]=2030-01-01T00:00:00Z&measures=count", t, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["metrics"]["count"], 1, "{v}");
}

fn ids(models: &Value) -> Vec<String> {
    models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn tenant_crud_and_pagination() {
    let app = app().await;
    let v = app
        .ok(
            PUT,
            "/api/v1/tenants/t00",
            Some(json!({"metadata": {"plan": "pro"}})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(v["metadata"], json!({"plan": "pro"}));
    assert_eq!(v["destinations_count"], 0);
    assert_eq!(v["topics"], json!([]));
    let v = app
        .ok(PUT, "/api/v1/tenants/t00", None, StatusCode::OK)
        .await;
    assert_eq!(v["metadata"], Value::Null, "PUT replaces metadata");
    for i in 1..25 {
        app.tenant(&format!("t{i:02}")).await;
    }
    app.webhook("t00", "d1", json!(["user.created"])).await;
    let v = app
        .ok(GET, "/api/v1/tenants/t00", None, StatusCode::OK)
        .await;
    assert_eq!(v["destinations_count"], 1);
    assert_eq!(v["topics"], json!(["user.created"]));

    // Walk forward newest first, then back.
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut uri = "/api/v1/tenants?limit=10".to_string();
    loop {
        let v = app.ok(GET, &uri, None, StatusCode::OK).await;
        assert_eq!(v["count"], 25);
        assert_eq!(v["pagination"]["order_by"], "created_at");
        assert_eq!(v["pagination"]["dir"], "desc");
        assert_eq!(v["pagination"]["limit"], 10);
        seen.extend(ids(&v["models"]));
        pages.push(v.clone());
        match v["pagination"]["next"].as_str() {
            Some(next) => uri = format!("/api/v1/tenants?limit=10&next={next}"),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0]["pagination"]["prev"], Value::Null);
    let mut expected: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    expected.reverse();
    assert_eq!(seen, expected);
    let prev = pages[2]["pagination"]["prev"].as_str().unwrap();
    let v = app
        .ok(
            GET,
            &format!("/api/v1/tenants?limit=10&prev={prev}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&v["models"]), ids(&pages[1]["models"]));

    let v = app
        .ok(
            GET,
            "/api/v1/tenants?dir=asc&limit=2&id[0]=t05&id[1]=t03&id[2]=t09",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&v["models"]), ["t03", "t05"]);
    assert_eq!(v["count"], 3);

    for (q, needle) in [
        ("limit=0", "between 1 and 100"),
        ("limit=x", "integer"),
        ("next=garbage!", "invalid cursor"),
        ("next=a&prev=b", "mutually exclusive"),
    ] {
        let (status, v) = app.admin(GET, &format!("/api/v1/tenants?{q}"), None).await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, needle);
    }
    let (status, v) = app.admin(GET, "/api/v1/tenants?dir=sideways", None).await;
    assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, "dir");

    let v = app
        .ok(DELETE, "/api/v1/tenants/t00", None, StatusCode::OK)
        .await;
    assert_eq!(v, json!({"success": true}));
    let (status, v) = app.admin(DELETE, "/api/v1/tenants/t00", None).await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "tenant not found");
    let (status, v) = app
        .admin(GET, "/api/v1/tenants/t00/destinations", None)
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "tenant not found");
    let (status, v) = app
        .admin(
            PUT,
            "/api/v1/tenants/t01",
            Some(json!({"metadata": {"n": 1}})),
        )
        .await;
    assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, "metadata.n");
}

#[tokio::test]
async fn destination_create_read_and_filters() {
    let app = app().await;
    app.tenant("t").await;
    let d = app
        .webhook("t", "", json!(["user.created", "user.deleted"]))
        .await;
    let id = d["id"].as_str().unwrap();
    assert!(id.starts_with("des_"), "{id}");
    assert_eq!(d["type"], "webhook");
    assert_eq!(d["topics"], json!(["user.created", "user.deleted"]));
    assert_eq!(d["target"], "example.com");
    assert_eq!(d["target_url"], "https://example.com/hook");
    assert_eq!(d["disabled_at"], Value::Null);
    assert_eq!(d["filter"], Value::Null);
    let secret = d["credentials"]["secret"].as_str().unwrap();
    assert!(
        herald_core::signing::is_valid_secret(secret),
        "generated secret {secret}"
    );

    let q = app
        .ok(
            POST,
            "/api/v1/tenants/t/destinations",
            Some(json!({"id": "q1", "type": "queue", "topics": "*", "config": {"name": "jobs"},
                         "credentials": {"password": "hunter2-very-secret"}, "filter": {"data": {"amount": {"$gte": 10}}},
                         "metadata": {"team": "x"}, "delivery_metadata": {"app": "y"}, "disabled_at": "2024-01-01T00:00:00Z"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(q["topics"], "*");
    assert_eq!(
        q["credentials"]["password"], "hunt***************",
        "sensitive fields are masked"
    );
    assert_eq!(q["filter"], json!({"data": {"amount": {"$gte": 10}}}));
    assert_eq!(q["disabled_at"], "2024-01-01T00:00:00Z");
    assert_eq!(q["target"], "jobs");
    assert_eq!(q["target_url"], Value::Null);

    let list = app
        .ok(GET, "/api/v1/tenants/t/destinations", None, StatusCode::OK)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let by_type = app
        .ok(
            GET,
            "/api/v1/tenants/t/destinations?type[0]=queue",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&by_type), ["q1"]);
    let by_topic = app
        .ok(
            GET,
            "/api/v1/tenants/t/destinations?topics[]=user.deleted",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        by_topic.as_array().unwrap().len(),
        2,
        "\"*\" subscribes to every topic"
    );
    let by_topic = app
        .ok(
            GET,
            "/api/v1/tenants/t/destinations?topics=order.paid&type=webhook",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(by_topic, json!([]));

    let (status, v) = app.admin(POST, "/api/v1/tenants/t/destinations", Some(json!({"id": "q1", "type": "queue", "topics": "*", "config": {"name": "a"}, "credentials": {"password": "p"}}))).await;
    assert_error(status, &v, StatusCode::CONFLICT, "already exists");
    let (status, v) = app
        .admin(GET, "/api/v1/tenants/t/destinations/nope", None)
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "destination not found");

    let v = app
        .ok(
            DELETE,
            "/api/v1/tenants/t/destinations/q1",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v, json!({"success": true}));
    let (status, _) = app
        .admin(DELETE, "/api/v1/tenants/t/destinations/q1", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn destination_validation_names_the_field() {
    let app = app_with(
        catalog(&["user.created", "user.deleted", "order.paid"]),
        ApiConfig::DEFAULT_MAX_BODY_BYTES,
    )
    .await;
    app.tenant("t").await;
    let uri = "/api/v1/tenants/t/destinations";
    let base =
        json!({"type": "webhook", "topics": ["user.created"], "config": {"url": "https://x.io"}});
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases = [
        (
            with(json!({"type": "carrier_pigeon"})),
            "type: unknown destination type",
        ),
        (with(json!({"type": null})), "type: is required"),
        (with(json!({"topics": []})), "topics: must not be empty"),
        (with(json!({"topics": null})), "topics: is required"),
        (
            with(json!({"topics": "user.created"})),
            "topics: expected \"*\" or an array",
        ),
        (
            with(json!({"topics": ["user.created", ""]})),
            "topics[1]: must not be empty",
        ),
        (
            with(json!({"topics": ["user.created", 5]})),
            "topics[1]: expected a string",
        ),
        (
            with(json!({"topics": ["nope.created"]})),
            "topics[0]: \"nope.created\" is not in the topic catalog",
        ),
        (
            with(json!({"topics": ["invoice.*"]})),
            "matches no topic in the topic catalog",
        ),
        (with(json!({"filter": {"data": {"$bogus": 1}}})), "filter"),
        (with(json!({"filter": "x"})), "filter: expected an object"),
        (
            with(json!({"config": {"url": "ftp://x"}})),
            "config.url: must be an http(s) URL",
        ),
        (
            with(json!({"config": {"url": 5}})),
            "config.url: expected a string",
        ),
        (with(json!({"config": {}})), "config.url: is required"),
        (
            with(json!({"config": {"url": "https://x.io", "colour": "red"}})),
            "config.colour: is not a field",
        ),
        (
            // Every valid key is listed, the engine-level ones included.
            with(json!({"config": {"url": "https://x.io", "colour": "red"}})),
            "(valid: url, custom_headers, rate_limit_per_minute, max_in_flight, signing_mode, signature_content_template, signature_header_template, signature_encoding)",
        ),
        (
            with(json!({"config": {"url": "https://x.io", "rate_limit_per_minute": 0}})),
            "config.rate_limit_per_minute: \"0\" must be at least 1",
        ),
        (
            with(json!({"config": {"url": "https://x.io", "max_in_flight": "many"}})),
            "config.max_in_flight: \"many\" is not a whole number",
        ),
        (
            with(json!({"config": {"url": "https://x.io", "signing_mode": "loud"}})),
            "config.signing_mode: unknown variant `loud`",
        ),
        (
            with(json!({"metadata": {"a": true}})),
            "metadata.a: expected a string",
        ),
        (
            with(json!({"disabled_at": "2999-01-01T00:00:00Z"})),
            "disabled_at: must not be in the future",
        ),
        (
            with(json!({"created_at": "yesterday"})),
            "created_at: \"yesterday\" is not an RFC 3339",
        ),
        (
            with(json!({"credentials": {"rotate_secret": true}})),
            "credentials.rotate_secret",
        ),
        (
            with(json!({"credentials": {"secret": "has spaces in it"}})),
            "credentials.secret",
        ),
        (with(json!({"id": "a/b"})), "id: "),
    ];
    for (body, needle) in cases {
        let (status, v) = app.admin(POST, uri, Some(body.clone())).await;
        assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, needle);
        assert!(
            app.admin(GET, uri, None)
                .await
                .1
                .as_array()
                .is_some_and(Vec::is_empty),
            "{body} was half-created"
        );
        assert!(
            v["data"].as_array().is_some_and(|d| !d.is_empty()),
            "{body} → {v}"
        );
    }
    // Wildcards that match a catalog topic are fine, and so is "*" inside an array.
    let v = app
        .ok(
            POST,
            uri,
            Some(with(json!({"topics": ["user.*"]}))),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(v["topics"], json!(["user.*"]));
    let v = app
        .ok(
            POST,
            uri,
            Some(with(json!({"topics": ["*"], "filter": {}}))),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(v["topics"], "*");
    assert_eq!(v["filter"], Value::Null);

    for (raw, want, needle) in [
        ("{not json", StatusCode::BAD_REQUEST, "malformed JSON"),
        ("", StatusCode::BAD_REQUEST, "request body is required"),
        (
            "[1,2]",
            StatusCode::UNPROCESSABLE_ENTITY,
            "body: expected a JSON object",
        ),
    ] {
        let (status, v) = app.raw(POST, uri, Some(ADMIN), Some(raw.into())).await;
        assert_error(status, &v, want, needle);
    }
    // Nothing above was stored.
    assert_eq!(
        app.ok(GET, uri, None, StatusCode::OK)
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn destination_patch_is_a_merge_patch() {
    let app = app().await;
    app.tenant("t").await;
    let uri = "/api/v1/tenants/t/destinations/d";
    app.ok(
        POST,
        "/api/v1/tenants/t/destinations",
        Some(json!({"id": "d", "type": "webhook", "topics": ["a"], "config": {"url": "https://x.io/1", "custom_headers": "{}"},
                     "metadata": {"a": "1", "b": "2"}, "filter": {"data": {"x": 1}}})),
        StatusCode::CREATED,
    )
    .await;

    let v = app
        .ok(
            PATCH,
            uri,
            Some(json!({"metadata": {"b": null, "c": "3"}, "config": {"url": "https://x.io/2"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["metadata"], json!({"a": "1", "c": "3"}));
    assert_eq!(
        v["config"],
        json!({"url": "https://x.io/2", "custom_headers": "{}"})
    );
    assert_eq!(v["topics"], json!(["a"]), "omitted topics are unchanged");
    assert_eq!(
        v["filter"],
        json!({"data": {"x": 1}}),
        "omitted filter is unchanged"
    );

    let v = app.ok(PATCH, uri, Some(json!({"type": "webhook", "topics": "*", "filter": {"data": {"y": 2}}, "config": {"custom_headers": null}})), StatusCode::OK).await;
    assert_eq!(v["topics"], "*");
    assert_eq!(
        v["filter"],
        json!({"data": {"y": 2}}),
        "filter is replaced, not merged"
    );
    assert_eq!(v["config"], json!({"url": "https://x.io/2"}));
    let v = app
        .ok(
            PATCH,
            uri,
            Some(json!({"filter": {}, "metadata": null, "delivery_metadata": {"k": "v"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["filter"], Value::Null);
    assert_eq!(v["metadata"], Value::Null);
    assert_eq!(v["delivery_metadata"], json!({"k": "v"}));

    for (body, needle) in [
        (json!({"type": "queue"}), "type: cannot be changed"),
        (json!({"topics": []}), "topics: must not be empty"),
        (json!({"topics": null}), "topics: must be"),
        (json!({"config": {"url": "nope"}}), "config.url"),
        (json!({"config": {"url": null}}), "config.url: is required"),
        (
            json!({"disabled_at": "3000-01-01T00:00:00Z"}),
            "disabled_at",
        ),
        (json!({"filter": {"$nope": 1}}), "filter"),
    ] {
        let (status, v) = app.admin(PATCH, uri, Some(body)).await;
        assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, needle);
    }
    // A failed patch changed nothing.
    let v = app.ok(GET, uri, None, StatusCode::OK).await;
    assert_eq!(v["config"]["url"], "https://x.io/2");
    assert_eq!(v["topics"], "*");

    // Disable / enable through PATCH and through the dedicated routes.
    let v = app
        .ok(
            PATCH,
            uri,
            Some(json!({"disabled_at": "2024-05-01T00:00:00Z"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["disabled_at"], "2024-05-01T00:00:00Z");
    let v = app
        .ok(
            PATCH,
            uri,
            Some(json!({"disabled_at": null})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["disabled_at"], Value::Null);
    let v = app
        .ok(PUT, &format!("{uri}/disable"), None, StatusCode::OK)
        .await;
    assert!(v["disabled_at"].is_string());
    let v = app
        .ok(PUT, &format!("{uri}/disable"), None, StatusCode::OK)
        .await;
    assert!(v["disabled_at"].is_string(), "disabling twice is fine");
    let v = app
        .ok(PUT, &format!("{uri}/enable"), None, StatusCode::OK)
        .await;
    assert_eq!(v["disabled_at"], Value::Null);
    let (status, _) = app
        .admin(PUT, "/api/v1/tenants/t/destinations/none/enable", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn webhook_secrets_and_rotation() {
    let app = app().await;
    app.tenant("t").await;
    let token = app.token("t").await;
    let t = Some(token.as_str());
    let uri = "/api/v1/tenants/t/destinations/d";
    let created = app.webhook("t", "d", json!("*")).await;
    let first = created["credentials"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(created["credentials"].get("previous_secret").is_none());

    // A tenant token may not choose secrets or timestamps on create.
    let body = json!({"type": "webhook", "topics": "*", "config": {"url": "https://x.io"}, "credentials": {"secret": "whsec_mine"}});
    let (status, v) = app
        .call(POST, "/api/v1/tenants/t/destinations", t, Some(body))
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "credentials.secret: is forbidden",
    );
    let body = json!({"type": "webhook", "topics": "*", "config": {"url": "https://x.io"}, "created_at": "2024-01-01T00:00:00Z"});
    let (status, v) = app
        .call(POST, "/api/v1/tenants/t/destinations", t, Some(body))
        .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "created_at");

    // Nor change them on update — but sending them back unchanged is fine.
    let (status, v) = app
        .call(
            PATCH,
            uri,
            t,
            Some(json!({"credentials": {"secret": "whsec_other"}})),
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "credentials.secret: is forbidden",
    );
    let (status, v) = app
        .call(
            PATCH,
            uri,
            t,
            Some(json!({"credentials": {"secret": first}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // Rotation, by the tenant.
    let (status, v) = app
        .call(
            PATCH,
            uri,
            t,
            Some(json!({"credentials": {"rotate_secret": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let creds = &v["credentials"];
    assert_eq!(creds["previous_secret"], first.as_str());
    let second = creds["secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let invalid_at: jiff::Timestamp = creds["previous_secret_invalid_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let hours = invalid_at
        .duration_since(jiff::Timestamp::now())
        .as_secs_f64()
        / 3600.0;
    assert!((23.9..=24.0).contains(&hours), "{hours}");

    // Rotation with a chosen expiry, by the admin; then the admin sets a secret directly.
    let v = app
        .ok(PATCH, uri, Some(json!({"credentials": {"rotate_secret": true, "previous_secret_invalid_at": "2030-01-01T00:00:00Z"}})), StatusCode::OK)
        .await;
    assert_eq!(v["credentials"]["previous_secret"], second.as_str());
    assert_eq!(
        v["credentials"]["previous_secret_invalid_at"],
        "2030-01-01T00:00:00Z"
    );
    let v = app
        .ok(
            PATCH,
            uri,
            Some(json!({"credentials": {"secret": "plain-secret-for-outpost-mode"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["credentials"]["secret"], "plain-secret-for-outpost-mode");
    let (status, v) = app
        .admin(
            PATCH,
            uri,
            Some(json!({"credentials": {"rotate_secret": "maybe"}})),
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "credentials.rotate_secret",
    );

    // Masked values sent back keep the stored secret (queue type: password is sensitive).
    app.ok(
        POST,
        "/api/v1/tenants/t/destinations",
        Some(json!({"id": "q", "type": "queue", "topics": "*", "config": {"name": "jobs"}, "credentials": {"password": "correct-horse-battery"}})),
        StatusCode::CREATED,
    )
    .await;
    let shown = app
        .ok(
            GET,
            "/api/v1/tenants/t/destinations/q",
            None,
            StatusCode::OK,
        )
        .await;
    let masked = shown["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(masked, "correct-horse-battery");
    let v = app
        .ok(
            PATCH,
            "/api/v1/tenants/t/destinations/q",
            Some(json!({"credentials": {"password": masked}, "config": {"name": "jobs2"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["credentials"]["password"], masked.as_str());
    let stored = app
        .engine
        .store()
        .get_destination("t", "q")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.credentials["password"], "correct-horse-battery");
    assert_eq!(stored.config["name"], "jobs2");
    let (status, v) = app
        .admin(
            PATCH,
            "/api/v1/tenants/t/destinations/q",
            Some(json!({"credentials": {"rotate_secret": true}})),
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "queue destinations are not signed",
    );
}

#[tokio::test]
async fn publish_events_attempts_and_retry() {
    let app = app_with(
        catalog(&["user.created", "order.paid"]),
        ApiConfig::DEFAULT_MAX_BODY_BYTES,
    )
    .await;
    app.tenant("t").await;
    app.webhook("t", "ok", json!(["user.created"])).await;
    app.ok(
        POST,
        "/api/v1/tenants/t/destinations",
        Some(json!({"id": "bad", "type": "webhook", "topics": "*", "config": {"url": "https://fail.example.com"}})),
        StatusCode::CREATED,
    )
    .await;

    for (body, needle) in [
        (json!({"tenant_id": "t", "data": {}}), "topic: is required"),
        (
            json!({"tenant_id": "t", "topic": "nope", "data": {}}),
            "topic: \"nope\" is not in the topic catalog",
        ),
        (
            json!({"topic": "order.paid", "data": {}}),
            "tenant_id: is required",
        ),
        (
            json!({"tenant_id": "t", "topic": "order.paid"}),
            "data: is required",
        ),
        (
            json!({"tenant_id": "t", "topic": "order.paid", "data": [1]}),
            "data: must be a JSON object",
        ),
        (
            json!({"tenant_id": "t", "topic": "order.paid", "data": {}, "time": "noon"}),
            "time",
        ),
        (
            json!({"tenant_id": "t", "topic": "order.paid", "data": {}, "metadata": {"n": 1}}),
            "metadata.n",
        ),
        (
            json!({"tenant_id": "t", "topic": "order.paid", "data": {}, "eligible_for_retry": "yes"}),
            "eligible_for_retry",
        ),
    ] {
        let (status, v) = app.admin(POST, "/api/v1/publish", Some(body)).await;
        assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, needle);
    }

    let p = app
        .publish(json!({"id": "e1", "tenant_id": "t", "topic": "user.created", "time": "2026-01-01T00:00:00Z",
                        "metadata": {"source": "crm"}, "data": {"user": 1}}))
        .await;
    let mut matched: Vec<String> = p["destination_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    matched.sort();
    assert_eq!(
        (p["id"].clone(), p["duplicate"].clone(), matched),
        (
            json!("e1"),
            json!(false),
            vec!["bad".to_string(), "ok".to_string()]
        )
    );
    let again = app
        .publish(
            json!({"id": "e1", "tenant_id": "t", "topic": "user.created", "data": {"user": 1}}),
        )
        .await;
    assert_eq!(again["duplicate"], true);
    let p2 = app.publish(json!({"tenant_id": "t", "topic": "order.paid", "data": {}, "eligible_for_retry": false})).await;
    assert!(p2["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(p2["destination_ids"], json!(["bad"]));
    let p3 = app
        .publish(json!({"tenant_id": "unknown-tenant", "topic": "order.paid", "data": {}}))
        .await;
    assert_eq!(
        p3["destination_ids"],
        json!([]),
        "publishing for an unknown tenant matches nothing"
    );

    // Events.
    let v = app.ok(GET, "/api/v1/events/e1", None, StatusCode::OK).await;
    assert_eq!(v["topic"], "user.created");
    assert_eq!(v["time"], "2026-01-01T00:00:00Z");
    assert_eq!(v["metadata"], json!({"source": "crm"}));
    assert_eq!(v["data"], json!({"user": 1}));
    assert_eq!(v["eligible_for_retry"], true);
    let (status, _) = app
        .admin(GET, "/api/v1/events/e1?tenant_id=other", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v = app
        .ok(
            GET,
            "/api/v1/events?tenant_id=t&topic=user.created",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(ids(&v["models"]), ["e1"]);
    assert_eq!(v["pagination"]["order_by"], "time");
    assert_eq!(v["pagination"]["limit"], 100);
    let v = app.ok(GET, "/api/v1/events?tenant_id=t&destination_id=bad&time[gte]=2026-01-01&time[lt]=2026-01-02", None, StatusCode::OK).await;
    assert_eq!(ids(&v["models"]), ["e1"]);
    let v = app
        .ok(GET, "/api/v1/events?limit=1&dir=asc", None, StatusCode::OK)
        .await;
    assert_eq!(v["models"].as_array().unwrap().len(), 1);
    assert!(v["pagination"]["next"].is_string());
    for (q, want) in [
        ("limit=1001", 400),
        ("order_by=topic", 422),
        ("time[gte]=soon", 422),
        ("time[any]=1", 400),
    ] {
        let (status, v) = app.admin(GET, &format!("/api/v1/events?{q}"), None).await;
        assert_eq!(status.as_u16(), want, "{q}: {v}");
    }

    // Attempts: e1 → ok (success), e1 → bad (failed), e2 → bad (failed).
    let v = app.wait_for_models("/api/v1/attempts?tenant_id=t", 3).await;
    assert!(
        v["models"][0].get("response_data").is_none(),
        "response_data only on request"
    );
    assert!(v["models"][0].get("event").is_none());
    let v = app.ok(GET, "/api/v1/attempts?destination_id=ok&include=event.data&include=response_data&include=destination", None, StatusCode::OK).await;
    let a = &v["models"][0];
    assert_eq!(
        (
            a["status"].clone(),
            a["code"].clone(),
            a["attempt_number"].clone()
        ),
        (json!("success"), json!("200"), json!(1))
    );
    assert_eq!(a["response_data"]["status_code"], 200);
    assert_eq!(a["event"]["data"], json!({"user": 1}));
    assert_eq!(a["event"]["destination_id"], "ok");
    assert_eq!(a["destination"]["id"], "ok");
    let attempt_id = a["id"].as_str().unwrap().to_string();
    let v = app
        .ok(
            GET,
            "/api/v1/attempts?status=failed&include[0]=event",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
    assert!(
        v["models"][0]["event"].get("data").is_none(),
        "include=event is a summary"
    );
    let (status, v) = app.admin(GET, "/api/v1/attempts?status=meh", None).await;
    assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, "status");

    let v = app
        .ok(
            GET,
            &format!("/api/v1/attempts/{attempt_id}?include=response_data"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["response_data"]["body"], "ok");
    let v = app
        .ok(
            GET,
            &format!("/api/v1/tenants/t/destinations/ok/attempts/{attempt_id}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["id"], attempt_id.as_str());
    let (status, _) = app
        .admin(
            GET,
            &format!("/api/v1/tenants/t/destinations/bad/attempts/{attempt_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v = app
        .ok(
            GET,
            "/api/v1/tenants/t/destinations/bad/attempts",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["models"].as_array().unwrap().len(), 2);

    // Retry.
    let v = app
        .ok(
            POST,
            "/api/v1/retry",
            Some(json!({"event_id": "e1", "destination_id": "ok"})),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(v, json!({"success": true}));
    app.wait_for_models("/api/v1/attempts?destination_id=ok", 2)
        .await;
    let v = app
        .ok(
            GET,
            "/api/v1/attempts?destination_id=ok&dir=desc",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["models"][0]["manual"], true);
    let e2 = p2["id"].as_str().unwrap();
    let (status, v) = app
        .admin(
            POST,
            "/api/v1/retry",
            Some(json!({"event_id": e2, "destination_id": "ok"})),
        )
        .await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "does not subscribe");
    app.ok(
        PUT,
        "/api/v1/tenants/t/destinations/ok/disable",
        None,
        StatusCode::OK,
    )
    .await;
    let (status, v) = app
        .admin(
            POST,
            "/api/v1/retry",
            Some(json!({"event_id": "e1", "destination_id": "ok"})),
        )
        .await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "disabled");
    let (status, v) = app
        .admin(
            POST,
            "/api/v1/retry",
            Some(json!({"event_id": "e1", "destination_id": "zzz"})),
        )
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "destination not found");
    let (status, v) = app
        .admin(
            POST,
            "/api/v1/retry",
            Some(json!({"event_id": "nope", "destination_id": "ok"})),
        )
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "event not found");
    let (status, v) = app
        .admin(POST, "/api/v1/retry", Some(json!({"event_id": "e1"})))
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "destination_id: is required",
    );

    // Metrics over what happened.
    let base =
        "/api/v1/metrics/attempts?time[start]=2000-01-01T00:00:00Z&time[end]=2100-01-01T00:00:00Z";
    let v = app
        .ok(GET, &format!("{base}&measures[0]=count&measures[1]=error_rate&measures[2]=successful_count&dimensions[0]=destination_id&filters[manual]=false"), None, StatusCode::OK)
        .await;
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let bad = rows
        .iter()
        .find(|r| r["dimensions"]["destination_id"] == "bad")
        .unwrap();
    assert_eq!(
        bad["metrics"],
        json!({"count": 2, "error_rate": 1.0, "successful_count": 0})
    );
    assert_eq!(v["metadata"]["row_limit"], 100_000);
    assert_eq!(v["metadata"]["truncated"], false);
    assert!(v["metadata"].get("granularity").is_none());
    let v = app
        .ok(
            GET,
            &format!("{base}&measures=count&granularity=1d&dimensions=manual"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["metadata"]["granularity"], "1d");
    assert!(v["data"][0]["time_bucket"].is_string(), "{v}");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dimensions"]["manual"] == "true"),
        "{v}"
    );
    let v = app
        .ok(GET, "/api/v1/metrics/events?time[start]=2000-01-01T00:00:00Z&time[end]=2100-01-01T00:00:00Z&measures=count&dimensions=topic&tenant_id=t", None, StatusCode::OK)
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
}

#[tokio::test]
async fn publishing_says_whether_the_tenant_exists() {
    let app = app().await;
    app.tenant("with-destination").await;
    app.webhook("with-destination", "d1", json!(["a"])).await;
    app.tenant("bare").await;
    for (tenant, topic, found, matched) in [
        ("with-destination", "a", true, json!(["d1"])),
        // Known through the store when nothing matched.
        ("with-destination", "b", true, json!([])),
        ("bare", "a", true, json!([])),
        ("nobody", "a", false, json!([])),
    ] {
        let p = app
            .publish(json!({"tenant_id": tenant, "topic": topic, "data": {}}))
            .await;
        assert_eq!(p["tenant_found"], found, "{tenant}/{topic}: {p}");
        assert_eq!(p["destination_ids"], matched, "{tenant}/{topic}: {p}");
    }
    // Still accepted and stored, as in Outpost; a duplicate answers the same.
    let body = json!({"id": "e-nobody", "tenant_id": "nobody", "topic": "a", "data": {}});
    let first = app.publish(body.clone()).await;
    let again = app.publish(body).await;
    assert_eq!(
        (first["tenant_found"].clone(), again["duplicate"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(again["tenant_found"], false);
    app.ok(GET, "/api/v1/events/e-nobody", None, StatusCode::OK)
        .await;
}

#[tokio::test]
async fn require_known_tenant_refuses_unknown_tenants_with_404() {
    let app = app_on(
        Vec::new(),
        ApiConfig::DEFAULT_MAX_BODY_BYTES,
        std::sync::Arc::new(herald_core::SystemClock),
        herald_engine::EngineConfig {
            require_known_tenant: true,
            ..Default::default()
        },
    )
    .await;
    let (status, v) = app
        .admin(
            POST,
            "/api/v1/publish",
            Some(json!({"id": "e1", "tenant_id": "nobody", "topic": "a", "data": {}})),
        )
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "tenant not found");
    let (status, _) = app.admin(GET, "/api/v1/events/e1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    app.tenant("nobody").await;
    let p = app
        .publish(json!({"id": "e1", "tenant_id": "nobody", "topic": "a", "data": {}}))
        .await;
    assert_eq!(p["tenant_found"], true);
}

#[tokio::test]
async fn metrics_parameters_are_checked() {
    let app = app().await;
    let t = "time[start]=2026-01-01T00:00:00Z&time[end]=2026-01-02T00:00:00Z";
    for (path, q, needle) in [
        (
            "events",
            "measures=count".to_string(),
            "time[start] and time[end] are required",
        ),
        (
            "events",
            "measures=count&time[start]=2026-01-01T00:00:00Z".to_string(),
            "required",
        ),
        (
            "events",
            "measures=count&time[start]=x&time[end]=2026-01-02T00:00:00Z".to_string(),
            "invalid time[start]",
        ),
        (
            "events",
            "measures=count&time[start]=2026-01-02T00:00:00Z&time[end]=2026-01-01T00:00:00Z"
                .to_string(),
            "after",
        ),
        ("events", t.to_string(), "at least one measure"),
        (
            "events",
            format!("{t}&measures=error_rate"),
            "unknown measure \"error_rate\"",
        ),
        (
            "events",
            format!("{t}&measures=count&dimensions=status"),
            "unknown dimension",
        ),
        (
            "events",
            format!("{t}&measures=count&filters[status]=success"),
            "unknown filter",
        ),
        (
            "attempts",
            format!("{t}&measures=count&granularity=25h"),
            "invalid granularity",
        ),
        (
            "attempts",
            format!("{t}&measures=count&granularity=1y"),
            "invalid granularity",
        ),
        (
            "attempts",
            format!("{t}&measures=count&filters[status]=ok"),
            "filters[status]",
        ),
        (
            "attempts",
            format!("{t}&measures=count&filters[manual]=maybe"),
            "filters[manual]",
        ),
        (
            "attempts",
            format!("{t}&measures=count&filters[attempt_number]=first"),
            "filters[attempt_number]",
        ),
    ] {
        let (status, v) = app
            .admin(GET, &format!("/api/v1/metrics/{path}?{q}"), None)
            .await;
        assert_error(status, &v, StatusCode::BAD_REQUEST, needle);
    }
    let v = app
        .ok(
            GET,
            &format!("/api/v1/metrics/attempts?{t}&measures=count,rate&granularity=12M"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        v,
        json!({"data": [], "metadata": {"granularity": "12M", "query_time_ms": v["metadata"]["query_time_ms"], "row_count": 0, "row_limit": 100000, "truncated": false}})
    );
}

#[tokio::test]
async fn routing_limits_and_catalog() {
    let app = app_with(catalog(&["user.created"]), 256).await;
    app.tenant("t").await;
    let (status, v) = app.admin(GET, "/api/v1/nope", None).await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "route not found");
    let (status, v) = app.admin(GET, "/elsewhere", None).await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "route not found");
    let (status, v) = app.admin(DELETE, "/api/v1/publish", None).await;
    assert_error(
        status,
        &v,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    );

    let big =
        json!({"tenant_id": "t", "topic": "user.created", "data": {"blob": "x".repeat(1000)}});
    let (status, v) = app.admin(POST, "/api/v1/publish", Some(big)).await;
    assert_error(status, &v, StatusCode::PAYLOAD_TOO_LARGE, "256 bytes");

    let v = app.ok(GET, "/api/v1/topics", None, StatusCode::OK).await;
    assert_eq!(v, json!(["user.created"]));
    let v = app
        .ok(GET, "/api/v1/topics/catalog", None, StatusCode::OK)
        .await;
    assert_eq!(
        v,
        json!([{"name": "user.created", "description": "user.created happened", "sample": {"id": 1}}])
    );
    let v = app
        .ok(GET, "/api/v1/destination-types", None, StatusCode::OK)
        .await;
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["queue", "stream", "webhook"]);
    let v = app
        .ok(
            GET,
            "/api/v1/destination-types/webhook",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        v["config_fields"][0],
        json!({"key": "url", "type": "text", "label": "url", "description": "the url", "required": true, "sensitive": false})
    );
    let (status, v) = app
        .admin(GET, "/api/v1/destination-types/pigeon", None)
        .await;
    assert_error(
        status,
        &v,
        StatusCode::NOT_FOUND,
        "destination type not found",
    );
    let token = app.token("t").await;
    let (status, _) = app
        .call(GET, "/api/v1/destination-types", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Numbers, booleans and objects may be sent as native JSON or as the contract's strings;
/// either way they are answered as strings.
#[tokio::test]
async fn config_accepts_native_json_and_answers_strings() {
    let app = app().await;
    app.tenant("t").await;
    let uri = "/api/v1/tenants/t/destinations";
    let d = app
        .ok(
            POST,
            uri,
            Some(json!({
                "type": "webhook", "topics": "*",
                "config": {
                    "url": "https://x.io",
                    "rate_limit_per_minute": 60,
                    "max_in_flight": "4",
                    "custom_headers": {"x-a": "1"}
                }
            })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(d["config"]["rate_limit_per_minute"], "60");
    assert_eq!(d["config"]["max_in_flight"], "4");
    assert_eq!(d["config"]["custom_headers"], r#"{"x-a":"1"}"#);
    let id = d["id"].as_str().unwrap();
    // What the engine applies, parsed from what was stored.
    let stored = app
        .engine
        .store()
        .get_destination("t", id)
        .await
        .unwrap()
        .unwrap();
    let delivery = app.engine.registry().delivery(&stored);
    assert_eq!(delivery.settings.rate_limit_per_minute, Some(60));
    assert_eq!(delivery.settings.max_in_flight, Some(4));
    let d = app
        .ok(
            PATCH,
            &format!("{uri}/{id}"),
            Some(json!({"config": {"rate_limit_per_minute": null, "max_in_flight": 8}})),
            StatusCode::OK,
        )
        .await;
    assert!(d["config"].get("rate_limit_per_minute").is_none(), "{d}");
    assert_eq!(d["config"]["max_in_flight"], "8");
}

/// Every signing type gets the webhook's secret handling under its own credential name: a
/// generated secret, rotation with overlap, tenant tokens refused, the old `secret` name read;
/// its other secrets stay masked and are kept when sent back masked.
#[tokio::test]
async fn every_signing_type_generates_and_rotates_its_secret() {
    let app = app().await;
    app.tenant("t").await;
    let token = app.token("t").await;
    let uri = "/api/v1/tenants/t/destinations";
    let body = json!({"id": "s", "type": "stream", "topics": "*", "config": {"stream": "events"},
        "credentials": {"password": "hunter2-long-password"}});
    let created = app.ok(POST, uri, Some(body), StatusCode::CREATED).await;
    let creds = &created["credentials"];
    let first = creds["signing_secret"].as_str().unwrap().to_string();
    assert!(first.starts_with("whsec_"), "{created}");
    assert_eq!(creds["password"], "hunt*****************");
    assert!(creds.get("secret").is_none(), "{created}");

    // The old name is understood on create (admin) and stored under the new one.
    let body = json!({"id": "s2", "type": "stream", "topics": "*", "config": {"stream": "e"},
        "credentials": {"password": "p", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}});
    let v = app.ok(POST, uri, Some(body), StatusCode::CREATED).await;
    assert_eq!(
        v["credentials"]["signing_secret"],
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );

    // A tenant token may not choose it.
    let body = json!({"type": "stream", "topics": "*", "config": {"stream": "e"},
        "credentials": {"password": "p", "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}});
    let (status, v) = app.call(POST, uri, Some(&token), Some(body)).await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "credentials.signing_secret: is forbidden",
    );

    // The masked password sent back keeps the stored one; rotation by the tenant.
    let one = format!("{uri}/s");
    let v = app
        .call(
            PATCH,
            &one,
            Some(&token),
            Some(json!({"credentials": {"password": "hunt*****************", "rotate_secret": true}})),
        )
        .await;
    assert_eq!(v.0, StatusCode::OK, "{}", v.1);
    let creds = &v.1["credentials"];
    assert_eq!(creds["previous_secret"], first.as_str());
    assert_ne!(creds["signing_secret"], first.as_str());
    assert!(creds["previous_secret_invalid_at"].is_string());
    let stored = app
        .engine
        .store()
        .get_destination("t", "s")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.credentials["password"], "hunter2-long-password");
    let keys = app.engine.registry().delivery(&stored).keys;
    assert!(keys.current.is_some() && keys.previous.is_some());

    // A type that does not sign has nothing to rotate.
    let body = json!({"id": "q", "type": "queue", "topics": "*", "config": {"name": "n"},
        "credentials": {"password": "p"}});
    let v = app.ok(POST, uri, Some(body), StatusCode::CREATED).await;
    assert!(v["credentials"].get("signing_secret").is_none(), "{v}");
}

/// Operator destinations and events live under a reserved tenant the tenant API never
/// reaches: its id is refused, and the operator routes need the admin key.
#[tokio::test]
async fn the_operator_tenant_is_reserved_and_operator_routes_are_admin_only() {
    let app = app().await;
    let (status, v) = app
        .admin(PUT, "/api/v1/tenants/_herald_operator", None)
        .await;
    assert_problem(status, &v, "reserved");
    let (status, v) = app
        .admin(
            POST,
            "/api/v1/publish",
            Some(json!({"tenant_id": "_herald_operator", "topic": "x", "data": {}})),
        )
        .await;
    assert_problem(status, &v, "reserved");
    let (status, v) = app
        .admin(GET, "/api/v1/tenants/_herald_operator/destinations", None)
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "tenant");

    let d = app
        .ok(
            POST,
            "/api/v1/operator-events/destinations",
            Some(json!({"type": "webhook", "topics": ["alert.*"],
                        "config": {"url": "https://ops.example.com/alerts"}})),
            StatusCode::OK,
        )
        .await;
    assert!(
        d["credentials"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let (status, v) = app
        .admin(
            POST,
            "/api/v1/operator-events/destinations",
            Some(json!({"type": "webhook", "topics": ["user.created"],
                        "config": {"url": "https://ops.example.com/alerts"}})),
        )
        .await;
    assert_problem(status, &v, "topics[0]");
    let (page, _) = app.admin(GET, "/api/v1/tenants", None).await;
    assert!(
        !page.to_string().contains("_herald_operator"),
        "never listed: {page}"
    );

    app.tenant("t1").await;
    let token = app.token("t1").await;
    for uri in [
        "/api/v1/operator-events/destinations",
        "/api/v1/operator-events/events",
        "/api/v1/operator-events/attempts",
        "/api/v1/operator-events/destination-types",
    ] {
        let (status, v) = app.call(GET, uri, Some(&token), None).await;
        assert_error(status, &v, StatusCode::FORBIDDEN, "admin");
        let (status, v) = app.call(GET, uri, None, None).await;
        assert_error(status, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (status, _) = app
        .admin(
            GET,
            &format!(
                "/api/v1/operator-events/destinations/{}",
                d["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = app
        .admin(GET, "/api/v1/operator-events/destinations/nope", None)
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "destination");
}

/// A 422 whose body (message or problem list) mentions `needle`.
fn assert_problem(status: StatusCode, body: &Value, needle: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "body: {body}");
    assert!(
        body.to_string().contains(needle),
        "{needle:?} not in {body}"
    );
}

/// Destination and event ids are unique per tenant: a tenant choosing an id another tenant
/// uses gets its own record (no 409 that would reveal the other tenant's id), and lookups
/// never cross tenants.
#[tokio::test]
async fn ids_are_scoped_per_tenant_and_reveal_nothing() {
    let app = app().await;
    app.tenant("a").await;
    app.tenant("b").await;
    let (ta, tb) = (app.token("a").await, app.token("b").await);
    let create = json!({"id": "shared", "type": "webhook", "topics": "*", "config": {"url": "https://example.com/hook"}});
    for (tenant, token) in [("a", &ta), ("b", &tb)] {
        let (status, v) = app
            .call(
                POST,
                &format!("/api/v1/tenants/{tenant}/destinations"),
                Some(token),
                Some(create.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "tenant {tenant}: {v}");
        assert_eq!(v["id"], "shared");
    }
    // Inside one tenant the id is still taken.
    let (status, v) = app
        .call(
            POST,
            "/api/v1/tenants/a/destinations",
            Some(&ta),
            Some(create),
        )
        .await;
    assert_error(status, &v, StatusCode::CONFLICT, "already exists");

    // The same event id published for both tenants: two events, neither a duplicate.
    for tenant in ["a", "b"] {
        let v = app
            .publish(
                json!({"id": "e1", "tenant_id": tenant, "topic": "t", "data": {"who": tenant}}),
            )
            .await;
        assert_eq!(v["duplicate"], false, "tenant {tenant}: {v}");
        assert_eq!(v["destination_ids"], json!(["shared"]));
    }
    let v = app
        .publish(json!({"id": "e1", "tenant_id": "a", "topic": "t", "data": {"who": "a"}}))
        .await;
    assert_eq!(v["duplicate"], true, "{v}");

    // Each tenant sees its own event; an admin names the tenant when the id is ambiguous.
    let (status, v) = app.call(GET, "/api/v1/events/e1", Some(&tb), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["tenant_id"], "b");
    assert_eq!(v["data"]["who"], "b");
    let (status, v) = app.admin(GET, "/api/v1/events/e1", None).await;
    assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, "tenant_id");
    let v = app
        .ok(GET, "/api/v1/events/e1?tenant_id=a", None, StatusCode::OK)
        .await;
    assert_eq!(v["data"]["who"], "a");

    // Retry: tenant b's token reaches b's event only; an admin must name the tenant.
    let retry = json!({"event_id": "e1", "destination_id": "shared"});
    let (status, v) = app
        .call(POST, "/api/v1/retry", Some(&tb), Some(retry.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let (status, v) = app
        .call(
            POST,
            "/api/v1/retry",
            Some(&tb),
            Some(json!({"event_id": "e1", "destination_id": "shared", "tenant_id": "a"})),
        )
        .await;
    assert_error(status, &v, StatusCode::NOT_FOUND, "event");
    let (status, v) = app.admin(POST, "/api/v1/retry", Some(retry)).await;
    assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, "tenant_id");
    app.ok(
        POST,
        "/api/v1/retry",
        Some(json!({"event_id": "e1", "destination_id": "shared", "tenant_id": "a"})),
        StatusCode::ACCEPTED,
    )
    .await;

    // Deleting b's destination leaves a's.
    let (status, _) = app
        .call(
            DELETE,
            "/api/v1/tenants/b/destinations/shared",
            Some(&tb),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = app
        .call(
            GET,
            "/api/v1/tenants/a/destinations/shared",
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

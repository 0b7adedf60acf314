//! The tenant portal and the test-event route, through the real router (in-process requests):
//! the link-token exchange and its cookie, CSRF refusals, tenant isolation, HTML escaping,
//! and `POST /tenants/{t}/destinations/{d}/test`.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use herald_api::TopicSpec;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;

fn catalog() -> Vec<TopicSpec> {
    vec![
        TopicSpec {
            name: "user.created".into(),
            description: "A user signed up.".into(),
            sample: json!({"id": "u_1", "role": "employee"}),
        },
        TopicSpec {
            name: "user.deleted".into(),
            description: "A user left.".into(),
            sample: json!({"id": "u_1"}),
        },
        TopicSpec {
            name: "invoice.paid".into(),
            description: "No sample.".into(),
            sample: Value::Null,
        },
    ]
}

async fn app() -> App {
    app_with(catalog(), herald_api::ApiConfig::DEFAULT_MAX_BODY_BYTES).await
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &App, req: Request<Body>) -> Resp {
    let resp = app.router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &App, uri: &str, cookie: Option<&str>) -> Resp {
    let mut req = Request::builder().method(GET).uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

async fn post_form(
    app: &App,
    uri: &str,
    cookie: &str,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Resp {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut req = Request::builder()
        .method(POST)
        .uri(uri)
        .header(header::COOKIE, cookie)
        .header(header::HOST, "portal.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    send(app, req.body(Body::from(body)).unwrap()).await
}

/// Opens a portal session for `tenant` through its link; returns the cookie pair.
async fn session(app: &App, tenant: &str) -> String {
    let link = app
        .ok(
            GET,
            &format!("/api/v1/tenants/{tenant}/portal"),
            None,
            StatusCode::OK,
        )
        .await;
    let url = link["redirect_url"].as_str().unwrap();
    let path = &url[url.find("/portal").unwrap()..];
    let r = get(app, path, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.headers[header::LOCATION], "/portal/destinations");
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + 20;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn the_link_is_exchanged_for_a_secure_session_cookie() {
    let app = app().await;
    app.tenant("acme").await;
    let link = app
        .ok(GET, "/api/v1/tenants/acme/portal", None, StatusCode::OK)
        .await;
    let url = link["redirect_url"].as_str().unwrap();
    let path = &url[url.find("/portal").unwrap()..];
    let r = get(&app, path, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // The token leaves the URL.
    assert_eq!(r.headers[header::LOCATION], "/portal/destinations");
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/portal", "Secure"] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    let cookie = set.split(';').next().unwrap();
    let page = get(&app, "/portal/destinations", Some(cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No destinations yet"), "{}", page.body);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    // The cookie is not an API token.
    let value = cookie.split_once('=').unwrap().1;
    let (status, _) = app
        .call(GET, "/api/v1/tenants/acme", Some(value), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // No cookie, a tampered cookie: the expiry page.
    for c in [None, Some("herald_portal=abc.def")] {
        let r = get(&app, "/portal/destinations", c).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("Your session has expired"), "{}", r.body);
    }
    // A bad or expired link token.
    let r = get(&app, "/portal?token=not.a.token", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("This link is not valid"));
    let old = herald_api::auth::issue(
        JWT_SECRET,
        "acme",
        0,
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48),
    );
    let r = get(&app, &format!("/portal?token={old}"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("This link has expired"), "{}", r.body);
    // A link whose tenant was deleted.
    let gone = herald_api::auth::issue(JWT_SECRET, "nobody", 0, jiff::Timestamp::now());
    let r = get(&app, &format!("/portal?token={gone}"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn enabled(app: &App) -> bool {
    let v = app
        .ok(
            GET,
            "/api/v1/tenants/acme/destinations/d1",
            None,
            StatusCode::OK,
        )
        .await;
    v["disabled_at"].is_null()
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_the_same_origin() {
    let app = app().await;
    app.tenant("acme").await;
    app.webhook("acme", "d1", json!("*")).await;
    let cookie = session(&app, "acme").await;
    let page = get(&app, "/portal/destinations/d1", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let token = csrf_of(&page.body);
    let uri = "/portal/destinations/d1/disable";

    // No token, a wrong token, another site's origin, a cross-site fetch: all refused.
    let refused = [
        (vec![], vec![]),
        (vec![("_csrf", "wrong")], vec![]),
        (
            vec![("_csrf", token.as_str())],
            vec![("origin", "https://evil.example")],
        ),
        (vec![("_csrf", token.as_str())], vec![("origin", "null")]),
        (
            vec![("_csrf", token.as_str())],
            vec![("sec-fetch-site", "cross-site")],
        ),
    ];
    for (fields, headers) in &refused {
        let r = post_form(&app, uri, &cookie, fields, headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{fields:?} {headers:?}");
        assert!(enabled(&app).await, "a refused request disabled it");
    }
    // Another session's token does not work either.
    app.tenant("other").await;
    let other = session(&app, "other").await;
    let other_page = get(&app, "/portal/destinations", Some(&other)).await;
    let other_token = csrf_of(&other_page.body);
    let r = post_form(&app, uri, &cookie, &[("_csrf", &other_token)], &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The real thing, from the same origin.
    let r = post_form(
        &app,
        uri,
        &cookie,
        &[("_csrf", &token)],
        &[
            ("origin", "http://portal.test"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        r.headers[header::LOCATION],
        "/portal/destinations/d1?notice=disabled"
    );
    assert!(!enabled(&app).await);
}

#[tokio::test]
async fn a_session_never_reaches_another_tenant() {
    let app = app().await;
    app.tenant("acme").await;
    app.tenant("globex").await;
    app.webhook("acme", "mine", json!("*")).await;
    app.webhook("globex", "theirs", json!("*")).await;
    let ev = app
        .publish(json!({"tenant_id": "globex", "topic": "user.created", "data": {"x": 1}}))
        .await;
    let ev_id = ev["id"].as_str().unwrap();
    let cookie = session(&app, "acme").await;

    let list = get(&app, "/portal/destinations", Some(&cookie)).await;
    assert!(list.body.contains("/portal/destinations/mine"));
    assert!(!list.body.contains("theirs"));
    for path in [
        "/portal/destinations/theirs".to_string(),
        "/portal/destinations/theirs/settings".to_string(),
        "/portal/destinations/theirs/delete".to_string(),
        format!("/portal/events/{ev_id}"),
    ] {
        let r = get(&app, &path, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
        assert!(!r.body.contains("example.com/hook"), "{path} leaked data");
    }
    let events = get(&app, "/portal/events", Some(&cookie)).await;
    assert!(!events.body.contains(ev_id), "tenant B's event is listed");

    let token = csrf_of(&list.body);
    for action in ["disable", "delete", "rotate", "test", "settings"] {
        let r = post_form(
            &app,
            &format!("/portal/destinations/theirs/{action}"),
            &cookie,
            &[("_csrf", &token), ("topics", "*")],
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}: {}", r.body);
    }
    let r = post_form(
        &app,
        "/portal/retry",
        &cookie,
        &[
            ("_csrf", &token),
            ("event_id", ev_id),
            ("destination_id", "theirs"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let theirs = app
        .ok(
            GET,
            "/api/v1/tenants/globex/destinations/theirs",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(theirs["disabled_at"].is_null());
    assert!(theirs["filter"].is_null());
}

#[tokio::test]
async fn tenant_data_is_escaped_and_field_errors_sit_next_to_their_field() {
    let app = app().await;
    app.tenant("acme").await;
    let cookie = session(&app, "acme").await;
    let form = get(&app, "/portal/destinations/new/webhook", Some(&cookie)).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("All topics (*)"));
    let token = csrf_of(&form.body);
    let evil = "https://x.example/<script>alert(1)</script>\"'";
    let r = post_form(
        &app,
        "/portal/destinations/new/webhook",
        &cookie,
        &[
            ("_csrf", &token),
            ("topics", "user.created"),
            ("config.url", "not a url <b>"),
            ("filter", "{\"data\": "),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("class=\"field invalid\""), "{}", r.body);
    assert!(r.body.contains("filter"), "{}", r.body);
    let r = post_form(
        &app,
        "/portal/destinations/new/webhook",
        &cookie,
        &[
            ("_csrf", &token),
            ("topics", "user.created"),
            ("config.url", "not a url <b>"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let at = r.body.find("id=\"e-f-config-url\"").expect("URL error");
    assert!(r.body[at..at + 200].contains("http(s) URL"), "{}", r.body);
    assert!(r.body.contains("not a url &lt;b&gt;"));
    assert!(!r.body.contains("<b>"));

    // Stored tenant data is escaped wherever it is shown.
    let r = post_form(
        &app,
        "/portal/destinations/new/webhook",
        &cookie,
        &[("_csrf", &token), ("topics", "*"), ("config.url", evil)],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let loc = r.headers[header::LOCATION].to_str().unwrap().to_string();
    for path in [loc.as_str(), "/portal/destinations"] {
        let page = get(&app, path, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            !page.body.contains("<script>alert"),
            "{path} is not escaped"
        );
    }
}

#[tokio::test]
async fn test_events() {
    let app = app().await;
    app.tenant("acme").await;
    app.tenant("globex").await;
    app.webhook("acme", "d1", json!(["invoice.paid", "user.deleted"]))
        .await;
    let tenant = app.token("acme").await;
    let url = "/api/v1/tenants/acme/destinations/d1/test";

    // Default topic: the first subscribed one with a sample.
    let (status, v) = app.call(POST, url, Some(&tenant), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["topic"], "user.deleted");
    assert_eq!(v["destination_ids"], json!(["d1"]));
    let id = v["id"].as_str().unwrap();
    let e = app
        .ok(GET, &format!("/api/v1/events/{id}"), None, StatusCode::OK)
        .await;
    assert_eq!(e["metadata"]["test"], "true");
    assert_eq!(e["data"], json!({"id": "u_1"}));
    assert_eq!(e["matched_destination_ids"], json!(["d1"]));

    // A topic without a sample, one not subscribed, one not in the catalog.
    for (topic, needle) in [
        ("invoice.paid", "has no sample payload"),
        ("user.created", "does not subscribe"),
        ("nope", "not in the topic catalog"),
    ] {
        let (status, v) = app
            .call(POST, url, Some(&tenant), Some(json!({ "topic": topic })))
            .await;
        assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, needle);
    }
    // No subscribed topic has a sample.
    app.webhook("acme", "d2", json!(["invoice.paid"])).await;
    let (status, v) = app
        .call(
            POST,
            "/api/v1/tenants/acme/destinations/d2/test",
            Some(&tenant),
            None,
        )
        .await;
    assert_error(
        status,
        &v,
        StatusCode::UNPROCESSABLE_ENTITY,
        "has a sample payload",
    );
    // A filter that the sample does not pass.
    app.ok(
        Method::PATCH,
        "/api/v1/tenants/acme/destinations/d1",
        Some(json!({"filter": {"data": {"id": "someone else"}}})),
        StatusCode::OK,
    )
    .await;
    let (status, v) = app.call(POST, url, Some(&tenant), None).await;
    assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, "filter");
    // Disabled.
    app.ok(
        PUT,
        "/api/v1/tenants/acme/destinations/d1/disable",
        None,
        StatusCode::OK,
    )
    .await;
    let (status, v) = app.call(POST, url, Some(&tenant), None).await;
    assert_error(status, &v, StatusCode::BAD_REQUEST, "disabled");
    // Another tenant's token; an unknown option.
    let other = app.token("globex").await;
    let (status, _) = app.call(POST, url, Some(&other), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = app
        .call(POST, url, Some(&tenant), Some(json!({"data": {}})))
        .await;
    assert_error(status, &v, StatusCode::UNPROCESSABLE_ENTITY, "data");
}

#[tokio::test]
async fn the_destinations_list_is_paginated_and_filtered() {
    let app = app().await;
    app.tenant("acme").await;
    for i in 0..30 {
        let topics = if i % 2 == 0 {
            json!(["user.created"])
        } else {
            json!(["user.deleted"])
        };
        app.webhook("acme", &format!("d{i:02}"), topics).await;
    }
    let cookie = session(&app, "acme").await;
    let count = |body: &str| body.matches("href=\"/portal/destinations/d").count();
    let first = get(&app, "/portal/destinations", Some(&cookie)).await;
    assert_eq!(count(&first.body), 25, "{}", first.body);
    assert!(first.body.contains("Page 1 of 2"));
    let second = get(&app, "/portal/destinations?page=2", Some(&cookie)).await;
    assert_eq!(count(&second.body), 5);
    let filtered = get(
        &app,
        "/portal/destinations?topic=user.deleted",
        Some(&cookie),
    )
    .await;
    assert_eq!(count(&filtered.body), 15);
    assert!(!filtered.body.contains("Page 1 of"));
    assert!(filtered.body.contains("Send test"));
}

#[tokio::test]
async fn settings_keep_a_masked_secret_left_untouched() {
    let app = app().await;
    app.tenant("acme").await;
    app.ok(
        POST,
        "/api/v1/tenants/acme/destinations",
        Some(json!({"id": "q1", "type": "queue", "topics": "*",
            "config": {"name": "orders"}, "credentials": {"password": "s3cret-password-123"}})),
        StatusCode::CREATED,
    )
    .await;
    let cookie = session(&app, "acme").await;
    let form = get(&app, "/portal/destinations/q1/settings", Some(&cookie)).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(
        !form.body.contains("s3cret-password-123"),
        "the secret is in the page"
    );
    let masked = "s3cr***************";
    assert!(
        form.body.contains(&format!(
            "type=\"password\" id=\"f-credentials-password\" name=\"credentials.password\" value=\"{masked}\""
        )),
        "{}",
        form.body
    );
    let token = csrf_of(&form.body);
    let stored = |app: &App| {
        let store = app.engine.store().clone();
        async move { store.get_destination("acme", "q1").await.unwrap().unwrap() }
    };
    // Sent back masked: the stored secret stays; the config change applies.
    let r = post_form(
        &app,
        "/portal/destinations/q1/settings",
        &cookie,
        &[
            ("_csrf", &token),
            ("topics", "user.created"),
            ("config.name", "invoices"),
            ("credentials.password", masked),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let d = stored(&app).await;
    assert_eq!(d.credentials["password"], "s3cret-password-123");
    assert_eq!(d.config["name"], "invoices");
    // A new value replaces it.
    let r = post_form(
        &app,
        "/portal/destinations/q1/settings",
        &cookie,
        &[
            ("_csrf", &token),
            ("topics", "*"),
            ("config.name", "invoices"),
            ("credentials.password", "another-password-456"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        stored(&app).await.credentials["password"],
        "another-password-456"
    );
}

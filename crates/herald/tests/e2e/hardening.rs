//! Tenant isolation and abuse resistance over the API: credentials follow their target,
//! tenant token generations and revocation, input hygiene (control characters, custom
//! headers), `/metrics` authentication, file modes, error bodies the server itself produces.

use herald_testkit::Herald;
use serde_json::json;

async fn token(h: &Herald, tenant: &str) -> String {
    let v = h.ok("GET", &format!("/tenants/{tenant}/token"), None).await;
    v["token"].as_str().unwrap().to_string()
}

async fn get_as(h: &Herald, token: &str, tenant: &str) -> u16 {
    h.call_as(token, "GET", &format!("/tenants/{tenant}"), None)
        .await
        .0
}

// ----- credentials follow their target -----

#[tokio::test]
async fn retargeting_a_destination_drops_credentials_not_sent_again() {
    let h = Herald::start(&[]).await;
    let d = h
        .create(
            "cft",
            json!({
                "type": "redis_stream", "topics": "*",
                "config": {"server_url": "127.0.0.1:6379", "stream": "s"},
                "credentials": {"password": "operator-set-password"}
            }),
        )
        .await;
    let id = d["id"].as_str().unwrap();
    let path = format!("/tenants/cft/destinations/{id}");
    let tok = token(&h, "cft").await;
    // The tenant sees the password masked and sends everything back with a new host.
    let (s, shown) = h.call_as(&tok, "GET", &path, None).await;
    assert_eq!(s, 200);
    let masked = shown["credentials"]["password"].clone();
    assert!(masked.is_string() && masked != "operator-set-password");
    let (s, v) = h
        .call_as(
            &tok,
            "PATCH",
            &path,
            Some(json!({
                "config": {"server_url": "127.0.0.2:6379"},
                "credentials": {"password": masked}
            })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, after) = h.call("GET", &path, None).await;
    assert_eq!(after["config"]["server_url"], "127.0.0.2:6379");
    assert!(
        after["credentials"].get("password").is_none(),
        "the stored password did not follow the new host: {after}"
    );

    // A password sent again with the new target is kept.
    let (s, v) = h
        .call_as(
            &tok,
            "PATCH",
            &path,
            Some(json!({
                "config": {"server_url": "127.0.0.3:6379"},
                "credentials": {"password": "tenant-own-password"}
            })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, after) = h.call("GET", &path, None).await;
    assert!(after["credentials"]["password"].is_string(), "{after}");
    // Changing something else keeps it.
    let (s, _) = h
        .call_as(
            &tok,
            "PATCH",
            &path,
            Some(json!({"config": {"stream": "t"}})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, after) = h.call("GET", &path, None).await;
    assert!(after["credentials"]["password"].is_string(), "{after}");
}

#[tokio::test]
async fn retargeting_a_type_that_needs_the_credential_is_a_422_naming_it() {
    let h = Herald::start(&[]).await;
    let d = h
        .create(
            "cft2",
            json!({
                "type": "rabbitmq", "topics": "*",
                "config": {"server_url": "127.0.0.1:5672", "exchange": "x"},
                "credentials": {"username": "guest", "password": "guest"}
            }),
        )
        .await;
    let path = format!("/tenants/cft2/destinations/{}", d["id"].as_str().unwrap());
    let tok = token(&h, "cft2").await;
    let (s, v) = h
        .call_as(
            &tok,
            "PATCH",
            &path,
            Some(json!({"config": {"server_url": "attacker.example:5672"}})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("credentials.password")),
        "{v}"
    );
    // Nothing was applied.
    let (_, after) = h.call("GET", &path, None).await;
    assert_eq!(after["config"]["server_url"], "127.0.0.1:5672");

    // A webhook whose custom headers hold a credential: a new URL needs them in full.
    let d = h
        .webhook(
            "cft2",
            "http://127.0.0.1:9/a",
            json!({"config": {"url": "http://127.0.0.1:9/a",
                "custom_headers": {"Authorization": "Bearer op-token", "x-a": "1"}}}),
        )
        .await;
    let path = format!("/tenants/cft2/destinations/{}", d["id"].as_str().unwrap());
    let (s, v) = h
        .call_as(
            &tok,
            "PATCH",
            &path,
            Some(json!({"config": {"url": "http://127.0.0.2:9/b"}})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("config.custom_headers"), "{v}");
}

// ----- tokens -----

#[tokio::test]
async fn a_deleted_and_recreated_tenant_does_not_accept_its_old_tokens() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/gen1", None).await;
    let old = token(&h, "gen1").await;
    assert_eq!(get_as(&h, &old, "gen1").await, 200);
    h.ok("DELETE", "/tenants/gen1", None).await;
    assert_eq!(get_as(&h, &old, "gen1").await, 401);
    h.ok("PUT", "/tenants/gen1", None).await;
    assert_eq!(
        get_as(&h, &old, "gen1").await,
        401,
        "a token of the deleted tenant works for the new one"
    );
    let new = token(&h, "gen1").await;
    assert_eq!(get_as(&h, &new, "gen1").await, 200);
}

#[tokio::test]
async fn revoking_a_tenants_tokens_ends_every_token_issued_so_far() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/rev1", None).await;
    h.ok("PUT", "/tenants/rev2", None).await;
    let a = token(&h, "rev1").await;
    let b = token(&h, "rev1").await;
    let other = token(&h, "rev2").await;
    // A tenant may not revoke (not even its own).
    let (s, _) = h
        .call_as(&a, "POST", "/tenants/rev1/tokens/revoke", None)
        .await;
    assert_eq!(s, 403);
    let v = h.ok("POST", "/tenants/rev1/tokens/revoke", None).await;
    assert_eq!(v["success"], true);
    assert_eq!(get_as(&h, &a, "rev1").await, 401);
    assert_eq!(get_as(&h, &b, "rev1").await, 401);
    // Other tenants' tokens are untouched; tokens issued afterwards work.
    assert_eq!(get_as(&h, &other, "rev2").await, 200);
    let c = token(&h, "rev1").await;
    assert_eq!(get_as(&h, &c, "rev1").await, 200);
    let (s, v) = h.call("POST", "/tenants/nobody/tokens/revoke", None).await;
    assert_eq!(s, 404, "{v}");
}

// ----- smaller items -----

#[tokio::test]
async fn metrics_need_the_admin_key_unless_public_or_on_their_own_address() {
    let h = Herald::start(&[]).await;
    let url = format!("http://{}/metrics", h.addr);
    let r = h.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], 401);
    h.ok("PUT", "/tenants/m1", None).await;
    let tok = token(&h, "m1").await;
    let r = h.client.get(&url).bearer_auth(&tok).send().await.unwrap();
    // Authenticated, but not allowed: 403, like every admin-only route.
    assert_eq!(r.status(), 403, "a tenant token does not read /metrics");
    let r = h
        .client
        .get(&url)
        .bearer_auth(herald_testkit::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let public = Herald::start(&[("HERALD_METRICS_PUBLIC", "true")]).await;
    let r = public
        .client
        .get(format!("http://{}/metrics", public.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let port = herald_testkit::ports::free_port();
    let listen = format!("127.0.0.1:{port}");
    let separate = Herald::start(&[("HERALD_METRICS_LISTEN", &listen)]).await;
    let r = separate
        .client
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("herald_pending_deliveries_total")
    );
    let r = separate
        .client
        .get(format!("http://{}/metrics", separate.addr))
        .bearer_auth(herald_testkit::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "not on the API port as well");
}

#[tokio::test]
async fn control_characters_in_event_fields_are_422_naming_the_field() {
    let h = Herald::start(&[]).await;
    for (body, field) in [
        (
            json!({"tenant_id": "cc", "topic": "a\r\nx-injected: 1", "data": {}}),
            "topic",
        ),
        (
            json!({"tenant_id": "cc", "id": "evt\n1", "topic": "t", "data": {}}),
            "id",
        ),
        (
            json!({"tenant_id": "cc", "topic": "t", "data": {}, "metadata": {"k": "v\u{0}"}}),
            "metadata.k",
        ),
        (
            json!({"tenant_id": "cc", "topic": "t", "data": {}, "metadata": {"k\r": "v"}}),
            "metadata.",
        ),
    ] {
        let (s, v) = h.call("POST", "/publish", Some(body.clone())).await;
        assert_eq!(s, 422, "{body} -> {v}");
        assert!(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().starts_with(field)),
            "{body} -> {v}"
        );
    }
    // A destination's delivery_metadata is sent as headers too.
    h.ok("PUT", "/tenants/cc", None).await;
    h.expect_rejected(
        "cc",
        &json!({"type": "webhook", "topics": "*", "config": {"url": "http://127.0.0.1:9/"},
                "delivery_metadata": {"k": "a\r\nb"}}),
        "delivery_metadata.k",
    )
    .await;
}

#[tokio::test]
async fn custom_headers_may_not_set_heralds_own_headers_and_are_capped() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/ch", None).await;
    let with = |headers: serde_json::Value| {
        json!({"type": "webhook", "topics": "*",
               "config": {"url": "http://127.0.0.1:9/", "custom_headers": headers}})
    };
    for name in [
        "webhook-signature",
        "Webhook-Id",
        "x-herald-topic",
        "x-outpost-signature",
    ] {
        let v = h
            .expect_rejected(
                "ch",
                &with(json!({ name: "forged" })),
                "config.custom_headers",
            )
            .await;
        assert!(v.to_string().contains("Herald sends it itself"), "{v}");
    }
    let many: serde_json::Map<String, serde_json::Value> =
        (0..51).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    h.expect_rejected("ch", &with(json!(many)), "config.custom_headers")
        .await;
    h.expect_rejected(
        "ch",
        &with(json!({"x-big": "v".repeat(9000)})),
        "config.custom_headers",
    )
    .await;
    // Within the limits, an ordinary header is fine.
    h.create("ch", with(json!({"x-api-key": "k"}))).await;
}

#[tokio::test]
async fn the_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let h = Herald::start_in(&dir, &[], true).await;
    let rx = herald_testkit::Receiver::start().await;
    h.webhook("fm", &rx.url("/"), json!({})).await;
    h.publish_event("fm", "t", json!({})).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("herald.db") || name.ends_with("key") {
            assert_eq!(mode(&p), 0o600, "{name}");
        }
    }
    assert!(dir.join("herald.db-wal").exists());
    h.stop().await.unwrap();
}

#[tokio::test]
async fn answers_the_server_itself_makes_have_the_error_shape() {
    let h = Herald::start(&[("HERALD_MAX_BODY_BYTES", "1000")]).await;
    // 405 outside the API's own routes.
    let r = h
        .client
        .post(format!("http://{}/metrics", h.addr))
        .bearer_auth(herald_testkit::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(v["status"], 405);
    // 413.
    let r = h
        .client
        .post(h.url("/publish"))
        .bearer_auth(herald_testkit::API_KEY)
        .header("content-type", "application/json")
        .body(format!("{{\"data\": \"{}\"}}", "x".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(v["status"], 413);
}

#[test]
fn the_banner_says_exactly_what_is_relaxed() {
    // allow_http alone: one line about http://, no development-mode warning.
    let dir = tempfile::tempdir().unwrap();
    let p = herald_testkit::HeraldProcess::start_in(
        crate::BIN,
        dir.path(),
        &[("HERALD_SECURITY_ALLOW_HTTP", "true")],
        false,
    );
    let banner = p.banner.join("\n");
    assert!(banner.contains("security.allow_http"), "{banner}");
    assert!(!banner.contains("development mode"), "{banner}");
    assert!(!banner.contains("security.allow_private"), "{banner}");
    assert!(banner.contains("admin key required"), "{banner}");
    drop(p);
    let p = crate::process(&[]);
    let banner = p.banner.join("\n");
    assert!(banner.contains("development mode (--dev)"), "{banner}");
    assert!(banner.contains("security.allow_private"), "{banner}");
}

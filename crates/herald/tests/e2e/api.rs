//! End-to-end: Herald (in-process, or the real binary where a test needs a process), driven
//! only over HTTP, delivering to a real receiver.

use std::time::Duration;

use herald_testkit::{Herald, Receiver};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

fn verify_standard(secret: &str, r: &herald_testkit::Received) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if let Some(v) = r.headers.get(name) {
            headers.insert(name, http::HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
    }
    wh.verify(&r.body, &headers).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_delivers_a_signed_webhook_and_records_the_attempt() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[]).await;
    let dest = h
        .webhook(
            "acme",
            &rx.url("/hook"),
            json!({
                "topics": ["user.created"],
                "config": {"url": rx.url("/hook"), "custom_headers": "{\"x-api-key\":\"k-123\"}"},
                "delivery_metadata": {"region": "eu"},
            }),
        )
        .await;
    let secret = dest["credentials"]["secret"]
        .as_str()
        .expect("generated secret")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let dest_id = dest["id"].as_str().unwrap();

    let out = h
        .publish(json!({
            "tenant_id": "acme", "topic": "user.created", "id": "evt_e2e_1",
            "metadata": {"source": "crm"}, "data": {"user_id": "u1", "n": 7}
        }))
        .await;
    assert_eq!(out["id"], "evt_e2e_1");
    assert_eq!(out["duplicate"], false);
    assert_eq!(out["destination_ids"], json!([dest_id]));

    let got = rx.wait_for(1).await;
    let r = &got[0];
    assert_eq!(r.path, "/hook");
    assert_eq!(r.json(), json!({"user_id": "u1", "n": 7}));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("webhook-id").as_deref(), Some("evt_e2e_1"));
    assert_eq!(r.header("x-api-key").as_deref(), Some("k-123"));
    assert_eq!(r.header("x-herald-topic").as_deref(), Some("user.created"));
    assert_eq!(r.header("x-herald-source").as_deref(), Some("crm"));
    assert_eq!(r.header("x-herald-region").as_deref(), Some("eu"));
    assert!(
        verify_standard(&secret, r),
        "independent verifier rejected the signature: {:?}",
        r.headers
    );
    assert!(
        !verify_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", r),
        "a wrong secret must not verify"
    );

    let attempts = h
        .wait_attempts("tenant_id=acme&include=response_data", |a| !a.is_empty())
        .await;
    let a = &attempts[0];
    assert_eq!(a["status"], "success");
    assert_eq!(a["code"], "200");
    assert_eq!(a["attempt_number"], 1);
    assert_eq!(a["event_id"], "evt_e2e_1");
    assert_eq!(a["destination_id"], dest_id);
    assert_eq!(a["response_data"]["status_code"], 200);
    assert_eq!(a["response_data"]["body"], "ok");

    // The event is listed with its routing.
    let ev = h.ok("GET", "/events/evt_e2e_1", None).await;
    assert_eq!(ev["matched_destination_ids"], json!([dest_id]));
    assert_eq!(ev["data"]["user_id"], "u1");

    // Same id again: duplicate, nothing new delivered.
    let dup = h
        .publish(
            json!({"tenant_id": "acme", "topic": "user.created", "id": "evt_e2e_1", "data": {}}),
        )
        .await;
    assert_eq!(dup["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 1);

    // A topic the destination does not subscribe to is not delivered.
    let other = h
        .publish(json!({"tenant_id": "acme", "topic": "user.deleted", "data": {}}))
        .await;
    assert_eq!(other["destination_ids"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_on_the_schedule_and_every_attempt_is_recorded() {
    let rx = Receiver::start().await;
    rx.script.lock().extend([500, 503]);
    let h = Herald::start(&[
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ])
    .await;
    h.webhook("t1", &rx.url("/"), json!({})).await;
    h.publish(json!({"tenant_id": "t1", "topic": "a", "id": "evt_retry", "data": {"x": 1}}))
        .await;
    let attempts = h
        .wait_attempts("event_id=evt_retry&dir=asc", |a| {
            a.iter().any(|x| x["status"] == "success")
        })
        .await;
    let codes: Vec<_> = attempts
        .iter()
        .map(|a| a["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes, ["500", "503", "200"]);
    let numbers: Vec<_> = attempts
        .iter()
        .map(|a| a["attempt_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(rx.count(), 3);

    // A permanent failure (400) gets one attempt only; a manual retry adds one more.
    rx.default_status
        .store(400, std::sync::atomic::Ordering::SeqCst);
    h.publish(json!({"tenant_id": "t1", "topic": "a", "id": "evt_perm", "data": {}}))
        .await;
    // That a permanent failure is never scheduled again is proven on the engine's clock
    // (`dispatch::tests::success_permanent_gone_manual_and_ineligible`), not by waiting here.
    let attempts = h.wait_attempts("event_id=evt_perm", |a| a.len() == 1).await;
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[0]["code"], "400");

    rx.default_status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let dest_id = attempts[0]["destination_id"].as_str().unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/retry",
            Some(json!({"event_id": "evt_perm", "destination_id": dest_id})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let attempts = h
        .wait_attempts("event_id=evt_perm&dir=asc", |a| a.len() == 2)
        .await;
    assert_eq!(attempts[1]["status"], "success");
    assert_eq!(attempts[1]["manual"], true);
    assert_eq!(attempts[1]["attempt_number"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_claimed_when_it_comes_due_not_at_the_next_poll() {
    // The poller's regular interval is a minute; the retry is due one second after the first
    // attempt. The node knows that due time, so the poller wakes for it.
    let rx = Receiver::start().await;
    rx.script.lock().extend([503]);
    let h = Herald::start(&[
        ("HERALD_DELIVERY_POLL_INTERVAL_MS", "60000"),
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1"),
        ("HERALD_RETRY_JITTER", "0"),
    ])
    .await;
    h.webhook("t1", &rx.url("/"), json!({})).await;
    h.publish(json!({"tenant_id": "t1", "topic": "a", "id": "evt_due", "data": {}}))
        .await;
    let attempts = h
        .wait_attempts("event_id=evt_due&dir=asc", |a| {
            a.iter().any(|x| x["status"] == "success")
        })
        .await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let at = |i: usize| {
        attempts[i]["time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let gap = at(1).duration_since(at(0));
    assert!(
        gap >= jiff::SignedDuration::from_secs(1) && gap < jiff::SignedDuration::from_secs(5),
        "the retry was attempted {gap} after the first attempt (due after 1 s; the poll \
         interval is 60 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_not_eligible_for_retry_get_one_attempt() {
    let rx = Receiver::start().await;
    rx.default_status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    let h = Herald::start(&[
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1"),
        ("HERALD_RETRY_JITTER", "0"),
    ])
    .await;
    h.webhook("t", &rx.url("/"), json!({})).await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "id": "e1", "eligible_for_retry": false, "data": {}})).await;
    // The one attempt fails; that an ineligible event gets no retry is proven on the engine's
    // clock (`dispatch::tests::success_permanent_gone_manual_and_ineligible`), not by waiting.
    let a = h.wait_attempts("event_id=e1", |a| a.len() == 1).await;
    assert_eq!(a[0]["status"], "failed");
    assert_eq!(rx.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_destination() {
    let rx = Receiver::start().await;
    rx.default_status
        .store(410, std::sync::atomic::Ordering::SeqCst);
    let h = Herald::start(&[]).await;
    let d = h.webhook("t", &rx.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap();
    h.publish(json!({"tenant_id": "t", "topic": "a", "data": {}}))
        .await;
    h.wait_attempts("tenant_id=t", |a| a.len() == 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = h
            .ok("GET", &format!("/tenants/t/destinations/{id}"), None)
            .await;
        if !d["disabled_at"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "destination was not disabled after 410"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = h
        .publish(json!({"tenant_id": "t", "topic": "a", "data": {}}))
        .await;
    assert_eq!(
        out["destination_ids"],
        json!([]),
        "a disabled destination gets no new deliveries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_signs_with_both_secrets() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[]).await;
    let d = h.webhook("t", &rx.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap();
    let old = d["credentials"]["secret"].as_str().unwrap().to_string();
    let d2 = h
        .ok(
            "PATCH",
            &format!("/tenants/t/destinations/{id}"),
            Some(json!({"type": "webhook", "credentials": {"rotate_secret": true}})),
        )
        .await;
    let new = d2["credentials"]["secret"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    assert_eq!(d2["credentials"]["previous_secret"], old.as_str());
    h.publish(json!({"tenant_id": "t", "topic": "a", "data": {"k": "v"}}))
        .await;
    let got = rx.wait_for(1).await;
    let sig = got[0].header("webhook-signature").unwrap();
    assert_eq!(
        sig.split(' ').count(),
        2,
        "two signatures during rotation: {sig}"
    );
    assert!(verify_standard(&new, &got[0]));
    assert!(verify_standard(&old, &got[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_signature_mode() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[("HERALD_SIGNING_MODE", "outpost")]).await;
    let d = h
        .webhook(
            "t",
            &rx.url("/"),
            json!({"credentials": {"secret": "my-outpost-secret"}}),
        )
        .await;
    assert_eq!(d["credentials"]["secret"], "my-outpost-secret");
    h.publish(json!({"tenant_id": "t", "topic": "order.paid", "id": "evt_op", "metadata": {"m": "1"}, "data": {"a": 1}})).await;
    let got = rx.wait_for(1).await;
    let r = &got[0];
    let mut mac = Hmac::<Sha256>::new_from_slice(b"my-outpost-secret").unwrap();
    mac.update(&r.body);
    let expected = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("x-outpost-signature"), Some(expected));
    assert_eq!(r.header("x-outpost-event-id").as_deref(), Some("evt_op"));
    assert_eq!(r.header("x-outpost-topic").as_deref(), Some("order.paid"));
    assert_eq!(r.header("x-outpost-m").as_deref(), Some("1"));
    assert!(r.header("x-outpost-timestamp").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_filters_route_events() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[]).await;
    let big = h
        .webhook(
            "t",
            &rx.url("/big"),
            json!({"filter": {"data": {"amount": {"$gte": 100}}}}),
        )
        .await;
    let eu = h
        .webhook(
            "t",
            &rx.url("/eu"),
            json!({"filter": {"metadata": {"region": {"$in": ["eu", "uk"]}}}}),
        )
        .await;
    let out = h.publish(json!({"tenant_id": "t", "topic": "a", "metadata": {"region": "eu"}, "data": {"amount": 150}})).await;
    let mut ids: Vec<_> = out["destination_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![
        big["id"].as_str().unwrap().to_string(),
        eu["id"].as_str().unwrap().to_string(),
    ];
    want.sort();
    assert_eq!(ids, want);
    let out = h.publish(json!({"tenant_id": "t", "topic": "a", "metadata": {"region": "us"}, "data": {"amount": 5}})).await;
    assert_eq!(out["destination_ids"], json!([]));
    let out = h.publish(json!({"tenant_id": "t", "topic": "a", "metadata": {"region": "us"}, "data": {"amount": 500}})).await;
    assert_eq!(out["destination_ids"], json!([big["id"]]));
    let got = rx.wait_for(3).await;
    assert_eq!(got.iter().filter(|r| r.path == "/big").count(), 2);
    assert_eq!(got.iter().filter(|r| r.path == "/eu").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() {
    let rx = Receiver::start().await;
    rx.default_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1,1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ];
    // SIGKILL needs a process.
    let mut h = crate::process_in(tmp.path(), &env, true);
    h.webhook("t", &rx.url("/"), json!({})).await;
    for i in 0..20 {
        h.publish(json!({"tenant_id": "t", "topic": "a", "id": format!("e{i}"), "data": {"i": i}}))
            .await;
    }
    rx.wait_for(20).await;
    h.kill();
    rx.default_status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    rx.got.lock().clear();
    let h = crate::process_in(tmp.path(), &env, true);
    let got = rx.wait_for(20).await;
    let mut ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every event delivered after restart");
    let attempts = h
        .wait_attempts("status=success&limit=100", |a| a.len() >= 20)
        .await;
    assert!(attempts.len() >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly() {
    let mut h = crate::process(&[]);
    h.ok("PUT", "/tenants/x", None).await;
    assert!(h.terminate(), "herald did not exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_refuses_private_and_plain_http_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Herald::start_in(tmp.path(), &[], false).await;
    h.ok("PUT", "/tenants/t", None).await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.8/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest",
        // Names that always mean loopback are refused at create too.
        "https://localhost:9/x",
        "https://api.localhost/x",
        "https://2130706433/x",
    ] {
        let (s, v) = h
            .call(
                "POST",
                "/tenants/t/destinations",
                Some(json!({"type": "webhook", "topics": "*", "config": {"url": url}})),
            )
            .await;
        assert_eq!(s, 422, "{url}: {v}");
        assert!(
            v.to_string().contains("config.url"),
            "{url}: error must name the field: {v}"
        );
    }
    // A name that resolves to loopback (the machine's own name, which /etc/hosts maps to
    // 127.0.0.1 or 127.0.1.1) passes validation but is refused at connect time, and the
    // reason is recorded on the attempt.
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let url = format!("https://{}:9/x", own.trim());
    let (s, v) = h
        .call(
            "POST",
            "/tenants/t/destinations",
            Some(json!({"type": "webhook", "topics": "*", "config": {"url": url}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    h.publish(json!({"tenant_id": "t", "topic": "a", "data": {}}))
        .await;
    let a = h
        .wait_attempts("tenant_id=t&include=response_data", |a| !a.is_empty())
        .await;
    assert_eq!(a[0]["status"], "failed");
    assert_eq!(a[0]["code"], "blocked_target");
    let err = a[0]["response_data"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("loopback"), "reason recorded: {}", a[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_at_start_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .env("HERALD_DATA_DIR", tmp.path())
        .env("HERALD_DELIVERY_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HERALD_DELIVERY_TIMEOUT_MS"), "{err}");
}

/// Runs `herald <args>` with only `env` (and a fresh data directory) and returns whether it
/// succeeded and what it printed, killing it after 30 s.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .env_clear()
        .env("HERALD_DATA_DIR", tmp.path())
        .envs(env.iter().copied());
    herald_testkit::output_within(&mut cmd, Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_error_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("herald.toml");
    for (toml, needle, key) in [
        (
            "[delivery]\ntimeout = 250\n",
            "unknown field `timeout`",
            "in `delivery`",
        ),
        (
            "[delivery]\ntimeout_ms = \"soon\"\n",
            "invalid type",
            "in `delivery.timeout_ms`",
        ),
        (
            "colour = 1\n",
            "unknown field `colour`",
            "invalid configuration",
        ),
    ] {
        std::fs::write(&file, toml).unwrap();
        let (ok, out) = run_binary(&["serve", "--config", file.to_str().unwrap()], &[]);
        assert!(!ok, "{toml}: {out}");
        assert_eq!(out.matches(needle).count(), 1, "{toml}: said once: {out}");
        assert!(out.contains(key), "{toml}: names the key: {out}");
    }
    // From the environment too.
    let (ok, out) = run_binary(&["serve"], &[("HERALD_DELIVERY_TIMEOUT_MS", "soon")]);
    assert!(!ok, "{out}");
    assert_eq!(
        out.matches("HERALD_DELIVERY_TIMEOUT_MS").count(),
        1,
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_variable_is_warned_about_naming_the_real_one() {
    let (ok, out) = run_binary(
        &["config"],
        &[
            ("HERALD_DELIVERY_TIMEOUT", "250"),
            ("HERALD_DELIVRY_LEASE_SECS", "30"),
            ("HERALD_WHATEVER_ELSE", "1"),
            ("HERALD_URL", "http://localhost:1"),
        ],
    );
    assert!(ok, "unknown variables do not stop herald: {out}");
    for (wrong, right) in [
        ("HERALD_DELIVERY_TIMEOUT", "HERALD_DELIVERY_TIMEOUT_MS"),
        ("HERALD_DELIVRY_LEASE_SECS", "HERALD_DELIVERY_LEASE_SECS"),
    ] {
        assert!(
            out.lines().any(|l| l.contains("WARN")
                && l.contains(&format!("{wrong} is not a Herald setting"))
                && l.contains(&format!("did you mean {right}?"))),
            "{wrong}: {out}"
        );
    }
    assert!(
        out.contains("HERALD_WHATEVER_ELSE is not a Herald setting and is ignored (docs"),
        "{out}"
    );
    assert!(
        !out.contains("HERALD_URL is not"),
        "HERALD_URL is the CLI's: {out}"
    );
    assert!(!out.contains("HERALD_DATA_DIR is not"), "{out}");

    // `serve` warns too, in its log; a config error still comes with the warnings.
    let (ok, out) = run_binary(
        &["serve"],
        &[("HERALD_LOG_LEVL", "debug"), ("HERALD_PORT", "x")],
    );
    assert!(!ok);
    assert!(out.contains("did you mean HERALD_LOG_LEVEL?"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("herald.log");
    let h = herald_testkit::HeraldProcess::start_logged(
        env!("CARGO_BIN_EXE_herald"),
        dir.path(),
        &[("HERALD_DELIVERY_POLL_INTERVAL", "10")],
        &log,
    );
    drop(h);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("did you mean HERALD_DELIVERY_POLL_INTERVAL_MS?"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_describes_the_product() {
    let (ok, out) = run_binary(&["--help"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("outbound webhooks and event delivery"),
        "{out}"
    );
    assert!(out.contains("Outpost API"), "{out}");
    assert!(
        !out.contains("wiring"),
        "not the crate's description: {out}"
    );
    let (ok, short) = run_binary(&["-h"], &[]);
    assert!(ok && short.contains("outbound webhooks"), "{short}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenants_are_counted_and_refused_on_request() {
    // Default: accepted, tenant_found false, counted.
    let h = crate::process(&[]);
    h.ok("PUT", "/tenants/known", None).await;
    for tenant in ["nobody", "nobody", "known"] {
        let p = h
            .publish(json!({"tenant_id": tenant, "topic": "a", "data": {}}))
            .await;
        assert_eq!(p["tenant_found"], tenant == "known", "{tenant}: {p}");
    }
    let text = h.metrics().await;
    assert!(
        text.contains("herald_events_unknown_tenant_total{outcome=\"accepted\"} 2"),
        "{text}"
    );
    drop(h);
    // publish.require_known_tenant: 404, nothing stored, counted as refused.
    let h = crate::process(&[("HERALD_PUBLISH_REQUIRE_KNOWN_TENANT", "true")]);
    let (status, v) = h
        .call(
            "POST",
            "/publish",
            Some(json!({"id": "e1", "tenant_id": "nobody", "topic": "a", "data": {}})),
        )
        .await;
    assert_eq!(
        (status, v["message"].clone()),
        (404, json!("tenant not found")),
        "{v}"
    );
    let (status, _) = h.call("GET", "/events/e1", None).await;
    assert_eq!(status, 404);
    let text = h.metrics().await;
    assert!(
        text.contains("herald_events_unknown_tenant_total{outcome=\"refused\"} 1"),
        "{text}"
    );
    h.ok("PUT", "/tenants/nobody", None).await;
    let p = h
        .publish(json!({"id": "e1", "tenant_id": "nobody", "topic": "a", "data": {}}))
        .await;
    assert_eq!(p["tenant_found"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_api_key_is_kept_and_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let run = || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve"])
            .env_clear()
            .env("HERALD_DATA_DIR", tmp.path())
            .env("HERALD_PORT", "0")
            .env("HERALD_HOST", "127.0.0.1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut text = String::new();
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.contains("Press Ctrl-C to stop") {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        text
    };
    let first = run();
    let key = std::fs::read_to_string(tmp.path().join("api_key")).unwrap();
    assert!(
        first.contains(key.trim()),
        "first start prints the key: {first}"
    );
    assert!(first.contains("curl -H 'Authorization: Bearer"), "{first}");
    let second = run();
    assert!(
        !second.contains(key.trim()),
        "later starts do not print it: {second}"
    );
}

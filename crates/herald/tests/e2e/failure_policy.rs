//! End-to-end failure policy: alerts, auto-disable, rate limits, isolation of a dead
//! destination, retention, metrics, allow-list and egress proxy.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_testkit::{Herald, Receiver};
use serde_json::{Value, json};

const ALERT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn alerts(sink: &Receiver) -> Vec<Value> {
    sink.got.lock().iter().map(|r| r.json()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_alert_at_each_level_then_disable() {
    let rx = Receiver::start().await;
    rx.default_status.store(500, Ordering::SeqCst);
    let sink = Receiver::start().await;
    let h = Herald::start(&[
        ("HERALD_ALERTS_CALLBACK_URL", &sink.url("/alerts")),
        ("HERALD_ALERTS_SECRET", ALERT_SECRET),
        ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "4"),
    ])
    .await;
    let d = h.webhook("t", &rx.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap().to_string();
    for i in 0..4 {
        h.publish(json!({"tenant_id": "t", "topic": "a", "id": format!("e{i}"), "eligible_for_retry": false, "data": {}})).await;
    }
    // 50 % = 2, 70 % = 3, 90 % and 100 % = 4 (reported as 100), then the disable notice.
    sink.wait_for(4).await;
    let got = alerts(&sink);
    let mut levels: Vec<u64> = got
        .iter()
        .filter(|a| a["topic"] == "alert.destination.consecutive_failure")
        .map(|a| a["data"]["progress"].as_u64().unwrap())
        .collect();
    levels.sort();
    assert_eq!(levels, [50, 70, 100], "{got:?}");
    let disabled: Vec<_> = got
        .iter()
        .filter(|a| a["topic"] == "alert.destination.disabled")
        .collect();
    assert_eq!(disabled.len(), 1, "{got:?}");
    assert_eq!(disabled[0]["data"]["destination"]["id"], id.as_str());
    // Alerts are signed with the configured secret (verified independently).
    let wh = standardwebhooks::Webhook::new(ALERT_SECRET).unwrap();
    for r in sink.got.lock().iter() {
        let mut headers = http::HeaderMap::new();
        for n in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(
                n,
                http::HeaderValue::from_str(&r.header(n).unwrap()).unwrap(),
            );
        }
        wh.verify(&r.body, &headers).expect("alert signature");
    }
    let dest = h
        .ok("GET", &format!("/tenants/t/destinations/{id}"), None)
        .await;
    assert!(!dest["disabled_at"].is_null(), "auto-disabled at 100 %");
    let out = h
        .publish(json!({"tenant_id": "t", "topic": "a", "data": {}}))
        .await;
    assert_eq!(out["destination_ids"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_raise_an_alert_and_disabled_destinations_stop_pending_work() {
    let rx = Receiver::start().await;
    rx.default_status.store(503, Ordering::SeqCst);
    let sink = Receiver::start().await;
    let h = Herald::start(&[
        ("HERALD_ALERTS_CALLBACK_URL", &sink.url("/alerts")),
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1"),
        ("HERALD_RETRY_JITTER", "0"),
    ])
    .await;
    h.webhook("t", &rx.url("/"), json!({})).await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "id": "ex1", "data": {}}))
        .await;
    h.wait_attempts("event_id=ex1", |a| a.len() == 2).await;
    sink.wait_for(1).await;
    let got = alerts(&sink);
    assert!(
        got.iter()
            .any(|a| a["topic"] == "alert.attempt.exhausted_retries"
                && a["data"]["event"]["id"] == "ex1"),
        "{got:?}"
    );

    // Disabling stops pending deliveries; re-enabling does not replay them.
    let rx2 = Receiver::start().await;
    rx2.default_status.store(503, Ordering::SeqCst);
    let d = h.webhook("t2", &rx2.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap();
    h.publish(json!({"tenant_id": "t2", "topic": "a", "id": "p1", "data": {}}))
        .await;
    rx2.wait_for(1).await;
    h.ok(
        "PUT",
        &format!("/tenants/t2/destinations/{id}/disable"),
        None,
    )
    .await;
    rx2.default_status.store(200, Ordering::SeqCst);
    h.ok(
        "PUT",
        &format!("/tenants/t2/destinations/{id}/enable"),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        rx2.count(),
        1,
        "the pending retry was stopped by the disable and not replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_deliveries() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[]).await;
    h.webhook(
        "t",
        &rx.url("/"),
        json!({"config": {"url": rx.url("/"), "rate_limit_per_minute": "600"}}),
    )
    .await;
    let start = Instant::now();
    for i in 0..6 {
        h.publish(json!({"tenant_id": "t", "topic": "a", "id": format!("r{i}"), "data": {}}))
            .await;
    }
    rx.wait_for(6).await;
    // 600/min is one every 100 ms: six deliveries need at least 500 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(480),
        "deliveries were not spaced: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_destination_does_not_slow_a_healthy_one() {
    let hole = Receiver::start().await;
    *hole.delay.lock() = Duration::from_secs(30);
    let healthy = Receiver::start().await;
    let h = Herald::start(&[("HERALD_DELIVERY_TIMEOUT_MS", "1000")]).await;
    // The black hole takes 2 attempts at a time, 1 s each: 400 events need 200 s there.
    h.webhook(
        "t",
        &hole.url("/hole"),
        json!({"config": {"url": hole.url("/hole"), "max_in_flight": "2"}}),
    )
    .await;
    h.webhook("t", &healthy.url("/ok"), json!({})).await;
    let n = 400;
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let api = herald_testkit::Api::clone(&h);
            tokio::spawn(async move {
                for i in 0..n / 4 {
                    api.publish(json!({"tenant_id": "t", "topic": "a", "id": format!("bh-{p}-{i}"), "data": {"i": i}}))
                        .await;
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    while healthy.count() < n {
        assert!(
            Instant::now() < deadline,
            "healthy receiver got only {} of {n}",
            healthy.count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        hole.hits.load(Ordering::SeqCst) < n / 2,
        "the black hole cannot have taken them all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_records() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[
        ("HERALD_RETENTION_MAX_AGE_SECS", "1"),
        ("HERALD_RETENTION_INTERVAL_SECS", "1"),
    ])
    .await;
    h.webhook("t", &rx.url("/"), json!({})).await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "id": "old", "data": {}}))
        .await;
    h.wait_attempts("event_id=old", |a| a.len() == 1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _) = h.call("GET", "/events/old", None).await;
        let attempts = h.ok("GET", "/attempts?event_id=old", None).await;
        if s == 404 && attempts["models"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "event and attempts were not purged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_report_outcomes_and_backlog() {
    let rx = Receiver::start().await;
    // Exact counts need a process of its own: in-process servers share the one recorder.
    let h = crate::process(&[]);
    h.webhook("t", &rx.url("/"), json!({})).await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "data": {}}))
        .await;
    h.wait_attempts("tenant_id=t", |a| a.len() == 1).await;
    let text = h.metrics().await;
    assert!(
        text.contains("herald_events_published_total{outcome=\"accepted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("herald_attempts_total{outcome=\"success\",destination_type=\"webhook\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("herald_attempt_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("herald_pending_deliveries_total 0"), "{text}");
    assert!(text.contains("herald_retry_backlog 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_admits_a_private_network_without_dev_mode() {
    let rx = Receiver::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let h = Herald::start_in(
        tmp.path(),
        &[
            ("HERALD_SECURITY_ALLOW_HTTP", "true"),
            ("HERALD_SECURITY_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ],
        false,
    )
    .await;
    h.webhook(
        "t",
        &format!("http://localhost:{}/x", rx.addr.port()),
        json!({}),
    )
    .await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "data": {}}))
        .await;
    rx.wait_for(1).await;
    // ::1 is not in the allow-list.
    let (s, v) = h
        .call(
            "POST",
            "/tenants/t/destinations",
            Some(json!({"type": "webhook", "topics": "*", "config": {"url": "http://[::1]:9/x"}})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_proxy_carries_webhook_requests() {
    // The receiver plays the proxy: it gets absolute-form requests for the real target.
    let proxy = Receiver::start().await;
    let h = Herald::start(&[("HERALD_DELIVERY_PROXY", &proxy.url(""))]).await;
    h.webhook("t", "http://receiver.invalid/hook", json!({}))
        .await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "data": {"via": "proxy"}}))
        .await;
    let got = proxy.wait_for(1).await;
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].header("host").as_deref(), Some("receiver.invalid"));
    assert_eq!(got[0].json(), json!({"via": "proxy"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_requeues_failed_deliveries_once() {
    let rx = Receiver::start().await;
    rx.default_status.store(400, Ordering::SeqCst);
    let h = Herald::start(&[]).await;
    let d = h.webhook("t", &rx.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap();
    for i in 0..5 {
        h.publish(json!({"tenant_id": "t", "topic": if i < 4 { "a" } else { "b" }, "id": format!("f{i}"), "data": {}})).await;
    }
    h.wait_attempts("tenant_id=t&status=failed", |a| a.len() == 5)
        .await;
    rx.default_status.store(200, Ordering::SeqCst);

    let path = format!("/tenants/t/destinations/{id}/replay");
    let (s, v) = h
        .call("POST", &path, Some(json!({"status": ["bogus"]})))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("status"), "{v}");

    let (s, v) = h.call("POST", &path, Some(json!({"topics": ["a"]}))).await;
    assert_eq!((s, v["count"].as_u64()), (202, Some(4)), "{v}");
    let (s, v) = h.call("POST", &path, Some(json!({"topics": ["a"]}))).await;
    assert_eq!(
        (s, v["count"].as_u64()),
        (202, Some(0)),
        "a second replay must not duplicate: {v}"
    );
    h.wait_attempts("tenant_id=t&status=success", |a| a.len() == 4)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 9, "5 first attempts + 4 replayed, nothing more");
    let (s, v) = h.call("POST", &path, None).await;
    assert_eq!(
        (s, v["count"].as_u64()),
        (202, Some(1)),
        "the remaining failed one (topic b): {v}"
    );
}

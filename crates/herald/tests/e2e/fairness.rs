//! Fair delivery: one tenant's hung destinations must not take the delivery capacity every
//! tenant shares (issue 15, item 2).
//!
//! Tenant Y has one healthy webhook. Its throughput is measured alone, then again while tenant
//! X has 50 webhooks pointing at a server that accepts connections and never answers, with 100
//! events published to them (5,000 deliveries, each of which can only end in a timeout). The
//! bound is looser than the benchmark's 80 % target (`herald bench`, fairness phase) because
//! this runs a debug build beside other tests.

use std::time::{Duration, Instant};

use herald_testkit::{Forwarder, Herald, Mode, Receiver, unique};
use serde_json::json;

/// Y events per measurement.
const Y_EVENTS: usize = 300;
/// Concurrent publishers for Y.
const Y_PUBLISHERS: usize = 16;

/// Publishes `Y_EVENTS` events for `tenant` and waits until `receiver` got them all; returns
/// deliveries per second (publish of the first to arrival of the last).
async fn y_throughput(h: &Herald, receiver: &Receiver, tenant: &str) -> f64 {
    let before = receiver.count();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..Y_PUBLISHERS {
        let api = (*h).clone();
        let tenant = tenant.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (p..Y_EVENTS).step_by(Y_PUBLISHERS) {
                api.publish(json!({
                    "tenant_id": tenant, "id": unique("evt_"), "topic": "y.event",
                    "data": {"i": i}
                }))
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    // Generous: the point is the ratio, and on today's failure mode Y waits for whole waves of
    // X's timeouts.
    let deadline = started + Duration::from_secs(60);
    while receiver.count() < before + Y_EVENTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = receiver.count() - before;
    got as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hung_destinations_of_one_tenant_leave_another_tenant_its_throughput() {
    let h = Herald::start(&[
        ("HERALD_DELIVERY_TIMEOUT_MS", "2000"),
        // X's failures must not disable its destinations during the test (that would end
        // the pressure early and hide the problem).
        ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "0"),
    ])
    .await;
    let receiver = Receiver::start().await;
    h.webhook("tenant-y", &receiver.url("/y"), json!({})).await;

    // Warm up (connection pool, first-use costs), then measure Y alone.
    y_throughput(&h, &receiver, "tenant-y").await;
    let alone = y_throughput(&h, &receiver, "tenant-y").await;

    // Tenant X: 50 webhooks to a server that accepts and never answers, 100 events.
    let hole = Forwarder::start_in("127.0.0.1:9", Mode::Hang).await;
    for i in 0..50 {
        h.webhook("tenant-x", &format!("http://{}/x{i}", hole.addr), json!({}))
            .await;
    }
    for i in 0..100 {
        h.publish(json!({"tenant_id": "tenant-x", "topic": "x.event", "data": {"i": i}}))
            .await;
    }
    // X's attempts are out (the hung server holds their connections) before Y is measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hole.accepted() < 50 {
        assert!(
            Instant::now() < deadline,
            "only {} of X's attempts reached the hung server",
            hole.accepted()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let with_x = y_throughput(&h, &receiver, "tenant-y").await;
    let ratio = with_x / alone;
    eprintln!(
        "tenant Y: {alone:.0} deliveries/s alone, {with_x:.0} deliveries/s beside 50 hung destinations of tenant X ({:.0} %); the hung server accepted {} connections",
        ratio * 100.0,
        hole.accepted()
    );
    assert!(
        ratio >= 0.5,
        "tenant Y kept only {:.0} % of its throughput ({alone:.0} → {with_x:.0} deliveries/s) beside tenant X's hung destinations",
        ratio * 100.0
    );
}

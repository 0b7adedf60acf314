//! Crash safety: SIGKILL herald while thousands of events are being published and delivered,
//! restart it on the same data directory, and prove that every event that got a 202 is
//! delivered at least once and none that got an error response is. Duplicates (delivered
//! twice because the crash came between the send and its bookkeeping) are counted and
//! reported, not forbidden: delivery is at-least-once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_testkit::{Api, Receiver};
use parking_lot::Mutex;
use serde_json::json;

#[derive(Default)]
struct Outcomes {
    accepted: HashSet<String>,
    refused: HashSet<String>,
    /// The connection failed: the process died before or after committing; unknowable.
    unknown: HashSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_accepted_event() {
    let rx = Receiver::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let h = crate::process_in(tmp.path(), &[], true);
    h.webhook("crash", &rx.url("/"), json!({})).await;

    const PUBLISHERS: usize = 8;
    const PER_PUBLISHER: usize = 500;
    const KILL_AFTER: usize = 2500;
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let pid = h.child.id();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (api, outcomes) = (Api::clone(&h), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                let id = format!("crash-{p}-{i}");
                let body =
                    json!({"tenant_id": "crash", "topic": "t", "id": id, "data": {"p": p, "i": i}});
                let res = api.try_publish(&body, Duration::from_secs(10)).await;
                let mut o = outcomes.lock();
                match res {
                    Some(202) => {
                        o.accepted.insert(id);
                    }
                    Some(_) => {
                        o.refused.insert(id);
                    }
                    None => {
                        o.unknown.insert(id);
                        return; // the server is gone
                    }
                }
            }
        }));
    }
    // Kill once enough events are in, while publishing and delivery are both in full swing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcomes.lock().accepted.len() < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "publishing too slow to reach the kill point"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered_before_kill = rx.count();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    drop(h);

    let h = crate::process_in(tmp.path(), &[], true);
    let (accepted, refused, unknown) = {
        let o = outcomes.lock();
        (o.accepted.clone(), o.refused.clone(), o.unknown.clone())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let received = loop {
        let got: HashMap<String, usize> = rx.got.lock().iter().fold(HashMap::new(), |mut m, r| {
            *m.entry(r.header("webhook-id").unwrap_or_default())
                .or_default() += 1;
            m
        });
        if accepted.iter().all(|id| got.contains_key(id)) {
            break got;
        }
        let missing = accepted.iter().filter(|id| !got.contains_key(*id)).count();
        assert!(
            Instant::now() < deadline,
            "{missing} accepted events never delivered after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let stragglers arrive so the duplicate count is complete.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = rx.count();
    let unique = received.len();
    let delivered_refused: Vec<_> = refused
        .iter()
        .filter(|id| received.contains_key(*id))
        .collect();
    let delivered_unknown = unknown
        .iter()
        .filter(|id| received.contains_key(*id))
        .count();
    println!(
        "crash test: accepted={} refused={} unknown(connection lost)={} delivered_before_kill={} \
         deliveries_received={} unique_events={} duplicates={} unknown_delivered={}",
        accepted.len(),
        refused.len(),
        unknown.len(),
        delivered_before_kill,
        total,
        unique,
        total - unique,
        delivered_unknown
    );
    assert!(
        delivered_refused.is_empty(),
        "events that got an error response were delivered: {delivered_refused:?}"
    );
    assert!(
        received
            .keys()
            .all(|id| accepted.contains(id) || unknown.contains(id)),
        "something was delivered that was never published"
    );
    // The attempt log agrees with the receiver after the restart.
    let v = h.ok("GET", "/events?tenant_id=crash&limit=1", None).await;
    assert!(!v["models"].as_array().unwrap().is_empty());
}

/// An operator event is written in the transaction of its cause: a failure disables a
/// destination (and writes `alert.destination.disabled` with a delivery to the operator
/// destination), the process is SIGKILLed right after — while the operator receiver hangs, so
/// the alert cannot have been received — and after a restart on the same data
/// directory the alert arrives once, exactly as stored, signed with the operator
/// destination's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_caused_before_a_sigkill_is_delivered_after_the_restart() {
    use herald_testkit::forwarder::{Forwarder, Mode};
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dead = Receiver::start().await;
    dead.default_status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    let sink = Receiver::start().await;
    // The operator receiver hangs: the alert's first send is still out when the process dies
    // (and, unanswered, it can neither be recorded nor count as a failure).
    let gate = Forwarder::start_in(&sink.addr.to_string(), Mode::Hang).await;
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "1"),
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ];
    let mut h = crate::process_in(tmp.path(), &env, true);
    let op = h
        .ok(
            "POST",
            "/operator-events/destinations",
            Some(
                json!({"type": "webhook", "topics": ["alert.destination.disabled"],
                        "config": {"url": format!("{}/alerts", gate.url())},
                        "credentials": {"secret": SECRET}}),
            ),
        )
        .await;
    let d = h.webhook("victim", &dead.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap().to_string();
    h.publish(json!({"tenant_id": "victim", "topic": "t", "id": "doomed", "eligible_for_retry": false, "data": {}}))
        .await;
    // The moment the disable is visible, its alert is in the store too: kill.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = h
            .call("GET", &format!("/tenants/victim/destinations/{id}"), None)
            .await;
        if !v["disabled_at"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "never disabled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.kill();
    assert_eq!(sink.count(), 0, "nothing got through the hanging gate");
    drop(h);

    gate.set(Mode::Forward).await;
    let h = crate::process_in(tmp.path(), &env, true);
    let got = sink.wait_for(1).await;
    let alert = got[0].json();
    assert_eq!(alert["topic"], "alert.destination.disabled");
    assert_eq!(alert["tenant_id"], "victim");
    assert_eq!(alert["data"]["destination"]["id"], id.as_str());
    assert_eq!(alert["data"]["reason"], "too many consecutive failures");
    let mut headers = http::HeaderMap::new();
    for n in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(
            n,
            http::HeaderValue::from_str(&got[0].header(n).unwrap()).unwrap(),
        );
    }
    standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .verify(&got[0].body, &headers)
        .expect("the alert is signed");
    // Exactly what was stored in the transaction of the disable, and recorded as delivered.
    let stored = h
        .ok(
            "GET",
            &format!("/operator-events/events/{}", alert["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(stored["data"], alert);
    assert_eq!(stored["matched_destination_ids"], json!([op["id"]]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = h
            .ok(
                "GET",
                &format!(
                    "/operator-events/events/{}/attempts",
                    alert["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        let models = a["models"].as_array().unwrap();
        if models.iter().any(|x| x["status"] == "success") {
            assert_eq!(
                models.len(),
                1,
                "one attempt, as if nothing had happened: {a}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no successful attempt recorded: {a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = h.ok("GET", "/operator-events/events", None).await;
    assert_eq!(
        events["models"].as_array().unwrap().len(),
        1,
        "one alert, written once: {events}"
    );
    assert_eq!(sink.count(), 1, "delivered once");
}

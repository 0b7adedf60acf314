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

//! Scale-out end to end: several real `herald serve` processes on one fresh PostgreSQL
//! database, delivering to a real local receiver. Each node sends its own `User-Agent`
//! (`node-<n>`), so the receiver knows who delivered what.
//!
//! Delivery is at-least-once: duplicates (a node killed between sending and recording) are
//! counted and printed, never forbidden; losing an accepted event is a failure.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_testkit::{Api, HeraldProcess, Receiver, TestDb};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Starts node `n` on `db` with a short lease (a killed node's work is taken over after ~3 s).
fn node(db: &TestDb, n: usize, extra: &[(&str, &str)]) -> HeraldProcess {
    let ua = format!("node-{n}");
    let mut env: Vec<(&str, &str)> = db.env().to_vec();
    env.extend([
        ("HERALD_DATABASE_POOL_SIZE", "4"),
        ("HERALD_DELIVERY_USER_AGENT", ua.as_str()),
        ("HERALD_DELIVERY_TIMEOUT_MS", "1000"),
        ("HERALD_DELIVERY_LEASE_SECS", "3"),
    ]);
    env.extend_from_slice(extra);
    crate::process(&env)
}

/// Publishes a probe on `h` until it routes to `dest` (the node learnt about the destination).
async fn wait_routed(
    h: &HeraldProcess,
    tenant: &str,
    dest: &str,
    topic: &str,
    probe: &str,
) -> Duration {
    let started = Instant::now();
    let mut i = 0;
    loop {
        let out = h
            .publish(json!({"tenant_id": tenant, "topic": topic, "id": format!("{probe}-{i}"), "data": {}}))
            .await;
        if out["destination_ids"] == json!([dest]) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "node {} never routed to {dest}: {out}",
            h.addr
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Event id → (deliveries received, first deliverer's user agent).
fn received(rx: &Receiver) -> HashMap<String, (usize, String)> {
    let mut m: HashMap<String, (usize, String)> = HashMap::new();
    for r in rx.got.lock().iter() {
        let id = r.header("webhook-id").unwrap_or_default();
        let ua = r.header("user-agent").unwrap_or_default();
        m.entry(id).or_insert((0, ua)).0 += 1;
    }
    m
}

fn per_node(got: &HashMap<String, (usize, String)>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (_, ua) in got.values() {
        *m.entry(ua.clone()).or_default() += 1;
    }
    m
}

#[derive(Default)]
struct Outcomes {
    /// Event id → node that answered 202.
    accepted: HashMap<String, usize>,
    refused: HashSet<String>,
    /// The connection failed: the node died before or after committing; unknowable.
    unknown: HashSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_everything_accepted_when_one_is_killed() {
    let db = TestDb::create().await;
    let rx = Receiver::start().await;
    // A slow-ish receiver and few attempts in flight per node: work piles up on every node,
    // so the killed one dies holding leases.
    *rx.delay.lock() = Duration::from_millis(10);
    let nodes: Vec<HeraldProcess> = (0..3).map(|n| node(&db, n, &[])).collect();
    let d = nodes[0]
        .webhook(
            "multi",
            &rx.url("/"),
            json!({"config": {"url": rx.url("/"), "max_in_flight": "2"}}),
        )
        .await;
    let dest = d["id"].as_str().unwrap().to_string();
    for (i, h) in nodes.iter().enumerate() {
        wait_routed(h, "multi", &dest, "probe", &format!("probe{i}")).await;
    }
    let probes: HashSet<String> = received_probe_ids(&nodes, &rx).await;

    const PUBLISHERS: usize = 9;
    const PER_PUBLISHER: usize = 400;
    const KILL_AFTER: usize = 1500;
    const VICTIM: usize = 2;
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let apis: Vec<Api> = nodes.iter().map(|h| Api::clone(h)).collect();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (apis, outcomes) = (apis.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                let n = (p + i) % apis.len();
                let id = format!("mn-{p}-{i}");
                let body =
                    json!({"tenant_id": "multi", "topic": "t", "id": id, "data": {"p": p, "i": i}});
                let res = apis[n].try_publish(&body, Duration::from_secs(10)).await;
                let mut o = outcomes.lock();
                match res {
                    Some(202) => {
                        o.accepted.insert(id, n);
                    }
                    Some(_) => {
                        o.refused.insert(id);
                    }
                    None => {
                        o.unknown.insert(id);
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while outcomes.lock().accepted.len() < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "publishing too slow to reach the kill point"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut nodes = nodes;
    let delivered_before_kill = rx.count();
    std::process::Command::new("kill")
        .args(["-KILL", &nodes[VICTIM].child.id().to_string()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    nodes[VICTIM].kill();

    let (accepted, refused, unknown) = {
        let o = outcomes.lock();
        (o.accepted.clone(), o.refused.clone(), o.unknown.clone())
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = received(&rx);
        let missing = accepted.keys().filter(|id| !got.contains_key(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} accepted events never delivered by the surviving nodes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_in = killed_at.elapsed();
    // Let stragglers arrive so the duplicate count is complete.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received(&rx);
    let total = rx.count();
    let duplicates: usize = got.values().map(|(n, _)| n - 1).sum();
    // Events the victim accepted that a survivor delivered first: its work was taken over.
    let victim_ua = format!("node-{VICTIM}");
    let taken_over = accepted
        .iter()
        .filter(|(id, n)| **n == VICTIM && got.get(*id).is_some_and(|(_, ua)| *ua != victim_ua))
        .count();
    println!(
        "multi-node crash test: accepted={} (by the killed node: {}) refused={} unknown(connection lost)={} \
         delivered_before_kill={delivered_before_kill} deliveries_received={total} unique_events={} duplicates={duplicates} \
         taken_over_from_killed_node={taken_over} all_delivered_{:.1}_s_after_kill first_deliverer_per_node={:?}",
        accepted.len(),
        accepted.values().filter(|n| **n == VICTIM).count(),
        refused.len(),
        unknown.len(),
        got.len(),
        all_in.as_secs_f64(),
        per_node(&got),
    );
    let delivered_refused: Vec<_> = refused.iter().filter(|id| got.contains_key(*id)).collect();
    assert!(
        delivered_refused.is_empty(),
        "events that got an error response were delivered: {delivered_refused:?}"
    );
    assert!(
        got.keys()
            .all(|id| accepted.contains_key(id) || unknown.contains(id) || probes.contains(id)),
        "something was delivered that was never published"
    );
    assert!(
        per_node(&got).len() >= 2,
        "the surviving nodes both delivered: {:?}",
        per_node(&got)
    );
    assert!(
        taken_over > 0,
        "no delivery of the killed node was taken over"
    );
    // The attempt log is shared: any survivor shows attempts of every node.
    let v = nodes[0]
        .ok("GET", "/attempts?tenant_id=multi&limit=1", None)
        .await;
    assert!(!v["models"].as_array().unwrap().is_empty());
}

/// Waits until the probes published by `wait_routed` arrived; returns their ids.
async fn received_probe_ids(nodes: &[HeraldProcess], rx: &Receiver) -> HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = nodes[0]
            .ok("GET", "/events?tenant_id=multi&limit=100", None)
            .await;
        let ids: HashSet<String> = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                !e["destination_ids"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
            })
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        let got = received(rx);
        if ids.iter().all(|id| got.contains_key(id)) {
            return got.keys().cloned().collect();
        }
        assert!(Instant::now() < deadline, "probes were not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_later_takes_a_share_of_the_backlog() {
    let db = TestDb::create().await;
    let rx = Receiver::start().await;
    *rx.delay.lock() = Duration::from_millis(50);
    // A small memory queue: what does not fit waits in the database for any node.
    let small = [("HERALD_DELIVERY_QUEUE_CAPACITY", "20")];
    let a = node(&db, 0, &small);
    let d = a
        .webhook(
            "later",
            &rx.url("/"),
            json!({"config": {"url": rx.url("/"), "max_in_flight": "2"}}),
        )
        .await;
    let dest = d["id"].as_str().unwrap().to_string();
    const EVENTS: usize = 400;
    let mut tasks = Vec::new();
    for p in 0..8 {
        let (api, dest) = (Api::clone(&a), dest.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..EVENTS / 8 {
                let v = api
                    .publish(json!({"tenant_id": "later", "topic": "t", "id": format!("l-{p}-{i}"), "data": {}}))
                    .await;
                assert_eq!(v["destination_ids"], json!([dest]));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Node A alone delivers about 2 / 50 ms = 40 per second; start B while most is left.
    let b = node(&db, 1, &small);
    let started_b = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = received(&rx);
        if got.len() >= EVENTS {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {EVENTS} delivered",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let shares = per_node(&got);
    println!(
        "late node test: {EVENTS} events, first deliverer per node {shares:?}, drained {:.1} s after node-1 started",
        started_b.elapsed().as_secs_f64()
    );
    let b_share = shares.get("node-1").copied().unwrap_or(0);
    assert!(
        b_share * 5 >= EVENTS,
        "the node started later delivered only {b_share} of {EVENTS}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_retry_survives_a_restart_of_every_node() {
    let db = TestDb::create().await;
    let rx = Receiver::start().await;
    rx.script.lock().push_back(503);
    let retry = [
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "4"),
        ("HERALD_RETRY_JITTER", "0"),
    ];
    let mut nodes: Vec<HeraldProcess> = (0..2).map(|n| node(&db, n, &retry)).collect();
    nodes[0].webhook("r", &rx.url("/"), json!({})).await;
    nodes[0]
        .publish(json!({"tenant_id": "r", "topic": "t", "id": "retry-me", "data": {}}))
        .await;
    rx.wait_for(1).await;
    let first = Instant::now();
    // The failure is recorded (and the retry scheduled) before the nodes die.
    nodes[1]
        .wait_attempts("tenant_id=r&event_id=retry-me", |m| m.len() == 1)
        .await;
    // Every node goes down hard before the retry is due, and comes back.
    for h in &mut nodes {
        h.kill();
    }
    drop(nodes);
    let nodes: Vec<HeraldProcess> = (0..2).map(|n| node(&db, n, &retry)).collect();
    let got = rx.wait_for(2).await;
    let waited = first.elapsed();
    assert!(
        waited >= Duration::from_millis(3500),
        "the retry came after {waited:?}, before its schedule"
    );
    assert_eq!(got[1].header("webhook-id").as_deref(), Some("retry-me"));
    let attempts = nodes[1]
        .wait_attempts("tenant_id=r&event_id=retry-me", |m| m.len() == 2)
        .await;
    let mut numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["attempt_number"].as_u64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 2, "delivered exactly once after the retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_take_effect_on_the_others() {
    let db = TestDb::create().await;
    let rx = Receiver::start().await;
    let a = node(&db, 0, &[]);
    let b = node(&db, 1, &[]);
    let d = a.webhook("c", &rx.url("/"), json!({"topics": ["a"]})).await;
    let id = d["id"].as_str().unwrap().to_string();
    let created = wait_routed(&b, "c", &id, "a", "p-create").await;

    // Patched on A: B routes by the new topics.
    a.ok(
        "PATCH",
        &format!("/tenants/c/destinations/{id}"),
        Some(json!({"topics": ["b"]})),
    )
    .await;
    let patched = wait_routed(&b, "c", &id, "b", "p-patch").await;
    let out = b
        .publish(json!({"tenant_id": "c", "topic": "a", "data": {}}))
        .await;
    assert_eq!(
        out["destination_ids"],
        json!([]),
        "old topics no longer route"
    );

    // Disabled on A: B stops routing; enabled again: B routes again.
    a.ok(
        "PUT",
        &format!("/tenants/c/destinations/{id}/disable"),
        None,
    )
    .await;
    let stopped = wait_unrouted(&b, "c", "b").await;
    a.ok("PUT", &format!("/tenants/c/destinations/{id}/enable"), None)
        .await;
    wait_routed(&b, "c", &id, "b", "p-enable").await;

    // Tenant tokens are signed with one shared secret: a token from A works on B.
    let token = a.ok("GET", "/tenants/c/token", None).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = b
        .call_as(&token, "GET", "/tenants/c/destinations", None)
        .await;
    assert_eq!(status, 200, "{body}");

    // Deleted on A: gone on B.
    a.ok("DELETE", &format!("/tenants/c/destinations/{id}"), None)
        .await;
    let deleted = wait_unrouted(&b, "c", "b").await;
    println!(
        "propagation to another node: create {created:?}, patch {patched:?}, disable {stopped:?}, delete {deleted:?}"
    );
    for t in [created, patched, stopped, deleted] {
        assert!(
            t < Duration::from_secs(1),
            "a change took {t:?} to reach another node"
        );
    }
}

/// Publishes on `h` until nothing routes (the node learnt that the destination went away).
async fn wait_unrouted(h: &HeraldProcess, tenant: &str, topic: &str) -> Duration {
    let started = Instant::now();
    loop {
        let out = h
            .publish(json!({"tenant_id": tenant, "topic": topic, "data": {}}))
            .await;
        if out["destination_ids"] == json!([]) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still routed: {out}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_streak_across_nodes_disables_the_destination_once() {
    let db = TestDb::create().await;
    let rx = Receiver::start().await;
    rx.default_status.store(500, Ordering::SeqCst);
    let sink = Receiver::start().await;
    let sink_url = sink.url("/alerts");
    let env = [
        ("HERALD_ALERTS_CALLBACK_URL", sink_url.as_str()),
        ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "10"),
    ];
    let nodes: Vec<HeraldProcess> = (0..2).map(|n| node(&db, n, &env)).collect();
    let d = nodes[0].webhook("f", &rx.url("/"), json!({})).await;
    let id = d["id"].as_str().unwrap().to_string();
    wait_routed(&nodes[1], "f", &id, "x", "f-probe").await;
    // The probes above already failed once or more; publish the rest of the streak from both
    // nodes at once (no retries: one failure per event).
    let mut tasks = Vec::new();
    for (n, h) in nodes.iter().enumerate() {
        let api = Api::clone(h);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let body = json!({"tenant_id": "f", "topic": "x", "id": format!("f-{n}-{i}"), "eligible_for_retry": false, "data": {}});
                let _ = api.try_publish(&body, Duration::from_secs(10)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dest = nodes[1]
            .ok("GET", &format!("/tenants/f/destinations/{id}"), None)
            .await;
        if !dest["disabled_at"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "never auto-disabled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let alerts: Vec<Value> = sink.got.lock().iter().map(|r| r.json()).collect();
    let count = |topic: &str| alerts.iter().filter(|a| a["topic"] == topic).count();
    let mut levels: Vec<u64> = alerts
        .iter()
        .filter(|a| a["topic"] == "alert.destination.consecutive_failure")
        .map(|a| a["data"]["progress"].as_u64().unwrap())
        .collect();
    levels.sort();
    assert_eq!(
        levels,
        [50, 70, 90, 100],
        "each level once, across nodes: {alerts:?}"
    );
    assert_eq!(count("alert.destination.disabled"), 1, "{alerts:?}");
}

fn herald_cli(db: &TestDb, args: &[&str]) -> (bool, String) {
    herald_cli_with(db, Some(&db.key), args)
}

fn herald_cli_with(db: &TestDb, key: Option<&str>, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env_clear();
    if let Some(key) = key {
        cmd.env("HERALD_ENCRYPTION_KEY", key);
    }
    cmd.args(args)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD_DATA_DIR", dir.path())
        .env("HERALD_DATABASE_URL", &db.url)
        .env("HERALD_API_KEY", herald_testkit::API_KEY)
        .env("HERALD_HOST", "127.0.0.1")
        .env("HERALD_PORT", "0");
    herald_testkit::output_within(&mut cmd, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_command_and_schema_version_checks() {
    let db = TestDb::create().await;
    // Without an encryption key PostgreSQL is refused, saying what to set.
    for args in [&["serve"][..], &["rekey"][..]] {
        let (ok, out) = herald_cli_with(&db, None, args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains("HERALD_ENCRYPTION_KEY") && out.contains("every node"),
            "{args:?}: {out}"
        );
    }
    // Not migrated and told not to migrate: refuses, saying what to do.
    let (ok, out) = herald_cli(&db, &["serve", "--no-migrate"]);
    assert!(!ok, "{out}");
    assert!(out.contains("herald migrate"), "{out}");
    // `herald migrate` brings it up to date; twice is fine.
    for _ in 0..2 {
        let (ok, out) = herald_cli(&db, &["migrate"]);
        assert!(ok, "{out}");
        assert!(out.contains("schema version"), "{out}");
        assert!(
            !out.contains("postgres://"),
            "the URL (and password) is not printed: {out}"
        );
    }
    // A database from a newer Herald is refused by serve and migrate alike.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "INSERT INTO herald_schema_migrations (version, description) VALUES (999, 'future')",
            &[],
        )
        .await
        .unwrap();
    for args in [&["serve"][..], &["migrate"][..]] {
        let (ok, out) = herald_cli(&db, args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains("999") && out.contains("upgrade herald"),
            "{args:?}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_hands_its_work_to_the_others_at_once() {
    let db = TestDb::create().await;
    let rx = Receiver::start().await;
    *rx.delay.lock() = Duration::from_millis(100);
    // A long lease: if the stopped node's deliveries waited for it, the test would time out.
    let env = [
        ("HERALD_DELIVERY_LEASE_SECS", "60"),
        ("HERALD_SHUTDOWN_GRACE_SECS", "1"),
    ];
    let mut a = node(&db, 0, &env);
    let b = node(&db, 1, &env);
    let d = a
        .webhook(
            "g",
            &rx.url("/"),
            json!({"config": {"url": rx.url("/"), "max_in_flight": "1"}}),
        )
        .await;
    let dest = d["id"].as_str().unwrap().to_string();
    wait_routed(&b, "g", &dest, "t", "g-probe").await;
    const EVENTS: usize = 40;
    for i in 0..EVENTS {
        a.publish(json!({"tenant_id": "g", "topic": "t", "id": format!("g-{i}"), "data": {}}))
            .await;
    }
    // A holds them all under its lease, delivering ten a second; stop it.
    assert!(a.terminate(), "node 0 did not stop cleanly");
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(20);
    loop {
        let got = received(&rx);
        let done = (0..EVENTS)
            .filter(|i| got.contains_key(&format!("g-{i}")))
            .count();
        if done == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {EVENTS} delivered 20 s after a graceful stop (lease is 60 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shares = per_node(&received(&rx));
    println!(
        "graceful hand-back: all delivered {:.1} s after node-0 stopped; first deliverer per node {shares:?}",
        stopped.elapsed().as_secs_f64()
    );
    assert!(shares.get("node-1").copied().unwrap_or(0) > 0);
}

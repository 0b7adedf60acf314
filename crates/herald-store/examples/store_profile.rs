//! A repeatable workload for profiling the embedded store (not a test): opens a `SqliteStore`
//! in a temporary directory and runs `N` × (publish one event with one leased delivery →
//! record its successful attempt), `CONCURRENCY` events at a time so the writer groups
//! commits as under load. Then it prints the stored bytes per event: the database file after
//! a truncating checkpoint, and per table and index from the `dbstat` virtual table.
//!
//! ```text
//! cargo build --release -p herald-store --example store_profile
//! valgrind --tool=callgrind --callgrind-out-file=cg.N target/release/examples/store_profile N
//! ```
//!
//! Instructions per event are read off two runs: (Ir(2N) − Ir(N)) / N, which leaves out
//! start-up. The payload is 64 bytes of JSON; the attempt's `response_data` is shaped like a
//! webhook's (status, response headers, body, request headers with the signature masked).

use std::collections::BTreeMap;
use std::sync::Arc;

use herald_core::{Attempt, AttemptStatus, Delivery, DeliveryStatus, Destination, Event, Topics};
use herald_store::sqlite::SqliteStore;
use herald_store::{AttemptEffects, AttemptRecord, NewDelivery, Store};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

const CONCURRENCY: usize = 64;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("herald.db");
    let key = herald_store::seal::Keyring::generate_key();
    let keys = herald_store::seal::Keyring::single("k1", &key).expect("keyring");
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open(&path, &keys).expect("open"));
        let now = Timestamp::now();
        store
            .upsert_tenant("tenant_1", None, now)
            .await
            .expect("tenant");
        let mut config = BTreeMap::new();
        config.insert("url".to_string(), "http://127.0.0.1:8081/hook".to_string());
        let mut credentials = BTreeMap::new();
        credentials.insert("secret".to_string(), "whsec_profile".to_string());
        let dest = Destination {
            id: herald_core::ids::new_id(herald_core::ids::DESTINATION),
            tenant_id: "tenant_1".into(),
            kind: "webhook".into(),
            topics: Topics::All,
            filter: None,
            config,
            credentials,
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: now,
            updated_at: now,
        };
        store.insert_destination(&dest).await.expect("destination");
        let dest = Arc::new(dest);
        let mut done = 0;
        while done < n {
            let k = CONCURRENCY.min(n - done);
            let tasks: Vec<_> = (0..k)
                .map(|_| {
                    let (store, dest) = (store.clone(), dest.clone());
                    tokio::spawn(async move { one_event(&store, &dest).await })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            done += k;
        }
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        drop(store);
        // The writer thread ends once its channel closes; reopen to checkpoint and measure.
        let conn = rusqlite_conn(&path);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let file = size(&path);
        println!("events: {n}");
        println!(
            "database file: {file} bytes, {:.0} bytes per event",
            file as f64 / n as f64
        );
        match conn.prepare(
            "SELECT name, SUM(pgsize), SUM(payload) FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC",
        ) {
            Ok(mut stmt) => {
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    })
                    .expect("dbstat");
                println!("{:<32} {:>12} {:>12}", "table/index", "pages B/evt", "payload B/evt");
                for r in rows {
                    let (name, pages, payload) = r.expect("row");
                    println!(
                        "{name:<32} {:>12.1} {:>12.1}",
                        pages as f64 / n as f64,
                        payload as f64 / n as f64
                    );
                }
            }
            Err(e) => println!("dbstat not available: {e}"),
        }
    });
}

fn rusqlite_conn(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("reopen")
}

async fn one_event(store: &SqliteStore, dest: &Destination) {
    let now = Timestamp::now();
    let mut metadata = BTreeMap::new();
    metadata.insert("source".to_string(), "profile".to_string());
    let event = Event {
        id: herald_core::ids::new_id(herald_core::ids::EVENT),
        tenant_id: dest.tenant_id.clone(),
        destination_id: None,
        topic: "user.created".into(),
        time: now,
        metadata,
        // 64 bytes of JSON.
        data: json!({"user_id": "usr_0123456789", "email": "someone@example.com", "n": 1}),
        eligible_for_retry: true,
    };
    let delivery = Delivery {
        id: herald_core::ids::new_id(herald_core::ids::DELIVERY),
        event_id: event.id.clone(),
        tenant_id: event.tenant_id.clone(),
        destination_id: dest.id.clone(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        manual: false,
        retry_base: 0,
        created_at: now,
    };
    let lease = now + SignedDuration::from_secs(30);
    store
        .publish(
            &event,
            std::slice::from_ref(&dest.id),
            vec![NewDelivery {
                delivery: delivery.clone(),
                lease_until: Some(lease),
            }],
            now - SignedDuration::from_hours(24),
            now,
        )
        .await
        .expect("publish");
    let response = json!({
        "status_code": 200,
        "headers": {
            "server": "nginx/1.22.1",
            "date": "Tue, 01 Dec 2026 17:00:00 GMT",
            "content-type": "text/plain",
            "content-length": "2",
            "connection": "keep-alive"
        },
        "body": "ok",
        "request": {"headers": {
            "webhook-id": event.id,
            "webhook-timestamp": now.as_second().to_string(),
            "webhook-signature": "v1,m****",
            "x-herald-topic": event.topic,
            "x-herald-source": "profile"
        }}
    });
    let rec = AttemptRecord {
        attempt: Attempt {
            id: herald_core::ids::new_id(herald_core::ids::ATTEMPT),
            delivery_id: delivery.id.clone(),
            tenant_id: event.tenant_id.clone(),
            event_id: event.id.clone(),
            destination_id: dest.id.clone(),
            destination_type: dest.kind.clone(),
            topic: event.topic.clone(),
            status: AttemptStatus::Success,
            code: "200".into(),
            response_data: Some(response),
            attempt_number: 1,
            manual: false,
            time: now,
            latency_ms: 1,
        },
        status: DeliveryStatus::Success,
        next_attempt_at: now,
        effects: AttemptEffects::default(),
    };
    store.record_attempt(rec).await.expect("record");
}

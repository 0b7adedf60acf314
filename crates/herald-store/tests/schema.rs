//! Schema versions on both stores: migrations apply once (also when several nodes start at
//! the same moment), a database that needs migrating is refused when migrating is turned
//! off, and a database written by a newer Herald is refused with a clear message.

mod common;

use common::{TestDb, raw_pg, test_keys};
use herald_store::pg::{PgOptions, PgStore};
use herald_store::sqlite::SqliteStore;
use herald_store::{Store, StoreError};
use herald_testkit::sqlite_plan;

#[test]
fn sqlite_refuses_newer_and_unmigrated_databases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let keys = test_keys();
    match SqliteStore::open_with(&path, false, &keys) {
        Err(StoreError::MigrationRequired { found, required }) => {
            assert_eq!((found, required), (0, herald_store::sqlite::SCHEMA_VERSION))
        }
        Err(e) => panic!("expected MigrationRequired, got {e}"),
        Ok(_) => panic!("expected MigrationRequired, got a store"),
    }
    drop(SqliteStore::open(&path, &keys).unwrap());
    drop(SqliteStore::open_with(&path, false, &keys).expect("migrated database opens"));

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = match SqliteStore::open(&path, &keys) {
        Err(e) => e,
        Ok(_) => panic!("a newer database must be refused"),
    };
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("99") && msg.contains("upgrade herald"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrates_once_even_with_concurrent_nodes() {
    let db = TestDb::create().await;
    assert_eq!(PgStore::schema_version(&db.url).await.unwrap(), 0);
    // Refused while unmigrated when migrating is off.
    let mut opts = PgOptions::new(&db.url, db.keys.clone());
    opts.migrate = false;
    match PgStore::connect(&opts).await {
        Err(StoreError::MigrationRequired { found: 0, required }) => {
            assert_eq!(required, herald_store::pg::SCHEMA_VERSION)
        }
        Err(e) => panic!("expected MigrationRequired, got {e}"),
        Ok(_) => panic!("expected MigrationRequired, got a store"),
    }
    // Three nodes starting at once: one migrates, all come up.
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let (url, keys) = (db.url.clone(), db.keys.clone());
            tokio::spawn(async move { PgStore::connect(&PgOptions::new(url, keys)).await })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("connect"));
    }
    assert_eq!(
        PgStore::schema_version(&db.url).await.unwrap(),
        herald_store::pg::SCHEMA_VERSION
    );
    stores[0]
        .upsert_tenant("t", None, jiff::Timestamp::now())
        .await
        .unwrap();
    assert!(stores[2].get_tenant("t").await.unwrap().is_some());
    // Migrating again is a no-op; a migrated database opens without migrating.
    assert_eq!(
        PgStore::migrate(&db.url).await.unwrap(),
        herald_store::pg::SCHEMA_VERSION
    );
    PgStore::connect(&opts)
        .await
        .expect("migrated database opens");
}

/// Schema 7 drops `deliveries_created` and narrows `deliveries_event`: a database at
/// version 6 (rebuilt here from a migrated one by undoing migration 7) upgrades, losing only
/// the finished deliveries whose event is already gone, which the purge could not reach again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_7_drops_orphan_finished_deliveries_and_narrows_indexes() {
    assert_eq!(herald_store::pg::SCHEMA_VERSION, 7);
    let db = TestDb::create().await;
    PgStore::migrate(&db.url).await.unwrap();
    let client = raw_pg(&db.url).await;
    client
        .batch_execute(
            "DELETE FROM herald_schema_migrations WHERE version = 7;
             DROP INDEX deliveries_event;
             CREATE INDEX deliveries_event ON deliveries (event_id, destination_id);
             CREATE INDEX deliveries_created ON deliveries (created_at);
             INSERT INTO events (id, tenant_id, topic, time, metadata, data, eligible_for_retry, matched, created_at)
                 VALUES ('e1', 't', 'x', 0, '{}', '{}', true, '[]', 0);
             INSERT INTO deliveries (id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at, manual, created_at, updated_at) VALUES
                 ('kept_done', 'e1', 't', 'd1', 'success', 1, 0, false, 0, 0),
                 ('kept_pending', 'gone', 't', 'd1', 'pending', 0, 0, false, 0, 0),
                 ('orphan', 'gone', 't', 'd2', 'failed', 6, 0, true, 0, 0),
                 ('other_tenant', 'e1', 'u', 'd1', 'success', 1, 0, false, 0, 0);",
        )
        .await
        .unwrap();
    assert_eq!(PgStore::schema_version(&db.url).await.unwrap(), 6);
    assert_eq!(PgStore::migrate(&db.url).await.unwrap(), 7);
    let left: Vec<String> = client
        .query("SELECT id FROM deliveries ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["kept_done", "kept_pending"]);
    let indexes: Vec<(String, String)> = client
        .query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'deliveries' ORDER BY indexname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        !indexes.iter().any(|(n, _)| n == "deliveries_created"),
        "{indexes:?}"
    );
    let event = indexes
        .iter()
        .find(|(n, _)| n == "deliveries_event")
        .expect("deliveries_event");
    assert!(event.1.ends_with("(event_id)"), "{}", event.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_database_from_a_newer_herald() {
    let db = TestDb::create().await;
    PgStore::migrate(&db.url).await.unwrap();
    let client = raw_pg(&db.url).await;
    client
        .execute(
            "INSERT INTO herald_schema_migrations (version, description) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .unwrap();
    for migrate in [true, false] {
        let mut opts = PgOptions::new(&db.url, db.keys.clone());
        opts.migrate = migrate;
        let err = match PgStore::connect(&opts).await {
            Err(e) => e,
            Ok(_) => panic!("a newer database must be refused"),
        };
        assert!(
            matches!(err, StoreError::TooNew { found: 999, supported } if supported == herald_store::pg::SCHEMA_VERSION),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade herald"), "{err}");
    }
    assert!(matches!(
        PgStore::migrate(&db.url).await,
        Err(StoreError::TooNew { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_an_error_not_a_hang() {
    // Nothing listens on port 1: connecting fails promptly with a readable error.
    let started = std::time::Instant::now();
    let err = match PgStore::connect(&PgOptions::new(
        "postgres://postgres@127.0.0.1:1/none",
        test_keys(),
    ))
    .await
    {
        Err(e) => e,
        Ok(_) => panic!("connected to nothing"),
    };
    assert!(matches!(err, StoreError::Postgres(_)), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

/// Version 7 of the embedded schema as that Herald left it (migrations 1–7 applied).
const SQLITE_V7: &str = r#"
CREATE TABLE tenants (id TEXT PRIMARY KEY, metadata TEXT, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, tokens_revoked_at INTEGER);
CREATE INDEX tenants_created ON tenants (created_at, id);
CREATE TABLE deliveries (id TEXT PRIMARY KEY, event_id TEXT NOT NULL, tenant_id TEXT NOT NULL,
    destination_id TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL, leased INTEGER NOT NULL DEFAULT 0, manual INTEGER NOT NULL,
    retry_base INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id, destination_id);
CREATE INDEX deliveries_destination ON deliveries (destination_id, status);
CREATE INDEX deliveries_created ON deliveries (created_at);
CREATE TABLE attempts (id TEXT PRIMARY KEY, delivery_id TEXT NOT NULL, tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL, destination_id TEXT NOT NULL, destination_type TEXT NOT NULL,
    topic TEXT NOT NULL, status TEXT NOT NULL, code TEXT NOT NULL, response_data TEXT,
    attempt_number INTEGER NOT NULL, manual INTEGER NOT NULL, time INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL);
CREATE INDEX attempts_time ON attempts (time, id);
CREATE INDEX attempts_tenant_time ON attempts (tenant_id, time, id);
CREATE INDEX attempts_destination_time ON attempts (destination_id, time, id);
CREATE INDEX attempts_event ON attempts (event_id);
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL, tenant_id TEXT,
    secret_hash TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER,
    last_used_at INTEGER);
CREATE INDEX api_keys_created ON api_keys (created_at, id);
CREATE TABLE used_nonces (nonce TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE INDEX used_nonces_expiry ON used_nonces (expires_at);
CREATE TABLE destinations (id TEXT NOT NULL, tenant_id TEXT NOT NULL, type TEXT NOT NULL,
    topics TEXT NOT NULL, filter TEXT, config TEXT NOT NULL, credentials TEXT NOT NULL,
    delivery_metadata TEXT, metadata TEXT, disabled_at INTEGER, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, expires_at INTEGER, expiry_notice INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id));
CREATE INDEX destinations_tenant ON destinations (tenant_id, created_at);
CREATE TABLE events (id TEXT NOT NULL, tenant_id TEXT NOT NULL, destination_id TEXT,
    topic TEXT NOT NULL, time INTEGER NOT NULL, metadata TEXT NOT NULL, data TEXT NOT NULL,
    eligible_for_retry INTEGER NOT NULL, matched TEXT NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id));
CREATE INDEX events_time ON events (time, id);
CREATE INDEX events_tenant_time ON events (tenant_id, time, id);
CREATE INDEX events_created ON events (created_at);
CREATE TABLE destination_health (tenant_id TEXT NOT NULL, destination_id TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL, PRIMARY KEY (tenant_id, destination_id));
CREATE TABLE purged_event_ids (tenant_id TEXT NOT NULL, id TEXT NOT NULL, matched TEXT NOT NULL,
    created_at INTEGER NOT NULL, PRIMARY KEY (tenant_id, id));
CREATE INDEX purged_event_ids_created ON purged_event_ids (created_at);
PRAGMA user_version = 7;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_v7_database_migrates_keeping_every_row() {
    use herald_store::{AttemptQuery, EventQuery, PageRequest};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let s = |secs: i64| (1_700_000_000 + secs) * 1_000_000;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SQLITE_V7).unwrap();
        conn.execute(
            "INSERT INTO tenants (id, metadata, created_at, updated_at) VALUES ('acme', NULL, ?1, ?1)",
            [s(0)],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO destinations (id, tenant_id, type, topics, config, credentials, created_at, updated_at)
             VALUES ('d1', 'acme', 'webhook', '\"*\"', '{\"url\":\"https://example.com/in\"}', '{}', ?1, ?1)",
            [s(0)],
        )
        .unwrap();
        for (i, (id, t)) in [("e1", 10), ("e2", 20), ("e3", 20)].iter().enumerate() {
            conn.execute(
                "INSERT INTO events (id, tenant_id, topic, time, metadata, data, eligible_for_retry, matched, created_at)
                 VALUES (?1, 'acme', 'user.created', ?2, '{}', '{\"n\":1}', 1, '[\"d1\"]', ?2)",
                rusqlite::params![id, s(*t)],
            )
            .unwrap();
            let status = if i == 0 { "success" } else { "pending" };
            conn.execute(
                "INSERT INTO deliveries (id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at,
                 manual, created_at, updated_at) VALUES (?1, ?2, 'acme', 'd1', ?3, ?4, ?5, 0, ?5, ?5)",
                rusqlite::params![format!("dl_{id}"), id, status, (i == 0) as i64, s(*t)],
            )
            .unwrap();
        }
        for (id, t) in [("a1", 11), ("a2", 21), ("a3", 21)] {
            conn.execute(
                "INSERT INTO attempts (id, delivery_id, tenant_id, event_id, destination_id, destination_type, topic,
                 status, code, response_data, attempt_number, manual, time, latency_ms)
                 VALUES (?1, 'dl_e1', 'acme', 'e1', 'd1', 'webhook', 'user.created', 'success', '200',
                 '{\"status_code\":200}', 1, 0, ?2, 5)",
                rusqlite::params![id, s(t)],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path, &test_keys()).expect("a v7 database opens");
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, herald_store::sqlite::SCHEMA_VERSION);

    let e1 = store.get_event("acme", "e1").await.unwrap().expect("e1");
    assert_eq!(e1.event.data, serde_json::json!({"n": 1}));
    assert_eq!(e1.matched_destination_ids, vec!["d1".to_string()]);
    let d = store
        .get_destination("acme", "d1")
        .await
        .unwrap()
        .expect("d1");
    assert_eq!(
        d.config.get("url").map(String::as_str),
        Some("https://example.com/in")
    );
    assert_eq!(store.pending_count().await.unwrap(), 2);
    assert!(store.get_attempt("a2").await.unwrap().is_some());

    // The lists still page in (time, id) order, newest first, through the rebuilt indexes;
    // e2/e3 and a2/a3 share a microsecond, so the id breaks the tie.
    let mut ids = Vec::new();
    let mut page = PageRequest {
        limit: 1,
        ..Default::default()
    };
    loop {
        let q = EventQuery {
            tenant_ids: vec!["acme".into()],
            page: page.clone(),
            ..Default::default()
        };
        let p = store.list_events(&q).await.unwrap();
        ids.extend(p.models.iter().map(|e| e.event.id.clone()));
        match p.next {
            Some(c) => page.cursor = Some(herald_store::Cursor::Next(c)),
            None => break,
        }
    }
    assert_eq!(ids, ["e3", "e2", "e1"]);
    for q in [
        AttemptQuery {
            tenant_ids: vec!["acme".into()],
            ..Default::default()
        },
        AttemptQuery {
            tenant_ids: vec!["acme".into()],
            destination_ids: vec!["d1".into()],
            ..Default::default()
        },
        AttemptQuery::default(),
    ] {
        let p = store.list_attempts(&q).await.unwrap();
        let got: Vec<_> = p.models.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(got, ["a3", "a2", "a1"], "{q:?}");
    }
    // The migrated time indexes hold the time alone.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let cols: Vec<String> = conn
        .prepare("SELECT name FROM pragma_index_info('attempts_tenant_time')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(cols, ["tenant_id", "time"]);
}

/// Migration 8 of the embedded schema, as it moved a v7 database to v8.
const SQLITE_V7_TO_V8: &str = r#"
DROP INDEX events_time;
CREATE INDEX events_time ON events (time);
DROP INDEX events_tenant_time;
CREATE INDEX events_tenant_time ON events (tenant_id, time);
DROP INDEX attempts_time;
CREATE INDEX attempts_time ON attempts (time);
DROP INDEX attempts_tenant_time;
CREATE INDEX attempts_tenant_time ON attempts (tenant_id, time);
DROP INDEX attempts_destination_time;
CREATE INDEX attempts_destination_time ON attempts (destination_id, time);
PRAGMA user_version = 8;
"#;

/// Rows per table, read straight from the file.
fn row_counts(path: &std::path::Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    [
        "tenants",
        "destinations",
        "events",
        "deliveries",
        "attempts",
        "purged_event_ids",
    ]
    .iter()
    .map(|t| {
        let n: i64 = conn
            .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        (t.to_string(), n)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_v8_database_migrates_keeping_every_row() {
    use common::{at, attempt_record, event, new_delivery};
    use herald_core::DeliveryStatus;
    use herald_store::{Bucket, EventQuery, MetricsQuery, PurgeStats};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let s = |secs: i64| (1_700_000_000 + secs) * 1_000_000;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SQLITE_V7).unwrap();
        conn.execute_batch(SQLITE_V7_TO_V8).unwrap();
        conn.execute(
            "INSERT INTO tenants (id, metadata, created_at, updated_at) VALUES ('acme', NULL, ?1, ?1)",
            [s(0)],
        )
        .unwrap();
        for d in ["d1", "d2"] {
            conn.execute(
                "INSERT INTO destinations (id, tenant_id, type, topics, config, credentials, created_at, updated_at)
                 VALUES (?1, 'acme', 'webhook', '\"*\"', '{\"url\":\"https://example.com/in\"}', '{}', ?2, ?2)",
                rusqlite::params![d, s(0)],
            )
            .unwrap();
        }
        // e1 delivered to d1; e2 pending for d1; e3 delivered to d1 and failed for d2.
        for (id, t, matched) in [
            ("e1", 10, "[\"d1\"]"),
            ("e2", 20, "[\"d1\"]"),
            ("e3", 30, "[\"d1\",\"d2\"]"),
        ] {
            conn.execute(
                "INSERT INTO events (id, tenant_id, topic, time, metadata, data, eligible_for_retry, matched, created_at)
                 VALUES (?1, 'acme', 'user.created', ?2, '{}', '{\"n\":1}', 1, ?3, ?2)",
                rusqlite::params![id, s(t), matched],
            )
            .unwrap();
        }
        for (id, ev, dest, status, attempts, t) in [
            ("dl_e1", "e1", "d1", "success", 1, 10),
            ("dl_e2", "e2", "d1", "pending", 0, 20),
            ("dl_e3_d1", "e3", "d1", "success", 1, 30),
            ("dl_e3_d2", "e3", "d2", "failed", 1, 30),
            // Finished, and its event already purged (a v8 purge took events by their own age):
            // v9's retention would never reach it, so the migration drops it.
            ("dl_orphan", "e_purged", "d1", "success", 1, 5),
        ] {
            conn.execute(
                "INSERT INTO deliveries (id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at,
                 manual, created_at, updated_at) VALUES (?1, ?2, 'acme', ?3, ?4, ?5, ?6, 0, ?6, ?6)",
                rusqlite::params![id, ev, dest, status, attempts, s(t)],
            )
            .unwrap();
        }
        for (id, dl, ev, dest, status, t) in [
            ("a1", "dl_e1", "e1", "d1", "success", 11),
            ("a3", "dl_e3_d1", "e3", "d1", "success", 31),
            ("a4", "dl_e3_d2", "e3", "d2", "failed", 31),
        ] {
            conn.execute(
                "INSERT INTO attempts (id, delivery_id, tenant_id, event_id, destination_id, destination_type, topic,
                 status, code, response_data, attempt_number, manual, time, latency_ms)
                 VALUES (?1, ?2, 'acme', ?3, ?4, 'webhook', 'user.created', ?5, '200',
                 '{\"status_code\":200}', 1, 0, ?6, 5)",
                rusqlite::params![id, dl, ev, dest, status, s(t)],
            )
            .unwrap();
        }
    }
    let mut before = row_counts(&path);
    let store = SqliteStore::open(&path, &test_keys()).expect("a v8 database opens");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, herald_store::sqlite::SCHEMA_VERSION);
    // Every row is kept but the orphaned delivery.
    before
        .iter_mut()
        .filter(|(t, _)| t == "deliveries")
        .for_each(|(_, n)| *n -= 1);
    assert_eq!(row_counts(&path), before, "every other row is kept");
    let orphan: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM deliveries WHERE id = 'dl_orphan'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphan, 0);
    // The creation-time index is gone; the event index holds the event id alone.
    let index_cols = |name: &str| -> Vec<String> {
        conn.prepare(&format!("SELECT name FROM pragma_index_info('{name}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert!(index_cols("deliveries_created").is_empty());
    assert_eq!(index_cols("deliveries_event"), ["event_id"]);

    // The migrated rows answer as before.
    assert_eq!(store.pending_count().await.unwrap(), 1);
    // They count in the metrics before the roll-up (migration 10) folds them in, and after.
    let q = MetricsQuery {
        start: at(0),
        end: at(3600),
        bucket: Bucket::Seconds(60),
        dimensions: vec!["destination_id".into()],
        filters: Default::default(),
        row_limit: 100,
    };
    let qa = MetricsQuery {
        dimensions: vec!["status".into()],
        ..q.clone()
    };
    let routed = store.event_metrics(&q).await.unwrap();
    let attempts = store.attempt_metrics(&qa).await.unwrap();
    assert_eq!(routed.iter().map(|r| r.count).sum::<u64>(), 4);
    assert_eq!(attempts.iter().map(|r| r.count).sum::<u64>(), 3);
    while store.roll_up_metrics(2).await.unwrap() > 0 {}
    let folded: i64 = conn
        .query_row("SELECT SUM(n) FROM metric_rollup", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        folded,
        2 * (3 + 4 + 3),
        "events, routed deliveries, attempts; by minute and by second"
    );
    assert_eq!(store.event_metrics(&q).await.unwrap(), routed);
    assert_eq!(store.attempt_metrics(&qa).await.unwrap(), attempts);
    let e3 = store.get_event("acme", "e3").await.unwrap().expect("e3");
    assert_eq!(e3.matched_destination_ids, ["d1", "d2"]);
    let routed_to_d2 = store
        .list_events(&EventQuery {
            tenant_ids: vec!["acme".into()],
            destination_ids: vec!["d2".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = routed_to_d2
        .models
        .iter()
        .map(|e| e.event.id.as_str())
        .collect();
    assert_eq!(ids, ["e3"]);
    // A manual retry finds the pending delivery through the event index, and a new one
    // continues the attempt numbers of its (event, destination).
    let e2 = event("e2", "acme", "user.created", at(20));
    let (id, created) = store
        .add_delivery(new_delivery("dl_e2_again", &e2, "d1", at(40), None))
        .await
        .unwrap();
    assert_eq!((id.as_str(), created), ("dl_e2", false));
    let e3 = event("e3", "acme", "user.created", at(30));
    let (id, created) = store
        .add_delivery(new_delivery(
            "dl_e3_retry",
            &e3,
            "d2",
            at(40),
            Some(at(100)),
        ))
        .await
        .unwrap();
    assert_eq!((id.as_str(), created), ("dl_e3_retry", true));
    store
        .record_attempt(attempt_record(
            "a5",
            "dl_e3_retry",
            &e3,
            "d2",
            2,
            true,
            at(41),
            (DeliveryStatus::Success, at(41)),
        ))
        .await
        .unwrap();

    // Retention takes an event's finished deliveries with it, also the retry created after
    // the cutoff; the event with a pending delivery keeps it and itself.
    let stats = store.purge(at(35), at(35), 100).await.unwrap();
    assert_eq!(
        stats,
        PurgeStats {
            attempts: 3,
            deliveries: 4,
            events: 2,
            ids_forgotten: 0,
        }
    );
    assert!(store.get_event("acme", "e2").await.unwrap().is_some());
    assert_eq!(store.pending_count().await.unwrap(), 1);
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
    assert!(store.get_attempt("a5").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_delivery_queries_use_their_indexes() {
    // The statements of `sqlite/mod.rs` that schema v9's delivery indexes serve (constants
    // in place of parameters), and the index each must search: see migration 9's comment.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let store = SqliteStore::open(&path, &test_keys()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    rusqlite::vtab::array::load_module(&conn).unwrap();
    let replay_tail = "AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.event_id = d.event_id
        AND p.destination_id = d.destination_id AND p.tenant_id = d.tenant_id
        AND (p.status = 'pending' OR p.created_at > d.created_at OR (p.created_at = d.created_at AND p.id > d.id)))";
    let cases = [
        (
            "UPDATE deliveries SET status = 'cancelled', leased = 0, updated_at = 1
             WHERE destination_id = 'd1' AND tenant_id = 'acme' AND status = 'pending' AND status <> 'success'"
                .to_string(),
            vec!["SEARCH deliveries USING INDEX deliveries_destination (destination_id=? AND status=?)"],
        ),
        (
            "SELECT id FROM deliveries WHERE event_id = 'e1' AND +destination_id = 'd1' AND tenant_id = 'acme'
             AND status = 'pending' LIMIT 1"
                .to_string(),
            vec!["SEARCH deliveries USING INDEX deliveries_event (event_id=?)"],
        ),
        (
            "SELECT COUNT(*) FROM attempts WHERE event_id = 'e1' AND +destination_id = 'd1' AND +tenant_id = 'acme'"
                .to_string(),
            vec!["SEARCH attempts USING INDEX attempts_event (event_id=?)"],
        ),
        (
            format!(
                "SELECT d.id FROM deliveries d WHERE d.tenant_id = 'acme' AND d.destination_id = 'd1'
                 AND d.created_at >= 1 {replay_tail} AND d.status IN ('failed', 'cancelled') AND d.status <> 'success'"
            ),
            vec![
                "SEARCH d USING INDEX deliveries_destination (destination_id=? AND status=?)",
                "SEARCH p USING INDEX deliveries_event (event_id=?)",
            ],
        ),
        (
            format!(
                "SELECT d.id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.tenant_id = 'acme'
                 AND d.destination_id = 'd1' {replay_tail} AND a.destination_id = 'd1' AND +a.tenant_id = 'acme'
                 AND a.status = 'success' AND d.status = 'success'"
            ),
            vec![
                "SEARCH a USING INDEX attempts_destination_time (destination_id=?)",
                "SEARCH d USING INDEX sqlite_autoindex_deliveries_1 (id=?)",
            ],
        ),
        (
            "SELECT e.rowid, e.tenant_id, e.id, e.created_at FROM events e
             WHERE e.created_at >= 0 AND e.created_at < 1 AND NOT (e.created_at = 0 AND e.rowid <= 7)
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.tenant_id = e.tenant_id
                             AND d.status = 'pending')
             ORDER BY e.created_at, e.rowid LIMIT 10"
                .to_string(),
            vec![
                "SEARCH e USING INDEX events_created (created_at>? AND created_at<?)",
                "SEARCH d USING INDEX deliveries_event (event_id=?)",
            ],
        ),
        (
            // The purge's batch of attempts: its end found once, then a range of the index.
            "SELECT time, rowid FROM attempts WHERE time < 50 ORDER BY time, rowid LIMIT 1 OFFSET 99"
                .to_string(),
            vec!["SEARCH attempts USING COVERING INDEX attempts_time (time<?)"],
        ),
        (
            "DELETE FROM attempts WHERE time <= 40 AND (time < 40 OR rowid <= 7)".to_string(),
            vec!["SEARCH attempts USING INDEX attempts_time (time<?)"],
        ),
        (
            // The purge's events, a batch of rowids at once: the routed deliveries' counts.
            "SELECT d.tenant_id, e.time, e.topic, d.destination_id, COUNT(*) FROM deliveries d
             JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
             WHERE e.rowid IN rarray(NULL) AND d.manual = 0 GROUP BY 1, 2, 3, 4"
                .to_string(),
            vec![
                "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)",
                "SEARCH d USING INDEX deliveries_event (event_id=?)",
            ],
        ),
        (
            "DELETE FROM deliveries WHERE rowid IN (SELECT d.rowid FROM events e
             JOIN deliveries d ON d.event_id = e.id AND d.tenant_id = e.tenant_id
             WHERE e.rowid IN rarray(NULL))"
                .to_string(),
            vec![
                "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)",
                "SEARCH d USING INDEX deliveries_event (event_id=?)",
                "SEARCH deliveries USING INTEGER PRIMARY KEY (rowid=?)",
            ],
        ),
        (
            "DELETE FROM events WHERE rowid IN rarray(NULL)".to_string(),
            vec!["SEARCH events USING INTEGER PRIMARY KEY (rowid=?)"],
        ),
        (
            "SELECT tenant_id, destination_id, COUNT(*), SUM(attempts > 0), MIN(created_at) FROM deliveries
             WHERE status = 'pending' GROUP BY tenant_id, destination_id"
                .to_string(),
            vec!["SCAN deliveries USING INDEX deliveries_due"],
        ),
        (
            "SELECT NULL, COUNT(*) FROM deliveries d JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
             AND d.manual = 0 WHERE e.time >= 1 AND e.time < 9 AND d.destination_id IN ('d1')
             AND e.tenant_id <> '__operator' LIMIT 101"
                .to_string(),
            vec![
                "SEARCH e USING INDEX events_time (time>? AND time<?)",
                "SEARCH d USING INDEX deliveries_event (event_id=?)",
            ],
        ),
        (
            "UPDATE deliveries SET next_attempt_at = 1, leased = 1 WHERE id IN (SELECT id FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= 1 ORDER BY next_attempt_at LIMIT 10)"
                .to_string(),
            vec!["SEARCH deliveries USING INDEX deliveries_due (next_attempt_at<?)"],
        ),
    ];
    for (sql, wanted) in &cases {
        let got = sqlite_plan(&conn, sql);
        for w in wanted {
            assert!(got.contains(w), "{sql}\nwants {w}\ngot:\n{got}");
        }
        assert!(
            !got.contains("TEMP B-TREE FOR ORDER BY"),
            "{sql}\nsorts:\n{got}"
        );
    }
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_metrics_queries_use_the_roll_up_and_rowids() {
    // The statements `sqlite/rollup.rs` builds (constants in place of parameters): the roll-up
    // rows are searched by source and tenant, or by source and time without a tenant; the
    // rows above the watermark are read by rowid, never through a time or tenant index (which
    // would walk every row of the range).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let store = SqliteStore::open(&path, &test_keys()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let cases = [
        (
            "SELECT ((e.time / 1000000) / 3600) * 3600, CAST(e.topic AS TEXT), SUM(e.n) FROM metric_rollup e
             WHERE e.time >= 0 AND e.time < 9 AND e.source = 0 AND e.n <> 0 AND e.tenant_id IN ('acme')
             GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 101",
            vec!["SEARCH e USING PRIMARY KEY (source=? AND tenant_id=? AND time>? AND time<?)"],
        ),
        (
            "SELECT NULL, SUM(e.n) FROM metric_rollup e
             WHERE e.time >= 0 AND e.time < 9 AND e.source = 1 AND e.n <> 0 AND e.tenant_id <> '__operator' LIMIT 101",
            vec!["SEARCH e USING INDEX metric_rollup_time (source=? AND time>? AND time<?)"],
        ),
        (
            "SELECT NULL, COUNT(*) FROM events e NOT INDEXED
             WHERE e.time >= 0 AND e.time < 9 AND e.rowid > 5 AND e.tenant_id IN ('acme') LIMIT 101",
            vec!["SEARCH e USING INTEGER PRIMARY KEY (rowid>?)"],
        ),
        (
            "SELECT NULL, CAST(d.destination_id AS TEXT), COUNT(*) FROM deliveries d NOT INDEXED
             JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id AND d.manual = 0
             WHERE e.time >= 0 AND e.time < 9 AND d.rowid > 5 AND e.tenant_id <> '__operator'
             GROUP BY 2 ORDER BY 2 LIMIT 101",
            vec![
                "SEARCH d USING INTEGER PRIMARY KEY (rowid>?)",
                "SEARCH e USING INDEX sqlite_autoindex_events_1 (tenant_id=? AND id=?)",
            ],
        ),
        (
            "SELECT NULL, COUNT(*) FROM attempts a NOT INDEXED
             WHERE a.time >= 0 AND a.time < 9 AND a.rowid > 5 AND a.destination_id IN ('d1')
             AND a.tenant_id <> '__operator' LIMIT 101",
            vec!["SEARCH a USING INTEGER PRIMARY KEY (rowid>?)"],
        ),
        (
            "DELETE FROM metric_rollup WHERE source = 2 AND time <= 9 AND n = 0",
            vec!["SEARCH metric_rollup USING INDEX metric_rollup_time (source=? AND time<?)"],
        ),
    ];
    for (sql, wanted) in &cases {
        let got = sqlite_plan(&conn, sql);
        for w in wanted {
            assert!(got.contains(w), "{sql}\nwants {w}\ngot:\n{got}");
        }
    }
    drop(store);
}

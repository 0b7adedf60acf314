//! Schema versions on both stores: migrations apply once (also when several nodes start at
//! the same moment), a database that needs migrating is refused when migrating is turned
//! off, and a database written by a newer Herald is refused with a clear message.

mod common;

use common::{TestDb, test_keys};
use herald_store::pg::{PgOptions, PgStore};
use herald_store::sqlite::SqliteStore;
use herald_store::{Store, StoreError};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_database_from_a_newer_herald() {
    let db = TestDb::create().await;
    PgStore::migrate(&db.url).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
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

//! Shared helpers for the store test suites: fresh stores of each kind, and record builders.
//!
//! PostgreSQL tests run each in a database of its own (`herald_testkit::TestDb`: the server at
//! `HERALD_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`), dropped
//! afterwards, also when the test fails. An unreachable server fails the test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use herald_core::{Attempt, AttemptStatus, Delivery, DeliveryStatus, Destination, Event, Topics};
use herald_store::pg::{PgOptions, PgStore};
use herald_store::seal::Keyring;
use herald_store::{AttemptRecord, NewDelivery, PublishOutcome, Store};
use jiff::Timestamp;
use serde_json::json;

pub use herald_testkit::{TestDb, test_keys};

/// A migrated store on a test database.
#[allow(async_fn_in_trait)]
pub trait StoreOnTestDb {
    /// Connects (and migrates) a store on this database.
    async fn store(&self) -> PgStore;
}

impl StoreOnTestDb for TestDb {
    async fn store(&self) -> PgStore {
        PgStore::connect(&PgOptions::new(&self.url, self.keys.clone()))
            .await
            .expect("connect to the test database")
    }
}

/// A store under test, with whatever keeps it alive.
pub struct Fixture {
    /// The store.
    pub store: Arc<dyn Store>,
    _db: Option<TestDb>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    /// An embedded store in a temporary directory.
    pub fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            herald_store::sqlite::SqliteStore::open(&dir.path().join("herald.db"), &test_keys())
                .expect("open sqlite");
        Fixture {
            store: Arc::new(store),
            _db: None,
            _dir: Some(dir),
        }
    }

    /// A PostgreSQL store on a fresh database.
    pub async fn postgres() -> Fixture {
        let db = TestDb::create().await;
        let store = db.store().await;
        Fixture {
            store: Arc::new(store),
            _db: Some(db),
            _dir: None,
        }
    }
}

/// A fixed instant plus `secs` seconds (whole microseconds, as stores keep them).
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

/// An event.
pub fn event(id: &str, tenant: &str, topic: &str, time: Timestamp) -> Event {
    let mut metadata = BTreeMap::new();
    metadata.insert("source".to_string(), "test".to_string());
    Event {
        id: id.into(),
        tenant_id: tenant.into(),
        destination_id: None,
        topic: topic.into(),
        time,
        metadata,
        // Key order is not alphabetical on purpose: it must survive storage.
        data: json!({"zeta": 1, "alpha": {"nested": [1, 2, 3]}, "mid": "x"}),
        eligible_for_retry: true,
    }
}

/// A webhook destination.
pub fn destination(id: &str, tenant: &str, topics: &[&str], created: Timestamp) -> Destination {
    let mut config = BTreeMap::new();
    config.insert("url".to_string(), format!("https://example.com/{id}"));
    let mut credentials = BTreeMap::new();
    credentials.insert("secret".to_string(), "whsec_abc".to_string());
    Destination {
        id: id.into(),
        tenant_id: tenant.into(),
        kind: "webhook".into(),
        topics: if topics == ["*"] {
            Topics::All
        } else {
            Topics::List(topics.iter().map(|s| s.to_string()).collect())
        },
        filter: None,
        config,
        credentials,
        delivery_metadata: None,
        metadata: None,
        disabled_at: None,
        expires_at: None,
        created_at: created,
        updated_at: created,
    }
}

/// A new pending delivery of `event` to `dest`.
pub fn new_delivery(
    id: &str,
    event: &Event,
    dest: &str,
    now: Timestamp,
    lease_until: Option<Timestamp>,
) -> NewDelivery {
    NewDelivery {
        delivery: Delivery {
            id: id.into(),
            event_id: event.id.clone(),
            tenant_id: event.tenant_id.clone(),
            destination_id: dest.into(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            manual: false,
            retry_base: 0,
            created_at: now,
        },
        lease_until,
    }
}

/// Publishes `event` with one delivery per destination (ids `dlv_<event>_<dest>`); asserts it
/// was accepted and returns the delivery ids.
pub async fn publish(
    s: &dyn Store,
    event: &Event,
    dests: &[&str],
    now: Timestamp,
    lease_until: Option<Timestamp>,
) -> Vec<String> {
    let ids: Vec<String> = dests
        .iter()
        .map(|d| format!("dlv_{}_{d}", event.id))
        .collect();
    let deliveries = dests
        .iter()
        .zip(&ids)
        .map(|(d, id)| new_delivery(id, event, d, now, lease_until))
        .collect();
    let matched: Vec<String> = dests.iter().map(|d| d.to_string()).collect();
    let out = s
        .publish(event, &matched, deliveries, at(-1_000_000), now)
        .await
        .expect("publish");
    assert_eq!(out, PublishOutcome::Accepted, "publish {}", event.id);
    ids
}

/// An attempt record for delivery `delivery` of `event` to `dest`.
#[allow(clippy::too_many_arguments)]
pub fn attempt_record(
    id: &str,
    delivery: &str,
    event: &Event,
    dest: &str,
    number: u32,
    ok: bool,
    time: Timestamp,
    next: (DeliveryStatus, Timestamp),
) -> AttemptRecord {
    AttemptRecord {
        attempt: Attempt {
            id: id.into(),
            delivery_id: delivery.into(),
            tenant_id: event.tenant_id.clone(),
            event_id: event.id.clone(),
            destination_id: dest.into(),
            destination_type: "webhook".into(),
            topic: event.topic.clone(),
            status: if ok {
                AttemptStatus::Success
            } else {
                AttemptStatus::Failed
            },
            code: if ok { "200".into() } else { "500".into() },
            response_data: Some(json!({"status": if ok { 200 } else { 500 }, "body": "b"})),
            attempt_number: number,
            manual: false,
            time,
            latency_ms: 12,
        },
        status: next.0,
        next_attempt_at: next.1,
        effects: Default::default(),
    }
}

/// Publishes `event` to `dest` at `published` and records its first attempt, `attempt_id`, as
/// a success at `attempted`: an event that is delivered and done.
pub async fn publish_delivered(
    s: &dyn Store,
    event: &Event,
    dest: &str,
    attempt_id: &str,
    published: Timestamp,
    attempted: Timestamp,
) {
    let [dl] = <[String; 1]>::try_from(publish(s, event, &[dest], published, None).await).unwrap();
    s.record_attempt(attempt_record(
        attempt_id,
        &dl,
        event,
        dest,
        1,
        true,
        attempted,
        (DeliveryStatus::Success, attempted),
    ))
    .await
    .unwrap();
}

/// A database that sealing tests open, close and open again with different keys, and read
/// and write underneath the store (raw column text).
pub enum SealBackend {
    /// An embedded database file in a temporary directory.
    Sqlite(tempfile::TempDir),
    /// A fresh PostgreSQL database.
    Postgres(TestDb),
}

/// A store opened by a [`SealBackend`].
pub enum OpenedStore {
    /// Embedded.
    Sqlite(herald_store::sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl OpenedStore {
    /// As the trait object the rest of Herald sees.
    pub fn dyn_store(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Sqlite(s) => Arc::new(s.clone()),
            OpenedStore::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// How its destination rows are sealed.
    pub async fn census(&self) -> herald_store::seal::SealCensus {
        match self {
            OpenedStore::Sqlite(s) => s.seal_census().await.unwrap(),
            OpenedStore::Postgres(s) => s.seal_census().await.unwrap(),
        }
    }
}

impl SealBackend {
    /// An embedded database.
    pub fn sqlite() -> SealBackend {
        SealBackend::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    /// A PostgreSQL database.
    pub async fn postgres() -> SealBackend {
        SealBackend::Postgres(TestDb::create().await)
    }

    /// Path of the embedded database file.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match self {
            SealBackend::Sqlite(d) => Some(d.path().join("herald.db")),
            SealBackend::Postgres(_) => None,
        }
    }

    /// Opens the store with `keys` (sealing or refusing what it finds, as at start).
    pub async fn open(&self, keys: &Keyring) -> Result<OpenedStore, herald_store::StoreError> {
        match self {
            SealBackend::Sqlite(d) => {
                herald_store::sqlite::SqliteStore::open(&d.path().join("herald.db"), keys)
                    .map(OpenedStore::Sqlite)
            }
            SealBackend::Postgres(db) => PgStore::connect(&PgOptions::new(&db.url, keys.clone()))
                .await
                .map(OpenedStore::Postgres),
        }
    }

    /// Moves every row to the current key of `keys`: `herald rekey` on PostgreSQL (beside
    /// the running store), opening again on the embedded store (which re-seals at open).
    pub async fn rekey(&self, keys: &Keyring) -> herald_store::seal::ResealReport {
        match self.open(keys).await.expect("open for rekey") {
            OpenedStore::Sqlite(s) => s.resealed(),
            OpenedStore::Postgres(s) => s.rekey(2, |_| {}).await.expect("rekey"),
        }
    }

    /// `(id, config, credentials)` of every destination as stored, by id.
    pub async fn raw(&self) -> Vec<(String, String, String)> {
        let sql = "SELECT id, config, credentials FROM destinations ORDER BY id";
        match self {
            SealBackend::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join("herald.db")).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            }
            SealBackend::Postgres(db) => {
                let c = raw_pg(&db.url).await;
                c.query(sql, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            }
        }
    }

    /// `(name, value)` of every setting as stored.
    pub async fn raw_settings(&self) -> Vec<(String, String)> {
        let sql = "SELECT name, value FROM settings ORDER BY name";
        match self {
            SealBackend::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join("herald.db")).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            }
            SealBackend::Postgres(db) => raw_pg(&db.url)
                .await
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }

    /// Overwrites the stored value of setting `name`.
    pub async fn set_raw_setting(&self, name: &str, value: &str) {
        let n = match self {
            SealBackend::Sqlite(d) => rusqlite::Connection::open(d.path().join("herald.db"))
                .unwrap()
                .execute(
                    "UPDATE settings SET value = ?2 WHERE name = ?1",
                    [name, value],
                )
                .unwrap() as u64,
            SealBackend::Postgres(db) => raw_pg(&db.url)
                .await
                .execute(
                    "UPDATE settings SET value = $2 WHERE name = $1",
                    &[&name, &value],
                )
                .await
                .unwrap(),
        };
        assert_eq!(n, 1);
    }

    /// Overwrites the stored columns of destination `id`.
    pub async fn set_raw(&self, id: &str, config: &str, credentials: &str) {
        match self {
            SealBackend::Sqlite(d) => {
                let c = rusqlite::Connection::open(d.path().join("herald.db")).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                let n = c
                    .execute(
                        "UPDATE destinations SET config = ?2, credentials = ?3 WHERE id = ?1",
                        [id, config, credentials],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            }
            SealBackend::Postgres(db) => {
                let c = raw_pg(&db.url).await;
                let n = c
                    .execute(
                        "UPDATE destinations SET config = $2, credentials = $3 WHERE id = $1",
                        &[&id, &config, &credentials],
                    )
                    .await
                    .unwrap();
                assert_eq!(n, 1);
            }
        }
    }
}

/// A plain connection to the database at `url`, beside the store's own pool.
pub async fn raw_pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

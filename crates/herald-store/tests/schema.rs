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

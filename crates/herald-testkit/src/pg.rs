//! One PostgreSQL database per test, on herald-store's [`TemporaryDatabase`]: created fresh,
//! dropped when the value is dropped (also when the test fails), with the encryption keys its
//! stores seal destination secrets with.
//!
//! The server comes from `HERALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); when it is unreachable the test fails.

use std::sync::atomic::{AtomicUsize, Ordering};

use herald_store::pg::TemporaryDatabase;
use herald_store::seal::Keyring;

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh random encryption keyring for a test's store.
pub fn test_keys() -> Keyring {
    Keyring::single("test key", &Keyring::generate_key()).expect("a generated key is valid")
}

/// A database that exists for one test.
pub struct TestDb {
    /// URL of the database.
    pub url: String,
    /// The encryption keys every store on this database uses.
    pub keys: Keyring,
    /// The same key as `HERALD_ENCRYPTION_KEY`, for every node on this database.
    pub key: String,
    _db: TemporaryDatabase,
}

impl TestDb {
    /// Creates a uniquely named, empty database. Panics (fails the test) when PostgreSQL is
    /// not reachable: these tests never skip.
    pub async fn create() -> TestDb {
        static N: AtomicUsize = AtomicUsize::new(0);
        let admin = admin_url();
        let name = format!(
            "herald_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            jiff::Timestamp::now().as_millisecond() % 1_000_000
        );
        let db = TemporaryDatabase::create(&admin, &name)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs PostgreSQL at {} (set HERALD_TEST_POSTGRES_URL): {e}",
                    herald_store::pg::describe_url(&admin)
                )
            });
        let key = Keyring::generate_key();
        TestDb {
            url: db.url().to_string(),
            keys: Keyring::single("test key", &key).expect("a generated key is valid"),
            key: key.expose().to_string(),
            _db: db,
        }
    }

    /// The settings a Herald node on this database needs: `HERALD_DATABASE_URL` and the
    /// database's `HERALD_ENCRYPTION_KEY` (the same on every node).
    pub fn env(&self) -> [(&str, &str); 2] {
        [
            ("HERALD_DATABASE_URL", self.url.as_str()),
            ("HERALD_ENCRYPTION_KEY", self.key.as_str()),
        ]
    }
}

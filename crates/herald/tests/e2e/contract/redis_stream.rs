//! `redis_stream` in the Driver contract suite, against the machine's Redis: a fresh stream
//! key per case, read back with XRANGE.

use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::services::REDIS;
use herald_testkit::{contract_tests, require, unique};

/// A connection to the machine's Redis.
pub async fn client() -> redis::aio::MultiplexedConnection {
    require("Redis", REDIS);
    redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis")
}

/// One stream entry: id and fields.
pub type Entry = (String, Vec<(String, Vec<u8>)>);

/// Every entry of stream `key`, oldest first.
pub async fn entries(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<Entry> {
    redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(c)
        .await
        .unwrap()
}

pub struct RedisCase {
    client: redis::aio::MultiplexedConnection,
    key: String,
}

impl RedisCase {
    pub async fn new() -> RedisCase {
        RedisCase {
            client: client().await,
            key: unique("herald-test:"),
        }
    }
}

impl Case for RedisCase {
    fn kind(&self) -> &'static str {
        "redis_stream"
    }

    fn upstream(&self) -> String {
        REDIS.into()
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[("server_url", addr), ("stream", &self.key)]),
            Fields::new(),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        let mut c = self.client.clone();
        entries(&mut c, &self.key)
            .await
            .into_iter()
            .map(|(id, f)| {
                let mut f: Vec<(String, String)> = f
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                    .collect();
                assert_eq!(f[0].0, "data", "the body is the first field");
                let body = f.remove(0).1.into_bytes();
                Delivered {
                    body,
                    headers: f,
                    native: fields(&[("entry_id", &id)]),
                }
            })
            .collect()
    }

    async fn bad_credentials(&self) -> Auth {
        Auth::Refused {
            config: fields(&[("server_url", REDIS), ("stream", &self.key)]),
            credentials: fields(&[("username", "herald-no-such-user"), ("password", "wrong")]),
            code: "auth_failed",
            mentions: &["password", "username", "credentials"],
            server_says: None,
            keep: Box::new(()),
        }
    }

    fn check_native(&self, got: &Delivered, _sent: &OutboundMessage) {
        assert!(got.native["entry_id"].contains('-'), "{:?}", got.native);
    }
}

impl Drop for RedisCase {
    fn drop(&mut self) {
        let (mut c, key) = (self.client.clone(), self.key.clone());
        // Best effort, on the test's runtime.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut c).await;
            });
        }
    }
}

contract_tests!(suite, RedisCase::new().await);

//! Destination secrets sealed at rest, end to end with the real binary:
//!
//! - destinations of several types created with secrets through the API leave none of them in
//!   the embedded database file or its WAL, nor in debug-level logs, and still deliver after a
//!   restart (a local webhook receiver, RabbitMQ and Redis on this machine);
//! - on PostgreSQL, `herald rekey` beside a running node under publish load loses no delivery
//!   and leaves no row under the old key;
//! - `herald config` prints no secret setting.
//!
//! These run the real binary ([`crate::process`]): they restart on one data directory, read
//! its logs and files, and call the CLI.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use herald_testkit::{HeraldProcess, Receiver, TestDb, output_within, require, unique};
use serde_json::json;

const WEBHOOK_SECRET: &str = "whsec_c2VhbC10ZXN0LXdlYmhvb2stc2VjcmV0LTAx";
const HEADER_TOKEN: &str = "Bearer tok-seal-8841-header";
const USERINFO_PASSWORD: &str = "pw-seal-6612-userinfo";
const RABBIT_SECRET: &str = "whsec_c2VhbC10ZXN0LXJhYmJpdC1zZWNyZXQtMDI=";
const REDIS_PASSWORD: &str = "redis-seal-3390-pass";
const AWS_SECRET: &str = "aws-seal-4471-secret-access-key";
const NATS_TOKEN: &str = "nats-seal-2208-token";
const MQTT_PASSWORD: &str = "mqtt-seal-5120-pass";
const KAFKA_PASSWORD: &str = "kafka-seal-7731-sasl-pass";
const S3_SECRET: &str = "s3-seal-1187-secret-access-key";
const KINESIS_SECRET: &str = "kinesis-seal-9052-secret-access-key";
const GCP_KEY: &str = "gcp-seal-3364-private-key-material";
const AZURE_KEY: &str = "azure-seal-4409-shared-access-key";

/// Every secret value the first test stores, as it would appear in clear.
const SECRETS: &[&str] = &[
    WEBHOOK_SECRET,
    "c2VhbC10ZXN0LXdlYmhvb2stc2VjcmV0LTAx",
    "tok-seal-8841-header",
    USERINFO_PASSWORD,
    RABBIT_SECRET,
    "c2VhbC10ZXN0LXJhYmJpdC1zZWNyZXQtMDI",
    REDIS_PASSWORD,
    AWS_SECRET,
    NATS_TOKEN,
    MQTT_PASSWORD,
    KAFKA_PASSWORD,
    S3_SECRET,
    KINESIS_SECRET,
    GCP_KEY,
    AZURE_KEY,
];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Panics naming the first secret found in `bytes`.
fn assert_no_secret(what: &str, bytes: &[u8]) {
    for s in SECRETS {
        assert!(!contains(bytes, s), "{s:?} found in {what}");
    }
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_files_hold_no_secret(dir: &Path) {
    let db = dir.join("herald.db");
    for file in [db.clone(), dir.join("herald.db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            assert_no_secret(&file.display().to_string(), &bytes);
        }
    }
    let c = rusqlite_rows(&db);
    assert!(c.len() >= 6, "{c:?}");
    for (id, config, credentials) in c {
        assert!(
            config.starts_with("hs1:") && credentials.starts_with("hs1:"),
            "{id} not sealed"
        );
    }
}

/// `(id, config, credentials)` as stored, read with SQLite directly (no Herald code).
fn rusqlite_rows(db: &Path) -> Vec<(String, String, String)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database read-only");
    let mut stmt = c
        .prepare("SELECT id, config, credentials FROM destinations ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[cfg(all(feature = "rabbitmq", feature = "redis_stream"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_database_file_or_logs_and_deliver_after_a_restart() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    require("RabbitMQ", "127.0.0.1:5672");
    require("Redis", "127.0.0.1:6379");
    let receiver = Receiver::start().await;

    // RabbitMQ: a queue of our own on the default exchange.
    let amqp = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect to RabbitMQ as guest");
    let channel = amqp.create_channel().await.unwrap();
    let queue = unique("herald-seal-");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            "amq.direct".into(),
            queue.as_str().into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // Redis: a user of our own whose password only the sealed credentials know.
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let redis_user = unique("herald-seal-");
    let stream = unique("herald-seal-stream-");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&redis_user)
        .arg("on")
        .arg(format!(">{REDIS_PASSWORD}"))
        .arg("~*")
        .arg("+@all")
        .query_async(&mut redis)
        .await
        .expect("ACL SETUSER");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let log = tmp.path().join("herald.log");
    let env = [
        ("HERALD_LOG_LEVEL", "debug"),
        ("HERALD_LOG_FORMAT", "json"),
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1,1,1,1,1,1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ];
    let mut h = HeraldProcess::start_logged(crate::BIN, &dir, &env, &log);

    let port = receiver.addr.port();
    h.ok("PUT", "/tenants/seal", None).await;
    h.ok("PUT", "/tenants/idle", None).await;
    let delivering = [
        json!({"type": "webhook", "topics": "*",
            "config": {"url": format!("http://127.0.0.1:{port}/header"),
                       "custom_headers": format!("{{\"Authorization\":\"{HEADER_TOKEN}\"}}")},
            "credentials": {"secret": WEBHOOK_SECRET}}),
        json!({"type": "webhook", "topics": "*",
            "config": {"url": format!("http://hook:{USERINFO_PASSWORD}@127.0.0.1:{port}/userinfo")}}),
        json!({"type": "rabbitmq", "topics": "*",
            "config": {"server_url": "127.0.0.1:5672", "exchange": "amq.direct", "routing_key": queue},
            "credentials": {"username": "guest", "password": "guest", "secret": RABBIT_SECRET}}),
        json!({"type": "redis_stream", "topics": "*",
            "config": {"server_url": "127.0.0.1:6379", "stream": stream},
            "credentials": {"username": redis_user, "password": REDIS_PASSWORD}}),
    ];
    for d in &delivering {
        h.ok("POST", "/tenants/seal/destinations", Some(d.clone()))
            .await;
    }
    // Stored, never delivered to (a tenant that gets no events).
    for d in [
        json!({"type": "aws_sqs", "topics": "*",
            "config": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q"},
            "credentials": {"key": "AKIASEALTEST00000001", "secret": AWS_SECRET}}),
        json!({"type": "nats", "topics": "*",
            "config": {"server_url": "127.0.0.1:4222"},
            "credentials": {"token": NATS_TOKEN}}),
        // The other types too: every destination type's secrets are sealed.
        json!({"type": "mqtt", "topics": "*",
            "config": {"server_url": "127.0.0.1:1883", "topic": "herald/{topic}"},
            "credentials": {"username": "herald", "password": MQTT_PASSWORD}}),
        json!({"type": "kafka", "topics": "*",
            "config": {"brokers": "127.0.0.1:9092", "topic": "orders", "tls": "false",
                       "sasl_mechanism": "plain"},
            "credentials": {"username": "herald", "password": KAFKA_PASSWORD}}),
        json!({"type": "aws_s3", "topics": "*",
            "config": {"bucket": "event-archive", "region": "us-east-1"},
            "credentials": {"key": "AKIASEALTEST00000002", "secret": S3_SECRET}}),
        json!({"type": "aws_kinesis", "topics": "*",
            "config": {"stream_name": "events", "region": "eu-west-1"},
            "credentials": {"key": "AKIASEALTEST00000003", "secret": KINESIS_SECRET}}),
        json!({"type": "gcp_pubsub", "topics": "*",
            "config": {"project_id": "p", "topic": "events", "endpoint": "http://127.0.0.1:8085"},
            "credentials": {"service_account_json":
                format!("{{\"type\":\"service_account\",\"project_id\":\"p\",\"private_key\":\"{GCP_KEY}\"}}")}}),
        json!({"type": "azure_servicebus", "topics": "*",
            "config": {"name": "orders"},
            "credentials": {"connection_string":
                format!("Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={AZURE_KEY}")}}),
    ] {
        h.ok("POST", "/tenants/idle/destinations", Some(d)).await;
    }
    // Every type this build serves has a destination with secrets in the store.
    let mut stored: Vec<String> = Vec::new();
    for tenant in ["seal", "idle"] {
        let list = h
            .ok("GET", &format!("/tenants/{tenant}/destinations"), None)
            .await;
        stored.extend(
            list.as_array()
                .unwrap()
                .iter()
                .map(|d| d["type"].as_str().unwrap().to_string()),
        );
    }
    stored.sort();
    stored.dedup();
    let served: Vec<String> = h
        .ok("GET", "/destination-types", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, served, "a destination of every type");

    let mut round = 0;
    let mut deliver_all = async |h: &HeraldProcess| {
        round += 1;
        let id = unique("evt_");
        h.publish(json!({"tenant_id": "seal", "id": id, "topic": "user.created", "data": {"round": round}}))
            .await;
        let want = 4;
        let attempts = h
            .wait_attempts(&format!("event_id={id}"), |a| {
                a.iter().filter(|x| x["status"] == "success").count() >= want
            })
            .await;
        assert_eq!(
            attempts.iter().filter(|x| x["status"] == "success").count(),
            want,
            "every destination delivered: {attempts:?}"
        );
        id
    };

    // The generated key is kept in the data directory, readable by its owner only.
    let key_file = dir.join("encryption_key");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    }
    let generated = std::fs::read_to_string(&key_file).unwrap();
    let generated_id =
        herald_store::seal::Keyring::key_id(&herald_core::Secret::new(generated.trim())).unwrap();
    let configured = herald_store::seal::Keyring::generate_key();
    let configured_id = herald_store::seal::Keyring::key_id(&configured).unwrap();
    let mut env_configured = env.to_vec();
    env_configured.push(("HERALD_ENCRYPTION_KEY", configured.expose()));

    // Pass 0: first start; pass 1: restart with the generated key; pass 2: restart with a
    // configured key, the generated one still opening the rows (which move to the new key).
    for pass in 0..3 {
        let key_id = if pass < 2 {
            &generated_id
        } else {
            &configured_id
        };
        for (id, config, credentials) in rusqlite_rows(&dir.join("herald.db")) {
            assert!(
                config.starts_with(&format!("hs1:{key_id}:"))
                    && credentials.starts_with(&format!("hs1:{key_id}:")),
                "pass {pass}: {id} not sealed with key {key_id}"
            );
        }
        let id = deliver_all(&h).await;
        // The webhook requests carry the opened secrets.
        let got = receiver.got.lock().clone();
        let header = got
            .iter()
            .rev()
            .find(|r| r.path == "/header" && r.header("webhook-id").as_deref() == Some(&id))
            .expect("header webhook delivered");
        assert_eq!(
            header.header("authorization").as_deref(),
            Some(HEADER_TOKEN)
        );
        let mut map = http::HeaderMap::new();
        for n in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            map.insert(n, header.headers.get(n).unwrap().clone());
        }
        standardwebhooks::Webhook::new(WEBHOOK_SECRET)
            .unwrap()
            .verify(&header.body, &map)
            .expect("signed with the stored secret");
        let userinfo = got
            .iter()
            .rev()
            .find(|r| r.path == "/userinfo" && r.header("webhook-id").as_deref() == Some(&id))
            .expect("userinfo webhook delivered");
        let basic = userinfo.header("authorization").unwrap_or_default();
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim_start_matches("Basic "))
            .unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&decoded),
            format!("hook:{USERINFO_PASSWORD}"),
            "URL userinfo sent as Basic auth"
        );
        // RabbitMQ got it.
        let m = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("the message is in our queue");
        assert_eq!(
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .as_str(),
            id
        );
        // Redis got it (as our user, with the sealed password).
        let len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(len, pass as u64 + 1);

        // Neither the file nor its WAL holds any secret, while running...
        assert_files_hold_no_secret(&dir);
        // ...nor after a clean stop; then start again on the same data directory.
        assert!(h.terminate(), "herald stops cleanly");
        assert_files_hold_no_secret(&dir);
        match pass {
            0 => h = HeraldProcess::start_logged(crate::BIN, &dir, &env, &log),
            1 => h = HeraldProcess::start_logged(crate::BIN, &dir, &env_configured, &log),
            _ => {}
        }
    }

    // Debug-level logs of both runs hold no secret either.
    let logs = std::fs::read(&log).unwrap();
    assert!(
        contains(&logs, "\"rekeyed\":12"),
        "the third start moved every row to the configured key"
    );
    assert!(contains(&logs, "DEBUG"), "the log really is at debug level");
    assert!(
        contains(&logs, "using the encryption key kept in the data directory"),
        "the restart reused the generated key"
    );
    assert_no_secret("the debug-level log", &logs);
    for key in [generated.trim(), configured.expose()] {
        assert!(!contains(&logs, key), "an encryption key is in the log");
    }

    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&redis_user)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// Runs the `herald` CLI with exactly `env` (plus PATH and a scratch data directory).
fn herald_cli(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(crate::BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD_DATA_DIR", dir.path())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(&mut cmd, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_under_load_on_postgres_loses_no_delivery() {
    let db = TestDb::create().await;
    let old_key = db.key.clone();
    let new_key = herald_store::seal::Keyring::generate_key()
        .expose()
        .to_string();
    let new_id =
        herald_store::seal::Keyring::key_id(&herald_core::Secret::new(new_key.clone())).unwrap();
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    const DESTINATIONS: usize = 8;
    const EVENTS: usize = 40;

    // Destinations created under the old key.
    {
        let mut h = crate::process(&[
            ("HERALD_DATABASE_URL", &db.url),
            ("HERALD_ENCRYPTION_KEY", &old_key),
        ]);
        h.ok("PUT", "/tenants/rk", None).await;
        for n in 0..DESTINATIONS {
            h.ok(
                "POST",
                "/tenants/rk/destinations",
                Some(json!({"type": "webhook", "topics": "*",
                    "config": {"url": format!("http://127.0.0.1:{port}/d{n}"),
                               "custom_headers": format!("{{\"X-Api-Key\":\"rekey-token-{n}-5150\"}}")}})),
            )
            .await;
        }
        assert!(h.terminate());
    }

    // The node now seals with the new key and still opens the old one.
    let rotating = [
        ("HERALD_DATABASE_URL", db.url.as_str()),
        ("HERALD_ENCRYPTION_KEY", new_key.as_str()),
        ("HERALD_ENCRYPTION_OLD_KEYS", old_key.as_str()),
    ];
    let h = crate::process(&rotating);
    let publisher = {
        let client = h.client.clone();
        let url = h.url("/publish");
        tokio::spawn(async move {
            for i in 0..EVENTS {
                let resp = client
                    .post(&url)
                    .bearer_auth(herald_testkit::API_KEY)
                    .json(&json!({"tenant_id": "rk", "id": format!("rk-{i}"), "topic": "t", "data": {"i": i}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 202);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    // Rekey while the publisher runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let env: Vec<(String, String)> = rotating
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        herald_cli(&env, &["rekey", "--batch", "3"])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "done: {DESTINATIONS} destinations moved from old keys"
        )),
        "{out}"
    );
    assert!(
        out.contains("destinations examined"),
        "progress is printed: {out}"
    );
    assert!(
        !publisher.is_finished(),
        "rekey ran while events were being published"
    );
    publisher.await.unwrap();

    // Every event reached every destination.
    wait_for("every delivery", async || {
        let got = receiver.got.lock();
        let seen: HashSet<(String, String)> = got
            .iter()
            .map(|r| (r.path.clone(), r.header("webhook-id").unwrap_or_default()))
            .collect();
        seen.len() == DESTINATIONS * EVENTS
    })
    .await;
    for r in receiver.got.lock().iter() {
        let n: usize = r.path.trim_start_matches("/d").parse().unwrap();
        assert_eq!(
            r.header("x-api-key"),
            Some(format!("rekey-token-{n}-5150")),
            "each destination sent its own opened header"
        );
    }

    // No row is left under the old key, and none holds a secret in clear.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT config, credentials FROM destinations", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), DESTINATIONS);
    for r in &rows {
        for col in [r.get::<_, String>(0), r.get::<_, String>(1)] {
            assert!(col.starts_with(&format!("hs1:{new_id}:")), "{col}");
            assert!(!col.contains("5150"), "a header token in clear: {col}");
        }
    }
    // The old key can now be dropped: a node with only the new key starts.
    drop(h);
    let h = crate::process(&[
        ("HERALD_DATABASE_URL", &db.url),
        ("HERALD_ENCRYPTION_KEY", &new_key),
    ]);
    let list = h.ok("GET", "/tenants/rk/destinations", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(DESTINATIONS));
    // And a node with only the old key is refused, saying why.
    let (ok, out) = herald_cli(
        &[
            ("HERALD_DATABASE_URL", &db.url),
            ("HERALD_ENCRYPTION_KEY", &old_key),
        ],
        &["serve"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{DESTINATIONS} of {DESTINATIONS} destinations cannot be opened"
        )),
        "{out}"
    );
}

#[test]
fn herald_config_prints_no_secret() {
    let key = herald_store::seal::Keyring::generate_key()
        .expose()
        .to_string();
    let old = herald_store::seal::Keyring::generate_key()
        .expose()
        .to_string();
    let secrets = [
        ("HERALD_API_KEY", "admin-key-seal-1001".to_string()),
        ("HERALD_JWT_SECRET", "jwt-secret-seal-1002".to_string()),
        ("HERALD_ENCRYPTION_KEY", key.clone()),
        ("HERALD_ENCRYPTION_OLD_KEYS", old.clone()),
        (
            "HERALD_ALERTS_SECRET",
            "whsec_c2VhbC1hbGVydHMtc2VjcmV0LTEwMDMteHl6".to_string(),
        ),
        (
            "HERALD_ALERTS_CALLBACK_URL",
            "https://ops:alerts-pw-1004@alerts.example.com/in".to_string(),
        ),
        (
            "HERALD_DELIVERY_PROXY",
            "http://proxy:proxy-pw-1005@proxy.example.com:3128".to_string(),
        ),
        (
            "HERALD_DATABASE_URL",
            "postgres://herald:db-pw-1006@db.example.com:5432/herald".to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, out) = herald_cli(&env, &["config"]);
    assert!(ok, "{out}");
    for (var, value) in &secrets {
        assert!(!out.contains(value.as_str()), "{var} printed: {out}");
    }
    for pw in [
        "admin-key-seal",
        "jwt-secret-seal",
        "c2VhbC1hbGVydHMtc2VjcmV0",
        "alerts-pw",
        "proxy-pw",
        "db-pw",
    ] {
        assert!(!out.contains(pw), "{pw} printed: {out}");
    }
    assert!(out.contains("secret = \"(set)\""), "{out}");
    assert!(
        out.contains("proxy = \"http://proxy:****@proxy.example.com:3128/\""),
        "{out}"
    );
    assert!(
        out.contains("postgres://herald:****@db.example.com:5432/herald"),
        "{out}"
    );
    let id = herald_store::seal::Keyring::key_id(&herald_core::Secret::new(key)).unwrap();
    assert!(
        out.contains(&format!("key id {id}")),
        "the key is named by id: {out}"
    );

    // A key that is not 32 base64 bytes is refused, naming the setting, without echoing it.
    let (ok, out) = herald_cli(
        &[("HERALD_ENCRYPTION_KEY", "too-short-key-1007")],
        &["config"],
    );
    assert!(!ok);
    assert!(
        out.contains("HERALD_ENCRYPTION_KEY") && out.contains("openssl rand -base64 32"),
        "{out}"
    );
    assert!(!out.contains("too-short-key-1007"), "{out}");
}

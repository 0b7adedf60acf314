//! End-to-end tests of the message-system destination types (`rabbitmq`, `nats`,
//! `redis_stream`, `mqtt`) against the real servers on this machine: each test starts the real
//! binary, creates destinations over the API, publishes, and reads the message back with the
//! protocol's own client.
//!
//! The shared brokers are never stopped: outages are simulated with a TCP forwarder owned by
//! the test (off = accept and drop every connection; black hole = accept and never answer).
//! Bad credentials on NATS and MQTT need an authenticating server, and the shared ones allow
//! anonymous clients, so those tests start a private `nats-server` / `mosquitto` (the same
//! Debian binaries) on a free port. A server that cannot be reached fails the test — nothing
//! here skips.

// Nothing to test in a webhook-only build; a build with only some types must stay clean.
#![cfg(any(
    feature = "rabbitmq",
    feature = "nats",
    feature = "redis_stream",
    feature = "mqtt"
))]
#![cfg_attr(
    not(all(
        feature = "rabbitmq",
        feature = "nats",
        feature = "redis_stream",
        feature = "mqtt"
    )),
    allow(dead_code, unused_imports, unused_mut)
)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_testkit::herald::succeeded;
use herald_testkit::services::{MQTT, NATS, RABBITMQ, REDIS};
use herald_testkit::{Forwarder, Herald, Mode, SECRET, check_headers, free_port, require, unique};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Herald with quick retries and a short attempt timeout.
async fn herald() -> Herald {
    Herald::start(&[
        ("HERALD_RETRY_SCHEDULE", "list"),
        (
            "HERALD_RETRY_DELAYS_SECS",
            "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
        ),
        ("HERALD_RETRY_JITTER", "0"),
        ("HERALD_DELIVERY_TIMEOUT_MS", "2000"),
    ])
    .await
}

/// A server process this test started; killed on drop.
struct Private {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Private {
    fn spawn(name: &str, mut cmd: Command, port: u16, dir: tempfile::TempDir) -> Private {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {name}: {e} (it is installed with the broker packages)")
            });
        let p = Private { child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "{name} did not start on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Expects exactly one failed, permanent attempt with `code`, and no retry after it.
async fn expect_permanent(h: &Herald, event_id: &str, code: &str) -> Value {
    let a = h.attempts(event_id, |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "failed", "{a:?}");
    assert_eq!(a[0]["code"], code, "{a:?}");
    // Retries are 1 s apart here: a retryable failure would have a second attempt by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = h.attempts(event_id, |_| true).await;
    assert_eq!(
        again.len(),
        1,
        "a permanent failure is not retried: {again:?}"
    );
    a[0].clone()
}

/// The outage scenario every type shares: deliver through the forwarder (three events over
/// one pooled connection), cut it (failed attempts are retried), restore it (delivered on a
/// later attempt over a new connection). `count` reads how many messages the broker holds for
/// the destination.
async fn outage_and_recovery<F, Fut>(h: &Herald, tenant: &str, fwd: &Forwarder, count: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    for n in 0..3 {
        let first = h.publish_event(tenant, "order.paid", json!({"n": n})).await;
        h.attempts(&first, succeeded).await;
    }
    assert_eq!(
        fwd.accepted(),
        1,
        "three deliveries reuse the destination's one connection"
    );
    fwd.set(Mode::Drop).await;
    let second = h.publish_event(tenant, "order.paid", json!({"n": 3})).await;
    let failed = h.attempts(&second, |a| a.len() >= 2).await;
    for a in &failed {
        assert_eq!(a["status"], "failed", "{failed:?}");
    }
    fwd.set(Mode::Forward).await;
    let all = h.attempts(&second, succeeded).await;
    assert!(all.len() >= 3, "{all:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count().await < 4 {
        assert!(
            Instant::now() < deadline,
            "the broker never got both messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `n` events at once to a tenant's one destination (the engine sends them
/// concurrently over the destination's shared connection) and expects every one delivered
/// exactly once: `n` successful attempts, no failed one, `n` messages at the broker.
async fn burst<F, Fut>(h: &Herald, tenant: &str, n: usize, count: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    for i in 0..n {
        h.publish_event(tenant, "order.paid", json!({"i": i})).await;
    }
    h.wait_attempts(
        &format!("tenant_id={tenant}&status=success&limit=1000"),
        |a| a.len() >= n,
    )
    .await;
    let failed = h
        .ok(
            "GET",
            &format!("/attempts?tenant_id={tenant}&status=failed"),
            None,
        )
        .await;
    assert_eq!(failed["models"], json!([]), "no attempt failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count().await < n {
        assert!(
            Instant::now() < deadline,
            "the broker got {} of {n}",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count().await, n, "each event exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_list_every_broker_type_with_sensitive_fields() {
    let h = herald().await;
    let types = h.ok("GET", "/destination-types", None).await;
    let find = |kind: &str| {
        types
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} missing from {types}"))
            .clone()
    };
    let mut expected: Vec<(&str, &str, &[&str])> = Vec::new();
    #[cfg(feature = "rabbitmq")]
    expected.push(("rabbitmq", "server_url", &["password", "secret"]));
    #[cfg(feature = "nats")]
    expected.push(("nats", "server_url", &["password", "token", "secret"]));
    #[cfg(feature = "redis_stream")]
    expected.push(("redis_stream", "stream", &["password", "secret"]));
    #[cfg(feature = "mqtt")]
    expected.push(("mqtt", "server_url", &["password", "secret"]));
    for (kind, required, sensitive) in expected {
        let t = find(kind);
        let cfg = t["config_fields"].as_array().unwrap();
        let req = cfg.iter().find(|f| f["key"] == required).unwrap();
        assert_eq!(req["required"], true, "{kind}.{required}");
        assert!(req["description"].as_str().unwrap().len() > 10);
        let server = cfg.iter().find(|f| f["key"] == "server_url").unwrap();
        assert!(server["pattern"].is_string(), "{kind}: server_url pattern");
        for f in t["credential_fields"].as_array().unwrap() {
            let key = f["key"].as_str().unwrap();
            assert_eq!(
                f["sensitive"].as_bool().unwrap(),
                sensitive.contains(&key),
                "{kind}.{key}"
            );
        }
    }
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use super::*;
    use lapin::options::{
        BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

    /// A test exchange with one exclusive queue bound to every routing key.
    struct Setup {
        channel: Channel,
        _conn: Connection,
        exchange: String,
        queue: String,
    }

    async fn setup() -> Setup {
        require("RabbitMQ", RABBITMQ);
        let conn = Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            ConnectionProperties::default(),
        )
        .await
        .expect("connect to RabbitMQ as guest");
        let channel = conn.create_channel().await.unwrap();
        let exchange = unique("herald-test-");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let q = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = q.name().as_str().to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Setup {
            channel,
            _conn: conn,
            exchange,
            queue,
        }
    }

    impl Setup {
        async fn get(&self) -> Option<lapin::message::BasicGetMessage> {
            self.channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
        }

        async fn cleanup(&self) {
            let _ = self
                .channel
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
    }

    fn dest(server: &str, exchange: &str, password: &str) -> Value {
        json!({
            "type": "rabbitmq", "topics": "*",
            "config": {"server_url": server, "exchange": exchange, "routing_key": "herald.{topic}"},
            "credentials": {"username": "guest", "password": password, "secret": SECRET},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_with_confirms_headers_and_signature() {
        let s = setup().await;
        let h = herald().await;
        let d = h.create("rmq", dest(RABBITMQ, &s.exchange, "guest")).await;
        assert_eq!(d["credentials"]["password"], "****", "password masked: {d}");
        assert_eq!(
            d["credentials"]["secret"],
            "whse**********************************"
        );
        assert_eq!(d["target"], s.exchange.as_str());

        let id = h
            .publish_event("rmq", "user.created", json!({"name": "Ada"}))
            .await;
        let a = h.attempts(&id, succeeded).await;
        assert_eq!(a.len(), 1);
        assert_eq!(a[0]["code"], "ack");
        assert_eq!(a[0]["response_data"]["routing_key"], "herald.user.created");

        let m = s.get().await.expect("the message is in the bound queue");
        assert_eq!(m.delivery.routing_key.as_str(), "herald.user.created");
        let body = m.delivery.data.clone();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"name": "Ada"})
        );
        let p = &m.delivery.properties;
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), id);
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "user.created");
        assert_eq!(*p.delivery_mode(), Some(2));
        let headers: Vec<(String, String)> = p
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
                    other => panic!("header {k} is {other:?}"),
                };
                (k.as_str().to_string(), v)
            })
            .collect();
        check_headers(&headers, &body, &id, "user.created");

        // A masked password sent back unchanged keeps the stored one: still delivers.
        let did = d["id"].as_str().unwrap();
        h.ok(
            "PATCH",
            &format!("/tenants/rmq/destinations/{did}"),
            Some(
                json!({"credentials": {"password": "****", "secret": d["credentials"]["secret"]}}),
            ),
        )
        .await;
        let id2 = h
            .publish_event("rmq", "user.created", json!({"n": 2}))
            .await;
        h.attempts(&id2, succeeded).await;
        let m = s.get().await.expect("delivered after the PATCH");
        let headers: Vec<(String, String)> = m
            .delivery
            .properties
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .iter()
            .filter_map(|(k, v)| match v {
                AMQPValue::LongString(s) => Some((
                    k.as_str().to_string(),
                    String::from_utf8(s.as_bytes().to_vec()).unwrap(),
                )),
                _ => None,
            })
            .collect();
        // Signed with the stored secret, not with its masked form.
        check_headers(&headers, &m.delivery.data, &id2, "user.created");
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_outage_is_retried_and_recovers() {
        let s = setup().await;
        let fwd = Forwarder::start(RABBITMQ).await;
        let h = herald().await;
        h.create("rmq-out", dest(&fwd.server_url(), &s.exchange, "guest"))
            .await;
        let got = Arc::new(Mutex::new(0usize));
        outage_and_recovery(&h, "rmq-out", &fwd, || {
            let (s, got) = (&s, got.clone());
            async move {
                while s.get().await.is_some() {
                    *got.lock() += 1;
                }
                *got.lock()
            }
        })
        .await;
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_confirmed_and_delivered_once_each() {
        let s = setup().await;
        let h = herald().await;
        h.create("rmq-burst", dest(RABBITMQ, &s.exchange, "guest"))
            .await;
        let got = Arc::new(Mutex::new(0usize));
        burst(&h, "rmq-burst", 50, || {
            let (s, got) = (&s, got.clone());
            async move {
                while s.get().await.is_some() {
                    *got.lock() += 1;
                }
                *got.lock()
            }
        })
        .await;
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unroutable_message_is_not_a_success_and_is_retried() {
        let s = setup().await;
        let lonely = unique("herald-test-unbound-");
        s.channel
            .exchange_declare(
                lonely.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: false,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let h = herald().await;
        h.create("rmq-unroutable", dest(RABBITMQ, &lonely, "guest"))
            .await;
        let id = h
            .publish_event("rmq-unroutable", "user.created", json!({}))
            .await;
        let a = h.attempts(&id, |a| a.len() >= 2).await;
        for x in &a {
            assert_eq!(x["status"], "failed", "{a:?}");
            assert_eq!(x["code"], "unroutable", "{a:?}");
        }
        let _ = s
            .channel
            .exchange_delete(lonely.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_password_is_permanent_and_missing_exchange_too() {
        let s = setup().await;
        let h = herald().await;
        h.create("rmq-bad", dest(RABBITMQ, &s.exchange, "not-the-password"))
            .await;
        let id = h.publish_event("rmq-bad", "user.created", json!({})).await;
        let a = expect_permanent(&h, &id, "access_refused").await;
        assert!(
            a["response_data"]["error"]
                .as_str()
                .unwrap()
                .contains("ACCESS_REFUSED"),
            "{a}"
        );

        h.create(
            "rmq-nx",
            dest(RABBITMQ, &unique("no-such-exchange-"), "guest"),
        )
        .await;
        let id = h.publish_event("rmq-nx", "user.created", json!({})).await;
        expect_permanent(&h, &id, "not_found").await;
        s.cleanup().await;
    }
}

#[cfg(feature = "nats")]
mod nats {
    use super::*;
    use async_nats::jetstream;

    struct Setup {
        js: jetstream::Context,
        stream: String,
        prefix: String,
    }

    async fn setup() -> Setup {
        require("NATS", NATS);
        let client = async_nats::connect(NATS).await.expect("connect to NATS");
        let js = jetstream::new(client);
        let stream = unique("HERALD_TEST_");
        let prefix = unique("herald-test-");
        js.create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .expect("create a JetStream stream (is the server started with -js?)");
        Setup { js, stream, prefix }
    }

    impl Setup {
        async fn count(&self) -> usize {
            let mut s = self.js.get_stream(&self.stream).await.unwrap();
            s.info().await.unwrap().state.messages as usize
        }

        async fn cleanup(&self) {
            let _ = self.js.delete_stream(&self.stream).await;
        }
    }

    fn dest(server: &str, prefix: &str) -> Value {
        json!({
            "type": "nats", "topics": "*",
            "config": {"server_url": server, "subject": format!("{prefix}.{{topic}}")},
            "credentials": {"secret": SECRET},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_to_jetstream_with_headers_and_signature() {
        let s = setup().await;
        let h = herald().await;
        let d = h.create("nats", dest(NATS, &s.prefix)).await;
        assert_ne!(d["credentials"]["secret"], SECRET, "secret masked: {d}");
        let id = h
            .publish_event("nats", "user.created", json!({"name": "Ada"}))
            .await;
        let a = h.attempts(&id, succeeded).await;
        assert_eq!(a[0]["code"], "ack");
        assert_eq!(a[0]["response_data"]["stream"], s.stream.as_str());
        assert_eq!(a[0]["response_data"]["sequence"], 1);

        let stream = s.js.get_stream(&s.stream).await.unwrap();
        let m = stream.get_raw_message(1).await.unwrap();
        assert_eq!(m.subject.as_str(), format!("{}.user.created", s.prefix));
        assert_eq!(
            serde_json::from_slice::<Value>(&m.payload).unwrap(),
            json!({"name": "Ada"})
        );
        let headers: Vec<(String, String)> = m
            .headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
            .collect();
        check_headers(&headers, &m.payload, &id, "user.created");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "Nats-Msg-Id" && v.starts_with("dlv")),
            "{headers:?}"
        );
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_outage_is_retried_and_recovers() {
        let s = setup().await;
        let fwd = Forwarder::start(NATS).await;
        let h = herald().await;
        h.create("nats-out", dest(&fwd.server_url(), &s.prefix))
            .await;
        outage_and_recovery(&h, "nats-out", &fwd, || s.count()).await;
        // A publish that reached the server during the outage but was acknowledged too late
        // is dropped by JetStream's duplicate window: exactly four messages.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(s.count().await, 4);
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_acknowledged_and_stored_once_each() {
        let s = setup().await;
        let h = herald().await;
        h.create("nats-burst", dest(NATS, &s.prefix)).await;
        burst(&h, "nats-burst", 50, || s.count()).await;
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_stream_is_retried_and_bad_credentials_are_permanent() {
        require("NATS", NATS);
        let h = herald().await;
        // No stream captures the subject: "no responders", retried (the stream may come).
        h.create("nats-nx", dest(NATS, &unique("herald-nostream-")))
            .await;
        let id = h.publish_event("nats-nx", "user.created", json!({})).await;
        let a = h.attempts(&id, |a| a.len() >= 2).await;
        assert_eq!(a[0]["code"], "no_stream", "{a:?}");

        // The shared server has no authentication: a private one with a user checks the
        // permanent authorization violation.
        let port = free_port();
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["--user", "herald", "--pass", "right-password"]);
        let _srv = Private::spawn("nats-server", cmd, port, tempfile::tempdir().unwrap());
        h.create(
            "nats-bad",
            json!({
                "type": "nats", "topics": "*",
                "config": {"server_url": format!("127.0.0.1:{port}")},
                "credentials": {"username": "herald", "password": "wrong"},
            }),
        )
        .await;
        let id = h.publish_event("nats-bad", "user.created", json!({})).await;
        expect_permanent(&h, &id, "authorization_violation").await;
    }
}

#[cfg(feature = "redis_stream")]
mod redis_stream {
    use super::*;
    use redis::AsyncCommands;

    async fn client() -> redis::aio::MultiplexedConnection {
        require("Redis", REDIS);
        redis::Client::open("redis://127.0.0.1:6379")
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis")
    }

    type Entry = (String, Vec<(String, Vec<u8>)>);

    async fn entries(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<Entry> {
        let raw: Vec<Entry> = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(c)
            .await
            .unwrap();
        raw
    }

    fn dest(server: &str, stream: &str) -> Value {
        json!({
            "type": "redis_stream", "topics": "*",
            "config": {"server_url": server, "stream": stream, "max_len": "3", "max_len_approximate": "false"},
            "credentials": {"secret": SECRET},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_entries_with_header_fields_signature_and_maxlen() {
        let mut c = client().await;
        let key = unique("herald-test:");
        let h = herald().await;
        h.create("redis", dest(REDIS, &format!("{key}:{{topic}}")))
            .await;
        let id = h
            .publish_event("redis", "user.created", json!({"name": "Ada"}))
            .await;
        let a = h.attempts(&id, succeeded).await;
        let stream = format!("{key}:user.created");
        assert_eq!(a[0]["response_data"]["stream"], stream.as_str());

        let got = entries(&mut c, &stream).await;
        assert_eq!(got.len(), 1);
        assert_eq!(a[0]["response_data"]["entry_id"], got[0].0.as_str());
        let fields: Vec<(String, String)> = got[0]
            .1
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
            .collect();
        assert_eq!(fields[0].0, "data");
        let body = fields[0].1.clone();
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"name": "Ada"})
        );
        check_headers(&fields[1..], body.as_bytes(), &id, "user.created");

        // MAXLEN 3 (exact): five events leave the newest three.
        let mut last = String::new();
        for n in 0..4 {
            last = h
                .publish_event("redis", "user.created", json!({"n": n}))
                .await;
        }
        h.attempts(&last, succeeded).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = entries(&mut c, &stream).await;
            let newest = String::from_utf8(got.last().unwrap().1[0].1.clone()).unwrap();
            if newest == r#"{"n":3}"# {
                assert_eq!(got.len(), 3);
                break;
            }
            assert!(Instant::now() < deadline, "{got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _: () = c.del(&stream).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_outage_is_retried_and_recovers() {
        let mut c = client().await;
        let key = unique("herald-test:");
        let fwd = Forwarder::start(REDIS).await;
        let h = herald().await;
        let mut d = dest(&fwd.server_url(), &key);
        d["config"].as_object_mut().unwrap().remove("max_len");
        h.create("redis-out", d).await;
        let count = || {
            let (mut c, key) = (c.clone(), key.clone());
            async move { entries(&mut c, &key).await.len() }
        };
        outage_and_recovery(&h, "redis-out", &fwd, count).await;
        let _: () = c.del(&key).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_appended_once_each() {
        let mut c = client().await;
        let key = unique("herald-test:");
        let h = herald().await;
        let mut d = dest(REDIS, &key);
        d["config"].as_object_mut().unwrap().remove("max_len");
        h.create("redis-burst", d).await;
        let count = || {
            let (mut c, key) = (c.clone(), key.clone());
            async move { entries(&mut c, &key).await.len() }
        };
        burst(&h, "redis-burst", 50, count).await;
        let _: () = c.del(&key).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_password_is_permanent() {
        client().await;
        let h = herald().await;
        h.create(
            "redis-bad",
            json!({
                "type": "redis_stream", "topics": "*",
                "config": {"server_url": REDIS, "stream": unique("herald-test:")},
                "credentials": {"username": "herald-no-such-user", "password": "wrong"},
            }),
        )
        .await;
        let id = h
            .publish_event("redis-bad", "user.created", json!({}))
            .await;
        expect_permanent(&h, &id, "auth_failed").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_black_hole_server_does_not_delay_a_healthy_destination() {
        let mut c = client().await;
        let hole = Forwarder::start_in(REDIS, Mode::Hang).await;
        let h = herald().await;
        let dead_key = unique("herald-test:");
        let live_key = unique("herald-test:");
        h.create("slow", dest(&hole.server_url(), &dead_key)).await;
        h.create("fast", dest(REDIS, &live_key)).await;
        for _ in 0..3 {
            h.publish_event("slow", "t", json!({})).await;
        }
        let started = Instant::now();
        let id = h.publish_event("fast", "t", json!({"ok": true})).await;
        h.attempts(&id, succeeded).await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the healthy destination waited {:?} (attempt timeout is 2 s)",
            started.elapsed()
        );
        assert_eq!(entries(&mut c, &live_key).await.len(), 1);
        let _: () = c.del(&live_key).await.unwrap();
    }
}

#[cfg(feature = "mqtt")]
mod mqtt {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    /// A subscriber on `prefix/#` collecting what arrives.
    struct Sub {
        got: Arc<Mutex<Vec<Publish>>>,
        _client: AsyncClient,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Sub {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn subscribe(prefix: &str) -> Sub {
        require("Mosquitto", MQTT);
        let mut opts = MqttOptions::new(unique("herald-test-sub-"), "127.0.0.1", 1883);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 16);
        client
            .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let got: Arc<Mutex<Vec<Publish>>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = got.clone();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().push(p),
                    Ok(_) => {}
                    Err(e) => panic!("test subscriber failed: {e}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("SUBACK from Mosquitto")
            .unwrap();
        Sub {
            got,
            _client: client,
            task,
        }
    }

    fn dest(server: &str, prefix: &str) -> Value {
        json!({
            "type": "mqtt", "topics": "*",
            "config": {"server_url": server, "topic": format!("{prefix}/{{topic}}")},
            "credentials": {"secret": SECRET},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_qos1_with_user_properties_and_signature() {
        let prefix = unique("herald-test-");
        let sub = subscribe(&prefix).await;
        let h = herald().await;
        h.create("mqtt", dest(MQTT, &prefix)).await;
        let id = h
            .publish_event("mqtt", "user.created", json!({"name": "Ada"}))
            .await;
        let a = h.attempts(&id, succeeded).await;
        assert_eq!(a[0]["code"], "puback");

        let deadline = Instant::now() + Duration::from_secs(10);
        while sub.got.lock().is_empty() {
            assert!(Instant::now() < deadline, "the subscriber got nothing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p = sub.got.lock()[0].clone();
        assert_eq!(
            std::str::from_utf8(&p.topic).unwrap(),
            format!("{prefix}/user.created")
        );
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!(
            serde_json::from_slice::<Value>(&p.payload).unwrap(),
            json!({"name": "Ada"})
        );
        let props = p.properties.clone().expect("publish properties");
        assert_eq!(props.content_type.as_deref(), Some("application/json"));
        check_headers(&props.user_properties, &p.payload, &id, "user.created");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broker_outage_is_retried_and_recovers() {
        let prefix = unique("herald-test-");
        let sub = subscribe(&prefix).await;
        let fwd = Forwarder::start(MQTT).await;
        let h = herald().await;
        h.create("mqtt-out", dest(&fwd.server_url(), &prefix)).await;
        let got = sub.got.clone();
        outage_and_recovery(&h, "mqtt-out", &fwd, || {
            let got = got.clone();
            async move { got.lock().len() }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_acknowledged_and_delivered_once_each() {
        let prefix = unique("herald-test-");
        let sub = subscribe(&prefix).await;
        let h = herald().await;
        h.create("mqtt-burst", dest(MQTT, &prefix)).await;
        let got = sub.got.clone();
        // Distinct event ids seen by the subscriber (QoS 1 may in theory redeliver).
        let distinct = move || {
            let got = got.clone();
            async move {
                let ids: std::collections::BTreeSet<String> = got
                    .lock()
                    .iter()
                    .filter_map(|p| {
                        p.properties.as_ref().and_then(|pr| {
                            pr.user_properties
                                .iter()
                                .find(|(k, _)| k == "webhook-id")
                                .map(|(_, v)| v.clone())
                        })
                    })
                    .collect();
                ids.len()
            }
        };
        burst(&h, "mqtt-burst", 50, distinct).await;
        assert_eq!(sub.got.lock().len(), 50, "no duplicates either");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_credentials_are_permanent() {
        require("Mosquitto", MQTT);
        // The shared broker allows anonymous clients; a private one checks passwords.
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pw = dir.path().join("passwd");
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&pw)
            .args(["herald", "right-password"])
            .status()
            .expect("mosquitto_passwd is installed with mosquitto");
        assert!(status.success());
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nuser root\n",
                pw.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&conf);
        let _srv = Private::spawn("mosquitto", cmd, port, dir);
        let h = herald().await;
        h.create(
            "mqtt-bad",
            json!({
                "type": "mqtt", "topics": "*",
                "config": {"server_url": format!("127.0.0.1:{port}")},
                "credentials": {"username": "herald", "password": "wrong"},
            }),
        )
        .await;
        let id = h.publish_event("mqtt-bad", "user.created", json!({})).await;
        // Mosquitto answers a wrong password with CONNACK 0x87 "not authorized" (not 0x86).
        let a = expect_permanent(&h, &id, "not_authorized").await;
        assert!(
            a["response_data"]["error"]
                .as_str()
                .unwrap()
                .contains("NotAuthorized"),
            "{a}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_rejected_at_create_naming_the_field() {
    let h = herald().await;
    h.ok("PUT", "/tenants/bad", None).await;
    let mut cases: Vec<(Value, &str)> = Vec::new();
    #[cfg(feature = "rabbitmq")]
    cases.extend([
        (
            json!({"type": "rabbitmq", "config": {"exchange": "e"}, "credentials": {"username": "u", "password": "p"}}),
            "config.server_url: is required",
        ),
        (
            json!({"type": "rabbitmq", "config": {"server_url": "amqp://h", "exchange": "e"}, "credentials": {"username": "u", "password": "p"}}),
            "config.server_url: ",
        ),
        (
            json!({"type": "rabbitmq", "config": {"server_url": "h:5672", "exchange": "e", "routing_key": "{oops}"}, "credentials": {"username": "u", "password": "p"}}),
            "config.routing_key: ",
        ),
        (
            json!({"type": "rabbitmq", "config": {"server_url": "h:5672", "exchange": "e"}, "credentials": {"username": "u"}}),
            "credentials.password: is required",
        ),
    ]);
    #[cfg(feature = "nats")]
    cases.extend([
        (
            json!({"type": "nats", "config": {"server_url": "h:4222", "subject": "a.>"}}),
            "config.subject: ",
        ),
        (
            json!({"type": "nats", "config": {"server_url": "h:99999"}}),
            "config.server_url: ",
        ),
    ]);
    #[cfg(feature = "redis_stream")]
    cases.extend([
        (
            json!({"type": "redis_stream", "config": {"server_url": "h:6379"}}),
            "config.stream: is required",
        ),
        (
            json!({"type": "redis_stream", "config": {"server_url": "h:6379", "stream": "s", "max_len": "lots"}}),
            "config.max_len: ",
        ),
    ]);
    #[cfg(feature = "mqtt")]
    cases.extend([
        (
            json!({"type": "mqtt", "config": {"server_url": "h:1883", "topic": "a/+/b"}}),
            "config.topic: ",
        ),
        (
            json!({"type": "mqtt", "config": {"server_url": "h:1883", "qos": "2"}}),
            "config.qos: is not a field",
        ),
    ]);
    for (mut body, expected) in cases {
        body["topics"] = json!("*");
        let (status, v) = h
            .call("POST", "/tenants/bad/destinations", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} -> {v}");
        let problems = v["data"].to_string();
        assert!(
            problems.contains(expected),
            "{body}: expected {expected:?} in {problems}"
        );
    }
}

//! End-to-end tests of the message-system destination types (`rabbitmq`, `nats`,
//! `redis_stream`, `mqtt`) against the real servers on this machine: each test starts Herald
//! in-process, creates destinations over the API, publishes, and reads the message back with the
//! protocol's own client.
//!
//! What the Driver contract suite (`crate::contract`) covers — signatures, bad credentials,
//! outages, bursts, hung servers — is not repeated here: these are the mapping details
//! (routing keys, properties, MAXLEN, JetStream acks), failures particular to a protocol
//! (unroutable, missing exchange or stream), served schemas, validation at create, and a
//! hung broker not delaying a healthy destination. The shared brokers are never stopped; a
//! server that cannot be reached fails the test — nothing here skips.

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

use std::time::{Duration, Instant};

use herald_testkit::herald::succeeded;
use herald_testkit::services::{MQTT, NATS, RABBITMQ, REDIS};
use herald_testkit::{Forwarder, Herald, Mode, SECRET, check_headers, require, unique};
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
    // Every broker type signs with the common `signing_secret` (and keeps the previous one
    // after a rotation); both are sensitive.
    const SIGNING: &str = "signing_secret";
    const PREVIOUS: &str = "previous_secret";
    #[cfg(feature = "rabbitmq")]
    expected.push(("rabbitmq", "server_url", &["password", SIGNING, PREVIOUS]));
    #[cfg(feature = "nats")]
    expected.push((
        "nats",
        "server_url",
        &["password", "token", SIGNING, PREVIOUS],
    ));
    #[cfg(feature = "redis_stream")]
    expected.push(("redis_stream", "stream", &["password", SIGNING, PREVIOUS]));
    #[cfg(feature = "mqtt")]
    expected.push(("mqtt", "server_url", &["password", SIGNING, PREVIOUS]));
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
    use lapin::options::ExchangeDeleteOptions;
    use lapin::types::AMQPValue;

    use crate::contract::rabbitmq::Setup;

    async fn setup() -> Setup {
        Setup::new().await
    }

    fn dest(server: &str, exchange: &str, password: &str) -> Value {
        json!({
            "type": "rabbitmq", "topics": "*",
            "config": {"server_url": server, "exchange": exchange, "routing_key": "herald.{topic}"},
            "credentials": {"username": "guest", "password": password, "signing_secret": SECRET},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_with_confirms_headers_and_signature() {
        let s = setup().await;
        let h = herald().await;
        let d = h.create("rmq", dest(RABBITMQ, &s.exchange, "guest")).await;
        assert_eq!(d["credentials"]["password"], "****", "password masked: {d}");
        // The signing secret is returned in full: receivers need it to verify.
        assert_eq!(d["credentials"]["signing_secret"], SECRET);
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
                json!({"credentials": {"password": "****", "signing_secret": d["credentials"]["signing_secret"]}}),
            ),
        )
        .await;
        let id2 = h
            .publish_event("rmq", "user.created", json!({"n": 2}))
            .await;
        h.attempts(&id2, succeeded).await;
        let m = s.get().await.expect("delivered after the PATCH");
        let headers = crate::contract::rabbitmq::headers(&m);
        // Signed with the stored secret, not with its masked form.
        check_headers(&headers, &m.delivery.data, &id2, "user.created");
        s.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unroutable_message_is_not_a_success_and_is_retried() {
        let s = setup().await;
        let lonely = unique("herald-test-unbound-");
        crate::contract::rabbitmq::declare_exchange(&s.channel, &lonely, false).await;
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
    async fn a_missing_exchange_is_permanent() {
        let s = setup().await;
        let h = herald().await;
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

    use crate::contract::nats::Setup;

    async fn setup() -> Setup {
        Setup::new().await
    }

    fn dest(server: &str, prefix: &str) -> Value {
        json!({
            "type": "nats", "topics": "*",
            "config": {"server_url": server, "subject": format!("{prefix}.{{topic}}")},
            "credentials": {"signing_secret": SECRET},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_to_jetstream_with_headers_and_signature() {
        let s = setup().await;
        let h = herald().await;
        let d = h.create("nats", dest(NATS, &s.prefix)).await;
        // Signing secrets are returned in full: receivers need them to verify.
        assert_eq!(d["credentials"]["signing_secret"], SECRET, "{d}");
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
    async fn a_missing_stream_is_retried() {
        require("NATS", NATS);
        let h = herald().await;
        // No stream captures the subject: "no responders", retried (the stream may come).
        h.create("nats-nx", dest(NATS, &unique("herald-nostream-")))
            .await;
        let id = h.publish_event("nats-nx", "user.created", json!({})).await;
        let a = h.attempts(&id, |a| a.len() >= 2).await;
        assert_eq!(a[0]["code"], "no_stream", "{a:?}");
    }
}

#[cfg(feature = "redis_stream")]
mod redis_stream {
    use super::*;
    use redis::AsyncCommands;

    use crate::contract::redis_stream::{client, entries};

    fn dest(server: &str, stream: &str) -> Value {
        json!({
            "type": "redis_stream", "topics": "*",
            "config": {"server_url": server, "stream": stream, "max_len": "3", "max_len_approximate": "false"},
            "credentials": {"signing_secret": SECRET},
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

    use crate::contract::mqtt::subscribe;

    fn dest(server: &str, prefix: &str) -> Value {
        json!({
            "type": "mqtt", "topics": "*",
            "config": {"server_url": server, "topic": format!("{prefix}/{{topic}}")},
            // The signing secret's old name on broker types is still read, and stored under
            // the new one (the signature check below proves it signs).
            "credentials": {"secret": SECRET},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_qos1_with_user_properties_and_signature() {
        let prefix = unique("herald-test-");
        let sub = subscribe(&prefix).await;
        let h = herald().await;
        let d = h.create("mqtt", dest(MQTT, &prefix)).await;
        assert_eq!(d["credentials"]["signing_secret"], SECRET, "{d}");
        assert!(d["credentials"].get("secret").is_none(), "{d}");
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

//! `kafka` end to end against tansu (crates.io: a Kafka-compatible broker, memory storage),
//! started by each test on free ports behind a TCP forwarder it advertises, so the broker can
//! go "down" and come back with its topics intact. Records are read back with kafka-python.

use herald_testkit::servers::Tansu;
use herald_testkit::{Herald, SECRET, verify_standard};
use serde_json::{Value, json};

fn header<'a>(record: &'a Value, name: &str) -> &'a str {
    record["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
        .unwrap_or_else(|| panic!("no header {name}: {record}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_produces_signed_records_with_key_and_headers() {
    let broker = Tansu::start(false).await;
    broker.create_topic("events").await;
    let h = Herald::start(&[]).await;
    let dest = h
        .create(
            "acme",
            json!({
                "type": "kafka", "topics": "*",
                "config": {"brokers": broker.bootstrap(), "topic": "events", "tls": "false",
                           "partition_key_template": "data.customer_id"},
                "credentials": {"signing_secret": SECRET},
            }),
        )
        .await;
    // Signing secrets are returned in full: receivers need them to verify.
    assert_eq!(dest["credentials"]["signing_secret"], SECRET, "{dest}");
    h.publish(json!({
        "tenant_id": "acme", "topic": "user.created", "id": "evt_k_1",
        "metadata": {"source": "crm"}, "data": {"customer_id": "cus_9", "n": 1}
    }))
    .await;
    // Without the template's field, the key is the event id.
    h.publish(
        json!({"tenant_id": "acme", "topic": "user.created", "id": "evt_k_2", "data": {"n": 2}}),
    )
    .await;
    let got = broker.records("events", 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let r = got
        .iter()
        .find(|r| header(r, "webhook-id") == "evt_k_1")
        .unwrap();
    assert_eq!(r["key"], "cus_9");
    let value = r["value"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(value).unwrap(),
        json!({"customer_id": "cus_9", "n": 1})
    );
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(header(r, "x-herald-topic"), "user.created");
    assert_eq!(header(r, "x-herald-source"), "crm");
    assert!(verify_standard(
        SECRET,
        header(r, "webhook-id"),
        header(r, "webhook-timestamp"),
        header(r, "webhook-signature"),
        value.as_bytes()
    ));
    let r2 = got
        .iter()
        .find(|r| header(r, "webhook-id") == "evt_k_2")
        .unwrap();
    assert_eq!(r2["key"], "evt_k_2");
    let a = h.wait_attempts("event_id=evt_k_1", |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "success");
    assert_eq!(a[0]["code"], "ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_invalid_config_is_rejected_at_create() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/t", None).await;
    let ok = json!({"brokers": "b:9092", "topic": "events"});
    let with = |k: &str, v: &str| {
        let mut c = ok.clone();
        c[k] = json!(v);
        c
    };
    let cases = [
        (json!({"topic": "events"}), json!({}), "config.brokers"),
        (with("brokers", "no-port"), json!({}), "config.brokers"),
        (with("topic", "bad topic"), json!({}), "config.topic"),
        (with("tls", "maybe"), json!({}), "config.tls"),
        (
            with("sasl_mechanism", "gssapi"),
            json!({}),
            "config.sasl_mechanism",
        ),
        (
            with("sasl_mechanism", "plain"),
            json!({"username": "u"}),
            "credentials",
        ),
        (
            with("partition_key_template", "join("),
            json!({}),
            "config.partition_key_template",
        ),
    ];
    for (config, credentials, field) in cases {
        let body =
            json!({"type": "kafka", "topics": "*", "config": config, "credentials": credentials});
        h.expect_rejected("t", &body, field).await;
    }
}

/// A Kafka driver under a policy that allows only `127.0.0.2`, delivering through a
/// forwarder there to a broker that names `127.0.0.1` as the partition leader.
async fn deliver_via_other_loopback(
    allow: &str,
) -> Result<herald_core::destination::Receipt, herald_core::destination::DeliveryError> {
    use herald_destinations::{DestinationsConfig, TargetPolicy};
    use herald_testkit::contract;
    let broker = Tansu::start(false).await;
    broker.create_topic("leaders").await;
    let fwd =
        herald_testkit::Forwarder::start_at("127.0.0.2:0".parse().unwrap(), &broker.bootstrap())
            .await;
    let registry = herald_destinations::registry(&DestinationsConfig {
        target_policy: TargetPolicy {
            allow_http: true,
            allow_private: false,
            allow_list: vec![allow.parse().unwrap()],
        },
        proxy: None,
        response_body_limit: 4096,
        user_agent: "herald-tests".into(),
        retry_on_status: Vec::new(),
        tls_ca: None,
        no_generated_secret: Vec::new(),
        ..DestinationsConfig::default()
    })
    .unwrap();
    let config = [
        ("brokers", fwd.server_url()),
        ("topic", "leaders".to_string()),
        ("tls", "false".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let d = contract::destination(&registry, "kafka", config, Default::default());
    let driver = contract::driver(&registry, &d);
    let msg = contract::outbound(
        &registry,
        &d,
        &herald_testkit::unique("evt_"),
        "t",
        &json!({"n": 1}),
        std::time::Duration::from_secs(10),
    );
    driver.deliver(&msg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_outside_the_target_policy_is_never_connected_to() {
    // The bootstrap address is allowed; the leader the broker advertises (127.0.0.1) is not.
    let err = deliver_via_other_loopback("127.0.0.2/32")
        .await
        .expect_err("the record went to a leader the target policy refuses");
    assert_eq!(err.code, "blocked_target", "{err:?}");
    assert_eq!(
        err.disposition,
        herald_core::destination::Disposition::Permanent
    );
    assert!(err.message.contains("127.0.0.1"), "{}", err.message);
    // With the leader's network allowed too, the same route delivers.
    deliver_via_other_loopback("127.0.0.0/8")
        .await
        .expect("delivery through the checked gateway");
}

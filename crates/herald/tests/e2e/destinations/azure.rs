//! `azure_servicebus` end to end against a local server speaking the Service Bus REST send
//! API (`herald_testkit::servicebus`). No Service Bus emulator can be installed without Docker, so this server checks the
//! exact request Azure documents — `POST /{queue}/messages`, a Shared Access Signature
//! recomputed here from the key (`HMAC-SHA256(key, urlencode(resource) + "\n" + expiry)`),
//! `BrokerProperties` JSON, custom properties as JSON-string headers — and answers as
//! Service Bus does (201, 401 for a bad signature, 404 for an unknown entity).

use std::time::Duration;

use base64::Engine as _;

use herald_testkit::servicebus::{
    KEY, Message, QUEUE, SLOW, SLOW_DELAY, ServiceBus, connection_string,
};
use herald_testkit::{Herald, SECRET, retry_fast, verify_standard};
use serde_json::{Value, json};

/// A custom property's value (a JSON string).
fn property(m: &Message, name: &str) -> String {
    let raw = m.headers.get(name).unwrap().to_str().unwrap();
    serde_json::from_str::<String>(raw).unwrap_or_else(|e| panic!("{name}: {raw:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_sends_signed_messages_with_a_valid_sas_token() {
    let bus = ServiceBus::default();
    let (base, _) = bus.start().await;
    let h = Herald::start(&[]).await;
    let dest = h.create("acme",
        json!({
            "type": "azure_servicebus", "topics": "*",
            "config": {"name": QUEUE, "endpoint": base},
            "credentials": {"connection_string": connection_string(KEY), "signing_secret": SECRET},
        }),
    )
    .await;
    assert_ne!(
        dest["credentials"]["connection_string"],
        connection_string(KEY),
        "masked"
    );
    h.publish(json!({
        "tenant_id": "acme", "topic": "invoice.sent", "id": "evt_sb_1",
        "metadata": {"source": "billing"}, "data": {"invoice": "inv_1", "total": 12.5}
    }))
    .await;
    let a = h
        .wait_attempts("event_id=evt_sb_1", |a| !a.is_empty())
        .await;
    assert_eq!(
        a[0]["status"],
        "success",
        "{a:?} refused: {:?}",
        bus.refused.lock()
    );
    let m = bus.accepted.lock()[0].clone();
    assert_eq!(
        serde_json::from_slice::<Value>(&m.body).unwrap(),
        json!({"invoice": "inv_1", "total": 12.5})
    );
    assert_eq!(m.headers["content-type"], "application/json");
    let props: Value =
        serde_json::from_str(m.headers["brokerproperties"].to_str().unwrap()).unwrap();
    assert_eq!(props["MessageId"], "evt_sb_1");
    assert_eq!(props["Label"], "invoice.sent");
    assert_eq!(property(&m, "x-herald-topic"), "invoice.sent");
    assert_eq!(property(&m, "x-herald-source"), "billing");
    assert!(verify_standard(
        SECRET,
        &property(&m, "webhook-id"),
        &property(&m, "webhook-timestamp"),
        &property(&m, "webhook-signature"),
        &m.body
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_bad_key_and_unknown_queue_fail_without_retry() {
    let bus = ServiceBus::default();
    let (base, _) = bus.start().await;
    let h = Herald::start(&retry_fast()).await;
    let wrong = base64::engine::general_purpose::STANDARD.encode("another key");
    for (tenant, name, key, code) in [
        ("t1", QUEUE, wrong.as_str(), "auth_failed"),
        ("t2", "no-such-queue", KEY, "not_found"),
    ] {
        h.create(
            tenant,
            json!({
                "type": "azure_servicebus", "topics": "*",
                "config": {"name": name, "endpoint": base},
                "credentials": {"connection_string": connection_string(key)},
            }),
        )
        .await;
        let id = format!("evt_sb_{tenant}");
        h.publish(json!({"tenant_id": tenant, "topic": "a", "id": id, "data": {}}))
            .await;
        h.wait_attempts(&format!("event_id={id}"), |a| !a.is_empty())
            .await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let a = h
            .wait_attempts(&format!("event_id={id}"), |a| !a.is_empty())
            .await;
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0]["code"], code, "{a:?}");
    }
    assert_eq!(
        bus.refused.lock().as_slice(),
        ["signature mismatch".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_invalid_config_is_rejected_at_create() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/t", None).await;
    let cases = [
        (
            json!({"type": "azure_servicebus", "topics": "*", "config": {}, "credentials": {"connection_string": connection_string(KEY)}}),
            "config.name",
        ),
        (
            json!({"type": "azure_servicebus", "topics": "*", "config": {"name": QUEUE}, "credentials": {}}),
            "credentials.connection_string",
        ),
        (
            json!({"type": "azure_servicebus", "topics": "*", "config": {"name": QUEUE},
                   "credentials": {"connection_string": "Endpoint=https://x/;SharedAccessKeyName=a;SharedAccessKey=b"}}),
            "credentials.connection_string",
        ),
        (
            json!({"type": "azure_servicebus", "topics": "*", "config": {"name": QUEUE, "endpoint": "nope"},
                   "credentials": {"connection_string": connection_string(KEY)}}),
            "config.endpoint",
        ),
    ];
    for (body, field) in cases {
        h.expect_rejected("t", &body, field).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_servicebus_queue_does_not_hold_up_other_destinations() {
    let bus = ServiceBus::default();
    let (base, _) = bus.start().await;
    let h = Herald::start(&[]).await;
    for (tenant, name) in [("slow", SLOW), ("fast", QUEUE)] {
        h.create(
            tenant,
            json!({
                "type": "azure_servicebus", "topics": "*",
                "config": {"name": name, "endpoint": base},
                "credentials": {"connection_string": connection_string(KEY)},
            }),
        )
        .await;
    }
    for i in 0..30 {
        h.publish(
            json!({"tenant_id": "slow", "topic": "a", "id": format!("evt_slow_{i}"), "data": {}}),
        )
        .await;
    }
    let started = std::time::Instant::now();
    h.publish(json!({"tenant_id": "fast", "topic": "a", "id": "evt_fast", "data": {}}))
        .await;
    let a = h
        .wait_attempts("event_id=evt_fast", |a| !a.is_empty())
        .await;
    assert_eq!(a[0]["status"], "success", "{a:?}");
    assert!(
        started.elapsed() < SLOW_DELAY,
        "the fast destination waited {:?} behind the slow one",
        started.elapsed()
    );
    // The slow queue's messages were still in flight meanwhile.
    let slow_done = h.ok("GET", "/attempts?tenant_id=slow", None).await["models"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(slow_done < 30, "{slow_done}");
}

/// Every dest-b type is served with the contract's required fields and its secrets marked
/// sensitive; a masked secret sent back on update keeps the stored one (the server below
/// still verifies the SAS made from the real key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_served_and_masked_secrets_survive_an_update() {
    let h = Herald::start(&[]).await;
    let types = h.ok("GET", "/destination-types", None).await;
    let expect: &[(&str, &[&str], &[&str])] = &[
        (
            "kafka",
            &["brokers", "topic"],
            &["password", "signing_secret", "previous_secret"],
        ),
        (
            "aws_sqs",
            &["queue_url", "key", "secret"],
            &["secret", "session", "signing_secret", "previous_secret"],
        ),
        (
            "aws_s3",
            &["bucket", "region", "key", "secret"],
            &["secret", "session", "signing_secret", "previous_secret"],
        ),
        (
            "aws_kinesis",
            &["stream_name", "region", "key", "secret"],
            &["secret", "session", "signing_secret", "previous_secret"],
        ),
        (
            "gcp_pubsub",
            &["project_id", "topic"],
            &["service_account_json", "signing_secret", "previous_secret"],
        ),
        (
            "azure_servicebus",
            &["name", "connection_string"],
            &["connection_string", "signing_secret", "previous_secret"],
        ),
    ];
    for (kind, required, sensitive) in expect {
        let t = types
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == *kind)
            .unwrap_or_else(|| panic!("{kind} is not served"));
        let fields: Vec<&Value> = t["config_fields"]
            .as_array()
            .unwrap()
            .iter()
            .chain(t["credential_fields"].as_array().unwrap())
            .collect();
        for f in &fields {
            let key = f["key"].as_str().unwrap();
            assert_eq!(
                f["required"],
                required.contains(&key),
                "{kind}.{key} required"
            );
            assert_eq!(
                f["sensitive"],
                sensitive.contains(&key),
                "{kind}.{key} sensitive"
            );
            assert!(
                !f["description"].as_str().unwrap().is_empty(),
                "{kind}.{key}"
            );
        }
    }

    let bus = ServiceBus::default();
    let (base, _) = bus.start().await;
    let dest = h
        .create(
            "t",
            json!({
                "type": "azure_servicebus", "topics": "*",
                "config": {"name": "wrong-queue", "endpoint": base},
                "credentials": {"connection_string": connection_string(KEY)},
            }),
        )
        .await;
    let masked = dest["credentials"]["connection_string"].clone();
    assert_ne!(masked, json!(connection_string(KEY)));
    let id = dest["id"].as_str().unwrap();
    h.ok(
        "PATCH",
        &format!("/tenants/t/destinations/{id}"),
        Some(json!({"config": {"name": QUEUE}, "credentials": {"connection_string": masked}})),
    )
    .await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "id": "evt_sb_masked", "data": {}}))
        .await;
    let a = h
        .wait_attempts("event_id=evt_sb_masked", |a| !a.is_empty())
        .await;
    assert_eq!(a[0]["status"], "success", "{a:?}");
}

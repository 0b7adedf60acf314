//! End to end against moto (PyPI `moto[server]`), which verifies every SigV4 signature once
//! authentication is switched on: destinations are created through the API, events published,
//! and the messages read back with boto3. Each test starts its own moto on a free port.

use herald_testkit::Herald;
use herald_testkit::servers::{
    AWS_BUCKET as BUCKET, AWS_QUEUE as QUEUE, AWS_STREAM as STREAM, Aws,
};
use herald_testkit::{SECRET, python::reader, verify_standard};
use serde_json::{Value, json};

/// The destination credentials for moto's IAM user, with the signing secret.
fn credentials(aws: &Aws) -> Value {
    json!({"key": aws.key, "secret": aws.secret, "signing_secret": SECRET})
}
/// Checks the engine's headers as the protocol carried them, including the signature.
fn check_headers(attrs: &Value, event_id: &str, topic: &str, body: &[u8]) {
    assert_eq!(attrs["webhook-id"], event_id, "{attrs}");
    assert_eq!(attrs["x-herald-topic"], topic, "{attrs}");
    assert!(
        verify_standard(
            SECRET,
            attrs["webhook-id"].as_str().unwrap(),
            attrs["webhook-timestamp"].as_str().unwrap(),
            attrs["webhook-signature"].as_str().unwrap(),
            body,
        ),
        "signature does not verify: {attrs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_delivers_signed_messages_with_attributes() {
    let aws = Aws::start().await;
    let h = Herald::start(&[]).await;
    let dest = h
        .create(
            "acme",
            json!({
                "type": "aws_sqs", "topics": ["user.created"],
                "config": {"queue_url": aws.queue_url, "endpoint": aws.server.url()},
                "credentials": credentials(&aws),
                "delivery_metadata": {"region": "eu"},
            }),
        )
        .await;
    // The AWS secret comes back masked; the access key id is not a secret, and the signing
    // secret is returned in full (receivers need it to verify).
    assert_eq!(dest["credentials"]["key"], aws.key.as_str());
    assert_ne!(dest["credentials"]["secret"], aws.secret.as_str());
    assert_eq!(dest["credentials"]["signing_secret"], SECRET);
    assert_eq!(dest["target"], QUEUE);

    h.publish(json!({
        "tenant_id": "acme", "topic": "user.created", "id": "evt_sqs_1",
        "metadata": {"source": "crm"}, "data": {"user_id": "u1", "n": 7}
    }))
    .await;
    let got = reader(
        "sqs-read",
        aws.args(json!({"queue_url": aws.queue_url, "count": 1})),
    )
    .await;
    let msg = &got[0];
    let body = msg["body"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"user_id": "u1", "n": 7})
    );
    let attrs = &msg["attributes"];
    check_headers(attrs, "evt_sqs_1", "user.created", body.as_bytes());
    assert_eq!(attrs["x-herald-source"], "crm");
    assert_eq!(attrs["x-herald-region"], "eu");

    let attempts = h
        .wait_attempts("event_id=evt_sqs_1", |a| !a.is_empty())
        .await;
    assert_eq!(attempts[0]["status"], "success", "{attempts:?}");
    assert_eq!(attempts[0]["destination_type"], "aws_sqs");
}

/// Every AWS type refuses bad settings at create time with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_invalid_config_is_rejected_at_create() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/t", None).await;
    let creds = json!({"key": "AKIA", "secret": "s"});
    let cases = [
        (
            json!({"type": "aws_sqs", "topics": "*", "config": {}, "credentials": creds}),
            "config.queue_url",
        ),
        (
            json!({"type": "aws_sqs", "topics": "*", "config": {"queue_url": "not a url"}, "credentials": creds}),
            "config.queue_url",
        ),
        (
            json!({"type": "aws_sqs", "topics": "*", "config": {"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "endpoint": "ftp://x"}, "credentials": creds}),
            "config.endpoint",
        ),
        (
            json!({"type": "aws_sqs", "topics": "*", "config": {"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "region": "Mars"}, "credentials": creds}),
            "config.region",
        ),
        (
            json!({"type": "aws_sqs", "topics": "*", "config": {"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q"}, "credentials": {"key": "AKIA"}}),
            "credentials.secret",
        ),
        (
            json!({"type": "aws_sqs", "topics": "*", "config": {"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q"}, "credentials": {"key": "AKIA", "secret": "s", "signing_secret": "has space"}}),
            "credentials.signing_secret",
        ),
    ];
    for (body, field) in cases {
        h.expect_rejected("t", &body, field).await;
    }
    // The schema names required and sensitive fields.
    let types = h.ok("GET", "/destination-types", None).await;
    let sqs = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "aws_sqs")
        .expect("aws_sqs is served");
    let secret = sqs["credential_fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "secret")
        .unwrap();
    assert_eq!(secret["sensitive"], true);
    assert_eq!(secret["required"], true);
}

/// moto's S3 signature check decodes the path before re-signing it, so it refuses keys with
/// characters that need percent-encoding (boto3's own requests included; AWS accepts them).
/// With authentication on, the tests use a key template without such characters.
fn s3_config(endpoint: &str, extra: Value) -> Value {
    let mut c = json!({"bucket": BUCKET, "region": "us-east-1", "endpoint": endpoint,
                       "key_template": "join('', [metadata.\"event-id\", '.json'])"});
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

fn kinesis_config(endpoint: &str, extra: Value) -> Value {
    let mut c = json!({"stream_name": STREAM, "region": "us-east-1", "endpoint": endpoint});
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stores_signed_objects_with_metadata_and_templated_keys() {
    let aws = Aws::start().await;
    let h = Herald::start(&[]).await;
    let url = aws.server.url();
    h.create(
        "t1",
        json!({"type": "aws_s3", "topics": ["a"], "config": s3_config(&url, json!({})),
               "credentials": credentials(&aws)}),
    )
    .await;
    let dest = h
        .create(
            "t2",
            json!({"type": "aws_s3", "topics": ["b"],
               "config": s3_config(&url, json!({
                   "key_template": "join('/', [data.user, metadata.\"event-id\"])",
                   "storage_class": "standard_ia"})),
               "credentials": credentials(&aws)}),
        )
        .await;
    assert_eq!(dest["target"], format!("{BUCKET} in us-east-1"));
    h.publish(json!({"tenant_id": "t1", "topic": "a", "id": "evt_s3_1",
                     "metadata": {"source": "crm"}, "data": {"user": "u1"}}))
        .await;
    h.publish(json!({"tenant_id": "t2", "topic": "b", "id": "evt_s3_2", "data": {"user": "u2"}}))
        .await;
    for id in ["evt_s3_1", "evt_s3_2"] {
        let a = h
            .wait_attempts(&format!("event_id={id}"), |a| !a.is_empty())
            .await;
        assert_eq!(a[0]["status"], "success", "{a:?}");
    }
    let objects = reader("s3-read", aws.args(json!({"bucket": BUCKET}))).await;
    let objects = objects.as_array().unwrap();
    assert_eq!(objects.len(), 2, "{objects:?}");
    let first = objects
        .iter()
        .find(|o| o["key"] == "evt_s3_1.json")
        .unwrap_or_else(|| panic!("{objects:?}"));
    assert_eq!(first["content_type"], "application/json");
    let body = first["body"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"user": "u1"})
    );
    let meta = &first["metadata"];
    check_headers(meta, "evt_s3_1", "a", body.as_bytes());
    assert_eq!(meta["x-herald-source"], "crm");
    let second = objects.iter().find(|o| o["key"] == "u2/evt_s3_2").unwrap();
    assert_eq!(second["storage_class"], "STANDARD_IA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_puts_envelope_records_with_partition_keys() {
    let aws = Aws::start().await;
    let h = Herald::start(&[]).await;
    let url = aws.server.url();
    let dest = h
        .create(
            "t",
            json!({"type": "aws_kinesis", "topics": "*",
               "config": kinesis_config(&url, json!({"partition_key_template": "data.user_id"})),
               "credentials": credentials(&aws)}),
        )
        .await;
    assert_eq!(dest["target"], format!("{STREAM} in us-east-1"));
    h.publish(
        json!({"tenant_id": "t", "topic": "user.updated", "id": "evt_kin_1",
                     "metadata": {"source": "crm"}, "data": {"user_id": "u7", "z": 1, "a": 2}}),
    )
    .await;
    h.publish(
        json!({"tenant_id": "t", "topic": "user.updated", "id": "evt_kin_2", "data": {"x": 1}}),
    )
    .await;
    for id in ["evt_kin_1", "evt_kin_2"] {
        let a = h
            .wait_attempts(&format!("event_id={id}"), |a| !a.is_empty())
            .await;
        assert_eq!(a[0]["status"], "success", "{a:?}");
    }
    let records = reader("kinesis-read", aws.args(json!({"stream": STREAM}))).await;
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let r = records
        .iter()
        .find(|r| r["partition_key"] == "u7")
        .unwrap_or_else(|| panic!("{records:?}"));
    let envelope: Value = serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["data"], json!({"user_id": "u7", "z": 1, "a": 2}));
    // The data member is the signed body byte for byte: compact, key order kept.
    let signed = serde_json::to_vec(&envelope["data"]).unwrap();
    check_headers(&envelope["metadata"], "evt_kin_1", "user.updated", &signed);
    assert_eq!(envelope["metadata"]["x-herald-source"], "crm");
    // Without the template's field the partition key is the event id.
    assert!(records.iter().any(|r| r["partition_key"] == "evt_kin_2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_and_kinesis_invalid_config_is_rejected_at_create() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/t", None).await;
    let creds = json!({"key": "AKIA", "secret": "s"});
    let s3 = |config: Value| json!({"type": "aws_s3", "topics": "*", "config": config, "credentials": creds});
    let kin = |config: Value| json!({"type": "aws_kinesis", "topics": "*", "config": config, "credentials": creds});
    let cases = [
        (s3(json!({"region": "us-east-1"})), "config.bucket"),
        (
            s3(json!({"bucket": "Bad_Bucket", "region": "us-east-1"})),
            "config.bucket",
        ),
        (
            s3(json!({"bucket": "ok-bucket", "region": "Mars"})),
            "config.region",
        ),
        (
            s3(json!({"bucket": "ok-bucket", "region": "us-east-1", "key_template": "join("})),
            "config.key_template",
        ),
        (
            s3(json!({"bucket": "ok-bucket", "region": "us-east-1", "storage_class": "FAST"})),
            "config.storage_class",
        ),
        (kin(json!({"region": "us-east-1"})), "config.stream_name"),
        (
            kin(json!({"stream_name": "s", "region": "us-east-1", "metadata_in_payload": "maybe"})),
            "config.metadata_in_payload",
        ),
        (
            kin(
                json!({"stream_name": "s", "region": "us-east-1", "partition_key_template": "a.["}),
            ),
            "config.partition_key_template",
        ),
        (
            kin(json!({"stream_name": "s", "region": "us-east-1", "endpoint": "mailto:x"})),
            "config.endpoint",
        ),
    ];
    for (body, field) in cases {
        h.expect_rejected("t", &body, field).await;
    }
}

/// The contract's default key, `<rfc3339_nano time>_<event id>.json` (moto with
/// authentication off: see [`s3_config`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_default_key_is_time_and_event_id() {
    let aws = Aws::start_with(false).await;
    let h = Herald::start(&[]).await;
    h.create(
        "t",
        json!({"type": "aws_s3", "topics": "*",
               "config": {"bucket": BUCKET, "region": "us-east-1", "endpoint": aws.server.url()},
               "credentials": credentials(&aws)}),
    )
    .await;
    h.publish(
        json!({"tenant_id": "t", "topic": "a", "id": "evt_s3_default",
                     "time": "2024-05-06T07:08:09.5Z", "data": {"k": 1}}),
    )
    .await;
    let a = h
        .wait_attempts("event_id=evt_s3_default", |a| !a.is_empty())
        .await;
    assert_eq!(a[0]["status"], "success", "{a:?}");
    let objects = reader("s3-read", aws.args(json!({"bucket": BUCKET}))).await;
    assert_eq!(
        objects[0]["key"], "2024-05-06T07:08:09.5Z_evt_s3_default.json",
        "{objects}"
    );
}

//! `azure_servicebus` end to end against a local server speaking the Service Bus REST send
//! API. No Service Bus emulator can be installed without Docker, so this server checks the
//! exact request Azure documents — `POST /{queue}/messages`, a Shared Access Signature
//! recomputed here from the key (`HMAC-SHA256(key, urlencode(resource) + "\n" + expiry)`),
//! `BrokerProperties` JSON, custom properties as JSON-string headers — and answers as
//! Service Bus does (201, 401 for a bad signature, 404 for an unknown entity).

mod cloud;
mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use cloud::{Forwarder, SECRET, verify_standard};
use common::Herald;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;

const KEY_NAME: &str = "RootManageSharedAccessKey";
const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
const QUEUE: &str = "orders";
/// A queue the server answers for only after [`SLOW_DELAY`].
const SLOW: &str = "slow";
const SLOW_DELAY: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
struct Message {
    headers: HeaderMap,
    body: Bytes,
}

/// What the server accepted.
#[derive(Clone, Default)]
struct Bus {
    accepted: Arc<Mutex<Vec<Message>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Checks a SAS token for `resource` as the Service Bus documentation defines it.
fn check_sas(auth: &str, resource: &str) -> Result<(), String> {
    let rest = auth
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let fields: Vec<(&str, &str)> = rest.split('&').filter_map(|p| p.split_once('=')).collect();
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .ok_or(format!("no {k}"))
    };
    let (sr, sig, se, skn) = (get("sr")?, get("sig")?, get("se")?, get("skn")?);
    if percent_decode(sr) != resource {
        return Err(format!("sr {sr} is not {resource}"));
    }
    if skn != KEY_NAME {
        return Err(format!("unknown key name {skn}"));
    }
    let expiry: i64 = se.parse().map_err(|_| "se is not a number")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if expiry <= now {
        return Err("token expired".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if percent_decode(sig) != expected {
        return Err("signature mismatch".into());
    }
    Ok(())
}

impl Bus {
    /// Serves `POST /{queue}/messages`; returns the server's base URL.
    async fn start(&self) -> (String, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let bus = self.clone();
        let app = axum::Router::new().route(
            "/{entity}/messages",
            axum::routing::post(
                move |axum::extract::Path(entity): axum::extract::Path<String>,
                      headers: HeaderMap,
                      body: Bytes| {
                    let bus = bus.clone();
                    // The resource is the URL the client addressed, as Service Bus sees it.
                    let host = headers
                        .get("host")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let resource = format!("http://{host}/{entity}");
                    async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        if let Err(why) = check_sas(auth, &resource) {
                            bus.refused.lock().push(why.clone());
                            return (StatusCode::UNAUTHORIZED, why);
                        }
                        if entity == SLOW {
                            tokio::time::sleep(SLOW_DELAY).await;
                        } else if entity != QUEUE {
                            return (
                                StatusCode::NOT_FOUND,
                                "<Error><Code>404</Code></Error>".into(),
                            );
                        }
                        bus.accepted.lock().push(Message { headers, body });
                        (StatusCode::CREATED, String::new())
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, addr.port())
    }
}

fn connection_string(key: &str) -> String {
    format!(
        "Endpoint=sb://herald-test.servicebus.windows.net/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key}"
    )
}

fn retry_fast() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1,1,1,1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ]
}

async fn create(h: &Herald, tenant: &str, body: Value) -> Value {
    h.ok("PUT", &format!("/tenants/{tenant}"), None).await;
    h.ok(
        "POST",
        &format!("/tenants/{tenant}/destinations"),
        Some(body),
    )
    .await
}

/// A custom property's value (a JSON string).
fn property(m: &Message, name: &str) -> String {
    let raw = m.headers.get(name).unwrap().to_str().unwrap();
    serde_json::from_str::<String>(raw).unwrap_or_else(|e| panic!("{name}: {raw:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_sends_signed_messages_with_a_valid_sas_token() {
    let bus = Bus::default();
    let (base, _) = bus.start().await;
    let h = Herald::start(&[]);
    let dest = create(
        &h,
        "acme",
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
    let bus = Bus::default();
    let (base, _) = bus.start().await;
    let h = Herald::start(&retry_fast());
    let wrong = base64::engine::general_purpose::STANDARD.encode("another key");
    for (tenant, name, key, code) in [
        ("t1", QUEUE, wrong.as_str(), "auth_failed"),
        ("t2", "no-such-queue", KEY, "not_found"),
    ] {
        create(
            &h,
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
async fn servicebus_down_is_retried_until_it_recovers() {
    let bus = Bus::default();
    let (_, port) = bus.start().await;
    let fwd = Forwarder::start(port).await;
    let h = Herald::start(&retry_fast());
    create(
        &h,
        "t",
        json!({
            "type": "azure_servicebus", "topics": "*",
            "config": {"name": QUEUE, "endpoint": format!("http://127.0.0.1:{}", fwd.port)},
            "credentials": {"connection_string": connection_string(KEY)},
        }),
    )
    .await;
    fwd.down().await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "id": "evt_sb_down", "data": {}}))
        .await;
    let failed = h
        .wait_attempts("event_id=evt_sb_down", |a| a.len() >= 2)
        .await;
    assert!(
        failed
            .iter()
            .all(|a| a["status"] == "failed" && a["code"] == "connection_error"),
        "{failed:?}"
    );
    fwd.up().await;
    h.wait_attempts("event_id=evt_sb_down", |a| {
        a.iter().any(|x| x["status"] == "success")
    })
    .await;
    assert_eq!(bus.accepted.lock().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_invalid_config_is_rejected_at_create() {
    let h = Herald::start(&[]);
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
        let (status, v) = h
            .call("POST", "/tenants/t/destinations", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body} -> {v}");
        assert!(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().starts_with(field)),
            "expected a problem with {field}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_servicebus_queue_does_not_hold_up_other_destinations() {
    let bus = Bus::default();
    let (base, _) = bus.start().await;
    let h = Herald::start(&[]);
    for (tenant, name) in [("slow", SLOW), ("fast", QUEUE)] {
        create(
            &h,
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
    let h = Herald::start(&[]);
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

    let bus = Bus::default();
    let (base, _) = bus.start().await;
    let dest = create(
        &h,
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

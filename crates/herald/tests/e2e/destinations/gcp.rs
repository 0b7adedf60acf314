//! End to end against Google's Pub/Sub emulator (Debian package
//! `google-cloud-cli-pubsub-emulator`), started by each test on a free port; messages are read
//! back with the `google-cloud-pubsub` Python client (gRPC, independent of Herald's REST
//! calls). The service-account path is checked against a local token endpoint that verifies
//! the JWT's RS256 signature with the `openssl` command.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use herald_testkit::Herald;
use herald_testkit::retry_fast;
use herald_testkit::servers::{PUBSUB_PROJECT, PUBSUB_TOPIC, PubSubEmulator};
use herald_testkit::{SECRET, verify_standard};
use parking_lot::Mutex;
use serde_json::{Value, json};

fn check_message(m: &Value, event_id: &str, data: Value) {
    let body = STANDARD.decode(m["data"].as_str().unwrap()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), data);
    let a = &m["attributes"];
    assert_eq!(a["webhook-id"], event_id, "{a}");
    assert!(
        verify_standard(
            SECRET,
            a["webhook-id"].as_str().unwrap(),
            a["webhook-timestamp"].as_str().unwrap(),
            a["webhook-signature"].as_str().unwrap(),
            &body
        ),
        "signature does not verify: {a}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_publishes_signed_messages_with_attributes() {
    let emu = PubSubEmulator::start().await;
    let h = Herald::start(&[]).await;
    let dest = h
        .create(
            "acme",
            json!({
                "type": "gcp_pubsub", "topics": "*",
                "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC, "endpoint": emu.host()},
                "credentials": {"signing_secret": SECRET},
            }),
        )
        .await;
    // Signing secrets are returned in full: receivers need them to verify.
    assert_eq!(dest["credentials"]["signing_secret"], SECRET);
    assert_eq!(
        dest["target"],
        format!("projects/{PUBSUB_PROJECT}/topics/{PUBSUB_TOPIC}")
    );
    h.publish(json!({
        "tenant_id": "acme", "topic": "order.paid", "id": "evt_ps_1",
        "metadata": {"source": "shop"}, "data": {"order": 42}
    }))
    .await;
    let got = emu.messages(1).await;
    check_message(&got[0], "evt_ps_1", json!({"order": 42}));
    assert_eq!(got[0]["attributes"]["x-herald-topic"], "order.paid");
    assert_eq!(got[0]["attributes"]["x-herald-source"], "shop");
    let a = h
        .wait_attempts("event_id=evt_ps_1", |a| !a.is_empty())
        .await;
    assert_eq!(a[0]["status"], "success", "{a:?}");
}

/// A local OAuth token endpoint that checks each JWT's RS256 signature with `openssl`
/// against the public key it trusts.
struct TokenServer {
    url: String,
    /// Verified assertions' claims.
    claims: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is required for the service-account test");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TokenServer {
    async fn start(trusted_public_key: PathBuf, dir: tempfile::TempDir) -> TokenServer {
        let claims: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = claims.clone();
        let work = dir.path().to_path_buf();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: Bytes| {
                let seen = seen.clone();
                let key = trusted_public_key.clone();
                let work = work.clone();
                async move {
                    let form: Vec<(String, String)> =
                        url::form_urlencoded::parse(&body).into_owned().collect();
                    let get = |k: &str| {
                        form.iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    if get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            "{\"error\":\"unsupported_grant_type\"}".to_string(),
                        );
                    }
                    let jwt = get("assertion");
                    let parts: Vec<&str> = jwt.split('.').collect();
                    let ok = parts.len() == 3 && {
                        let input = work.join(format!("input-{}", seen.lock().len()));
                        let sig = work.join(format!("sig-{}", seen.lock().len()));
                        std::fs::write(&input, format!("{}.{}", parts[0], parts[1])).unwrap();
                        std::fs::write(&sig, URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default())
                            .unwrap();
                        Command::new("openssl")
                            .args(["dgst", "-sha256", "-verify"])
                            .arg(&key)
                            .arg("-signature")
                            .arg(&sig)
                            .arg(&input)
                            .output()
                            .map(|o| o.status.success())
                            .unwrap_or(false)
                    };
                    if !ok {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            "{\"error\":\"invalid_grant\"}".to_string(),
                        );
                    }
                    let claims: Value = serde_json::from_slice(
                        &URL_SAFE_NO_PAD.decode(parts[1]).unwrap_or_default(),
                    )
                    .unwrap_or(Value::Null);
                    seen.lock().push(claims);
                    (
                        axum::http::StatusCode::OK,
                        json!({"access_token": "tok-1", "expires_in": 3600, "token_type": "Bearer"})
                            .to_string(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TokenServer {
            url,
            claims,
            _dir: dir,
        }
    }
}

/// A service-account key file's JSON for a fresh RSA key; returns it and the key's public half.
fn service_account(dir: &std::path::Path, name: &str, token_uri: &str) -> (String, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let k = key.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        k,
    ]);
    openssl(&[
        "pkey",
        "-in",
        k,
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let json = json!({
        "type": "service_account",
        "project_id": PUBSUB_PROJECT,
        "private_key_id": format!("kid-{name}"),
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "client_email": format!("{name}@{PUBSUB_PROJECT}.iam.gserviceaccount.com"),
        "token_uri": token_uri,
    });
    (json.to_string(), public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_service_account_tokens_are_fetched_cached_and_refused_keys_fail() {
    let emu = PubSubEmulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The token endpoint trusts only the "good" key; its URL must exist before the key JSON.
    let listener_dir = tempfile::tempdir().unwrap();
    let (_, good_public) = service_account(dir.path(), "good", "http://placeholder/");
    let tokens = TokenServer::start(good_public, listener_dir).await;
    let good_key = std::fs::read_to_string(dir.path().join("good.pem")).unwrap();
    let good = json!({
        "type": "service_account", "project_id": PUBSUB_PROJECT, "private_key_id": "kid-good",
        "private_key": good_key, "client_email": format!("good@{PUBSUB_PROJECT}.iam.gserviceaccount.com"),
        "token_uri": tokens.url,
    })
    .to_string();
    let (bad, _) = service_account(dir.path(), "bad", &tokens.url);

    let h = Herald::start(&retry_fast()).await;
    h.create(
        "t1",
        json!({
            "type": "gcp_pubsub", "topics": "*",
            "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC, "endpoint": emu.host()},
            "credentials": {"service_account_json": good, "signing_secret": SECRET},
        }),
    )
    .await;
    for id in ["evt_sa_1", "evt_sa_2"] {
        h.publish(json!({"tenant_id": "t1", "topic": "a", "id": id, "data": {"id": id}}))
            .await;
        h.wait_attempts(&format!("event_id={id}"), |a| {
            a.iter().any(|x| x["status"] == "success")
        })
        .await;
    }
    let got = emu.messages(2).await;
    assert_eq!(got.len(), 2);
    // One token, reused for the second message.
    let claims = tokens.claims.lock().clone();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(
        claims[0]["iss"],
        format!("good@{PUBSUB_PROJECT}.iam.gserviceaccount.com")
    );
    assert_eq!(claims[0]["scope"], "https://www.googleapis.com/auth/pubsub");
    assert_eq!(claims[0]["aud"], tokens.url.as_str());

    // A key the token endpoint refuses: permanent, one attempt.
    h.create(
        "t2",
        json!({
            "type": "gcp_pubsub", "topics": "*",
            "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC, "endpoint": emu.host()},
            "credentials": {"service_account_json": bad},
        }),
    )
    .await;
    h.publish(json!({"tenant_id": "t2", "topic": "a", "id": "evt_sa_bad", "data": {}}))
        .await;
    h.wait_attempts("event_id=evt_sa_bad", |a| !a.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let a = h
        .wait_attempts("event_id=evt_sa_bad", |a| !a.is_empty())
        .await;
    assert_eq!(a.len(), 1, "a refused key must not be retried: {a:?}");
    assert_eq!(a[0]["code"], "auth_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_permanent() {
    let emu = PubSubEmulator::start().await;
    let h = Herald::start(&retry_fast()).await;
    // A topic that does not exist is a permanent failure (404 NOT_FOUND).
    h.create(
        "t2",
        json!({
            "type": "gcp_pubsub", "topics": "*",
            "config": {"project_id": PUBSUB_PROJECT, "topic": "no-such-topic", "endpoint": emu.host()},
        }),
    )
    .await;
    h.publish(json!({"tenant_id": "t2", "topic": "a", "id": "evt_ps_404", "data": {}}))
        .await;
    let a = h
        .wait_attempts("event_id=evt_ps_404", |a| !a.is_empty())
        .await;
    assert_eq!(a[0]["code"], "404", "{a:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let a = h
        .wait_attempts("event_id=evt_ps_404", |a| !a.is_empty())
        .await;
    assert_eq!(a.len(), 1, "{a:?}");
}

/// Issue 8 item 7: keys are accepted as Outpost accepts them. Outpost's minimal key has a
/// `type` and nothing that can sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_accepts_keys_as_outpost_does_and_fails_unsignable_ones_permanently() {
    let placeholder = r#"{"type":"service_account","project_id":"p"}"#;
    let emu = PubSubEmulator::start().await;
    let h = Herald::start(&retry_fast()).await;
    // With an emulator endpoint the key is not looked at: created, and messages arrive.
    h.create(
        "t1",
        json!({
            "type": "gcp_pubsub", "topics": "*",
            "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC, "endpoint": emu.host()},
            "credentials": {"service_account_json": placeholder, "signing_secret": SECRET},
        }),
    )
    .await;
    h.publish(json!({"tenant_id": "t1", "topic": "a", "id": "evt_ps_ph_1", "data": {"n": 1}}))
        .await;
    h.wait_attempts("event_id=evt_ps_ph_1", |a| {
        a.iter().any(|x| x["status"] == "success")
    })
    .await;
    let got = emu.messages(1).await;
    check_message(&got[0], "evt_ps_ph_1", json!({"n": 1}));

    // Without an endpoint it is created too (as by Outpost), and its attempt fails
    // permanently with a message saying the key cannot sign.
    h.create(
        "t2",
        json!({
            "type": "gcp_pubsub", "topics": "*",
            "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC},
            "credentials": {"service_account_json": placeholder},
        }),
    )
    .await;
    h.publish(json!({"tenant_id": "t2", "topic": "a", "id": "evt_ps_ph_2", "data": {}}))
        .await;
    let a = h
        .wait_attempts("event_id=evt_ps_ph_2&include=response_data", |a| {
            !a.is_empty()
        })
        .await;
    assert_eq!(a[0]["status"], "failed", "{a:?}");
    assert_eq!(a[0]["code"], "auth_failed", "{a:?}");
    let why = a[0]["response_data"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("cannot sign"), "{a:?}");
    assert!(why.contains("client_email"), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_invalid_config_is_rejected_at_create() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/t", None).await;
    let cases = [
        (
            json!({"type": "gcp_pubsub", "topics": "*", "config": {"topic": PUBSUB_TOPIC, "endpoint": "localhost:8085"}}),
            "config.project_id",
        ),
        (
            json!({"type": "gcp_pubsub", "topics": "*", "config": {"project_id": PUBSUB_PROJECT, "topic": "ab", "endpoint": "localhost:8085"}}),
            "config.topic",
        ),
        (
            json!({"type": "gcp_pubsub", "topics": "*", "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC}}),
            "credentials.service_account_json",
        ),
        (
            json!({"type": "gcp_pubsub", "topics": "*", "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC},
                   "credentials": {"service_account_json": "not json"}}),
            "credentials.service_account_json",
        ),
        (
            json!({"type": "gcp_pubsub", "topics": "*", "config": {"project_id": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC, "endpoint": "ftp://x"}}),
            "config.endpoint",
        ),
    ];
    for (body, field) in cases {
        h.expect_rejected("t", &body, field).await;
    }
}

//! The `gcp_pubsub` type: each event is published to a Google Cloud Pub/Sub topic through the
//! REST API (`projects.topics.publish`).
//!
//! The message data is the event data; the engine's headers (event id, timestamp, topic,
//! signature, metadata) are message attributes. With a service-account key Herald signs a
//! JWT (RS256) and exchanges it at the key's `token_uri` for an OAuth access token (the
//! `jwt-bearer` grant), cached until a minute before it expires.
//!
//! The key is accepted as Outpost accepts it: a JSON object with a `type` key, checked only
//! when no `endpoint` is set. Whether it can sign (a `client_email` and an RSA
//! `private_key`) shows at delivery: without an `endpoint`, a key that cannot sign fails
//! every attempt permanently with a message saying so. With an `endpoint` (the Pub/Sub
//! emulator) the key is not checked at all: one that can sign is used, anything else
//! (absent, a placeholder) means requests carry no credentials.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::DestinationsConfig;
use crate::support::address::HttpUrl;
use crate::support::http::{Egress, Reply, transport_error};
use crate::target::{Blocked, TargetPolicy};

const KIND: &str = "gcp_pubsub";
/// The API's public endpoint.
const DEFAULT_BASE: &str = "https://pubsub.googleapis.com";
/// The OAuth scope publishing needs.
const SCOPE: &str = "https://www.googleapis.com/auth/pubsub";
/// Google's token endpoint, when a key does not name one.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The `gcp_pubsub` destination type.
pub struct PubSub {
    http: Egress,
}

/// `config` of a `gcp_pubsub` destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Project ID
    ///
    /// The GCP project ID.
    pub project_id: String,
    /// Topic
    ///
    /// The Pub/Sub topic name (not the full path).
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$"))]
    pub topic: String,
    /// Endpoint
    ///
    /// Optional custom endpoint: host:port of the Pub/Sub emulator (plain HTTP, no
    /// credentials needed), or an http(s):// URL. Default: https://pubsub.googleapis.com.
    pub endpoint: Option<Endpoint>,
}

/// `credentials` of a `gcp_pubsub` destination.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Service account key JSON
    ///
    /// The entire JSON key file of a service account allowed to publish to the topic.
    /// Required unless an emulator endpoint is set.
    pub service_account_json: Option<Secret>,
}

/// An `endpoint` setting as a base URL: `host:port` is the emulator over plain HTTP (HTTPS
/// on port 443), a URL is used as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub url::Url);

impl Endpoint {
    /// Parses the setting, naming the problem.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let full = if raw.contains("://") {
            raw.to_string()
        } else if let Some(host) = raw.strip_suffix(":443") {
            format!("https://{host}")
        } else {
            format!("http://{raw}")
        };
        HttpUrl::parse(&full).map(|u| Self(u.0))
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Endpoint {
    fn schema_name() -> Cow<'static, str> {
        "PubSubEndpoint".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "x-herald-target": true })
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><circle cx="12" cy="12" r="3"/><circle cx="5" cy="6" r="2"/><circle cx="19" cy="6" r="2"/><circle cx="12" cy="20" r="2"/><path d="M6.5 7.5 10 10.5M17.5 7.5 14 10.5M12 15v3"/></svg>"#;

impl PubSub {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        Ok(Self {
            http: Egress::new(cfg)?,
        })
    }
}

/// What Outpost checks of a key: a JSON object with a `type` key.
fn check_key_shape(raw: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("is not JSON: {e}"))?;
    match v.as_object() {
        None => Err("must be a JSON object: the service account's key file".into()),
        Some(o) if !o.contains_key("type") => {
            Err("has no \"type\" key; paste the whole JSON key file of the service account".into())
        }
        Some(_) => Ok(()),
    }
}

/// A parsed service-account key.
struct ServiceAccount {
    email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    token_uri: url::Url,
}

/// How requests are authorised.
enum Auth {
    /// No credentials (the emulator).
    None,
    /// OAuth tokens obtained with a service-account key.
    Key(Box<ServiceAccount>),
    /// A key that cannot sign: every attempt fails permanently with this reason.
    Unusable(String),
}

/// DER bytes of the first PEM block.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let after = &pem[start..];
    let body_start = after.find('\n')? + 1;
    let body_end = after.find("-----END ")?;
    let b64: String = after
        .get(body_start..body_end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// Reads a key that can sign; the problem otherwise.
fn parse_account(raw: &str) -> Result<ServiceAccount, String> {
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("it is not JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let email = s("client_email").ok_or("it has no client_email")?;
    let pem = s("private_key").ok_or("it has no private_key")?;
    let der = pem_der(pem).ok_or("its private_key is not a PEM block")?;
    let key = RsaKeyPair::from_pkcs8(&der)
        .map_err(|_| "its private_key is not an RSA key in PKCS#8 form (BEGIN PRIVATE KEY)")?;
    let token_uri = s("token_uri").unwrap_or(DEFAULT_TOKEN_URI);
    let token_uri = HttpUrl::parse(token_uri).map_err(|e| format!("its token_uri: {e}"))?;
    Ok(ServiceAccount {
        email: email.to_string(),
        key_id: s("private_key_id").map(str::to_string),
        key,
        token_uri: token_uri.0,
    })
}

/// A topic name as the API accepts it.
fn valid_topic(t: &str) -> bool {
    (3..=255).contains(&t.len())
        && t.starts_with(|c: char| c.is_ascii_alphabetic())
        && !t.to_ascii_lowercase().starts_with("goog")
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
}

impl Spec for PubSub {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "GCP Pub/Sub",
            description: "Publish events to a Google Cloud Pub/Sub topic.",
            icon: ICON,
            instructions: "Create a topic and a service account with the Pub/Sub Publisher role on it, \
                create a JSON key for the account and paste the whole key file. The message data is the \
                event data; id, topic, timestamp, signature and metadata are message attributes.",
        }
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let p = &config.project_id;
        if p.contains('/') || p.chars().any(char::is_whitespace) {
            errs.push(FieldError::new(
                "config.project_id",
                "must be a project ID without '/' or spaces",
            ));
        }
        let t = &config.topic;
        if !valid_topic(t) {
            errs.push(FieldError::new(
                "config.topic",
                format!(
                    "{t:?} is not a topic name: 3-255 letters, digits or -_.~+%, starting with a letter, not with goog"
                ),
            ));
        }
        let key = "credentials.service_account_json";
        match &config.endpoint {
            Some(e) => {
                if let Err(Blocked(why)) = self.http.policy.check_url(&e.0) {
                    errs.push(FieldError::new("config.endpoint", why));
                }
                // An emulator needs no key: whatever is sent is not looked at.
            }
            None => match &credentials.service_account_json {
                None => errs.push(FieldError::new(
                    key,
                    "is required unless config.endpoint points at an emulator",
                )),
                Some(raw) => {
                    if let Err(why) = check_key_shape(raw.expose()) {
                        errs.push(FieldError::new(key, why));
                    }
                }
            },
        }
        errs
    }

    fn build(
        &self,
        _id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        let emulator = config.endpoint.is_some();
        let base = match config.endpoint {
            Some(e) => e.0,
            None => url::Url::parse(DEFAULT_BASE)
                .map_err(|e| FieldError::new("config.endpoint", e.to_string()))?,
        };
        let path = format!(
            "{}/v1/projects/{}/topics/{}:publish",
            base.as_str().trim_end_matches('/'),
            config.project_id,
            config.topic
        );
        let publish_url =
            url::Url::parse(&path).map_err(|e| FieldError::new("config.topic", e.to_string()))?;
        let auth = match credentials.service_account_json {
            None => Auth::None,
            Some(raw) => match parse_account(raw.expose()) {
                Ok(account) => Auth::Key(Box::new(account)),
                Err(_) if emulator => Auth::None,
                Err(why) => Auth::Unusable(why),
            },
        };
        Ok(Arc::new(PubSubDriver {
            publish_url,
            auth,
            token: Mutex::new(None),
            client: self.http.client.clone(),
            policy: self.http.policy.clone(),
            body_limit: self.http.body_limit,
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        let (project, topic) = (&config.project_id, &config.topic);
        let link = config.endpoint.is_none().then(|| {
            format!("https://console.cloud.google.com/cloudpubsub/topic/detail/{topic}?project={project}")
        });
        (format!("projects/{project}/topics/{topic}"), link)
    }
}

struct PubSubDriver {
    publish_url: url::Url,
    auth: Auth,
    /// The cached access token and when to stop using it.
    token: Mutex<Option<(String, tokio::time::Instant)>>,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

/// Classifies a non-2xx Google API answer by status (the API's canonical codes map onto
/// HTTP statuses): 401/403 are credentials, 429 and 5xx are transient, other 4xx (topic not
/// found, invalid argument) are permanent.
fn classify(reply: &Reply, what: &str) -> DeliveryError {
    let status_name = serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/status")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| v.get("error").and_then(Value::as_str).map(str::to_string))
        })
        .unwrap_or_default();
    let text = format!("{what} answered HTTP {} {status_name}", reply.status);
    match reply.status {
        401 | 403 => reply.failure(
            false,
            "auth_failed",
            format!("{text}: the service account cannot publish here; not retried"),
        ),
        408 | 409 | 429 => reply.failure(true, &reply.status.to_string(), text),
        s if s >= 500 => reply.failure(true, &s.to_string(), text),
        s => reply.failure(false, &s.to_string(), format!("{text}; not retried")),
    }
}

impl PubSubDriver {
    /// A valid access token, fetching a new one when the cached one is about to expire.
    async fn access_token(
        &self,
        account: &ServiceAccount,
        timeout: Duration,
    ) -> Result<String, DeliveryError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && tokio::time::Instant::now() < *until
        {
            return Ok(token.clone());
        }
        if let Err(Blocked(why)) = self.policy.check_url(&account.token_uri) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let assertion = jwt(account, jiff::Timestamp::now().as_second())
            .map_err(|e| DeliveryError::permanent("auth_failed", e))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let resp = self
            .client
            .post(account.token_uri.clone())
            .timeout(timeout)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(transport_error)?;
        let reply = Reply::read(resp, self.body_limit).await;
        if !(200..300).contains(&reply.status) {
            // 400 invalid_grant / 401 invalid_client: the key is wrong or revoked.
            return Err(match reply.status {
                400 | 401 | 403 => reply.failure(
                    false,
                    "auth_failed",
                    format!(
                        "the token endpoint refused the service account key (HTTP {}); not retried",
                        reply.status
                    ),
                ),
                _ => classify(&reply, "the token endpoint"),
            });
        }
        let v: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        let Some(token) = v.get("access_token").and_then(Value::as_str) else {
            return Err(reply.failure(
                true,
                "auth_error",
                "the token endpoint answered without an access_token".into(),
            ));
        };
        let lifetime = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        let until =
            tokio::time::Instant::now() + Duration::from_secs(lifetime.saturating_sub(60).max(1));
        *cached = Some((token.to_string(), until));
        Ok(token.to_string())
    }
}

/// The signed JWT of the `jwt-bearer` grant.
fn jwt(account: &ServiceAccount, now: i64) -> Result<String, String> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &account.key_id {
        header["kid"] = Value::String(kid.clone());
    }
    let claims = json!({
        "iss": account.email,
        "scope": SCOPE,
        "aud": account.token_uri.as_str(),
        "iat": now,
        "exp": now + 3600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; account.key.public_modulus_len()];
    account
        .key
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| "cannot sign the token request with the service account key".to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[async_trait]
impl Driver for PubSubDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        if let Err(Blocked(why)) = self.policy.check_url(&self.publish_url) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let attributes: Map<String, Value> = msg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let body =
            json!({"messages": [{"data": STANDARD.encode(&msg.body), "attributes": attributes}]});
        let mut req = self
            .client
            .post(self.publish_url.clone())
            .timeout(msg.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match &self.auth {
            Auth::None => {}
            Auth::Key(account) => {
                let token = self.access_token(account, msg.timeout).await?;
                req = req.bearer_auth(token);
            }
            Auth::Unusable(why) => {
                return Err(DeliveryError::permanent(
                    "auth_failed",
                    format!(
                        "the service account key cannot sign: {why}; set credentials.service_account_json \
                         to the whole JSON key file of a service account (client_email and private_key)"
                    ),
                ));
            }
        }
        let resp = req.send().await.map_err(transport_error)?;
        let reply = Reply::read(resp, self.body_limit).await;
        if reply.status == 401 {
            // A token revoked before its expiry: fetch a new one on the next attempt.
            *self.token.lock().await = None;
        }
        if !(200..300).contains(&reply.status) {
            return Err(classify(&reply, "Pub/Sub"));
        }
        let ids = serde_json::from_str::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("messageIds").cloned())
            .unwrap_or(Value::Null);
        Ok(Receipt {
            code: reply.status.to_string(),
            response: Some(json!({"status_code": reply.status, "message_ids": ids})),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herald_core::Destination;
    use herald_core::destination::{DestinationType, Disposition};
    use herald_core::spec::Typed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Outpost's minimal accepted key: it has a `type` but cannot sign.
    const PLACEHOLDER: &str = r#"{"type":"service_account","project_id":"p"}"#;

    fn dev() -> DestinationsConfig {
        DestinationsConfig {
            target_policy: TargetPolicy {
                allow_http: true,
                allow_private: true,
                ..TargetPolicy::default()
            },
            ..DestinationsConfig::default()
        }
    }

    fn pubsub(cfg: &DestinationsConfig) -> Typed<PubSub> {
        Typed::new(PubSub::new(cfg).unwrap(), true)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn destination(config: &[(&str, &str)], credentials: &[(&str, &str)]) -> Destination {
        Destination {
            id: "des_1".into(),
            tenant_id: "t".into(),
            kind: KIND.into(),
            topics: herald_core::Topics::All,
            filter: None,
            config: map(config),
            credentials: map(credentials),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    fn message() -> OutboundMessage {
        OutboundMessage {
            event_id: "evt_1".into(),
            delivery_id: "dlv_1".into(),
            topic: "user.created".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            body: Arc::from(&br#"{"a":1}"#[..]),
            headers: vec![("webhook-id".into(), "evt_1".into())],
            metadata: Default::default(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("localhost:8085").unwrap().0.as_str(),
            "http://localhost:8085/"
        );
        assert_eq!(
            Endpoint::parse("pubsub.googleapis.com:443")
                .unwrap()
                .0
                .as_str(),
            "https://pubsub.googleapis.com/"
        );
        assert!(Endpoint::parse("ftp://x").unwrap_err().contains("http"));
        // The policy applies: loopback over plain HTTP needs --dev.
        let strict = pubsub(&DestinationsConfig::default());
        let errs = strict.validate(
            &map(&[
                ("project_id", "p"),
                ("topic", "events"),
                ("endpoint", "localhost:8085"),
            ]),
            &map(&[]),
        );
        assert_eq!(errs[0].field, "config.endpoint");
    }

    #[test]
    fn topic_names() {
        assert!(valid_topic("events-topic"));
        assert!(!valid_topic("ab"));
        assert!(!valid_topic("google-x"));
        assert!(!valid_topic("1abc"));
        assert!(!valid_topic("a/b/c"));
    }

    #[test]
    fn keys_that_cannot_sign_say_why() {
        let e = parse_account("{}").err().unwrap();
        assert!(e.contains("client_email"), "{e}");
        let e = parse_account(
            r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
        )
        .err()
        .unwrap();
        assert!(e.contains("RSA"), "{e}");
    }

    #[test]
    fn schema_keeps_the_contract_fields() {
        let t = pubsub(&DestinationsConfig::default());
        let f: Vec<_> = t
            .spec()
            .config_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.pattern.as_deref()))
            .collect();
        assert_eq!(
            &f[..3],
            [
                ("project_id", true, None),
                ("topic", true, Some("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")),
                ("endpoint", false, None),
            ]
        );
        let c: Vec<_> = t
            .spec()
            .credential_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.sensitive))
            .collect();
        assert_eq!(
            &c[..2],
            [
                ("service_account_json", false, true),
                ("signing_secret", false, true)
            ]
        );
    }

    #[test]
    fn keys_are_checked_as_outpost_checks_them() {
        let t = pubsub(&dev());
        let cloud = [("project_id", "p"), ("topic", "events")];
        let emulator = [
            ("project_id", "p"),
            ("topic", "events"),
            ("endpoint", "localhost:8085"),
        ];
        // An emulator endpoint: the key is not parsed at all.
        for key in [PLACEHOLDER, "not json", "[]"] {
            let errs = t.validate(&map(&emulator), &map(&[("service_account_json", key)]));
            assert!(errs.is_empty(), "{key}: {errs:?}");
        }
        assert!(t.validate(&map(&emulator), &map(&[])).is_empty());
        // Without one: a JSON object with a `type` key, as Outpost requires; signing is not
        // checked here.
        assert!(
            t.validate(&map(&cloud), &map(&[("service_account_json", PLACEHOLDER)]))
                .is_empty()
        );
        for (key, problem) in [
            ("not json", "not JSON"),
            ("[1]", "JSON object"),
            (r#"{"client_email":"a@b"}"#, "\"type\""),
        ] {
            let errs = t.validate(&map(&cloud), &map(&[("service_account_json", key)]));
            assert_eq!(errs.len(), 1, "{key}: {errs:?}");
            assert_eq!(errs[0].field, "credentials.service_account_json");
            assert!(errs[0].problem.contains(problem), "{}", errs[0].problem);
        }
        let errs = t.validate(&map(&cloud), &map(&[]));
        assert_eq!(errs[0].field, "credentials.service_account_json");
        assert!(errs[0].problem.contains("required"), "{}", errs[0].problem);
    }

    #[tokio::test]
    async fn a_key_that_cannot_sign_fails_the_attempt_permanently() {
        let t = pubsub(&DestinationsConfig::default());
        let d = destination(
            &[("project_id", "p"), ("topic", "events")],
            &[("service_account_json", PLACEHOLDER)],
        );
        let driver = t.build(&d).unwrap();
        let e = driver.deliver(&message()).await.unwrap_err();
        assert_eq!(e.disposition, Disposition::Permanent);
        assert_eq!(e.code, "auth_failed");
        assert!(e.message.contains("cannot sign"), "{}", e.message);
        assert!(e.message.contains("client_email"), "{}", e.message);
    }

    #[tokio::test]
    async fn an_emulator_gets_no_credentials_whatever_the_key() {
        // A one-request HTTP server standing in for the emulator.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the request ended early");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let body = r#"{"messageIds":["1"]}"#;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8(buf).unwrap()
        });
        let t = pubsub(&dev());
        let endpoint = format!("127.0.0.1:{port}");
        let d = destination(
            &[
                ("project_id", "p"),
                ("topic", "events"),
                ("endpoint", &endpoint),
            ],
            &[("service_account_json", PLACEHOLDER)],
        );
        let receipt = t.build(&d).unwrap().deliver(&message()).await.unwrap();
        assert_eq!(receipt.code, "200");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /v1/projects/p/topics/events:publish "),
            "{request}"
        );
        assert!(
            !request.to_ascii_lowercase().contains("\r\nauthorization:"),
            "{request}"
        );
        assert!(request.contains(r#""webhook-id":"evt_1""#), "{request}");
    }
}

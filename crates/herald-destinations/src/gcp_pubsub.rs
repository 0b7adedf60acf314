//! The `gcp_pubsub` type: each event is published to a Google Cloud Pub/Sub topic through the
//! REST API (`projects.topics.publish`).
//!
//! The message data is the event data; the engine's headers (event id, timestamp, topic,
//! signature, metadata) are message attributes. With a service-account key Herald signs a
//! JWT (RS256) and exchanges it at the key's `token_uri` for an OAuth access token (the
//! `jwt-bearer` grant), cached until a minute before it expires. With an `endpoint` and no key
//! (the Pub/Sub emulator) requests carry no credentials.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use herald_core::Destination;
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::DestinationsConfig;
use crate::mapping::{
    HttpReply, SIGNING_SECRET, check_endpoint, check_signing_secret, field, field_with,
    first_error, get, http_client, signing_secret_field, transport_error,
};
use crate::target::{Blocked, TargetPolicy};

/// The API's public endpoint.
const DEFAULT_BASE: &str = "https://pubsub.googleapis.com";
/// The OAuth scope publishing needs.
const SCOPE: &str = "https://www.googleapis.com/auth/pubsub";
/// Google's token endpoint, when a key does not name one.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The `gcp_pubsub` destination type.
pub struct PubSubType {
    spec: TypeSpec,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><circle cx="12" cy="12" r="3"/><circle cx="5" cy="6" r="2"/><circle cx="19" cy="6" r="2"/><circle cx="12" cy="20" r="2"/><path d="M6.5 7.5 10 10.5M17.5 7.5 14 10.5M12 15v3"/></svg>"#;

impl PubSubType {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let client = http_client(&policy, cfg.proxy.as_deref(), &cfg.user_agent)?;
        Ok(Self {
            spec: TypeSpec {
                kind: "gcp_pubsub".into(),
                label: "GCP Pub/Sub".into(),
                description: "Publish events to a Google Cloud Pub/Sub topic.".into(),
                icon: ICON.into(),
                instructions: "Create a topic and a service account with the Pub/Sub Publisher role on it, \
                    create a JSON key for the account and paste the whole key file. The message data is the \
                    event data; id, topic, timestamp, signature and metadata are message attributes."
                    .into(),
                config_fields: vec![
                    field("project_id", "Project ID", "The GCP project ID.", true, false),
                    field_with(
                        field(
                            "topic",
                            "Topic",
                            "The Pub/Sub topic name (not the full path).",
                            true,
                            false,
                        ),
                        Some("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$"),
                        None,
                    ),
                    field(
                        "endpoint",
                        "Endpoint",
                        "Optional custom endpoint: host:port of the Pub/Sub emulator (plain HTTP, no \
                         credentials needed), or an http(s):// URL. Default: https://pubsub.googleapis.com.",
                        false,
                        false,
                    ),
                ],
                credential_fields: vec![
                    field(
                        "service_account_json",
                        "Service account key JSON",
                        "The entire JSON key file of a service account allowed to publish to the topic. \
                         Required unless an emulator endpoint is set.",
                        false,
                        true,
                    ),
                    signing_secret_field(),
                ],
            },
            client,
            policy,
            body_limit: cfg.response_body_limit.max(1),
        })
    }
}

/// The base URL for an `endpoint` setting: `host:port` is the emulator over plain HTTP
/// (HTTPS on port 443), a URL is used as given.
fn endpoint_url(raw: &str, policy: &TargetPolicy) -> Result<url::Url, FieldError> {
    let full = if raw.contains("://") {
        raw.to_string()
    } else if raw.ends_with(":443") {
        format!("https://{}", raw.trim_end_matches(":443"))
    } else {
        format!("http://{raw}")
    };
    check_endpoint(&full, "config.endpoint", policy)
}

/// A parsed service-account key.
struct ServiceAccount {
    email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    token_uri: url::Url,
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

fn parse_account(raw: &str, policy: &TargetPolicy) -> Result<ServiceAccount, FieldError> {
    let field = "credentials.service_account_json";
    let bad = |why: &str| FieldError::new(field, why.to_string());
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| FieldError::new(field, format!("is not JSON: {e}")))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let email = s("client_email").ok_or_else(|| bad("has no client_email"))?;
    let pem = s("private_key").ok_or_else(|| bad("has no private_key"))?;
    let der = pem_der(pem).ok_or_else(|| bad("private_key is not a PEM block"))?;
    let key = RsaKeyPair::from_pkcs8(&der)
        .map_err(|_| bad("private_key is not an RSA key in PKCS#8 form (BEGIN PRIVATE KEY)"))?;
    let token_uri = s("token_uri").unwrap_or(DEFAULT_TOKEN_URI);
    let token_uri = check_endpoint(token_uri, field, policy)
        .map_err(|e| FieldError::new(field, format!("token_uri: {}", e.problem)))?;
    Ok(ServiceAccount {
        email: email.to_string(),
        key_id: s("private_key_id").map(str::to_string),
        key,
        token_uri,
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

struct Settings {
    publish_url: url::Url,
    account: Option<ServiceAccount>,
}

impl PubSubType {
    fn settings(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Settings, Vec<FieldError>> {
        let mut errs = Vec::new();
        let project = get(config, "project_id");
        if project.is_some_and(|p| p.contains('/') || p.chars().any(char::is_whitespace)) {
            errs.push(FieldError::new(
                "config.project_id",
                "must be a project ID without '/' or spaces",
            ));
        }
        let topic = get(config, "topic");
        if let Some(t) = topic
            && !valid_topic(t)
        {
            errs.push(FieldError::new(
                "config.topic",
                format!(
                    "{t:?} is not a topic name: 3-255 letters, digits or -_.~+%, starting with a letter, not with goog"
                ),
            ));
        }
        let endpoint = get(config, "endpoint");
        let base = match endpoint {
            Some(raw) => endpoint_url(raw, &self.policy)
                .map_err(|e| errs.push(e))
                .ok(),
            None => url::Url::parse(DEFAULT_BASE).ok(),
        };
        let account = match get(credentials, "service_account_json") {
            Some(raw) => parse_account(raw, &self.policy)
                .map_err(|e| errs.push(e))
                .ok(),
            None if endpoint.is_none() => {
                errs.push(FieldError::new(
                    "credentials.service_account_json",
                    "is required unless config.endpoint points at an emulator",
                ));
                None
            }
            None => None,
        };
        check_signing_secret(credentials, &mut errs);
        let (Some(project), Some(topic), Some(base)) = (project, topic, base) else {
            return Err(errs);
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        let path = format!(
            "{}/v1/projects/{project}/topics/{topic}:publish",
            base.as_str().trim_end_matches('/')
        );
        let publish_url = url::Url::parse(&path)
            .map_err(|e| vec![FieldError::new("config.topic", e.to_string())])?;
        Ok(Settings {
            publish_url,
            account,
        })
    }
}

impl DestinationType for PubSubType {
    fn spec(&self) -> &TypeSpec {
        &self.spec
    }

    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        self.settings(config, credentials).err().unwrap_or_default()
    }

    fn build(&self, d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        let s = self
            .settings(&d.config, &d.credentials)
            .map_err(first_error)?;
        Ok(Arc::new(PubSubDriver {
            publish_url: s.publish_url,
            account: s.account,
            token: Mutex::new(None),
            client: self.client.clone(),
            policy: self.policy.clone(),
            body_limit: self.body_limit,
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let project = d.config.get("project_id").cloned().unwrap_or_default();
        let topic = d.config.get("topic").cloned().unwrap_or_default();
        let link = (!d.config.contains_key("endpoint")).then(|| {
            format!("https://console.cloud.google.com/cloudpubsub/topic/detail/{topic}?project={project}")
        });
        (format!("projects/{project}/topics/{topic}"), link)
    }

    fn signing_secret_key(&self) -> Option<&str> {
        Some(SIGNING_SECRET)
    }
}

struct PubSubDriver {
    publish_url: url::Url,
    account: Option<ServiceAccount>,
    /// The cached access token and when to stop using it.
    token: Mutex<Option<(String, tokio::time::Instant)>>,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

/// Classifies a non-2xx Google API answer by status (the API's canonical codes map onto
/// HTTP statuses): 401/403 are credentials, 429 and 5xx are transient, other 4xx (topic not
/// found, invalid argument) are permanent.
fn classify(reply: &HttpReply, what: &str) -> DeliveryError {
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
        401 | 403 => reply.error(
            false,
            "auth_failed",
            format!("{text}: the service account cannot publish here; not retried"),
        ),
        408 | 409 | 429 => reply.error(true, &reply.status.to_string(), text),
        s if s >= 500 => reply.error(true, &s.to_string(), text),
        s => reply.error(false, &s.to_string(), format!("{text}; not retried")),
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
        let reply = HttpReply::read(resp, self.body_limit).await;
        if !(200..300).contains(&reply.status) {
            // 400 invalid_grant / 401 invalid_client: the key is wrong or revoked.
            return Err(match reply.status {
                400 | 401 | 403 => reply.error(
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
            return Err(reply.error(
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
        if let Some(account) = &self.account {
            let token = self.access_token(account, msg.timeout).await?;
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let reply = HttpReply::read(resp, self.body_limit).await;
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
    use super::*;

    #[test]
    fn endpoints() {
        let p = TargetPolicy {
            allow_http: true,
            allow_private: true,
            ..TargetPolicy::default()
        };
        assert_eq!(
            endpoint_url("localhost:8085", &p).unwrap().as_str(),
            "http://localhost:8085/"
        );
        assert_eq!(
            endpoint_url("pubsub.googleapis.com:443", &p)
                .unwrap()
                .as_str(),
            "https://pubsub.googleapis.com/"
        );
        assert!(endpoint_url("localhost:8085", &TargetPolicy::default()).is_err());
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
    fn account_errors_name_the_field() {
        let p = TargetPolicy::default();
        let e = parse_account("{}", &p).err().unwrap();
        assert_eq!(e.field, "credentials.service_account_json");
        assert!(e.problem.contains("client_email"));
        let e = parse_account(
            r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
            &p,
        )
        .err()
        .unwrap();
        assert!(e.problem.contains("RSA"), "{e}");
    }
}

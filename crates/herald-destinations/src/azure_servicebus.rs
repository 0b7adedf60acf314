//! The `azure_servicebus` type: each event is sent to a Service Bus queue or topic through the
//! Service Bus REST API (`POST https://{namespace}/{queue-or-topic}/messages`).
//!
//! The message body is the event data. `BrokerProperties` carries `MessageId` (the event id),
//! `Label` (the topic) and `ContentType`; the engine's headers (event id, timestamp, topic,
//! signature, metadata) are custom properties, which this API takes as HTTP headers whose
//! values are JSON strings. Requests are authorised with a Shared Access Signature made from
//! the connection string's key (`SharedAccessSignature sr=…&sig=…&se=…&skn=…`), renewed
//! before it expires.
//!
//! No Service Bus emulator can be installed without Docker, so the tests check the exact
//! requests against a local HTTP server that verifies the SAS signature independently
//! (`crates/herald/tests/destinations_azure.rs`); `endpoint` exists for that and for
//! private endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::DestinationsConfig;
use crate::support::address::HttpUrl;
use crate::support::http::{Egress, Reply, transport_error};
use crate::target::{Blocked, TargetPolicy};

const KIND: &str = "azure_servicebus";

/// How long a SAS token is valid; it is renewed when less than a tenth of this is left.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Request headers a custom property may not replace.
const RESERVED: &[&str] = &[
    "authorization",
    "brokerproperties",
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "user-agent",
    "x-ms-retrypolicy",
];

/// The `azure_servicebus` destination type.
pub struct ServiceBus {
    http: Egress,
}

/// `config` of an `azure_servicebus` destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Queue or topic
    ///
    /// The name of the Service Bus queue or topic to send messages to.
    pub name: String,
    /// Endpoint
    ///
    /// Herald extension: an http(s) URL that replaces https://<namespace> from the connection
    /// string (private endpoints, test servers). Default: the connection string's.
    // Served without a pattern, as before; parsing still requires http(s).
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<HttpUrl>,
}

/// `credentials` of an `azure_servicebus` destination.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Connection string
    ///
    /// The connection string of a shared access policy with Send rights, e.g.
    /// Endpoint=sb://namespace.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=….
    pub connection_string: Secret,
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M4 7h16v10H4z"/><path d="M4 7l8 6 8-6"/></svg>"#;

impl ServiceBus {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        Ok(Self {
            http: Egress::new(cfg)?,
        })
    }
}

impl Spec for ServiceBus {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "Azure Service Bus",
            description: "Send events to an Azure Service Bus queue or topic.",
            icon: ICON,
            instructions: "Create a queue or topic and a shared access policy with Send rights, then \
                paste the policy's connection string. The message body is the event data; id, topic, \
                timestamp, signature and metadata are custom properties, MessageId is the event id.",
        }
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let n = config.name.trim();
        if n.starts_with('/') || n.ends_with('/') || n.contains(char::is_whitespace) {
            errs.push(FieldError::new(
                "config.name",
                format!("{n:?} is not a queue or topic name"),
            ));
        }
        if let Some(e) = &config.endpoint
            && let Err(e) = e.check(&self.http.policy, "config.endpoint")
        {
            errs.push(e);
        }
        match parse_connection_string(credentials.connection_string.expose()) {
            Err(e) => errs.push(FieldError::new("credentials.connection_string", e)),
            // Without an endpoint override the connection string's namespace is the target.
            Ok(cs) if config.endpoint.is_none() => {
                if let Err(Blocked(why)) = self.http.policy.check_url(&cs.base) {
                    errs.push(FieldError::new("credentials.connection_string", why));
                }
            }
            Ok(_) => {}
        }
        errs
    }

    fn build(
        &self,
        _id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        let cs = parse_connection_string(credentials.connection_string.expose())
            .map_err(|e| FieldError::new("credentials.connection_string", e))?;
        let base = config.endpoint.map_or(cs.base, |e| e.0);
        let resource = format!(
            "{}/{}",
            base.as_str().trim_end_matches('/'),
            config.name.trim()
        );
        let url = url::Url::parse(&format!("{resource}/messages"))
            .map_err(|e| FieldError::new("config.name", e.to_string()))?;
        Ok(Arc::new(ServiceBusDriver {
            settings: Settings {
                url,
                resource,
                key_name: cs.key_name,
                key: cs.key,
            },
            token: std::sync::Mutex::new(None),
            client: self.http.client.clone(),
            policy: self.http.policy.clone(),
            body_limit: self.http.body_limit,
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        (config.name.clone(), None)
    }
}

/// The parts of a connection string Herald uses.
struct ConnectionString {
    /// `https://{namespace host}`.
    base: url::Url,
    key_name: String,
    key: Secret,
}

fn parse_connection_string(raw: &str) -> Result<ConnectionString, String> {
    let mut parts = BTreeMap::new();
    for item in raw.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not Key=Value"))?;
        parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let endpoint = parts
        .get("endpoint")
        .ok_or("has no Endpoint=sb://<namespace>.servicebus.windows.net/")?;
    let host = endpoint
        .strip_prefix("sb://")
        .ok_or("Endpoint must start with sb://")?
        .trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err("Endpoint must be sb://<namespace host>/".into());
    }
    let base = url::Url::parse(&format!("https://{host}/"))
        .map_err(|e| format!("Endpoint host {host:?} is not valid: {e}"))?;
    let key_name = parts
        .get("sharedaccesskeyname")
        .filter(|s| !s.is_empty())
        .ok_or("has no SharedAccessKeyName")?
        .clone();
    let key = parts
        .get("sharedaccesskey")
        .filter(|s| !s.is_empty())
        .ok_or("has no SharedAccessKey (Entra ID tokens are not supported)")?;
    let key = Secret::new(key.as_str());
    Ok(ConnectionString {
        base,
        key_name,
        key,
    })
}

/// `encodeURIComponent`, which the SAS algorithm is defined with.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Shared Access Signature for `resource`, valid until `expiry` (Unix seconds):
/// `sig = base64(HMAC-SHA256(key, encode(resource) + "\n" + expiry))`.
pub(crate) fn sas_token(resource: &str, key_name: &str, key: &str, expiry: i64) -> String {
    let encoded = encode_component(resource);
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{encoded}\n{expiry}").as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "SharedAccessSignature sr={encoded}&sig={}&se={expiry}&skn={}",
        encode_component(&sig),
        encode_component(key_name)
    )
}

/// A custom-property value: a JSON string, non-ASCII escaped so it is a valid header value.
fn property_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

struct Settings {
    url: url::Url,
    resource: String,
    key_name: String,
    key: Secret,
}

struct ServiceBusDriver {
    settings: Settings,
    /// The current SAS token and its expiry (Unix seconds).
    token: std::sync::Mutex<Option<(String, i64)>>,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

impl ServiceBusDriver {
    fn token(&self) -> String {
        let now = jiff::Timestamp::now().as_second();
        let margin = (TOKEN_LIFETIME.as_secs() / 10) as i64;
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, expiry)) = cached.as_ref()
            && *expiry - margin > now
        {
            return t.clone();
        }
        let expiry = now + TOKEN_LIFETIME.as_secs() as i64;
        let t = sas_token(
            &self.settings.resource,
            &self.settings.key_name,
            self.settings.key.expose(),
            expiry,
        );
        *cached = Some((t.clone(), expiry));
        t
    }
}

/// Classifies a Service Bus answer: 401 is a bad key; 403 is retried when it reports a full
/// entity (quota) and permanent otherwise (message too large, no Send right); 404/410 (no such
/// queue or topic) and other 4xx are permanent; 429 and 5xx (server busy) are retried.
fn classify(reply: &Reply) -> DeliveryError {
    let text = format!("Service Bus answered HTTP {}", reply.status);
    match reply.status {
        401 => reply.failure(
            false,
            "auth_failed",
            format!("{text}: the connection string's key was refused; not retried"),
        ),
        403 if reply.body.to_ascii_lowercase().contains("quota") => {
            reply.failure(true, "403", format!("{text}: the entity is over its quota"))
        }
        404 | 410 => reply.failure(
            false,
            "not_found",
            format!("{text}: the queue or topic does not exist; not retried"),
        ),
        408 | 429 => reply.failure(true, &reply.status.to_string(), text),
        s if s >= 500 => reply.failure(true, &s.to_string(), text),
        s => reply.failure(false, &s.to_string(), format!("{text}; not retried")),
    }
}

#[async_trait]
impl Driver for ServiceBusDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        if let Err(Blocked(why)) = self.policy.check_url(&self.settings.url) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let broker = json!({
            "MessageId": msg.event_id,
            "Label": msg.topic,
            "ContentType": "application/json",
        });
        let mut req = self
            .client
            .post(self.settings.url.clone())
            .timeout(msg.timeout)
            .header(http::header::AUTHORIZATION, self.token())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("BrokerProperties", broker.to_string());
        for (k, v) in &msg.headers {
            if RESERVED.contains(&k.to_ascii_lowercase().as_str()) {
                continue;
            }
            req = req.header(k.as_str(), property_value(v));
        }
        let resp = req
            .body(msg.body.to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let reply = Reply::read(resp, self.body_limit).await;
        if !(200..300).contains(&reply.status) {
            if reply.status == 401 {
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            return Err(classify(&reply));
        }
        Ok(Receipt {
            code: reply.status.to_string(),
            response: Some(reply.log()),
        })
    }
}

#[cfg(test)]
mod tests {
    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    const CS: &str =
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=abc=";

    fn service_bus() -> Typed<ServiceBus> {
        Typed::new(
            ServiceBus::new(&DestinationsConfig::default()).unwrap(),
            true,
        )
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn schema_keeps_the_contract_fields() {
        let t = service_bus();
        let f: Vec<_> = t
            .spec()
            .config_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.pattern.as_deref()))
            .collect();
        assert_eq!(&f[..2], [("name", true, None), ("endpoint", false, None)]);
        let c: Vec<_> = t
            .spec()
            .credential_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.sensitive))
            .collect();
        assert_eq!(
            &c[..2],
            [
                ("connection_string", true, true),
                ("signing_secret", false, true)
            ]
        );
    }

    #[test]
    fn validation_names_fields() {
        let t = service_bus();
        let errs = t.validate(&map(&[("endpoint", "ftp://x")]), &map(&[]));
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.name",
                "config.endpoint",
                "credentials.connection_string"
            ]
        );
        let errs = t.validate(
            &map(&[("name", "a b")]),
            &map(&[(
                "connection_string",
                "Endpoint=sb://x/;SharedAccessKeyName=a",
            )]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["config.name", "credentials.connection_string"]);
        assert!(
            errs[1].problem.contains("SharedAccessKey"),
            "{}",
            errs[1].problem
        );
        let errs = t.validate(
            &map(&[("name", "q"), ("endpoint", "http://127.0.0.1:8080")]),
            &map(&[("connection_string", CS)]),
        );
        assert_eq!(errs[0].field, "config.endpoint");
        assert!(
            t.validate(&map(&[("name", "q")]), &map(&[("connection_string", CS)]))
                .is_empty()
        );
    }

    #[test]
    fn connection_strings() {
        let c = parse_connection_string(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=abc=",
        )
        .unwrap();
        assert_eq!(c.base.as_str(), "https://ns.servicebus.windows.net/");
        assert_eq!(c.key_name, "Root");
        assert_eq!(c.key.expose(), "abc=");
        assert!(
            parse_connection_string("Endpoint=https://x/;SharedAccessKeyName=a;SharedAccessKey=b")
                .is_err()
        );
        assert!(
            parse_connection_string("Endpoint=sb://x/;SharedAccessKeyName=a")
                .err()
                .unwrap()
                .contains("SharedAccessKey")
        );
    }

    #[test]
    fn property_values_are_json_strings() {
        assert_eq!(property_value("a\"b"), r#""a\"b""#);
        assert_eq!(property_value("é"), r#""\u00e9""#);
    }

    #[test]
    fn sas_token_shape() {
        let t = sas_token(
            "https://ns.servicebus.windows.net/q",
            "Root",
            "key",
            1_700_000_000,
        );
        assert!(t.starts_with(
            "SharedAccessSignature sr=https%3A%2F%2Fns.servicebus.windows.net%2Fq&sig="
        ));
        assert!(t.ends_with("&se=1700000000&skn=Root"));
    }
}

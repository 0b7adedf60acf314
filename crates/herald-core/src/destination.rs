//! What a destination type is, as the rest of Herald sees it: a field schema, validation, and
//! a runtime [`Driver`] that speaks one protocol.
//!
//! A driver only speaks its protocol and classifies errors into retry-or-permanent
//! ([`DeliveryError`]); signing, timeouts, retries, rate limits and bookkeeping belong to the
//! engine. Concrete types live in the `herald-destinations` crate; only the binary knows them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::{Destination, Metadata};

/// The message a driver sends: the event data as body plus headers the engine computed.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// Event id (receivers deduplicate on it).
    pub event_id: String,
    /// Delivery id.
    pub delivery_id: String,
    /// Event topic.
    pub topic: String,
    /// Event time.
    pub time: jiff::Timestamp,
    /// Serialized event data (JSON).
    pub body: bytes_like::Body,
    /// Protocol-neutral headers: signature, id, timestamp, topic and metadata headers.
    pub headers: Vec<(String, String)>,
    /// Event metadata merged with the destination's delivery metadata.
    pub metadata: Metadata,
    /// The per-attempt deadline the engine enforces; drivers may pass it to their client.
    pub timeout: Duration,
}

/// Body bytes shared cheaply between attempts.
pub mod bytes_like {
    /// Reference-counted immutable bytes.
    pub type Body = std::sync::Arc<[u8]>;
}

/// A successful send.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    /// Protocol status, e.g. `200` for HTTP, `ack` for a broker.
    pub code: String,
    /// Response details for the attempt log (`{status_code, headers, body}` for HTTP).
    pub response: Option<Value>,
}

/// What the engine should do after a failed send.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Try again on the schedule; `after` is the receiver's requested minimum delay.
    Retry {
        /// Requested delay (e.g. `Retry-After`), if any.
        after: Option<Duration>,
    },
    /// Do not retry this delivery.
    Permanent,
    /// The target is gone for good (HTTP 410): fail and disable the destination.
    Gone,
}

/// A failed send, classified by the driver.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DeliveryError {
    /// Retry, permanent or gone.
    pub disposition: Disposition,
    /// Status code or error class (`500`, `timeout`, `connect`, `blocked_target`, …).
    pub code: String,
    /// Human-readable reason, recorded on the attempt.
    pub message: String,
    /// Response details, when the peer answered.
    pub response: Option<Value>,
}

impl DeliveryError {
    /// A retryable error without response details.
    pub fn retry(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            disposition: Disposition::Retry { after: None },
            code: code.into(),
            message: message.into(),
            response: None,
        }
    }

    /// A permanent error without response details.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            disposition: Disposition::Permanent,
            code: code.into(),
            message: message.into(),
            response: None,
        }
    }
}

/// A runtime object that sends messages to one destination.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Sends one message. Must not retry internally.
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError>;
}

/// One input field of a destination type, as served by `GET /destination-types`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldSpec {
    /// Key inside `config` or `credentials`.
    pub key: String,
    /// `text`, `checkbox`, `key_value_map` or `select`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Display label.
    pub label: String,
    /// What the field is for.
    pub description: String,
    /// Whether it must be present.
    pub required: bool,
    /// Whether it is secret (masked on read).
    pub sensitive: bool,
    /// Default value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Regex the value must match (HTML5 pattern dialect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// A destination type's description and field schema.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TypeSpec {
    /// Type name, e.g. `webhook`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Display label.
    pub label: String,
    /// One-line description.
    pub description: String,
    /// SVG icon.
    pub icon: String,
    /// Markdown setup instructions.
    pub instructions: String,
    /// Non-secret settings.
    pub config_fields: Vec<FieldSpec>,
    /// Secrets.
    pub credential_fields: Vec<FieldSpec>,
}

/// A validation failure naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// Dotted path, e.g. `config.url`.
    pub field: String,
    /// What is wrong and what would be right.
    pub problem: String,
}

impl FieldError {
    /// Shorthand constructor.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A destination type: schema, validation and driver construction.
pub trait DestinationType: Send + Sync + 'static {
    /// Description and field schema.
    fn spec(&self) -> &TypeSpec;
    /// Type-specific checks beyond the schema's required fields (URL syntax, value ranges).
    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError>;
    /// Builds the runtime sender for a stored destination.
    fn build(&self, destination: &Destination) -> Result<Arc<dyn Driver>, FieldError>;
    /// Human-readable target (e.g. URL host) and a link to it, for API responses.
    fn target(&self, destination: &Destination) -> (String, Option<String>);
    /// The credential holding the secret the engine signs messages with, or `None` when this
    /// type's messages are never signed. Webhooks use `secret`; a type whose protocol already
    /// has a credential of that name (AWS's secret access key) names another field.
    fn signing_secret_key(&self) -> Option<&str> {
        Some("secret")
    }
}

/// Settings every destination type accepts in `config`: the engine applies them, not the
/// driver. Values are decimal integers; empty or absent means the server default.
pub const COMMON_CONFIG_KEYS: [&str; 2] = ["rate_limit_per_minute", "max_in_flight"];

fn common_fields() -> Vec<FieldSpec> {
    let f = |key: &str, label: &str, description: &str| FieldSpec {
        key: key.into(),
        kind: "text".into(),
        label: label.into(),
        description: description.into(),
        required: false,
        sensitive: false,
        default: None,
        pattern: Some("^[0-9]*$".into()),
    };
    vec![
        f(
            "rate_limit_per_minute",
            "Rate limit (per minute)",
            "Herald extension: at most this many deliveries per minute, evenly spaced. Empty: unlimited.",
        ),
        f(
            "max_in_flight",
            "Maximum in flight",
            "Herald extension: at most this many attempts at once to this destination. Empty: the server default.",
        ),
    ]
}

/// Reads a common numeric setting (see [`COMMON_CONFIG_KEYS`]) from a destination's config.
pub fn common_setting(config: &BTreeMap<String, String>, key: &str) -> Option<u32> {
    config
        .get(key)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
}

/// The destination types this binary was built with.
#[derive(Clone, Default)]
pub struct Registry {
    types: BTreeMap<String, Arc<dyn DestinationType>>,
}

impl Registry {
    /// Adds a type (replacing one of the same name).
    pub fn register(&mut self, t: Arc<dyn DestinationType>) {
        self.types.insert(t.spec().kind.clone(), t);
    }

    /// Looks a type up by name.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn DestinationType>> {
        self.types.get(kind)
    }

    /// All types, sorted by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn DestinationType>> {
        self.types.values()
    }

    /// A type's full schema as served to clients: its own fields plus the engine-level
    /// settings every type accepts.
    pub fn spec(&self, kind: &str) -> Option<TypeSpec> {
        let mut spec = self.get(kind)?.spec().clone();
        spec.config_fields.extend(common_fields());
        Some(spec)
    }

    /// Every type's full schema, sorted by name.
    pub fn specs(&self) -> Vec<TypeSpec> {
        self.types.keys().filter_map(|k| self.spec(k)).collect()
    }

    /// Full validation: required fields from the schema, unknown keys, then the type's checks.
    pub fn validate(
        &self,
        kind: &str,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<(), Vec<FieldError>> {
        let Some(t) = self.get(kind) else {
            let known: Vec<_> = self.types.keys().map(String::as_str).collect();
            return Err(vec![FieldError::new(
                "type",
                format!(
                    "unknown destination type {kind:?}; expected one of {}",
                    known.join(", ")
                ),
            )]);
        };
        let spec = t.spec();
        let mut errs = Vec::new();
        for (section, fields, values) in [
            ("config", &spec.config_fields, config),
            ("credentials", &spec.credential_fields, credentials),
        ] {
            for f in fields {
                if f.required && values.get(&f.key).is_none_or(|v| v.trim().is_empty()) {
                    errs.push(FieldError::new(
                        format!("{section}.{}", f.key),
                        "is required",
                    ));
                }
            }
            for key in values.keys() {
                if section == "config" && COMMON_CONFIG_KEYS.contains(&key.as_str()) {
                    let v = &values[key];
                    if !v.trim().is_empty() && v.trim().parse::<u32>().map_or(true, |n| n == 0) {
                        errs.push(FieldError::new(
                            format!("config.{key}"),
                            format!("{v:?} is not a positive whole number"),
                        ));
                    }
                    continue;
                }
                if !fields.iter().any(|f| &f.key == key) {
                    let known: Vec<_> = fields.iter().map(|f| f.key.as_str()).collect();
                    errs.push(FieldError::new(
                        format!("{section}.{key}"),
                        format!(
                            "is not a field of {kind} destinations (known: {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        if errs.is_empty() {
            errs = t.validate(config, credentials);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

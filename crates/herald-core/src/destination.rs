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

use crate::spec::{Delivery, SigningField};
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

/// One choice of a `select` field.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SelectOption {
    /// What the user sees.
    pub label: String,
    /// What is stored.
    pub value: String,
}

/// One input field of a destination type, as served by `GET /destination-types`. Generated
/// from the type's typed structs (see [`crate::spec`]).
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
    /// Whether it is secret: sealed at rest, masked on read (the signing secret excepted).
    pub sensitive: bool,
    /// Default value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Regex the value must match (HTML5 pattern dialect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Shortest accepted text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Longest accepted text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// The choices of a `select` field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<SelectOption>,
    /// Whether the field says where the destination connects (a host, URL or endpoint):
    /// changing it drops stored credentials the request does not send again (marked in the
    /// type's schema with `x-herald-target`; not served).
    #[serde(skip)]
    pub target: bool,
}

/// Which string map of a destination a field lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `config`.
    Config,
    /// `credentials`.
    Credentials,
}

impl Section {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Config => "config",
            Section::Credentials => "credentials",
        }
    }
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
    /// Non-secret settings, the engine-level ones every type accepts included.
    pub config_fields: Vec<FieldSpec>,
    /// Secrets, the signing credentials included.
    pub credential_fields: Vec<FieldSpec>,
    /// The credential holding the signing secret (`secret`, `signing_secret`); `None` for a
    /// type whose messages are never signed. With it come `previous_secret` and
    /// `previous_secret_invalid_at`, managed by rotation.
    pub signing_secret_key: Option<String>,
}

impl TypeSpec {
    /// The fields of one section.
    pub fn fields(&self, section: Section) -> &[FieldSpec] {
        match section {
            Section::Config => &self.config_fields,
            Section::Credentials => &self.credential_fields,
        }
    }

    /// One field.
    pub fn field(&self, section: Section, key: &str) -> Option<&FieldSpec> {
        self.fields(section).iter().find(|f| f.key == key)
    }

    /// The keys of a section that say where the destination connects ([`FieldSpec::target`]).
    pub fn target_keys(&self, section: Section) -> impl Iterator<Item = &str> {
        self.fields(section)
            .iter()
            .filter(|f| f.target)
            .map(|f| f.key.as_str())
    }
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

/// A destination type as the registry, the engine and the API see it. Types implement
/// [`crate::spec::Spec`]; [`crate::spec::Typed`] provides this trait for them.
pub trait DestinationType: Send + Sync + 'static {
    /// Description and full field schema (engine-level and signing fields included).
    fn spec(&self) -> &TypeSpec;
    /// Every key a section accepts.
    fn known_keys(&self, section: Section) -> Vec<&str>;
    /// Every check of stored-form values: parsing into the type's structs, the common
    /// settings, then the type's own checks. Unknown keys are the registry's to report.
    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError>;
    /// Builds the runtime sender for a stored destination.
    fn build(&self, destination: &Destination) -> Result<Arc<dyn Driver>, FieldError>;
    /// The engine-level settings and signing keys of a stored destination.
    fn delivery(&self, destination: &Destination) -> Delivery;
    /// Human-readable target (e.g. URL host) and a link to it, for API responses; never
    /// contains a secret.
    fn target(&self, destination: &Destination) -> (String, Option<String>);
    /// Where this type keeps its signing secret; `None` when its messages are never signed.
    fn signing(&self) -> Option<&SigningField>;
    /// Whether tenants may create destinations of this type (operator destinations may use
    /// every type).
    fn tenant_usable(&self) -> bool {
        true
    }
    /// The credential holding the signing secret (see [`DestinationType::signing`]).
    fn signing_secret_key(&self) -> Option<&str> {
        self.signing().map(|s| s.key)
    }
    /// Whether a client may send `value` — a JSON number, boolean, object or array rather
    /// than the contract's string — for `key`: only where the field's type is that kind.
    fn accepts_native(&self, section: Section, key: &str, value: &serde_json::Value) -> bool;
    /// The display form of a `config` value that embeds a secret; `None`: shown as stored.
    fn redact(&self, key: &str, value: &str) -> Option<String>;
    /// The value to store for a `config` value sent back, keeping masked parts as stored.
    fn unredact(&self, key: &str, sent: &str, stored: &str) -> String;
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

    /// A type's full schema as served to clients.
    pub fn spec(&self, kind: &str) -> Option<TypeSpec> {
        Some(self.get(kind)?.spec().clone())
    }

    /// Every type's full schema, sorted by name.
    pub fn specs(&self) -> Vec<TypeSpec> {
        self.types.values().map(|t| t.spec().clone()).collect()
    }

    /// The engine-level settings of a stored destination (defaults for an unknown type).
    pub fn delivery(&self, d: &Destination) -> Delivery {
        self.get(&d.kind).map(|t| t.delivery(d)).unwrap_or_default()
    }

    /// Full validation: unknown keys (listing every valid key), then the type's checks.
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
        let mut errs = Vec::new();
        for (section, values) in [
            (Section::Config, config),
            (Section::Credentials, credentials),
        ] {
            let known = t.known_keys(section);
            for key in values.keys() {
                if !known.contains(&key.as_str()) {
                    errs.push(FieldError::new(
                        format!("{}.{key}", section.as_str()),
                        format!(
                            "is not a field of {kind} destinations (valid: {})",
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

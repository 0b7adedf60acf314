//! The domain records: tenants, destinations, events, deliveries and attempts.
//!
//! These are storage-neutral and wire-neutral: the API crate maps them to the Outpost JSON
//! shapes, the store crate maps them to rows.

use jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

use crate::topic;

/// String key/value pairs (tenant, destination and event metadata).
pub type Metadata = BTreeMap<String, String>;

/// One customer of the platform. Its id is chosen by the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Platform-chosen id.
    pub id: String,
    /// Free-form metadata; `None` when never set.
    pub metadata: Option<Metadata>,
    /// When the tenant was first upserted.
    pub created_at: Timestamp,
    /// When the tenant was last upserted.
    pub updated_at: Timestamp,
    /// When its tokens were last revoked (`POST /tenants/{id}/tokens/revoke`); `None` if never.
    pub tokens_revoked_at: Option<Timestamp>,
}

impl Tenant {
    /// The generation tenant tokens carry: the instant this tenant was created, or its
    /// tokens last revoked, in microseconds. A token of an older generation — issued before a
    /// revocation, or to an earlier tenant of the same id that was deleted — is refused.
    pub fn token_generation(&self) -> i64 {
        let at = self.tokens_revoked_at.unwrap_or(self.created_at);
        at.as_microsecond()
    }
}

/// A tenant plus the figures derived from its destinations.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSummary {
    /// The tenant itself.
    pub tenant: Tenant,
    /// How many destinations it has.
    pub destinations_count: u64,
    /// The union of its destinations' topics, sorted.
    pub topics: Vec<String>,
}

/// The topics a destination subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    /// `"*"`: every topic, present and future.
    All,
    /// An explicit list; entries may contain `*` wildcards.
    List(Vec<String>),
}

impl Topics {
    /// Whether an event with `topic` is covered by this subscription.
    pub fn matches(&self, event_topic: &str) -> bool {
        match self {
            Topics::All => true,
            Topics::List(list) => list.iter().any(|p| topic::pattern_matches(p, event_topic)),
        }
    }

    /// The subscription as a list of strings (`["*"]` for [`Topics::All`]).
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Topics::All => vec!["*".to_string()],
            Topics::List(l) => l.clone(),
        }
    }
}

/// Where a tenant wants its events delivered.
#[derive(Clone, PartialEq)]
pub struct Destination {
    /// Generated (`des_…`) or user-provided id; unique within the whole service.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Destination type (`webhook`, `rabbitmq`, …). Never changes after creation.
    pub kind: String,
    /// Subscribed topics.
    pub topics: Topics,
    /// Payload filter (see [`crate::filter`]); `None` matches everything.
    pub filter: Option<Value>,
    /// Type-specific settings in the contract's string form, parsed by the type's typed spec
    /// (`herald_core::spec`). A value may embed a secret (URL userinfo, a credential header):
    /// never logged; see the manual `Debug` impl.
    pub config: BTreeMap<String, String>,
    /// Type-specific secrets. Never logged; see the manual `Debug` impl.
    pub credentials: BTreeMap<String, String>,
    /// Static pairs merged into event metadata on every attempt.
    pub delivery_metadata: Option<Metadata>,
    /// Free-form metadata stored with the destination.
    pub metadata: Option<Metadata>,
    /// When the destination was disabled; `None` while enabled.
    pub disabled_at: Option<Timestamp>,
    /// When the subscription ends (Herald extension): from then on it receives nothing new
    /// and its pending deliveries stop. `None`: it never expires.
    pub expires_at: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change time.
    pub updated_at: Timestamp,
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Config and credentials are deliberately reduced to their key names: secrets never
        // reach logs (a config value may embed one: URL userinfo, an Authorization header).
        f.debug_struct("Destination")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("kind", &self.kind)
            .field("topics", &self.topics)
            .field("filter", &self.filter)
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("disabled_at", &self.disabled_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// Whether the destination is enabled.
    pub fn is_enabled(&self) -> bool {
        self.disabled_at.is_none()
    }

    /// Whether the subscription has ended at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Whether the destination takes deliveries at `now`: enabled and not expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.is_enabled() && !self.is_expired(now)
    }

    /// Whether `event` should be delivered here: enabled, topic subscribed, filter matches,
    /// and — for an event aimed at one destination — this is that destination.
    pub fn accepts(&self, event: &Event) -> bool {
        if !self.is_enabled() || event.tenant_id != self.tenant_id {
            return false;
        }
        if let Some(target) = &event.destination_id
            && target != &self.id
        {
            return false;
        }
        self.topics.matches(&event.topic) && self.filter_matches(event)
    }

    /// Whether the payload filter (if any) matches the event.
    pub fn filter_matches(&self, event: &Event) -> bool {
        match &self.filter {
            None => true,
            Some(f) => crate::filter::matches(f, &event.filter_document()),
        }
    }
}

/// An event as published by the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event id; also the idempotency key.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// When set, the event goes to this destination only.
    pub destination_id: Option<String>,
    /// Event topic, e.g. `user.created`.
    pub topic: String,
    /// Event time (given by the publisher or the time it was accepted).
    pub time: Timestamp,
    /// String metadata.
    pub metadata: Metadata,
    /// JSON object payload.
    pub data: Value,
    /// Whether failed deliveries are retried on the schedule.
    pub eligible_for_retry: bool,
}

impl Event {
    /// The document filters are matched against: `{id, topic, time, metadata, data}`.
    pub fn filter_document(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "topic": self.topic,
            "time": self.time.to_string(),
            "metadata": self.metadata,
            "data": self.data,
        })
    }
}

/// The state of a delivery (one event owed to one destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt succeeded.
    Success,
    /// Gave up: permanent error, retries exhausted or not eligible for retry.
    Failed,
    /// Stopped without a final attempt (destination disabled or deleted).
    Cancelled,
}

impl DeliveryStatus {
    /// The stored / displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "success" => Self::Success,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// One event owed to one destination: the unit that is retried and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Stable id (`dlv_…`), sent to receivers so they can deduplicate.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// The event's tenant.
    pub tenant_id: String,
    /// The destination.
    pub destination_id: String,
    /// Current state.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (meaningful while pending).
    pub next_attempt_at: Timestamp,
    /// Whether this delivery was created by a manual retry.
    pub manual: bool,
    /// Attempts made before the current retry schedule started (a bulk replay restarts the
    /// schedule while attempt numbers keep counting).
    pub retry_base: u32,
    /// Creation time.
    pub created_at: Timestamp,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptStatus {
    /// The destination accepted the message.
    Success,
    /// It did not.
    Failed,
}

impl AttemptStatus {
    /// The wire / stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Attempt id (`atm_…`).
    pub id: String,
    /// The delivery this attempt belongs to.
    pub delivery_id: String,
    /// The event's tenant.
    pub tenant_id: String,
    /// The event.
    pub event_id: String,
    /// The destination.
    pub destination_id: String,
    /// The destination's type at the time of the attempt.
    pub destination_type: String,
    /// The event's topic (denormalised for filtering).
    pub topic: String,
    /// Success or failure.
    pub status: AttemptStatus,
    /// HTTP status code, or an error class such as `timeout`, `connection_refused`.
    pub code: String,
    /// Response details: `{status_code, headers, body}` or `{error}`; body capped.
    pub response_data: Option<Value>,
    /// 1 for the first attempt of a delivery.
    pub attempt_number: u32,
    /// Whether a user triggered it (manual retry).
    pub manual: bool,
    /// When the attempt started.
    pub time: Timestamp,
    /// Wall time the attempt took, in milliseconds.
    pub latency_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_config_or_credential_values() {
        let d = Destination {
            id: "des_1".into(),
            tenant_id: "t".into(),
            kind: "webhook".into(),
            topics: Topics::All,
            filter: None,
            config: [(
                "url".to_string(),
                "https://u:url-password@example.com/".to_string(),
            )]
            .into(),
            credentials: [("secret".to_string(), "whsec_credential".to_string())].into(),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        let shown = format!("{d:?}");
        assert!(shown.contains("url") && shown.contains("secret"), "{shown}");
        assert!(!shown.contains("url-password"), "{shown}");
        assert!(!shown.contains("whsec_credential"), "{shown}");
    }
}

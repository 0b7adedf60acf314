//! Operator events: Herald's own stream about the deployment (a destination that keeps
//! failing, one that was disabled, a delivery that ran out of retries, a tenant whose
//! subscription changed, every attempt when asked for), as opposed to a tenant's traffic.
//!
//! An operator event is an ordinary [`Event`] owned by the reserved tenant
//! [`OPERATOR_TENANT`]; operator destinations are ordinary destinations of that tenant. The
//! store writes an operator event, and one delivery per subscribed operator destination, in
//! the same transaction as its cause; the engine then delivers it like any other event
//! (signing, retries, attempt records, rate limits). This module is the one place that knows
//! the topics, the payloads and the failure levels; it does no I/O.
//!
//! The event's `data` is the envelope a receiver gets as the request body:
//! `{"id", "topic", "time", "tenant_id"?, "data": {…topic-specific…}}` — the shape Outpost's
//! operator events use, so `topic` and `data` sit at the top of the body.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{Delivery, DeliveryStatus, Destination, Event, Metadata, Topics, ids};

/// The tenant that owns operator destinations and operator events. The tenant API never lists
/// it and refuses it as an id; only `/api/v1/operator-events/…` reaches its records.
pub const OPERATOR_TENANT: &str = "_herald_operator";

/// Prefix of generated operator event ids.
pub const ID_PREFIX: &str = "opr";

/// Every operator topic, with what makes it fire.
pub mod topic {
    /// A destination's consecutive failures reached 50, 70, 90 or 100 % of the threshold.
    pub const CONSECUTIVE_FAILURE: &str = "alert.destination.consecutive_failure";
    /// A destination was disabled automatically (failure threshold, or `410 Gone`).
    pub const DESTINATION_DISABLED: &str = "alert.destination.disabled";
    /// A delivery failed for good after its last scheduled retry.
    pub const EXHAUSTED_RETRIES: &str = "alert.attempt.exhausted_retries";
    /// Every successful attempt (only written while an operator destination subscribes).
    pub const ATTEMPT_SUCCESS: &str = "attempt.success";
    /// Every failed attempt, retries included (only while an operator destination subscribes).
    pub const ATTEMPT_FAILED: &str = "attempt.failed";
    /// A destination was created, changed or deleted and the tenant's topics or destination
    /// count changed.
    pub const SUBSCRIPTION_UPDATED: &str = "tenant.subscription.updated";
    /// A destination will expire soon (emitted by the expiry check).
    pub const DESTINATION_EXPIRING: &str = "destination.expiring";
    /// A destination expired (emitted by the expiry check).
    pub const DESTINATION_EXPIRED: &str = "destination.expired";

    /// Every operator topic, in documentation order.
    pub const ALL: [&str; 8] = [
        CONSECUTIVE_FAILURE,
        DESTINATION_DISABLED,
        EXHAUSTED_RETRIES,
        ATTEMPT_SUCCESS,
        ATTEMPT_FAILED,
        SUBSCRIPTION_UPDATED,
        DESTINATION_EXPIRING,
        DESTINATION_EXPIRED,
    ];

    /// The three alert topics (what `alerts.callback_url` receives).
    pub const ALERTS: [&str; 3] = [CONSECUTIVE_FAILURE, DESTINATION_DISABLED, EXHAUSTED_RETRIES];
}

/// Whether `t` is an operator topic.
pub fn is_topic(t: &str) -> bool {
    topic::ALL.contains(&t)
}

/// Levels (percent of the threshold) at which a consecutive-failure alert fires.
pub const LEVELS: [u32; 4] = [50, 70, 90, 100];

/// When consecutive failures raise alerts and disable a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Consecutive failed attempts that count as 100 %; 0 turns alerts and auto-disable off.
    pub threshold: u32,
    /// Disable a destination when it reaches the threshold.
    pub auto_disable: bool,
}

impl FailurePolicy {
    /// No alerts, no auto-disable.
    pub const OFF: FailurePolicy = FailurePolicy {
        threshold: 0,
        auto_disable: false,
    };

    /// Which level, if any, `failures` consecutive failures has just reached.
    pub fn step(&self, failures: u32) -> FailureStep {
        let t = self.threshold;
        if t == 0 || failures == 0 {
            return FailureStep {
                level: None,
                disable: false,
            };
        }
        // Each level fires at one exact count, so it fires once per streak; when levels round
        // to the same count (small thresholds) the highest one is reported.
        let level = LEVELS
            .into_iter()
            .rev()
            .find(|p| failures == (t * p).div_ceil(100).max(1));
        FailureStep {
            level,
            disable: self.auto_disable && failures == t,
        }
    }
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            threshold: 100,
            auto_disable: true,
        }
    }
}

/// What reaching a failure count means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureStep {
    /// The level reached by exactly this count, if any.
    pub level: Option<u32>,
    /// Whether the destination must now be disabled.
    pub disable: bool,
}

/// The parts of a destination an operator payload names (no config, no credentials).
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRef {
    /// Destination id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its type.
    pub kind: String,
    /// Its topics.
    pub topics: Topics,
    /// When it was disabled, if it is.
    pub disabled_at: Option<Timestamp>,
}

impl From<&Destination> for DestinationRef {
    fn from(d: &Destination) -> Self {
        Self {
            id: d.id.clone(),
            tenant_id: d.tenant_id.clone(),
            kind: d.kind.clone(),
            topics: d.topics.clone(),
            disabled_at: d.disabled_at,
        }
    }
}

fn ts(t: Timestamp) -> String {
    // The wire format every timestamp of the API uses (RFC 3339, UTC).
    t.to_string()
}

fn destination_json(d: &DestinationRef) -> Value {
    json!({
        "id": d.id,
        "tenant_id": d.tenant_id,
        "type": d.kind,
        "topics": d.topics.to_vec(),
        "disabled_at": d.disabled_at.map(ts),
    })
}

/// An operator event for `topic` about `tenant_id` (absent for deployment-wide events), with
/// the topic's payload `data`, wrapped in the envelope (module docs).
pub fn event(topic: &str, tenant_id: Option<&str>, data: Value, now: Timestamp) -> Event {
    event_with_id(ids::new_id(ID_PREFIX), topic, tenant_id, data, now)
}

/// Like [`event`] with a given id: a caller that may emit the same notice on several nodes
/// (expiry checks) derives the id from what it reports, and the store writes it once.
pub fn event_with_id(
    id: String,
    topic: &str,
    tenant_id: Option<&str>,
    data: Value,
    now: Timestamp,
) -> Event {
    let mut envelope = json!({
        "id": id,
        "topic": topic,
        "time": ts(now),
        "data": data,
    });
    if let Some(t) = tenant_id {
        envelope["tenant_id"] = Value::String(t.to_string());
    }
    Event {
        id,
        tenant_id: OPERATOR_TENANT.to_string(),
        destination_id: None,
        topic: topic.to_string(),
        time: now,
        metadata: Metadata::new(),
        data: envelope,
        eligible_for_retry: true,
    }
}

/// Whether an operator destination with these settings receives `event`.
pub fn subscribes(topics: &Topics, filter: Option<&Value>, event: &Event) -> bool {
    topics.matches(&event.topic)
        && filter.is_none_or(|f| crate::filter::matches(f, &event.filter_document()))
}

/// The delivery of an operator event to one operator destination, due at once.
pub fn delivery(event: &Event, destination_id: &str, now: Timestamp) -> Delivery {
    Delivery {
        id: ids::new_id(ids::DELIVERY),
        event_id: event.id.clone(),
        tenant_id: OPERATOR_TENANT.to_string(),
        destination_id: destination_id.to_string(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        manual: false,
        retry_base: 0,
        created_at: now,
    }
}

/// `alert.destination.consecutive_failure`.
pub fn consecutive_failure(
    d: &DestinationRef,
    failures: u32,
    policy: &FailurePolicy,
    level: u32,
    will_disable: bool,
    now: Timestamp,
) -> Event {
    event(
        topic::CONSECUTIVE_FAILURE,
        Some(&d.tenant_id),
        json!({
            "tenant_id": d.tenant_id,
            "destination": destination_json(d),
            "consecutive_failures": failures,
            "max_consecutive_failures": policy.threshold,
            "progress": level,
            "will_disable": will_disable,
        }),
        now,
    )
}

/// `alert.destination.disabled`; `d` is the destination after it was disabled.
pub fn disabled(d: &DestinationRef, reason: &str, now: Timestamp) -> Event {
    event(
        topic::DESTINATION_DISABLED,
        Some(&d.tenant_id),
        json!({
            "tenant_id": d.tenant_id,
            "destination": destination_json(d),
            "reason": reason,
            "disabled_at": d.disabled_at.map(ts),
        }),
        now,
    )
}

/// The attempt fields operator payloads carry.
fn attempt_json(a: &crate::Attempt) -> Value {
    json!({
        "id": a.id,
        "delivery_id": a.delivery_id,
        "attempt_number": a.attempt_number,
        "status": a.status.as_str(),
        "code": a.code,
        "manual": a.manual,
        "time": ts(a.time),
        "latency_ms": a.latency_ms,
    })
}

/// `alert.attempt.exhausted_retries`: `attempt` was the last scheduled one.
pub fn exhausted(d: &DestinationRef, attempt: &crate::Attempt, event_time: Timestamp) -> Event {
    event(
        topic::EXHAUSTED_RETRIES,
        Some(&d.tenant_id),
        json!({
            "tenant_id": d.tenant_id,
            "destination": destination_json(d),
            "event": {"id": attempt.event_id, "topic": attempt.topic, "time": ts(event_time)},
            "attempt": attempt_json(attempt),
        }),
        attempt.time,
    )
}

/// `attempt.success` or `attempt.failed`, by the attempt's status.
pub fn attempt(a: &crate::Attempt) -> Event {
    let t = match a.status {
        crate::AttemptStatus::Success => topic::ATTEMPT_SUCCESS,
        crate::AttemptStatus::Failed => topic::ATTEMPT_FAILED,
    };
    event(
        t,
        Some(&a.tenant_id),
        json!({
            "tenant_id": a.tenant_id,
            "destination_id": a.destination_id,
            "destination_type": a.destination_type,
            "event_id": a.event_id,
            "topic": a.topic,
            "attempt": attempt_json(a),
        }),
        a.time,
    )
}

/// A tenant's subscription: the union of its destinations' topics and how many it has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Sorted, without duplicates.
    pub topics: Vec<String>,
    /// Destinations of the tenant.
    pub destinations_count: u64,
}

/// `tenant.subscription.updated`, when `before` and `after` differ.
pub fn subscription_updated(
    tenant_id: &str,
    before: &Subscription,
    after: &Subscription,
    now: Timestamp,
) -> Option<Event> {
    if before == after || tenant_id == OPERATOR_TENANT {
        return None;
    }
    Some(event(
        topic::SUBSCRIPTION_UPDATED,
        Some(tenant_id),
        json!({
            "tenant_id": tenant_id,
            "topics": after.topics,
            "destinations_count": after.destinations_count,
            "previous_topics": before.topics,
            "previous_destinations_count": before.destinations_count,
        }),
        now,
    ))
}

/// `destination.expiring` (`expired == false`) or `destination.expired`. The id is derived
/// from the destination and its expiry, so every node that notices the same expiry emits the
/// same event and the store keeps one.
pub fn expiry(d: &DestinationRef, expires_at: Timestamp, expired: bool, now: Timestamp) -> Event {
    let (t, tag) = if expired {
        (topic::DESTINATION_EXPIRED, "expired")
    } else {
        (topic::DESTINATION_EXPIRING, "expiring")
    };
    event_with_id(
        format!("{ID_PREFIX}_{tag}_{}_{}", d.id, expires_at.as_microsecond()),
        t,
        Some(&d.tenant_id),
        json!({
            "tenant_id": d.tenant_id,
            "destination": destination_json(d),
            "expires_at": ts(expires_at),
        }),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_fire_once_each_and_disable_at_threshold() {
        let cfg = FailurePolicy {
            threshold: 10,
            auto_disable: true,
        };
        let fired: Vec<_> = (1..=12)
            .filter_map(|n| cfg.step(n).level.map(|l| (n, l)))
            .collect();
        assert_eq!(fired, [(5, 50), (7, 70), (9, 90), (10, 100)]);
        assert!(cfg.step(10).disable);
        assert!(!cfg.step(9).disable && !cfg.step(11).disable);
        assert_eq!(
            FailurePolicy::OFF.step(100),
            FailureStep {
                level: None,
                disable: false
            }
        );
        let no_disable = FailurePolicy {
            auto_disable: false,
            ..cfg
        };
        assert!(!no_disable.step(10).disable);
        let tiny = FailurePolicy {
            threshold: 1,
            auto_disable: true,
        };
        assert_eq!(
            tiny.step(1).level,
            Some(100),
            "levels that round to the same count report the highest"
        );
        assert_eq!(cfg.step(0).level, None, "a success is no level");
    }

    #[test]
    fn the_envelope_carries_topic_time_tenant_and_data() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let e = event(topic::CONSECUTIVE_FAILURE, Some("t1"), json!({"x": 1}), now);
        assert_eq!(e.tenant_id, OPERATOR_TENANT);
        assert_eq!(e.data["id"], e.id.as_str());
        assert_eq!(e.data["topic"], topic::CONSECUTIVE_FAILURE);
        assert_eq!(e.data["tenant_id"], "t1");
        assert_eq!(e.data["time"], "2023-11-14T22:13:20Z");
        assert_eq!(e.data["data"]["x"], 1);
        assert!(e.id.starts_with("opr_"));
        let d = event(topic::SUBSCRIPTION_UPDATED, None, json!({}), now);
        assert!(d.data.get("tenant_id").is_none());
    }

    #[test]
    fn subscription_updates_only_on_change() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let a = Subscription {
            topics: vec!["a".into()],
            destinations_count: 1,
        };
        assert!(subscription_updated("t", &a, &a, now).is_none());
        let b = Subscription {
            topics: vec!["a".into(), "b".into()],
            destinations_count: 2,
        };
        let e = subscription_updated("t", &a, &b, now).unwrap();
        assert_eq!(e.data["data"]["topics"], json!(["a", "b"]));
        assert_eq!(e.data["data"]["previous_destinations_count"], 1);
        assert!(subscription_updated(OPERATOR_TENANT, &a, &b, now).is_none());
    }

    #[test]
    fn expiry_ids_are_stable() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let d = DestinationRef {
            id: "d1".into(),
            tenant_id: "t".into(),
            kind: "webhook".into(),
            topics: Topics::All,
            disabled_at: None,
        };
        let a = expiry(&d, now, false, now);
        let b = expiry(&d, now, false, now + jiff::SignedDuration::from_secs(5));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, expiry(&d, now, true, now).id);
        assert_eq!(a.topic, topic::DESTINATION_EXPIRING);
    }
}

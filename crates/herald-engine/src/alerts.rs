//! Operator events: signed HTTP notifications to a sink the operator configures, about
//! destinations that keep failing and deliveries that ran out of retries.
//!
//! Topics: `alert.destination.consecutive_failure` (at 50, 70, 90 and 100 % of the
//! threshold), `alert.destination.disabled` (auto-disable at 100 %), and
//! `alert.attempt.exhausted_retries` (at most once per destination per window). Alerts are
//! best effort: a few in-memory retries, then a log line. They are never stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::secret::REDACTED;
use herald_core::signing::{self, SigningConfig};
use herald_core::{Attempt, Destination, Event, ids};
use jiff::Timestamp;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Alert settings.
#[derive(Clone)]
pub struct AlertConfig {
    /// Where alerts are POSTed; `None` logs them only.
    pub callback_url: Option<String>,
    /// Standard Webhooks secret (`whsec_…`) used to sign alerts; `None` sends them unsigned.
    pub secret: Option<herald_core::Secret>,
    /// Consecutive failed attempts that count as 100 %; 0 turns failure alerts off.
    pub consecutive_failure_threshold: u32,
    /// Disable a destination when it reaches the threshold.
    pub auto_disable: bool,
    /// At most one exhausted-retries alert per destination within this window.
    pub exhausted_retries_window: Duration,
}

impl std::fmt::Debug for AlertConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The callback URL may carry credentials and the secret signs: neither is printed.
        f.debug_struct("AlertConfig")
            .field(
                "callback_url",
                &self.callback_url.as_ref().map(|_| REDACTED),
            )
            .field("secret", &self.secret.as_ref().map(|s| s.redacted()))
            .field(
                "consecutive_failure_threshold",
                &self.consecutive_failure_threshold,
            )
            .field("auto_disable", &self.auto_disable)
            .field("exhausted_retries_window", &self.exhausted_retries_window)
            .finish()
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            callback_url: None,
            secret: None,
            consecutive_failure_threshold: 100,
            auto_disable: true,
            exhausted_retries_window: Duration::from_secs(3600),
        }
    }
}

/// Levels (percent of the threshold) at which a consecutive-failure alert fires.
const LEVELS: [u32; 4] = [50, 70, 90, 100];

/// What crossing a failure count means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailureStep {
    /// The level crossed by exactly this count, if any.
    pub level: Option<u32>,
    /// Whether the destination must now be disabled.
    pub disable: bool,
}

impl AlertConfig {
    /// Which level, if any, `failures` consecutive failures has just reached.
    pub(crate) fn step(&self, failures: u32) -> FailureStep {
        let t = self.consecutive_failure_threshold;
        if t == 0 {
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

/// Sends operator events.
pub(crate) struct Alerts {
    cfg: AlertConfig,
    client: reqwest::Client,
    last_exhausted: Mutex<HashMap<String, Instant>>,
}

fn destination_json(d: &Destination) -> Value {
    json!({
        "id": d.id,
        "tenant_id": d.tenant_id,
        "type": d.kind,
        "topics": d.topics.to_vec(),
        "disabled_at": d.disabled_at.map(|t| t.to_string()),
    })
}

impl Alerts {
    pub(crate) fn new(cfg: AlertConfig) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            cfg,
            client,
            last_exhausted: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn config(&self) -> &AlertConfig {
        &self.cfg
    }

    /// A consecutive-failure level was reached.
    pub(crate) fn consecutive_failure(
        self: &Arc<Self>,
        d: &Destination,
        failures: u32,
        level: u32,
        will_disable: bool,
    ) {
        self.send(
            "alert.destination.consecutive_failure",
            json!({
                "tenant_id": d.tenant_id,
                "destination": destination_json(d),
                "consecutive_failures": failures,
                "max_consecutive_failures": self.cfg.consecutive_failure_threshold,
                "progress": level,
                "will_disable": will_disable,
            }),
        );
    }

    /// A destination was disabled automatically.
    pub(crate) fn disabled(self: &Arc<Self>, d: &Destination, reason: &str) {
        self.send(
            "alert.destination.disabled",
            json!({"tenant_id": d.tenant_id, "destination": destination_json(d), "reason": reason}),
        );
    }

    /// A delivery failed for good after its last scheduled retry.
    pub(crate) fn exhausted(self: &Arc<Self>, d: &Destination, event: &Event, attempt: &Attempt) {
        {
            let mut last = self.last_exhausted.lock();
            let now = Instant::now();
            if let Some(t) = last.get(&d.id)
                && now.duration_since(*t) < self.cfg.exhausted_retries_window
            {
                return;
            }
            last.insert(d.id.clone(), now);
        }
        self.send(
            "alert.attempt.exhausted_retries",
            json!({
                "tenant_id": d.tenant_id,
                "destination": destination_json(d),
                "event": {"id": event.id, "topic": event.topic, "time": event.time.to_string()},
                "attempt": {"id": attempt.id, "attempt_number": attempt.attempt_number, "code": attempt.code},
            }),
        );
    }

    fn send(self: &Arc<Self>, topic: &'static str, data: Value) {
        tracing::warn!(alert = topic, data = %data, "operator alert");
        let Some(url) = self.cfg.callback_url.clone() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let id = ids::new_id("alt");
            let body = serde_json::to_vec(&json!({
                "topic": topic,
                "timestamp": Timestamp::now().to_string(),
                "data": data,
            }))
            .unwrap_or_default();
            for attempt in 0..3u32 {
                let now = Timestamp::now();
                let metadata = Default::default();
                let msg = signing::Message {
                    event_id: &id,
                    topic,
                    timestamp: now,
                    body: &body,
                    metadata: &metadata,
                };
                let secrets = signing::Secrets {
                    current: this.cfg.secret.as_ref().map(herald_core::Secret::expose),
                    previous: None,
                };
                let mut req = this
                    .client
                    .post(&url)
                    .header("content-type", "application/json");
                for (k, v) in signing::headers(&SigningConfig::default(), &msg, &secrets, now) {
                    req = req.header(k, v);
                }
                match req.body(body.clone()).send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => tracing::warn!(
                        alert = topic,
                        status = r.status().as_u16(),
                        "alert sink refused the alert"
                    ),
                    Err(e) => {
                        tracing::warn!(alert = topic, error = %e, "cannot reach the alert sink")
                    }
                }
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
            }
            tracing::error!(alert = topic, "alert dropped after 3 tries");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_fire_once_each_and_disable_at_threshold() {
        let cfg = AlertConfig {
            consecutive_failure_threshold: 10,
            ..Default::default()
        };
        let fired: Vec<_> = (1..=12)
            .filter_map(|n| cfg.step(n).level.map(|l| (n, l)))
            .collect();
        assert_eq!(fired, [(5, 50), (7, 70), (9, 90), (10, 100)]);
        assert!(cfg.step(10).disable);
        assert!(!cfg.step(9).disable && !cfg.step(11).disable);
        let off = AlertConfig {
            consecutive_failure_threshold: 0,
            ..Default::default()
        };
        assert_eq!(
            off.step(100),
            FailureStep {
                level: None,
                disable: false
            }
        );
        let no_disable = AlertConfig {
            auto_disable: false,
            ..cfg
        };
        assert!(!no_disable.step(10).disable);
        let tiny = AlertConfig {
            consecutive_failure_threshold: 1,
            ..Default::default()
        };
        assert_eq!(
            tiny.step(1).level,
            Some(100),
            "levels that round to the same count report the highest"
        );
    }
}

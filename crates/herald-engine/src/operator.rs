//! The engine's side of operator events (topics and payloads: [`herald_core::operator`]).
//!
//! Operator events are not sent from here: the store writes them in the transaction of their
//! cause, with deliveries to the subscribed operator destinations, and the dispatcher delivers
//! those like any other. What the engine keeps is what it decides before recording an attempt:
//! the failure policy it passes to the store, the per-node window that limits exhausted-retries
//! alerts, and whether any operator destination wants `attempt.*` events (a flag the routing
//! table keeps current, so those events cost nothing while nobody subscribes).

use std::collections::HashMap;
use std::time::Duration;

use herald_core::operator::FailurePolicy;
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;

/// Alert settings.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Consecutive failed attempts that count as 100 %; 0 turns failure alerts off.
    pub consecutive_failure_threshold: u32,
    /// Disable a destination when it reaches the threshold.
    pub auto_disable: bool,
    /// At most one exhausted-retries alert per destination within this window (per node).
    pub exhausted_retries_window: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            consecutive_failure_threshold: 100,
            auto_disable: true,
            exhausted_retries_window: Duration::from_secs(3600),
        }
    }
}

impl AlertConfig {
    /// The policy the store applies to failure streaks.
    pub fn policy(&self) -> FailurePolicy {
        FailurePolicy {
            threshold: self.consecutive_failure_threshold,
            auto_disable: self.auto_disable,
        }
    }
}

/// Per-node limit of one exhausted-retries alert per destination per window, on the engine's
/// clock. It is a throttle, not state: after a restart the first one goes out again.
pub(crate) struct ExhaustedWindow {
    window: SignedDuration,
    /// Last alert per destination, by (tenant, id).
    last: Mutex<HashMap<(String, String), Timestamp>>,
}

impl ExhaustedWindow {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window: SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an alert for a tenant's `destination_id` may go out at `now` (and notes it if
    /// so).
    pub(crate) fn admit(&self, tenant_id: &str, destination_id: &str, now: Timestamp) -> bool {
        let key = (tenant_id.to_string(), destination_id.to_string());
        let mut last = self.last.lock();
        if let Some(t) = last.get(&key)
            && now.duration_since(*t) < self.window
        {
            return false;
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_exhausted_alert_per_destination_per_window() {
        let w = ExhaustedWindow::new(Duration::from_secs(60));
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        assert!(w.admit("t", "d1", t0));
        assert!(!w.admit("t", "d1", t0 + SignedDuration::from_secs(59)));
        assert!(w.admit("t", "d2", t0), "per destination");
        assert!(
            w.admit("u", "d1", t0),
            "per tenant: another tenant's d1 is another destination"
        );
        assert!(w.admit("t", "d1", t0 + SignedDuration::from_secs(60)));
    }
}

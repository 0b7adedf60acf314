//! Subscription expiry: destinations with an `expires_at` stop receiving (routing and the
//! dispatcher ask [`Destination::is_active`] with the engine's clock), and each expiry is
//! announced exactly once — `destination.expiring` a configurable lead time before, and
//! `destination.expired` once it has passed — however many nodes look.
//!
//! Once per check every destination with an expiry is looked at; a notice that is due is
//! claimed with [`Store::mark_expiry_notice`], a compare-and-set in the store, and only the
//! caller that wins produces it ([`announce`]). Claiming `expired` also cancels the
//! destination's pending deliveries in the same transaction. A renewal (a new `expires_at`)
//! starts a new round. Time is the engine's [`herald_core::Clock`]: tests advance a
//! `ManualClock` and call [`crate::Engine::check_expiry`].

use std::collections::HashMap;

use herald_core::Destination;
use herald_store::ExpiryLevel;
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;

use crate::Inner;

/// What one check produced (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Destinations whose `destination.expiring` notice this node produced.
    pub expiring: Vec<String>,
    /// Destinations whose `destination.expired` notice this node produced.
    pub expired: Vec<String>,
}

/// Levels already settled on this node, per (destination, expiry): saves a store round trip
/// per destination and check once a notice is out (produced here or by another node).
#[derive(Default)]
pub(crate) struct Settled(Mutex<HashMap<(String, Timestamp), ExpiryLevel>>);

/// Checks on an interval until the engine stops.
pub(crate) async fn run(inner: std::sync::Arc<Inner>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.config.expiry_check_interval) => {}
            _ = inner.stopping.cancelled() => return,
        }
        check(&inner).await;
    }
}

/// One check of every destination with an expiry.
pub(crate) async fn check(inner: &Inner) -> ExpiryReport {
    let now = inner.clock.now();
    let lead =
        SignedDuration::try_from(inner.config.expiring_notice_lead).unwrap_or(SignedDuration::ZERO);
    let mut report = ExpiryReport::default();
    for d in inner.routes.all() {
        let Some(expires_at) = d.expires_at else {
            continue;
        };
        let due = if now >= expires_at {
            ExpiryLevel::Expired
        } else if now >= expires_at - lead {
            ExpiryLevel::Expiring
        } else {
            continue;
        };
        let key = (d.id.clone(), expires_at);
        for level in [ExpiryLevel::Expiring, ExpiryLevel::Expired] {
            if level > due
                || inner
                    .expiry
                    .0
                    .lock()
                    .get(&key)
                    .is_some_and(|done| *done >= level)
            {
                continue;
            }
            match inner
                .store
                .mark_expiry_notice(&d.id, expires_at, level, now)
                .await
            {
                Ok(won) => {
                    inner.expiry.0.lock().insert(key.clone(), level);
                    if won {
                        announce(&d, level, now);
                        match level {
                            ExpiryLevel::Expiring => report.expiring.push(d.id.clone()),
                            ExpiryLevel::Expired => report.expired.push(d.id.clone()),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, destination_id = %d.id, "cannot record an expiry notice; the next check tries again");
                    break;
                }
            }
        }
    }
    // Forget settled entries of expiries that no longer exist (renewed or deleted).
    let live: std::collections::HashSet<(String, Timestamp)> = inner
        .routes
        .all()
        .iter()
        .filter_map(|d| d.expires_at.map(|e| (d.id.clone(), e)))
        .collect();
    inner.expiry.0.lock().retain(|k, _| live.contains(k));
    report
}

/// The one place an expiry notice is produced, exactly once per destination and expiry
/// across all nodes. Today it is a log line (and a metric); when operator events exist
/// (`destination.expiring` / `destination.expired` topics), this is where they are written.
pub(crate) fn announce(d: &Destination, level: ExpiryLevel, now: Timestamp) {
    let topic = match level {
        ExpiryLevel::Expiring => "destination.expiring",
        ExpiryLevel::Expired => "destination.expired",
    };
    tracing::warn!(
        topic,
        destination_id = %d.id,
        tenant_id = %d.tenant_id,
        expires_at = %d.expires_at.map(|e| e.to_string()).unwrap_or_default(),
        now = %now,
        "destination subscription expiry notice"
    );
    metrics::counter!("herald_destination_expiry_notices_total", "topic" => topic).increment(1);
}

//! Subscription expiry: destinations with an `expires_at` stop receiving (routing and the
//! dispatcher ask [`Destination::is_active`] with the engine's clock), and each expiry is
//! announced exactly once — `destination.expiring` a configurable lead time before, and
//! `destination.expired` once it has passed — however many nodes look.
//!
//! Once per check every destination with an expiry is looked at; a notice that is due is
//! claimed with [`Store::mark_expiry_notice`], a compare-and-set in the store, and only the
//! caller that wins logs it. The operator event (`destination.expiring` / `destination.expired`,
//! delivered to subscribed operator destinations) is written just before the claim with an id
//! derived from the destination and its expiry, so a crash between the two, or two nodes at
//! once, still leave exactly one event ([`announce`]). Claiming `expired` also cancels the
//! destination's pending deliveries in the same transaction. A renewal (a new `expires_at`)
//! starts a new round. Time is the engine's [`herald_core::Clock`]: tests advance a
//! `ManualClock` and call [`crate::Engine::check_expiry`].

use std::collections::HashMap;

use herald_core::Destination;
use herald_core::operator::{self, DestinationRef};
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
            // The operator event first: its id is derived from the destination and the
            // expiry, so writing it again (after a crash before the claim, or on another node)
            // keeps one. Then the claim, which decides who logs and counts the notice.
            if let Err(e) = announce(inner, &d, expires_at, level, now).await {
                tracing::warn!(error = %e, destination_id = %d.id, "cannot write an expiry operator event; the next check tries again");
                break;
            }
            match inner
                .store
                .mark_expiry_notice(&d.tenant_id, &d.id, expires_at, level, now)
                .await
            {
                Ok(won) => {
                    inner.expiry.0.lock().insert(key.clone(), level);
                    if won {
                        log_notice(&d, level, now);
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

/// Writes the operator event `destination.expiring` / `destination.expired` for `d`'s expiry
/// (with a delivery to every operator destination subscribed to it; nothing when none is) and
/// wakes the poller. Idempotent: the event id is derived from the destination and the expiry.
async fn announce(
    inner: &Inner,
    d: &Destination,
    expires_at: Timestamp,
    level: ExpiryLevel,
    now: Timestamp,
) -> Result<(), herald_store::StoreError> {
    let event = operator::expiry(
        &DestinationRef::from(d),
        expires_at,
        level == ExpiryLevel::Expired,
        now,
    );
    if inner.store.emit_operator_event(&event, now).await? > 0 {
        inner.poke.notify_one();
    }
    Ok(())
}

/// The log line and metric of a notice, produced by the node whose claim won (once across
/// all nodes).
fn log_notice(d: &Destination, level: ExpiryLevel, now: Timestamp) {
    let topic = match level {
        ExpiryLevel::Expiring => operator::topic::DESTINATION_EXPIRING,
        ExpiryLevel::Expired => operator::topic::DESTINATION_EXPIRED,
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

//! Admission: how many attempts may be out at once — per destination, per tenant and overall —
//! and how a destination that stops answering gives back its share.
//!
//! An attempt needs three slots, always taken in this order and held until its response (or
//! timeout) is in: its destination's, its tenant's, then one of the global pool. Each level is
//! bounded, so whatever one tenant's destinations do, that tenant holds at most
//! `tenant_max_in_flight` of the global slots (less than the pool by default), and the rest
//! stay for the others. Waiting happens in that order too: a job waiting for its tenant or for
//! the pool already holds its destination's slot, never the other way round, so there is no
//! cycle and no deadlock.
//!
//! A destination's own limit adapts (AIMD, as in TCP congestion control): every attempt that
//! times out halves it (down to one attempt at a time, which keeps probing), every attempt that
//! gets an answer — any answer, success or failure — raises it by one, up to the destination's
//! configured `max_in_flight`. A hung destination therefore drops from its full share to a
//! single slot after a handful of timeouts, and a recovered one is back at full speed after a
//! few round trips. The limit is enforced on a semaphore whose permits are added when the limit
//! grows and forgotten (idle ones at once, busy ones as they come back) when it shrinks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How an attempt ended, as far as its destination's concurrency is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The destination answered (success or failure).
    Answered,
    /// No answer within the deadline.
    TimedOut,
}

/// The additive-increase / multiplicative-decrease rule for one destination, without the
/// semaphore: pure bookkeeping, so it can be tested step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aimd {
    /// The configured ceiling.
    max: usize,
    /// Attempts allowed out now (1..=max).
    limit: usize,
    /// Permits that exist on the semaphore (available or held). Converges to `limit`.
    permits: usize,
}

impl Aimd {
    pub(crate) fn new(max: usize) -> Aimd {
        let max = max.max(1);
        Aimd {
            max,
            limit: max,
            permits: max,
        }
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Applies an outcome to the limit; returns the limit before.
    pub(crate) fn record(&mut self, outcome: Outcome) -> usize {
        let before = self.limit;
        self.limit = match outcome {
            Outcome::TimedOut => (self.limit / 2).max(1),
            Outcome::Answered => (self.limit + 1).min(self.max),
        };
        before
    }

    /// Permits to add to the semaphore so that it offers the current limit.
    pub(crate) fn permits_to_add(&mut self) -> usize {
        let n = self.limit.saturating_sub(self.permits);
        self.permits += n;
        n
    }

    /// Permits the semaphore has beyond the current limit (to forget while idle).
    pub(crate) fn excess(&self) -> usize {
        self.permits.saturating_sub(self.limit)
    }

    /// `n` permits were forgotten.
    pub(crate) fn forgot(&mut self, n: usize) {
        self.permits -= n.min(self.permits);
    }

    /// A held permit comes back: `true` to return it to the semaphore, `false` to forget it
    /// (the limit shrank below the permits that exist).
    pub(crate) fn keep_returned(&mut self) -> bool {
        if self.permits > self.limit {
            self.permits -= 1;
            false
        } else {
            true
        }
    }
}

/// One destination's adaptive in-flight limit.
pub(crate) struct Concurrency {
    destination_id: String,
    slots: Arc<Semaphore>,
    aimd: Mutex<Aimd>,
    /// Whether it fell to one slot (and was logged as such) and has not recovered fully.
    throttled: AtomicBool,
}

impl Concurrency {
    pub(crate) fn new(destination_id: &str, max: usize) -> Arc<Concurrency> {
        let aimd = Aimd::new(max);
        Arc::new(Concurrency {
            destination_id: destination_id.to_string(),
            slots: Arc::new(Semaphore::new(aimd.limit)),
            aimd: Mutex::new(aimd),
            throttled: AtomicBool::new(false),
        })
    }

    /// Attempts allowed out to this destination now.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.aimd.lock().limit()
    }

    /// Waits for one of the destination's slots.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Option<DestinationPermit> {
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        Some(DestinationPermit {
            permit: Some(permit),
            concurrency: self.clone(),
        })
    }

    fn record(&self, outcome: Outcome) {
        let mut aimd = self.aimd.lock();
        let before = aimd.record(outcome);
        let after = aimd.limit();
        let add = aimd.permits_to_add();
        if add > 0 {
            self.slots.add_permits(add);
        }
        let excess = aimd.excess();
        if excess > 0 {
            let n = self.slots.forget_permits(excess);
            aimd.forgot(n);
        }
        let max = aimd.max;
        drop(aimd);
        if after < before {
            metrics::counter!("herald_destination_concurrency_reduced_total").increment(1);
            if after == 1 {
                self.throttled.store(true, Ordering::Relaxed);
                tracing::warn!(
                    destination_id = %self.destination_id,
                    "destination attempts time out; sending it one attempt at a time until it answers again"
                );
            }
        } else if after > before && after == max && self.throttled.swap(false, Ordering::Relaxed) {
            tracing::info!(destination_id = %self.destination_id, limit = after, "destination answers again; back at its full concurrency");
        }
    }

    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let mut aimd = self.aimd.lock();
        if aimd.keep_returned() {
            drop(permit);
        } else {
            permit.forget();
        }
    }
}

/// A destination's slot, held from before the tenant and global slots are taken until the
/// attempt's response is in. Dropping it gives it back.
pub(crate) struct DestinationPermit {
    permit: Option<OwnedSemaphorePermit>,
    concurrency: Arc<Concurrency>,
}

impl Drop for DestinationPermit {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.concurrency.give_back(p);
        }
    }
}

/// The three slots of one attempt in flight. [`Slot::release`] gives them back with the
/// attempt's outcome; dropping gives them back without adapting the destination's limit
/// (the attempt did not happen).
pub(crate) struct Slot {
    // Field order is drop order: the destination's slot before the tenant's and the pool's.
    destination: DestinationPermit,
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Slot {
    /// Gives the slots back; `outcome` adapts the destination's limit first.
    pub(crate) fn release(self, outcome: Outcome) {
        self.destination.concurrency.record(outcome);
    }
}

/// The tenant and global levels.
pub(crate) struct Admission {
    global: Arc<Semaphore>,
    tenant_limit: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Admission {
    /// `tenant_limit` is capped at `global` (a tenant can never need more than the pool).
    pub(crate) fn new(global: usize, tenant_limit: usize) -> Admission {
        let global = global.max(1);
        Admission {
            global: Arc::new(Semaphore::new(global)),
            tenant_limit: tenant_limit.clamp(1, global),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn tenant(&self, tenant_id: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock();
        if let Some(s) = tenants.get(tenant_id) {
            return s.clone();
        }
        // Forget tenants with nothing in flight or waiting, so the map follows live tenants.
        if tenants.len() >= 1024 {
            let limit = self.tenant_limit;
            tenants.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < limit);
        }
        let s = Arc::new(Semaphore::new(self.tenant_limit));
        tenants.insert(tenant_id.to_string(), s.clone());
        s
    }

    /// Attempts of `tenant_id` in flight (or holding a tenant slot while waiting for the
    /// pool).
    #[cfg(test)]
    pub(crate) fn tenant_in_flight(&self, tenant_id: &str) -> usize {
        self.tenants
            .lock()
            .get(tenant_id)
            .map_or(0, |s| self.tenant_limit - s.available_permits())
    }

    /// Free slots in the global pool.
    #[cfg(test)]
    pub(crate) fn global_available(&self) -> usize {
        self.global.available_permits()
    }

    /// Waits for a tenant slot, then a global one, for an attempt that holds `destination`.
    /// Cancel-safe: dropping the future gives back whatever it took.
    pub(crate) async fn admit(
        &self,
        tenant_id: &str,
        destination: DestinationPermit,
    ) -> Option<Slot> {
        let tenant = self.tenant(tenant_id).acquire_owned().await.ok()?;
        let global = self.global.clone().acquire_owned().await.ok()?;
        Some(Slot {
            destination,
            _tenant: tenant,
            _global: global,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `f` once: its output if ready now, `None` if it would wait.
    async fn now<F: std::future::Future>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            v = f => Some(v),
            _ = std::future::ready(()) => None,
        }
    }

    #[test]
    fn timeouts_halve_the_limit_down_to_one_and_answers_raise_it_by_one() {
        let mut a = Aimd::new(64);
        let mut seen = Vec::new();
        for _ in 0..8 {
            a.record(Outcome::TimedOut);
            seen.push(a.limit());
        }
        assert_eq!(seen, [32, 16, 8, 4, 2, 1, 1, 1]);
        for _ in 0..10 {
            a.record(Outcome::Answered);
        }
        assert_eq!(a.limit(), 11);
        for _ in 0..100 {
            a.record(Outcome::Answered);
        }
        assert_eq!(a.limit(), 64, "never above the configured maximum");
    }

    #[test]
    fn permits_follow_the_limit_forgetting_busy_ones_as_they_come_back() {
        let mut a = Aimd::new(4);
        // All four out; one times out: limit 2, two permits too many.
        a.record(Outcome::TimedOut);
        assert_eq!(a.excess(), 2);
        a.forgot(0); // none idle
        assert!(!a.keep_returned(), "first returned permit is forgotten");
        assert!(!a.keep_returned(), "second too");
        assert!(a.keep_returned(), "then permits are kept again");
        assert_eq!(a.excess(), 0);
        a.record(Outcome::Answered);
        assert_eq!(a.permits_to_add(), 1);
        assert_eq!(a.permits_to_add(), 0);
    }

    #[tokio::test]
    async fn a_hung_destination_shrinks_to_one_slot_and_grows_back_when_it_answers() {
        let c = Concurrency::new("d", 8);
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(now(c.acquire()).await.flatten().expect("a free slot"));
        }
        assert!(now(c.acquire()).await.is_none(), "the ninth waits");
        let admission = Admission::new(100, 100);
        // The eight attempts time out.
        for p in held {
            let slot = now(admission.admit("t", p)).await.flatten().unwrap();
            slot.release(Outcome::TimedOut);
        }
        assert_eq!(c.limit(), 1);
        let probe = now(c.acquire()).await.flatten().expect("one probe slot");
        assert!(
            now(c.acquire()).await.is_none(),
            "only one attempt at a time while it times out"
        );
        // It answers again: 1 → 2 → 3 …
        let slot = now(admission.admit("t", probe)).await.flatten().unwrap();
        slot.release(Outcome::Answered);
        assert_eq!(c.limit(), 2);
        let a = now(c.acquire()).await.flatten().unwrap();
        let b = now(c.acquire()).await.flatten().unwrap();
        assert!(now(c.acquire()).await.is_none());
        for p in [a, b] {
            now(admission.admit("t", p))
                .await
                .flatten()
                .unwrap()
                .release(Outcome::Answered);
        }
        assert_eq!(c.limit(), 4);
        assert_eq!(c.slots.available_permits(), 4);
    }

    #[tokio::test]
    async fn an_attempt_that_did_not_happen_leaves_the_limit_alone() {
        let c = Concurrency::new("d", 2);
        let admission = Admission::new(10, 10);
        let p = now(c.acquire()).await.flatten().unwrap();
        let slot = now(admission.admit("t", p)).await.flatten().unwrap();
        drop(slot);
        assert_eq!(c.limit(), 2);
        assert_eq!(c.slots.available_permits(), 2);
        assert_eq!(admission.tenant_in_flight("t"), 0);
        assert_eq!(admission.global_available(), 10);
    }

    #[tokio::test]
    async fn one_tenant_never_holds_more_than_its_share_of_the_pool() {
        let admission = Admission::new(10, 4);
        // Tenant X has many destinations with free slots; it gets four global slots, no more.
        let mut x = Vec::new();
        let mut dests = Vec::new();
        for i in 0..6 {
            let c = Concurrency::new(&format!("x{i}"), 64);
            let p = now(c.acquire()).await.flatten().unwrap();
            dests.push(c);
            match now(admission.admit("x", p)).await {
                Some(Some(slot)) => x.push(slot),
                _ => assert!(i >= 4, "x's slot {i} should have been admitted"),
            }
        }
        assert_eq!(x.len(), 4);
        assert_eq!(admission.tenant_in_flight("x"), 4);
        assert_eq!(admission.global_available(), 6);
        // Tenant Y still gets the rest of the pool at once.
        let y = Concurrency::new("y", 64);
        let mut ys = Vec::new();
        for _ in 0..4 {
            let p = now(y.acquire()).await.flatten().unwrap();
            ys.push(
                now(admission.admit("y", p))
                    .await
                    .flatten()
                    .expect("y admitted"),
            );
        }
        assert_eq!(admission.global_available(), 2);
        // Y's slots given back return to the pool; X's destination slots of the refused
        // attempts were given back when their futures were dropped.
        drop(ys);
        assert_eq!(admission.global_available(), 6);
        assert!(
            dests
                .iter()
                .skip(4)
                .all(|c| c.slots.available_permits() == 64)
        );
    }

    #[tokio::test]
    async fn a_tenant_limit_above_the_pool_is_the_pool() {
        let admission = Admission::new(3, 100);
        assert_eq!(admission.tenant_limit, 3);
    }

    #[tokio::test]
    async fn a_waiting_attempt_gets_the_tenant_slot_another_attempt_gives_back() {
        let admission = Arc::new(Admission::new(10, 1));
        let c = Concurrency::new("x", 4);
        let first = now(admission.admit("x", now(c.acquire()).await.flatten().unwrap()))
            .await
            .flatten()
            .unwrap();
        let a2 = admission.clone();
        let p2 = now(c.acquire()).await.flatten().unwrap();
        let waiting = tokio::spawn(async move { a2.admit("x", p2).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        first.release(Outcome::Answered);
        assert_eq!(waiting.await.unwrap(), Some(()));
    }
}

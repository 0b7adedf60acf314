//! When the poller should look at the store next, beyond its regular `poll_interval`.
//!
//! This node knows the due time of the work it leaves in the store: a retry it scheduled, a
//! delivery it shed back. The poller sleeps until the earliest of those (or its interval), so
//! such work is claimed when it comes due instead of up to a whole poll interval later.
//! Work another node left is still found by the regular interval or by a notice.

use std::collections::BTreeSet;

use jiff::Timestamp;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Most distinct due times remembered; past that the latest are dropped (the regular poll
/// interval still finds their work), so memory stays bounded whatever the backlog.
const MAX_TIMES: usize = 1024;

/// Due times are kept at millisecond granularity: a burst of retries due within one
/// millisecond is one wake-up.
const GRAIN_US: i64 = 1000;

/// Due times of work this node left in the store, earliest first.
#[derive(Default)]
pub(crate) struct WakeSchedule {
    times: Mutex<BTreeSet<i64>>,
    /// Signalled when a noted time became the earliest (the sleeping poller wakes sooner).
    earlier: Notify,
}

impl WakeSchedule {
    /// Notes that work comes due at `at`.
    pub(crate) fn note(&self, at: Timestamp) {
        // Rounded up: waking a little late finds the work due; waking early would not.
        let key = at.as_microsecond().div_euclid(GRAIN_US) + 1;
        let mut times = self.times.lock();
        if times.len() >= MAX_TIMES {
            match times.last() {
                Some(&latest) if latest > key => {
                    times.pop_last();
                }
                _ => return,
            }
        }
        let earliest = times.first().is_none_or(|&first| key < first);
        times.insert(key);
        drop(times);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Resolves when a due time earlier than all others was noted (once per such change; a
    /// change while nobody waits is kept for the next waiter).
    pub(crate) async fn changed(&self) {
        self.earlier.notified().await;
    }

    /// The earliest noted due time, if any.
    pub(crate) fn next(&self) -> Option<Timestamp> {
        let key = *self.times.lock().first()?;
        Timestamp::from_microsecond(key.saturating_mul(GRAIN_US)).ok()
    }

    /// Forgets every due time up to `now` (the poller is about to claim what they were for).
    pub(crate) fn take_due(&self, now: Timestamp) {
        let mut times = self.times.lock();
        let cut = now.as_microsecond().div_euclid(GRAIN_US) + 1;
        let later = times.split_off(&cut);
        *times = later;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn earliest_first_and_never_before_the_noted_time() {
        let w = WakeSchedule::default();
        assert_eq!(w.next(), None);
        w.note(t(500));
        w.note(t(20));
        w.note(t(20) + SignedDuration::from_micros(300));
        let next = w.next().unwrap();
        assert!(next >= t(20) + SignedDuration::from_micros(300), "{next}");
        assert!(next <= t(21), "{next}");
        w.take_due(t(21));
        assert!(w.next().unwrap() >= t(500));
        w.take_due(t(499));
        assert!(w.next().is_some(), "a time not yet due stays");
        w.take_due(t(501));
        assert_eq!(w.next(), None);
    }

    /// Whether `changed()` is ready now (a stored signal), without waiting.
    async fn signalled(w: &WakeSchedule) -> bool {
        tokio::select! {
            biased;
            _ = w.changed() => true,
            _ = std::future::ready(()) => false,
        }
    }

    #[tokio::test]
    async fn only_a_new_earliest_time_signals_the_poller() {
        let w = WakeSchedule::default();
        assert!(!signalled(&w).await);
        w.note(t(1000));
        assert!(signalled(&w).await, "the first time is the earliest");
        assert!(!signalled(&w).await, "one signal per change");
        w.note(t(5000));
        assert!(!signalled(&w).await, "a later time changes nothing");
        w.note(t(10));
        assert!(signalled(&w).await);
    }

    #[test]
    fn bounded_keeping_the_earliest() {
        let w = WakeSchedule::default();
        for i in 0..(MAX_TIMES as i64 + 100) {
            w.note(t(10_000 - i));
        }
        assert_eq!(w.times.lock().len(), MAX_TIMES);
        // The earliest noted time survived; the latest ones were dropped.
        let earliest = t(10_000 - (MAX_TIMES as i64 + 99));
        assert!(
            w.next().unwrap() >= earliest
                && w.next().unwrap() <= earliest + SignedDuration::from_millis(1)
        );
        w.note(t(50_000));
        assert!(
            !w.times
                .lock()
                .contains(&(t(50_000).as_microsecond() / GRAIN_US + 1))
        );
    }
}

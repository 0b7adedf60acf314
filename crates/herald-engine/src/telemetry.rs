//! What the engine tells operators about each publish and attempt besides the store: the
//! one log line per attempt (at configurable levels) and the trace context carried from a
//! publish to the attempts of its deliveries.
//!
//! The engine names no tracing backend. Spans are plain `tracing` spans; a [`TraceContext`]
//! given by the binary (its OpenTelemetry layer) reads a span's W3C `traceparent` and sets a
//! span's remote parent. Without one (the default) nothing here keeps any state.
//!
//! How an attempt finds its event's trace: at publish time the publish span's `traceparent`
//! is kept in memory by (tenant, event id) ([`Traces`], bounded; event ids are unique per
//! tenant only); every attempt of that event on this
//! node — the first one straight from memory, retries claimed from the store later — becomes
//! a child of it. An attempt whose event is no longer remembered (claimed after a restart, on
//! another node, or after more than [`Traces::CAPACITY`] newer events) starts a trace of its
//! own, with the same event, destination and tenant attributes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::Level;

/// The levels of the attempt log line (target `herald::attempt`): one line per attempt with
/// event, delivery, destination, tenant and attempt ids, attempt number, outcome, code and
/// latency. `None` logs no line for that kind of attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLog {
    /// Level of a successful attempt's line (default DEBUG).
    pub success: Option<Level>,
    /// Level of a failed attempt's line, whether a retry was scheduled or not (default INFO).
    pub failure: Option<Level>,
}

impl Default for AttemptLog {
    fn default() -> Self {
        Self {
            success: Some(Level::DEBUG),
            failure: Some(Level::INFO),
        }
    }
}

/// Reads and sets the trace context of `tracing` spans; implemented by the binary over its
/// trace exporter.
pub trait TraceContext: Send + Sync {
    /// The W3C `traceparent` of `span`, when it is sampled and exported.
    fn traceparent(&self, span: &tracing::Span) -> Option<String>;
    /// Makes `span` a child of the span a W3C `traceparent` names.
    fn set_parent(&self, span: &tracing::Span, traceparent: &str);
}

/// A [`TraceContext`] in [`crate::EngineConfig`] (a newtype so the config stays `Debug`).
#[derive(Clone)]
pub struct TraceHook(pub Arc<dyn TraceContext>);

impl std::fmt::Debug for TraceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceHook")
    }
}

/// The publish span's `traceparent` of recent events, by (tenant, event id).
pub(crate) struct Traces {
    hook: Arc<dyn TraceContext>,
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    by_event: HashMap<(String, String), String>,
    /// Events in the order they were remembered; the oldest is forgotten first.
    order: VecDeque<(String, String)>,
}

impl Traces {
    /// Events remembered: about 100 bytes each, so at most a few megabytes.
    pub(crate) const CAPACITY: usize = 50_000;

    pub(crate) fn new(hook: &TraceHook) -> Self {
        Self {
            hook: hook.0.clone(),
            inner: Mutex::new(Remembered::default()),
        }
    }

    /// Remembers the trace of `span` (the publish span) for the attempts of a tenant's event,
    /// unless the event is remembered already.
    pub(crate) fn remember(&self, tenant_id: &str, event_id: &str, span: &tracing::Span) {
        let Some(tp) = self.hook.traceparent(span) else {
            return;
        };
        let key = (tenant_id.to_string(), event_id.to_string());
        let mut r = self.inner.lock();
        // The first publish of an id keeps its trace (a duplicate creates no deliveries).
        if r.by_event.contains_key(&key) {
            return;
        }
        r.by_event.insert(key.clone(), tp);
        r.order.push_back(key);
        while r.order.len() > Self::CAPACITY {
            if let Some(old) = r.order.pop_front() {
                r.by_event.remove(&old);
            }
        }
    }

    /// Makes `span` (an attempt) a child of its event's publish span, when remembered.
    pub(crate) fn adopt(&self, tenant_id: &str, event_id: &str, span: &tracing::Span) {
        let key = (tenant_id.to_string(), event_id.to_string());
        let tp = self.inner.lock().by_event.get(&key).cloned();
        if let Some(tp) = tp {
            self.hook.set_parent(span, &tp);
        }
    }
}

/// Emits one event at a level chosen at run time (`tracing`'s macros take constant levels).
macro_rules! event_at {
    ($level:expr, $($arg:tt)+) => {
        match $level {
            tracing::Level::ERROR => tracing::error!($($arg)+),
            tracing::Level::WARN => tracing::warn!($($arg)+),
            tracing::Level::INFO => tracing::info!($($arg)+),
            tracing::Level::DEBUG => tracing::debug!($($arg)+),
            _ => tracing::trace!($($arg)+),
        }
    };
}
pub(crate) use event_at;

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl TraceContext for Fixed {
        fn traceparent(&self, _: &tracing::Span) -> Option<String> {
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into())
        }
        fn set_parent(&self, _: &tracing::Span, _: &str) {}
    }

    #[test]
    fn remembers_a_bounded_number_of_events_per_tenant() {
        let t = Traces::new(&TraceHook(Arc::new(Fixed)));
        for i in 0..Traces::CAPACITY + 10 {
            t.remember("t", &format!("e{i}"), &tracing::Span::none());
        }
        let key = |tenant: &str, id: String| (tenant.to_string(), id);
        let r = t.inner.lock();
        assert_eq!(r.by_event.len(), Traces::CAPACITY);
        assert!(
            !r.by_event.contains_key(&key("t", "e0".into())),
            "the oldest is forgotten first"
        );
        let newest = format!("e{}", Traces::CAPACITY + 9);
        assert!(r.by_event.contains_key(&key("t", newest.clone())));
        assert!(
            !r.by_event.contains_key(&key("u", newest)),
            "another tenant's event with the same id is another event"
        );
    }
}

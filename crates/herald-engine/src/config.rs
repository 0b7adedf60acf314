//! Engine settings. Every field has a default chosen for a single small machine; the binary
//! maps its TOML / `HERALD_*` configuration onto this struct.

use std::time::Duration;

use herald_core::retry::RetryPolicy;
use herald_core::signing::SigningConfig;

use crate::operator::AlertConfig;
use crate::telemetry::{AttemptLog, TraceHook};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// When failed deliveries are retried.
    pub retry: RetryPolicy,
    /// How messages are signed (per destination, `config.signing_mode` may override the mode).
    pub signing: SigningConfig,
    /// Deadline for one attempt, connection included.
    pub attempt_timeout: Duration,
    /// Attempts in flight across all destinations.
    pub max_in_flight: usize,
    /// Attempts in flight to one destination (its ceiling: timeouts lower it for a while,
    /// see [`crate::admission`]).
    pub destination_max_in_flight: usize,
    /// Attempts in flight for one tenant across its destinations (capped at `max_in_flight`).
    /// Below `max_in_flight`, one tenant's slow or hung destinations can never take the
    /// whole pool.
    pub tenant_max_in_flight: usize,
    /// Deliveries held in memory waiting for a worker; more wait in the store.
    pub queue_capacity: usize,
    /// How long a node holds a delivery before another may take it over. An attempt about to
    /// start close to the end of its lease renews it first, so this bounds how long the
    /// deliveries of a node that died wait before another node (or the restarted node) takes
    /// them over, not how long an attempt may wait in memory.
    pub lease: Duration,
    /// Most deliveries this node holds in memory (queued or in flight) before its poller stops
    /// claiming more from the store. On a shared store a lower value leaves due work to other
    /// nodes instead of hoarding it; it does not limit deliveries dispatched at publish time.
    pub claim_limit: usize,
    /// How often the store is checked for due retries when nothing wakes the poller.
    pub poll_interval: Duration,
    /// A re-published event id within this window is answered `duplicate: true`.
    pub idempotency_window: Duration,
    /// Response bodies longer than this are cut in the attempt log.
    pub response_body_limit: usize,
    /// Operator alerts and auto-disable.
    pub alerts: AlertConfig,
    /// Events, deliveries and attempts older than this are purged; zero keeps everything.
    pub retention: Duration,
    /// How often the purge runs.
    pub retention_interval: Duration,
    /// Rows deleted per purge transaction (small, so delivery never waits long on it).
    pub retention_batch: usize,
    /// Longest subscription a destination may have (`destinations.max_lifetime`): caps
    /// `expires_at` and fills it on create. `None`: no limit, no default expiry.
    pub max_lifetime: Option<Duration>,
    /// How long before its expiry a destination's `destination.expiring` notice is produced.
    pub expiring_notice_lead: Duration,
    /// How often expiries are checked.
    pub expiry_check_interval: Duration,
    /// Levels of the per-attempt log line.
    pub attempt_log: AttemptLog,
    /// Carries trace context from publishes to attempts; `None` (the default) when traces
    /// are not exported.
    pub traces: Option<TraceHook>,
    /// Refuse to publish for a tenant that does not exist ([`crate::PublishError::UnknownTenant`])
    /// instead of accepting the event with `tenant_found: false` (Outpost's behaviour, the
    /// default).
    pub require_known_tenant: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            signing: SigningConfig::default(),
            attempt_timeout: Duration::from_secs(5),
            max_in_flight: 512,
            destination_max_in_flight: 64,
            tenant_max_in_flight: 256,
            queue_capacity: 20_000,
            lease: Duration::from_secs(60),
            claim_limit: 20_000,
            poll_interval: Duration::from_secs(1),
            idempotency_window: Duration::from_secs(24 * 3600),
            response_body_limit: 4096,
            alerts: AlertConfig::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_interval: Duration::from_secs(60),
            retention_batch: 500,
            max_lifetime: None,
            expiring_notice_lead: Duration::from_secs(7 * 24 * 3600),
            expiry_check_interval: Duration::from_secs(60),
            attempt_log: AttemptLog::default(),
            traces: None,
            require_known_tenant: false,
        }
    }
}

impl EngineConfig {
    pub(crate) fn lease_span(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.lease).unwrap_or(jiff::SignedDuration::from_secs(60))
    }

    pub(crate) fn idempotency_span(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.idempotency_window)
            .unwrap_or(jiff::SignedDuration::ZERO)
    }
}

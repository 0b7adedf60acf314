//! Workers: the dispatcher that turns queued jobs into attempts, the poller that refills the
//! queue from the store, and one attempt from message building to recorded outcome.
//!
//! Concurrency is bounded three ways: the in-memory queue (`queue_capacity`), attempts in
//! flight overall (`max_in_flight`) and per destination (`destination_max_in_flight`). A job
//! waits for its destination's permit *before* taking a global one, so a slow destination
//! can hold at most its own share of the global pool.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald_core::destination::{DeliveryError, Disposition, OutboundMessage};
use herald_core::signing::{self, SignatureOverrides, SigningConfig, SigningMode};
use herald_core::{Attempt, AttemptStatus, DeliveryStatus, Destination, Event, ids};
use herald_store::{AttemptRecord, Job};
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::routes::Route;
use crate::{EngineConfig, Inner};

type Limiter = governor::DefaultDirectRateLimiter;

/// Per-destination admission state.
pub(crate) struct DestinationGate {
    /// Attempts in flight to this destination.
    slots: Arc<Semaphore>,
    /// Even spacing of attempts, when the destination has a rate limit.
    limiter: Option<Arc<Limiter>>,
    /// Jobs spawned and waiting for a slot or the limiter.
    waiting: AtomicUsize,
    /// `(max_in_flight, rate_limit_per_minute)` the gate was built for.
    settings: (usize, u32),
}

/// Concurrency limits and counters.
pub(crate) struct Dispatch {
    /// Jobs taken off the queue and not yet finished (bounds spawned tasks).
    admit: Arc<Semaphore>,
    /// Permits `admit` started with.
    admit_total: usize,
    global: Arc<Semaphore>,
    gates: Mutex<HashMap<String, Arc<DestinationGate>>>,
    destination_limit: usize,
    in_flight: AtomicUsize,
    /// Leased deliveries left unattempted at shutdown.
    handed_back: Mutex<Vec<String>>,
}

impl Dispatch {
    pub(crate) fn new(cfg: &EngineConfig) -> Self {
        Self {
            admit: Arc::new(Semaphore::new(cfg.queue_capacity.max(1))),
            admit_total: cfg.queue_capacity.max(1),
            global: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            gates: Mutex::new(HashMap::new()),
            destination_limit: cfg.destination_max_in_flight.max(1),
            in_flight: AtomicUsize::new(0),
            handed_back: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Notes a job this node will not attempt because it is stopping.
    pub(crate) fn hand_back(&self, delivery_id: String) {
        self.handed_back.lock().push(delivery_id);
    }

    /// The jobs noted by [`Dispatch::hand_back`] so far.
    pub(crate) fn take_handed_back(&self) -> Vec<String> {
        std::mem::take(&mut *self.handed_back.lock())
    }

    /// Jobs taken off the queue and not finished yet (waiting for a slot, or in flight).
    pub(crate) fn admitted(&self) -> usize {
        self.admit_total - self.admit.available_permits()
    }

    /// The gate for a destination, rebuilt when its limits changed.
    fn gate(&self, route: &Route) -> Arc<DestinationGate> {
        let d = &route.destination;
        let limits = &route.delivery.settings;
        let max = limits
            .max_in_flight
            .map_or(self.destination_limit, |n| n as usize);
        let rate = limits.rate_limit_per_minute.unwrap_or(0);
        let mut gates = self.gates.lock();
        if let Some(g) = gates.get(&d.id)
            && g.settings == (max, rate)
        {
            return g.clone();
        }
        let limiter = NonZeroU32::new(rate).map(|r| {
            let period = Duration::from_secs(60) / r.get();
            let quota = governor::Quota::with_period(period.max(Duration::from_micros(1)))
                .expect("non-zero period")
                .allow_burst(NonZeroU32::MIN);
            Arc::new(governor::RateLimiter::direct(quota))
        });
        let gate = Arc::new(DestinationGate {
            slots: Arc::new(Semaphore::new(max)),
            limiter,
            waiting: AtomicUsize::new(0),
            settings: (max, rate),
        });
        gates.insert(d.id.clone(), gate.clone());
        gate
    }
}

/// How long shed deliveries wait in the store before they are claimed again.
const SHED_DELAY: SignedDuration = SignedDuration::from_secs(2);

/// Takes jobs off the in-memory queue and runs each as its own task.
///
/// A destination that already has many jobs waiting (it is slow, dead or rate-limited) does
/// not get more memory: further jobs for it are shed back to the store, due again shortly, so
/// a bad destination can never fill the queue that healthy ones need.
pub(crate) async fn run_dispatcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>) {
    let mut shed: Vec<String> = Vec::new();
    loop {
        if !shed.is_empty() && (rx.is_empty() || shed.len() >= 256) {
            let ids = std::mem::take(&mut shed);
            let store = inner.store.clone();
            let at = inner.clock.now() + SHED_DELAY;
            metrics::counter!("herald_deliveries_shed_total").increment(ids.len() as u64);
            tokio::spawn(async move {
                if let Err(e) = store.defer(ids, at).await {
                    tracing::warn!(error = %e, "cannot shed deliveries; their leases will expire instead");
                }
            });
        }
        let job = tokio::select! {
            job = rx.recv() => job,
            _ = inner.stopping.cancelled() => None,
        };
        let Some(job) = job else { break };
        let Some(route) = inner
            .routes
            .get(&job.delivery.tenant_id, &job.delivery.destination_id)
        else {
            let inner = inner.clone();
            tokio::spawn(async move { settle_unroutable(&inner, &job.delivery).await });
            continue;
        };
        let gate = inner.dispatch.gate(&route);
        let backlog_limit = (gate.settings.0 * 4).max(256);
        if gate.waiting.load(Ordering::SeqCst) >= backlog_limit {
            shed.push(job.delivery.id);
            continue;
        }
        let Ok(admit) = inner.dispatch.admit.clone().acquire_owned().await else {
            break;
        };
        gate.waiting.fetch_add(1, Ordering::SeqCst);
        let global = inner.dispatch.global.clone();
        let inner = inner.clone();
        tokio::spawn(async move {
            let _admit = admit;
            // Waiting for capacity ends early when the engine stops; the job is handed back.
            let slot = tokio::select! {
                s = gate.slots.clone().acquire_owned() => s.ok(),
                _ = inner.stopping.cancelled() => None,
            };
            if slot.is_some()
                && let Some(l) = &gate.limiter
            {
                tokio::select! {
                    _ = l.until_ready() => {}
                    _ = inner.stopping.cancelled() => {}
                }
            }
            gate.waiting.fetch_sub(1, Ordering::SeqCst);
            let global = match slot {
                Some(_) => tokio::select! {
                    g = global.acquire_owned() => g.ok(),
                    _ = inner.stopping.cancelled() => None,
                },
                None => None,
            };
            if global.is_none() || inner.stopping.is_cancelled() {
                inner.dispatch.hand_back(job.delivery.id);
                return;
            }
            let (Some(slot), Some(global)) = (slot, global) else {
                return;
            };
            inner.dispatch.in_flight.fetch_add(1, Ordering::SeqCst);
            attempt(&inner, job, (slot, global)).await;
            inner.dispatch.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
    // Jobs still queued were never started: hand them back too.
    while let Ok(job) = rx.try_recv() {
        inner.dispatch.hand_back(job.delivery.id);
    }
    tracing::debug!("dispatcher stopped");
}

/// Claims due deliveries from the store whenever the queue has room: retries that came due,
/// deliveries that did not fit in memory at publish time, and leases that expired.
///
/// It claims only while this node holds fewer than `claim_limit` deliveries, and then at
/// least a quarter of that at a time (or all that is due), so that nodes sharing a store
/// each take a fair share in few round trips.
pub(crate) async fn run_poller(inner: Arc<Inner>) {
    const BATCH: usize = 1000;
    let limit = inner.config.claim_limit.max(1);
    let min_room = (limit / 4).clamp(1, BATCH);
    while !inner.stopping.is_cancelled() {
        let queued = inner.queue.max_capacity() - inner.queue.capacity();
        let held = queued + inner.dispatch.admitted();
        let room = inner
            .queue
            .capacity()
            .min(BATCH)
            .min(limit.saturating_sub(held));
        if room < min_room && held > 0 {
            // Busy: look again soon (memory only, no store query).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = inner.stopping.cancelled() => break,
            }
            continue;
        }
        let mut full_batch = false;
        if room > 0 {
            let now = inner.clock.now();
            match inner
                .store
                .claim_due(now, room, now + inner.config.lease_span())
                .await
            {
                Ok(jobs) => {
                    full_batch = jobs.len() == room;
                    for job in jobs {
                        if inner.queue.send(job).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim due deliveries; will try again")
                }
            }
        }
        if full_batch {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.config.poll_interval) => {}
            _ = inner.poke.notified() => {}
            _ = inner.stopping.cancelled() => break,
        }
    }
    tracing::debug!("poller stopped");
}

/// The signing settings for one destination: the operator's configuration, unless the
/// destination asks for the other mode in `config.signing_mode` (then that mode's defaults)
/// or has signature templates of its own (then outpost mode with them).
fn signing_for<'a>(
    cfg: &'a SigningConfig,
    wanted: Option<SigningMode>,
    overrides: &SignatureOverrides,
    fallback: &'a mut Option<SigningConfig>,
) -> &'a SigningConfig {
    // A destination's own templates sign in outpost mode (validation keeps the two apart).
    if !overrides.is_empty() {
        return fallback.insert(cfg.with_overrides(overrides));
    }
    let Some(wanted) = wanted else { return cfg };
    // The two standard modes send the same headers (the key decides v1 or v1a).
    let standard = |m: SigningMode| m != SigningMode::Outpost;
    if wanted == cfg.mode || standard(wanted) && standard(cfg.mode) {
        return cfg;
    }
    fallback.insert(match wanted {
        SigningMode::Outpost => SigningConfig::outpost_default(),
        SigningMode::Standard | SigningMode::StandardEd25519 => SigningConfig::new(wanted),
    })
}

fn message(
    inner: &Inner,
    route: &Route,
    event: &Event,
    delivery_id: &str,
    now: Timestamp,
) -> OutboundMessage {
    let d = &route.destination;
    let body: Arc<[u8]> = serde_json::to_vec(&event.data)
        .unwrap_or_else(|_| b"{}".to_vec())
        .into();
    // As in Outpost, the event's own metadata wins over the destination's delivery metadata.
    let mut metadata = d.delivery_metadata.clone().unwrap_or_default();
    metadata.extend(event.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    let secrets = route.delivery.keys.secrets();
    let mut fallback = None;
    let cfg = signing_for(
        &inner.config.signing,
        route.delivery.signing_mode,
        &route.delivery.signature,
        &mut fallback,
    );
    let msg = signing::Message {
        event_id: &event.id,
        topic: &event.topic,
        timestamp: now,
        body: &body,
        metadata: &metadata,
        idempotency_key: delivery_id,
    };
    let headers = signing::headers(cfg, &msg, &secrets, now);
    OutboundMessage {
        event_id: event.id.clone(),
        delivery_id: delivery_id.to_string(),
        topic: event.topic.clone(),
        time: event.time,
        body,
        headers,
        metadata,
        timeout: inner.config.attempt_timeout,
    }
}

/// One attempt of one delivery, start to recorded finish. `permits` (the destination's slot
/// and the global one) are held while the request is out and given back before the result is
/// recorded, so bookkeeping latency (a database round trip) never limits how many requests a
/// destination gets.
async fn attempt(inner: &Inner, job: Job, permits: (OwnedSemaphorePermit, OwnedSemaphorePermit)) {
    let Job {
        delivery,
        event,
        lease_until,
    } = job;
    let Some(route) = inner
        .routes
        .get(&delivery.tenant_id, &delivery.destination_id)
    else {
        // Deleted meanwhile; the store cancelled the delivery with it.
        return;
    };
    let dest = &route.destination;
    if !dest.is_active(inner.clock.now()) {
        settle_unroutable(inner, &delivery).await;
        return;
    }
    let now = inner.clock.now();
    if !hold_lease(inner, &delivery.id, lease_until, now).await {
        return;
    }
    let number = delivery.attempts + 1;
    let started = Instant::now();
    let mut sent_headers = None;
    let result = match &route.driver {
        None => Err(DeliveryError::permanent(
            "unsupported_type",
            format!(
                "destination type {:?} is not available in this build or its settings are invalid",
                dest.kind
            ),
        )),
        Some(driver) => {
            let msg = message(inner, &route, &event, &delivery.id, now);
            sent_headers = Some(request_headers(&msg.headers));
            match tokio::time::timeout(inner.config.attempt_timeout, driver.deliver(&msg)).await {
                Ok(r) => r,
                Err(_) => Err(DeliveryError::retry(
                    "timeout",
                    format!(
                        "no answer within {} ms",
                        inner.config.attempt_timeout.as_millis()
                    ),
                )),
            }
        }
    };
    let elapsed = started.elapsed();
    drop(permits);
    let latency_ms = elapsed.as_millis() as u64;
    let mut gone = false;
    let mut exhausted = false;
    let (status, code, response, next_status, next_at) = match result {
        Ok(receipt) => (
            AttemptStatus::Success,
            receipt.code,
            receipt.response,
            DeliveryStatus::Success,
            now,
        ),
        Err(e) => {
            let response = with_error(e.response, &e.message);
            let (next_status, next_at) = match e.disposition {
                Disposition::Retry { after } if event.eligible_for_retry && !delivery.manual => {
                    match inner.config.retry.next_delay(
                        number - delivery.retry_base,
                        after,
                        &mut rand::rng(),
                    ) {
                        Some(delay) => (
                            DeliveryStatus::Pending,
                            now + SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX),
                        ),
                        None => {
                            exhausted = true;
                            (DeliveryStatus::Failed, now)
                        }
                    }
                }
                Disposition::Gone => {
                    gone = true;
                    (DeliveryStatus::Failed, now)
                }
                _ => (DeliveryStatus::Failed, now),
            };
            (
                AttemptStatus::Failed,
                e.code,
                Some(response),
                next_status,
                next_at,
            )
        }
    };
    let response = with_request(response, sent_headers);
    let record = AttemptRecord {
        attempt: Attempt {
            id: ids::new_id(ids::ATTEMPT),
            delivery_id: delivery.id.clone(),
            tenant_id: delivery.tenant_id.clone(),
            event_id: event.id.clone(),
            destination_id: dest.id.clone(),
            destination_type: dest.kind.clone(),
            topic: event.topic.clone(),
            status,
            code,
            response_data: response,
            attempt_number: number,
            manual: delivery.manual,
            time: now,
            latency_ms,
        },
        status: next_status,
        next_attempt_at: next_at,
    };
    let outcome = record.attempt.status.as_str();
    tracing::debug!(
        event_id = %event.id, destination_id = %dest.id, delivery_id = %delivery.id,
        attempt_id = %record.attempt.id, attempt = number, outcome, code = %record.attempt.code,
        latency_ms, next = next_status.as_str(), "attempt"
    );
    metrics::counter!("herald_attempts_total", "outcome" => outcome, "destination_type" => dest.kind.clone()).increment(1);
    metrics::histogram!("herald_attempt_duration_seconds", "outcome" => outcome)
        .record(elapsed.as_secs_f64());
    if next_status != DeliveryStatus::Pending {
        metrics::counter!("herald_deliveries_total", "outcome" => next_status.as_str())
            .increment(1);
    }
    let attempt_copy = record.attempt.clone();
    let failures = match inner.store.record_attempt(record).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, delivery_id = %delivery.id, "cannot record attempt; the delivery will be retried when its lease expires");
            return;
        }
    };
    if next_status == DeliveryStatus::Failed {
        tracing::info!(
            event_id = %event.id, destination_id = %dest.id, delivery_id = %delivery.id, attempt_id = %attempt_copy.id,
            attempt = number, code = %attempt_copy.code, "delivery failed for good"
        );
    }
    if exhausted {
        inner.alerts.exhausted(dest, &event, &attempt_copy);
    }
    if gone {
        disable(inner, dest, now, "the receiver answered 410 Gone").await;
        return;
    }
    let step = inner.alerts.config().step(failures);
    if let Some(level) = step.level {
        inner
            .alerts
            .consecutive_failure(dest, failures, level, step.disable);
    }
    if step.disable {
        disable(inner, dest, now, "too many consecutive failures").await;
    }
}

/// A job whose destination this node's routing table lacks or shows disabled. The store
/// decides: when the destination is gone or disabled there too (a publish raced with the
/// change, possibly on another node), the delivery is cancelled; otherwise this node's table
/// was behind, so it is refreshed and the delivery handed back, due now, to be claimed again.
async fn settle_unroutable(inner: &Inner, delivery: &herald_core::Delivery) {
    let now = inner.clock.now();
    let stored = inner
        .store
        .get_destination(&delivery.tenant_id, &delivery.destination_id)
        .await;
    let outcome = match stored {
        Ok(Some(d)) if d.is_active(now) => {
            inner
                .routes
                .set(&delivery.tenant_id, &delivery.destination_id, Some(d));
            inner.store.defer(vec![delivery.id.clone()], now).await
        }
        Ok(_) => inner
            .store
            .cancel_deliveries(vec![delivery.id.clone()], now)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, delivery_id = %delivery.id, "cannot settle a delivery to a destination that is not routable here; it is looked at again when its lease expires");
    }
}

/// Makes sure this node's lease on a delivery outlasts the attempt about to start: a lease
/// with less than two attempt timeouts left is renewed first. Returns false when the lease is
/// lost (another claimer took the delivery after it expired, or it is no longer pending):
/// then this node must not send it.
async fn hold_lease(
    inner: &Inner,
    delivery_id: &str,
    lease_until: Timestamp,
    now: Timestamp,
) -> bool {
    let timeout =
        SignedDuration::try_from(inner.config.attempt_timeout).unwrap_or(SignedDuration::MAX);
    if lease_until >= now.saturating_add(timeout.saturating_mul(2)).unwrap_or(now) {
        return true;
    }
    match inner
        .store
        .renew_leases(
            vec![(delivery_id.to_string(), lease_until)],
            now + inner.config.lease_span(),
        )
        .await
    {
        Ok(renewed) if !renewed.is_empty() => true,
        Ok(_) => {
            metrics::counter!("herald_leases_lost_total").increment(1);
            tracing::debug!(
                delivery_id,
                "lease lost while waiting in memory; not attempting"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, delivery_id, "cannot renew a lease; the delivery is attempted after it expires");
            false
        }
    }
}

/// The protocol headers of an attempt as recorded in its response data (`request.headers`),
/// for the portal's "request as sent" view. Signature values are masked: they are derived
/// from the secret and only useful to the receiver. A destination's own custom headers are
/// added by its driver and not recorded here (they may carry credentials).
fn request_headers(headers: &[(String, String)]) -> Value {
    let map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            let v = if k.to_ascii_lowercase().contains("signature") {
                let keep: String = v.chars().take(4).collect();
                format!("{keep}****")
            } else {
                v.clone()
            };
            (k.clone(), Value::String(v))
        })
        .collect();
    Value::Object(map)
}

/// Adds `request.headers` to an attempt's response data.
fn with_request(response: Option<Value>, headers: Option<Value>) -> Option<Value> {
    let Some(headers) = headers else {
        return response;
    };
    let mut m = match response {
        Some(Value::Object(m)) => m,
        None => serde_json::Map::new(),
        Some(other) => return Some(other),
    };
    m.insert("request".into(), json!({ "headers": headers }));
    Some(Value::Object(m))
}

fn with_error(response: Option<Value>, message: &str) -> Value {
    match response {
        Some(Value::Object(mut m)) => {
            m.insert("error".into(), Value::String(message.to_string()));
            Value::Object(m)
        }
        _ => json!({ "error": message }),
    }
}

/// Disables a destination (410 Gone, or the consecutive-failure threshold) and stops its
/// pending deliveries.
async fn disable(inner: &Inner, dest: &Destination, now: Timestamp, reason: &str) {
    // Start from the stored copy: another node may have changed the destination since this
    // node cached it, and a stale copy must not undo that change.
    let mut d = match inner.store.get_destination(&dest.tenant_id, &dest.id).await {
        Ok(Some(d)) => d,
        Ok(None) => return, // deleted meanwhile
        Err(e) => {
            tracing::warn!(error = %e, destination_id = %dest.id, "cannot reload a destination before disabling it; using the cached copy");
            dest.clone()
        }
    };
    if !d.is_enabled() {
        // Already disabled (by another node, or a concurrent attempt here).
        inner.routes.upsert(d);
        return;
    }
    d.disabled_at = Some(now);
    d.updated_at = now;
    match inner.store.update_destination(&d, true, now).await {
        Ok(()) => {
            tracing::warn!(destination_id = %d.id, tenant_id = %d.tenant_id, reason, "destination disabled");
            metrics::counter!("herald_destinations_disabled_total").increment(1);
            inner.alerts.disabled(&d, reason);
            inner.routes.upsert(d);
        }
        Err(e) => tracing::error!(error = %e, destination_id = %d.id, "cannot disable destination"),
    }
}

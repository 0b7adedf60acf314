//! Workers: the dispatcher that turns queued jobs into attempts, the poller that refills the
//! queue from the store, and one attempt from message building to recorded outcome.
//!
//! Concurrency is bounded by the in-memory queue (`queue_capacity`) and, per attempt, by the
//! slots of [`crate::admission`]: its destination's (adaptive, shrinking while it times out),
//! its tenant's (`tenant_max_in_flight`) and the global pool's (`max_in_flight`), taken in that
//! order, so a slow destination holds at most its own share and a tenant at most its own.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use herald_core::destination::{DeliveryError, Disposition, OutboundMessage};
use herald_core::operator::OPERATOR_TENANT;
use herald_core::signing::{self, SignatureOverrides, SigningConfig, SigningMode};
use herald_core::{Attempt, AttemptStatus, DeliveryStatus, Destination, Event, ids};
use herald_store::{AttemptEffects, AttemptRecord, Job};
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::admission::{self, Admission, Concurrency, Slot};
use crate::routes::Route;
use crate::telemetry::event_at;
use crate::{EngineConfig, Inner};

/// Governor's view of the engine's [`herald_core::Clock`], so rate limits space attempts by
/// the same clock as everything else (a `ManualClock` in tests).
#[derive(Clone)]
struct LimiterClock(Arc<dyn herald_core::Clock>);

impl LimiterClock {
    fn at(t: Timestamp) -> governor::nanos::Nanos {
        governor::nanos::Nanos::from(u64::try_from(t.as_nanosecond()).unwrap_or(0))
    }
}

impl governor::clock::Clock for LimiterClock {
    type Instant = governor::nanos::Nanos;

    fn now(&self) -> Self::Instant {
        Self::at(self.0.now())
    }
}

type Limiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    LimiterClock,
    governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
>;

/// The longest an attempt refused by its rate limiter sleeps before asking again. The wait it
/// is told is in clock time; the clock can jump (a `ManualClock`, or a stepped wall clock), so
/// the real sleep is capped and the limiter asked again.
const LIMITER_RECHECK: Duration = Duration::from_millis(100);

/// Waits until the gate's limiter allows one attempt, by the engine's clock.
async fn until_allowed(gate: &DestinationGate, limiter: &Limiter, clock: &dyn herald_core::Clock) {
    loop {
        match limiter.check() {
            Ok(()) => return,
            Err(not_until) => {
                gate.refusals.fetch_add(1, Ordering::SeqCst);
                let wait = not_until.wait_time_from(LimiterClock::at(clock.now()));
                tokio::time::sleep(wait.clamp(Duration::from_millis(1), LIMITER_RECHECK)).await;
            }
        }
    }
}

/// Per-destination admission state.
pub(crate) struct DestinationGate {
    /// Attempts in flight to this destination (an adaptive limit).
    slots: Arc<Concurrency>,
    /// Even spacing of attempts, when the destination has a rate limit.
    limiter: Option<Arc<Limiter>>,
    /// Jobs spawned and waiting for a slot or the limiter.
    waiting: AtomicUsize,
    /// Times the limiter refused an attempt (each waiting attempt asks again, see
    /// [`LIMITER_RECHECK`]).
    refusals: AtomicU64,
    /// `(max_in_flight, rate_limit_per_minute)` the gate was built for.
    settings: (usize, u32),
}

/// Concurrency limits and counters.
pub(crate) struct Dispatch {
    /// Jobs taken off the queue and not yet finished (bounds spawned tasks).
    admit: Arc<Semaphore>,
    /// Permits `admit` started with.
    admit_total: usize,
    /// Tenant and global slots.
    admission: Admission,
    /// Per destination, by (tenant, id).
    gates: Mutex<HashMap<(String, String), Arc<DestinationGate>>>,
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
            admission: Admission::new(cfg.max_in_flight, cfg.tenant_max_in_flight),
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

    /// Times the rate limiter of a destination refused an attempt (0 without a limiter).
    pub(crate) fn rate_limit_refusals(&self, tenant_id: &str, id: &str) -> u64 {
        self.gates
            .lock()
            .get(&(tenant_id.to_string(), id.to_string()))
            .map_or(0, |g| g.refusals.load(Ordering::SeqCst))
    }

    /// Jobs taken off the queue and not finished yet (waiting for a slot, or in flight).
    pub(crate) fn admitted(&self) -> usize {
        self.admit_total - self.admit.available_permits()
    }

    /// Whether a job for `gate`'s destination goes back to the store instead of waiting in
    /// memory: its destination already has many jobs waiting, and they take a good part of
    /// the memory budget that other destinations need. A destination that is merely busy while
    /// there is room waits in memory, so its jobs start as soon as it has capacity instead of
    /// after a trip through the store.
    fn must_shed(&self, gate: &DestinationGate) -> bool {
        let backlog_limit = (gate.settings.0 * 4).max(256);
        gate.waiting.load(Ordering::SeqCst) >= backlog_limit
            && self.admitted() >= self.admit_total / 2
    }

    /// The gate for a destination, rebuilt when its limits changed.
    fn gate(&self, route: &Route, clock: &Arc<dyn herald_core::Clock>) -> Arc<DestinationGate> {
        let d = &route.destination;
        let limits = &route.delivery.settings;
        let max = limits
            .max_in_flight
            .map_or(self.destination_limit, |n| n as usize);
        let rate = limits.rate_limit_per_minute.unwrap_or(0);
        let key = (d.tenant_id.clone(), d.id.clone());
        let mut gates = self.gates.lock();
        if let Some(g) = gates.get(&key)
            && g.settings == (max, rate)
        {
            return g.clone();
        }
        let limiter = NonZeroU32::new(rate).map(|r| {
            let period = Duration::from_secs(60) / r.get();
            let quota = governor::Quota::with_period(period.max(Duration::from_micros(1)))
                .expect("non-zero period")
                .allow_burst(NonZeroU32::MIN);
            Arc::new(governor::RateLimiter::direct_with_clock(
                quota,
                LimiterClock(clock.clone()),
            ))
        });
        let gate = Arc::new(DestinationGate {
            slots: Concurrency::new(&d.id, max),
            limiter,
            waiting: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
            settings: (max, rate),
        });
        gates.insert(key, gate.clone());
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
            inner.wake.note(at);
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
        let gate = inner.dispatch.gate(&route, &inner.clock);
        if inner.dispatch.must_shed(&gate) {
            shed.push(job.delivery.id);
            continue;
        }
        let Ok(admit) = inner.dispatch.admit.clone().acquire_owned().await else {
            break;
        };
        gate.waiting.fetch_add(1, Ordering::SeqCst);
        let inner = inner.clone();
        tokio::spawn(async move {
            let _admit = admit;
            // Waiting for capacity ends early when the engine stops; the job is handed back.
            let slot = tokio::select! {
                s = gate.slots.acquire() => s,
                _ = inner.stopping.cancelled() => None,
            };
            if slot.is_some()
                && let Some(l) = &gate.limiter
            {
                tokio::select! {
                    _ = until_allowed(&gate, l, inner.clock.as_ref()) => {}
                    _ = inner.stopping.cancelled() => {}
                }
            }
            gate.waiting.fetch_sub(1, Ordering::SeqCst);
            // Then the tenant's slot and a global one (see `admission`).
            let slot = match slot {
                Some(s) => tokio::select! {
                    s = inner.dispatch.admission.admit(&job.delivery.tenant_id, s) => s,
                    _ = inner.stopping.cancelled() => None,
                },
                None => None,
            };
            let Some(slot) = slot.filter(|_| !inner.stopping.is_cancelled()) else {
                inner.dispatch.hand_back(job.delivery.id);
                return;
            };
            inner.dispatch.in_flight.fetch_add(1, Ordering::SeqCst);
            attempt(&inner, job, slot).await;
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
            inner.wake.take_due(now);
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
        // Idle: sleep until the interval ends, work is announced, or work this node left in
        // the store comes due; an earlier due time noted meanwhile shortens the sleep.
        let interval_ends = tokio::time::Instant::now() + inner.config.poll_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(until_next_look(&inner, interval_ends)) => break,
                _ = inner.poke.notified() => break,
                _ = inner.wake.changed() => continue,
                _ = inner.stopping.cancelled() => return,
            }
        }
    }
    tracing::debug!("poller stopped");
}

/// How long the idle poller sleeps: its interval, or less when work this node left in the
/// store comes due sooner (see [`crate::wake`]).
fn until_next_look(inner: &Inner, interval_ends: tokio::time::Instant) -> Duration {
    let interval = interval_ends.saturating_duration_since(tokio::time::Instant::now());
    match inner.wake.next() {
        Some(at) => {
            let wait = at.duration_since(inner.clock.now());
            Duration::try_from(wait)
                .unwrap_or(Duration::ZERO)
                .min(interval)
        }
        None => interval,
    }
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

/// One attempt of one delivery, start to recorded finish, as five stages: [`prepare`] (route,
/// lease, message, signature) → [`send`] (with the deadline) → [`classify`] → [`decide`]
/// (retry policy and clock) → [`record`] (one store call, which also applies the failure
/// policy and writes any operator events). `slot` (the destination's, the tenant's and the
/// global one) is held while the request is out and given back before the result is recorded,
/// so bookkeeping latency (a database round trip) never limits how many requests a destination
/// gets; a timeout shrinks the destination's limit.
///
/// The attempt is an `attempt` span (event, delivery, destination, tenant, attempt number,
/// outcome), a root of its own or — when traces are exported and the event's publish is
/// remembered — a child of the publish span. The driver call runs inside it, so what a
/// broker client logs while sending carries the destination id.
async fn attempt(inner: &Inner, job: Job, slot: Slot) {
    let span = tracing::info_span!(
        parent: None,
        "attempt",
        event_id = %job.event.id,
        delivery_id = %job.delivery.id,
        destination_id = %job.delivery.destination_id,
        tenant_id = %job.delivery.tenant_id,
        attempt = job.delivery.attempts + 1,
        destination_type = tracing::field::Empty,
        outcome = tracing::field::Empty,
        code = tracing::field::Empty,
        next = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(t) = &inner.traces {
        t.adopt(&job.event.tenant_id, &job.event.id, &span);
    }
    let Some(prepared) = prepare(inner, job).instrument(span.clone()).await else {
        return;
    };
    span.record(
        "destination_type",
        tracing::field::display(&prepared.route.destination.kind),
    );
    let result = send(inner, &prepared).instrument(span.clone()).await;
    let finished = inner.clock.now();
    // Slot give-back point: the request is no longer out.
    slot.release(match &result {
        Err(e) if e.code == "timeout" => admission::Outcome::TimedOut,
        _ => admission::Outcome::Answered,
    });
    let outcome = classify(result);
    let decision = decide(
        &inner.config.retry,
        &prepared,
        &outcome,
        prepared.started,
        &mut rand::rng(),
    );
    // The result fields only serve an exported trace: nothing is logged inside the span after
    // this point (the attempt line carries them itself), and recording a field costs a
    // formatting pass in the log layer, so without an exporter they are not recorded.
    if inner.traces.is_some() {
        span.record("outcome", tracing::field::display(outcome.status.as_str()));
        span.record("code", tracing::field::display(&outcome.code));
        span.record("next", tracing::field::display(next_name(decision.status)));
        if outcome.status != AttemptStatus::Success {
            span.record("otel.status_code", "ERROR");
        }
    }
    record(inner, prepared, outcome, decision, finished).await;
}

/// What follows an attempt, as the attempt log line and span say it.
fn next_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "retry_scheduled",
        other => other.as_str(),
    }
}

/// A job that may be sent now: its route, the message (absent when the type has no driver in
/// this build) and the attempt's number and start time.
pub(crate) struct Prepared {
    pub(crate) delivery: herald_core::Delivery,
    pub(crate) event: Arc<Event>,
    pub(crate) route: Route,
    pub(crate) msg: Option<OutboundMessage>,
    pub(crate) number: u32,
    pub(crate) started: Timestamp,
}

/// Stage 1: finds the route (a deleted or disabled destination settles the job instead), makes
/// sure the lease outlasts the attempt, and builds and signs the message.
async fn prepare(inner: &Inner, job: Job) -> Option<Prepared> {
    let Job {
        delivery,
        event,
        lease_until,
    } = job;
    // Deleted meanwhile: the store cancelled the delivery with it.
    let route = inner
        .routes
        .get(&delivery.tenant_id, &delivery.destination_id)?;
    if !route.destination.is_enabled() {
        settle_unroutable(inner, &delivery).await;
        return None;
    }
    let now = inner.clock.now();
    if !hold_lease(inner, &delivery.id, lease_until, now).await {
        return None;
    }
    let msg = route
        .driver
        .as_ref()
        .map(|_| message(inner, &route, &event, &delivery.id, now));
    Some(Prepared {
        number: delivery.attempts + 1,
        delivery,
        event,
        route,
        msg,
        started: now,
    })
}

/// Stage 2: one send through the destination's driver, bounded by the attempt deadline.
async fn send(
    inner: &Inner,
    p: &Prepared,
) -> Result<herald_core::destination::Receipt, DeliveryError> {
    let (Some(driver), Some(msg)) = (&p.route.driver, &p.msg) else {
        return Err(DeliveryError::permanent(
            "unsupported_type",
            format!(
                "destination type {:?} is not available in this build or its settings are invalid",
                p.route.destination.kind
            ),
        ));
    };
    match tokio::time::timeout(inner.config.attempt_timeout, driver.deliver(msg)).await {
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

/// What an attempt's result means, before any policy is applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) status: AttemptStatus,
    pub(crate) code: String,
    pub(crate) response: Option<Value>,
    /// For a failure: retry (after at least), permanent, or gone.
    pub(crate) disposition: Option<Disposition>,
}

/// Stage 3: the driver's answer as an attempt outcome (the error message goes into the
/// response data).
pub(crate) fn classify(
    result: Result<herald_core::destination::Receipt, DeliveryError>,
) -> Outcome {
    match result {
        Ok(receipt) => Outcome {
            status: AttemptStatus::Success,
            code: receipt.code,
            response: receipt.response,
            disposition: None,
        },
        Err(e) => Outcome {
            status: AttemptStatus::Failed,
            response: Some(with_error(e.response, &e.message)),
            code: e.code,
            disposition: Some(e.disposition),
        },
    }
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) status: DeliveryStatus,
    pub(crate) next_attempt_at: Timestamp,
    /// The schedule has no retry left.
    pub(crate) exhausted: bool,
    /// The receiver said the destination is gone.
    pub(crate) gone: bool,
}

/// Stage 4: the retry policy applied at `now`: success ends the delivery; a retryable failure
/// of an event eligible for retries is due again after the schedule's next delay (stretched
/// by `Retry-After` within the policy's cap) or, when the schedule is used up, fails for good;
/// anything else fails for good. Manual attempts are never retried.
pub(crate) fn decide(
    policy: &herald_core::retry::RetryPolicy,
    p: &Prepared,
    outcome: &Outcome,
    now: Timestamp,
    rng: &mut impl rand::Rng,
) -> Decision {
    let done = |status, exhausted, gone| Decision {
        status,
        next_attempt_at: now,
        exhausted,
        gone,
    };
    match &outcome.disposition {
        None => done(DeliveryStatus::Success, false, false),
        Some(Disposition::Retry { after }) if p.event.eligible_for_retry && !p.delivery.manual => {
            match policy.next_delay(p.number - p.delivery.retry_base, *after, rng) {
                Some(delay) => Decision {
                    status: DeliveryStatus::Pending,
                    next_attempt_at: now
                        + SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX),
                    exhausted: false,
                    gone: false,
                },
                None => done(DeliveryStatus::Failed, true, false),
            }
        }
        Some(Disposition::Gone) => done(DeliveryStatus::Failed, false, true),
        Some(_) => done(DeliveryStatus::Failed, false, false),
    }
}

/// Stage 5: one store call records the attempt, moves the delivery and applies the failure
/// policy with its operator events (all in one transaction); then this node follows what the
/// store did (a disabled destination leaves the routing table, new operator deliveries wake
/// the poller).
async fn record(
    inner: &Inner,
    p: Prepared,
    outcome: Outcome,
    decision: Decision,
    finished: Timestamp,
) {
    let Prepared {
        delivery,
        event,
        route,
        msg,
        number,
        started,
    } = p;
    let dest = &route.destination;
    let latency_ms = u64::try_from(finished.duration_since(started).as_millis()).unwrap_or(0);
    let sent_headers = msg.as_ref().map(|m| request_headers(&m.headers));
    let status = outcome.status;
    let exhausted = decision.exhausted
        && inner
            .exhausted_window
            .admit(&dest.tenant_id, &dest.id, started);
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
            code: outcome.code,
            response_data: with_request(outcome.response, sent_headers),
            attempt_number: number,
            manual: delivery.manual,
            time: started,
            latency_ms,
        },
        status: decision.status,
        next_attempt_at: decision.next_attempt_at,
        effects: AttemptEffects {
            policy: inner.config.alerts.policy(),
            gone: decision.gone,
            exhausted: exhausted.then_some(event.time),
            attempt_events: dest.tenant_id != OPERATOR_TENANT
                && inner.routes.attempt_events(status),
        },
    };
    let outcome_name = status.as_str();
    let next = decision.status;
    let level = if status == AttemptStatus::Success {
        inner.config.attempt_log.success
    } else {
        inner.config.attempt_log.failure
    };
    if let Some(level) = level {
        let retry_at =
            (next == DeliveryStatus::Pending).then(|| decision.next_attempt_at.to_string());
        event_at!(
            level,
            target: "herald::attempt",
            event_id = %event.id, delivery_id = %delivery.id, destination_id = %dest.id,
            destination_type = %dest.kind, tenant_id = %dest.tenant_id,
            attempt_id = %record.attempt.id, attempt = number, outcome = %outcome_name,
            code = %record.attempt.code, latency_ms, next = %next_name(next),
            retry_at = %retry_at.as_deref().unwrap_or("-"), "attempt"
        );
    }
    metrics::counter!("herald_attempts_total", "outcome" => outcome_name, "destination_type" => dest.kind.clone()).increment(1);
    metrics::histogram!("herald_attempt_duration_seconds", "outcome" => outcome_name, "destination_type" => dest.kind.clone())
        .record(latency_ms as f64 / 1000.0);
    if next != DeliveryStatus::Pending {
        metrics::counter!("herald_deliveries_total", "outcome" => next.as_str()).increment(1);
    }
    let attempt_id = record.attempt.id.clone();
    let code = record.attempt.code.clone();
    let recorded = match inner.store.record_attempt(record).await {
        Ok(r) => {
            if next == DeliveryStatus::Pending {
                inner.wake.note(decision.next_attempt_at);
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, delivery_id = %delivery.id, "cannot record attempt; the delivery will be retried when its lease expires");
            return;
        }
    };
    if next == DeliveryStatus::Failed {
        tracing::info!(
            event_id = %event.id, destination_id = %dest.id, delivery_id = %delivery.id, attempt_id = %attempt_id,
            attempt = number, code = %code, "delivery failed for good"
        );
    }
    if recorded.disabled {
        let reason = if decision.gone {
            "the receiver answered 410 Gone"
        } else {
            "too many consecutive failures"
        };
        tracing::warn!(destination_id = %dest.id, tenant_id = %dest.tenant_id, reason, "destination disabled");
        metrics::counter!("herald_destinations_disabled_total").increment(1);
        follow_disable(inner, dest, started).await;
    }
    if recorded.operator_deliveries > 0 {
        inner.poke.notify_one();
    }
}

/// Updates the routing table after the store disabled a destination: the stored copy, or —
/// if it cannot be read — the cached one marked disabled, so this node routes nothing more
/// to it either way.
async fn follow_disable(inner: &Inner, dest: &Destination, now: Timestamp) {
    match inner.store.get_destination(&dest.tenant_id, &dest.id).await {
        Ok(stored) => inner.routes.set(&dest.tenant_id, &dest.id, stored),
        Err(e) => {
            tracing::warn!(error = %e, destination_id = %dest.id, "cannot reload a disabled destination; marking the cached copy");
            let mut d = dest.clone();
            d.disabled_at = Some(now);
            inner.routes.upsert(d);
        }
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

#[cfg(test)]
mod tests {
    //! The `decide` stage: the retry policy at a given time, with an injected RNG.

    use super::*;
    use herald_core::retry::{RetryPolicy, Schedule};
    use herald_core::{Delivery, Topics};
    use rand::SeedableRng;

    fn prepared(attempts: u32, eligible: bool, manual: bool) -> Prepared {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let d = Destination {
            id: "d".into(),
            tenant_id: "t".into(),
            kind: "scripted".into(),
            topics: Topics::All,
            filter: None,
            config: Default::default(),
            credentials: Default::default(),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: now,
            updated_at: now,
        };
        Prepared {
            delivery: Delivery {
                id: "dlv".into(),
                event_id: "e".into(),
                tenant_id: "t".into(),
                destination_id: "d".into(),
                status: DeliveryStatus::Pending,
                attempts,
                next_attempt_at: now,
                manual,
                retry_base: 0,
                created_at: now,
            },
            event: Arc::new(Event {
                id: "e".into(),
                tenant_id: "t".into(),
                destination_id: None,
                topic: "x".into(),
                time: now,
                metadata: Default::default(),
                data: json!({}),
                eligible_for_retry: eligible,
            }),
            route: Route {
                destination: Arc::new(d),
                driver: None,
                delivery: Arc::new(Default::default()),
            },
            msg: None,
            number: attempts + 1,
            started: now,
        }
    }

    fn failed(d: Disposition) -> Outcome {
        Outcome {
            status: AttemptStatus::Failed,
            code: "503".into(),
            response: None,
            disposition: Some(d),
        }
    }

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            schedule: Schedule::Exponential {
                initial: Duration::from_secs(30),
                factor: 2.0,
                max_interval: Duration::from_secs(3600),
                retries: 3,
            },
            jitter,
            max_retry_after: Duration::from_secs(600),
        }
    }

    fn delay(p: &RetryPolicy, attempts: u32, d: Disposition, seed: u64) -> Option<i64> {
        let prep = prepared(attempts, true, false);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let out = decide(p, &prep, &failed(d), prep.started, &mut rng);
        (out.status == DeliveryStatus::Pending)
            .then(|| out.next_attempt_at.duration_since(prep.started).as_secs())
    }

    const RETRY: Disposition = Disposition::Retry { after: None };

    #[test]
    fn the_schedule_is_followed_and_then_exhausted() {
        let p = policy(0.0);
        let delays: Vec<_> = (0..4).map(|n| delay(&p, n, RETRY, 1)).collect();
        assert_eq!(delays, [Some(30), Some(60), Some(120), None]);
        let prep = prepared(3, true, false);
        let out = decide(
            &p,
            &prep,
            &failed(RETRY),
            prep.started,
            &mut rand::rngs::StdRng::seed_from_u64(1),
        );
        assert_eq!(out.status, DeliveryStatus::Failed);
        assert!(out.exhausted && !out.gone);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let p = policy(0.1);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..500 {
            let d = delay(&p, 1, RETRY, seed).unwrap();
            assert!((54..=66).contains(&d), "60 s ± 10 %: {d}");
            seen.insert(d);
        }
        assert!(seen.len() > 5, "jitter spreads: {seen:?}");
    }

    #[test]
    fn retry_after_stretches_up_to_the_cap_and_never_shortens() {
        let p = policy(0.0);
        let after = |s| Disposition::Retry {
            after: Some(Duration::from_secs(s)),
        };
        assert_eq!(delay(&p, 0, after(5), 1), Some(30), "never shorter");
        assert_eq!(delay(&p, 0, after(300), 1), Some(300));
        assert_eq!(delay(&p, 0, after(86_400), 1), Some(600), "capped");
    }

    #[test]
    fn success_permanent_gone_manual_and_ineligible() {
        let p = policy(0.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let prep = prepared(0, true, false);
        let ok = Outcome {
            status: AttemptStatus::Success,
            code: "200".into(),
            response: None,
            disposition: None,
        };
        assert_eq!(
            decide(&p, &prep, &ok, prep.started, &mut rng).status,
            DeliveryStatus::Success
        );
        let permanent = decide(
            &p,
            &prep,
            &failed(Disposition::Permanent),
            prep.started,
            &mut rng,
        );
        assert_eq!(permanent.status, DeliveryStatus::Failed);
        assert!(!permanent.exhausted && !permanent.gone);
        let gone = decide(
            &p,
            &prep,
            &failed(Disposition::Gone),
            prep.started,
            &mut rng,
        );
        assert!(gone.gone && gone.status == DeliveryStatus::Failed);
        for prep in [prepared(0, true, true), prepared(0, false, false)] {
            let out = decide(&p, &prep, &failed(RETRY), prep.started, &mut rng);
            assert_eq!(
                out.status,
                DeliveryStatus::Failed,
                "manual or ineligible: no retry"
            );
            assert!(!out.exhausted);
        }
    }
}

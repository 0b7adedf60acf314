//! Herald's delivery engine: routes published events to destinations, persists them, and
//! drives every delivery to success or a final failure.
//!
//! Flow: [`Engine::publish`] matches the event against the tenant's destinations (an
//! in-memory routing table, [`routes::Routes`]), writes the event and its deliveries in one
//! durable transaction, then hands the deliveries straight to the dispatcher in memory (the hot
//! path: no polling between publish and first attempt). Deliveries that do not fit in memory,
//! retries that come due, and leases left by a crash are found by the poller
//! ([`Store::claim_due`]). Each attempt is signed, sent with a deadline, classified, and its
//! result recorded; only the engine decides about retries.
//!
//! The engine knows destination types only through [`herald_core::destination::Registry`];
//! it knows stores only through [`Store`].
//!
//! Several nodes may share one store (PostgreSQL). Then each node delivers what it accepted
//! and what its poller claims; the store's [`herald_store::Notice`]s keep the routing table in step with
//! changes made on other nodes and wake the poller when another node leaves work behind
//! ([`notices`]).

mod admission;
pub mod config;
mod dispatch;
pub mod expiry;
mod notices;
pub mod operator;
mod retention;
mod rollup;
pub mod routes;
pub mod telemetry;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use herald_core::destination::Registry;
use herald_core::{Clock, Delivery, DeliveryStatus, Destination, Event, ids};
use herald_store::{NewDelivery, PublishOutcome, Store, StoreError, StoredEvent};
use tokio::sync::{Notify, mpsc};
use tokio_util_shim::CancellationFlag;
use tracing::Instrument;

pub use config::EngineConfig;

/// Result of [`Engine::publish`].
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The event id (given or generated).
    pub id: String,
    /// Whether this was a duplicate of an event accepted within the idempotency window.
    pub duplicate: bool,
    /// Destinations the event was routed to.
    pub destination_ids: Vec<String>,
    /// Whether the event's tenant exists. An event for an unknown tenant is accepted (it
    /// matches no destination) unless [`EngineConfig::require_known_tenant`] is set.
    pub tenant_found: bool,
}

/// One event of [`Engine::publish_batch`] handed to the store, and what to do after the commit.
struct Written<'q> {
    /// Its place in the batch.
    index: usize,
    tenant_found: bool,
    id: String,
    destination_ids: Vec<String>,
    /// Queue room reserved for its deliveries, the event and the deliveries to dispatch;
    /// `None` when they wait in the store for the poller.
    dispatch: Option<(
        mpsc::PermitIterator<'q, herald_store::Job>,
        Arc<Event>,
        Vec<Delivery>,
    )>,
}

/// A new pending delivery of `event` to destination `destination_id`, due `now`.
fn new_delivery(event: &Event, destination_id: &str, now: jiff::Timestamp) -> Delivery {
    Delivery {
        id: ids::new_id(ids::DELIVERY),
        event_id: event.id.clone(),
        tenant_id: event.tenant_id.clone(),
        destination_id: destination_id.to_string(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        manual: false,
        retry_base: 0,
        created_at: now,
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The tenant used this id for an event accepted before the idempotency window.
    #[error("an event with id {0:?} already exists")]
    IdTaken(String),
    /// The tenant does not exist and [`EngineConfig::require_known_tenant`] is set; nothing
    /// was stored.
    #[error("tenant {0:?} does not exist")]
    UnknownTenant(String),
    /// The store failed; nothing was accepted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a manual retry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The destination is disabled.
    #[error("destination {0:?} is disabled; enable it before retrying")]
    Disabled(String),
    /// The destination's subscription has expired.
    #[error("destination {0:?} has expired; renew it before retrying")]
    Expired(String),
    /// The destination does not subscribe to the event's topic.
    #[error("destination {destination:?} does not subscribe to topic {topic:?}")]
    TopicMismatch {
        /// Destination id.
        destination: String,
        /// Event topic.
        topic: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle to the running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    registry: Registry,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    routes: routes::Routes,
    /// In-memory queue of leased jobs, feeding the dispatcher.
    queue: mpsc::Sender<herald_store::Job>,
    /// Wakes the poller early (work was left in the store for it).
    poke: Notify,
    /// Due times of work this node left in the store (retries, shed deliveries): the poller
    /// wakes at the earliest instead of waiting for its interval.
    wake: wake::WakeSchedule,
    stopping: CancellationFlag,
    dispatch: dispatch::Dispatch,
    /// Per-node limit on exhausted-retries alerts.
    exhausted_window: operator::ExhaustedWindow,
    /// Expiry notices already settled on this node.
    expiry: expiry::Settled,
    /// Recent events' trace context, when traces are exported.
    traces: Option<telemetry::Traces>,
}

/// A tiny shutdown flag with async waiting, so the engine needs no extra crate for it.
mod tokio_util_shim {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::Notify;

    /// Set once; wakes every waiter.
    #[derive(Default)]
    pub struct CancellationFlag {
        set: AtomicBool,
        notify: Notify,
    }

    impl CancellationFlag {
        /// Raises the flag.
        pub fn cancel(&self) {
            self.set.store(true, Ordering::SeqCst);
            self.notify.notify_waiters();
        }

        /// Whether the flag is up.
        pub fn is_cancelled(&self) -> bool {
            self.set.load(Ordering::SeqCst)
        }

        /// Resolves once the flag is up.
        pub async fn cancelled(&self) {
            loop {
                let notified = self.notify.notified();
                if self.is_cancelled() {
                    return;
                }
                notified.await;
            }
        }
    }
}

impl Engine {
    /// Loads the routing table, releases leases left by a previous run when `release_leases`
    /// (single-node embedded store only: on a shared store other nodes hold live leases), and
    /// starts the dispatcher, the poller, retention and — when the store publishes
    /// [`herald_store::Notice`]s — the task that follows other nodes' changes.
    pub async fn start(
        store: Arc<dyn Store>,
        registry: Registry,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        release_leases: bool,
    ) -> Result<Engine, StoreError> {
        if release_leases {
            let n = store.release_all_leases().await?;
            if n > 0 {
                tracing::info!(
                    deliveries = n,
                    "re-queued deliveries that were in flight when herald last stopped"
                );
            }
        }
        // Subscribe before loading, so no change between the two is missed.
        let notices = store.notices();
        let routes = routes::Routes::new(registry.clone());
        routes.load(store.list_all_destinations().await?);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let inner = Arc::new(Inner {
            dispatch: dispatch::Dispatch::new(&config),
            exhausted_window: operator::ExhaustedWindow::new(
                config.alerts.exhausted_retries_window,
            ),
            traces: config.traces.as_ref().map(telemetry::Traces::new),
            store,
            registry,
            clock,
            config,
            routes,
            queue: tx,
            poke: Notify::new(),
            wake: wake::WakeSchedule::default(),
            stopping: CancellationFlag::default(),
            expiry: expiry::Settled::default(),
        });
        tokio::spawn(dispatch::run_dispatcher(inner.clone(), rx));
        tokio::spawn(dispatch::run_poller(inner.clone()));
        tokio::spawn(retention::run(inner.clone()));
        tokio::spawn(rollup::run(inner.clone()));
        tokio::spawn(expiry::run(inner.clone()));
        if let Some(rx) = notices {
            tokio::spawn(notices::run(inner.clone(), rx));
        }
        Ok(Engine { inner })
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The destination types available.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Routes, persists and enqueues an event. Returns once the event and its deliveries are
    /// durably committed.
    ///
    /// Runs in a `publish` span (event, tenant, topic, destinations, outcome), a child of the
    /// caller's span; the attempts of the event's deliveries on this node become its children
    /// when traces are exported (see [`telemetry`]).
    pub async fn publish(&self, event: Event) -> Result<Published, PublishError> {
        let span = tracing::info_span!(
            "publish",
            event_id = %event.id,
            tenant_id = %event.tenant_id,
            topic = %event.topic,
            destinations = tracing::field::Empty,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(t) = &self.inner.traces {
            t.remember(&event.tenant_id, &event.id, &span);
        }
        let result = self.publish_routed(event).instrument(span.clone()).await;
        // As for attempts: the outcome fields only serve an exported trace.
        if self.inner.traces.is_none() {
            return result;
        }
        match &result {
            Ok(p) => {
                span.record("destinations", p.destination_ids.len());
                span.record(
                    "outcome",
                    tracing::field::display(if p.duplicate { "duplicate" } else { "accepted" }),
                );
            }
            Err(e) => {
                span.record(
                    "outcome",
                    tracing::field::display(match e {
                        PublishError::IdTaken(_) => "conflict",
                        PublishError::UnknownTenant(_) => "unknown_tenant",
                        PublishError::Store(_) => "error",
                    }),
                );
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }

    async fn publish_routed(&self, event: Event) -> Result<Published, PublishError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let matched = inner.routes.matching(&event, inner.clock.now());
        let ids: Vec<String> = matched.iter().map(|d| d.id.clone()).collect();
        // A matched destination belongs to the tenant, so the store is only asked when
        // nothing matched: publishing to tenants with destinations costs no extra read.
        let tenant_found =
            !matched.is_empty() || inner.store.get_tenant(&event.tenant_id).await?.is_some();
        if !tenant_found {
            let refused = inner.config.require_known_tenant;
            metrics::counter!(
                "herald_events_unknown_tenant_total",
                "outcome" => if refused { "refused" } else { "accepted" }
            )
            .increment(1);
            if refused {
                return Err(PublishError::UnknownTenant(event.tenant_id));
            }
        }
        // Reserve room in the in-memory queue first: reserved deliveries are created leased
        // and dispatched right after the commit; the rest wait in the store for the poller.
        let permits = if matched.is_empty() {
            None
        } else {
            inner.queue.try_reserve_many(matched.len()).ok()
        };
        let lease_until = now + inner.config.lease_span();
        let deliveries: Vec<NewDelivery> = matched
            .iter()
            .map(|d| NewDelivery {
                delivery: new_delivery(&event, &d.id, now),
                lease_until: permits.as_ref().map(|_| lease_until),
            })
            .collect();
        let dedup_since = now - inner.config.idempotency_span();
        let jobs: Vec<Delivery> = deliveries.iter().map(|d| d.delivery.clone()).collect();
        match inner
            .store
            .publish(&event, &ids, deliveries, dedup_since, now)
            .await?
        {
            PublishOutcome::Accepted => {
                metrics::counter!("herald_events_published_total", "outcome" => "accepted")
                    .increment(1);
                metrics::counter!("herald_deliveries_created_total").increment(ids.len() as u64);
            }
            PublishOutcome::Duplicate {
                matched_destination_ids,
            } => {
                metrics::counter!("herald_events_published_total", "outcome" => "duplicate")
                    .increment(1);
                return Ok(Published {
                    id: event.id,
                    duplicate: true,
                    destination_ids: matched_destination_ids,
                    tenant_found,
                });
            }
            PublishOutcome::IdTaken => {
                metrics::counter!("herald_events_published_total", "outcome" => "conflict")
                    .increment(1);
                return Err(PublishError::IdTaken(event.id));
            }
        }
        let id = event.id.clone();
        match permits {
            Some(permits) => {
                let event = Arc::new(event);
                for (permit, delivery) in permits.zip(jobs) {
                    permit.send(herald_store::Job {
                        delivery,
                        event: event.clone(),
                        lease_until,
                    });
                }
            }
            None if !ids.is_empty() => inner.poke.notify_one(),
            None => {}
        }
        Ok(Published {
            id,
            duplicate: false,
            destination_ids: ids,
            tenant_found,
        })
    }

    /// Routes, persists and enqueues several events in one store transaction
    /// ([`Store::publish_batch`]): returns once every accepted event and its deliveries are
    /// durably committed, with each event's result in order. An event refused on its own
    /// (unknown tenant with [`EngineConfig::require_known_tenant`], an id taken before the
    /// idempotency window) is reported in its place and does not stop the others; an id
    /// repeated inside the batch is a duplicate of its first occurrence. A store failure fails
    /// the whole batch, with nothing accepted.
    ///
    /// Runs in one `publish_batch` span (events, accepted); the events' attempts on this node
    /// become its children when traces are exported.
    pub async fn publish_batch(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<Published, PublishError>>, StoreError> {
        let span = tracing::info_span!(
            "publish_batch",
            events = events.len(),
            accepted = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(t) = &self.inner.traces {
            for e in &events {
                t.remember(&e.tenant_id, &e.id, &span);
            }
        }
        let result = self
            .publish_batch_routed(events)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(results) => {
                span.record(
                    "accepted",
                    results
                        .iter()
                        .filter(|r| matches!(r, Ok(p) if !p.duplicate))
                        .count(),
                );
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }

    async fn publish_batch_routed(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<Published, PublishError>>, StoreError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let lease_until = now + inner.config.lease_span();
        // Whether each tenant exists, asked once per tenant of the batch that matched nothing.
        let mut known: std::collections::HashMap<String, bool> = Default::default();
        let mut results: Vec<Option<Result<Published, PublishError>>> =
            Vec::with_capacity(events.len());
        // Per event written: its index, whether its tenant exists, and the queue room
        // reserved for its deliveries (none: they wait in the store for the poller).
        let mut written = Vec::with_capacity(events.len());
        let mut batch = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            let matched = inner.routes.matching(&event, now);
            let ids: Vec<String> = matched.iter().map(|d| d.id.clone()).collect();
            let tenant_found = if matched.is_empty() {
                match known.get(&event.tenant_id) {
                    Some(found) => *found,
                    None => {
                        let found = inner.store.get_tenant(&event.tenant_id).await?.is_some();
                        known.insert(event.tenant_id.clone(), found);
                        found
                    }
                }
            } else {
                true
            };
            if !tenant_found {
                let refused = inner.config.require_known_tenant;
                metrics::counter!(
                    "herald_events_unknown_tenant_total",
                    "outcome" => if refused { "refused" } else { "accepted" }
                )
                .increment(1);
                if refused {
                    results.push(Some(Err(PublishError::UnknownTenant(event.tenant_id))));
                    continue;
                }
            }
            results.push(None);
            let permits = if matched.is_empty() {
                None
            } else {
                inner.queue.try_reserve_many(matched.len()).ok()
            };
            let deliveries: Vec<NewDelivery> = matched
                .iter()
                .map(|d| NewDelivery {
                    delivery: new_delivery(&event, &d.id, now),
                    lease_until: permits.as_ref().map(|_| lease_until),
                })
                .collect();
            written.push(Written {
                index,
                tenant_found,
                id: event.id.clone(),
                destination_ids: ids.clone(),
                // Dispatched from memory after the commit: keep what the jobs need.
                dispatch: permits.map(|p| {
                    (
                        p,
                        Arc::new(event.clone()),
                        deliveries.iter().map(|d| d.delivery.clone()).collect(),
                    )
                }),
            });
            batch.push(herald_store::NewEvent {
                event,
                matched: ids,
                deliveries,
            });
        }
        let dedup_since = now - inner.config.idempotency_span();
        let outcomes = if batch.is_empty() {
            Vec::new()
        } else {
            inner.store.publish_batch(batch, dedup_since, now).await?
        };
        let mut poke = false;
        let (mut accepted, mut duplicates, mut conflicts, mut created) = (0u64, 0u64, 0u64, 0u64);
        for (w, outcome) in written.into_iter().zip(outcomes) {
            let result = match outcome {
                PublishOutcome::Accepted => {
                    accepted += 1;
                    created += w.destination_ids.len() as u64;
                    match w.dispatch {
                        Some((permits, event, jobs)) => {
                            for (permit, delivery) in permits.zip(jobs) {
                                permit.send(herald_store::Job {
                                    delivery,
                                    event: event.clone(),
                                    lease_until,
                                });
                            }
                        }
                        None if !w.destination_ids.is_empty() => poke = true,
                        None => {}
                    }
                    Ok(Published {
                        id: w.id,
                        duplicate: false,
                        destination_ids: w.destination_ids,
                        tenant_found: w.tenant_found,
                    })
                }
                PublishOutcome::Duplicate {
                    matched_destination_ids,
                } => {
                    duplicates += 1;
                    Ok(Published {
                        id: w.id,
                        duplicate: true,
                        destination_ids: matched_destination_ids,
                        tenant_found: w.tenant_found,
                    })
                }
                PublishOutcome::IdTaken => {
                    conflicts += 1;
                    Err(PublishError::IdTaken(w.id))
                }
            };
            results[w.index] = Some(result);
        }
        if poke {
            inner.poke.notify_one();
        }
        for (outcome, n) in [
            ("accepted", accepted),
            ("duplicate", duplicates),
            ("conflict", conflicts),
        ] {
            if n > 0 {
                metrics::counter!("herald_events_published_total", "outcome" => outcome)
                    .increment(n);
            }
        }
        if created > 0 {
            metrics::counter!("herald_deliveries_created_total").increment(created);
        }
        // Every index was either refused above or written.
        Ok(results.into_iter().flatten().collect())
    }

    /// Queues one manual attempt of `event` to `destination`. Does nothing new when a delivery
    /// of that event to that destination is already pending.
    pub async fn retry(
        &self,
        event: &StoredEvent,
        destination: &Destination,
    ) -> Result<(), RetryError> {
        if !destination.is_enabled() {
            return Err(RetryError::Disabled(destination.id.clone()));
        }
        if destination.is_expired(self.inner.clock.now()) {
            return Err(RetryError::Expired(destination.id.clone()));
        }
        if !destination.topics.matches(&event.event.topic) {
            return Err(RetryError::TopicMismatch {
                destination: destination.id.clone(),
                topic: event.event.topic.clone(),
            });
        }
        let now = self.inner.clock.now();
        let delivery = Delivery {
            id: ids::new_id(ids::DELIVERY),
            event_id: event.event.id.clone(),
            tenant_id: event.event.tenant_id.clone(),
            destination_id: destination.id.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            manual: true,
            retry_base: 0,
            created_at: now,
        };
        self.inner
            .store
            .add_delivery(NewDelivery {
                delivery,
                lease_until: None,
            })
            .await?;
        self.inner.poke.notify_one();
        Ok(())
    }

    /// Re-queues finished deliveries of one destination (bulk replay) and wakes the poller.
    /// Returns how many were re-queued.
    pub async fn replay(&self, q: &herald_store::ReplayQuery) -> Result<u64, StoreError> {
        let n = self.inner.store.replay(q, self.inner.clock.now()).await?;
        if n > 0 {
            self.inner.poke.notify_one();
        }
        Ok(n)
    }

    /// Writes an operator event (built with [`herald_core::operator`], e.g.
    /// [`herald_core::operator::expiry`]) with a delivery to every operator destination that
    /// subscribes to it, in one store transaction, and wakes the poller to deliver them. An
    /// event whose id is already stored is not written again, so nodes that notice the same
    /// thing may all call this with the same id. Returns the deliveries created.
    pub async fn emit_operator_event(&self, event: &Event) -> Result<u32, StoreError> {
        let n = self
            .inner
            .store
            .emit_operator_event(event, self.inner.clock.now())
            .await?;
        if n > 0 {
            self.inner.poke.notify_one();
        }
        Ok(n)
    }

    /// Makes the store hold exactly `wanted` as the operator destination `id` (a destination
    /// defined by configuration, such as `alerts.callback_url`): creates it, updates its
    /// type, topics, config and credentials when they differ (keeping whether it is
    /// disabled), or deletes it when `wanted` is `None`.
    pub async fn sync_operator_destination(
        &self,
        id: &str,
        wanted: Option<Destination>,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let tenant = herald_core::operator::OPERATOR_TENANT;
        let stored = store.get_destination(tenant, id).await?;
        match (stored, wanted) {
            (None, None) => {}
            (Some(_), None) => {
                store.delete_destination(tenant, id, now).await?;
                self.destination_removed(tenant, id);
            }
            (None, Some(mut d)) => {
                d.id = id.to_string();
                d.tenant_id = tenant.to_string();
                d.created_at = now;
                d.updated_at = now;
                match store.insert_destination(&d).await {
                    Ok(()) => self.destination_saved(&d),
                    // Another node starting at the same time created it first.
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            (Some(old), Some(d)) => {
                if old.kind != d.kind
                    || old.topics != d.topics
                    || old.config != d.config
                    || old.credentials != d.credentials
                {
                    let mut new = old.clone();
                    new.kind = d.kind;
                    new.topics = d.topics;
                    new.config = d.config;
                    new.credentials = d.credentials;
                    new.updated_at = now;
                    store.update_destination(&new, false, now).await?;
                    self.destination_saved(&new);
                }
            }
        }
        Ok(())
    }

    /// Tells the engine a destination was created or changed (routing and driver caches).
    /// A copy older than the cached one (by `updated_at`) is ignored, so a slow request cannot
    /// undo a newer change that already arrived from the store.
    pub fn destination_saved(&self, d: &Destination) {
        self.inner.routes.upsert_if_newer(d.clone());
    }

    /// Reloads the whole routing table from the store (after a bulk write such as a CSV
    /// import, cheaper than one [`Engine::destination_saved`] per row).
    pub async fn reload_destinations(&self) -> Result<(), StoreError> {
        let all = self.inner.store.list_all_destinations().await?;
        self.inner.routes.load(all);
        Ok(())
    }

    /// Checks every destination's expiry now (also done every `expiry_check_interval`) and
    /// produces the notices that are due; see [`expiry`].
    pub async fn check_expiry(&self) -> expiry::ExpiryReport {
        expiry::check(&self.inner).await
    }

    /// Tells the engine a destination was deleted.
    pub fn destination_removed(&self, tenant_id: &str, id: &str) {
        self.inner.routes.remove(tenant_id, id);
    }

    /// Tells the engine a tenant (and all its destinations) was deleted.
    pub fn tenant_removed(&self, tenant_id: &str) {
        self.inner.routes.remove_tenant(tenant_id);
    }

    /// How many times tenant `tenant_id`'s destination `id`'s rate limiter (`rate_limit_per_minute`) has refused an
    /// attempt so far; an attempt it refuses asks again at least every 100 ms of real time and
    /// is refused each time until the engine's clock reaches its turn. For tests and diagnostics.
    pub fn rate_limit_refusals(&self, tenant_id: &str, id: &str) -> u64 {
        self.inner.dispatch.rate_limit_refusals(tenant_id, id)
    }

    /// Whether the dispatcher and poller are running.
    pub fn healthy(&self) -> bool {
        !self.inner.stopping.is_cancelled() && !self.inner.queue.is_closed()
    }

    /// Stops taking new work and waits up to `grace` for attempts in flight to finish.
    /// Deliveries this node leased but did not start are handed back to the store, due at
    /// once, so another node (or this one after a restart) takes them without waiting for the
    /// lease to expire. Attempts still running when the grace period ends keep their lease.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.dispatch.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.inner.dispatch.in_flight();
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "shutdown grace expired; unfinished attempts are retried when their lease expires"
            );
        }
        // Let waiting jobs see the stop and note themselves: each admitted job not in flight
        // is about to hand itself back (it notes itself before giving up its admission).
        let noted_by = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.inner.dispatch.admitted() > self.inner.dispatch.in_flight()
            && tokio::time::Instant::now() < noted_by
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let back = self.inner.dispatch.take_handed_back();
        if !back.is_empty() {
            let n = back.len();
            match self.inner.store.defer(back, self.inner.clock.now()).await {
                Ok(()) => tracing::info!(deliveries = n, "handed unstarted deliveries back"),
                Err(e) => tracing::warn!(error = %e, deliveries = n,
                    "cannot hand deliveries back; they are retried when their lease expires"),
            }
        }
    }
}

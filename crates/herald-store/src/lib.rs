//! Herald's durable state behind one trait, [`Store`], with two implementations that pass one
//! behavioural contract suite (`tests/contract.rs`).
//!
//! - The embedded implementation ([`sqlite::SqliteStore`]) keeps everything in one SQLite file;
//!   all writes go through one writer thread that commits many callers' writes in a single
//!   transaction (group commit), so a `publish` is durable when it returns without paying one
//!   fsync per event. One process per file.
//! - The PostgreSQL implementation ([`pg::PgStore`]) is shared by any number of nodes. Hot
//!   writes (publishes, attempt results) from concurrent callers are batched into multi-row
//!   statements in one transaction; due work is divided by leases claimed with
//!   `FOR UPDATE SKIP LOCKED`; changes other nodes must know about are announced with
//!   `NOTIFY` and surface as [`Notice`]s.
//!
//! This crate knows rows and queries. It does not know HTTP, JSON wire shapes, or how
//! deliveries are attempted; it never decides *whether* to retry, only records what the
//! engine decided.

mod codec;
pub mod cursor;
mod operator;
pub mod pg;
pub mod query;
pub mod seal;
mod sql;
pub mod sqlite;

use async_trait::async_trait;
use herald_core::{
    Attempt, Delivery, DeliveryStatus, Destination, Event, Metadata, Tenant, TenantSummary,
};
use jiff::Timestamp;

pub use query::*;

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with this id already exists.
    #[error("{what} {id:?} already exists")]
    Conflict {
        /// Kind of record (`destination`, `event`).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A pagination cursor could not be decoded.
    #[error("invalid pagination cursor")]
    BadCursor,
    /// The embedded database reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error, or the connection to it failed.
    #[error("postgres error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be taken from the pool (timeout or connect failure).
    #[error("postgres connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A stored value could not be decoded (corruption or an incompatible version).
    #[error("corrupt stored value in {column}: {detail}")]
    Corrupt {
        /// Table and column.
        column: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The database was written by a newer Herald.
    #[error(
        "the database schema version is {found} but this herald supports up to {supported}; upgrade herald"
    )]
    TooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
    /// The database is older than this binary and migrating on start is turned off.
    #[error(
        "the database schema version is {found} but this herald needs {required}; run `herald migrate` (or start without --no-migrate)"
    )]
    MigrationRequired {
        /// Version found in the database.
        found: i64,
        /// Version this binary needs.
        required: i64,
    },
    /// A destination's sealed column does not open with the configured keys.
    #[error("cannot open {column} of destination {id:?}: {source}")]
    Sealed {
        /// Table and column.
        column: &'static str,
        /// The destination.
        id: String,
        /// Why it does not open.
        source: seal::SealError,
    },
    /// Destinations that none of the configured encryption keys opens were found at start;
    /// the store refuses to run rather than lose them.
    #[error(
        "{unreadable} of {total} destinations cannot be opened with the configured encryption keys (first: destination {first_id:?}, {reason}). Set HERALD_ENCRYPTION_KEY to the key they were sealed with, or add that key to HERALD_ENCRYPTION_OLD_KEYS; nothing was changed"
    )]
    Unreadable {
        /// Rows that do not open.
        unreadable: u64,
        /// Destination rows in the database.
        total: u64,
        /// One of them.
        first_id: String,
        /// Why it does not open.
        reason: seal::SealError,
    },
    /// The caller refused its own input in the middle of a batch write
    /// ([`Store::import_destinations`]); nothing of the batch was applied.
    #[error("batch refused: {0}")]
    Refused(String),
    /// The store is shutting down or its writer died.
    #[error("store is closed")]
    Closed,
    /// One write of a batch that failed for a reason outside it (see
    /// [`StoreError::unavailable`]); `detail` is the batch's error.
    #[error("{reason} ({detail})")]
    Unavailable {
        /// What [`StoreError::unavailable`] said about the batch's error.
        reason: &'static str,
        /// The batch's error.
        detail: String,
    },
    /// Opening the store failed.
    #[error("cannot open store at {path}: {detail}")]
    Open {
        /// Path of the database.
        path: String,
        /// What went wrong.
        detail: String,
    },
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Why the store cannot take any write right now, when the cause is the database's state
    /// rather than the request: PostgreSQL unreachable, restarting or refusing connections,
    /// or the embedded database's disk full. The API answers these with 503 and this text;
    /// the client may try again later, and nothing of the request was applied.
    pub fn unavailable(&self) -> Option<&'static str> {
        match self {
            StoreError::Pool(_) => Some("the database is unreachable; try again shortly"),
            StoreError::Postgres(e) => postgres_unavailable(e),
            StoreError::Sqlite(e) => sqlite_unavailable(e),
            StoreError::Unavailable { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

fn postgres_unavailable(e: &tokio_postgres::Error) -> Option<&'static str> {
    use tokio_postgres::error::SqlState;
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself failed or was closed.
        return Some("the database connection was lost; try again shortly");
    };
    let c = code.code();
    if *code == SqlState::DISK_FULL {
        Some("the database's disk is full; try again once space is freed")
    } else if c.starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || c.starts_with("53")
    {
        Some("the database is unavailable (restarting or out of resources); try again shortly")
    } else {
        None
    }
}

fn sqlite_unavailable(e: &rusqlite::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => {
            Some("the database's disk is full; try again once space is freed")
        }
        Some(ErrorCode::SystemIoFailure) => Some(
            "the database could not write to its disk (full or failing); try again once it is fixed",
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            Some("the database is busy; try again shortly")
        }
        _ => None,
    }
}

/// An event as stored, with what publishing decided about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event.
    pub event: Event,
    /// Destinations the event was routed to at publish time.
    pub matched_destination_ids: Vec<String>,
    /// When Herald accepted it.
    pub created_at: Timestamp,
}

/// What happened to a publish.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishOutcome {
    /// Stored with its deliveries.
    Accepted,
    /// An event with this id was accepted within the idempotency window; nothing was written.
    Duplicate {
        /// The destinations the original was routed to.
        matched_destination_ids: Vec<String>,
    },
    /// The tenant has an event with this id that is older than the idempotency window.
    IdTaken,
}

/// A delivery that is due, with its event, handed to the engine under a lease.
#[derive(Debug, Clone)]
pub struct Job {
    /// The delivery.
    pub delivery: Delivery,
    /// Its event.
    pub event: std::sync::Arc<Event>,
    /// When the lease this node holds on the delivery ends; after that another claimer may
    /// take it, so the engine must not start an attempt that could outlive it.
    pub lease_until: Timestamp,
}

/// A change committed to a shared store that other nodes' in-memory state must follow.
///
/// Only stores shared by several processes publish notices ([`Store::notices`]); a node also
/// receives the notices for its own changes, so handling must be idempotent (reload from the
/// store, never apply a delta).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Deliveries became due without being leased (new work, retries, replays): wake the poller.
    Work,
    /// A destination was created, changed or deleted: reload it.
    Destination {
        /// Its tenant.
        tenant_id: String,
        /// Its id.
        id: String,
    },
    /// A tenant was deleted with all its destinations.
    TenantDeleted {
        /// The tenant.
        tenant_id: String,
    },
    /// An API key was created, revoked or replaced: forget any cached copy of it.
    ApiKey {
        /// The key's id.
        id: String,
    },
    /// Notices may have been missed (the listening connection was lost and is back): reload
    /// everything cached.
    Resync,
}

/// A scoped API key as stored. The secret itself is never stored: only its SHA-256 digest
/// (`secret_hash`, lowercase hex), which the API compares in constant time.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    /// `key_…`, or a reserved id such as `bootstrap` (the rotated admin key).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Granted scopes (`admin`, `publish`, `read`, `destinations:write`, `metrics`).
    pub scopes: Vec<String>,
    /// When set, the key acts only on this tenant.
    pub tenant_id: Option<String>,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_hash: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// After this instant the key is refused.
    pub expires_at: Option<Timestamp>,
    /// When the key was revoked; a revoked key is refused.
    pub revoked_at: Option<Timestamp>,
    /// Last time the key authenticated a request (updated at most about once a minute).
    pub last_used_at: Option<Timestamp>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest is not the secret, but it has no business in logs either.
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("tenant_id", &self.tenant_id)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Destinations written by one [`Store::import_destinations`] call, produced while the
/// transaction runs (so a large file is never held in memory whole): `(destination, insert)`
/// inserts a new row when `insert` (a taken id is a conflict) and replaces the stored row
/// otherwise. An `Err` item rolls the whole batch back.
pub type DestinationBatch = Box<dyn Iterator<Item = Result<(Destination, bool)>> + Send>;

/// Which expiry notice has been produced for a destination's current `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExpiryLevel {
    /// `destination.expiring`: the expiry is within the configured lead time.
    Expiring = 1,
    /// `destination.expired`: the expiry has passed.
    Expired = 2,
}

/// What the engine decided after one attempt.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The attempt to append to the log.
    pub attempt: Attempt,
    /// The delivery's new status.
    pub status: DeliveryStatus,
    /// When the next attempt is due (used while `status` is pending).
    pub next_attempt_at: Timestamp,
    /// What the store decides and writes in the same transaction as the attempt.
    pub effects: AttemptEffects,
}

/// The consequences of an attempt that only the store can decide, because they depend on the
/// destination's failure streak as counted in the same transaction (on every node at once):
/// reaching a consecutive-failure level, auto-disable, and the operator events about them.
/// Everything here is written in the attempt's own transaction, so a crash after the attempt
/// was recorded loses none of it. Attempts of operator destinations (tenant
/// [`herald_core::operator::OPERATOR_TENANT`]) count and disable like any other, but never
/// produce operator events (an operator destination cannot alert about itself in a loop).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptEffects {
    /// Alert levels and auto-disable.
    pub policy: herald_core::operator::FailurePolicy,
    /// The receiver answered that the destination is gone (`410`): disable it.
    pub gone: bool,
    /// The delivery ran out of retries: write `alert.attempt.exhausted_retries`. Holds the
    /// event's time for the payload.
    pub exhausted: Option<Timestamp>,
    /// Write `attempt.success` / `attempt.failed` (some operator destination subscribes).
    pub attempt_events: bool,
}

impl Default for AttemptEffects {
    fn default() -> Self {
        Self {
            policy: herald_core::operator::FailurePolicy::OFF,
            gone: false,
            exhausted: None,
            attempt_events: false,
        }
    }
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The destination's consecutive failed attempts after this one (0 on success, and for a
    /// late attempt that does not count).
    pub failures: u32,
    /// The destination was disabled in the same transaction (410 or the failure threshold).
    pub disabled: bool,
    /// Operator deliveries created in the same transaction (due now, unleased).
    pub operator_deliveries: u32,
}

/// Rows removed by one [`Store::purge`] round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    /// Attempts deleted.
    pub attempts: u64,
    /// Deliveries deleted.
    pub deliveries: u64,
    /// Events deleted.
    pub events: u64,
    /// Ids of purged events forgotten because they left the idempotency window.
    pub ids_forgotten: u64,
}

impl PurgeStats {
    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.attempts + self.deliveries + self.events + self.ids_forgotten
    }
}

/// Pending work, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    /// Pending deliveries per destination (a destination id is unique within its tenant).
    pub per_destination: Vec<PendingFor>,
    /// Pending deliveries that already had at least one attempt.
    pub retries: u64,
}

/// One destination's share of the [`Backlog`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PendingFor {
    /// The destination's tenant.
    pub tenant_id: String,
    /// The destination id.
    pub destination_id: String,
    /// Its pending deliveries.
    pub pending: u64,
    /// When the oldest of them was created: its age is how far the destination is behind.
    pub oldest: Timestamp,
}

/// A new delivery to create alongside an event.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The delivery.
    pub delivery: Delivery,
    /// When set, the delivery is created already leased to this node until then (the engine
    /// dispatches it from memory); otherwise it waits for [`Store::claim_due`].
    pub lease_until: Option<Timestamp>,
}

/// One event of a [`Store::publish_batch`], with what routing decided for it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event.
    pub event: Event,
    /// Destinations the event was routed to.
    pub matched: Vec<String>,
    /// Its deliveries, one per matched destination.
    pub deliveries: Vec<NewDelivery>,
}

/// For each event of a batch, the index of the first event of the batch with the same
/// `(tenant_id, id)` when it is a repeat, `None` when it is the first.
pub(crate) fn repeats(events: &[NewEvent]) -> Vec<Option<usize>> {
    let mut first: std::collections::HashMap<(&str, &str), usize> = Default::default();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = (e.event.tenant_id.as_str(), e.event.id.as_str());
            match first.get(&key) {
                Some(&j) => Some(j),
                None => {
                    first.insert(key, i);
                    None
                }
            }
        })
        .collect()
}

/// What a repeat of an id inside one batch gets, from its first occurrence's outcome: the
/// first one's destinations as a duplicate once it was accepted (or was itself a duplicate),
/// and the same refusal when the id was taken.
pub(crate) fn repeat_outcome(first: &PublishOutcome, first_matched: &[String]) -> PublishOutcome {
    match first {
        PublishOutcome::Accepted => PublishOutcome::Duplicate {
            matched_destination_ids: first_matched.to_vec(),
        },
        other => other.clone(),
    }
}

/// Herald's durable state. Every method is cancel-safe in the sense that dropping the future
/// never leaves a half-applied change: writes are applied whole or not at all.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ----- tenants -----

    /// Creates or updates a tenant. Returns it and whether it was created.
    async fn upsert_tenant(
        &self,
        id: &str,
        metadata: Option<Metadata>,
        now: Timestamp,
    ) -> Result<(Tenant, bool)>;
    /// One tenant with its derived figures.
    async fn get_tenant(&self, id: &str) -> Result<Option<TenantSummary>>;
    /// A page of tenants, and the total count matching the query.
    async fn list_tenants(&self, q: &TenantQuery) -> Result<(Page<TenantSummary>, u64)>;
    /// Deletes a tenant and its destinations, cancelling their pending deliveries.
    async fn delete_tenant(&self, id: &str, now: Timestamp) -> Result<bool>;
    /// Marks every token issued to a tenant so far as revoked: sets `tokens_revoked_at` to
    /// `now`, or to one microsecond after the previous revocation when that is not earlier
    /// (the generation always moves). Returns the tenant, `None` when it does not exist.
    async fn revoke_tenant_tokens(&self, id: &str, now: Timestamp) -> Result<Option<Tenant>>;

    // ----- destinations -----

    /// Inserts a new destination; [`StoreError::Conflict`] when its tenant already has a
    /// destination with this id (ids are unique per tenant: another tenant's ids are never
    /// seen, so a conflict reveals nothing about them). This and the
    /// other destination writes below also write `tenant.subscription.updated` (an operator
    /// event) in their transaction when the tenant's topics or destination count changed.
    async fn insert_destination(&self, d: &Destination) -> Result<()>;
    /// Replaces a destination. With `cancel_pending`, its pending deliveries are cancelled in
    /// the same transaction (used when it becomes disabled).
    async fn update_destination(
        &self,
        d: &Destination,
        cancel_pending: bool,
        now: Timestamp,
    ) -> Result<()>;
    /// One destination of a tenant.
    async fn get_destination(&self, tenant_id: &str, id: &str) -> Result<Option<Destination>>;
    /// All destinations of a tenant, oldest first.
    async fn list_destinations(&self, tenant_id: &str) -> Result<Vec<Destination>>;
    /// Every destination (the engine's routing cache is loaded from this).
    async fn list_all_destinations(&self) -> Result<Vec<Destination>>;
    /// Writes every destination `rows` yields in one transaction: all of them or, on any
    /// error (a conflict, a refused item, the database), none. Returns how many were written.
    /// On a shared store other nodes are told to reload everything ([`Notice::Resync`]) rather
    /// than one notice per row.
    async fn import_destinations(&self, rows: DestinationBatch) -> Result<u64>;
    /// Records that the `level` notice for destination `id`'s expiry at `expires_at` is being
    /// produced: a compare-and-set that succeeds (`true`) for exactly one caller on any node,
    /// and only while `expires_at` is still the destination's expiry and no notice of this
    /// level or above was recorded for it (a new `expires_at` starts over). With
    /// [`ExpiryLevel::Expired`] the destination's pending deliveries are cancelled in the same
    /// transaction.
    async fn mark_expiry_notice(
        &self,
        tenant_id: &str,
        id: &str,
        expires_at: Timestamp,
        level: ExpiryLevel,
        now: Timestamp,
    ) -> Result<bool>;
    /// Deletes a destination and cancels its pending deliveries.
    async fn delete_destination(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<bool>;

    // ----- events and deliveries -----

    /// Stores an event and its deliveries atomically and durably, unless the event's tenant
    /// already has an event with this id, stored or purged inside the idempotency window (see
    /// [`PublishOutcome`]). `dedup_since`: events accepted at or after this instant count as
    /// duplicates.
    async fn publish(
        &self,
        event: &Event,
        matched: &[String],
        deliveries: Vec<NewDelivery>,
        dedup_since: Timestamp,
        now: Timestamp,
    ) -> Result<PublishOutcome>;
    /// Publishes several events in one transaction: every accepted event and its deliveries
    /// are committed together (durably, before this returns), or — on an error — none of
    /// them. Each event gets the outcome [`Store::publish`] would give it, in order; an id
    /// that repeats an earlier event of the batch (same tenant) is a duplicate of that one
    /// (or taken, as it is) and writes nothing.
    async fn publish_batch(
        &self,
        events: Vec<NewEvent>,
        dedup_since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<PublishOutcome>>;
    /// One event of a tenant by id (event ids are unique per tenant; to find an id across
    /// tenants, list events with [`EventQuery::ids`]).
    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<StoredEvent>>;
    /// A page of events.
    async fn list_events(&self, q: &EventQuery) -> Result<Page<StoredEvent>>;
    /// Adds a delivery for an existing event (manual retry). When a pending delivery of the
    /// same event to the same destination exists, nothing is created and its id is returned
    /// with `false`.
    async fn add_delivery(&self, d: NewDelivery) -> Result<(String, bool)>;
    /// Leases up to `limit` due deliveries (pending, due, lease expired) until `lease_until`.
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Job>>;
    /// Appends an attempt and moves its delivery to the decided state, releasing the lease,
    /// and applies its [`AttemptEffects`] in the same transaction: counts the destination's
    /// consecutive failures, disables it (410, or the policy's threshold: pending deliveries
    /// cancelled, streak reset) and writes the operator events this causes. Only attempts of a
    /// still-pending delivery to an existing, enabled destination count (a late result after a
    /// cancel, disable or delete counts 0, changes no streak and has no effects).
    async fn record_attempt(&self, rec: AttemptRecord) -> Result<Recorded>;
    /// Writes one operator event (an event of [`herald_core::operator::OPERATOR_TENANT`])
    /// with a delivery, due now, to every enabled operator destination that subscribes to it,
    /// in one transaction. An event no such destination subscribes to is not written (the
    /// rule for every operator event). An event whose id is already stored is not written
    /// again (callers on several nodes may emit the same notice with the same id). Returns
    /// the deliveries created.
    async fn emit_operator_event(&self, event: &Event, now: Timestamp) -> Result<u32>;
    /// Extends leases this node still holds to `until`. A lease is identified by the delivery
    /// and the `lease_until` it was given (the lease's token): it is renewed only while the
    /// delivery is pending and nobody claimed it since — even if it already expired. Returns
    /// the ids renewed; for the others the caller must not attempt the delivery.
    async fn renew_leases(
        &self,
        leases: Vec<(String, Timestamp)>,
        until: Timestamp,
    ) -> Result<Vec<String>>;
    /// Cancels pending deliveries (their destination is gone or disabled). Returns how many
    /// were still pending.
    async fn cancel_deliveries(&self, delivery_ids: Vec<String>, now: Timestamp) -> Result<u64>;
    /// Puts a leased delivery back to wait until `at` without recording an attempt (the
    /// engine sheds work it cannot hold in memory).
    async fn defer(&self, delivery_ids: Vec<String>, at: Timestamp) -> Result<()>;
    /// Re-queues finished deliveries of one destination matching `q` with a fresh retry
    /// schedule; skips any (event, destination) that already has a pending delivery.
    /// Returns how many were re-queued.
    async fn replay(&self, q: &ReplayQuery, now: Timestamp) -> Result<u64>;
    /// Deletes up to `batch` of the oldest attempts, finished deliveries and events created
    /// before `before` (events only once none of their deliveries is pending). The embedded
    /// store deletes finished deliveries together with their event (so a batch may take more
    /// than `batch` of them when events fan out, and a finished delivery stays while its event
    /// has another one pending); PostgreSQL deletes them by their own age. The id of a
    /// purged event accepted at or after `ids_since` (the start of the idempotency window)
    /// is kept, so publishing it again is still a duplicate; kept ids older than `ids_since`
    /// are dropped.
    async fn purge(
        &self,
        before: Timestamp,
        ids_since: Timestamp,
        batch: usize,
    ) -> Result<PurgeStats>;
    /// Pending deliveries per destination, and how many of all pending ones are retries.
    async fn backlog(&self) -> Result<Backlog>;
    /// Folds rows written since the last call into the metrics roll-up, up to `batch` of
    /// each kind (events, routed deliveries, attempts); returns how many are still waiting (0:
    /// caught up). The embedded store keeps per-second and per-minute counts so the metrics
    /// API stays fast on a large store; a store without a roll-up (PostgreSQL counts its rows)
    /// returns 0.
    /// Metrics answers are the same whether or not this ran.
    async fn roll_up_metrics(&self, batch: usize) -> Result<u64> {
        let _ = batch;
        Ok(0)
    }
    /// Drops every lease. Only for a store with a single process (embedded start-up); on a
    /// shared store other nodes hold live leases, which simply expire instead.
    async fn release_all_leases(&self) -> Result<u64>;
    /// Number of pending deliveries (all destinations).
    async fn pending_count(&self) -> Result<u64>;
    /// Resets a destination's consecutive-failure count (on re-enable).
    async fn reset_failures(&self, tenant_id: &str, destination_id: &str) -> Result<()>;

    // ----- settings -----

    /// The stored value of setting `name`, storing `fresh` first when there is none. Returns
    /// the value and whether it was created by this call. Concurrent callers (on any node)
    /// all get the same value.
    async fn setting_or_insert(&self, name: &str, fresh: &str) -> Result<(String, bool)>;

    /// Changes committed by any node, for in-memory caches; `None` when this store has a
    /// single process (its callers already know every change).
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }

    // ----- API keys -----

    /// Inserts a new API key; [`StoreError::Conflict`] when the id is taken.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<()>;
    /// Inserts or replaces the key with `key.id` whole (used to rotate the bootstrap admin
    /// key); other nodes are told to forget their cached copy.
    async fn replace_api_key(&self, key: &ApiKey) -> Result<()>;
    /// One key by id, revoked or not.
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// Every key that is not revoked, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;
    /// Revokes a key (once); `false` when it does not exist or was already revoked. Other
    /// nodes are told to forget their cached copy in the same transaction.
    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> Result<bool>;
    /// Records that a key was used at `at` (only moves `last_used_at` forward).
    async fn touch_api_key(&self, id: &str, at: Timestamp) -> Result<()>;

    // ----- single-use tokens -----

    /// Records `nonce` as used until `expires_at`. Returns `true` the first time a nonce is
    /// presented (on any node) and `false` after that. Nonces whose `expires_at` is before
    /// `now` are forgotten on the way.
    async fn use_nonce(&self, nonce: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool>;

    // ----- attempts -----

    /// One attempt by id.
    async fn get_attempt(&self, id: &str) -> Result<Option<Attempt>>;
    /// A page of attempts.
    async fn list_attempts(&self, q: &AttemptQuery) -> Result<Page<Attempt>>;

    // ----- metrics -----

    /// Aggregated event counts.
    async fn event_metrics(&self, q: &MetricsQuery) -> Result<Vec<MetricsRow>>;
    /// Aggregated attempt counts.
    async fn attempt_metrics(&self, q: &MetricsQuery) -> Result<Vec<MetricsRow>>;
}

/// The metric family of [`observe_commit`]: how long one group-commit batch took from its
/// first statement to its commit (what every caller in the batch waited for).
pub const COMMIT_METRIC: &str = "herald_store_commit_duration_seconds";

/// How long attempt results wait, by default, for more writes to share their commit (the
/// embedded writer's group, PostgreSQL's result batch). No request waits on a result, and
/// its caller hears back only after the commit.
pub(crate) const RESULT_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// Records one group-commit batch of a store's writer (`store`: `sqlite` or `postgres`;
/// `writer`: `group` for the embedded store's one writer, `publish` or `attempts` for
/// PostgreSQL's batch writers) into [`COMMIT_METRIC`].
pub(crate) fn observe_commit(
    store: &'static str,
    writer: &'static str,
    started: std::time::Instant,
) {
    metrics::histogram!(COMMIT_METRIC, "store" => store, "writer" => writer)
        .record(started.elapsed().as_secs_f64());
}

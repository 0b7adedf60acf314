//! The embedded store: one SQLite database file in WAL mode.
//!
//! Writes: a dedicated writer thread owns the only writing connection. Callers send it
//! closures; it runs every closure waiting in its queue inside one transaction (each in its own
//! savepoint, so one failing write never undoes another) and commits once with
//! `synchronous=FULL`. Only after that commit does any caller get its answer — so an `Ok` from a
//! write means the data survives `kill -9` and power loss, while concurrent publishers share
//! one fsync (group commit).
//!
//! Reads: a small pool of read connections used from `spawn_blocking`; WAL lets them run while
//! the writer commits.
//!
//! Leases: a delivery that a worker holds has `leased = 1` and its `next_attempt_at` pushed to
//! the lease expiry, so "due" is a single index range (`status = 'pending' AND next_attempt_at
//! <= now`) whether the delivery waits for a retry or was held by a worker that died.
//!
//! Modules: [`schema`] (migrations), [`writer`] (the group-commit thread), [`sql`] (SQLite's
//! dialect of the SQL shared with PostgreSQL in `crate::sql`), [`reseal`] (sealing rows under
//! the current key at open), [`rollup`] (per-minute counts behind the metrics API).

mod reseal;
mod rollup;
mod schema;
mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use herald_core::{
    Attempt, AttemptStatus, DeliveryStatus, Destination, Event, Metadata, Tenant, TenantSummary,
};
use jiff::Timestamp;
use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

pub use schema::SCHEMA_VERSION;

use crate::codec::{from_json, to_json, topics_from_json, topics_to_json, ts, us};
use crate::operator::Plan;
use crate::query::*;
use crate::seal::{self, Keyring, ResealReport};
use crate::sql::{
    API_KEY_COLS, ATTEMPT_COLS, DELIVERY_COLS, DEST_COLS, Dialect, EVENT_COLS, TENANT_COLS,
    api_key_from_row, attempt_filter, attempt_from_row, delivery_from_row, destination_from_row,
    event_filter, event_from_row, tenant_from_row,
};
use crate::{
    ApiKey, AttemptRecord, Backlog, DestinationBatch, ExpiryLevel, Job, NewDelivery, NewEvent,
    PendingFor, PublishOutcome, PurgeStats, Recorded, Result, Store, StoreError, StoredEvent,
};
use herald_core::operator::{self as op, DestinationRef, OPERATOR_TENANT, Subscription};
use reseal::{raw_destination_rows, reseal_all};
use sql::{Where, paged};
use writer::{MAX_BATCH, Queued, WriteJob, run_in_savepoint, writer_loop};

/// Read connections kept open.
const READERS: usize = 4;

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    keys: Keyring,
    resealed: ResealReport,
    writer: mpsc::Sender<Queued>,
    /// How long attempt results alone wait for another write (microseconds; see [`writer`]).
    linger_us: Arc<AtomicU64>,
    readers: Mutex<Vec<Connection>>,
    closed: AtomicBool,
    /// Where the retention purge's walk over old events goes on: the `(created_at, rowid)` of
    /// the last event the previous purge took, when it took a whole batch. Events held by a
    /// pending delivery are then passed over once per walk, not once per batch.
    purge_from: Arc<Mutex<Option<(i64, i64)>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations, seals
    /// destination rows that are not sealed under the current key of `keys` (see
    /// [`SqliteStore::resealed`]) and starts the writer thread. Refuses a database written by a
    /// newer Herald, and one with destinations no key in `keys` opens
    /// ([`StoreError::Unreadable`]).
    pub fn open(path: &Path, keys: &Keyring) -> Result<Self> {
        Self::open_with(path, true, keys)
    }

    /// Like [`SqliteStore::open`]; with `migrate` false, a database that needs migrations is
    /// refused ([`StoreError::MigrationRequired`]) instead of migrated.
    pub fn open_with(path: &Path, migrate: bool, keys: &Keyring) -> Result<Self> {
        let conn = open_conn(path, false)?;
        schema::migrate(&conn, migrate)?;
        let resealed = reseal_all(&conn, keys)?;
        let (tx, rx) = mpsc::channel::<Queued>(16 * MAX_BATCH);
        let linger_us = Arc::new(AtomicU64::new(writer::LINGER.as_micros() as u64));
        let linger = linger_us.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, linger))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                keys: keys.clone(),
                resealed,
                writer: tx,
                linger_us,
                readers: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                purge_from: Arc::new(Mutex::new(None)),
            }),
        })
    }

    /// How long a group made only of attempt results waits for another write to share its
    /// commit (default 10 ms; zero commits each group at once). A result's caller hears back
    /// only after the commit either way; this trades up to `linger` of recording delay for
    /// about half the commits per event at light load.
    pub fn set_result_linger(&self, linger: std::time::Duration) {
        let us = u64::try_from(linger.as_micros()).unwrap_or(u64::MAX);
        self.inner.linger_us.store(us, Ordering::Relaxed);
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What opening did to destination rows: plaintext rows sealed, and rows under an old key
    /// sealed again under the current one. One process owns an embedded database, so every
    /// row is moved to the current key at open; this is how keys rotate on this store.
    pub fn resealed(&self) -> ResealReport {
        self.inner.resealed
    }

    /// How the destination rows are sealed now.
    pub async fn seal_census(&self) -> Result<seal::SealCensus> {
        let keys = self.inner.keys.clone();
        self.read(move |c| {
            let mut census = seal::SealCensus::default();
            for ((_, id), config, credentials) in raw_destination_rows(c)? {
                census.count(&seal::row_state(&keys, &id, &config, &credentials));
            }
            Ok(census)
        })
        .await
    }

    /// Runs `f` inside the next group-commit transaction and returns its result once the
    /// transaction is durably committed.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job = WriteJob::Once(Box::new(move |conn: &Connection| {
            let out = run_in_savepoint(conn, f);
            Box::new(move |commit: Result<()>| {
                let _ = tx.send(commit.and(out));
            })
        }));
        let may_wait = false;
        self.submit(Queued { job, may_wait }, rx).await
    }

    /// Like [`SqliteStore::write`] for the hot writes: `f` may run twice (see [`writer`]), so
    /// it must be a pure function of the database; it runs without a savepoint of its own
    /// unless a write beside it failed.
    async fn write_again<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        self.again(f, false).await
    }

    /// Like [`SqliteStore::write_again`] for an attempt's result, which may wait up to
    /// [`writer::LINGER`] for the next write to share its commit.
    async fn write_result<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        self.again(f, true).await
    }

    async fn again<T, F>(&self, f: F, may_wait: bool) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job = WriteJob::Again(Box::new(writer::Again { f, out: None, tx }));
        self.submit(Queued { job, may_wait }, rx).await
    }

    /// Queues `job` for the writer and waits for the answer it sends on `rx` after its commit.
    async fn submit<T>(&self, job: Queued, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a pooled read connection on the blocking thread pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match inner.readers.lock().pop() {
                Some(c) => c,
                None => open_conn(&inner.path, true)?,
            };
            let out = f(&conn);
            let mut pool = inner.readers.lock();
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(open_err)?;
    if !read_only {
        // WAL: readers never block the writer. synchronous=FULL: a commit survives power loss.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
    }
    // `rarray(?)`: a list of rowids as one parameter (the purge's batches).
    rusqlite::vtab::array::load_module(&conn).map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

// ----- shared writes -----

fn summarize(conn: &Connection, tenant: Tenant) -> Result<TenantSummary> {
    let mut stmt = conn.prepare_cached("SELECT topics FROM destinations WHERE tenant_id = ?1")?;
    let mut rows = stmt.query([&tenant.id])?;
    let mut count = 0u64;
    let mut topics = std::collections::BTreeSet::new();
    while let Some(r) = rows.next()? {
        count += 1;
        topics.extend(topics_from_json(&r.get::<_, String>(0)?)?.to_vec());
    }
    Ok(TenantSummary {
        tenant,
        destinations_count: count,
        topics: topics.into_iter().collect(),
    })
}

/// Cancels the pending deliveries of a tenant's destination, or with `None` of the whole tenant.
fn cancel_pending(
    conn: &Connection,
    tenant_id: &str,
    destination_id: Option<&str>,
    now: Timestamp,
) -> Result<usize> {
    Ok(match destination_id {
        Some(id) => conn
            .prepare_cached(
                // `status <> 'success'` is the condition of deliveries_destination's entries.
                "UPDATE deliveries SET status = 'cancelled', leased = 0, updated_at = ?3
                 WHERE destination_id = ?2 AND tenant_id = ?1 AND status = 'pending' AND status <> 'success'",
            )?
            .execute(params![tenant_id, id, us(now)])?,
        None => conn
            .prepare_cached(
                "UPDATE deliveries SET status = 'cancelled', leased = 0, updated_at = ?2
                 WHERE tenant_id = ?1 AND status = 'pending'",
            )?
            .execute(params![tenant_id, us(now)])?,
    })
}

/// Forgets a destination's failure streak.
fn reset_streak(conn: &Connection, tenant_id: &str, id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM destination_health WHERE tenant_id = ?1 AND destination_id = ?2",
    )?
    .execute([tenant_id, id])?;
    Ok(())
}

fn insert_delivery(conn: &Connection, nd: &NewDelivery) -> Result<()> {
    let d = &nd.delivery;
    let (next, leased) = match nd.lease_until {
        Some(until) => (us(until), 1),
        None => (us(d.next_attempt_at), 0),
    };
    conn.prepare_cached(
        "INSERT INTO deliveries (id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at, leased, manual, retry_base, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
    )?
    .execute(params![
        d.id,
        d.event_id,
        d.tenant_id,
        d.destination_id,
        d.status.as_str(),
        d.attempts,
        next,
        leased,
        d.manual,
        d.retry_base,
        us(d.created_at)
    ])?;
    Ok(())
}

/// Writes `d` with its `config` and `credentials` already sealed (`sealed`).
fn write_destination(
    conn: &Connection,
    d: &Destination,
    sealed: &(String, String),
    insert: bool,
) -> Result<usize> {
    let sql = if insert {
        format!(
            "INSERT INTO destinations ({DEST_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        )
    } else {
        // A new expiry starts a new round of expiry notices (SET expressions see the old row).
        "UPDATE destinations SET type = ?3, topics = ?4, filter = ?5, config = ?6, credentials = ?7,
             delivery_metadata = ?8, metadata = ?9, disabled_at = ?10, created_at = ?11, updated_at = ?12,
             expires_at = ?13, expiry_notice = CASE WHEN expires_at IS ?13 THEN expiry_notice ELSE 0 END
             WHERE id = ?1 AND tenant_id = ?2"
            .to_string()
    };
    Ok(conn.prepare_cached(&sql)?.execute(params![
        d.id,
        d.tenant_id,
        d.kind,
        topics_to_json(&d.topics),
        d.filter.as_ref().map(to_json),
        sealed.0,
        sealed.1,
        d.delivery_metadata.as_ref().map(to_json),
        d.metadata.as_ref().map(to_json),
        d.disabled_at.map(us),
        us(d.created_at),
        us(d.updated_at),
        d.expires_at.map(us)
    ])?)
}

// ----- operator events -----

/// The enabled operator destinations that subscribe to `event`, oldest first.
fn operator_subscribers(conn: &Connection, event: &Event) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, topics, filter FROM destinations WHERE tenant_id = ?1 AND disabled_at IS NULL ORDER BY created_at, id",
    )?;
    let mut rows = stmt.query([OPERATOR_TENANT])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let topics = topics_from_json(&r.get::<_, String>(1)?)?;
        let filter: Option<serde_json::Value> = r
            .get::<_, Option<String>>(2)?
            .map(|s| from_json("destinations.filter", &s))
            .transpose()?;
        if op::subscribes(&topics, filter.as_ref(), event) {
            out.push(r.get(0)?);
        }
    }
    Ok(out)
}

/// Writes an operator event and its deliveries (see [`Store::emit_operator_event`]). An
/// event no enabled operator destination subscribes to is not written at all (as in Outpost,
/// the deployment subscribes to the union of its operator destinations' topics).
fn write_operator_event(conn: &Connection, event: &Event, now: Timestamp) -> Result<u32> {
    if load_event(conn, &event.tenant_id, &event.id)?.is_some() {
        return Ok(0);
    }
    let subscribers = operator_subscribers(conn, event)?;
    if subscribers.is_empty() {
        return Ok(0);
    }
    insert_event(conn, event, &to_json(&subscribers), now)?;
    for id in &subscribers {
        insert_delivery(
            conn,
            &NewDelivery {
                delivery: op::delivery(event, id, now),
                lease_until: None,
            },
        )?;
    }
    Ok(subscribers.len() as u32)
}

fn insert_event(conn: &Connection, event: &Event, matched: &str, now: Timestamp) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO events ({EVENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        event.id,
        event.tenant_id,
        event.destination_id,
        event.topic,
        us(event.time),
        to_json(&event.metadata),
        to_json(&event.data),
        event.eligible_for_retry,
        matched,
        us(now)
    ])?;
    Ok(())
}

/// Writes one event and its deliveries unless its tenant already has the id (stored, or
/// purged inside the idempotency window), inside the caller's transaction.
fn publish_one(
    c: &Connection,
    event: &Event,
    matched: &str,
    deliveries: &[NewDelivery],
    dedup_since: Timestamp,
    now: Timestamp,
) -> Result<PublishOutcome> {
    let prev = earlier_event(c, &event.tenant_id, &event.id)?;
    if let Some((matched_destination_ids, created_at)) = prev {
        return Ok(if created_at >= dedup_since {
            PublishOutcome::Duplicate {
                matched_destination_ids,
            }
        } else {
            PublishOutcome::IdTaken
        });
    }
    insert_event(c, event, matched, now)?;
    for d in deliveries {
        insert_delivery(c, d)?;
    }
    Ok(PublishOutcome::Accepted)
}

/// What operator payloads say about a destination, read without opening its sealed columns.
fn destination_ref(conn: &Connection, tenant_id: &str, id: &str) -> Result<Option<DestinationRef>> {
    conn.prepare_cached(
        "SELECT id, tenant_id, type, topics, disabled_at FROM destinations WHERE id = ?1 AND tenant_id = ?2",
    )?
    .query_row([id, tenant_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })
    .optional()?
    .map(|(id, tenant_id, kind, topics, disabled_at)| {
        Ok(DestinationRef {
            id,
            tenant_id,
            kind,
            topics: topics_from_json(&topics)?,
            disabled_at: disabled_at.map(ts),
        })
    })
    .transpose()
}

/// Disables an enabled destination, cancels its pending deliveries and resets its streak.
fn disable_destination(
    conn: &Connection,
    tenant_id: &str,
    id: &str,
    now: Timestamp,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE destinations SET disabled_at = ?2, updated_at = ?2 WHERE id = ?1 AND tenant_id = ?3 AND disabled_at IS NULL",
        )?
        .execute(params![id, us(now), tenant_id])?;
    if n > 0 {
        cancel_pending(conn, tenant_id, Some(id), now)?;
        reset_streak(conn, tenant_id, id)?;
    }
    Ok(n > 0)
}

/// A tenant's subscription (the union of its destinations' topics, and their count).
fn subscription(conn: &Connection, tenant_id: &str) -> Result<Subscription> {
    let mut stmt = conn.prepare_cached("SELECT topics FROM destinations WHERE tenant_id = ?1")?;
    let mut rows = stmt.query([tenant_id])?;
    let mut count = 0u64;
    let mut topics = std::collections::BTreeSet::new();
    while let Some(r) = rows.next()? {
        count += 1;
        topics.extend(topics_from_json(&r.get::<_, String>(0)?)?.to_vec());
    }
    Ok(Subscription {
        topics: topics.into_iter().collect(),
        destinations_count: count,
    })
}

/// Runs a destination write `f` and writes `tenant.subscription.updated` when it changed the
/// tenant's subscription, in the same transaction.
fn with_subscription_event<T>(
    conn: &Connection,
    tenant_id: &str,
    now: Timestamp,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    if tenant_id == OPERATOR_TENANT {
        return f(conn);
    }
    let before = subscription(conn, tenant_id)?;
    let out = f(conn)?;
    let after = subscription(conn, tenant_id)?;
    if let Some(e) = op::subscription_updated(tenant_id, &before, &after, now) {
        write_operator_event(conn, &e, now)?;
    }
    Ok(out)
}

fn write_api_key(conn: &Connection, k: &ApiKey, replace: bool) -> Result<usize> {
    let verb = if replace {
        "INSERT OR REPLACE"
    } else {
        "INSERT OR IGNORE"
    };
    Ok(conn
        .prepare_cached(&format!(
            "{verb} INTO api_keys ({API_KEY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ))?
        .execute(params![
            k.id,
            k.name,
            to_json(&k.scopes),
            k.tenant_id,
            k.secret_hash,
            us(k.created_at),
            k.expires_at.map(us),
            k.revoked_at.map(us),
            k.last_used_at.map(us)
        ])?)
}

fn load_event(conn: &Connection, tenant_id: &str, id: &str) -> Result<Option<StoredEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLS} FROM events WHERE tenant_id = ?1 AND id = ?2"
    ))?;
    let mut rows = stmt.query([tenant_id, id])?;
    rows.next()?.map(event_from_row).transpose()
}

/// Whether the tenant has a destination with this id.
fn destination_exists(conn: &Connection, tenant_id: &str, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM destinations WHERE tenant_id = ?1 AND id = ?2)",
        )?
        .query_row([tenant_id, id], |r| r.get(0))?)
}

/// Whether the tenant already has an event with this id, stored or purged inside the
/// idempotency window: the destinations it was routed to and when it was accepted. One
/// statement for both tables (publish asks this for every event).
fn earlier_event(
    conn: &Connection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<(Vec<String>, Timestamp)>> {
    conn.prepare_cached(
        "SELECT matched, created_at FROM events WHERE tenant_id = ?1 AND id = ?2
         UNION ALL
         SELECT matched, created_at FROM purged_event_ids WHERE tenant_id = ?1 AND id = ?2
         LIMIT 1",
    )?
    .query_row([tenant_id, id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })
    .optional()?
    .map(|(matched, created)| Ok((from_json("events.matched", &matched)?, ts(created))))
    .transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_tenant(
        &self,
        id: &str,
        metadata: Option<Metadata>,
        now: Timestamp,
    ) -> Result<(Tenant, bool)> {
        let id = id.to_string();
        self.write(move |c| {
            let existing = c
                .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))?
                .query_row([&id], |r| Ok(tenant_from_row(r)))
                .optional()?
                .transpose()?;
            let created = existing.is_none();
            let tenant = Tenant {
                id: id.clone(),
                metadata,
                created_at: existing.as_ref().map(|t| t.created_at).unwrap_or(now),
                updated_at: now,
                tokens_revoked_at: existing.and_then(|t| t.tokens_revoked_at),
            };
            c.prepare_cached(
                "INSERT INTO tenants (id, metadata, created_at, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET metadata = excluded.metadata, updated_at = excluded.updated_at",
            )?
            .execute(params![
                tenant.id,
                tenant.metadata.as_ref().map(to_json),
                us(tenant.created_at),
                us(tenant.updated_at)
            ])?;
            Ok((tenant, created))
        })
        .await
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<TenantSummary>> {
        let id = id.to_string();
        self.read(move |c| {
            let t = c
                .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))?
                .query_row([&id], |r| Ok(tenant_from_row(r)))
                .optional()?
                .transpose()?;
            t.map(|t| summarize(c, t)).transpose()
        })
        .await
    }

    async fn list_tenants(&self, q: &TenantQuery) -> Result<(Page<TenantSummary>, u64)> {
        let q = q.clone();
        self.read(move |c| {
            let mut w = Where::default();
            w.any_of("id", &q.ids);
            let count: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM tenants{}", w.sql()),
                rusqlite::params_from_iter(w.params.iter()),
                |r| r.get(0),
            )?;
            let page = paged(
                c,
                &format!("SELECT {TENANT_COLS} FROM tenants"),
                ("created_at", "id"),
                w,
                &q.page,
                |r| tenant_from_row(r),
                |t| (us(t.created_at), t.id.clone()),
            )?;
            let models = page
                .models
                .into_iter()
                .map(|t| summarize(c, t))
                .collect::<Result<_>>()?;
            Ok((
                Page {
                    models,
                    next: page.next,
                    prev: page.prev,
                },
                count as u64,
            ))
        })
        .await
    }

    async fn revoke_tenant_tokens(&self, id: &str, now: Timestamp) -> Result<Option<Tenant>> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE tenants SET tokens_revoked_at = MAX(?2, COALESCE(tokens_revoked_at, created_at) + 1) WHERE id = ?1",
            )?
            .execute(params![id, us(now)])?;
            c.prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1"))?
                .query_row([&id], |r| Ok(tenant_from_row(r)))
                .optional()?
                .transpose()
        })
        .await
    }

    async fn delete_tenant(&self, id: &str, now: Timestamp) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM tenants WHERE id = ?1")?
                .execute([&id])?;
            if n == 0 {
                return Ok(false);
            }
            c.prepare_cached("DELETE FROM destination_health WHERE tenant_id = ?1")?
                .execute([&id])?;
            c.prepare_cached("DELETE FROM destinations WHERE tenant_id = ?1")?
                .execute([&id])?;
            cancel_pending(c, &id, None, now)?;
            Ok(true)
        })
        .await
    }

    async fn insert_destination(&self, d: &Destination) -> Result<()> {
        let d = d.clone();
        let sealed = seal::seal_destination(&self.inner.keys, &d);
        self.write(move |c| {
            if destination_exists(c, &d.tenant_id, &d.id)? {
                return Err(StoreError::Conflict {
                    what: "destination",
                    id: d.id.clone(),
                });
            }
            with_subscription_event(c, &d.tenant_id, d.updated_at, |c| {
                write_destination(c, &d, &sealed, true)
            })?;
            Ok(())
        })
        .await
    }

    async fn update_destination(
        &self,
        d: &Destination,
        cancel: bool,
        now: Timestamp,
    ) -> Result<()> {
        let d = d.clone();
        let sealed = seal::seal_destination(&self.inner.keys, &d);
        self.write(move |c| {
            with_subscription_event(c, &d.tenant_id, now, |c| {
                write_destination(c, &d, &sealed, false)
            })?;
            if cancel {
                cancel_pending(c, &d.tenant_id, Some(&d.id), now)?;
                // A disabled destination starts a fresh failure streak when re-enabled.
                reset_streak(c, &d.tenant_id, &d.id)?;
            }
            Ok(())
        })
        .await
    }

    async fn import_destinations(&self, rows: DestinationBatch) -> Result<u64> {
        let keys = self.inner.keys.clone();
        // One savepoint around the whole batch: the writer thread works through the rows as
        // they are produced and commits them with whatever else is queued, or rolls all back.
        self.write(move |c| {
            let mut n = 0u64;
            for row in rows {
                let (d, insert) = row?;
                let sealed = seal::seal_destination(&keys, &d);
                if insert && destination_exists(c, &d.tenant_id, &d.id)? {
                    return Err(StoreError::Conflict {
                        what: "destination",
                        id: d.id.clone(),
                    });
                }
                write_destination(c, &d, &sealed, insert)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn mark_expiry_notice(
        &self,
        tenant_id: &str,
        id: &str,
        expires_at: Timestamp,
        level: ExpiryLevel,
        now: Timestamp,
    ) -> Result<bool> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let won = c
                .prepare_cached(
                    "UPDATE destinations SET expiry_notice = ?3
                     WHERE id = ?1 AND tenant_id = ?4 AND expires_at = ?2 AND expiry_notice < ?3",
                )?
                .execute(params![id, us(expires_at), level as i64, tenant_id])?
                == 1;
            if won && level == ExpiryLevel::Expired {
                cancel_pending(c, &tenant_id, Some(&id), now)?;
            }
            Ok(won)
        })
        .await
    }

    async fn get_destination(&self, tenant_id: &str, id: &str) -> Result<Option<Destination>> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        let keys = self.inner.keys.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DEST_COLS} FROM destinations WHERE id = ?1 AND tenant_id = ?2"
            ))?;
            let mut rows = stmt.query([&id, &tenant_id])?;
            rows.next()?
                .map(|r| destination_from_row(&keys, r))
                .transpose()
        })
        .await
    }

    async fn list_destinations(&self, tenant_id: &str) -> Result<Vec<Destination>> {
        let tenant_id = tenant_id.to_string();
        let keys = self.inner.keys.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DEST_COLS} FROM destinations WHERE tenant_id = ?1 ORDER BY created_at, id"
            ))?;
            let mut rows = stmt.query([&tenant_id])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(destination_from_row(&keys, r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn list_all_destinations(&self) -> Result<Vec<Destination>> {
        let keys = self.inner.keys.clone();
        self.read(move |c| {
            let mut stmt = c.prepare(&format!("SELECT {DEST_COLS} FROM destinations"))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(destination_from_row(&keys, r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_destination(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<bool> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let n = with_subscription_event(c, &tenant_id, now, |c| {
                Ok(
                    c.prepare_cached("DELETE FROM destinations WHERE id = ?1 AND tenant_id = ?2")?
                        .execute([&id, &tenant_id])?,
                )
            })?;
            if n > 0 {
                cancel_pending(c, &tenant_id, Some(&id), now)?;
                reset_streak(c, &tenant_id, &id)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn publish(
        &self,
        event: &Event,
        matched: &[String],
        deliveries: Vec<NewDelivery>,
        dedup_since: Timestamp,
        now: Timestamp,
    ) -> Result<PublishOutcome> {
        let event = event.clone();
        let matched = to_json(matched);
        self.write_again(move |c| publish_one(c, &event, &matched, &deliveries, dedup_since, now))
            .await
    }

    async fn publish_batch(
        &self,
        events: Vec<NewEvent>,
        dedup_since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<PublishOutcome>> {
        // One write job of the group commit (a hot write: in a savepoint of its own only when a
        // write beside it failed, so the whole batch stands or falls together). Events are
        // written in order, so a repeated id finds the first one and is its duplicate.
        self.write_again(move |c| {
            events
                .iter()
                .map(|e| {
                    let matched = to_json(&e.matched);
                    publish_one(c, &e.event, &matched, &e.deliveries, dedup_since, now)
                })
                .collect()
        })
        .await
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<StoredEvent>> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.read(move |c| load_event(c, &tenant_id, &id)).await
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Page<StoredEvent>> {
        let q = q.clone();
        self.read(move |c| {
            let w = event_filter(&q);
            paged(
                c,
                &format!("SELECT {EVENT_COLS} FROM events"),
                ("time", "id"),
                w,
                &q.page,
                |r| event_from_row(r),
                |e| (us(e.event.time), e.event.id.clone()),
            )
        })
        .await
    }

    async fn add_delivery(&self, mut nd: NewDelivery) -> Result<(String, bool)> {
        self.write(move |c| {
            let d = &mut nd.delivery;
            // The unary `+` keeps both lookups on the event's index (a handful of rows) instead
            // of the destination's, which holds its whole backlog or attempt log.
            let pending: Option<String> = c
                .prepare_cached(
                    "SELECT id FROM deliveries WHERE event_id = ?1 AND +destination_id = ?2 AND tenant_id = ?3
                     AND status = 'pending' LIMIT 1",
                )?
                .query_row([&d.event_id, &d.destination_id, &d.tenant_id], |r| r.get(0))
                .optional()?;
            if let Some(id) = pending {
                return Ok((id, false));
            }
            // Attempt numbers continue across deliveries of the same event to the same destination.
            let before: u32 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM attempts WHERE event_id = ?1 AND +destination_id = ?2 AND +tenant_id = ?3",
                )?
                .query_row([&d.event_id, &d.destination_id, &d.tenant_id], |r| r.get(0))?;
            d.attempts = before;
            d.retry_base = before;
            insert_delivery(c, &nd)?;
            Ok((nd.delivery.id.clone(), true))
        })
        .await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Job>> {
        self.write_again(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "UPDATE deliveries SET next_attempt_at = ?1, leased = 1
                 WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?2
                              ORDER BY next_attempt_at LIMIT ?3)
                 RETURNING {DELIVERY_COLS}"
            ))?;
            let mut rows = stmt.query(params![us(lease_until), us(now), limit as i64])?;
            let mut deliveries = Vec::new();
            while let Some(r) = rows.next()? {
                deliveries.push(delivery_from_row(r)?);
            }
            drop(rows);
            let mut events: std::collections::HashMap<(String, String), Arc<Event>> =
                std::collections::HashMap::new();
            let mut jobs = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                let key = (d.tenant_id.clone(), d.event_id.clone());
                let ev = match events.get(&key) {
                    Some(e) => Some(e.clone()),
                    None => load_event(c, &d.tenant_id, &d.event_id)?.map(|se| {
                        let e = Arc::new(se.event);
                        events.insert(key, e.clone());
                        e
                    }),
                };
                match ev {
                    Some(event) => jobs.push(Job { delivery: d, event, lease_until }),
                    None => {
                        // The event is gone (retention); nothing left to deliver.
                        c.prepare_cached("UPDATE deliveries SET status = 'cancelled', leased = 0 WHERE id = ?1")?
                            .execute([&d.id])?;
                    }
                }
            }
            Ok(jobs)
        })
        .await
    }

    async fn emit_operator_event(&self, event: &Event, now: Timestamp) -> Result<u32> {
        let event = event.clone();
        self.write(move |c| write_operator_event(c, &event, now))
            .await
    }

    async fn record_attempt(&self, rec: AttemptRecord) -> Result<Recorded> {
        self.write_result(move |c| {
            let a = &rec.attempt;
            c.prepare_cached(&format!(
                "INSERT INTO attempts ({ATTEMPT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?
            .execute(params![
                a.id,
                a.delivery_id,
                a.tenant_id,
                a.event_id,
                a.destination_id,
                a.destination_type,
                a.topic,
                a.status.as_str(),
                a.code,
                a.response_data.as_ref().map(to_json),
                a.attempt_number,
                a.manual,
                us(a.time),
                a.latency_ms as i64
            ])?;
            // A delivery cancelled meanwhile (destination disabled or deleted) stays cancelled,
            // and its late attempt does not count towards the destination's failure streak.
            let moved = c
                .prepare_cached(
                    "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, leased = 0, updated_at = ?5
                     WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![
                    a.delivery_id,
                    rec.status.as_str(),
                    a.attempt_number,
                    us(rec.next_attempt_at),
                    us(a.time)
                ])?;
            if moved == 0 {
                return Ok(Recorded::default());
            }
            // Only an existing, enabled destination has a streak: attempts that slipped through
            // while it was being disabled or deleted do not count.
            // Read with the streak, so a success deletes a streak row only when there is one.
            let found: Option<(bool, bool)> = c
                .prepare_cached(
                    "SELECT d.disabled_at IS NULL, h.destination_id IS NOT NULL FROM destinations d
                     LEFT JOIN destination_health h ON h.tenant_id = d.tenant_id AND h.destination_id = d.id
                     WHERE d.id = ?1 AND d.tenant_id = ?2",
                )?
                .query_row([&a.destination_id, &a.tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((true, has_streak)) = found else {
                return Ok(Recorded::default());
            };
            let failures: u32 = if a.status == AttemptStatus::Success {
                if has_streak {
                    reset_streak(c, &a.tenant_id, &a.destination_id)?;
                }
                0
            } else {
                c.prepare_cached(
                    "INSERT INTO destination_health (tenant_id, destination_id, consecutive_failures) VALUES (?1, ?2, 1)
                     ON CONFLICT (tenant_id, destination_id) DO UPDATE SET consecutive_failures = consecutive_failures + 1
                     RETURNING consecutive_failures",
                )?
                .query_row([&a.tenant_id, &a.destination_id], |r| r.get(0))?
            };
            let plan = Plan::new(&rec, failures);
            let now = a.time;
            let disabled = match plan.disable {
                Some(_) => disable_destination(c, &a.tenant_id, &a.destination_id, now)?,
                None => false,
            };
            let mut operator_deliveries = 0;
            if plan.has_events(&rec)
                && let Some(d) = destination_ref(c, &a.tenant_id, &a.destination_id)?
            {
                for e in plan.events(&rec, failures, &d, now) {
                    operator_deliveries += write_operator_event(c, &e, now)?;
                }
            }
            Ok(Recorded {
                failures,
                disabled,
                operator_deliveries,
            })
        })
        .await
    }

    async fn renew_leases(
        &self,
        leases: Vec<(String, Timestamp)>,
        until: Timestamp,
    ) -> Result<Vec<String>> {
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET next_attempt_at = ?3, leased = 1
                 WHERE id = ?1 AND status = 'pending' AND next_attempt_at = ?2",
            )?;
            let mut renewed = Vec::new();
            for (id, held) in leases {
                if stmt.execute(params![id, us(held), us(until)])? == 1 {
                    renewed.push(id);
                }
            }
            Ok(renewed)
        })
        .await
    }

    async fn cancel_deliveries(&self, delivery_ids: Vec<String>, now: Timestamp) -> Result<u64> {
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET status = 'cancelled', leased = 0, updated_at = ?2 WHERE id = ?1 AND status = 'pending'",
            )?;
            let mut n = 0;
            for id in &delivery_ids {
                n += stmt.execute(params![id, us(now)])? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn defer(&self, delivery_ids: Vec<String>, at: Timestamp) -> Result<()> {
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE deliveries SET next_attempt_at = ?2, leased = 0 WHERE id = ?1 AND status = 'pending'",
            )?;
            for id in &delivery_ids {
                stmt.execute(params![id, us(at)])?;
            }
            Ok(())
        })
        .await
    }

    async fn replay(&self, q: &ReplayQuery, now: Timestamp) -> Result<u64> {
        let q = q.clone();
        self.write(move |c| {
            let mut w = Where::default();
            let now_p = w.bind(SqlValue::Integer(us(now)));
            let t = w.bind(SqlValue::Text(q.tenant_id.clone()));
            let d = w.bind(SqlValue::Text(q.destination_id.clone()));
            w.push(format!("d.tenant_id = {t} AND d.destination_id = {d}"));
            let statuses: Vec<DeliveryStatus> = if q.statuses.is_empty() {
                vec![DeliveryStatus::Failed]
            } else {
                q.statuses.iter().copied().filter(|s| *s != DeliveryStatus::Pending).collect()
            };
            if statuses.is_empty() {
                return Ok(0);
            }
            w.time("d.created_at", &q.time);
            if !q.topics.is_empty() {
                let topic = sql::Sqlite::any_of(&mut w, "e.topic", &q.topics);
                w.push(format!(
                    "EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = d.tenant_id AND e.id = d.event_id AND {topic})"
                ));
            }
            // Only the newest finished delivery of each event, and never one whose event
            // already has a pending delivery to this destination.
            w.push(
                "NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.event_id = d.event_id AND p.destination_id = d.destination_id
                   AND p.tenant_id = d.tenant_id AND (p.status = 'pending' OR p.created_at > d.created_at OR (p.created_at = d.created_at AND p.id > d.id)))"
                    .into(),
            );
            // deliveries_destination holds no successful delivery (schema v9): failed and
            // cancelled ones are found there, successful ones through the destination's
            // successful attempts (a delivery succeeds only with one).
            let others: Vec<String> = statuses
                .iter()
                .filter(|s| **s != DeliveryStatus::Success)
                .map(|s| s.as_str().into())
                .collect();
            let mut sources = Vec::new();
            if !others.is_empty() {
                let status = sql::Sqlite::any_of(&mut w, "d.status", &others);
                sources.push(format!(
                    "SELECT d.id FROM deliveries d{} AND {status} AND d.status <> 'success'",
                    w.sql()
                ));
            }
            if statuses.contains(&DeliveryStatus::Success) {
                sources.push(format!(
                    "SELECT d.id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id{}
                     AND a.destination_id = {d} AND +a.tenant_id = {t} AND a.status = 'success' AND d.status = 'success'",
                    w.sql()
                ));
            }
            let ids = sources.join(" UNION ALL ");
            // A replayed manual delivery counts as routed from now on (`manual = 0`).
            rollup::count_replayed(c, &ids, &w.params)?;
            let sql = format!(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = {now_p}, leased = 0, retry_base = attempts, manual = 0, updated_at = {now_p}
                 WHERE id IN ({ids})"
            );
            Ok(c.execute(&sql, rusqlite::params_from_iter(w.params.iter()))? as u64)
        })
        .await
    }

    async fn purge(
        &self,
        before: Timestamp,
        ids_since: Timestamp,
        batch: usize,
    ) -> Result<PurgeStats> {
        if batch == 0 {
            return Ok(PurgeStats::default());
        }
        let purge_from = self.inner.purge_from.clone();
        self.write(move |c| {
            let (t, n) = (us(before), batch as i64);
            // Counted rows leave the metrics roll-up with them.
            let mut lowered = rollup::Lowered::default();
            // The batch is the oldest `batch` attempts in (time, rowid) order, up to the last
            // one's position, found once in `attempts_time` (its entries carry the rowid); the
            // roll-up and the delete then read that range of the index.
            let upto: (i64, i64) = c
                .prepare_cached(
                    "SELECT time, rowid FROM attempts WHERE time < ?1 ORDER BY time, rowid LIMIT 1 OFFSET ?2",
                )?
                .query_row(params![t, n - 1], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((t - 1, i64::MAX));
            rollup::uncount_attempts(c, upto, &mut lowered)?;
            let attempts = c
                .prepare_cached(&format!("DELETE FROM attempts WHERE {}", rollup::ATTEMPTS_UPTO))?
                .execute(params![upto.0, upto.1])? as u64;
            // Deliveries go with their event (schema v9 has no index on their creation time):
            // an event old enough and with no pending delivery takes its finished deliveries
            // along, whenever they were created; a finished delivery waits while its event has
            // another one pending. The walk goes on after the previous batch (see
            // `Inner::purge_from`) and starts again from the oldest after a short batch.
            let (from_time, from_row) = purge_from.lock().unwrap_or((i64::MIN, i64::MIN));
            let rows: Vec<(i64, i64)> = c
                .prepare_cached(
                    "SELECT e.rowid, e.created_at FROM events e
                     WHERE e.created_at >= ?3 AND e.created_at < ?1 AND NOT (e.created_at = ?3 AND e.rowid <= ?4)
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.tenant_id = e.tenant_id
                                     AND d.status = 'pending')
                     ORDER BY e.created_at, e.rowid LIMIT ?2",
                )?
                .query_map(params![t, n, from_time, from_row], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            // Set before the commit: should it fail, the rows passed over wait for the next walk.
            *purge_from.lock() = match rows.last() {
                Some((rowid, created)) if rows.len() as i64 == n => Some((*created, *rowid)),
                _ => None,
            };
            // The whole batch at once, one statement each (rowids as an `rarray`): the
            // roll-up's counts, the ids kept, the deliveries, the events.
            let batch_rows = std::rc::Rc::new(
                rows.iter()
                    .map(|(rowid, ..)| SqlValue::Integer(*rowid))
                    .collect::<Vec<_>>(),
            );
            rollup::uncount_events(c, &batch_rows, &mut lowered)?;
            // An id still inside the idempotency window is kept: publishing it again stays a
            // duplicate after its event is gone.
            c.prepare_cached(
                "INSERT INTO purged_event_ids (tenant_id, id, matched, created_at)
                 SELECT tenant_id, id, matched, created_at FROM events WHERE rowid IN rarray(?1) AND created_at >= ?2
                 ON CONFLICT (tenant_id, id) DO NOTHING",
            )?
            .execute(params![batch_rows, us(ids_since)])?;
            let deliveries = c
                .prepare_cached(
                    "DELETE FROM deliveries WHERE rowid IN (SELECT d.rowid FROM events e
                     JOIN deliveries d ON d.event_id = e.id AND d.tenant_id = e.tenant_id
                     WHERE e.rowid IN rarray(?1))",
                )?
                .execute([&batch_rows])? as u64;
            c.prepare_cached("DELETE FROM events WHERE rowid IN rarray(?1)")?
                .execute([&batch_rows])?;
            let ids_forgotten = c
                .prepare_cached(
                    "DELETE FROM purged_event_ids WHERE rowid IN
                     (SELECT rowid FROM purged_event_ids WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
                )?
                .execute(params![us(ids_since), n])? as u64;
            rollup::drop_zeros(c, &lowered)?;
            rollup::clamp(c)?;
            Ok(PurgeStats {
                attempts,
                deliveries,
                events: rows.len() as u64,
                ids_forgotten,
            })
        })
        .await
    }

    async fn backlog(&self) -> Result<Backlog> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT tenant_id, destination_id, COUNT(*), SUM(attempts > 0), MIN(created_at) FROM deliveries WHERE status = 'pending' GROUP BY tenant_id, destination_id",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Backlog::default();
            while let Some(r) = rows.next()? {
                out.per_destination.push(PendingFor {
                    tenant_id: r.get(0)?,
                    destination_id: r.get(1)?,
                    pending: r.get::<_, i64>(2)? as u64,
                    oldest: ts(r.get::<_, i64>(4)?),
                });
                out.retries += r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64;
            }
            Ok(out)
        })
        .await
    }

    async fn reset_failures(&self, tenant_id: &str, destination_id: &str) -> Result<()> {
        let (tenant_id, id) = (tenant_id.to_string(), destination_id.to_string());
        self.write(move |c| reset_streak(c, &tenant_id, &id)).await
    }

    async fn release_all_leases(&self) -> Result<u64> {
        let now = us(Timestamp::now());
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE deliveries SET next_attempt_at = ?1, leased = 0 WHERE status = 'pending' AND leased = 1",
                [now],
            )? as u64)
        })
        .await
    }

    async fn pending_count(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn setting_or_insert(&self, name: &str, fresh: &str) -> Result<(String, bool)> {
        let keys = self.inner.keys.clone();
        let sealed = keys.seal(fresh, seal::SETTINGS, name);
        let name = name.to_string();
        self.write(move |c| {
            let inserted = c
                .prepare_cached("INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING")?
                .execute([&name, &sealed])?;
            let value: String = c
                .prepare_cached("SELECT value FROM settings WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))?;
            Ok((seal::open_setting(&keys, &name, &value)?, inserted == 1))
        })
        .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.write(move |c| {
            if write_api_key(c, &key, false)? == 0 {
                return Err(StoreError::Conflict {
                    what: "api key",
                    id: key.id.clone(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn replace_api_key(&self, key: &ApiKey) -> Result<()> {
        let key = key.clone();
        self.write(move |c| write_api_key(c, &key, true).map(|_| ()))
            .await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE id = ?1"
            ))?
            .query([&id])?
            .next()?
            .map(api_key_from_row)
            .transpose()
        })
        .await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id"
            ))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(api_key_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> Result<bool> {
        let id = id.to_string();
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![id, us(now)])?
                > 0)
        })
        .await
    }

    async fn touch_api_key(&self, id: &str, at: Timestamp) -> Result<()> {
        let id = id.to_string();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?
            .execute(params![id, us(at)])?;
            Ok(())
        })
        .await
    }

    async fn use_nonce(&self, nonce: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool> {
        let nonce = nonce.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM used_nonces WHERE expires_at < ?1")?
                .execute([us(now)])?;
            Ok(c.prepare_cached(
                "INSERT INTO used_nonces (nonce, expires_at) VALUES (?1, ?2) ON CONFLICT (nonce) DO NOTHING",
            )?
            .execute(params![nonce, us(expires_at)])?
                == 1)
        })
        .await
    }

    async fn get_attempt(&self, id: &str) -> Result<Option<Attempt>> {
        let id = id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLS} FROM attempts WHERE id = ?1"
            ))?;
            let mut rows = stmt.query([&id])?;
            rows.next()?.map(attempt_from_row).transpose()
        })
        .await
    }

    async fn list_attempts(&self, q: &AttemptQuery) -> Result<Page<Attempt>> {
        let q = q.clone();
        self.read(move |c| {
            // Given event ids (a handful of rows), the event index is the one to use; without
            // statistics SQLite would rather walk the tenant's whole log in time order. The
            // unary `+` keeps the tenant condition off its index in that case.
            let tenant_col = if q.event_ids.is_empty() {
                "tenant_id"
            } else {
                "+tenant_id"
            };
            let w = attempt_filter(&q, tenant_col);
            paged(
                c,
                &format!("SELECT {ATTEMPT_COLS} FROM attempts"),
                ("time", "id"),
                w,
                &q.page,
                |r| attempt_from_row(r),
                |a| (us(a.time), a.id.clone()),
            )
        })
        .await
    }

    async fn event_metrics(&self, q: &MetricsQuery) -> Result<Vec<MetricsRow>> {
        let q = q.clone();
        self.read(move |c| {
            // By destination: one row per (event, destination) routed at publish time.
            let by_destination = q.dimensions.iter().any(|d| d == "destination_id")
                || q.filters.contains_key("destination_id");
            let kind = if by_destination {
                rollup::Kind::Routed
            } else {
                rollup::Kind::Events
            };
            rollup::metrics(c, &q, kind)
        })
        .await
    }

    async fn attempt_metrics(&self, q: &MetricsQuery) -> Result<Vec<MetricsRow>> {
        let q = q.clone();
        self.read(move |c| rollup::metrics(c, &q, rollup::Kind::Attempts))
            .await
    }

    async fn roll_up_metrics(&self, batch: usize) -> Result<u64> {
        let (folds, behind) = self
            .read(move |c| rollup::count_new(c, batch as i64))
            .await?;
        if folds.is_empty() {
            return Ok(behind);
        }
        let applied = self.write(move |c| rollup::apply(c, &folds)).await?;
        // A kind counted under a changed watermark is counted again.
        Ok(if applied { behind } else { behind.max(1) })
    }
}

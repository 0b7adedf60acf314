//! The PostgreSQL store: one database shared by any number of `herald serve` nodes.
//!
//! - **Connections** are bounded: a pool of `pool_size` connections for all queries and
//!   writes, plus, once the engine subscribes to [`Notice`]s, one listening connection.
//! - **Writes** that come in bursts (publishes, attempt results) are batched across callers
//!   into multi-row statements ([`batch`]); the rest are one transaction each, retried whole
//!   when PostgreSQL picks it as a deadlock victim.
//! - **Work division**: [`Store::claim_due`] leases due deliveries with
//!   `FOR UPDATE SKIP LOCKED`, so concurrent claimers on any node never get the same one. As
//!   in the embedded store a lease is a future `next_attempt_at`: a node that dies simply
//!   stops renewing nothing, and its deliveries become due again when their lease runs out.
//!   Leases are never released in bulk here — other nodes hold live ones.
//! - **Cross-node changes** (destinations, tenants, new work) are announced with `NOTIFY` in
//!   the writing transaction and reach every node's [`Store::notices`] subscribers
//!   ([`listen`]).
//! - **Schema**: versioned migrations ([`schema`]), applied under an advisory lock.
//! - **Statistics**: Herald analyses its own tables as they grow and change ([`stats`]), so
//!   its plans never depend on the operator's autovacuum settings.
//!
//! The connection is plain TCP (no TLS yet: `sslmode=require` is refused at start).

mod admin;
mod batch;
mod listen;
mod reseal;
mod schema;
mod sql;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use herald_core::{Attempt, DeliveryStatus, Destination, Event, Metadata, Tenant, TenantSummary};
use jiff::Timestamp;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls};

pub use admin::{
    TemporaryDatabase, create_database, describe_url, drop_database, parse_url, url_with_database,
};
pub use schema::SCHEMA_VERSION;

use crate::codec::{from_json, to_json, topics_from_json, topics_to_json, ts, us};
use crate::query::*;
use crate::seal::{self, Keyring};
use crate::sql::{
    API_KEY_COLS, ATTEMPT_COLS, DELIVERY_COLS, DEST_COLS, EVENT_COLS, TENANT_COLS,
    api_key_from_row, attempt_from_row, delivery_from_row, destination_from_row, event_at,
    event_from_row, tenant_from_row,
};
use crate::{
    ApiKey, AttemptRecord, Backlog, DestinationBatch, ExpiryLevel, Job, NewDelivery, NewEvent,
    Notice, PublishOutcome, PurgeStats, Recorded, Result, Store, StoreError, StoredEvent,
};
use herald_core::operator::{self as op, DestinationRef, OPERATOR_TENANT, Subscription};
use sql::Where;

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/dbname?…`.
    pub url: String,
    /// Most pooled connections this process opens (the notice listener adds one).
    pub pool_size: usize,
    /// Apply pending migrations when connecting; otherwise refuse a database that needs them.
    pub migrate: bool,
    /// Keys that seal destination secrets; every node sharing the database needs the same
    /// current key (or has it among its old keys).
    pub keys: Keyring,
}

/// Shows where the database is, never the URL's password.
impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &describe_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("migrate", &self.migrate)
            .field("keys", &self.keys)
            .finish()
    }
}

impl PgOptions {
    /// Defaults: 10 connections, migrate on connect.
    pub fn new(url: impl Into<String>, keys: Keyring) -> Self {
        Self {
            url: url.into(),
            pool_size: 10,
            migrate: true,
            keys,
        }
    }
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    keys: Keyring,
    cfg: tokio_postgres::Config,
    publishes: mpsc::Sender<batch::PublishReq>,
    records: mpsc::Sender<batch::RecordReq>,
    /// How long a batch of attempt results gathers (microseconds; see [`batch::run_records`]).
    linger_us: Arc<AtomicU64>,
    notices: broadcast::Sender<Notice>,
    listener: Mutex<Option<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.listener.lock().take() {
            h.abort();
        }
    }
}

/// Whether PostgreSQL aborted the work for a reason that retrying it whole can fix.
pub(crate) fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(pe) => matches!(
            pe.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        ),
        _ => false,
    }
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(pe) if pe.code() == Some(&SqlState::UNIQUE_VIOLATION))
}

/// Runs `$body` (which may use `$tx`, a transaction on a pooled connection) and commits when
/// it returns `Ok`. Rolled back on error; run again whole when PostgreSQL aborted it to break
/// a deadlock.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut tries = 0u32;
        loop {
            let mut client = $store.inner.pool.get().await?;
            let $tx = client.transaction().await?;
            let out: Result<_> = async { $body }.await;
            let out = match out {
                Ok(v) => $tx.commit().await.map(|()| v).map_err(StoreError::from),
                Err(e) => Err(e),
            };
            match out {
                Err(e) if tries < 5 && is_retryable(&e) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                }
                other => break other,
            }
        }
    }};
}

impl PgStore {
    /// Connects, checks (and with `opts.migrate`, applies) the schema, and starts the batch
    /// writers. Refuses a database written by a newer Herald.
    pub async fn connect(opts: &PgOptions) -> Result<PgStore> {
        let mut cfg = parse_url(&opts.url).map_err(|detail| StoreError::Open {
            path: describe_url(&opts.url),
            detail,
        })?;
        if cfg.get_application_name().is_none() {
            cfg.application_name("herald");
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        // Herald's statements are prepared once per connection and their best plan does not
        // depend on the values bound; planning them at every execution (PostgreSQL's default
        // for the first executions) costs more than running them.
        let options = match cfg.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c plan_cache_mode=force_generic_plan"),
            _ => "-c plan_cache_mode=force_generic_plan".to_string(),
        };
        cfg.options(&options);
        migrate_with(&cfg, opts.migrate).await?;

        let manager = Manager::from_config(
            cfg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool_size = opts.pool_size.max(1);
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Open {
                path: describe_url(&opts.url),
                detail: e.to_string(),
            })?;
        reseal::check_and_seal_plaintext(&pool, &opts.keys).await?;
        // One publish statement at a time per node: the next batch gathers while one runs, so
        // batches grow with the load (up to `MAX_EVENTS`) and each commit carries as many
        // events as the node has callers. Measured (`herald bench --pg`, docs/benchmarks.md):
        // up to four at once split a node's callers over four smaller commits, and
        // PostgreSQL's CPU per event was 1.5–2 times higher, the most with three nodes, where
        // each node has a third of the callers.
        let parallel = 1;
        let (ptx, prx) = mpsc::channel(16_384);
        let (rtx, rrx) = mpsc::channel(16_384);
        let freshness = stats::Freshness::new();
        tokio::spawn(batch::run_publishes(
            pool.clone(),
            prx,
            parallel,
            freshness.clone(),
        ));
        // Attempt results of one destination serialize on its failure counter anyway; one
        // writer makes the largest batches.
        let linger_us = Arc::new(AtomicU64::new(crate::RESULT_LINGER.as_micros() as u64));
        tokio::spawn(batch::run_records(
            pool.clone(),
            rrx,
            1,
            freshness,
            linger_us.clone(),
        ));
        let (notices, _) = broadcast::channel(4096);
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                keys: opts.keys.clone(),
                cfg,
                publishes: ptx,
                records: rtx,
                linger_us,
                notices,
                listener: Mutex::new(None),
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }

    /// How long a batch of attempt results gathers after its first result before it is
    /// written (default 10 ms; zero writes whatever is queued at once). A result's caller
    /// hears back only after its batch committed either way.
    pub fn set_result_linger(&self, linger: Duration) {
        let us = u64::try_from(linger.as_micros()).unwrap_or(u64::MAX);
        self.inner.linger_us.store(us, Ordering::Relaxed);
    }

    /// Applies pending migrations to the database at `url` and returns its schema version.
    pub async fn migrate(url: &str) -> Result<i64> {
        let cfg = parse_url(url).map_err(|detail| StoreError::Open {
            path: describe_url(url),
            detail,
        })?;
        migrate_with(&cfg, true).await
    }

    /// The schema version of the database at `url` (0 when Herald never migrated it).
    pub async fn schema_version(url: &str) -> Result<i64> {
        let cfg = parse_url(url).map_err(|detail| StoreError::Open {
            path: describe_url(url),
            detail,
        })?;
        let (client, conn) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        schema::current_version(&client).await
    }

    /// Runs `ANALYZE` on each of Herald's tables changed by more than a tenth since its last
    /// one (see [`stats`]), unless another session is doing it; returns the tables analysed.
    /// The batch writers call this every [`stats::CHECK_EVERY_ROWS`] rows written; this
    /// method is for operators' tools and tests.
    pub async fn refresh_statistics(&self) -> Result<Vec<&'static str>> {
        stats::analyze_stale(&self.inner.pool).await
    }

    /// Hands one caller's events to the publish batch writer and waits for their commit.
    async fn send_publish(&self, items: Vec<batch::PublishItem>) -> Result<Vec<PublishOutcome>> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .publishes
            .send(batch::PublishReq { items, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.inner.pool.get().await?)
    }
}

async fn migrate_with(cfg: &tokio_postgres::Config, apply: bool) -> Result<i64> {
    let (mut client, conn) = cfg.connect(NoTls).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let out = schema::prepare(&mut client, apply).await;
    drop(client);
    let _ = driver.await;
    out
}

/// Queues `n` to be sent when the transaction commits.
async fn notify_in<C: GenericClient>(c: &C, n: &Notice) -> Result<()> {
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&listen::CHANNEL, &listen::payload(n)],
    )
    .await?;
    Ok(())
}

// ----- rows -----

/// Updates a whole destination row (`$1`…`$13` as [`destination_params`]); a new expiry
/// starts a new round of expiry notices.
const UPDATE_DESTINATION: &str = "UPDATE destinations SET type = $3, topics = $4, filter = $5, config = $6, credentials = $7,
     delivery_metadata = $8, metadata = $9, disabled_at = $10, created_at = $11, updated_at = $12, expires_at = $13,
     expiry_notice = CASE WHEN destinations.expires_at IS NOT DISTINCT FROM $13 THEN destinations.expiry_notice ELSE 0 END
     WHERE id = $1 AND tenant_id = $2";

/// Adds destination counts and topics to tenants, with one query for all of them.
async fn summarize<C: GenericClient>(c: &C, tenants: Vec<Tenant>) -> Result<Vec<TenantSummary>> {
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
    let rows = c
        .query(
            "SELECT tenant_id, topics FROM destinations WHERE tenant_id = ANY($1::text[])",
            &[&ids],
        )
        .await?;
    let mut per: HashMap<String, (u64, std::collections::BTreeSet<String>)> = HashMap::new();
    for r in rows {
        let e = per.entry(r.try_get(0)?).or_default();
        e.0 += 1;
        e.1.extend(topics_from_json(r.try_get(1)?)?.to_vec());
    }
    Ok(tenants
        .into_iter()
        .map(|tenant| {
            let (count, topics) = per.remove(&tenant.id).unwrap_or_default();
            TenantSummary {
                tenant,
                destinations_count: count,
                topics: topics.into_iter().collect(),
            }
        })
        .collect())
}

/// Cancels the pending deliveries of a tenant's destination, or with `None` of the whole tenant.
async fn cancel_pending<C: GenericClient>(
    c: &C,
    tenant_id: &str,
    destination_id: Option<&str>,
    now: Timestamp,
) -> Result<u64> {
    Ok(match destination_id {
        Some(id) => {
            c.execute(
                "UPDATE deliveries SET status = 'cancelled', leased = false, updated_at = $3
                 WHERE destination_id = $2 AND tenant_id = $1 AND status = 'pending'",
                &[&tenant_id, &id, &us(now)],
            )
            .await?
        }
        None => {
            c.execute(
                "UPDATE deliveries SET status = 'cancelled', leased = false, updated_at = $2
                 WHERE tenant_id = $1 AND status = 'pending'",
                &[&tenant_id, &us(now)],
            )
            .await?
        }
    })
}

/// Sets a destination's failure streak back to zero.
async fn reset_streak<C: GenericClient>(c: &C, tenant_id: &str, id: &str) -> Result<()> {
    c.execute(
        "UPDATE destination_health SET consecutive_failures = 0 WHERE tenant_id = $1 AND destination_id = $2",
        &[&tenant_id, &id],
    )
    .await?;
    Ok(())
}

fn destination_params(keys: &Keyring, d: &Destination) -> [Box<dyn ToSql + Sync + Send>; 13] {
    let (config, credentials) = seal::seal_destination(keys, d);
    [
        Box::new(d.id.clone()),
        Box::new(d.tenant_id.clone()),
        Box::new(d.kind.clone()),
        Box::new(topics_to_json(&d.topics)),
        Box::new(d.filter.as_ref().map(to_json)),
        Box::new(config),
        Box::new(credentials),
        Box::new(d.delivery_metadata.as_ref().map(to_json)),
        Box::new(d.metadata.as_ref().map(to_json)),
        Box::new(d.disabled_at.map(us)),
        Box::new(us(d.created_at)),
        Box::new(us(d.updated_at)),
        Box::new(d.expires_at.map(us)),
    ]
}

fn api_key_params(k: &ApiKey) -> [Box<dyn ToSql + Sync + Send>; 9] {
    [
        Box::new(k.id.clone()),
        Box::new(k.name.clone()),
        Box::new(to_json(&k.scopes)),
        Box::new(k.tenant_id.clone()),
        Box::new(k.secret_hash.clone()),
        Box::new(us(k.created_at)),
        Box::new(k.expires_at.map(us)),
        Box::new(k.revoked_at.map(us)),
        Box::new(k.last_used_at.map(us)),
    ]
}

fn refs(p: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn destination_notice(d_tenant: &str, id: &str) -> Notice {
    Notice::Destination {
        tenant_id: d_tenant.to_string(),
        id: id.to_string(),
    }
}

// ----- operator events -----

/// The enabled operator destinations that subscribe to `event`, oldest first.
async fn operator_subscribers<C: GenericClient>(c: &C, event: &Event) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT id, topics, filter FROM destinations WHERE tenant_id = $1 AND disabled_at IS NULL ORDER BY created_at, id",
            &[&OPERATOR_TENANT],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let topics = topics_from_json(r.try_get(1)?)?;
        let filter: Option<serde_json::Value> = r
            .try_get::<_, Option<&str>>(2)?
            .map(|s| from_json("destinations.filter", s))
            .transpose()?;
        if op::subscribes(&topics, filter.as_ref(), event) {
            out.push(r.try_get(0)?);
        }
    }
    Ok(out)
}

/// Writes an operator event and its deliveries inside the caller's transaction (see
/// [`Store::emit_operator_event`]); an event no enabled operator destination subscribes to is
/// not written at all.
/// Queues a `Work` notice so every node's poller looks for the new deliveries.
pub(crate) async fn write_operator_event<C: GenericClient>(
    c: &C,
    event: &Event,
    now: Timestamp,
) -> Result<u32> {
    let subscribers = operator_subscribers(c, event).await?;
    if subscribers.is_empty() {
        return Ok(0);
    }
    let n = c
        .execute(
            &format!(
                "INSERT INTO events ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (tenant_id, id) DO NOTHING"
            ),
            &[
                &event.id,
                &event.tenant_id,
                &event.destination_id,
                &event.topic,
                &us(event.time),
                &to_json(&event.metadata),
                &to_json(&event.data),
                &event.eligible_for_retry,
                &to_json(&subscribers),
                &us(now),
            ],
        )
        .await?;
    if n == 0 {
        return Ok(0);
    }
    for id in &subscribers {
        let d = op::delivery(event, id, now);
        c.execute(
            "INSERT INTO deliveries (id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at, leased, manual, retry_base, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, false, false, 0, $5, $5)",
            &[&d.id, &d.event_id, &d.tenant_id, &d.destination_id, &us(now)],
        )
        .await?;
    }
    notify_in(c, &Notice::Work).await?;
    Ok(subscribers.len() as u32)
}

/// What operator payloads say about a destination, read without opening its sealed columns.
pub(crate) async fn destination_ref<C: GenericClient>(
    c: &C,
    tenant_id: &str,
    id: &str,
) -> Result<Option<DestinationRef>> {
    let Some(r) = c
        .query_opt(
            "SELECT id, tenant_id, type, topics, disabled_at FROM destinations WHERE id = $1 AND tenant_id = $2",
            &[&id, &tenant_id],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(DestinationRef {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        topics: topics_from_json(r.try_get(3)?)?,
        disabled_at: r.try_get::<_, Option<i64>>(4)?.map(ts),
    }))
}

/// Disables an enabled destination, cancels its pending deliveries, resets its streak and
/// tells the other nodes.
pub(crate) async fn disable_destination<C: GenericClient>(
    c: &C,
    tenant_id: &str,
    id: &str,
    now: Timestamp,
) -> Result<bool> {
    let n = c
        .execute(
            "UPDATE destinations SET disabled_at = $2, updated_at = $2 WHERE id = $1 AND tenant_id = $3 AND disabled_at IS NULL",
            &[&id, &us(now), &tenant_id],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    cancel_pending(c, tenant_id, Some(id), now).await?;
    reset_streak(c, tenant_id, id).await?;
    notify_in(c, &destination_notice(tenant_id, id)).await?;
    Ok(true)
}

/// A tenant's subscription (the union of its destinations' topics, and their count).
async fn subscription<C: GenericClient>(c: &C, tenant_id: &str) -> Result<Subscription> {
    let rows = c
        .query(
            "SELECT topics FROM destinations WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await?;
    let mut topics = std::collections::BTreeSet::new();
    for r in &rows {
        topics.extend(topics_from_json(r.try_get(0)?)?.to_vec());
    }
    Ok(Subscription {
        topics: topics.into_iter().collect(),
        destinations_count: rows.len() as u64,
    })
}

/// The tenant's subscription before a destination write (`None` for the operator tenant).
async fn subscription_before<C: GenericClient>(
    c: &C,
    tenant_id: &str,
) -> Result<Option<Subscription>> {
    if tenant_id == OPERATOR_TENANT {
        return Ok(None);
    }
    // Serialises destination writes of one tenant, so two concurrent changes each see the
    // other's result and the events describe successive states.
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtext('herald.subscription'), hashtext($1))",
        &[&tenant_id],
    )
    .await?;
    Ok(Some(subscription(c, tenant_id).await?))
}

/// Writes `tenant.subscription.updated` when the write changed the tenant's subscription.
async fn subscription_after<C: GenericClient>(
    c: &C,
    tenant_id: &str,
    before: Option<Subscription>,
    now: Timestamp,
) -> Result<()> {
    let Some(before) = before else {
        return Ok(());
    };
    let after = subscription(c, tenant_id).await?;
    if let Some(e) = op::subscription_updated(tenant_id, &before, &after, now) {
        write_operator_event(c, &e, now).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn upsert_tenant(
        &self,
        id: &str,
        metadata: Option<Metadata>,
        now: Timestamp,
    ) -> Result<(Tenant, bool)> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO tenants (id, metadata, created_at, updated_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (id) DO UPDATE SET metadata = excluded.metadata, updated_at = excluded.updated_at
                 RETURNING created_at, (xmax = 0), tokens_revoked_at",
            )
            .await?;
        let meta = metadata.as_ref().map(to_json);
        let row = c.query_one(&stmt, &[&id, &meta, &us(now)]).await?;
        let created: bool = row.try_get(1)?;
        Ok((
            Tenant {
                id: id.to_string(),
                metadata,
                created_at: ts(row.try_get(0)?),
                updated_at: now,
                tokens_revoked_at: row.try_get::<_, Option<i64>>(2)?.map(ts),
            },
            created,
        ))
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<TenantSummary>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
            .await?;
        let Some(row) = c.query_opt(&stmt, &[&id]).await? else {
            return Ok(None);
        };
        let t = tenant_from_row(&row)?;
        Ok(summarize(&**c, vec![t]).await?.pop())
    }

    async fn list_tenants(&self, q: &TenantQuery) -> Result<(Page<TenantSummary>, u64)> {
        let c = self.client().await?;
        let mut w = Where::default();
        w.any_of("id", &q.ids);
        let count: i64 = c
            .query_one(
                &format!("SELECT COUNT(*) FROM tenants{}", w.sql()),
                &w.refs(),
            )
            .await?
            .try_get(0)?;
        let page = sql::paged(
            &**c,
            &format!("SELECT {TENANT_COLS} FROM tenants"),
            ("created_at", "id"),
            w,
            &q.page,
            tenant_from_row,
            |t| (us(t.created_at), t.id.clone()),
        )
        .await?;
        let models = summarize(&**c, page.models).await?;
        Ok((
            Page {
                models,
                next: page.next,
                prev: page.prev,
            },
            count as u64,
        ))
    }

    async fn revoke_tenant_tokens(&self, id: &str, now: Timestamp) -> Result<Option<Tenant>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "UPDATE tenants SET tokens_revoked_at = GREATEST($2, COALESCE(tokens_revoked_at, created_at) + 1)
                 WHERE id = $1 RETURNING {TENANT_COLS}"
            ))
            .await?;
        c.query_opt(&stmt, &[&id, &us(now)])
            .await?
            .map(|r| tenant_from_row(&r))
            .transpose()
    }

    async fn delete_tenant(&self, id: &str, now: Timestamp) -> Result<bool> {
        in_tx!(self, |tx| {
            let n = tx
                .execute("DELETE FROM tenants WHERE id = $1", &[&id])
                .await?;
            if n == 0 {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM destination_health WHERE tenant_id = $1",
                &[&id],
            )
            .await?;
            tx.execute("DELETE FROM destinations WHERE tenant_id = $1", &[&id])
                .await?;
            cancel_pending(&*tx, id, None, now).await?;
            notify_in(
                &*tx,
                &Notice::TenantDeleted {
                    tenant_id: id.to_string(),
                },
            )
            .await?;
            Ok(true)
        })
    }

    async fn insert_destination(&self, d: &Destination) -> Result<()> {
        let p = destination_params(&self.inner.keys, d);
        in_tx!(self, |tx| {
            let before = subscription_before(&*tx, &d.tenant_id).await?;
            let n = tx
                .execute(
                    &format!(
                        "INSERT INTO destinations ({DEST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                         ON CONFLICT (tenant_id, id) DO NOTHING"
                    ),
                    &refs(&p),
                )
                .await?;
            if n == 0 {
                return Err(StoreError::Conflict {
                    what: "destination",
                    id: d.id.clone(),
                });
            }
            tx.execute(
                "INSERT INTO destination_health (tenant_id, destination_id, consecutive_failures) VALUES ($1, $2, 0)
                 ON CONFLICT (tenant_id, destination_id) DO UPDATE SET consecutive_failures = 0",
                &[&d.tenant_id, &d.id],
            )
            .await?;
            subscription_after(&*tx, &d.tenant_id, before, d.updated_at).await?;
            notify_in(&*tx, &destination_notice(&d.tenant_id, &d.id)).await?;
            Ok(())
        })
    }

    async fn update_destination(
        &self,
        d: &Destination,
        cancel: bool,
        now: Timestamp,
    ) -> Result<()> {
        let p = destination_params(&self.inner.keys, d);
        in_tx!(self, |tx| {
            let before = subscription_before(&*tx, &d.tenant_id).await?;
            tx.execute(UPDATE_DESTINATION, &refs(&p)).await?;
            if cancel {
                cancel_pending(&*tx, &d.tenant_id, Some(&d.id), now).await?;
                // A disabled destination starts a fresh failure streak when re-enabled.
                reset_streak(&*tx, &d.tenant_id, &d.id).await?;
            }
            subscription_after(&*tx, &d.tenant_id, before, now).await?;
            notify_in(&*tx, &destination_notice(&d.tenant_id, &d.id)).await?;
            Ok(())
        })
    }

    async fn import_destinations(&self, rows: DestinationBatch) -> Result<u64> {
        // Not retried whole like other transactions: the rows are produced once.
        let keys = self.inner.keys.clone();
        let mut client = self.inner.pool.get().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO destinations ({DEST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (tenant_id, id) DO NOTHING"
            ))
            .await?;
        let update = tx.prepare_cached(UPDATE_DESTINATION).await?;
        let health = tx
            .prepare_cached(
                "INSERT INTO destination_health (tenant_id, destination_id, consecutive_failures) VALUES ($1, $2, 0)
                 ON CONFLICT (tenant_id, destination_id) DO NOTHING",
            )
            .await?;
        let mut n = 0u64;
        for row in rows {
            let (d, is_insert) = row?;
            let p = destination_params(&keys, &d);
            if is_insert {
                if tx.execute(&insert, &refs(&p)).await? == 0 {
                    return Err(StoreError::Conflict {
                        what: "destination",
                        id: d.id.clone(),
                    });
                }
                tx.execute(&health, &[&d.tenant_id, &d.id]).await?;
            } else {
                tx.execute(&update, &refs(&p)).await?;
            }
            n += 1;
        }
        if n > 0 {
            notify_in(&*tx, &Notice::Resync).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn mark_expiry_notice(
        &self,
        tenant_id: &str,
        id: &str,
        expires_at: Timestamp,
        level: ExpiryLevel,
        now: Timestamp,
    ) -> Result<bool> {
        let lvl = level as i16;
        in_tx!(self, |tx| {
            let won = tx
                .execute(
                    "UPDATE destinations SET expiry_notice = $3
                     WHERE id = $1 AND tenant_id = $4 AND expires_at = $2 AND expiry_notice < $3",
                    &[&id, &us(expires_at), &lvl, &tenant_id],
                )
                .await?
                == 1;
            if won && level == ExpiryLevel::Expired {
                cancel_pending(&*tx, tenant_id, Some(id), now).await?;
            }
            Ok(won)
        })
    }

    async fn get_destination(&self, tenant_id: &str, id: &str) -> Result<Option<Destination>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {DEST_COLS} FROM destinations WHERE id = $1 AND tenant_id = $2"
            ))
            .await?;
        c.query_opt(&stmt, &[&id, &tenant_id])
            .await?
            .map(|r| destination_from_row(&self.inner.keys, &r))
            .transpose()
    }

    async fn list_destinations(&self, tenant_id: &str) -> Result<Vec<Destination>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {DEST_COLS} FROM destinations WHERE tenant_id = $1 ORDER BY created_at, id"
            ))
            .await?;
        c.query(&stmt, &[&tenant_id])
            .await?
            .iter()
            .map(|r| destination_from_row(&self.inner.keys, r))
            .collect()
    }

    async fn list_all_destinations(&self) -> Result<Vec<Destination>> {
        let c = self.client().await?;
        c.query(&format!("SELECT {DEST_COLS} FROM destinations"), &[])
            .await?
            .iter()
            .map(|r| destination_from_row(&self.inner.keys, r))
            .collect()
    }

    async fn delete_destination(&self, tenant_id: &str, id: &str, now: Timestamp) -> Result<bool> {
        in_tx!(self, |tx| {
            let before = subscription_before(&*tx, tenant_id).await?;
            let n = tx
                .execute(
                    "DELETE FROM destinations WHERE id = $1 AND tenant_id = $2",
                    &[&id, &tenant_id],
                )
                .await?;
            if n > 0 {
                subscription_after(&*tx, tenant_id, before, now).await?;
                cancel_pending(&*tx, tenant_id, Some(id), now).await?;
                tx.execute(
                    "DELETE FROM destination_health WHERE tenant_id = $1 AND destination_id = $2",
                    &[&tenant_id, &id],
                )
                .await?;
                notify_in(&*tx, &destination_notice(tenant_id, id)).await?;
            }
            Ok(n > 0)
        })
    }

    async fn publish(
        &self,
        event: &Event,
        matched: &[String],
        deliveries: Vec<NewDelivery>,
        dedup_since: Timestamp,
        now: Timestamp,
    ) -> Result<PublishOutcome> {
        let item = batch::PublishItem {
            event: event.clone(),
            matched: to_json(matched),
            deliveries,
            dedup_since,
            now,
        };
        let mut out = self.send_publish(vec![item]).await?;
        out.pop().ok_or(StoreError::Closed)
    }

    async fn publish_batch(
        &self,
        events: Vec<NewEvent>,
        dedup_since: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<PublishOutcome>> {
        // Repeats of an id inside the batch are answered from their first occurrence, so the
        // statement holds each id once.
        let repeats = crate::repeats(&events);
        let mut firsts = Vec::with_capacity(events.len());
        let mut matched: Vec<Vec<String>> = Vec::with_capacity(events.len());
        for (e, rep) in events.into_iter().zip(&repeats) {
            matched.push(e.matched.clone());
            if rep.is_none() {
                firsts.push(batch::PublishItem {
                    event: e.event,
                    matched: to_json(&e.matched),
                    deliveries: e.deliveries,
                    dedup_since,
                    now,
                });
            }
        }
        let mut written = if firsts.is_empty() {
            Vec::new()
        } else {
            self.send_publish(firsts).await?
        }
        .into_iter();
        let mut out: Vec<PublishOutcome> = Vec::with_capacity(repeats.len());
        for rep in &repeats {
            let o = match rep {
                None => written.next().ok_or(StoreError::Closed)?,
                // `j` is earlier, so its outcome is already in `out`.
                Some(j) => crate::repeat_outcome(&out[*j], &matched[*j]),
            };
            out.push(o);
        }
        Ok(out)
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<StoredEvent>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE tenant_id = $1 AND id = $2"
            ))
            .await?;
        c.query_opt(&stmt, &[&tenant_id, &id])
            .await?
            .map(|r| event_from_row(&r))
            .transpose()
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Page<StoredEvent>> {
        let c = self.client().await?;
        let mut w = Where::default();
        w.any_of("id", &q.ids);
        w.any_of("tenant_id", &q.tenant_ids);
        w.not_operator("tenant_id", &q.tenant_ids);
        w.any_of("topic", &q.topics);
        w.time("time", &q.time);
        if !q.destination_ids.is_empty() {
            let p = w.param(q.destination_ids.clone());
            w.push(format!(
                "EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.tenant_id = events.tenant_id
                 AND d.destination_id = ANY({p}::text[]))"
            ));
        }
        sql::paged(
            &**c,
            &format!("SELECT {EVENT_COLS} FROM events"),
            ("time", "id"),
            w,
            &q.page,
            event_from_row,
            |e| (us(e.event.time), e.event.id.clone()),
        )
        .await
    }

    async fn add_delivery(&self, nd: NewDelivery) -> Result<(String, bool)> {
        let d = &nd.delivery;
        let (next, leased) = match nd.lease_until {
            Some(until) => (us(until), true),
            None => (us(d.next_attempt_at), false),
        };
        in_tx!(self, |tx| {
            let pending = tx
                .query_opt(
                    "SELECT id FROM deliveries WHERE event_id = $1 AND destination_id = $2 AND tenant_id = $3
                     AND status = 'pending' LIMIT 1",
                    &[&d.event_id, &d.destination_id, &d.tenant_id],
                )
                .await?;
            if let Some(r) = pending {
                return Ok((r.try_get::<_, String>(0)?, false));
            }
            // Attempt numbers continue across deliveries of the same event to the same destination.
            let before: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM attempts WHERE event_id = $1 AND destination_id = $2 AND tenant_id = $3",
                    &[&d.event_id, &d.destination_id, &d.tenant_id],
                )
                .await?
                .try_get(0)?;
            let before = before as i32;
            // The partial unique index keeps one pending delivery per (event, destination),
            // even when two nodes add one at the same moment.
            let n = tx
                .execute(
                    "INSERT INTO deliveries (id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at, leased, manual, retry_base, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $6, $10, $10)
                     ON CONFLICT (tenant_id, event_id, destination_id) WHERE status = 'pending' DO NOTHING",
                    &[
                        &d.id,
                        &d.event_id,
                        &d.tenant_id,
                        &d.destination_id,
                        &d.status.as_str(),
                        &before,
                        &next,
                        &leased,
                        &d.manual,
                        &us(d.created_at),
                    ],
                )
                .await?;
            if n == 0 {
                let r = tx
                    .query_one(
                        "SELECT id FROM deliveries WHERE event_id = $1 AND destination_id = $2 AND tenant_id = $3
                         AND status = 'pending' LIMIT 1",
                        &[&d.event_id, &d.destination_id, &d.tenant_id],
                    )
                    .await?;
                return Ok((r.try_get::<_, String>(0)?, false));
            }
            if !leased {
                notify_in(&*tx, &Notice::Work).await?;
            }
            Ok((d.id.clone(), true))
        })
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        // SKIP LOCKED: rows another claimer is taking right now are passed over, never waited
        // for; a row it took already has a future next_attempt_at and no longer qualifies.
        let cols = |prefix: &str, list: &str| {
            list.split(", ")
                .map(|col| format!("{prefix}.{col}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let stmt = c
            .prepare_cached(&format!(
                "WITH due AS (
                    SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1
                    ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED
                ), claimed AS (
                    UPDATE deliveries d SET next_attempt_at = $3, leased = true FROM due WHERE d.id = due.id
                    RETURNING {}
                )
                SELECT {}, {} FROM claimed c LEFT JOIN events e ON e.tenant_id = c.tenant_id AND e.id = c.event_id",
                cols("d", DELIVERY_COLS),
                cols("c", DELIVERY_COLS),
                cols("e", EVENT_COLS),
            ))
            .await?;
        let rows = c
            .query(&stmt, &[&us(now), &(limit as i64), &us(lease_until)])
            .await?;
        let mut events: HashMap<(String, String), Arc<Event>> = HashMap::new();
        let mut jobs = Vec::with_capacity(rows.len());
        let mut orphans: Vec<String> = Vec::new();
        for r in &rows {
            let delivery = delivery_from_row(r)?;
            if r.try_get::<_, Option<String>>(10)?.is_none() {
                // The event is gone (retention); nothing left to deliver.
                orphans.push(delivery.id);
                continue;
            }
            let key = (delivery.tenant_id.clone(), delivery.event_id.clone());
            let event = match events.get(&key) {
                Some(e) => e.clone(),
                None => {
                    let e = Arc::new(event_at(r, 10)?.event);
                    events.insert(key, e.clone());
                    e
                }
            };
            jobs.push(Job {
                delivery,
                event,
                lease_until,
            });
        }
        if !orphans.is_empty() {
            c.execute(
                "UPDATE deliveries SET status = 'cancelled', leased = false WHERE id = ANY($1::text[])",
                &[&orphans],
            )
            .await?;
        }
        Ok(jobs)
    }

    async fn emit_operator_event(&self, event: &Event, now: Timestamp) -> Result<u32> {
        in_tx!(self, |tx| write_operator_event(&*tx, event, now).await)
    }

    async fn record_attempt(&self, rec: AttemptRecord) -> Result<Recorded> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .records
            .send(batch::RecordReq { rec, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn renew_leases(
        &self,
        leases: Vec<(String, Timestamp)>,
        until: Timestamp,
    ) -> Result<Vec<String>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, held): (Vec<String>, Vec<i64>) =
            leases.into_iter().map(|(id, t)| (id, us(t))).unzip();
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "UPDATE deliveries d SET next_attempt_at = $3, leased = true
                 FROM UNNEST($1::text[], $2::int8[]) AS v(id, held)
                 WHERE d.id = v.id AND d.status = 'pending' AND d.next_attempt_at = v.held
                 RETURNING d.id",
            )
            .await?;
        c.query(&stmt, &[&ids, &held, &us(until)])
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    async fn cancel_deliveries(&self, delivery_ids: Vec<String>, now: Timestamp) -> Result<u64> {
        if delivery_ids.is_empty() {
            return Ok(0);
        }
        let c = self.client().await?;
        Ok(c.execute(
            "UPDATE deliveries SET status = 'cancelled', leased = false, updated_at = $2
             WHERE id = ANY($1::text[]) AND status = 'pending'",
            &[&delivery_ids, &us(now)],
        )
        .await?)
    }

    async fn defer(&self, delivery_ids: Vec<String>, at: Timestamp) -> Result<()> {
        if delivery_ids.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE deliveries SET next_attempt_at = $2, leased = false WHERE id = ANY($1::text[]) AND status = 'pending'",
                &[&delivery_ids, &us(at)],
            )
            .await?;
        if n > 0 && at <= Timestamp::now() {
            // Handed back for someone else to take now (a node shutting down): wake them.
            batch::notify(&c, &Notice::Work).await?;
        }
        Ok(())
    }

    async fn replay(&self, q: &ReplayQuery, now: Timestamp) -> Result<u64> {
        let statuses: Vec<String> = if q.statuses.is_empty() {
            vec![DeliveryStatus::Failed.as_str().into()]
        } else {
            q.statuses
                .iter()
                .filter(|s| **s != DeliveryStatus::Pending)
                .map(|s| s.as_str().into())
                .collect()
        };
        if statuses.is_empty() {
            return Ok(0);
        }
        let mut tries = 0;
        loop {
            let mut w = Where::default();
            let now_p = w.param(us(now));
            let st = w.param(statuses.clone());
            let t = w.param(q.tenant_id.clone());
            let d = w.param(q.destination_id.clone());
            w.push(format!("d.tenant_id = {t} AND d.destination_id = {d}"));
            w.push(format!("d.status = ANY({st}::text[])"));
            w.time("d.created_at", &q.time);
            if !q.topics.is_empty() {
                let p = w.param(q.topics.clone());
                w.push(format!(
                    "EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = d.tenant_id AND e.id = d.event_id AND e.topic = ANY({p}::text[]))"
                ));
            }
            // Only the newest finished delivery of each event, and never one whose event
            // already has a pending delivery to this destination.
            w.push(
                "NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.event_id = d.event_id AND p.destination_id = d.destination_id
                   AND p.tenant_id = d.tenant_id AND (p.status = 'pending' OR p.created_at > d.created_at OR (p.created_at = d.created_at AND p.id > d.id)))"
                    .into(),
            );
            // The status test is repeated on the updated row itself, so a row that another
            // node re-queued meanwhile is skipped rather than queued twice.
            let sql = format!(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = {now_p}, leased = false, retry_base = attempts, manual = false, updated_at = {now_p}
                 WHERE status = ANY({st}::text[]) AND id IN (SELECT d.id FROM deliveries d{})",
                w.sql()
            );
            let out: Result<u64> = async {
                let c = self.client().await?;
                let n = c.execute(&sql, &w.refs()).await?;
                if n > 0 {
                    batch::notify(&c, &Notice::Work).await?;
                }
                Ok(n)
            }
            .await;
            match out {
                // A concurrent manual retry created a pending delivery for one of these
                // events: run again, which now skips it.
                Err(e) if tries < 3 && (is_unique_violation(&e) || is_retryable(&e)) => {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn purge(
        &self,
        before: Timestamp,
        ids_since: Timestamp,
        batch: usize,
    ) -> Result<PurgeStats> {
        let (t, n, since) = (us(before), batch as i64, us(ids_since));
        in_tx!(self, |tx| {
            // SKIP LOCKED: nodes purging at the same time split the work instead of queueing.
            let attempts = tx
                .execute(
                    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE time < $1 ORDER BY time LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&t, &n],
                )
                .await?;
            // Deliveries go with their event (schema 7 has no index on their creation time):
            // an event old enough and with no pending delivery takes its finished deliveries
            // along, whenever they were created; a finished delivery waits while its event has
            // another one pending. An id still inside the idempotency window is kept:
            // publishing it again stays a duplicate after its event is gone. The rows are
            // reached by `ctid` (a TID scan) and `deliveries_event` (`= ANY` of the gone
            // ids), plans that do not depend on statistics: joined to the batch as a set,
            // a table without statistics was read whole (measured at 200,000 rows: a
            // sequential scan of deliveries, 132 ms a batch against 55 ms).
            let gone = tx
                .query_one(
                    "WITH gone AS (
                        DELETE FROM events WHERE ctid = ANY(ARRAY(SELECT e.ctid FROM events e WHERE e.created_at < $1
                          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.tenant_id = e.tenant_id
                                          AND d.status = 'pending')
                          ORDER BY e.created_at LIMIT $2 FOR UPDATE SKIP LOCKED))
                        RETURNING tenant_id, id, matched, created_at
                    ), kept AS (
                        INSERT INTO purged_event_ids (tenant_id, id, matched, created_at)
                        SELECT tenant_id, id, matched, created_at FROM gone WHERE created_at >= $3
                        ON CONFLICT (tenant_id, id) DO NOTHING
                    ), taken AS (
                        DELETE FROM deliveries d
                        WHERE d.event_id = ANY(ARRAY(SELECT id FROM gone)) AND d.status <> 'pending'
                          AND EXISTS (SELECT 1 FROM gone g WHERE g.id = d.event_id AND g.tenant_id = d.tenant_id)
                        RETURNING 1
                    )
                    SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM taken)",
                    &[&t, &n, &since],
                )
                .await?;
            let events: i64 = gone.try_get(0)?;
            let deliveries = gone.try_get::<_, i64>(1)? as u64;
            let ids_forgotten = tx
                .execute(
                    "DELETE FROM purged_event_ids WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM purged_event_ids
                     WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&since, &n],
                )
                .await?;
            Ok(PurgeStats {
                attempts,
                deliveries,
                events: events as u64,
                ids_forgotten,
            })
        })
    }

    async fn backlog(&self) -> Result<Backlog> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT tenant_id, destination_id, COUNT(*), SUM((attempts > 0)::int)::bigint, MIN(created_at) FROM deliveries
                 WHERE status = 'pending' GROUP BY tenant_id, destination_id",
                &[],
            )
            .await?;
        let mut out = Backlog::default();
        for r in rows {
            out.per_destination.push(crate::PendingFor {
                tenant_id: r.try_get(0)?,
                destination_id: r.try_get(1)?,
                pending: r.try_get::<_, i64>(2)? as u64,
                oldest: ts(r.try_get::<_, i64>(4)?),
            });
            out.retries += r.try_get::<_, Option<i64>>(3)?.unwrap_or(0) as u64;
        }
        Ok(out)
    }

    async fn release_all_leases(&self) -> Result<u64> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE deliveries SET next_attempt_at = $1, leased = false WHERE status = 'pending' AND leased",
                &[&us(Timestamp::now())],
            )
            .await?;
        if n > 0 {
            batch::notify(&c, &Notice::Work).await?;
        }
        Ok(n)
    }

    async fn pending_count(&self) -> Result<u64> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
                &[],
            )
            .await?
            .try_get(0)?;
        Ok(n as u64)
    }

    async fn reset_failures(&self, tenant_id: &str, destination_id: &str) -> Result<()> {
        let c = self.client().await?;
        reset_streak(&**c, tenant_id, destination_id).await
    }

    async fn setting_or_insert(&self, name: &str, fresh: &str) -> Result<(String, bool)> {
        let c = self.client().await?;
        // A concurrent first insert committed after this statement's snapshot is neither
        // inserted nor seen; the next round sees it.
        let sealed = self.inner.keys.seal(fresh, seal::SETTINGS, name);
        for _ in 0..5 {
            let row = c
                .query_opt(
                    "WITH ins AS (
                        INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING value
                    )
                    SELECT value, true FROM ins UNION ALL SELECT value, false FROM settings WHERE name = $1",
                    &[&name, &sealed],
                )
                .await?;
            if let Some(r) = row {
                let value: String = r.try_get(0)?;
                return Ok((
                    seal::open_setting(&self.inner.keys, name, &value)?,
                    r.try_get(1)?,
                ));
            }
        }
        Err(StoreError::Conflict {
            what: "setting",
            id: name.to_string(),
        })
    }

    fn notices(&self) -> Option<broadcast::Receiver<Notice>> {
        let rx = self.inner.notices.subscribe();
        let mut listener = self.inner.listener.lock();
        if listener.as_ref().is_none_or(|h| h.is_finished()) {
            *listener = Some(self.inner.runtime.spawn(listen::run(
                self.inner.cfg.clone(),
                self.inner.notices.clone(),
            )));
        }
        Some(rx)
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<()> {
        let p = api_key_params(key);
        in_tx!(self, |tx| {
            let n = tx
                .execute(
                    &format!(
                        "INSERT INTO api_keys ({API_KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT (id) DO NOTHING"
                    ),
                    &refs(&p),
                )
                .await?;
            if n == 0 {
                return Err(StoreError::Conflict {
                    what: "api key",
                    id: key.id.clone(),
                });
            }
            // A node may have cached "no such key" for this id.
            notify_in(&*tx, &Notice::ApiKey { id: key.id.clone() }).await?;
            Ok(())
        })
    }

    async fn replace_api_key(&self, key: &ApiKey) -> Result<()> {
        let p = api_key_params(key);
        in_tx!(self, |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO api_keys ({API_KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, scopes = excluded.scopes,
                         tenant_id = excluded.tenant_id, secret_hash = excluded.secret_hash,
                         created_at = excluded.created_at, expires_at = excluded.expires_at,
                         revoked_at = excluded.revoked_at, last_used_at = excluded.last_used_at"
                ),
                &refs(&p),
            )
            .await?;
            notify_in(&*tx, &Notice::ApiKey { id: key.id.clone() }).await?;
            Ok(())
        })
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE id = $1"
            ))
            .await?;
        c.query_opt(&stmt, &[&id])
            .await?
            .map(|r| api_key_from_row(&r))
            .transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {API_KEY_COLS} FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id"
            ),
            &[],
        )
        .await?
        .iter()
        .map(api_key_from_row)
        .collect()
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> Result<bool> {
        in_tx!(self, |tx| {
            let n = tx
                .execute(
                    "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &us(now)],
                )
                .await?;
            if n > 0 {
                notify_in(&*tx, &Notice::ApiKey { id: id.to_string() }).await?;
            }
            Ok(n > 0)
        })
    }

    async fn touch_api_key(&self, id: &str, at: Timestamp) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            &[&id, &us(at)],
        )
        .await?;
        Ok(())
    }

    async fn use_nonce(&self, nonce: &str, expires_at: Timestamp, now: Timestamp) -> Result<bool> {
        let c = self.client().await?;
        c.execute("DELETE FROM used_nonces WHERE expires_at < $1", &[&us(now)])
            .await?;
        // The primary key decides between nodes presenting the same nonce at once.
        let n = c
            .execute(
                "INSERT INTO used_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
                &[&nonce, &us(expires_at)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn get_attempt(&self, id: &str) -> Result<Option<Attempt>> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ATTEMPT_COLS} FROM attempts WHERE id = $1"
            ))
            .await?;
        c.query_opt(&stmt, &[&id])
            .await?
            .map(|r| attempt_from_row(&r))
            .transpose()
    }

    async fn list_attempts(&self, q: &AttemptQuery) -> Result<Page<Attempt>> {
        let c = self.client().await?;
        let mut w = Where::default();
        w.any_of("tenant_id", &q.tenant_ids);
        w.not_operator("tenant_id", &q.tenant_ids);
        w.any_of("event_id", &q.event_ids);
        w.any_of("destination_id", &q.destination_ids);
        w.any_of("destination_type", &q.destination_types);
        w.any_of("topic", &q.topics);
        if let Some(s) = q.status {
            let p = w.param(s.as_str().to_string());
            w.push(format!("status = {p}"));
        }
        w.time("time", &q.time);
        sql::paged(
            &**c,
            &format!("SELECT {ATTEMPT_COLS} FROM attempts"),
            ("time", "id"),
            w,
            &q.page,
            attempt_from_row,
            |a| (us(a.time), a.id.clone()),
        )
        .await
    }

    async fn event_metrics(&self, q: &MetricsQuery) -> Result<Vec<MetricsRow>> {
        let c = self.client().await?;
        let by_destination = q.dimensions.iter().any(|d| d == "destination_id")
            || q.filters.contains_key("destination_id");
        if by_destination {
            // One row per (event, destination) routed at publish time.
            sql::aggregate(
                &**c,
                q,
                "deliveries d JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id AND NOT d.manual",
                "e.time",
                |name| {
                    if name == "destination_id" {
                        "d.destination_id".into()
                    } else {
                        format!("e.{name}")
                    }
                },
                "",
            )
            .await
        } else {
            sql::aggregate(
                &**c,
                q,
                "events e",
                "e.time",
                |name| format!("e.{name}"),
                "",
            )
            .await
        }
    }

    async fn attempt_metrics(&self, q: &MetricsQuery) -> Result<Vec<MetricsRow>> {
        let c = self.client().await?;
        sql::aggregate(
            &**c,
            q,
            "attempts a",
            "a.time",
            // Booleans read as 1/0, as on the embedded store.
            |name| {
                if name == "manual" {
                    "a.manual::int".into()
                } else {
                    format!("a.{name}")
                }
            },
            &crate::sql::attempt_measures(sql::sum),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_debug_hides_the_password_and_the_keys() {
        let key = Keyring::generate_key();
        let keys = Keyring::single("k", &key).unwrap();
        let opts = PgOptions::new("postgres://herald:pw-in-url-77@db:5432/herald", keys);
        let shown = format!("{opts:?}");
        assert!(!shown.contains("pw-in-url-77"), "{shown}");
        assert!(!shown.contains(key.expose()), "{shown}");
        assert!(shown.contains("db:5432"), "{shown}");
    }
}

//! Group commit for PostgreSQL: the two hot writes — publishes and attempt results — from
//! concurrent callers are gathered and written with multi-row statements (`UNNEST` of
//! arrays), so a burst of N publishes costs a couple of round trips, not N transactions.
//!
//! Each kind has one collector task. It takes everything queued (up to a cap), hands the
//! batch to a writer task and goes back to collecting while the batch is written; at most
//! `parallel` batches of a kind are written at once (one for each kind today), so under load
//! requests pile up and the next batch is larger. A caller is answered only after its batch
//! committed.
//!
//! Writes stay whole per caller: a batch the database rejects for a reason other than a
//! deadlock or a lost connection is re-run one caller at a time, so one bad request fails
//! alone. Rows are written in id order, so concurrent batches (on any node) lock rows in
//! the same order; a deadlock that still happens (against another kind of write) is retried.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use herald_core::{AttemptStatus, Event};
use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::stats::Freshness;
use super::{is_retryable, listen};
use crate::codec::{from_json, to_json, ts, us};
use crate::operator::Plan;
use crate::{AttemptRecord, NewDelivery, Notice, PublishOutcome, Recorded, Result, StoreError};

/// Most events in one publish batch.
const MAX_EVENTS: usize = 512;
/// Most delivery rows in one publish batch.
const MAX_DELIVERIES: usize = 4096;
/// Most attempts in one result batch.
const MAX_ATTEMPTS: usize = 1024;
/// Retries of a batch that lost a deadlock.
const RETRIES: u32 = 5;

/// One caller's publish: one event (`POST /publish`) or several (`POST /publish/batch`),
/// written in the same statement, so all of a caller's accepted events commit together.
pub(crate) struct PublishReq {
    /// Events with distinct `(tenant_id, id)`.
    pub items: Vec<PublishItem>,
    pub reply: oneshot::Sender<Result<Vec<PublishOutcome>>>,
}

/// One event of a [`PublishReq`].
pub(crate) struct PublishItem {
    pub event: Event,
    /// JSON array of the matched destination ids.
    pub matched: String,
    pub deliveries: Vec<NewDelivery>,
    pub dedup_since: Timestamp,
    pub now: Timestamp,
}

impl PublishReq {
    fn rows(&self) -> usize {
        self.items.iter().map(|i| i.deliveries.len()).sum()
    }
}

/// One caller's attempt result.
pub(crate) struct RecordReq {
    pub rec: AttemptRecord,
    pub reply: oneshot::Sender<Result<Recorded>>,
}

/// Collects publishes into batches until every sender is gone.
pub(crate) async fn run_publishes(
    pool: Pool,
    mut rx: mpsc::Receiver<PublishReq>,
    parallel: usize,
    stats: Arc<Freshness>,
) {
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        // A caller's events are never split (one `POST /publish/batch` is one statement), so
        // a batch may exceed the caps by its first caller.
        let mut rows = first.rows();
        let mut events = first.items.len();
        let mut batch = vec![first];
        while events < MAX_EVENTS && rows < MAX_DELIVERIES {
            match rx.try_recv() {
                Ok(r) => {
                    rows += r.rows();
                    events += r.items.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            publish_all(&pool, batch, &stats).await;
        });
    }
}

/// Collects attempt results into batches until every sender is gone. A batch gathers for up
/// to `linger` (microseconds, read per batch) after its first result: results are not waited
/// on by any request, and on a node carrying a third of the load a batch would otherwise hold
/// a third of the rows, paying a whole transaction for each third (measured: PostgreSQL's
/// CPU per event with three nodes was 2.9 times one node's).
pub(crate) async fn run_records(
    pool: Pool,
    mut rx: mpsc::Receiver<RecordReq>,
    parallel: usize,
    stats: Arc<Freshness>,
    linger_us: Arc<AtomicU64>,
) {
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let until =
            tokio::time::Instant::now() + Duration::from_micros(linger_us.load(Ordering::Relaxed));
        let mut batch = vec![first];
        while batch.len() < MAX_ATTEMPTS {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    // Closed, or the time is up.
                    Ok(None) | Err(_) => break,
                },
            }
        }
        let pool = pool.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            record_all(&pool, batch, &stats).await;
        });
    }
}

/// Runs `f` until it succeeds or fails for a reason retrying cannot fix.
async fn retrying<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(e) if tries < RETRIES && is_retryable(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
            }
            other => return other,
        }
    }
}

/// Whether the database refused this particular data (so other requests in the batch may
/// well succeed on their own), as opposed to the connection or server failing.
fn rejected_data(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(pe) if pe.as_db_error().is_some())
}

// ----- publishes -----

/// A caller's request while its batch is written: each event's outcome once known.
struct Work {
    req: PublishReq,
    /// `None`: still to write.
    outcomes: Vec<Option<PublishOutcome>>,
}

impl Work {
    fn keys(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.todo()
            .map(|i| (i.event.tenant_id.clone(), i.event.id.clone()))
    }

    fn todo(&self) -> impl Iterator<Item = &PublishItem> {
        self.req
            .items
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| i)
    }

    /// Takes the outcomes of [`Work::todo`]'s items, in order. `Ok(true)`: every event has
    /// its outcome.
    fn settle(&mut self, got: Vec<Outcome>) -> Result<bool> {
        let mut got = got.into_iter();
        for slot in self.outcomes.iter_mut().filter(|o| o.is_none()) {
            // `None`: the conflicting event vanished (purged) between our insert and our
            // look-up; the event is written again in the next round.
            if let Some(o) = got.next().flatten() {
                *slot = Some(o?);
            }
        }
        Ok(self.outcomes.iter().all(Option::is_some))
    }

    fn answer(self) {
        let outcomes = self.outcomes.into_iter().flatten().collect();
        let _ = self.req.reply.send(Ok(outcomes));
    }

    fn fail(self, e: StoreError) {
        let _ = self.req.reply.send(Err(e));
    }
}

async fn publish_all(pool: &Pool, reqs: Vec<PublishReq>, stats: &Arc<Freshness>) {
    let mut pending: Vec<Work> = reqs
        .into_iter()
        .map(|req| Work {
            outcomes: vec![None; req.items.len()],
            req,
        })
        .collect();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        if rounds > 20 {
            // Never expected: an id that is neither insertable nor visible, again and again.
            for w in pending {
                let id = w
                    .todo()
                    .next()
                    .map(|i| i.event.id.clone())
                    .unwrap_or_default();
                w.fail(StoreError::Conflict { what: "event", id });
            }
            return;
        }
        // A batch holds each (tenant, event id) once; a caller repeating an id another caller
        // of the batch has waits for the next round, where it sees the first one committed
        // (and becomes a duplicate).
        let mut seen = HashSet::new();
        let (mut batch, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|w| {
            let keys: Vec<_> = w.keys().collect();
            if keys.iter().any(|k| seen.contains(k)) {
                return false;
            }
            seen.extend(keys);
            true
        });
        pending = rest;
        let items: Vec<&PublishItem> = batch.iter().flat_map(|w| w.todo()).collect();
        let started = std::time::Instant::now();
        let result = retrying(|| publish_batch(pool, &items)).await;
        crate::observe_commit("postgres", "publish", started);
        drop(items);
        match result {
            Ok(outcomes) => {
                // Rows offered (an event and its deliveries; duplicates write none, which
                // only makes the next statistics check come a little early).
                stats.wrote(pool, (events_in(&batch) + rows_in(&batch)) as u64);
                let mut outcomes = outcomes.into_iter();
                for mut w in batch {
                    let n = w.outcomes.iter().filter(|o| o.is_none()).count();
                    match w.settle(outcomes.by_ref().take(n).collect()) {
                        Ok(true) => w.answer(),
                        Ok(false) => pending.push(w),
                        Err(e) => w.fail(e),
                    }
                }
            }
            Err(e) if batch.len() > 1 && rejected_data(&e) => {
                tracing::debug!(error = %e, callers = batch.len(), "publish batch refused; writing its callers one by one");
                for mut w in batch.drain(..) {
                    let items: Vec<&PublishItem> = w.todo().collect();
                    let out = retrying(|| publish_batch(pool, &items)).await;
                    drop(items);
                    match out.and_then(|o| w.settle(o)) {
                        Ok(true) => w.answer(),
                        Ok(false) => pending.push(w),
                        Err(e) => w.fail(e),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, callers = batch.len(), "publish batch failed");
                let msg = e.to_string();
                let unavailable = e.unavailable();
                let mut first = Some(e);
                for w in batch {
                    let err = first.take().unwrap_or_else(|| match unavailable {
                        // The others of the batch fail for the same reason (e.g. the server is down).
                        Some(reason) => StoreError::Unavailable {
                            reason,
                            detail: msg.clone(),
                        },
                        None => StoreError::Corrupt {
                            column: "publish batch",
                            detail: msg.clone(),
                        },
                    });
                    w.fail(err);
                }
            }
        }
    }
}

fn events_in(batch: &[Work]) -> usize {
    batch.iter().map(|w| w.todo().count()).sum()
}

fn rows_in(batch: &[Work]) -> usize {
    batch
        .iter()
        .flat_map(|w| w.todo())
        .map(|i| i.deliveries.len())
        .sum()
}

/// One event's result from a batch; `None`: run it again.
type Outcome = Option<Result<PublishOutcome>>;

/// Writes one batch of distinct event ids in a single statement. Returns each event's
/// outcome in order.
async fn publish_batch(pool: &Pool, batch: &[&PublishItem]) -> Result<Vec<Outcome>> {
    let client = pool.get().await?;
    // Key order, so that concurrent batches wait for each other instead of deadlocking.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    let key = |i: usize| (&batch[i].event.tenant_id, &batch[i].event.id);
    order.sort_by(|a, b| key(*a).cmp(&key(*b)));

    let n = batch.len();
    let mut e_id = Vec::with_capacity(n);
    let mut e_tenant = Vec::with_capacity(n);
    let mut e_dest = Vec::with_capacity(n);
    let mut e_topic = Vec::with_capacity(n);
    let mut e_time = Vec::with_capacity(n);
    let mut e_meta = Vec::with_capacity(n);
    let mut e_data = Vec::with_capacity(n);
    let mut e_retry = Vec::with_capacity(n);
    let mut e_matched = Vec::with_capacity(n);
    let mut e_created = Vec::with_capacity(n);
    let mut d_id = Vec::new();
    let mut d_event = Vec::new();
    let mut d_tenant = Vec::new();
    let mut d_dest = Vec::new();
    let mut d_status = Vec::new();
    let mut d_attempts = Vec::new();
    let mut d_next = Vec::new();
    let mut d_leased = Vec::new();
    let mut d_manual = Vec::new();
    let mut d_base = Vec::new();
    let mut d_created = Vec::new();
    let mut wake = false;
    for &i in &order {
        let r = &batch[i];
        let e = &r.event;
        e_id.push(e.id.as_str());
        e_tenant.push(e.tenant_id.as_str());
        e_dest.push(e.destination_id.as_deref());
        e_topic.push(e.topic.as_str());
        e_time.push(us(e.time));
        e_meta.push(to_json(&e.metadata));
        e_data.push(to_json(&e.data));
        e_retry.push(e.eligible_for_retry);
        e_matched.push(r.matched.as_str());
        e_created.push(us(r.now));
        for nd in &r.deliveries {
            let d = &nd.delivery;
            d_id.push(d.id.as_str());
            d_event.push(d.event_id.as_str());
            d_tenant.push(d.tenant_id.as_str());
            d_dest.push(d.destination_id.as_str());
            d_status.push(d.status.as_str());
            d_attempts.push(d.attempts as i32);
            d_base.push(d.retry_base as i32);
            d_manual.push(d.manual);
            d_created.push(us(d.created_at));
            match nd.lease_until {
                Some(until) => {
                    d_next.push(us(until));
                    d_leased.push(true);
                }
                None => {
                    d_next.push(us(d.next_attempt_at));
                    d_leased.push(false);
                    wake = true;
                }
            }
        }
    }
    // One statement: atomic on its own, one round trip for the whole batch. It also returns
    // the events that already held an id in their tenant, stored or purged inside the
    // idempotency window (as of the statement's snapshot; one committed by a concurrent
    // writer after that is not seen and the request is simply run again).
    let stmt = client
        .prepare_cached(
            "WITH ins AS (
                INSERT INTO events (id, tenant_id, destination_id, topic, time, metadata, data, eligible_for_retry, matched, created_at)
                SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::bool[], $9::text[], $10::int8[])
                    AS v(id, tenant_id, destination_id, topic, time, metadata, data, eligible_for_retry, matched, created_at)
                WHERE NOT EXISTS (SELECT 1 FROM purged_event_ids p WHERE p.tenant_id = v.tenant_id AND p.id = v.id)
                ON CONFLICT (tenant_id, id) DO NOTHING
                RETURNING tenant_id, id
            ), dl AS (
                INSERT INTO deliveries (id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at, leased, manual, retry_base, created_at, updated_at)
                SELECT v.id, v.event_id, v.tenant_id, v.destination_id, v.status, v.attempts, v.next_attempt_at, v.leased, v.manual, v.retry_base, v.created_at, v.created_at
                FROM UNNEST($11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::int4[], $17::int8[], $18::bool[], $19::bool[], $20::int4[], $21::int8[])
                    AS v(id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at, leased, manual, retry_base, created_at)
                WHERE (v.tenant_id, v.event_id) IN (SELECT tenant_id, id FROM ins)
            ), keys AS (
                SELECT * FROM UNNEST($1::text[], $2::text[]) AS k(id, tenant_id)
            )
            SELECT id, true, tenant_id, NULL::text, NULL::int8 FROM ins
            UNION ALL
            SELECT e.id, false, e.tenant_id, e.matched, e.created_at FROM events e
                JOIN keys k ON e.tenant_id = k.tenant_id AND e.id = k.id
            UNION ALL
            SELECT p.id, false, p.tenant_id, p.matched, p.created_at FROM purged_event_ids p
                JOIN keys k ON p.tenant_id = k.tenant_id AND p.id = k.id",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &e_id,
                &e_tenant,
                &e_dest,
                &e_topic,
                &e_time,
                &e_meta,
                &e_data,
                &e_retry,
                &e_matched,
                &e_created,
                &d_id,
                &d_event,
                &d_tenant,
                &d_dest,
                &d_status,
                &d_attempts,
                &d_next,
                &d_leased,
                &d_manual,
                &d_base,
                &d_created,
            ],
        )
        .await?;
    let mut inserted: HashSet<(String, String)> = HashSet::new();
    let mut existing: HashMap<(String, String), (String, i64)> = HashMap::new();
    for r in &rows {
        let key: (String, String) = (r.try_get(2)?, r.try_get(0)?);
        if r.try_get::<_, bool>(1)? {
            inserted.insert(key);
        } else {
            // A stored event wins over a kept id of a purged one (the first row seen).
            existing
                .entry(key)
                .or_insert((r.try_get(3)?, r.try_get(4)?));
        }
    }
    if wake && !inserted.is_empty() {
        // Committed already; waking other nodes is a hint, and polling covers its loss.
        if let Err(e) = notify(&client, &Notice::Work).await {
            tracing::warn!(error = %e, "cannot notify other nodes of new work");
        }
    }
    Ok(batch
        .iter()
        .map(|r| {
            let key = (r.event.tenant_id.clone(), r.event.id.clone());
            if inserted.contains(&key) {
                return Some(Ok(PublishOutcome::Accepted));
            }
            let (matched, created) = existing.get(&key)?;
            Some(if ts(*created) >= r.dedup_since {
                from_json("events.matched", matched).map(|m| PublishOutcome::Duplicate {
                    matched_destination_ids: m,
                })
            } else {
                Ok(PublishOutcome::IdTaken)
            })
        })
        .collect())
}

/// Sends one notice (outside any transaction: delivered at once).
pub(crate) async fn notify(client: &deadpool_postgres::Client, n: &Notice) -> Result<()> {
    let stmt = client.prepare_cached("SELECT pg_notify($1, $2)").await?;
    client
        .execute(&stmt, &[&listen::CHANNEL, &listen::payload(n)])
        .await?;
    Ok(())
}

// ----- attempt results -----

async fn record_all(pool: &Pool, batch: Vec<RecordReq>, stats: &Arc<Freshness>) {
    let recs: Vec<&AttemptRecord> = batch.iter().map(|r| &r.rec).collect();
    let started = std::time::Instant::now();
    let result = retrying(|| record_batch(pool, &recs)).await;
    crate::observe_commit("postgres", "attempts", started);
    match result {
        Ok(counts) => {
            // An attempt row and its delivery's update each.
            stats.wrote(pool, 2 * batch.len() as u64);
            for (req, n) in batch.into_iter().zip(counts) {
                let _ = req.reply.send(Ok(n));
            }
        }
        Err(e) if batch.len() > 1 && rejected_data(&e) => {
            tracing::debug!(error = %e, attempts = batch.len(), "attempt batch refused; writing attempts one by one");
            for req in batch {
                let one = [&req.rec];
                let out = retrying(|| record_batch(pool, &one)).await;
                let _ = req
                    .reply
                    .send(out.map(|v| v.first().copied().unwrap_or_default()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, attempts = batch.len(), "attempt batch failed");
            let msg = e.to_string();
            let unavailable = e.unavailable();
            let mut first = Some(e);
            for req in batch {
                let err = first.take().unwrap_or_else(|| match unavailable {
                    // The others of the batch fail for the same reason (e.g. the server is down).
                    Some(reason) => StoreError::Unavailable {
                        reason,
                        detail: msg.clone(),
                    },
                    None => StoreError::Corrupt {
                        column: "attempt batch",
                        detail: msg.clone(),
                    },
                });
                let _ = req.reply.send(Err(err));
            }
        }
    }
}

/// Writes attempts, moves their deliveries, and counts consecutive failures per destination,
/// in one transaction of two round trips (statements are pipelined). Returns what each
/// attempt did, in order. A batch in which an attempt has consequences (a level reached, a
/// disable, operator events) writes them with a few more statements before the commit.
async fn record_batch(pool: &Pool, recs: &[&AttemptRecord]) -> Result<Vec<Recorded>> {
    let client = pool.get().await?;
    let out = record_in_tx(&client, recs).await;
    if out.is_err() {
        // Never hand a connection back to the pool inside a transaction.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    out
}

async fn record_in_tx(
    client: &deadpool_postgres::Client,
    recs: &[&AttemptRecord],
) -> Result<Vec<Recorded>> {
    let mut order: Vec<usize> = (0..recs.len()).collect();
    order.sort_by(|a, b| {
        recs[*a]
            .attempt
            .delivery_id
            .cmp(&recs[*b].attempt.delivery_id)
    });
    let n = recs.len();
    let mut a_id = Vec::with_capacity(n);
    let mut a_delivery = Vec::with_capacity(n);
    let mut a_tenant = Vec::with_capacity(n);
    let mut a_event = Vec::with_capacity(n);
    let mut a_dest = Vec::with_capacity(n);
    let mut a_type = Vec::with_capacity(n);
    let mut a_topic = Vec::with_capacity(n);
    let mut a_status = Vec::with_capacity(n);
    let mut a_code = Vec::with_capacity(n);
    let mut a_response = Vec::with_capacity(n);
    let mut a_number = Vec::with_capacity(n);
    let mut a_manual = Vec::with_capacity(n);
    let mut a_time = Vec::with_capacity(n);
    let mut a_latency = Vec::with_capacity(n);
    let mut d_status = Vec::with_capacity(n);
    let mut d_next = Vec::with_capacity(n);
    for &i in &order {
        let r = recs[i];
        let a = &r.attempt;
        a_id.push(a.id.as_str());
        a_delivery.push(a.delivery_id.as_str());
        a_tenant.push(a.tenant_id.as_str());
        a_event.push(a.event_id.as_str());
        a_dest.push(a.destination_id.as_str());
        a_type.push(a.destination_type.as_str());
        a_topic.push(a.topic.as_str());
        a_status.push(a.status.as_str());
        a_code.push(a.code.as_str());
        a_response.push(a.response_data.as_ref().map(to_json));
        a_number.push(a.attempt_number as i32);
        a_manual.push(a.manual);
        a_time.push(us(a.time));
        a_latency.push(i64::try_from(a.latency_ms).unwrap_or(i64::MAX));
        d_status.push(r.status.as_str());
        d_next.push(us(r.next_attempt_at));
    }
    // Destinations as (tenant, id), in key order (the order their counters are locked in),
    // each with whether its counter must be locked whatever its value: a failure counts, and
    // an attempt with operator consequences reads the destination. A destination with only
    // plain successes in the batch needs its counter only when it is above zero (to reset
    // it); at zero it is neither locked nor written, so nodes recording successes for the
    // same destination do not queue behind each other's counter row.
    let mut dests: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for r in recs {
        let fx = &r.effects;
        let needs = r.attempt.status != AttemptStatus::Success
            || fx.attempt_events
            || fx.gone
            || fx.exhausted.is_some();
        let key = (
            r.attempt.tenant_id.as_str(),
            r.attempt.destination_id.as_str(),
        );
        *dests.entry(key).or_default() |= needs;
    }
    let mut dest_tenants = Vec::with_capacity(dests.len());
    let mut dest_ids = Vec::with_capacity(dests.len());
    let mut dest_needs = Vec::with_capacity(dests.len());
    for ((tenant, id), needs) in dests {
        dest_tenants.push(tenant);
        dest_ids.push(id);
        dest_needs.push(needs);
    }

    let write = client
        .prepare_cached(
            "WITH a AS (
                INSERT INTO attempts (id, delivery_id, tenant_id, event_id, destination_id, destination_type, topic, status, code, response_data, attempt_number, manual, time, latency_ms)
                SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], $12::bool[], $13::int8[], $14::int8[])
            )
            UPDATE deliveries d SET status = v.status, attempts = v.n, next_attempt_at = v.next, leased = false, updated_at = v.t
            FROM UNNEST($2::text[], $15::text[], $11::int4[], $16::int8[], $13::int8[]) AS v(id, status, n, next, t)
            -- A delivery cancelled meanwhile (destination disabled or deleted) stays cancelled.
            WHERE d.id = v.id AND d.status = 'pending'
            RETURNING d.id",
        )
        .await?;
    let lock = client
        .prepare_cached(
            "SELECT h.tenant_id, h.destination_id, h.consecutive_failures FROM destination_health h
             JOIN destinations d ON d.tenant_id = h.tenant_id AND d.id = h.destination_id AND d.disabled_at IS NULL
             JOIN UNNEST($1::text[], $2::text[], $3::bool[]) AS k(tenant_id, id, needed) ON h.tenant_id = k.tenant_id AND h.destination_id = k.id
             WHERE k.needed OR h.consecutive_failures > 0
             ORDER BY h.tenant_id, h.destination_id FOR UPDATE OF h",
        )
        .await?;
    let update = client
        .prepare_cached(
            "UPDATE destination_health h SET consecutive_failures = v.n
             FROM UNNEST($1::text[], $2::text[], $3::int4[]) AS v(tenant_id, id, n)
             WHERE h.tenant_id = v.tenant_id AND h.destination_id = v.id",
        )
        .await?;

    // Round trip 1: begin, write attempts and deliveries, lock the failure counters. Deliveries
    // first, then counters: the same lock order as disabling or deleting a destination, which
    // cancels deliveries and then resets the counter. Counters are locked in id order.
    let write_params: [&(dyn ToSql + Sync); 16] = [
        &a_id,
        &a_delivery,
        &a_tenant,
        &a_event,
        &a_dest,
        &a_type,
        &a_topic,
        &a_status,
        &a_code,
        &a_response,
        &a_number,
        &a_manual,
        &a_time,
        &a_latency,
        &d_status,
        &d_next,
    ];
    let ((), moved, locked) = tokio::try_join!(
        biased;
        async { Ok::<_, StoreError>(client.batch_execute("BEGIN").await?) },
        async { Ok::<_, StoreError>(client.query(&write, &write_params).await?) },
        async {
            Ok::<_, StoreError>(
                client
                    .query(&lock, &[&dest_tenants, &dest_ids, &dest_needs])
                    .await?,
            )
        },
    )?;
    // Late attempts of cancelled deliveries do not count towards a failure streak.
    let moved: HashSet<String> = moved
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<std::result::Result<_, _>>()?;
    let mut counters: HashMap<(String, String), i32> = HashMap::new();
    for r in &locked {
        counters.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
    }

    // Replay this batch's outcomes on the counters, in the callers' order.
    let mut changed: HashSet<(String, String)> = HashSet::new();
    let mut counts = vec![Recorded::default(); recs.len()];
    // Attempts whose count leads somewhere (a level, a disable, operator events).
    let mut plans: Vec<(usize, Plan)> = Vec::new();
    let mut disabled_here: HashSet<(String, String)> = HashSet::new();
    for (i, r) in recs.iter().enumerate() {
        let a = &r.attempt;
        if !moved.contains(&a.delivery_id) {
            continue;
        }
        let key = (a.tenant_id.clone(), a.destination_id.clone());
        // A destination disabled earlier in this batch counts no more attempts.
        if disabled_here.contains(&key) {
            continue;
        }
        match counters.get_mut(&key) {
            // The destination was deleted or disabled, or — for a plain success — its counter
            // is at zero and stays there: nothing to count.
            None => {}
            Some(c) => {
                changed.insert(key.clone());
                *c = if a.status == AttemptStatus::Success {
                    0
                } else {
                    c.saturating_add(1)
                };
                counts[i].failures = *c as u32;
                let plan = Plan::new(r, *c as u32);
                if plan.disable.is_some() {
                    disabled_here.insert(key);
                    *c = 0;
                }
                if plan.disable.is_some() || plan.has_events(r) {
                    plans.push((i, plan));
                }
            }
        }
    }
    let mut tenants = Vec::with_capacity(changed.len());
    let mut ids = Vec::with_capacity(changed.len());
    let mut values = Vec::with_capacity(changed.len());
    for key in &changed {
        tenants.push(key.0.as_str());
        ids.push(key.1.as_str());
        values.push(counters[key]);
    }

    if plans.is_empty() {
        // Round trip 2: write the counters back and commit.
        tokio::try_join!(
            biased;
            async {
                if !ids.is_empty() {
                    client.execute(&update, &[&tenants, &ids, &values]).await?;
                }
                Ok::<_, StoreError>(())
            },
            async { Ok::<_, StoreError>(client.batch_execute("COMMIT").await?) },
        )?;
        return Ok(counts);
    }
    // The rare path: counters, then each attempt's consequences, in the same transaction.
    if !ids.is_empty() {
        client.execute(&update, &[&tenants, &ids, &values]).await?;
    }
    let c: &tokio_postgres::Client = client;
    for (i, plan) in plans {
        let r = recs[i];
        let a = &r.attempt;
        let now = a.time;
        if plan.disable.is_some() {
            counts[i].disabled =
                super::disable_destination(c, &a.tenant_id, &a.destination_id, now).await?;
        }
        if plan.has_events(r)
            && let Some(d) = super::destination_ref(c, &a.tenant_id, &a.destination_id).await?
        {
            for e in plan.events(r, counts[i].failures, &d, now) {
                counts[i].operator_deliveries += super::write_operator_event(c, &e, now).await?;
            }
        }
    }
    client.batch_execute("COMMIT").await?;
    Ok(counts)
}

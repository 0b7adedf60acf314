//! Planner statistics of Herald's tables, kept fresh by Herald itself rather than left to the
//! operator's autovacuum.
//!
//! Why: Herald's statements are prepared once per pooled connection and run with a generic
//! plan (`plan_cache_mode=force_generic_plan`), and PostgreSQL plans them again only when the
//! statistics of a table they read change. On a database where autovacuum is off (or slow to
//! reach a table that grew from nothing), the plans made while the tables were empty — hash
//! joins over sequential scans of `deliveries` for the attempt-results `UPDATE … FROM
//! UNNEST`, for one — stay in use while the tables grow to millions of rows: measured here, a
//! fresh database ran at 4–5k events/s where an analysed one ran at 10k/s, and it got slower
//! with every run. `ANALYZE` both refreshes the statistics and makes every session plan again.
//!
//! How: the batch writers count the rows they write ([`Freshness::wrote`]); every
//! [`CHECK_EVERY_ROWS`] rows one check runs in the background ([`analyze_stale`]). It takes a
//! transaction-level advisory lock without waiting (with several nodes, one checks and the
//! others skip), reads `pg_stat_user_tables.n_mod_since_analyze` of Herald's tables — the
//! changes since the last `ANALYZE`, by any node, counted by PostgreSQL — and runs `ANALYZE`
//! on each table changed by more than [`BASE_ROWS`] + [`SCALE`] × its rows (autovacuum's rule,
//! with a larger base). So a fresh database is analysed a few thousand rows in and then
//! whenever a table grew or changed by a tenth; `ANALYZE` reads a fixed-size sample
//! (30,000 rows at the default statistics target), so each one costs milliseconds to a few
//! hundred of them on a large table. When autovacuum does run, it resets the same counters
//! and Herald finds nothing to do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use deadpool_postgres::Pool;

use crate::Result;

/// Herald's tables whose statistics it keeps. (`herald_schema_migrations` and `settings` are
/// read by key only and stay tiny.)
pub const TABLES: [&str; 10] = [
    "events",
    "deliveries",
    "attempts",
    "destination_health",
    "destinations",
    "tenants",
    "purged_event_ids",
    "used_nonces",
    "api_keys",
    "settings",
];

/// Rows written by this node between two checks.
pub const CHECK_EVERY_ROWS: u64 = 20_000;
/// Changes a table takes before it is analysed, on top of [`SCALE`] × its rows.
pub const BASE_ROWS: i64 = 1_000;
/// The share of a table's rows that must change before it is analysed again.
pub const SCALE: f64 = 0.1;

/// The advisory lock that makes one session at a time check (a key of Herald's own).
const LOCK_KEY: i64 = 0x6865_7261_6c64_0001;

/// Counts rows written and starts a check every [`CHECK_EVERY_ROWS`]; at most one check of
/// this node runs at a time.
pub(crate) struct Freshness {
    written: AtomicU64,
    running: AtomicBool,
}

impl Freshness {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            written: AtomicU64::new(0),
            running: AtomicBool::new(false),
        })
    }

    /// Notes `rows` written; starts a check on `pool` in the background when due.
    pub(crate) fn wrote(self: &Arc<Self>, pool: &Pool, rows: u64) {
        let total = self.written.fetch_add(rows, Ordering::Relaxed) + rows;
        if total < CHECK_EVERY_ROWS || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.written.store(0, Ordering::Relaxed);
        let this = self.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            match analyze_stale(&pool).await {
                Ok(tables) if !tables.is_empty() => {
                    tracing::debug!(?tables, "analysed tables whose statistics were stale");
                }
                Ok(_) => {}
                // Statistics are an optimisation: the next check tries again.
                Err(e) => tracing::warn!(error = %e, "cannot refresh table statistics"),
            }
            this.running.store(false, Ordering::Release);
        });
    }
}

/// Analyses every Herald table whose changes since its last `ANALYZE` exceed the threshold
/// (module docs), unless another session is doing the same right now. Returns the tables
/// analysed.
pub(crate) async fn analyze_stale(pool: &Pool) -> Result<Vec<&'static str>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?
        .try_get(0)?;
    if !locked {
        return Ok(Vec::new());
    }
    // `to_regclass` resolves the names through the search path, as Herald's statements do.
    let rows = tx
        .query(
            "SELECT c.relname::text, s.n_mod_since_analyze, c.reltuples::float8
             FROM unnest($1::text[]) AS t(name)
             JOIN pg_class c ON c.oid = to_regclass(t.name)
             JOIN pg_stat_user_tables s ON s.relid = c.oid",
            &[&TABLES.as_slice()],
        )
        .await?;
    let mut stale = Vec::new();
    for r in &rows {
        let name: String = r.try_get(0)?;
        let changed: i64 = r.try_get(1)?;
        // -1 until the table was first analysed or vacuumed.
        let tuples: f64 = r.try_get::<_, f64>(2)?.max(0.0);
        if changed as f64 > BASE_ROWS as f64 + SCALE * tuples
            && let Some(t) = TABLES.iter().find(|t| **t == name)
        {
            stale.push(*t);
        }
    }
    for t in &stale {
        // `t` is one of the constant names above, never input.
        tx.batch_execute(&format!("ANALYZE {t}")).await?;
    }
    tx.commit().await?;
    Ok(stale)
}

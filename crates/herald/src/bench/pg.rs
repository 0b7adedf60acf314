//! What the bench asks PostgreSQL itself, over its own connection to the bench database:
//! lock waits sampled during a run, duplicated deliveries after it, and autovacuum switched
//! off on Herald's tables for the autovacuum-off series.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::Mutex;
use tokio_postgres::NoTls;

/// The default server of `--pg`.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A connection of the bench's own to `url`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", herald_store::pg::describe_url(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The query of one lock sample: ungranted locks of the bench database's sessions (by
/// session, because a row-lock wait is on a `transactionid`, which names no database), and
/// the statements of the sessions waiting on a lock.
const LOCK_SAMPLE: &str = "SELECT (SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE NOT l.granted AND a.datname = current_database()), \
     ARRAY(SELECT wait_event || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 100) FROM pg_stat_activity \
     WHERE wait_event_type = 'Lock' AND datname = current_database())";

/// Samples lock waits every 100 ms until stopped.
pub struct LockSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicU64>,
    with_waiters: Arc<AtomicU64>,
    statements: Arc<Mutex<HashMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`LockSampler`] saw.
#[derive(Debug, Clone, Default)]
pub struct LockWaits {
    pub samples: u64,
    pub with_waiters: u64,
    /// Per waiting statement (`wait event: first 100 characters`), the samples it was seen in.
    pub statements: HashMap<String, u64>,
}

impl LockWaits {
    /// The `n` statements seen waiting most often, most first.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .statements
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

impl LockSampler {
    pub async fn start(url: &str) -> Result<LockSampler> {
        let client = connect(url).await?;
        let stmt = client.prepare(LOCK_SAMPLE).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicU64::new(0));
        let with_waiters = Arc::new(AtomicU64::new(0));
        let statements = Arc::new(Mutex::new(HashMap::new()));
        let (s, n, w, st) = (
            stop.clone(),
            samples.clone(),
            with_waiters.clone(),
            statements.clone(),
        );
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok(row) = client.query_one(&stmt, &[]).await {
                    let (locks, waiting): (i64, Vec<String>) = (row.get(0), row.get(1));
                    n.fetch_add(1, Ordering::Relaxed);
                    if locks > 0 || !waiting.is_empty() {
                        w.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut map = st.lock();
                    for q in waiting {
                        *map.entry(q).or_insert(0) += 1;
                    }
                }
            }
        });
        Ok(LockSampler {
            stop,
            samples,
            with_waiters,
            statements,
            task,
        })
    }

    pub async fn finish(self) -> LockWaits {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        LockWaits {
            samples: self.samples.load(Ordering::Relaxed),
            with_waiters: self.with_waiters.load(Ordering::Relaxed),
            statements: std::mem::take(&mut *self.statements.lock()),
        }
    }
}

/// Deliveries with more than one successful attempt, and events with more than one
/// successful attempt to the same destination, in the bench database. `None` when Herald's
/// schema has no such columns (another version of Herald): the receiver count is then the
/// only check.
pub async fn duplicated_deliveries(url: &str) -> Result<Option<u64>> {
    let client = connect(url).await?;
    let q = "SELECT count(*) FROM (SELECT 1 FROM attempts WHERE status = 'success' \
             GROUP BY tenant_id, event_id, destination_id HAVING count(*) > 1) d";
    match client.query_one(q, &[]).await {
        Ok(row) => Ok(Some(row.get::<_, i64>(0) as u64)),
        Err(_) => Ok(None),
    }
}

/// The statements that switch autovacuum off on every table of the database's `public`
/// schema (Herald's tables), as an operator with `autovacuum = off` would have it.
pub fn autovacuum_off_statements(tables: &[String]) -> Vec<String> {
    tables
        .iter()
        .map(|t| {
            format!(
                "ALTER TABLE \"{}\" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)",
                t.replace('"', "\"\"")
            )
        })
        .collect()
}

/// Switches autovacuum off on every table of `url`'s `public` schema; returns how many.
pub async fn disable_autovacuum(url: &str) -> Result<usize> {
    let client = connect(url).await?;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for s in autovacuum_off_statements(&tables) {
        client.batch_execute(&s).await.with_context(|| s.clone())?;
    }
    Ok(tables.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_frequent_waiters_come_first() {
        let w = LockWaits {
            samples: 10,
            with_waiters: 4,
            statements: HashMap::from([
                ("tuple: UPDATE a".to_string(), 1),
                ("transactionid: UPDATE b".to_string(), 3),
                ("tuple: UPDATE c".to_string(), 1),
            ]),
        };
        assert_eq!(
            w.top(2),
            vec![
                ("transactionid: UPDATE b".to_string(), 3),
                ("tuple: UPDATE a".to_string(), 1)
            ]
        );
    }

    #[test]
    fn autovacuum_statements_name_each_table_quoted() {
        let s = autovacuum_off_statements(&["events".into(), "we\"ird".into()]);
        assert_eq!(
            s,
            vec![
                "ALTER TABLE \"events\" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)",
                "ALTER TABLE \"we\"\"ird\" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)",
            ]
        );
    }
}

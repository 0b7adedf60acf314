//! The group-commit writer: one thread owns the only writing connection and commits every
//! write waiting in its queue in one transaction, each write in its own savepoint.

use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::{Result, StoreError};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 1024;

/// Answers a write's caller once its transaction committed (or failed).
pub(super) type Completion = Box<dyn FnOnce(Result<()>) + Send>;
/// One write: runs on the writer's connection inside the open transaction.
pub(super) type WriteJob = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// Runs `f` in its own savepoint, so a failing write undoes only itself.
pub(super) fn run_in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    // Cached statements: the writer runs these around every write, and parsing the text each
    // time cost about 3 % of all of Herald's instructions under publish load.
    let run = |sql: &str| -> Result<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    run("SAVEPOINT op")?;
    match f(conn) {
        Ok(v) => {
            run("RELEASE op")?;
            Ok(v)
        }
        Err(e) => {
            run("ROLLBACK TO op")?;
            run("RELEASE op")?;
            Err(e)
        }
    }
}

/// The writer thread: takes every write waiting in the queue (at most [`MAX_BATCH`]), runs
/// them in one transaction, commits once and only then answers each caller.
pub(super) fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the jobs unrun drops their reply channels: each caller sees an error.
            tracing::error!(error = %e, jobs = batch.len(), "embedded store cannot begin a transaction");
            batch.clear();
            continue;
        }
        let completions: Vec<Completion> = batch.drain(..).map(|job| job(&conn)).collect();
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        crate::observe_commit("sqlite", "group", started);
        if let Err(e) = &committed {
            tracing::error!(error = %e, "embedded store commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in completions {
            let result = match &committed {
                Ok(()) => Ok(()),
                // Keep SQLite's code (a full disk stays a full disk for the caller).
                Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, msg))) => Err(
                    StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone())),
                ),
                Err(e) => Err(StoreError::Corrupt {
                    column: "commit",
                    detail: e.to_string(),
                }),
            };
            done(result);
        }
    }
}

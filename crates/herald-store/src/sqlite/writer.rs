//! The group-commit writer: one thread owns the only writing connection and commits every
//! write waiting in its queue in one transaction.
//!
//! Each write must stay whole on its own: one that fails undoes only itself. Most writes get
//! that from a savepoint of their own ([`WriteJob::Once`]). The hot ones — publish, attempt
//! results, claims — are written as re-runnable closures ([`WriteJob::Again`]) and run first
//! in the transaction with no savepoint at all: a savepoint makes SQLite copy every page a
//! write touches into a sub-journal (about 16 pages per published and delivered event, which
//! spilled to a temporary file: ~40 `pwrite`s per event). If any of them fails, the
//! transaction, which holds only that group so far, is rolled back and the group runs again,
//! each write in its own savepoint; the first run's results are dropped.
//!
//! Attempt results may wait ([`Queued::may_wait`]): a group made only of them, at most
//! [`LINGER_FULL`], waits up to [`LINGER`] (see [`super::SqliteStore::set_result_linger`])
//! for another write before it commits, so at a light load an attempt's result shares the
//! commit of the next publish instead of paying for a commit of its own. Every commit
//! rewrites each page it touched as a whole frame in the WAL (about ten 4 KiB pages for an
//! attempt result alone) and syncs it. A write that may not wait (a publish, a claim,
//! anything an API caller waits for) ends the wait at once and commits with the waiting
//! results. Nothing acknowledged is at risk: the
//! caller of a waiting result hears back only after its commit, and a result lost to a crash
//! before it means the delivery is attempted again after its lease, as it would be had the
//! crash come just before the result was sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 1024;

/// Longest a group of attempt results alone waits for another write before it commits, by
/// default. Real time, not the injected clock: this is a throughput knob like an I/O
/// timeout, and no outcome depends on it.
pub(super) const LINGER: Duration = crate::RESULT_LINGER;

/// A group of waiting results this large commits without waiting any longer. Small: the
/// results that wait are written in the next publish's transaction, on that publish's way to
/// its `202`, so they must stay few. Measured at 3,000 events/s, a cap of 256 doubled the
/// publish → first attempt p99.9 (7–10 ms → 14–21 ms) against no waiting at all; at a light
/// load one or two results wait for each publish, which is what saves the commits.
const LINGER_FULL: usize = 4;

/// A write in the writer's queue.
pub(super) struct Queued {
    pub(super) job: WriteJob,
    /// The write's caller does not mind waiting up to [`LINGER`] for its commit.
    pub(super) may_wait: bool,
}

/// Answers a write's caller once its transaction committed (or failed).
pub(super) type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// One write, run on the writer's connection inside the open transaction.
pub(super) enum WriteJob {
    /// Runs once, in a savepoint of its own.
    Once(Box<dyn FnOnce(&Connection) -> Completion + Send>),
    /// May run twice (see the module documentation).
    Again(Box<dyn Rerun>),
}

/// A write that can run again: it keeps its last result until the commit is known.
pub(super) trait Rerun: Send {
    /// Runs the write, in a savepoint of its own when `savepoint`; whether it succeeded.
    fn run(&mut self, conn: &Connection, savepoint: bool) -> bool;
    /// Answers the caller with the last run's result, once the commit is known.
    fn finish(self: Box<Self>, commit: Result<()>);
}

/// A [`Rerun`] from a closure and the channel its caller waits on.
pub(super) struct Again<T, F> {
    pub(super) f: F,
    pub(super) out: Option<Result<T>>,
    pub(super) tx: oneshot::Sender<Result<T>>,
}

impl<T, F> Rerun for Again<T, F>
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, savepoint: bool) -> bool {
        let out = if savepoint {
            run_in_savepoint(conn, &self.f)
        } else {
            (self.f)(conn)
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(mut self: Box<Self>, commit: Result<()>) {
        let out = self.out.take().unwrap_or(Err(StoreError::Closed));
        let _ = self.tx.send(commit.and(out));
    }
}

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
pub(super) fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Queued>,
    linger_us: Arc<AtomicU64>,
) {
    // Only to wait with a timeout on the queue (see `linger`); the writer runs no tasks.
    // Without it, every group commits at once, as with a zero linger.
    let timer = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::warn!(error = %e, "embedded store writer: no timer, attempt results commit without waiting");
            None
        }
    };
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        take_waiting(&mut rx, &mut batch);
        let wait = Duration::from_micros(linger_us.load(Ordering::Relaxed));
        if let (Some(timer), false) = (&timer, wait.is_zero()) {
            linger(timer, wait, &mut rx, &mut batch);
        }
        let started = std::time::Instant::now();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the jobs unrun drops their reply channels: each caller sees an error.
            tracing::error!(error = %e, jobs = batch.len(), "embedded store cannot begin a transaction");
            batch.clear();
            continue;
        }
        let mut again = Vec::new();
        let mut once = Vec::new();
        for queued in batch.drain(..) {
            match queued.job {
                WriteJob::Once(job) => once.push(job),
                WriteJob::Again(job) => again.push(job),
            }
        }
        // The re-runnable group first, with no savepoints; again, each in one, if any failed.
        if !again.iter_mut().all(|job| job.run(&conn, false)) {
            let _ = conn.execute_batch("ROLLBACK");
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, jobs = again.len() + once.len(), "embedded store cannot begin a transaction");
                continue;
            }
            for job in again.iter_mut() {
                job.run(&conn, true);
            }
        }
        let completions: Vec<Completion> = once.into_iter().map(|job| job(&conn)).collect();
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        crate::observe_commit("sqlite", "group", started);
        if let Err(e) = &committed {
            tracing::error!(error = %e, "embedded store commit failed");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in again {
            job.finish(commit_result(&committed));
        }
        for done in completions {
            done(commit_result(&committed));
        }
    }
}

/// Moves every write already queued into `batch`, up to [`MAX_BATCH`].
fn take_waiting(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// While `batch` holds only writes that may wait, and fewer than [`LINGER_FULL`] of them,
/// waits up to `wait` from now for more; returns as soon as a write that may not wait
/// arrives (it joins the batch), the time is up or the queue is closed.
fn linger(
    timer: &tokio::runtime::Runtime,
    wait: Duration,
    rx: &mut mpsc::Receiver<Queued>,
    batch: &mut Vec<Queued>,
) {
    if !batch.iter().all(|q| q.may_wait) {
        return;
    }
    let until = tokio::time::Instant::now() + wait;
    while batch.len() < LINGER_FULL {
        // The timer is made inside `block_on`: it needs the runtime's time driver.
        match timer.block_on(async { tokio::time::timeout_at(until, rx.recv()).await }) {
            Ok(Some(job)) => {
                batch.push(job);
                take_waiting(rx, batch);
                if !batch.iter().all(|q| q.may_wait) {
                    return;
                }
            }
            // Closed (the store is shutting down) or the time is up: commit what is here.
            Ok(None) | Err(_) => return,
        }
    }
}

/// The commit's outcome for one caller.
fn commit_result(committed: &Result<()>) -> Result<()> {
    match committed {
        Ok(()) => Ok(()),
        // Keep SQLite's code (a full disk stays a full disk for the caller).
        Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, msg))) => Err(
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone())),
        ),
        Err(e) => Err(StoreError::Corrupt {
            column: "commit",
            detail: e.to_string(),
        }),
    }
}

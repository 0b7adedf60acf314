//! Herald keeps the planner statistics of its PostgreSQL tables fresh itself: on tables with
//! autovacuum turned off, writing through the store leads to `ANALYZE` of the tables that
//! changed (`last_analyze` set, `n_mod_since_analyze` back near zero) and of no other. The
//! embedded store has no such concern (SQLite plans without collected statistics here).

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald_store::pg::{PgStore, parse_url, stats};
use herald_store::{NewEvent, Store};
use tokio_postgres::NoTls;

async fn raw(db: &TestDb) -> tokio_postgres::Client {
    let (client, conn) = parse_url(&db.url)
        .expect("url")
        .connect(NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh migrated database whose Herald tables autovacuum never touches.
async fn without_autovacuum() -> (TestDb, PgStore, tokio_postgres::Client) {
    let db = TestDb::create().await;
    let store = db.store().await;
    let client = raw(&db).await;
    for t in stats::TABLES {
        client
            .batch_execute(&format!("ALTER TABLE {t} SET (autovacuum_enabled = false)"))
            .await
            .expect("turn autovacuum off");
    }
    (db, store, client)
}

/// `(last_analyze is set, last_autoanalyze is set, n_mod_since_analyze)` of `table`.
async fn analysed(c: &tokio_postgres::Client, table: &str) -> (bool, bool, i64) {
    let r = c
        .query_one(
            "SELECT last_analyze IS NOT NULL, last_autoanalyze IS NOT NULL, n_mod_since_analyze
             FROM pg_stat_user_tables WHERE relid = to_regclass($1)",
            &[&table],
        )
        .await
        .expect("pg_stat_user_tables");
    (r.get(0), r.get(1), r.get(2))
}

/// Publishes `n` events from `first` on, one delivery each, in batches of up to 1,000.
async fn write(store: &PgStore, first: usize, n: usize) {
    let mut i = first;
    while i < first + n {
        let batch: Vec<NewEvent> = (i..(first + n).min(i + 1000))
            .map(|k| {
                let e = event(&format!("e{k:06}"), "acme", "t", at(0));
                NewEvent {
                    matched: vec!["d1".into()],
                    deliveries: vec![new_delivery(&format!("dlv_{k}"), &e, "d1", at(0), None)],
                    event: e,
                }
            })
            .collect();
        i += batch.len();
        store
            .publish_batch(batch, at(-1_000_000), at(0))
            .await
            .expect("publish batch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tables_are_analysed_and_only_those() {
    let (_db, store, c) = without_autovacuum().await;
    // Below the writers' own check interval: only the explicit check analyses.
    write(&store, 0, 1500).await;
    // PostgreSQL counts a session's changes when it reports them (at most about a second
    // after the commit): ask until they are counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut done = Vec::new();
    while !(done.contains(&"events") && done.contains(&"deliveries")) {
        assert!(
            Instant::now() < deadline,
            "events and deliveries were not analysed; analysed: {done:?}"
        );
        done.extend(store.refresh_statistics().await.expect("refresh"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in ["events", "deliveries"] {
        let (manual, auto, changed) = analysed(&c, t).await;
        assert!(manual, "{t} analysed by Herald");
        assert!(!auto, "{t} not analysed by autovacuum");
        assert!(changed < 1500, "{t}: {changed} changes left after ANALYZE");
    }
    // Tables that did not change are left alone.
    for t in ["attempts", "destination_health"] {
        assert!(!analysed(&c, t).await.0, "{t} was analysed without changes");
        assert!(!done.contains(&t));
    }
    // Nothing changed since: the next check does nothing.
    assert!(store.refresh_statistics().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_path_analyses_by_itself() {
    let (_db, store, c) = without_autovacuum().await;
    // Each 1,000-event batch writes 2,000 rows; every CHECK_EVERY_ROWS rows the writers check
    // in the background. Keep writing (as a loaded node does) until a check has seen the
    // counted changes, with a generous bound.
    let per_check = (stats::CHECK_EVERY_ROWS / 2) as usize;
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        write(&store, written, per_check).await;
        written += per_check;
        let (manual, auto, _) = analysed(&c, "events").await;
        if manual {
            assert!(!auto, "analysed by autovacuum, which is off for this table");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not analysed after {written} events"
        );
    }
    let (manual, _, changed) = analysed(&c, "deliveries").await;
    assert!(manual, "deliveries analysed with events");
    assert!(
        (changed as usize) < written,
        "deliveries: {changed} of {written} changes left"
    );
}

/// Several nodes on one database: concurrent checks never analyse a table twice at once (the
/// advisory lock makes the others skip), and each check answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_skip_each_other() {
    let (db, store, _c) = without_autovacuum().await;
    let other = db.store().await;
    write(&store, 0, 1500).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.contains(&"events") {
        assert!(Instant::now() < deadline, "events never analysed");
        let (a, b) = tokio::join!(store.refresh_statistics(), other.refresh_statistics());
        let (a, b) = (a.expect("first node"), b.expect("second node"));
        // The same table is never analysed by both in one round.
        assert!(
            !(a.contains(&"events") && b.contains(&"events")),
            "{a:?} {b:?}"
        );
        seen.extend(a);
        seen.extend(b);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

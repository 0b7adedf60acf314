//! The embedded store's group commit: publishes and attempt results run in one transaction
//! without savepoints of their own, and one that fails must still undo only itself.

mod common;

use common::*;
use herald_store::Store;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_publish_in_a_group_undoes_only_itself() {
    let f = Fixture::sqlite();
    let s: Arc<dyn Store> = f.store.clone();
    for round in 0..5 {
        // One publish whose second delivery reuses the first one's id fails on the unique
        // key after its event and first delivery were written; twenty others are queued
        // beside it, so most rounds put them in the same transaction.
        let bad = event(&format!("bad{round}"), "acme", "t", at(0));
        let twice = vec![
            new_delivery(&format!("dlv_bad{round}"), &bad, "d1", at(0), None),
            new_delivery(&format!("dlv_bad{round}"), &bad, "d2", at(0), None),
        ];
        let good: Vec<_> = (0..20)
            .map(|i| event(&format!("good{round}_{i}"), "acme", "t", at(0)))
            .collect();
        let tasks: Vec<_> = good
            .iter()
            .cloned()
            .map(|e| {
                let s = s.clone();
                tokio::spawn(async move {
                    let d = new_delivery(&format!("dlv_{}", e.id), &e, "d1", at(0), None);
                    s.publish(&e, &["d1".into()], vec![d], at(-1000), at(0))
                        .await
                })
            })
            .collect();
        let failed = s
            .publish(&bad, &["d1".into(), "d2".into()], twice, at(-1000), at(0))
            .await;
        assert!(
            failed.is_err(),
            "a duplicate delivery id must fail the publish"
        );
        for t in tasks {
            t.await.unwrap().expect("the other publishes are committed");
        }
        assert!(
            s.get_event("acme", &bad.id).await.unwrap().is_none(),
            "the failed publish left its event behind"
        );
        for e in &good {
            assert!(
                s.get_event("acme", &e.id).await.unwrap().is_some(),
                "{}",
                e.id
            );
        }
    }
    // The failed events' first deliveries were undone with them: only the good ones wait.
    assert_eq!(s.pending_count().await.unwrap(), 100);
    // And attempt results still commit normally afterwards.
    let e = event("after", "acme", "t", at(0));
    publish_delivered(&*s, &e, "d1", "a_after", at(0), at(1)).await;
    assert!(s.get_attempt("a_after").await.unwrap().is_some());
}

/// The record of a successful first attempt `id` of delivery `dl` of `e` to `d1`, at `at(1)`.
fn first_success(id: &str, dl: &str, e: &herald_core::Event) -> herald_store::AttemptRecord {
    attempt_record(
        id,
        dl,
        e,
        "d1",
        1,
        true,
        at(1),
        (herald_core::DeliveryStatus::Success, at(1)),
    )
}

/// An embedded store of its own (for `set_result_linger`) in a temporary directory.
fn own_sqlite() -> (herald_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        herald_store::sqlite::SqliteStore::open(&dir.path().join("herald.db"), &test_keys())
            .expect("open sqlite");
    (store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_result_waits_for_the_next_write_and_commits_with_it() {
    let (store, _dir) = own_sqlite();
    // Far longer than the test may take: a result committed on its own would only be
    // answered after two minutes, so an answer within the timeout below came with the publish.
    store.set_result_linger(std::time::Duration::from_secs(120));
    let e1 = event("e1", "acme", "t", at(0));
    let [dl] = <[String; 1]>::try_from(publish(&store, &e1, &["d1"], at(0), None).await).unwrap();
    // `join!` polls the record first: its write is queued before the publish is.
    let e2 = event("e2", "acme", "t", at(2));
    let both = async {
        tokio::join!(
            store.record_attempt(first_success("a1", &dl, &e1)),
            publish(&store, &e2, &["d1"], at(2), None),
        )
    };
    let (recorded, _) = tokio::time::timeout(std::time::Duration::from_secs(30), both)
        .await
        .expect("the result was answered with the publish's commit");
    recorded.expect("the result is recorded");
    assert!(store.get_attempt("a1").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_attempt_result_commits_once_its_wait_is_over() {
    let (store, _dir) = own_sqlite();
    store.set_result_linger(std::time::Duration::from_millis(20));
    let e1 = event("e1", "acme", "t", at(0));
    publish_delivered(&store, &e1, "d1", "a1", at(0), at(1)).await;
    assert!(store.get_attempt("a1").await.unwrap().is_some());
    // With no wait at all, too.
    store.set_result_linger(std::time::Duration::ZERO);
    let e2 = event("e2", "acme", "t", at(2));
    publish_delivered(&store, &e2, "d1", "a2", at(2), at(3)).await;
    assert!(store.get_attempt("a2").await.unwrap().is_some());
}

/// Group commits of `writer` on `store` so far, from the process's Prometheus recorder (one
/// per test binary, installed on first use).
fn commits(store: &str, writer: &str) -> f64 {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the test binary's recorder")
    });
    let sample = format!(
        "{}_count{{store=\"{store}\",writer=\"{writer}\"}}",
        herald_store::COMMIT_METRIC
    );
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&sample))
        .map_or(0.0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_attempt_results_gather_for_a_while_and_commit_together() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let mut events = Vec::new();
    for i in 0..20 {
        let e = event(&format!("e{i}"), "acme", "t", at(0));
        let [dl] =
            <[String; 1]>::try_from(publish(&store, &e, &["d1"], at(0), None).await).unwrap();
        events.push((e, dl));
    }
    // The first result, then nineteen more a tenth of a second later, each sent on its own:
    // with a three-second wait one batch writes all twenty. Without one, the first result
    // would have been written alone before the others were sent.
    store.set_result_linger(std::time::Duration::from_secs(3));
    let before = commits("postgres", "attempts");
    let tasks: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, (e, dl))| {
            let gap = if i == 0 {
                std::time::Duration::ZERO
            } else {
                std::time::Duration::from_millis(100)
            };
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(gap).await;
                store
                    .record_attempt(first_success(&format!("a{i}"), &dl, &e))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("recorded");
    }
    let batches = commits("postgres", "attempts") - before;
    assert_eq!(batches, 1.0, "20 results took {batches} batches");
    for i in 0..20 {
        assert!(store.get_attempt(&format!("a{i}")).await.unwrap().is_some());
    }
    // No wait at all: a lone result is written at once.
    store.set_result_linger(std::time::Duration::ZERO);
    let e = event("late", "acme", "t", at(2));
    publish_delivered(&store, &e, "d1", "a_late", at(2), at(3)).await;
    assert!(store.get_attempt("a_late").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_waiting_results_commit_without_waiting_any_longer() {
    let (store, _dir) = own_sqlite();
    let mut events = Vec::new();
    for i in 0..4 {
        let e = event(&format!("e{i}"), "acme", "t", at(0));
        let [dl] =
            <[String; 1]>::try_from(publish(&store, &e, &["d1"], at(0), None).await).unwrap();
        events.push((e, dl));
    }
    // Two minutes of waiting allowed, but four results are as many as may wait together
    // (they would all be written on the next publish's way to its answer).
    store.set_result_linger(std::time::Duration::from_secs(120));
    let records = events
        .iter()
        .enumerate()
        .map(|(i, (e, dl))| store.record_attempt(first_success(&format!("a{i}"), dl, e)));
    let [r0, r1, r2, r3]: [_; 4] = records.collect::<Vec<_>>().try_into().ok().unwrap();
    let all = async { tokio::join!(r0, r1, r2, r3) };
    let (a, b, c, d) = tokio::time::timeout(std::time::Duration::from_secs(30), all)
        .await
        .expect("four waiting results commit on their own");
    for r in [a, b, c, d] {
        r.expect("recorded");
    }
}

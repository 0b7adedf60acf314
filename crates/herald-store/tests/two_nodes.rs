//! The contract's concurrency promises hold across nodes, not just across callers of one
//! process: two `PgStore`s (two nodes, each with its own pool and batch writers) on one
//! database.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use herald_core::DeliveryStatus;
use herald_store::{PublishOutcome, Store};

async fn two_nodes(db: &TestDb) -> [Arc<dyn Store>; 2] {
    [Arc::new(db.store().await), Arc::new(db.store().await)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_published_on_two_nodes_at_once_is_accepted_once() {
    let db = TestDb::create().await;
    let nodes = two_nodes(&db).await;
    for round in 0..5 {
        let id = format!("dup-{round}");
        let mut tasks = Vec::new();
        for i in 0..12 {
            let s = nodes[i % 2].clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let e = event(&id, "acme", "t", at(0));
                s.publish(
                    &e,
                    &["d1".into()],
                    vec![new_delivery(
                        &format!("dlv_{id}_{i}"),
                        &e,
                        "d1",
                        at(1),
                        None,
                    )],
                    at(0),
                    at(1),
                )
                .await
                .unwrap()
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            match t.await.unwrap() {
                PublishOutcome::Accepted => accepted += 1,
                PublishOutcome::Duplicate { .. } => {}
                PublishOutcome::IdTaken => panic!("a concurrent duplicate is not a conflict"),
            }
        }
        assert_eq!(accepted, 1, "round {round}");
    }
    assert_eq!(nodes[0].pending_count().await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_on_two_nodes_never_share_a_delivery() {
    let db = TestDb::create().await;
    let nodes = two_nodes(&db).await;
    for i in 0..400 {
        publish(
            &*nodes[i % 2],
            &event(&format!("e{i:03}"), "acme", "t", at(0)),
            &["d1"],
            at(0),
            None,
        )
        .await;
    }
    let mut claimers = Vec::new();
    for c in 0..6 {
        let s = nodes[c % 2].clone();
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = s.claim_due(at(1), 9, at(600)).await.unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| j.delivery.id));
            }
        }));
    }
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "a delivery was claimed twice");
    assert_eq!(unique.len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_recorded_on_two_nodes_count_once_each() {
    let db = TestDb::create().await;
    let nodes = two_nodes(&db).await;
    nodes[0].upsert_tenant("acme", None, at(0)).await.unwrap();
    nodes[0]
        .insert_destination(&destination("d1", "acme", &["*"], at(0)))
        .await
        .unwrap();
    const N: u32 = 60;
    let mut tasks = Vec::new();
    for i in 0..N {
        let s = nodes[i as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            let e = event(&format!("e{i:02}"), "acme", "t", at(0));
            let ids = publish(&*s, &e, &["d1"], at(0), Some(at(100))).await;
            s.record_attempt(attempt_record(
                &format!("a{i:02}"),
                &ids[0],
                &e,
                "d1",
                1,
                false,
                at(1),
                (DeliveryStatus::Pending, at(60)),
            ))
            .await
            .unwrap()
            .failures
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=N).collect::<Vec<_>>());
}

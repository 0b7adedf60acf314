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

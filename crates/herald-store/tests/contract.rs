//! The store contract: one set of behavioural tests, run against every [`Store`]
//! implementation — the embedded SQLite store (`sqlite::*`) and PostgreSQL (`postgres::*`).
//!
//! Each test is a plain async function over `&dyn Store`; the `contract!` macro instantiates
//! it once per store. A behaviour belongs here when the engine or the API relies on it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use common::*;
use herald_core::{DeliveryStatus, Event, Topics};
use herald_store::*;
use jiff::Timestamp;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = super::Fixture::sqlite();
                    super::$name(f.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = super::Fixture::postgres().await;
                    super::$name(f.store.clone()).await;
                }
            )*
        }
    };
}

/// Sealing behaviours need to close a store and open the same database again with other keys,
/// and to read the raw columns underneath: they take a [`SealBackend`] instead of a store.
macro_rules! sealing_contract {
    ($($name:ident),* $(,)?) => {
        mod sealing_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::SealBackend::sqlite()).await;
                }
            )*
        }
        mod sealing_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::SealBackend::postgres().await).await;
                }
            )*
        }
    };
}

sealing_contract!(
    sealed_destinations_round_trip_and_hide_their_secrets,
    a_wrong_key_is_refused_and_changes_nothing,
    old_keys_open_and_rekey_moves_every_row,
    a_sealed_value_copied_to_another_row_does_not_open,
    plaintext_rows_are_sealed_on_open,
);

contract!(
    api_keys_insert_list_revoke_touch,
    import_destinations_is_all_or_nothing,
    expiry_round_trips_and_each_notice_is_claimed_once,
    nonces_are_used_once,
    tenants_upsert_get_list_delete,
    revoking_tenant_tokens_moves_the_generation,
    destinations_crud_and_conflict,
    publish_round_trip_and_idempotency,
    concurrent_publishes_accept_each_id_once,
    publish_batch_answers_each_event_and_commits_together,
    publish_batch_is_all_or_nothing,
    claim_due_skips_leased_until_expiry,
    concurrent_claimers_never_share_a_delivery,
    record_attempt_moves_delivery_and_counts_failures,
    concurrent_failures_are_counted_exactly,
    disabling_cancels_pending_and_resets_failures,
    defer_and_release_leases,
    leases_renew_only_for_their_holder,
    add_delivery_reuses_a_pending_one,
    replay_requeues_finished_deliveries_once,
    replay_takes_cancelled_and_successful_deliveries_together,
    purge_respects_age_and_pending_work,
    purge_comes_back_for_an_event_once_its_delivery_is_done,
    purge_takes_finished_deliveries_with_their_event,
    purged_ids_stay_duplicates_inside_the_window,
    ids_are_scoped_per_tenant,
    backlog_and_pending_count,
    event_pagination_both_directions,
    attempt_and_tenant_pagination,
    tenant_isolation,
    event_metrics_buckets_dimensions_filters,
    attempt_metrics_measures,
    metrics_count_rows_through_roll_up_purge_and_replay,
    settings_are_created_once,
    operator_events_follow_the_failure_policy_in_the_attempt_transaction,
    gone_disables_in_the_attempt_transaction,
    attempt_events_are_written_only_for_subscribers,
    emit_operator_event_routes_to_subscribers_once,
    destination_changes_write_subscription_updates,
    lists_without_a_tenant_leave_operator_records_out,
);

// ----- tenants and destinations -----

async fn revoking_tenant_tokens_moves_the_generation(s: Arc<dyn Store>) {
    let (t, _) = s.upsert_tenant("acme", None, at(0)).await.unwrap();
    assert_eq!(t.tokens_revoked_at, None);
    let created = t.token_generation();
    assert_eq!(created, at(0).as_microsecond());
    // A revocation at the same instant as the creation still moves the generation.
    let r = s
        .revoke_tenant_tokens("acme", at(0))
        .await
        .unwrap()
        .unwrap();
    let first = r.token_generation();
    assert!(first > created, "{first} > {created}");
    let r = s
        .revoke_tenant_tokens("acme", at(0))
        .await
        .unwrap()
        .unwrap();
    assert!(r.token_generation() > first);
    let r = s
        .revoke_tenant_tokens("acme", at(50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.tokens_revoked_at, Some(at(50)));
    // Kept by an upsert, read by get and list.
    let (t, _) = s.upsert_tenant("acme", None, at(60)).await.unwrap();
    assert_eq!(t.tokens_revoked_at, Some(at(50)));
    let got = s.get_tenant("acme").await.unwrap().unwrap().tenant;
    assert_eq!(got.token_generation(), at(50).as_microsecond());
    let (page, _) = s.list_tenants(&TenantQuery::default()).await.unwrap();
    assert_eq!(page.models[0].tenant.tokens_revoked_at, Some(at(50)));
    // A tenant deleted and created again starts a new generation of its own.
    assert!(s.delete_tenant("acme", at(70)).await.unwrap());
    let (t, created) = s.upsert_tenant("acme", None, at(80)).await.unwrap();
    assert!(created);
    assert_eq!(t.tokens_revoked_at, None);
    assert_eq!(t.token_generation(), at(80).as_microsecond());
    assert!(
        s.revoke_tenant_tokens("nobody", at(90))
            .await
            .unwrap()
            .is_none()
    );
}

async fn tenants_upsert_get_list_delete(s: Arc<dyn Store>) {
    let (t, created) = s.upsert_tenant("acme", None, at(0)).await.unwrap();
    assert!(created);
    assert_eq!(t.created_at, at(0));
    let meta = [("plan".to_string(), "pro".to_string())].into();
    let (t, created) = s.upsert_tenant("acme", Some(meta), at(10)).await.unwrap();
    assert!(!created);
    assert_eq!(t.created_at, at(0), "created_at survives an update");
    assert_eq!(t.updated_at, at(10));

    s.insert_destination(&destination("d1", "acme", &["a.*", "b"], at(1)))
        .await
        .unwrap();
    s.insert_destination(&destination("d2", "acme", &["b", "c"], at(2)))
        .await
        .unwrap();
    let sum = s.get_tenant("acme").await.unwrap().expect("tenant");
    assert_eq!(sum.tenant.metadata.unwrap()["plan"], "pro");
    assert_eq!(sum.destinations_count, 2);
    assert_eq!(sum.topics, vec!["a.*", "b", "c"]);
    assert!(s.get_tenant("nobody").await.unwrap().is_none());

    for i in 1..=4 {
        s.upsert_tenant(&format!("t{i}"), None, at(100 + i))
            .await
            .unwrap();
    }
    let (page, total) = s
        .list_tenants(&TenantQuery {
            ids: vec![],
            page: PageRequest {
                limit: 2,
                ..Default::default()
            },
        })
        .await
        .unwrap();
    assert_eq!(total, 5);
    let ids: Vec<_> = page.models.iter().map(|t| t.tenant.id.as_str()).collect();
    assert_eq!(ids, ["t4", "t3"], "newest first by default");
    assert!(page.prev.is_none());
    let (page2, _) = s
        .list_tenants(&TenantQuery {
            ids: vec![],
            page: PageRequest {
                limit: 2,
                cursor: Some(Cursor::Next(page.next.clone().unwrap())),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    let ids: Vec<_> = page2.models.iter().map(|t| t.tenant.id.as_str()).collect();
    assert_eq!(ids, ["t2", "t1"]);
    let (only, total) = s
        .list_tenants(&TenantQuery {
            ids: vec!["acme".into(), "t1".into()],
            page: PageRequest::default(),
        })
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(only.models.len(), 2);
    assert_eq!(
        only.models
            .iter()
            .find(|t| t.tenant.id == "acme")
            .unwrap()
            .destinations_count,
        2
    );

    // Deleting a tenant removes its destinations and cancels their pending deliveries.
    let e = event("e1", "acme", "b", at(20));
    publish(&*s, &e, &["d1", "d2"], at(20), None).await;
    assert_eq!(s.pending_count().await.unwrap(), 2);
    assert!(s.delete_tenant("acme", at(30)).await.unwrap());
    assert!(!s.delete_tenant("acme", at(31)).await.unwrap());
    assert!(s.get_tenant("acme").await.unwrap().is_none());
    assert!(s.list_destinations("acme").await.unwrap().is_empty());
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert!(s.claim_due(at(40), 10, at(100)).await.unwrap().is_empty());
}

async fn destinations_crud_and_conflict(s: Arc<dyn Store>) {
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    let mut d = destination("d1", "acme", &["*"], at(1));
    d.filter = Some(serde_json::json!({"data": {"amount": {"$gte": 10}}}));
    d.metadata = Some([("team".to_string(), "billing".to_string())].into());
    s.insert_destination(&d).await.unwrap();
    assert_eq!(
        s.get_destination("acme", "d1").await.unwrap(),
        Some(d.clone())
    );
    assert_eq!(
        s.get_destination("acme", "d1")
            .await
            .unwrap()
            .unwrap()
            .topics,
        Topics::All
    );
    match s.insert_destination(&d).await {
        Err(StoreError::Conflict { what, id }) => {
            assert_eq!((what, id.as_str()), ("destination", "d1"))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Ids are per tenant: another tenant's d1 is its own destination.
    let theirs = destination("d1", "other", &["y"], at(2));
    s.insert_destination(&theirs).await.unwrap();
    assert_eq!(
        s.list_destinations("other").await.unwrap(),
        vec![theirs.clone()]
    );
    assert!(s.delete_destination("other", "d1", at(2)).await.unwrap());
    assert_eq!(
        s.get_destination("acme", "d1").await.unwrap(),
        Some(d.clone())
    );
    let d2 = destination("d2", "acme", &["x"], at(0));
    s.insert_destination(&d2).await.unwrap();
    let list = s.list_destinations("acme").await.unwrap();
    assert_eq!(
        list.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d2", "d1"],
        "oldest first"
    );
    assert_eq!(s.list_all_destinations().await.unwrap().len(), 2);

    let mut changed = d.clone();
    changed.topics = Topics::List(vec!["user.created".into()]);
    changed
        .config
        .insert("url".into(), "https://example.org/new".into());
    changed.updated_at = at(5);
    s.update_destination(&changed, false, at(5)).await.unwrap();
    assert_eq!(
        s.get_destination("acme", "d1").await.unwrap(),
        Some(changed)
    );

    // Deleting cancels pending deliveries; the wrong tenant deletes nothing.
    let e = event("e1", "acme", "x", at(6));
    publish(&*s, &e, &["d1", "d2"], at(6), None).await;
    assert!(!s.delete_destination("other", "d2", at(7)).await.unwrap());
    assert!(s.delete_destination("acme", "d2", at(7)).await.unwrap());
    assert!(!s.delete_destination("acme", "d2", at(7)).await.unwrap());
    assert!(s.get_destination("acme", "d2").await.unwrap().is_none());
    let jobs = s.claim_due(at(8), 10, at(100)).await.unwrap();
    assert_eq!(
        jobs.iter()
            .map(|j| j.delivery.destination_id.as_str())
            .collect::<Vec<_>>(),
        ["d1"]
    );
}

// ----- publishing -----

async fn publish_round_trip_and_idempotency(s: Arc<dyn Store>) {
    let mut e = event("evt_1", "acme", "user.created", at(0));
    e.destination_id = Some("d1".into());
    e.eligible_for_retry = false;
    let ids = publish(&*s, &e, &["d1", "d2"], at(1), None).await;
    let stored = s.get_event("acme", "evt_1").await.unwrap().expect("stored");
    assert_eq!(stored.event, e);
    assert_eq!(stored.matched_destination_ids, ["d1", "d2"]);
    assert_eq!(stored.created_at, at(1));
    assert_eq!(
        serde_json::to_string(&stored.event.data).unwrap(),
        r#"{"zeta":1,"alpha":{"nested":[1,2,3]},"mid":"x"}"#,
        "payload key order is kept"
    );
    assert_eq!(s.pending_count().await.unwrap(), 2);

    // The same id within the window: a duplicate, nothing written.
    let again = s
        .publish(
            &e,
            &["d3".into()],
            vec![new_delivery("dlv_x", &e, "d3", at(2), None)],
            at(0),
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        PublishOutcome::Duplicate {
            matched_destination_ids: vec!["d1".into(), "d2".into()]
        }
    );
    assert_eq!(s.pending_count().await.unwrap(), 2);
    // Outside the window: the id is taken.
    let late = s.publish(&e, &[], vec![], at(5), at(6)).await.unwrap();
    assert_eq!(late, PublishOutcome::IdTaken);
    // Ids are per tenant: another tenant's evt_1 is its own event, and neither sees the other.
    let other = event("evt_1", "globex", "user.created", at(0));
    assert_eq!(
        s.publish(&other, &[], vec![], at(0), at(3)).await.unwrap(),
        PublishOutcome::Accepted
    );
    assert_eq!(
        s.get_event("acme", "evt_1").await.unwrap().unwrap().event,
        e
    );
    assert_eq!(
        s.get_event("globex", "evt_1").await.unwrap().unwrap().event,
        other
    );
    assert!(s.get_event("acme", "nope").await.unwrap().is_none());
    assert!(s.get_event("initech", "evt_1").await.unwrap().is_none());
    // Its deliveries carry the ids given.
    let jobs = s.claim_due(at(3), 10, at(60)).await.unwrap();
    let mut got: Vec<_> = jobs.iter().map(|j| j.delivery.id.clone()).collect();
    got.sort();
    assert_eq!(got, ids);
}

/// A batch event with one delivery per destination (ids `dlv_<event>_<dest>`).
fn batch_event(e: Event, dests: &[&str], now: Timestamp) -> NewEvent {
    let deliveries = dests
        .iter()
        .map(|d| new_delivery(&format!("dlv_{}_{d}", e.id), &e, d, now, None))
        .collect();
    NewEvent {
        matched: dests.iter().map(|d| d.to_string()).collect(),
        deliveries,
        event: e,
    }
}

async fn publish_batch_answers_each_event_and_commits_together(s: Arc<dyn Store>) {
    publish(&*s, &event("old", "acme", "t", at(0)), &["d1"], at(0), None).await;
    publish(
        &*s,
        &event("recent", "acme", "t", at(10)),
        &["d2"],
        at(10),
        None,
    )
    .await;
    let mut repeat = batch_event(event("b1", "acme", "t", at(20)), &["d3"], at(20));
    repeat.deliveries[0].delivery.id = "dlv_b1_again".into();
    let batch = vec![
        batch_event(event("b1", "acme", "t", at(20)), &["d1", "d2"], at(20)),
        batch_event(event("recent", "acme", "t", at(20)), &["d1"], at(20)),
        batch_event(event("old", "acme", "t", at(20)), &["d1"], at(20)),
        // The same id again in the batch: a duplicate of the first, which writes nothing.
        repeat,
        // Ids are per tenant.
        batch_event(event("old", "globex", "t", at(20)), &[], at(20)),
        batch_event(event("old", "acme", "t", at(20)), &["d1"], at(20)),
    ];
    // The idempotency window starts at 5: `recent` is inside it, `old` before it.
    let out = s.publish_batch(batch, at(5), at(20)).await.unwrap();
    let dup = |ids: &[&str]| PublishOutcome::Duplicate {
        matched_destination_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        out,
        [
            PublishOutcome::Accepted,
            dup(&["d2"]),
            PublishOutcome::IdTaken,
            dup(&["d1", "d2"]),
            PublishOutcome::Accepted,
            PublishOutcome::IdTaken,
        ]
    );
    let b1 = s.get_event("acme", "b1").await.unwrap().expect("b1 stored");
    assert_eq!(b1.matched_destination_ids, ["d1", "d2"]);
    assert_eq!(b1.created_at, at(20));
    assert!(s.get_event("globex", "old").await.unwrap().is_some());
    // old + recent + b1's two; nothing of the duplicate.
    assert_eq!(s.pending_count().await.unwrap(), 4);
    let jobs = s.claim_due(at(20), 10, at(60)).await.unwrap();
    let mut got: Vec<_> = jobs.iter().map(|j| j.delivery.id.clone()).collect();
    got.sort();
    assert_eq!(
        got,
        ["dlv_b1_d1", "dlv_b1_d2", "dlv_old_d1", "dlv_recent_d2"]
    );
    assert!(
        s.publish_batch(Vec::new(), at(5), at(20))
            .await
            .unwrap()
            .is_empty()
    );
    // A batch larger than the writers' own group caps is still one write.
    let many: Vec<NewEvent> = (0..1000)
        .map(|i| {
            batch_event(
                event(&format!("m{i:04}"), "acme", "t", at(30)),
                &["d1"],
                at(30),
            )
        })
        .collect();
    let out = s.publish_batch(many, at(5), at(30)).await.unwrap();
    assert_eq!(out.len(), 1000);
    assert!(out.iter().all(|o| *o == PublishOutcome::Accepted));
    assert_eq!(s.pending_count().await.unwrap(), 1004);
}

async fn publish_batch_is_all_or_nothing(s: Arc<dyn Store>) {
    publish(
        &*s,
        &event("first", "acme", "t", at(0)),
        &["d1"],
        at(0),
        None,
    )
    .await;
    // The second event's delivery reuses an existing delivery id: the database refuses it,
    // and the batch is refused whole.
    let mut clash = batch_event(event("c2", "acme", "t", at(1)), &["d1"], at(1));
    clash.deliveries[0].delivery.id = "dlv_first_d1".into();
    let batch = vec![
        batch_event(event("c1", "acme", "t", at(1)), &["d1"], at(1)),
        clash,
    ];
    assert!(s.publish_batch(batch, at(0), at(1)).await.is_err());
    assert!(s.get_event("acme", "c1").await.unwrap().is_none());
    assert!(s.get_event("acme", "c2").await.unwrap().is_none());
    assert_eq!(s.pending_count().await.unwrap(), 1);
    // The same events without the clash are accepted.
    let batch = vec![
        batch_event(event("c1", "acme", "t", at(1)), &["d1"], at(1)),
        batch_event(event("c2", "acme", "t", at(1)), &["d1"], at(1)),
    ];
    let out = s.publish_batch(batch, at(0), at(1)).await.unwrap();
    assert_eq!(out, [PublishOutcome::Accepted, PublishOutcome::Accepted]);
    assert_eq!(s.pending_count().await.unwrap(), 3);
}

async fn concurrent_publishes_accept_each_id_once(s: Arc<dyn Store>) {
    // Many callers publishing the same id at once: exactly one is accepted.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let e = event("same", "acme", "t", at(0));
            s.publish(
                &e,
                &["d1".into()],
                vec![new_delivery(&format!("dlv_{i}"), &e, "d1", at(1), None)],
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
            PublishOutcome::Duplicate {
                matched_destination_ids,
            } => assert_eq!(matched_destination_ids, ["d1"]),
            PublishOutcome::IdTaken => panic!("a concurrent duplicate is not a conflict"),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(s.pending_count().await.unwrap(), 1);

    // Many distinct events at once (batched writers): all accepted, all deliveries written.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let e = event(&format!("many_{i:03}"), "acme", "t", at(i));
            publish(&*s, &e, &["d1", "d2"], at(i), None).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.pending_count().await.unwrap(), 601);
    let page = s
        .list_events(&EventQuery {
            tenant_ids: vec!["acme".into()],
            page: PageRequest {
                limit: 1000,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.models.len(), 301);
}

// ----- leases -----

async fn claim_due_skips_leased_until_expiry(s: Arc<dyn Store>) {
    // Created leased (dispatched from memory by the publishing node).
    let e1 = event("e1", "acme", "t", at(0));
    publish(&*s, &e1, &["d1"], at(0), Some(at(60))).await;
    assert!(s.claim_due(at(59), 10, at(200)).await.unwrap().is_empty());
    // Created unleased: due now.
    let e2 = event("e2", "acme", "t", at(0));
    publish(&*s, &e2, &["d1"], at(0), None).await;
    let jobs = s.claim_due(at(1), 10, at(30)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j.delivery.id, "dlv_e2_d1");
    assert_eq!(j.lease_until, at(30));
    assert_eq!(*j.event, e2);
    assert_eq!(j.delivery.status, DeliveryStatus::Pending);
    assert_eq!(j.delivery.attempts, 0);
    // Held: nobody else gets it while the lease runs.
    assert!(s.claim_due(at(29), 10, at(200)).await.unwrap().is_empty());
    // The lease expired (its holder died): due again, and the other lease too.
    let jobs = s.claim_due(at(61), 10, at(300)).await.unwrap();
    let mut ids: Vec<_> = jobs.iter().map(|j| j.delivery.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["dlv_e1_d1", "dlv_e2_d1"]);
    // The limit holds.
    for i in 0..5 {
        publish(
            &*s,
            &event(&format!("x{i}"), "acme", "t", at(0)),
            &["d1"],
            at(0),
            None,
        )
        .await;
    }
    assert_eq!(s.claim_due(at(62), 3, at(300)).await.unwrap().len(), 3);
    assert_eq!(s.claim_due(at(62), 3, at(300)).await.unwrap().len(), 2);
    assert!(s.claim_due(at(62), 3, at(300)).await.unwrap().is_empty());
}

async fn concurrent_claimers_never_share_a_delivery(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..300 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            publish(
                &*s,
                &event(&format!("e{i:03}"), "acme", "t", at(0)),
                &["d1"],
                at(0),
                None,
            )
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut claimers = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = s.claim_due(at(1), 7, at(600)).await.unwrap();
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
    assert_eq!(unique.len(), 300);
}

// ----- attempts -----

async fn record_attempt_moves_delivery_and_counts_failures(s: Arc<dyn Store>) {
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    s.insert_destination(&destination("d1", "acme", &["*"], at(0)))
        .await
        .unwrap();
    let e = event("e1", "acme", "t", at(0));
    let [dl] = <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(0), None).await).unwrap();
    let j = s.claim_due(at(1), 10, at(60)).await.unwrap();
    assert_eq!(j.len(), 1);

    let failed = |n: u32, t: i64, next: i64| {
        attempt_record(
            &format!("att_{n}"),
            &dl,
            &e,
            "d1",
            n,
            false,
            at(t),
            (DeliveryStatus::Pending, at(next)),
        )
    };
    assert_eq!(
        s.record_attempt(failed(1, 2, 30)).await.unwrap().failures,
        1
    );
    // Released: due at the retry time, not before.
    assert!(s.claim_due(at(29), 10, at(100)).await.unwrap().is_empty());
    let j = s.claim_due(at(30), 10, at(100)).await.unwrap();
    assert_eq!(j[0].delivery.attempts, 1);
    assert_eq!(
        s.record_attempt(failed(2, 31, 40)).await.unwrap().failures,
        2
    );
    let ok = attempt_record(
        "att_3",
        &dl,
        &e,
        "d1",
        3,
        true,
        at(41),
        (DeliveryStatus::Success, at(41)),
    );
    assert_eq!(
        s.record_attempt(ok.clone()).await.unwrap().failures,
        0,
        "success resets the streak"
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert!(
        s.claim_due(at(1000), 10, at(2000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.get_attempt("att_3").await.unwrap(), Some(ok.attempt));
    assert!(s.get_attempt("att_9").await.unwrap().is_none());

    // Another event: the streak starts again from zero after the success.
    let e2 = event("e2", "acme", "t", at(50));
    let [dl2] = <[String; 1]>::try_from(publish(&*s, &e2, &["d1"], at(50), None).await).unwrap();
    let rec = attempt_record(
        "att_4",
        &dl2,
        &e2,
        "d1",
        1,
        false,
        at(51),
        (DeliveryStatus::Failed, at(51)),
    );
    assert_eq!(s.record_attempt(rec).await.unwrap().failures, 1);
    assert_eq!(
        s.pending_count().await.unwrap(),
        0,
        "failed for good is not pending"
    );

    // A delivery cancelled while its attempt ran stays cancelled.
    let e3 = event("e3", "acme", "t", at(60));
    let [dl3] =
        <[String; 1]>::try_from(publish(&*s, &e3, &["d1"], at(60), Some(at(100))).await).unwrap();
    assert!(s.delete_destination("acme", "d1", at(61)).await.unwrap());
    let rec = attempt_record(
        "att_5",
        &dl3,
        &e3,
        "d1",
        1,
        false,
        at(62),
        (DeliveryStatus::Pending, at(90)),
    );
    assert_eq!(
        s.record_attempt(rec).await.unwrap().failures,
        0,
        "a late attempt of a cancelled delivery does not count as a failure"
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert!(
        s.claim_due(at(1000), 10, at(2000))
            .await
            .unwrap()
            .is_empty()
    );
    // The attempt itself is still logged.
    let page = s
        .list_attempts(&AttemptQuery {
            event_ids: vec!["e3".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.models.len(), 1);
}

async fn concurrent_failures_are_counted_exactly(s: Arc<dyn Store>) {
    // Several writers (nodes) recording failures for one destination at once: every count
    // from 1 to N is returned exactly once, so thresholds fire exactly once.
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    s.insert_destination(&destination("d1", "acme", &["*"], at(0)))
        .await
        .unwrap();
    const N: u32 = 40;
    let mut recs = Vec::new();
    for i in 0..N {
        let e = event(&format!("e{i:02}"), "acme", "t", at(0));
        let [dl] =
            <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(0), Some(at(100))).await).unwrap();
        recs.push(attempt_record(
            &format!("att_{i:02}"),
            &dl,
            &e,
            "d1",
            1,
            false,
            at(1),
            (DeliveryStatus::Pending, at(60)),
        ));
    }
    let mut tasks = Vec::new();
    for rec in recs {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.record_attempt(rec).await.unwrap().failures
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=N).collect::<Vec<_>>());
}

async fn disabling_cancels_pending_and_resets_failures(s: Arc<dyn Store>) {
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    let mut d = destination("d1", "acme", &["*"], at(0));
    s.insert_destination(&d).await.unwrap();
    let e = event("e1", "acme", "t", at(0));
    let [dl] = <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(0), None).await).unwrap();
    for n in 1..=3 {
        let rec = attempt_record(
            &format!("a{n}"),
            &dl,
            &e,
            "d1",
            n,
            false,
            at(n as i64),
            (DeliveryStatus::Pending, at(10)),
        );
        assert_eq!(s.record_attempt(rec).await.unwrap().failures, n);
    }
    let e2 = event("e2", "acme", "t", at(5));
    publish(&*s, &e2, &["d1"], at(5), None).await;
    assert_eq!(s.pending_count().await.unwrap(), 2);
    d.disabled_at = Some(at(6));
    d.updated_at = at(6);
    s.update_destination(&d, true, at(6)).await.unwrap();
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(
        s.get_destination("acme", "d1")
            .await
            .unwrap()
            .unwrap()
            .disabled_at,
        Some(at(6))
    );
    // A delivery created while disabled (a node routed with a stale cache) fails: it does
    // not count, and the engine can cancel it.
    let late = event("late", "acme", "t", at(6));
    let [dl_late] =
        <[String; 1]>::try_from(publish(&*s, &late, &["d1"], at(6), None).await).unwrap();
    let rec = attempt_record(
        "a_late",
        &dl_late,
        &late,
        "d1",
        1,
        false,
        at(6),
        (DeliveryStatus::Pending, at(10)),
    );
    assert_eq!(s.record_attempt(rec).await.unwrap().failures, 0);
    assert_eq!(
        s.cancel_deliveries(vec![dl_late.clone()], at(7))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.cancel_deliveries(vec![dl_late], at(7)).await.unwrap(), 0);
    assert_eq!(s.pending_count().await.unwrap(), 0);
    // Re-enabled: a fresh streak.
    d.disabled_at = None;
    d.updated_at = at(7);
    s.update_destination(&d, false, at(7)).await.unwrap();
    let e3 = event("e3", "acme", "t", at(7));
    let [dl3] = <[String; 1]>::try_from(publish(&*s, &e3, &["d1"], at(7), None).await).unwrap();
    let rec = attempt_record(
        "a9",
        &dl3,
        &e3,
        "d1",
        1,
        false,
        at(8),
        (DeliveryStatus::Pending, at(10)),
    );
    assert_eq!(s.record_attempt(rec).await.unwrap().failures, 1);
    // reset_failures too.
    s.reset_failures("acme", "d1").await.unwrap();
    let rec = attempt_record(
        "a10",
        &dl3,
        &e3,
        "d1",
        2,
        false,
        at(9),
        (DeliveryStatus::Pending, at(10)),
    );
    assert_eq!(s.record_attempt(rec).await.unwrap().failures, 1);
}

async fn defer_and_release_leases(s: Arc<dyn Store>) {
    for i in 0..3 {
        publish(
            &*s,
            &event(&format!("e{i}"), "acme", "t", at(0)),
            &["d1"],
            at(0),
            None,
        )
        .await;
    }
    let jobs = s.claim_due(at(1), 10, at(100)).await.unwrap();
    assert_eq!(jobs.len(), 3);
    s.defer(vec![jobs[0].delivery.id.clone()], at(20))
        .await
        .unwrap();
    assert!(s.claim_due(at(19), 10, at(100)).await.unwrap().is_empty());
    let again = s.claim_due(at(20), 10, at(100)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, jobs[0].delivery.id);
    // Releasing every lease (single-node start-up) makes them all due now.
    assert_eq!(s.release_all_leases().await.unwrap(), 3);
    assert_eq!(
        s.claim_due(Timestamp::now(), 10, at(100))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(s.pending_count().await.unwrap(), 3);
}

async fn leases_renew_only_for_their_holder(s: Arc<dyn Store>) {
    let e1 = event("e1", "acme", "t", at(0));
    let e2 = event("e2", "acme", "t", at(0));
    let [d1] =
        <[String; 1]>::try_from(publish(&*s, &e1, &["d1"], at(0), Some(at(10))).await).unwrap();
    let [d2] = <[String; 1]>::try_from(publish(&*s, &e2, &["d1"], at(0), None).await).unwrap();
    let claimed = s.claim_due(at(1), 10, at(20)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // The holder renews (even right at expiry); a wrong token renews nothing.
    let renewed = s
        .renew_leases(vec![(d1.clone(), at(10)), (d2.clone(), at(19))], at(40))
        .await
        .unwrap();
    assert_eq!(renewed, vec![d1.clone()]);
    assert!(
        s.claim_due(at(19), 10, at(100)).await.unwrap().is_empty(),
        "e1 renewed from 10 to 40, e2 held to 20"
    );
    // Expired and claimed by someone else: the old holder cannot take it back.
    let taken = s.claim_due(at(41), 10, at(100)).await.unwrap();
    assert_eq!(taken.len(), 2);
    assert!(
        s.renew_leases(vec![(d1.clone(), at(40)), (d2.clone(), at(20))], at(200))
            .await
            .unwrap()
            .is_empty()
    );
    // A finished delivery has no lease to renew.
    s.record_attempt(attempt_record(
        "a1",
        &d2,
        &e2,
        "d1",
        1,
        true,
        at(42),
        (DeliveryStatus::Success, at(42)),
    ))
    .await
    .unwrap();
    assert!(
        s.renew_leases(vec![(d2, at(100))], at(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.renew_leases(vec![(d1.clone(), at(100))], at(300))
            .await
            .unwrap(),
        vec![d1]
    );
}

async fn add_delivery_reuses_a_pending_one(s: Arc<dyn Store>) {
    let e = event("e1", "acme", "t", at(0));
    let [dl] = <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(0), None).await).unwrap();
    let mut manual = new_delivery("dlv_manual", &e, "d1", at(1), None);
    manual.delivery.manual = true;
    assert_eq!(
        s.add_delivery(manual.clone()).await.unwrap(),
        (dl.clone(), false),
        "a pending delivery exists"
    );
    // Two attempts, then failed for good.
    for n in 1..=2 {
        let st = if n == 2 {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Pending
        };
        s.record_attempt(attempt_record(
            &format!("a{n}"),
            &dl,
            &e,
            "d1",
            n,
            false,
            at(n as i64),
            (st, at(3)),
        ))
        .await
        .unwrap();
    }
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert_eq!(
        s.add_delivery(manual).await.unwrap(),
        ("dlv_manual".into(), true)
    );
    let jobs = s.claim_due(at(5), 10, at(100)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].delivery.id, "dlv_manual");
    assert!(jobs[0].delivery.manual);
    assert_eq!(jobs[0].delivery.attempts, 2, "attempt numbers continue");

    // Concurrent manual retries of one finished delivery create one pending delivery.
    s.record_attempt(attempt_record(
        "a3",
        "dlv_manual",
        &e,
        "d1",
        3,
        false,
        at(6),
        (DeliveryStatus::Failed, at(6)),
    ))
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let mut nd = new_delivery(&format!("dlv_m{i}"), &e, "d1", at(7), None);
        nd.delivery.manual = true;
        tasks.push(tokio::spawn(
            async move { s.add_delivery(nd).await.unwrap() },
        ));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap().1 {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(s.pending_count().await.unwrap(), 1);
}

async fn replay_requeues_finished_deliveries_once(s: Arc<dyn Store>) {
    let mut dls = Vec::new();
    for (i, topic) in ["a", "b", "a"].iter().enumerate() {
        let e = event(&format!("e{i}"), "acme", topic, at(0));
        let [dl] =
            <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(i as i64), None).await).unwrap();
        let ok = i == 2;
        let st = if ok {
            DeliveryStatus::Success
        } else {
            DeliveryStatus::Failed
        };
        s.record_attempt(attempt_record(
            &format!("a{i}"),
            &dl,
            &e,
            "d1",
            1,
            ok,
            at(10),
            (st, at(10)),
        ))
        .await
        .unwrap();
        dls.push(dl);
    }
    let q = ReplayQuery {
        tenant_id: "acme".into(),
        destination_id: "d1".into(),
        ..Default::default()
    };
    // Default: failed ones; a topic filter narrows.
    let only_b = ReplayQuery {
        topics: vec!["b".into()],
        ..q.clone()
    };
    assert_eq!(s.replay(&only_b, at(20)).await.unwrap(), 1);
    assert_eq!(
        s.replay(&q, at(20)).await.unwrap(),
        1,
        "e1 is pending already"
    );
    assert_eq!(s.replay(&q, at(21)).await.unwrap(), 0);
    assert_eq!(s.pending_count().await.unwrap(), 2);
    // Successful ones on request; a time range on creation.
    let success = ReplayQuery {
        statuses: vec![DeliveryStatus::Success],
        time: TimeRange {
            gte: Some(at(2)),
            ..Default::default()
        },
        ..q.clone()
    };
    assert_eq!(s.replay(&success, at(22)).await.unwrap(), 1);
    let jobs = s.claim_due(at(30), 10, at(100)).await.unwrap();
    assert_eq!(jobs.len(), 3);
    for j in &jobs {
        assert_eq!(j.delivery.retry_base, 1, "a fresh retry schedule");
        assert!(!j.delivery.manual);
    }
    // Other tenants' destinations are never touched.
    let other = ReplayQuery {
        tenant_id: "globex".into(),
        ..q
    };
    assert_eq!(s.replay(&other, at(40)).await.unwrap(), 0);
}

async fn replay_takes_cancelled_and_successful_deliveries_together(s: Arc<dyn Store>) {
    // Cancelled before any attempt; and delivered.
    let e0 = event("e0", "acme", "t", at(0));
    let [dl0] = <[String; 1]>::try_from(publish(&*s, &e0, &["d1"], at(0), None).await).unwrap();
    assert_eq!(
        s.cancel_deliveries(vec![dl0.clone()], at(5)).await.unwrap(),
        1
    );
    let e1 = event("e1", "acme", "t", at(0));
    publish_delivered(&*s, &e1, "d1", "a1", at(1), at(10)).await;
    let q = ReplayQuery {
        tenant_id: "acme".into(),
        destination_id: "d1".into(),
        statuses: vec![DeliveryStatus::Success, DeliveryStatus::Cancelled],
        ..Default::default()
    };
    assert_eq!(s.replay(&q, at(20)).await.unwrap(), 2);
    let jobs = s.claim_due(at(30), 10, at(100)).await.unwrap();
    assert_eq!(jobs.len(), 2);
    for (i, j) in jobs.iter().enumerate() {
        let e = if j.delivery.id == dl0 { &e0 } else { &e1 };
        s.record_attempt(attempt_record(
            &format!("r{i}"),
            &j.delivery.id,
            e,
            "d1",
            j.delivery.attempts + 1,
            true,
            at(31),
            (DeliveryStatus::Success, at(31)),
        ))
        .await
        .unwrap();
    }
    // Both succeeded now, e1's twice: each is re-queued once.
    let success = ReplayQuery {
        statuses: vec![DeliveryStatus::Success],
        ..q.clone()
    };
    assert_eq!(s.replay(&success, at(40)).await.unwrap(), 2);
    assert_eq!(s.pending_count().await.unwrap(), 2);
    assert_eq!(s.replay(&success, at(41)).await.unwrap(), 0);
    let elsewhere = ReplayQuery {
        destination_id: "d2".into(),
        ..q
    };
    assert_eq!(s.replay(&elsewhere, at(42)).await.unwrap(), 0);
}

// ----- retention -----

async fn purge_respects_age_and_pending_work(s: Arc<dyn Store>) {
    // Old and finished; old but pending; new.
    let old = event("old", "acme", "t", at(0));
    publish_delivered(&*s, &old, "d1", "a_old", at(0), at(1)).await;
    let waiting = event("waiting", "acme", "t", at(0));
    publish(&*s, &waiting, &["d1"], at(0), None).await;
    let new = event("new", "acme", "t", at(100));
    publish(&*s, &new, &["d1"], at(100), None).await;

    // The idempotency window starts at the cutoff here, so no purged id is kept.
    let stats = s.purge(at(50), at(50), 100).await.unwrap();
    assert_eq!(
        stats,
        PurgeStats {
            attempts: 1,
            deliveries: 1,
            events: 1,
            ids_forgotten: 0,
        }
    );
    assert_eq!(stats.total(), 3);
    assert!(s.get_event("acme", "old").await.unwrap().is_none());
    assert!(s.get_attempt("a_old").await.unwrap().is_none());
    assert!(
        s.get_event("acme", "waiting").await.unwrap().is_some(),
        "pending work keeps its event"
    );
    assert!(s.get_event("acme", "new").await.unwrap().is_some());
    assert_eq!(
        s.purge(at(50), at(50), 100).await.unwrap(),
        PurgeStats::default()
    );

    // Batches are bounded.
    for i in 0..5 {
        let e = event(&format!("b{i}"), "acme", "t", at(0));
        let [dl] = <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(0), None).await).unwrap();
        s.record_attempt(attempt_record(
            &format!("ab{i}"),
            &dl,
            &e,
            "d1",
            1,
            false,
            at(1),
            (DeliveryStatus::Failed, at(1)),
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        s.purge(at(50), at(50), 0).await.unwrap(),
        PurgeStats::default(),
        "a batch of none takes nothing"
    );
    let first = s.purge(at(50), at(50), 2).await.unwrap();
    assert_eq!((first.attempts, first.deliveries, first.events), (2, 2, 2));
    let mut total = first.total();
    loop {
        let st = s.purge(at(50), at(50), 2).await.unwrap();
        if st.total() == 0 {
            break;
        }
        total += st.total();
    }
    assert_eq!(total, 15);
}

async fn purge_comes_back_for_an_event_once_its_delivery_is_done(s: Arc<dyn Store>) {
    // The oldest event waits for its delivery; four old events without deliveries follow.
    let held = event("held", "acme", "t", at(0));
    let [dl] = <[String; 1]>::try_from(publish(&*s, &held, &["d1"], at(0), None).await).unwrap();
    for i in 0..4 {
        let e = event(&format!("p{i}"), "acme", "t", at(0));
        publish(&*s, &e, &[], at(1), None).await;
    }
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(s.purge(at(50), at(50), 2).await.unwrap().events);
    }
    assert_eq!(taken, [2, 2, 0]);
    assert!(s.get_event("acme", "held").await.unwrap().is_some());
    s.record_attempt(attempt_record(
        "a_held",
        &dl,
        &held,
        "d1",
        1,
        true,
        at(10),
        (DeliveryStatus::Success, at(10)),
    ))
    .await
    .unwrap();
    let st = s.purge(at(50), at(50), 2).await.unwrap();
    assert_eq!((st.events, st.deliveries, st.attempts), (1, 1, 1));
    assert!(s.get_event("acme", "held").await.unwrap().is_none());
}

async fn purge_takes_finished_deliveries_with_their_event(s: Arc<dyn Store>) {
    // One event, two deliveries: the first succeeds early, the second is still pending.
    let two = event("two", "acme", "t", at(0));
    let [d1, d2] =
        <[String; 2]>::try_from(publish(&*s, &two, &["d1", "d2"], at(0), None).await).unwrap();
    s.record_attempt(attempt_record(
        "a1",
        &d1,
        &two,
        "d1",
        1,
        true,
        at(1),
        (DeliveryStatus::Success, at(1)),
    ))
    .await
    .unwrap();
    // The old attempt goes by its own age; the finished delivery stays with its event.
    let st = s.purge(at(50), at(50), 100).await.unwrap();
    assert_eq!((st.attempts, st.deliveries, st.events), (1, 0, 0));
    assert!(s.get_event("acme", "two").await.unwrap().is_some());
    // The second succeeds after the cutoff: the event, old enough, takes both deliveries.
    s.record_attempt(attempt_record(
        "a2",
        &d2,
        &two,
        "d2",
        1,
        true,
        at(60),
        (DeliveryStatus::Success, at(60)),
    ))
    .await
    .unwrap();
    let st = s.purge(at(50), at(50), 100).await.unwrap();
    assert_eq!((st.attempts, st.deliveries, st.events), (0, 2, 1));
    assert!(s.get_event("acme", "two").await.unwrap().is_none());
    assert_eq!(
        s.purge(at(50), at(50), 100).await.unwrap(),
        PurgeStats::default()
    );
    // The later attempt stays until it is old enough itself.
    assert!(s.get_attempt("a2").await.unwrap().is_some());
}

async fn purged_ids_stay_duplicates_inside_the_window(s: Arc<dyn Store>) {
    // Accepted at 10 and delivered; retention purges it at 50 while the idempotency window
    // (from 5) still covers it.
    let e = event("kept", "acme", "t", at(10));
    publish_delivered(&*s, &e, "d1", "a_kept", at(10), at(11)).await;
    let stats = s.purge(at(50), at(5), 100).await.unwrap();
    assert_eq!((stats.events, stats.ids_forgotten), (1, 0));
    assert!(s.get_event("acme", "kept").await.unwrap().is_none());
    // Published again inside the window: still a duplicate, answered with where the original
    // went, and nothing is written.
    let again = s
        .publish(
            &e,
            &["d9".into()],
            vec![new_delivery("dlv_again", &e, "d9", at(60), None)],
            at(5),
            at(60),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        PublishOutcome::Duplicate {
            matched_destination_ids: vec!["d1".into()]
        }
    );
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert!(s.get_event("acme", "kept").await.unwrap().is_none());
    // Another tenant's "kept" is its own event.
    let other = event("kept", "globex", "t", at(60));
    assert_eq!(
        s.publish(&other, &[], vec![], at(5), at(60)).await.unwrap(),
        PublishOutcome::Accepted
    );
    // Past the window a kept id answers like a stored old event: taken.
    assert_eq!(
        s.publish(&e, &[], vec![], at(20), at(70)).await.unwrap(),
        PublishOutcome::IdTaken
    );
    // A purge whose window starts later forgets it; the id is then free again.
    let st = s.purge(at(50), at(20), 100).await.unwrap();
    assert_eq!(st.ids_forgotten, 1);
    assert_eq!(
        s.publish(
            &e,
            &["d1".into()],
            vec![new_delivery("dlv_new", &e, "d1", at(80), None)],
            at(20),
            at(80),
        )
        .await
        .unwrap(),
        PublishOutcome::Accepted
    );
    assert_eq!(
        s.get_event("acme", "kept")
            .await
            .unwrap()
            .unwrap()
            .created_at,
        at(80)
    );
    assert_eq!(
        s.get_event("globex", "kept")
            .await
            .unwrap()
            .unwrap()
            .created_at,
        at(60)
    );
}

async fn ids_are_scoped_per_tenant(s: Arc<dyn Store>) {
    // Two tenants each create "d1": two destinations; a second "d1" in one tenant conflicts.
    let a = destination("d1", "acme", &["*"], at(0));
    let b = destination("d1", "globex", &["orders"], at(0));
    s.insert_destination(&a).await.unwrap();
    s.insert_destination(&b).await.unwrap();
    assert!(matches!(
        s.insert_destination(&a).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        s.get_destination("acme", "d1")
            .await
            .unwrap()
            .unwrap()
            .topics,
        a.topics
    );
    assert_eq!(
        s.get_destination("globex", "d1")
            .await
            .unwrap()
            .unwrap()
            .topics,
        b.topics
    );
    assert_eq!(s.list_all_destinations().await.unwrap().len(), 2);

    // The same event id in both tenants, each routed to its own d1.
    let ea = event("e1", "acme", "orders", at(1));
    let eb = event("e1", "globex", "orders", at(1));
    for (e, dl) in [(&ea, "dl_a"), (&eb, "dl_b")] {
        let out = s
            .publish(
                e,
                &["d1".into()],
                vec![new_delivery(dl, e, "d1", at(1), None)],
                at(0),
                at(1),
            )
            .await
            .unwrap();
        assert_eq!(out, PublishOutcome::Accepted);
    }
    let jobs = s.claim_due(at(2), 10, at(100)).await.unwrap();
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        assert_eq!(
            j.event.tenant_id, j.delivery.tenant_id,
            "each job carries its tenant's event"
        );
    }

    // Failures are counted per tenant's destination.
    let fail = |id: &str, dl: &str, e: &herald_core::Event, n: u32| {
        attempt_record(
            id,
            dl,
            e,
            "d1",
            n,
            false,
            at(2 + n as i64),
            (DeliveryStatus::Pending, at(50)),
        )
    };
    assert_eq!(
        s.record_attempt(fail("a1", "dl_a", &ea, 1))
            .await
            .unwrap()
            .failures,
        1
    );
    assert_eq!(
        s.record_attempt(fail("a2", "dl_a", &ea, 2))
            .await
            .unwrap()
            .failures,
        2
    );
    assert_eq!(
        s.record_attempt(fail("b1", "dl_b", &eb, 1))
            .await
            .unwrap()
            .failures,
        1
    );
    s.reset_failures("globex", "d1").await.unwrap();
    assert_eq!(
        s.record_attempt(fail("a3", "dl_a", &ea, 3))
            .await
            .unwrap()
            .failures,
        3
    );

    // A manual retry of acme's e1 to d1 finds acme's pending delivery only.
    let (id, created) = s
        .add_delivery(new_delivery("dl_a_manual", &ea, "d1", at(9), None))
        .await
        .unwrap();
    assert_eq!((id.as_str(), created), ("dl_a", false));

    // Disabling acme's d1 cancels only acme's deliveries.
    let mut a_off = a.clone();
    a_off.disabled_at = Some(at(10));
    a_off.updated_at = at(10);
    s.update_destination(&a_off, true, at(10)).await.unwrap();
    assert_eq!(s.pending_count().await.unwrap(), 1);
    assert!(
        s.get_destination("globex", "d1")
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_none()
    );
    // Events listed by destination stay in their tenant.
    let q = EventQuery {
        tenant_ids: vec!["globex".into()],
        destination_ids: vec!["d1".into()],
        ..EventQuery::default()
    };
    let listed = s.list_events(&q).await.unwrap().models;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event, eb);
    // Deleting globex's d1 leaves acme's.
    assert!(s.delete_destination("globex", "d1", at(11)).await.unwrap());
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert!(s.get_destination("acme", "d1").await.unwrap().is_some());
    assert!(s.get_destination("globex", "d1").await.unwrap().is_none());
}

async fn backlog_and_pending_count(s: Arc<dyn Store>) {
    let e1 = event("e1", "acme", "t", at(0));
    let ids = publish(&*s, &e1, &["d1", "d2"], at(0), None).await;
    publish(&*s, &event("e2", "acme", "t", at(0)), &["d1"], at(0), None).await;
    publish(&*s, &event("e3", "acme", "t", at(7)), &["d3"], at(7), None).await;
    // Another tenant's destination with the same id is a destination of its own.
    publish(&*s, &event("b1", "beta", "t", at(3)), &["d1"], at(3), None).await;
    s.record_attempt(attempt_record(
        "a1",
        &ids[0],
        &e1,
        "d1",
        1,
        false,
        at(1),
        (DeliveryStatus::Pending, at(60)),
    ))
    .await
    .unwrap();
    let mut b = s.backlog().await.unwrap();
    b.per_destination.sort();
    assert_eq!(
        b.per_destination
            .iter()
            .map(|p| (p.tenant_id.as_str(), p.destination_id.as_str(), p.pending))
            .collect::<Vec<_>>(),
        [
            ("acme", "d1", 2),
            ("acme", "d2", 1),
            ("acme", "d3", 1),
            ("beta", "d1", 1)
        ]
    );
    // The oldest pending delivery per destination: its creation time, not its due time.
    assert_eq!(
        b.per_destination
            .iter()
            .map(|p| (p.destination_id.as_str(), p.oldest))
            .collect::<Vec<_>>(),
        [("d1", at(0)), ("d2", at(0)), ("d3", at(7)), ("d1", at(3))]
    );
    assert_eq!(b.retries, 1);
    assert_eq!(s.pending_count().await.unwrap(), 5);
}

// ----- listing -----

async fn event_pagination_both_directions(s: Arc<dyn Store>) {
    // Nine events; two share a time, so the id breaks the tie.
    let times = [0, 1, 2, 3, 3, 5, 6, 7, 8];
    for (i, t) in times.iter().enumerate() {
        publish(
            &*s,
            &event(&format!("e{i}"), "acme", "t", at(*t)),
            &["d1"],
            at(0),
            None,
        )
        .await;
    }
    let all_desc = ["e8", "e7", "e6", "e5", "e4", "e3", "e2", "e1", "e0"];
    let q = |page: PageRequest| EventQuery {
        tenant_ids: vec!["acme".into()],
        page,
        ..Default::default()
    };
    let ids = |p: &Page<StoredEvent>| {
        p.models
            .iter()
            .map(|e| e.event.id.clone())
            .collect::<Vec<_>>()
    };

    // Forward through every page.
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let p = s
            .list_events(&q(PageRequest {
                limit: 4,
                dir: Dir::Desc,
                cursor: cursor.clone().map(Cursor::Next),
            }))
            .await
            .unwrap();
        assert_eq!(p.prev.is_some(), cursor.is_some());
        let next = p.next.clone();
        pages.push(p);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3);
    let flat: Vec<String> = pages.iter().flat_map(ids).collect();
    assert_eq!(flat, all_desc);

    // And back from the last page.
    let back = s
        .list_events(&q(PageRequest {
            limit: 4,
            dir: Dir::Desc,
            cursor: Some(Cursor::Prev(pages[2].prev.clone().unwrap())),
        }))
        .await
        .unwrap();
    assert_eq!(ids(&back), ids(&pages[1]));
    assert!(back.next.is_some());
    let first = s
        .list_events(&q(PageRequest {
            limit: 4,
            dir: Dir::Desc,
            cursor: Some(Cursor::Prev(back.prev.clone().unwrap())),
        }))
        .await
        .unwrap();
    assert_eq!(ids(&first), ids(&pages[0]));
    assert!(first.prev.is_none(), "nothing before the first page");

    // Ascending.
    let asc = s
        .list_events(&q(PageRequest {
            limit: 5,
            dir: Dir::Asc,
            cursor: None,
        }))
        .await
        .unwrap();
    assert_eq!(ids(&asc), ["e0", "e1", "e2", "e3", "e4"]);
    let asc2 = s
        .list_events(&q(PageRequest {
            limit: 5,
            dir: Dir::Asc,
            cursor: Some(Cursor::Next(asc.next.clone().unwrap())),
        }))
        .await
        .unwrap();
    assert_eq!(ids(&asc2), ["e5", "e6", "e7", "e8"]);
    assert!(asc2.next.is_none());

    // Filters: time range, topic, ids, destination.
    let ranged = s
        .list_events(&EventQuery {
            time: TimeRange {
                gte: Some(at(3)),
                lt: Some(at(6)),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&ranged), ["e5", "e4", "e3"]);
    let by_dest = s
        .list_events(&EventQuery {
            destination_ids: vec!["d1".into()],
            ids: vec!["e1".into(), "e2".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&by_dest), ["e2", "e1"]);
    let none = s
        .list_events(&EventQuery {
            destination_ids: vec!["d9".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.models.is_empty());

    // A bad cursor is the caller's error.
    let bad = s
        .list_events(&q(PageRequest {
            limit: 4,
            dir: Dir::Desc,
            cursor: Some(Cursor::Next("!!".into())),
        }))
        .await;
    assert!(matches!(bad, Err(StoreError::BadCursor)));
}

async fn attempt_and_tenant_pagination(s: Arc<dyn Store>) {
    let e = event("e1", "acme", "orders.created", at(0));
    let [dl] = <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(0), None).await).unwrap();
    for n in 1..=5u32 {
        let ok = n == 5;
        let st = if ok {
            DeliveryStatus::Success
        } else {
            DeliveryStatus::Pending
        };
        s.record_attempt(attempt_record(
            &format!("a{n}"),
            &dl,
            &e,
            "d1",
            n,
            ok,
            at(n as i64),
            (st, at(10)),
        ))
        .await
        .unwrap();
    }
    let p = s
        .list_attempts(&AttemptQuery {
            destination_ids: vec!["d1".into()],
            page: PageRequest {
                limit: 2,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        p.models.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a5", "a4"]
    );
    let p2 = s
        .list_attempts(&AttemptQuery {
            destination_ids: vec!["d1".into()],
            page: PageRequest {
                limit: 2,
                cursor: Some(Cursor::Next(p.next.clone().unwrap())),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        p2.models.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a3", "a2"]
    );
    let failed = s
        .list_attempts(&AttemptQuery {
            status: Some(herald_core::AttemptStatus::Failed),
            topics: vec!["orders.created".into()],
            destination_types: vec!["webhook".into()],
            time: TimeRange {
                gt: Some(at(1)),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        failed
            .models
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["a4", "a3", "a2"]
    );
    assert_eq!(
        failed.models[0].response_data,
        Some(serde_json::json!({"status": 500, "body": "b"}))
    );

    // Tenants, backwards.
    for i in 0..5 {
        s.upsert_tenant(&format!("t{i}"), None, at(i))
            .await
            .unwrap();
    }
    let q = |cursor| TenantQuery {
        ids: vec![],
        page: PageRequest {
            limit: 2,
            dir: Dir::Asc,
            cursor,
        },
    };
    let (p1, _) = s.list_tenants(&q(None)).await.unwrap();
    let (p2, _) = s
        .list_tenants(&q(Some(Cursor::Next(p1.next.clone().unwrap()))))
        .await
        .unwrap();
    let (back, _) = s
        .list_tenants(&q(Some(Cursor::Prev(p2.prev.clone().unwrap()))))
        .await
        .unwrap();
    let ids = |p: &Page<herald_core::TenantSummary>| {
        p.models
            .iter()
            .map(|t| t.tenant.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&p1), ["t0", "t1"]);
    assert_eq!(ids(&p2), ["t2", "t3"]);
    assert_eq!(ids(&back), ids(&p1));
}

async fn tenant_isolation(s: Arc<dyn Store>) {
    for t in ["acme", "globex"] {
        s.upsert_tenant(t, None, at(0)).await.unwrap();
        s.insert_destination(&destination(&format!("{t}_d"), t, &["*"], at(0)))
            .await
            .unwrap();
        let e = event(&format!("{t}_e"), t, "t", at(1));
        let ids = publish(&*s, &e, &[&format!("{t}_d")], at(1), None).await;
        s.record_attempt(attempt_record(
            &format!("{t}_a"),
            &ids[0],
            &e,
            &format!("{t}_d"),
            1,
            true,
            at(2),
            (DeliveryStatus::Success, at(2)),
        ))
        .await
        .unwrap();
    }
    assert!(
        s.get_destination("acme", "globex_d")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !s.delete_destination("acme", "globex_d", at(3))
            .await
            .unwrap()
    );
    assert_eq!(s.list_destinations("acme").await.unwrap().len(), 1);
    let events = s
        .list_events(&EventQuery {
            tenant_ids: vec!["acme".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.models.len(), 1);
    assert_eq!(events.models[0].event.tenant_id, "acme");
    let attempts = s
        .list_attempts(&AttemptQuery {
            tenant_ids: vec!["globex".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        attempts
            .models
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["globex_a"]
    );
    // Deleting one tenant leaves the other whole.
    assert!(s.delete_tenant("acme", at(4)).await.unwrap());
    assert!(
        s.get_destination("globex", "globex_d")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.list_all_destinations().await.unwrap().len(), 1);
}

// ----- metrics -----

fn metrics_query(start: Timestamp, end: Timestamp, bucket: Bucket, dims: &[&str]) -> MetricsQuery {
    MetricsQuery {
        start,
        end,
        bucket,
        dimensions: dims.iter().map(|d| d.to_string()).collect(),
        filters: Default::default(),
        row_limit: 100,
    }
}

async fn event_metrics_buckets_dimensions_filters(s: Arc<dyn Store>) {
    // 1_700_000_000 is 2023-11-14T22:13:20Z.
    let plan = [
        ("e1", "acme", "b.topic", 0, vec!["d1", "d2"]),
        ("e2", "acme", "a.topic", 10, vec!["d1"]),
        ("e3", "globex", "a.topic", 3600, vec!["d3"]),
        ("e4", "acme", "a.topic", 40 * 86400, vec![]),
    ];
    for (id, tenant, topic, t, dests) in &plan {
        let e = event(id, tenant, topic, at(*t));
        publish(&*s, &e, dests, at(*t), None).await;
    }
    let start = at(-10);
    let end = at(50 * 86400);
    let rows = s
        .event_metrics(&metrics_query(start, end, Bucket::None, &["topic"]))
        .await
        .unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.dimensions[0].1.clone(), r.count))
        .collect();
    assert_eq!(
        got,
        [("a.topic".to_string(), 3), ("b.topic".to_string(), 1)]
    );
    assert!(rows.iter().all(|r| r.bucket.is_none()));

    // Hourly buckets, aligned to the epoch.
    let rows = s
        .event_metrics(&metrics_query(start, at(7200), Bucket::Seconds(3600), &[]))
        .await
        .unwrap();
    let got: Vec<_> = rows.iter().map(|r| (r.bucket.unwrap(), r.count)).collect();
    let hour = |t: i64| Timestamp::from_second((1_700_000_000 + t) / 3600 * 3600).unwrap();
    assert_eq!(got, [(hour(0), 2), (hour(3600), 1)]);

    // Calendar months.
    let rows = s
        .event_metrics(&metrics_query(
            start,
            end,
            Bucket::Months(1),
            &["tenant_id"],
        ))
        .await
        .unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.bucket.unwrap().to_string(),
                r.dimensions[0].1.clone(),
                r.count,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("2023-11-01T00:00:00Z".to_string(), "acme".to_string(), 2),
            ("2023-11-01T00:00:00Z".to_string(), "globex".to_string(), 1),
            ("2023-12-01T00:00:00Z".to_string(), "acme".to_string(), 1),
        ]
    );

    // Per destination: one row per routed (event, destination).
    let mut q = metrics_query(start, end, Bucket::None, &["destination_id"]);
    q.filters.insert("tenant_id".into(), vec!["acme".into()]);
    let rows = s.event_metrics(&q).await.unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.dimensions[0].1.clone(), r.count))
        .collect();
    assert_eq!(got, [("d1".to_string(), 2), ("d2".to_string(), 1)]);

    // Filters and the row limit.
    let mut q = metrics_query(start, end, Bucket::None, &[]);
    q.filters.insert("topic".into(), vec!["a.topic".into()]);
    q.filters.insert("tenant_id".into(), vec!["acme".into()]);
    assert_eq!(s.event_metrics(&q).await.unwrap()[0].count, 2);
    let mut q = metrics_query(start, end, Bucket::Seconds(1), &[]);
    q.row_limit = 2;
    assert_eq!(
        s.event_metrics(&q).await.unwrap().len(),
        3,
        "row_limit + 1 tells the caller there is more"
    );
}

async fn attempt_metrics_measures(s: Arc<dyn Store>) {
    let e = event("e1", "acme", "t", at(0));
    let [dl] = <[String; 1]>::try_from(publish(&*s, &e, &["d1"], at(0), None).await).unwrap();
    // 1: failed, 2: failed, 3: success, then a manual attempt 4: success.
    for n in 1..=4u32 {
        let ok = n >= 3;
        let mut rec = attempt_record(
            &format!("a{n}"),
            &dl,
            &e,
            "d1",
            n,
            ok,
            at(n as i64),
            (DeliveryStatus::Pending, at(10)),
        );
        rec.attempt.manual = n == 4;
        s.record_attempt(rec).await.unwrap();
    }
    let rows = s
        .attempt_metrics(&metrics_query(at(0), at(100), Bucket::None, &[]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (
            r.count,
            r.successful,
            r.failed,
            r.first_attempts,
            r.retries,
            r.manual,
            r.attempt_number_sum
        ),
        (4, 2, 2, 1, 2, 1, 10)
    );
    let rows = s
        .attempt_metrics(&metrics_query(
            at(0),
            at(100),
            Bucket::None,
            &["manual", "status"],
        ))
        .await
        .unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.dimensions[0].1.clone(),
                r.dimensions[1].1.clone(),
                r.count,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("0".to_string(), "failed".to_string(), 2),
            ("0".to_string(), "success".to_string(), 1),
            ("1".to_string(), "success".to_string(), 1),
        ]
    );
    let mut q = metrics_query(at(0), at(100), Bucket::None, &["attempt_number"]);
    q.filters.insert("manual".into(), vec!["0".into()]);
    q.filters
        .insert("destination_type".into(), vec!["webhook".into()]);
    let rows = s.attempt_metrics(&q).await.unwrap();
    let got: BTreeSet<_> = rows.iter().map(|r| r.dimensions[0].1.clone()).collect();
    assert_eq!(got, ["1", "2", "3"].map(String::from).into_iter().collect());
}

/// Rows a metrics test expects, as the model in
/// [`metrics_count_rows_through_roll_up_purge_and_replay`] keeps them: time in microseconds
/// and every dimension's value.
#[derive(Default)]
struct MetricsModel {
    events: Vec<(i64, BTreeMap<&'static str, String>)>,
    routed: Vec<(i64, BTreeMap<&'static str, String>)>,
    attempts: Vec<(i64, BTreeMap<&'static str, String>)>,
}

impl MetricsModel {
    fn event(&mut self, e: &Event, dests: &[&str]) {
        let base: BTreeMap<&'static str, String> = [
            ("tenant_id", e.tenant_id.clone()),
            ("topic", e.topic.clone()),
            // Not a dimension: which event the row stands for.
            ("event", e.id.clone()),
        ]
        .into();
        let t = e.time.as_microsecond();
        for d in dests {
            let mut dims = base.clone();
            dims.insert("destination_id", d.to_string());
            self.routed.push((t, dims));
        }
        self.events.push((t, base));
    }

    fn attempt(&mut self, r: &AttemptRecord) {
        let a = &r.attempt;
        let dims: BTreeMap<&'static str, String> = [
            ("tenant_id", a.tenant_id.clone()),
            ("destination_id", a.destination_id.clone()),
            ("destination_type", a.destination_type.clone()),
            ("topic", a.topic.clone()),
            ("status", a.status.as_str().to_string()),
            ("code", a.code.clone()),
            ("manual", (a.manual as u8).to_string()),
            ("attempt_number", a.attempt_number.to_string()),
        ]
        .into();
        self.attempts.push((a.time.as_microsecond(), dims));
    }

    /// The groups `q` should give, computed by hand: (bucket, dimension values, count, and for
    /// attempts successful, failed, first attempts, retries, manual, attempt number sum).
    fn expect(
        &self,
        rows: &[(i64, BTreeMap<&'static str, String>)],
        q: &MetricsQuery,
    ) -> Vec<(Option<Timestamp>, Vec<String>, [u64; 7])> {
        let mut groups: BTreeMap<(Option<Timestamp>, Vec<String>), [u64; 7]> = BTreeMap::new();
        for (t, dims) in rows {
            if *t < q.start.as_microsecond() || *t >= q.end.as_microsecond() {
                continue;
            }
            if q.filters
                .iter()
                .any(|(k, vs)| !vs.contains(&dims[k.as_str()]))
            {
                continue;
            }
            // Both stores bucket by integer division (towards zero).
            let secs = t / 1_000_000;
            let bucket = match q.bucket {
                Bucket::None => None,
                Bucket::Seconds(n) => Some(Timestamp::from_second(secs / n * n).unwrap()),
                Bucket::Months(n) => {
                    let d = Timestamp::from_second(secs)
                        .unwrap()
                        .to_zoned(jiff::tz::TimeZone::UTC);
                    let m = (d.year() as i64 * 12 + d.month() as i64 - 1) / n * n;
                    Some(
                        jiff::civil::date((m / 12) as i16, (m % 12 + 1) as i8, 1)
                            .to_zoned(jiff::tz::TimeZone::UTC)
                            .unwrap()
                            .timestamp(),
                    )
                }
            };
            let key = (
                bucket,
                q.dimensions
                    .iter()
                    .map(|d| dims[d.as_str()].clone())
                    .collect(),
            );
            let g = groups.entry(key).or_default();
            g[0] += 1;
            if let Some(status) = dims.get("status") {
                let number: u64 = dims["attempt_number"].parse().unwrap();
                let manual = dims["manual"] == "1";
                g[1] += (status == "success") as u64;
                g[2] += (status == "failed") as u64;
                g[3] += (number == 1) as u64;
                g[4] += (number > 1 && !manual) as u64;
                g[5] += manual as u64;
                g[6] += number;
            }
        }
        // A query that does not group answers one row, also when it counts nothing.
        if q.bucket == Bucket::None && q.dimensions.is_empty() && groups.is_empty() {
            groups.insert((None, Vec::new()), [0; 7]);
        }
        groups
            .into_iter()
            .take(q.row_limit + 1)
            .map(|((b, d), c)| (b, d, c))
            .collect()
    }
}

fn metrics_groups(rows: Vec<MetricsRow>) -> Vec<(Option<Timestamp>, Vec<String>, [u64; 7])> {
    rows.into_iter()
        .map(|r| {
            (
                r.bucket,
                r.dimensions.into_iter().map(|(_, v)| v).collect(),
                [
                    r.count,
                    r.successful,
                    r.failed,
                    r.first_attempts,
                    r.retries,
                    r.manual,
                    r.attempt_number_sum,
                ],
            )
        })
        .collect()
}

/// Asserts every query of a fixed set answers as the model says.
async fn metrics_match(s: &dyn Store, m: &MetricsModel, phase: &str) {
    let ranges = [
        // Everything, from before 1970.
        (Timestamp::from_second(-200).unwrap(), at(20_000)),
        // Partial minutes at both ends (at(0) is 20 s into a minute).
        (at(5), at(301)),
        // Whole minutes only.
        (at(-20), at(340)),
        // Inside one minute.
        (at(41), at(59)),
        // Fractions of a second at both ends.
        (ms(4_700), ms(299_300)),
        // Inside one second.
        (ms(109_100), ms(109_900)),
        // Around the attempts, with fractions at the ends.
        (ms(1_004_500), ms(1_110_700)),
        (ms(6_000_200), ms(6_101_500)),
    ];
    let buckets = [
        Bucket::None,
        Bucket::Seconds(60),
        Bucket::Seconds(3600),
        Bucket::Seconds(30),
        Bucket::Months(1),
    ];
    let with = |dims: &[&str], filters: &[(&str, &str)]| {
        (
            dims.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            filters
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    let events = [
        with(&[], &[]),
        with(&["topic"], &[("tenant_id", "acme")]),
        with(&["tenant_id", "topic"], &[]),
    ];
    let routed = [
        with(&["destination_id"], &[]),
        with(&["topic"], &[("destination_id", "d2")]),
        with(&["destination_id", "tenant_id"], &[("topic", "a")]),
    ];
    let attempts = [
        with(&[], &[]),
        with(&["status"], &[("tenant_id", "globex")]),
        with(&["attempt_number", "manual"], &[]),
        with(&["code", "destination_type"], &[("status", "failed")]),
        with(&["topic"], &[("manual", "1")]),
    ];
    for (start, end) in ranges {
        for bucket in buckets {
            for (kind, sets) in [
                ("events", &events[..]),
                ("routed", &routed[..]),
                ("attempts", &attempts[..]),
            ] {
                for (dims, filters) in sets {
                    for row_limit in [1000, 2] {
                        let q = MetricsQuery {
                            start,
                            end,
                            bucket,
                            dimensions: dims.clone(),
                            filters: filters.clone(),
                            row_limit,
                        };
                        let (got, want) = match kind {
                            "attempts" => (s.attempt_metrics(&q).await, m.expect(&m.attempts, &q)),
                            "routed" => (s.event_metrics(&q).await, m.expect(&m.routed, &q)),
                            _ => (s.event_metrics(&q).await, m.expect(&m.events, &q)),
                        };
                        assert_eq!(
                            metrics_groups(got.unwrap()),
                            want,
                            "{phase}: {kind} {start}..{end} {bucket:?} {dims:?} {filters:?} limit {row_limit}"
                        );
                    }
                }
            }
        }
    }
}

/// Rolls up in small batches until the store says it caught up.
async fn roll_up_all(s: &dyn Store) {
    for _ in 0..1000 {
        if s.roll_up_metrics(7).await.unwrap() == 0 {
            return;
        }
    }
    panic!("the roll-up never caught up");
}

/// [`at`] in milliseconds.
fn ms(millis: i64) -> Timestamp {
    at(0) + jiff::SignedDuration::from_millis(millis)
}

async fn metrics_count_rows_through_roll_up_purge_and_replay(s: Arc<dyn Store>) {
    let mut m = MetricsModel::default();
    // Old events, published at 0 and finished by 1,200: times over six minutes, one before
    // 1970; one or two destinations; a retry, then success or failure for good.
    for i in 0..25i64 {
        let tenant = ["acme", "globex"][i as usize % 2];
        let topic = ["a", "b", "c"][i as usize % 3];
        // Every third event inside a second, not on it.
        let time = if i == 24 {
            Timestamp::from_second(-90).unwrap()
        } else if i % 3 == 0 {
            ms(i * 17_000 - 29_500)
        } else {
            at(i * 17 - 30)
        };
        let e = event(&format!("old{i}"), tenant, topic, time);
        let dests: &[&str] = if i % 4 == 0 { &["d1", "d2"] } else { &["d1"] };
        let dls = publish(&*s, &e, dests, at(0), None).await;
        m.event(&e, dests);
        for (dl, d) in dls.iter().zip(dests) {
            let ok = i % 5 != 0;
            let first = attempt_record(
                &format!("{dl}_1"),
                dl,
                &e,
                d,
                1,
                false,
                ms(1_000_000 + i * 1_300),
                (DeliveryStatus::Pending, at(1050)),
            );
            let end = if ok {
                DeliveryStatus::Success
            } else {
                DeliveryStatus::Failed
            };
            let second = attempt_record(
                &format!("{dl}_2"),
                dl,
                &e,
                d,
                2,
                ok,
                at(1100 + i),
                (end, at(1100 + i)),
            );
            for r in [first, second] {
                s.record_attempt(r.clone()).await.unwrap();
                m.attempt(&r);
            }
        }
    }
    metrics_match(&*s, &m, "rows only").await;
    s.roll_up_metrics(5).await.unwrap();
    metrics_match(&*s, &m, "partly rolled up").await;
    roll_up_all(&*s).await;
    metrics_match(&*s, &m, "rolled up").await;

    // New events, published at 6,000, sharing minutes with old ones; not rolled up yet.
    let mut new = Vec::new();
    for i in 0..12i64 {
        let e = event(
            &format!("new{i}"),
            ["acme", "globex"][i as usize % 2],
            ["a", "b"][i as usize % 2],
            ms(i * 23_000 + 50_000 + (i % 2) * 250),
        );
        let [dl] =
            <[String; 1]>::try_from(publish(&*s, &e, &["d2"], at(6000), None).await).unwrap();
        m.event(&e, &["d2"]);
        let r = attempt_record(
            &format!("{dl}_1"),
            &dl,
            &e,
            "d2",
            1,
            true,
            ms(6_000_000 + i * 700),
            (DeliveryStatus::Success, ms(6_000_000 + i * 700)),
        );
        s.record_attempt(r.clone()).await.unwrap();
        m.attempt(&r);
        new.push(e);
    }
    // A manual retry of the first, failed for good.
    let mut manual = new_delivery("manual0", &new[0], "d2", at(6100), None);
    manual.delivery.manual = true;
    assert_eq!(
        s.add_delivery(manual).await.unwrap(),
        ("manual0".to_string(), true)
    );
    let mut r = attempt_record(
        "manual0_2",
        "manual0",
        &new[0],
        "d2",
        2,
        false,
        at(6101),
        (DeliveryStatus::Failed, at(6101)),
    );
    r.attempt.manual = true;
    s.record_attempt(r.clone()).await.unwrap();
    m.attempt(&r);
    metrics_match(&*s, &m, "rolled up, new rows not").await;
    roll_up_all(&*s).await;
    metrics_match(&*s, &m, "all rolled up").await;

    // Retention takes the old events, their deliveries and attempts.
    let mut purged = 0;
    loop {
        let st = s.purge(at(5000), at(5000), 4).await.unwrap();
        if st.total() == 0 {
            break;
        }
        purged += st.total();
    }
    assert_eq!(purged, 25 + 32 + 64, "events, deliveries and attempts");
    m.events.retain(|(_, d)| !d["event"].starts_with("old"));
    m.routed.retain(|(_, d)| !d["event"].starts_with("old"));
    m.attempts.retain(|(t, _)| *t >= at(5000).as_microsecond());
    metrics_match(&*s, &m, "purged").await;

    // Replaying the failed manual delivery makes it a routed one.
    let q = ReplayQuery {
        tenant_id: new[0].tenant_id.clone(),
        destination_id: "d2".into(),
        ..Default::default()
    };
    assert_eq!(s.replay(&q, at(7000)).await.unwrap(), 1);
    let dims: BTreeMap<&'static str, String> = [
        ("tenant_id", new[0].tenant_id.clone()),
        ("topic", new[0].topic.clone()),
        ("event", new[0].id.clone()),
        ("destination_id", "d2".into()),
    ]
    .into();
    m.routed.push((new[0].time.as_microsecond(), dims));
    metrics_match(&*s, &m, "replayed").await;
    roll_up_all(&*s).await;
    metrics_match(&*s, &m, "replayed and rolled up").await;
}

// ----- settings -----

async fn settings_are_created_once(s: Arc<dyn Store>) {
    assert_eq!(
        s.setting_or_insert("api_key", "first").await.unwrap(),
        ("first".to_string(), true)
    );
    assert_eq!(
        s.setting_or_insert("api_key", "second").await.unwrap(),
        ("first".to_string(), false)
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.setting_or_insert("jwt", &format!("v{i}")).await.unwrap()
        }));
    }
    let mut values = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (v, c) = t.await.unwrap();
        values.insert(v);
        created += c as usize;
    }
    assert_eq!(values.len(), 1, "every caller sees the same value");
    assert_eq!(created, 1);
}

// ----- batch import -----

async fn import_destinations_is_all_or_nothing(s: Arc<dyn Store>) {
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    let existing = destination("d0", "acme", &["a"], at(1));
    s.insert_destination(&existing).await.unwrap();
    let ids = |v: Vec<herald_core::Destination>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();

    // An error item, or a conflict, anywhere in the batch leaves everything as it was.
    let mut changed = existing.clone();
    changed.topics = Topics::List(vec!["b".into()]);
    let rows: Vec<Result<(herald_core::Destination, bool)>> = vec![
        Ok((destination("d1", "acme", &["a"], at(2)), true)),
        Ok((changed.clone(), false)),
        Err(StoreError::Refused("line 3".into())),
    ];
    assert!(matches!(
        s.import_destinations(Box::new(rows.into_iter())).await,
        Err(StoreError::Refused(_))
    ));
    let rows: Vec<Result<(herald_core::Destination, bool)>> = vec![
        Ok((destination("d1", "acme", &["a"], at(2)), true)),
        Ok((changed.clone(), false)),
        Ok((destination("d0", "acme", &["a"], at(3)), true)),
    ];
    assert!(matches!(
        s.import_destinations(Box::new(rows.into_iter())).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(ids(s.list_destinations("acme").await.unwrap()), ["d0"]);
    assert_eq!(
        s.get_destination("acme", "d0").await.unwrap(),
        Some(existing)
    );

    // A good batch applies whole.
    let many: Vec<Result<(herald_core::Destination, bool)>> = (1..=500)
        .map(|i| {
            Ok((
                destination(&format!("d{i}"), "acme", &["a"], at(10 + i)),
                true,
            ))
        })
        .chain(std::iter::once(Ok((changed.clone(), false))))
        .collect();
    assert_eq!(
        s.import_destinations(Box::new(many.into_iter()))
            .await
            .unwrap(),
        501
    );
    assert_eq!(s.list_destinations("acme").await.unwrap().len(), 501);
    assert_eq!(
        s.get_destination("acme", "d0").await.unwrap(),
        Some(changed)
    );
    assert!(s.get_destination("acme", "d500").await.unwrap().is_some());
}

// ----- expiry -----

async fn expiry_round_trips_and_each_notice_is_claimed_once(s: Arc<dyn Store>) {
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    let mut d = destination("dx", "acme", &["*"], at(1));
    d.expires_at = Some(at(100));
    s.insert_destination(&d).await.unwrap();
    assert_eq!(
        s.get_destination("acme", "dx").await.unwrap(),
        Some(d.clone())
    );
    let ev = event("e1", "acme", "t", at(2));
    assert_eq!(
        s.publish(
            &ev,
            &["dx".into()],
            vec![new_delivery("dl1", &ev, "dx", at(2), None)],
            at(0),
            at(2)
        )
        .await
        .unwrap(),
        PublishOutcome::Accepted
    );

    // A notice for another expiry than the stored one is never claimed.
    assert!(
        !s.mark_expiry_notice("acme", "dx", at(99), ExpiryLevel::Expiring, at(50))
            .await
            .unwrap()
    );
    // Concurrent claimers (nodes): exactly one wins each level.
    for level in [ExpiryLevel::Expiring, ExpiryLevel::Expired] {
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.mark_expiry_notice("acme", "dx", at(100), level, at(100))
                    .await
                    .unwrap()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1, "{level:?}");
    }
    // Claiming `expired` cancelled the pending delivery; `expiring` cannot come after it.
    assert_eq!(s.pending_count().await.unwrap(), 0);
    assert!(
        !s.mark_expiry_notice("acme", "dx", at(100), ExpiryLevel::Expiring, at(101))
            .await
            .unwrap()
    );

    // A renewal (new expires_at) starts a new round; other changes do not.
    d.topics = Topics::List(vec!["a".into()]);
    s.update_destination(&d, false, at(102)).await.unwrap();
    assert!(
        !s.mark_expiry_notice("acme", "dx", at(100), ExpiryLevel::Expired, at(102))
            .await
            .unwrap()
    );
    d.expires_at = Some(at(500));
    s.update_destination(&d, false, at(103)).await.unwrap();
    assert_eq!(
        s.get_destination("acme", "dx")
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        Some(at(500))
    );
    assert!(
        s.mark_expiry_notice("acme", "dx", at(500), ExpiryLevel::Expiring, at(450))
            .await
            .unwrap()
    );
    assert!(
        !s.mark_expiry_notice("acme", "dx", at(500), ExpiryLevel::Expiring, at(451))
            .await
            .unwrap()
    );
    d.expires_at = None;
    s.update_destination(&d, false, at(104)).await.unwrap();
    assert_eq!(
        s.get_destination("acme", "dx")
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        None
    );
}

// ----- API keys -----

fn api_key(id: &str, created: Timestamp) -> ApiKey {
    ApiKey {
        id: id.into(),
        name: format!("name of {id}"),
        scopes: vec!["read".into(), "publish".into()],
        tenant_id: None,
        secret_hash: format!("{id:0>64}"),
        created_at: created,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

async fn api_keys_insert_list_revoke_touch(s: Arc<dyn Store>) {
    let mut a = api_key("key_a", at(10));
    a.tenant_id = Some("acme".into());
    a.expires_at = Some(at(1000));
    let b = api_key("key_b", at(20));
    s.insert_api_key(&b).await.unwrap();
    s.insert_api_key(&a).await.unwrap();
    assert!(matches!(
        s.insert_api_key(&a).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get_api_key("key_a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.get_api_key("nope").await.unwrap(), None);
    let ids: Vec<_> = s
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, ["key_a", "key_b"], "oldest first");

    // last_used_at only moves forward.
    s.touch_api_key("key_a", at(50)).await.unwrap();
    s.touch_api_key("key_a", at(40)).await.unwrap();
    assert_eq!(
        s.get_api_key("key_a").await.unwrap().unwrap().last_used_at,
        Some(at(50))
    );

    // Revocation happens once; a revoked key is still readable but no longer listed.
    assert!(s.revoke_api_key("key_a", at(60)).await.unwrap());
    assert!(!s.revoke_api_key("key_a", at(61)).await.unwrap());
    assert!(!s.revoke_api_key("nope", at(61)).await.unwrap());
    assert_eq!(
        s.get_api_key("key_a").await.unwrap().unwrap().revoked_at,
        Some(at(60))
    );
    let ids: Vec<_> = s
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, ["key_b"]);

    // Replacing writes the whole row, also over a revoked one.
    let mut boot = api_key("bootstrap", at(70));
    boot.scopes = vec!["admin".into()];
    s.replace_api_key(&boot).await.unwrap();
    boot.secret_hash = "f".repeat(64);
    boot.created_at = at(80);
    s.replace_api_key(&boot).await.unwrap();
    assert_eq!(s.get_api_key("bootstrap").await.unwrap(), Some(boot));
    let mut again = a.clone();
    again.secret_hash = "e".repeat(64);
    s.replace_api_key(&again).await.unwrap();
    assert_eq!(s.get_api_key("key_a").await.unwrap(), Some(again));
}

async fn nonces_are_used_once(s: Arc<dyn Store>) {
    assert!(s.use_nonce("n1", at(100), at(0)).await.unwrap());
    assert!(!s.use_nonce("n1", at(100), at(1)).await.unwrap());
    // Concurrent presenters: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.use_nonce("n2", at(100), at(2)).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap() as usize;
    }
    assert_eq!(wins, 1);
    // An expired nonce is forgotten (its token is refused by its expiry anyway).
    assert!(s.use_nonce("n1", at(300), at(200)).await.unwrap());
}

// ----- sealing at rest -----

/// Values that must never appear in a stored column.
const SECRETS: &[&str] = &[
    "jwt-plain-4040",
    "pw-in-userinfo-7731",
    "Bearer tok-header-5521",
    "amqp-pass-9920",
    "whsec_c2VhbGVkLXNpZ25pbmc=",
];

/// A destination whose config and credentials hold each of [`SECRETS`].
fn secret_destination(id: &str) -> herald_core::Destination {
    let mut d = destination(id, "acme", &["*"], at(1));
    d.config.insert(
        "url".into(),
        "https://user:pw-in-userinfo-7731@example.com/hook".into(),
    );
    d.config.insert(
        "custom_headers".into(),
        r#"{"Authorization":"Bearer tok-header-5521"}"#.into(),
    );
    d.credentials
        .insert("password".into(), "amqp-pass-9920".into());
    d.credentials
        .insert("secret".into(), "whsec_c2VhbGVkLXNpZ25pbmc=".into());
    d
}

fn ring(current: &herald_core::Secret, old: &[herald_core::Secret]) -> seal::Keyring {
    seal::Keyring::new("current", current, "old", old).unwrap()
}

fn assert_sealed_without_secrets(rows: &[(String, String, String)], key_id: &str) {
    assert!(!rows.is_empty());
    for (id, config, credentials) in rows {
        for col in [config, credentials] {
            assert!(
                col.starts_with(&format!("hs1:{key_id}:")),
                "{id}: not sealed with {key_id}: {col}"
            );
            for secret in SECRETS {
                assert!(!col.contains(secret), "{id}: {secret} stored in clear");
            }
        }
    }
}

async fn sealed_destinations_round_trip_and_hide_their_secrets(b: SealBackend) {
    let keys = test_keys();
    let opened = b.open(&keys).await.unwrap();
    let s = opened.dyn_store();
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    let d = secret_destination("d1");
    s.insert_destination(&d).await.unwrap();
    assert_eq!(
        s.get_destination("acme", "d1").await.unwrap(),
        Some(d.clone())
    );
    assert_eq!(s.list_destinations("acme").await.unwrap(), vec![d.clone()]);
    assert_eq!(s.list_all_destinations().await.unwrap(), vec![d.clone()]);
    assert_sealed_without_secrets(&b.raw().await, keys.current_id());

    let mut changed = d.clone();
    changed
        .credentials
        .insert("password".into(), "amqp-pass-9920-rotated".into());
    changed.updated_at = at(2);
    s.update_destination(&changed, false, at(2)).await.unwrap();
    assert_eq!(
        s.get_destination("acme", "d1").await.unwrap(),
        Some(changed)
    );
    assert_sealed_without_secrets(&b.raw().await, keys.current_id());
    let census = opened.census().await;
    assert_eq!((census.current, census.total()), (1, 1));

    // Generated settings (admin key, JWT secret) are sealed too.
    assert_eq!(
        s.setting_or_insert("api_key", "hrld_setting-secret-8080")
            .await
            .unwrap(),
        ("hrld_setting-secret-8080".to_string(), true)
    );
    assert_eq!(
        s.setting_or_insert("api_key", "other").await.unwrap(),
        ("hrld_setting-secret-8080".to_string(), false)
    );
    for (name, value) in b.raw_settings().await {
        assert!(value.starts_with("hs1:"), "{name} not sealed");
        assert!(!value.contains("setting-secret"), "{name} in clear");
    }
}

async fn a_wrong_key_is_refused_and_changes_nothing(b: SealBackend) {
    let keys = test_keys();
    {
        let s = b.open(&keys).await.unwrap().dyn_store();
        s.upsert_tenant("acme", None, at(0)).await.unwrap();
        s.insert_destination(&secret_destination("d1"))
            .await
            .unwrap();
        s.insert_destination(&secret_destination("d2"))
            .await
            .unwrap();
    }
    let before = b.raw().await;
    let wrong = test_keys();
    match b.open(&wrong).await {
        Err(StoreError::Unreadable {
            unreadable, total, ..
        }) => assert_eq!((unreadable, total), (2, 2)),
        Err(e) => panic!("expected Unreadable, got {e}"),
        Ok(_) => panic!("a store whose rows the key cannot open must be refused"),
    }
    let msg = match b.open(&wrong).await {
        Err(e) => e.to_string(),
        Ok(_) => unreachable!(),
    };
    assert!(
        msg.contains("2 of 2 destinations") && msg.contains("HERALD_ENCRYPTION_KEY"),
        "{msg}"
    );
    assert!(msg.contains(keys.current_id()), "names the key id: {msg}");
    assert_eq!(b.raw().await, before, "nothing was rewritten or dropped");
    // The right key still opens everything.
    let s = b.open(&keys).await.unwrap().dyn_store();
    assert_eq!(s.list_all_destinations().await.unwrap().len(), 2);
}

async fn old_keys_open_and_rekey_moves_every_row(b: SealBackend) {
    let (a, new) = (seal::Keyring::generate_key(), seal::Keyring::generate_key());
    let old_ring = ring(&a, &[]);
    let ids = ["d1", "d2", "d3", "d4", "d5"];
    {
        let s = b.open(&old_ring).await.unwrap().dyn_store();
        s.upsert_tenant("acme", None, at(0)).await.unwrap();
        for id in ids {
            s.insert_destination(&secret_destination(id)).await.unwrap();
        }
    }
    // Rotation: the new key is current, the old one opens.
    let rotating = ring(&new, std::slice::from_ref(&a));
    let opened = b.open(&rotating).await.unwrap();
    let s = opened.dyn_store();
    for id in ids {
        assert_eq!(
            s.get_destination("acme", id).await.unwrap(),
            Some(secret_destination(id)),
            "{id} opens with the old key"
        );
    }
    // A write seals with the new key.
    let mut d1 = secret_destination("d1");
    d1.updated_at = at(3);
    s.update_destination(&d1, false, at(3)).await.unwrap();
    let report = b.rekey(&rotating).await;
    assert_eq!(report.examined, 5);
    let census = opened.census().await;
    assert_eq!((census.current, census.old, census.total()), (5, 0, 5));
    assert_sealed_without_secrets(&b.raw().await, rotating.current_id());
    // The old key is no longer needed.
    drop(s);
    drop(opened);
    let s = b.open(&ring(&new, &[])).await.unwrap().dyn_store();
    assert_eq!(s.list_all_destinations().await.unwrap().len(), 5);
    assert_eq!(s.get_destination("acme", "d1").await.unwrap(), Some(d1));
}

async fn a_sealed_value_copied_to_another_row_does_not_open(b: SealBackend) {
    let keys = test_keys();
    let s = b.open(&keys).await.unwrap().dyn_store();
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    s.insert_destination(&secret_destination("d1"))
        .await
        .unwrap();
    s.insert_destination(&destination("d2", "acme", &["*"], at(1)))
        .await
        .unwrap();
    let rows = b.raw().await;
    let (d1, d2) = (&rows[0], &rows[1]);
    b.set_raw("d2", &d2.1, &d1.2).await;
    match s.get_destination("acme", "d2").await {
        Err(StoreError::Sealed { column, id, .. }) => {
            assert_eq!((column, id.as_str()), ("destinations.credentials", "d2"))
        }
        other => panic!("a copied credentials value must not open, got {other:?}"),
    }
    // The config column of d1 does not open as d1's credentials either.
    b.set_raw("d1", &d1.1, &d1.1).await;
    assert!(matches!(
        s.get_destination("acme", "d1").await,
        Err(StoreError::Sealed { .. })
    ));
}

async fn plaintext_rows_are_sealed_on_open(b: SealBackend) {
    let keys = test_keys();
    let d = secret_destination("d1");
    {
        let s = b.open(&keys).await.unwrap().dyn_store();
        s.upsert_tenant("acme", None, at(0)).await.unwrap();
        s.insert_destination(&d).await.unwrap();
        s.insert_destination(&secret_destination("d2"))
            .await
            .unwrap();
        s.setting_or_insert("jwt_secret", "x").await.unwrap();
    }
    // Rows as a Herald from before sealing wrote them.
    b.set_raw_setting("jwt_secret", "jwt-plain-4040").await;
    for id in ["d1", "d2"] {
        let d = secret_destination(id);
        b.set_raw(
            id,
            &serde_json::to_string(&d.config).unwrap(),
            &serde_json::to_string(&d.credentials).unwrap(),
        )
        .await;
    }
    assert!(b.raw().await[0].2.contains("amqp-pass-9920"));
    let opened = b.open(&keys).await.unwrap();
    let census = opened.census().await;
    assert_eq!((census.current, census.plaintext), (2, 0));
    assert_sealed_without_secrets(&b.raw().await, keys.current_id());
    let s = opened.dyn_store();
    assert_eq!(s.get_destination("acme", "d1").await.unwrap(), Some(d));
    assert_eq!(
        s.setting_or_insert("jwt_secret", "new").await.unwrap(),
        ("jwt-plain-4040".to_string(), false)
    );
    let settings = b.raw_settings().await;
    assert!(
        settings[0].1.starts_with("hs1:") && !settings[0].1.contains("jwt-plain"),
        "plaintext setting sealed"
    );
    drop(s);
    drop(opened);
    // Idempotent: opening again rewrites nothing.
    let before = b.raw().await;
    let again = b.open(&keys).await.unwrap();
    assert_eq!(b.raw().await, before);
    if let OpenedStore::Sqlite(s) = &again {
        assert_eq!(s.resealed().sealed_plaintext, 0);
    }
    // The embedded file (and its WAL) keep no copy of the old plaintext.
    if let Some(path) = b.sqlite_path() {
        for file in [path.clone(), path.with_extension("db-wal")] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            for secret in SECRETS {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} left in {}",
                    file.display()
                );
            }
        }
    }
}

/// PostgreSQL only (the embedded store re-seals at open, with no other writer): `rekey` beside
/// a node that changes the same destinations meanwhile never overwrites a change, and leaves
/// every row under the new key. (Without the compare-and-set, rows the node changed after the
/// rekey read them come back with their old content: this test fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rekey_never_overwrites_a_concurrent_update() {
    let b = SealBackend::postgres().await;
    let (a, new) = (seal::Keyring::generate_key(), seal::Keyring::generate_key());
    const N: usize = 200;
    const ROUNDS: usize = 1;
    {
        let s = b.open(&ring(&a, &[])).await.unwrap().dyn_store();
        s.upsert_tenant("acme", None, at(0)).await.unwrap();
        for i in 0..N {
            s.insert_destination(&secret_destination(&format!("d{i:03}")))
                .await
                .unwrap();
        }
    }
    let rotating = ring(&new, std::slice::from_ref(&a));
    let node = b.open(&rotating).await.unwrap().dyn_store();
    let rekeyer = match b.open(&rotating).await.unwrap() {
        OpenedStore::Postgres(s) => s,
        OpenedStore::Sqlite(_) => unreachable!(),
    };
    // The rekey reads all rows in one round and rewrites them one by one while the node
    // updates them, newest first: without compare-and-set it would write back stale text.
    let rekey = tokio::spawn(async move {
        let mut rounds = 0;
        let report = rekeyer.rekey(N, |_| rounds += 1).await.unwrap();
        (report, rounds, rekeyer)
    });
    for round in 0..ROUNDS {
        for i in (0..N).rev() {
            let mut d = secret_destination(&format!("d{i:03}"));
            d.credentials
                .insert("password".into(), format!("round-{round}"));
            node.update_destination(&d, false, at(2)).await.unwrap();
        }
    }
    let (report, rounds, rekeyer) = rekey.await.unwrap();
    assert_eq!(report.examined, N as u64);
    assert!(rounds >= 1);
    for i in 0..N {
        let d = node
            .get_destination("acme", &format!("d{i:03}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            d.credentials["password"],
            format!("round-{}", ROUNDS - 1),
            "d{i:03}: the last update survives the rekey"
        );
    }
    let census = rekeyer.seal_census().await.unwrap();
    assert_eq!((census.current, census.total()), (N as u64, N as u64));
}

// ----- operator events -----

use herald_core::operator::{self, FailurePolicy, OPERATOR_TENANT, topic as op_topic};

/// The operator events stored so far, oldest first, as (topic, data).
async fn operator_events(s: &dyn Store) -> Vec<(String, serde_json::Value)> {
    let page = s
        .list_events(&EventQuery {
            tenant_ids: vec![OPERATOR_TENANT.into()],
            page: PageRequest {
                limit: 100,
                dir: Dir::Asc,
                cursor: None,
            },
            ..Default::default()
        })
        .await
        .unwrap();
    page.models
        .into_iter()
        .map(|e| (e.event.topic, e.event.data))
        .collect()
}

/// A tenant destination `d1` of `acme`, one event published to it and claimed, and an
/// operator destination `ops` on `topics`. Returns the event and its delivery id.
async fn failing_setup(s: &dyn Store, topics: &[&str]) -> (herald_core::Event, String) {
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    s.insert_destination(&destination("d1", "acme", &["*"], at(0)))
        .await
        .unwrap();
    s.insert_destination(&destination("ops", OPERATOR_TENANT, topics, at(0)))
        .await
        .unwrap();
    let e = event("e1", "acme", "t", at(0));
    let [dl] = <[String; 1]>::try_from(publish(s, &e, &["d1"], at(0), None).await).unwrap();
    assert_eq!(s.claim_due(at(1), 10, at(60)).await.unwrap().len(), 1);
    (e, dl)
}

async fn operator_events_follow_the_failure_policy_in_the_attempt_transaction(s: Arc<dyn Store>) {
    let (e, dl) = failing_setup(&*s, &["alert.*"]).await;
    let policy = FailurePolicy {
        threshold: 2,
        auto_disable: true,
    };
    let mut rec = attempt_record(
        "att_1",
        &dl,
        &e,
        "d1",
        1,
        false,
        at(2),
        (DeliveryStatus::Pending, at(30)),
    );
    rec.effects.policy = policy;
    let r = s.record_attempt(rec).await.unwrap();
    assert_eq!(
        (r.failures, r.disabled, r.operator_deliveries),
        (1, false, 1),
        "50 % of 2 is one failure"
    );
    let mut rec = attempt_record(
        "att_2",
        &dl,
        &e,
        "d1",
        2,
        false,
        at(31),
        (DeliveryStatus::Failed, at(31)),
    );
    rec.effects.policy = policy;
    rec.effects.exhausted = Some(e.time);
    let r = s.record_attempt(rec).await.unwrap();
    assert_eq!(r.failures, 2);
    assert!(r.disabled, "100 % disables in the same transaction");
    assert_eq!(
        r.operator_deliveries, 3,
        "level, exhausted retries, disabled"
    );
    let d = s.get_destination("acme", "d1").await.unwrap().unwrap();
    assert_eq!(d.disabled_at, Some(at(31)));

    let got = operator_events(&*s).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            op_topic::CONSECUTIVE_FAILURE,
            op_topic::CONSECUTIVE_FAILURE,
            op_topic::EXHAUSTED_RETRIES,
            op_topic::DESTINATION_DISABLED
        ]
    );
    assert_eq!(got[0].1["data"]["progress"], 50);
    assert_eq!(got[1].1["data"]["progress"], 100);
    assert_eq!(got[1].1["data"]["will_disable"], true);
    assert_eq!(got[2].1["data"]["event"]["id"], "e1");
    assert_eq!(got[3].1["topic"], op_topic::DESTINATION_DISABLED);
    assert_eq!(got[3].1["tenant_id"], "acme");
    assert_eq!(got[3].1["data"]["destination"]["id"], "d1");
    assert_eq!(got[3].1["data"]["reason"], "too many consecutive failures");
    // The operator deliveries wait in the store, due now, for the engine's poller.
    let jobs = s.claim_due(at(32), 10, at(90)).await.unwrap();
    assert_eq!(jobs.len(), 4);
    assert!(
        jobs.iter()
            .all(|j| j.delivery.destination_id == "ops" && j.delivery.tenant_id == OPERATOR_TENANT)
    );
    // The operator destination's own failures count, but never alert about themselves.
    let j = &jobs[0];
    let mut rec = attempt_record(
        "att_ops",
        &j.delivery.id,
        &j.event,
        "ops",
        1,
        false,
        at(33),
        (DeliveryStatus::Pending, at(60)),
    );
    rec.effects.policy = FailurePolicy {
        threshold: 1,
        auto_disable: false,
    };
    rec.effects.attempt_events = true;
    let r = s.record_attempt(rec).await.unwrap();
    assert_eq!((r.failures, r.operator_deliveries), (1, 0));
    assert_eq!(operator_events(&*s).await.len(), 4);
}

async fn gone_disables_in_the_attempt_transaction(s: Arc<dyn Store>) {
    let (e, dl) = failing_setup(&*s, &["*"]).await;
    let mut rec = attempt_record(
        "att_1",
        &dl,
        &e,
        "d1",
        1,
        false,
        at(2),
        (DeliveryStatus::Failed, at(2)),
    );
    rec.effects.gone = true;
    let r = s.record_attempt(rec).await.unwrap();
    assert!(r.disabled);
    assert_eq!(r.operator_deliveries, 1);
    assert!(
        s.get_destination("acme", "d1")
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_some()
    );
    let got = operator_events(&*s).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, op_topic::DESTINATION_DISABLED);
    assert_eq!(got[0].1["data"]["reason"], "the receiver answered 410 Gone");
}

async fn attempt_events_are_written_only_for_subscribers(s: Arc<dyn Store>) {
    let (e, dl) = failing_setup(&*s, &[op_topic::ATTEMPT_FAILED]).await;
    let mut rec = attempt_record(
        "att_1",
        &dl,
        &e,
        "d1",
        1,
        false,
        at(2),
        (DeliveryStatus::Pending, at(3)),
    );
    rec.effects.attempt_events = true;
    assert_eq!(s.record_attempt(rec).await.unwrap().operator_deliveries, 1);
    assert_eq!(s.claim_due(at(3), 10, at(60)).await.unwrap().len(), 2);
    let mut ok = attempt_record(
        "att_2",
        &dl,
        &e,
        "d1",
        2,
        true,
        at(4),
        (DeliveryStatus::Success, at(4)),
    );
    ok.effects.attempt_events = true;
    assert_eq!(
        s.record_attempt(ok).await.unwrap().operator_deliveries,
        0,
        "nobody subscribes to attempt.success"
    );
    let got = operator_events(&*s).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, op_topic::ATTEMPT_FAILED);
    assert_eq!(got[0].1["data"]["attempt"]["id"], "att_1");
    assert_eq!(got[0].1["data"]["event_id"], "e1");
}

async fn emit_operator_event_routes_to_subscribers_once(s: Arc<dyn Store>) {
    s.insert_destination(&destination(
        "ops1",
        OPERATOR_TENANT,
        &["destination.*"],
        at(0),
    ))
    .await
    .unwrap();
    s.insert_destination(&destination("ops2", OPERATOR_TENANT, &["alert.*"], at(0)))
        .await
        .unwrap();
    let mut off = destination("ops3", OPERATOR_TENANT, &["*"], at(0));
    off.disabled_at = Some(at(0));
    s.insert_destination(&off).await.unwrap();
    let d = operator::DestinationRef::from(&destination("d1", "acme", &["*"], at(0)));
    let ev = operator::expiry(&d, at(100), false, at(10));
    assert_eq!(s.emit_operator_event(&ev, at(10)).await.unwrap(), 1);
    let again = operator::expiry(&d, at(100), false, at(11));
    assert_eq!(
        s.emit_operator_event(&again, at(11)).await.unwrap(),
        0,
        "the same notice from another node is written once"
    );
    let jobs = s.claim_due(at(12), 10, at(60)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].delivery.destination_id, "ops1");
    let stored = s.get_event(&ev.tenant_id, &ev.id).await.unwrap().unwrap();
    assert_eq!(stored.matched_destination_ids, ["ops1"]);
    assert_eq!(
        stored.event.data["data"]["expires_at"],
        "2023-11-14T22:15:00Z"
    );
    let nobody = operator::event(
        op_topic::ATTEMPT_SUCCESS,
        None,
        serde_json::json!({}),
        at(13),
    );
    assert_eq!(s.emit_operator_event(&nobody, at(13)).await.unwrap(), 0);
    assert!(
        s.get_event(&nobody.tenant_id, &nobody.id)
            .await
            .unwrap()
            .is_none(),
        "not written"
    );
}

async fn destination_changes_write_subscription_updates(s: Arc<dyn Store>) {
    s.insert_destination(&destination(
        "ops",
        OPERATOR_TENANT,
        &[op_topic::SUBSCRIPTION_UPDATED],
        at(0),
    ))
    .await
    .unwrap();
    s.upsert_tenant("acme", None, at(0)).await.unwrap();
    let mut d1 = destination("d1", "acme", &["a"], at(1));
    s.insert_destination(&d1).await.unwrap();
    d1.metadata = Some([("k".to_string(), "v".to_string())].into());
    d1.updated_at = at(2);
    s.update_destination(&d1, false, at(2)).await.unwrap();
    d1.topics = Topics::List(vec!["a".into(), "b".into()]);
    d1.updated_at = at(3);
    s.update_destination(&d1, false, at(3)).await.unwrap();
    assert!(s.delete_destination("acme", "d1", at(4)).await.unwrap());
    let got = operator_events(&*s).await;
    let seen: Vec<(serde_json::Value, serde_json::Value)> = got
        .iter()
        .map(|(t, d)| {
            assert_eq!(t, op_topic::SUBSCRIPTION_UPDATED);
            (
                d["data"]["topics"].clone(),
                d["data"]["destinations_count"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (serde_json::json!(["a"]), serde_json::json!(1)),
            (serde_json::json!(["a", "b"]), serde_json::json!(1)),
            (serde_json::json!([]), serde_json::json!(0)),
        ],
        "a change that keeps topics and count writes nothing"
    );
    assert_eq!(
        got[2].1["data"]["previous_topics"],
        serde_json::json!(["a", "b"])
    );
}

async fn lists_without_a_tenant_leave_operator_records_out(s: Arc<dyn Store>) {
    let (e, dl) = failing_setup(&*s, &["*"]).await;
    let mut rec = attempt_record(
        "att_1",
        &dl,
        &e,
        "d1",
        1,
        false,
        at(2),
        (DeliveryStatus::Failed, at(2)),
    );
    rec.effects.gone = true;
    s.record_attempt(rec).await.unwrap();
    let jobs = s.claim_due(at(3), 10, at(60)).await.unwrap();
    let j = &jobs[0];
    s.record_attempt(attempt_record(
        "att_ops",
        &j.delivery.id,
        &j.event,
        "ops",
        1,
        true,
        at(4),
        (DeliveryStatus::Success, at(4)),
    ))
    .await
    .unwrap();
    let events = s.list_events(&EventQuery::default()).await.unwrap();
    assert_eq!(
        events
            .models
            .iter()
            .map(|e| e.event.id.as_str())
            .collect::<Vec<_>>(),
        ["e1"]
    );
    let attempts = s.list_attempts(&AttemptQuery::default()).await.unwrap();
    assert_eq!(
        attempts
            .models
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["att_1"]
    );
    let ops = s
        .list_attempts(&AttemptQuery {
            tenant_ids: vec![OPERATOR_TENANT.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ops.models.len(), 1);
    let rows = s
        .attempt_metrics(&metrics_query(at(0), at(100), Bucket::None, &[]))
        .await
        .unwrap();
    assert_eq!(rows[0].count, 1, "metrics leave operator attempts out");
}

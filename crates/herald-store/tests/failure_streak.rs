//! The consecutive-failure streak that `record_attempt` returns drives operator alerts and
//! auto-disable, so its edge cases are pinned here: failures add up, a success resets, and an
//! attempt that finishes after its delivery was cancelled (the destination was disabled while
//! the request was in flight) neither revives the delivery nor extends the streak.

use std::collections::BTreeMap;

use herald_core::{Attempt, AttemptStatus, Delivery, DeliveryStatus, Destination, Event, Topics};
use herald_store::sqlite::SqliteStore;
use herald_store::{AttemptRecord, NewDelivery, Store};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

fn destination(now: Timestamp) -> Destination {
    Destination {
        id: "des_1".into(),
        tenant_id: "t1".into(),
        kind: "webhook".into(),
        topics: Topics::All,
        filter: None,
        config: BTreeMap::from([("url".to_string(), "https://example.com/".to_string())]),
        credentials: BTreeMap::new(),
        delivery_metadata: None,
        metadata: None,
        disabled_at: None,
        expires_at: None,
        created_at: now,
        updated_at: now,
    }
}

async fn publish(store: &SqliteStore, n: u32, now: Timestamp) -> Delivery {
    let event = Event {
        id: format!("evt_{n}"),
        tenant_id: "t1".into(),
        destination_id: None,
        topic: "user.created".into(),
        time: now,
        metadata: BTreeMap::new(),
        data: json!({"n": n}),
        eligible_for_retry: true,
    };
    let delivery = Delivery {
        id: format!("dlv_{n}"),
        event_id: event.id.clone(),
        tenant_id: "t1".into(),
        destination_id: "des_1".into(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        manual: false,
        retry_base: 0,
        created_at: now,
    };
    store
        .publish(
            &event,
            &["des_1".to_string()],
            vec![NewDelivery {
                delivery: delivery.clone(),
                lease_until: Some(now + SignedDuration::from_secs(60)),
            }],
            now - SignedDuration::from_hours(24),
            now,
        )
        .await
        .expect("publish");
    delivery
}

fn attempt(d: &Delivery, status: AttemptStatus, now: Timestamp) -> AttemptRecord {
    AttemptRecord {
        attempt: Attempt {
            id: format!("atm_{}", d.id),
            delivery_id: d.id.clone(),
            tenant_id: d.tenant_id.clone(),
            event_id: d.event_id.clone(),
            destination_id: d.destination_id.clone(),
            destination_type: "webhook".into(),
            topic: "user.created".into(),
            status,
            code: if status == AttemptStatus::Success {
                "200"
            } else {
                "500"
            }
            .into(),
            response_data: None,
            attempt_number: 1,
            manual: false,
            time: now,
            latency_ms: 3,
        },
        status: if status == AttemptStatus::Success {
            DeliveryStatus::Success
        } else {
            DeliveryStatus::Pending
        },
        next_attempt_at: now + SignedDuration::from_secs(30),
        effects: Default::default(),
    }
}

#[tokio::test]
async fn failures_add_up_successes_reset_and_cancelled_deliveries_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &dir.path().join("herald.db"),
        &herald_store::seal::Keyring::single("k", &herald_store::seal::Keyring::generate_key())
            .unwrap(),
    )
    .unwrap();
    let now = Timestamp::now();
    store.upsert_tenant("t1", None, now).await.unwrap();
    let mut dest = destination(now);
    store.insert_destination(&dest).await.unwrap();

    let d1 = publish(&store, 1, now).await;
    let d2 = publish(&store, 2, now).await;
    let d3 = publish(&store, 3, now).await;
    let d4 = publish(&store, 4, now).await;

    let fail = |d: &Delivery| attempt(d, AttemptStatus::Failed, now);
    assert_eq!(store.record_attempt(fail(&d1)).await.unwrap().failures, 1);
    assert_eq!(store.record_attempt(fail(&d2)).await.unwrap().failures, 2);
    let ok = attempt(&d3, AttemptStatus::Success, now);
    assert_eq!(
        store.record_attempt(ok).await.unwrap().failures,
        0,
        "a success resets"
    );

    // The destination is disabled while d4's attempt is in flight: d4 is cancelled.
    dest.disabled_at = Some(now);
    store.update_destination(&dest, true, now).await.unwrap();
    assert_eq!(
        store.record_attempt(fail(&d4)).await.unwrap().failures,
        0,
        "an attempt of a cancelled delivery must not extend the streak"
    );
    // The attempt is still in the log, and the delivery stays cancelled (not pending again).
    assert!(store.get_attempt("atm_dlv_4").await.unwrap().is_some());
    assert_eq!(
        store.pending_count().await.unwrap(),
        0,
        "disabling cancelled d1, d2 and d4, and d4's late attempt did not revive it"
    );
}

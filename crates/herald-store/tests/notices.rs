//! Cross-node notices: a change committed through one PostgreSQL store reaches the
//! subscribers of another store on the same database (another node) promptly. The embedded
//! store has a single process and publishes none.

mod common;

use std::time::Duration;

use common::*;
use herald_store::{Notice, Store};
use tokio::sync::broadcast;

async fn next(rx: &mut broadcast::Receiver<Notice>) -> Notice {
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("no notice within 2 s")
        .expect("notice channel")
}

/// Waits for `want`, skipping unrelated notices (e.g. work wake-ups).
async fn expect(rx: &mut broadcast::Receiver<Notice>, want: Notice) {
    loop {
        let got = next(rx).await;
        if got == want {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_the_others() {
    let db = TestDb::create().await;
    let a = db.store().await;
    let b = db.store().await;
    let mut rx = b.notices().expect("PostgreSQL publishes notices");
    // The listener announces itself with a resync once it listens.
    assert_eq!(next(&mut rx).await, Notice::Resync);

    a.upsert_tenant("acme", None, at(0)).await.unwrap();
    let mut d = destination("d1", "acme", &["*"], at(0));
    a.insert_destination(&d).await.unwrap();
    let changed = Notice::Destination {
        tenant_id: "acme".into(),
        id: "d1".into(),
    };
    expect(&mut rx, changed.clone()).await;
    // What the notice points at is already visible to the other node.
    assert!(b.get_destination("acme", "d1").await.unwrap().is_some());

    d.disabled_at = Some(at(1));
    a.update_destination(&d, true, at(1)).await.unwrap();
    expect(&mut rx, changed.clone()).await;
    assert!(
        b.get_destination("acme", "d1")
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_some()
    );

    // Unleased work wakes other nodes; leased work is the publisher's own.
    let e = event("e1", "acme", "t", at(2));
    publish(&a, &e, &["d1"], at(2), None).await;
    expect(&mut rx, Notice::Work).await;

    assert!(a.delete_destination("acme", "d1", at(3)).await.unwrap());
    expect(&mut rx, changed).await;
    assert!(a.delete_tenant("acme", at(4)).await.unwrap());
    expect(
        &mut rx,
        Notice::TenantDeleted {
            tenant_id: "acme".into(),
        },
    )
    .await;
}

#[tokio::test]
async fn the_embedded_store_publishes_no_notices() {
    let f = Fixture::sqlite();
    assert!(f.store.notices().is_none());
}

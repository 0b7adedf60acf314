//! Following other nodes: applies the store's [`Notice`]s to this node's in-memory state.
//!
//! Only shared stores publish notices. Every notice is handled by reloading from the store
//! (never by trusting a payload), so handling one twice, or one for this node's own change, is
//! harmless. When notices may have been lost (the store says [`Notice::Resync`], or this
//! task fell behind), the whole routing table is reloaded.

use std::sync::Arc;

use herald_store::Notice;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::Inner;

/// Applies notices until the engine stops.
pub(crate) async fn run(inner: Arc<Inner>, mut rx: broadcast::Receiver<Notice>) {
    loop {
        let notice = tokio::select! {
            n = rx.recv() => n,
            _ = inner.stopping.cancelled() => return,
        };
        let notice = match notice {
            Ok(n) => n,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "fell behind other nodes' changes; reloading all destinations"
                );
                Notice::Resync
            }
            Err(RecvError::Closed) => return,
        };
        apply(&inner, notice).await;
    }
}

async fn apply(inner: &Inner, notice: Notice) {
    match notice {
        Notice::Work => inner.poke.notify_one(),
        Notice::Destination { tenant_id, id } => {
            match inner.store.get_destination(&tenant_id, &id).await {
                Ok(stored) => inner.routes.set(&tenant_id, &id, stored),
                Err(e) => {
                    tracing::error!(error = %e, destination_id = %id, "cannot reload a destination changed on another node; reloading all");
                    reload_all(inner).await;
                }
            }
        }
        Notice::TenantDeleted { tenant_id } => inner.routes.remove_tenant(&tenant_id),
        // The API follows API keys itself.
        Notice::ApiKey { .. } => {}
        Notice::Resync => {
            reload_all(inner).await;
            inner.poke.notify_one();
        }
    }
}

async fn reload_all(inner: &Inner) {
    // A failed reload is retried a few times; after that the next notice or resync retries.
    for attempt in 0..5u32 {
        match inner.store.list_all_destinations().await {
            Ok(all) => {
                inner.routes.load(all);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, "cannot reload destinations");
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

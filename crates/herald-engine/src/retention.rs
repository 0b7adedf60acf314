//! Retention: deletes events, deliveries and attempts older than the configured age, in
//! small transactions with a pause between them, so the writer keeps serving deliveries.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;

use crate::Inner;

/// Purges on an interval until the engine stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let cfg = &inner.config;
    if cfg.retention.is_zero() {
        return;
    }
    let age = SignedDuration::try_from(cfg.retention).unwrap_or(SignedDuration::MAX);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.retention_interval) => {}
            _ = inner.stopping.cancelled() => return,
        }
        let now = inner.clock.now();
        let before = now - age;
        // Ids of purged events stay known for the idempotency window.
        let ids_since = now - cfg.idempotency_span();
        let mut total = 0u64;
        loop {
            match inner
                .store
                .purge(before, ids_since, cfg.retention_batch)
                .await
            {
                Ok(stats) => {
                    total += stats.total();
                    metrics::counter!("herald_retention_purged_total").increment(stats.total());
                    if stats.attempts < cfg.retention_batch as u64
                        && stats.deliveries < cfg.retention_batch as u64
                        && stats.events < cfg.retention_batch as u64
                        && stats.ids_forgotten < cfg.retention_batch as u64
                    {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention purge failed; will try again");
                    break;
                }
            }
            if inner.stopping.is_cancelled() {
                return;
            }
            // Let queued delivery writes through between batches.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if total > 0 {
            tracing::info!(rows = total, older_than = %before, "retention purged old records");
        }
    }
}

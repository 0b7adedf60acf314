//! Metrics roll-up: folds newly written events, deliveries and attempts into the store's
//! per-second and per-minute counts (see [`herald_store::Store::roll_up_metrics`]) every
//! second, in batches with a short pause between them. A store without a roll-up answers at
//! once.

use std::sync::Arc;
use std::time::Duration;

use crate::Inner;

/// How often new rows are folded in. Rows not folded in yet are counted one by one by a
/// metrics query, so this bounds how many a query reads that way.
const EVERY: Duration = Duration::from_secs(1);
/// Rows of each kind per pass. The embedded store counts them on a read connection (about
/// 15 ms for 5,000 of each kind) and holds the writer only for the few counts it adds.
const BATCH: usize = 5_000;
/// Above this many rows waiting, catching up is logged (an upgraded store's first passes).
const LOG_ABOVE: u64 = 1_000_000;

/// Rolls up on an interval until the engine stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut catching_up = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = inner.stopping.cancelled() => return,
        }
        loop {
            match inner.store.roll_up_metrics(BATCH).await {
                Ok(0) => {
                    if catching_up {
                        tracing::info!("metrics roll-up caught up");
                        catching_up = false;
                    }
                    break;
                }
                Ok(behind) => {
                    if behind > LOG_ABOVE && !catching_up {
                        tracing::info!(
                            rows = behind,
                            "metrics roll-up catching up with existing rows (metrics queries count them one by one meanwhile)"
                        );
                        catching_up = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics roll-up failed; will try again");
                    break;
                }
            }
            if inner.stopping.is_cancelled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

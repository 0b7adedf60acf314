//! Cross-node notices over PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! Writers call `pg_notify('herald', payload)` inside (or right after) the transaction that
//! made the change, so PostgreSQL delivers the notice only once the change is committed and
//! visible. One dedicated connection per node (outside the pool) listens and forwards each
//! notice to the node's subscribers as a [`Notice`].
//!
//! Notices are hints, never the data: a receiver reloads what changed from the store. When
//! the listening connection drops, notices sent meanwhile are lost, so after every
//! (re)connection the listener first sends [`Notice::Resync`] — subscribers then reload
//! everything they cache — and until it is back, nodes still find due work by polling.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::Notice;

/// The channel every Herald node listens on (channels are per database).
pub(crate) const CHANNEL: &str = "herald";

/// PostgreSQL refuses payloads of 8000 bytes or more; longer notices become a resync.
const MAX_PAYLOAD: usize = 7900;

/// The wire form of a notice: small JSON.
#[derive(Serialize, Deserialize)]
#[serde(tag = "k")]
enum Wire {
    #[serde(rename = "w")]
    Work,
    #[serde(rename = "d")]
    Destination { t: String, id: String },
    #[serde(rename = "t")]
    Tenant { t: String },
    #[serde(rename = "a")]
    ApiKey { id: String },
    #[serde(rename = "r")]
    Resync,
}

/// The payload to `NOTIFY` for `n`.
pub(crate) fn payload(n: &Notice) -> String {
    let wire = match n {
        Notice::Work => Wire::Work,
        Notice::Destination { tenant_id, id } => Wire::Destination {
            t: tenant_id.clone(),
            id: id.clone(),
        },
        Notice::TenantDeleted { tenant_id } => Wire::Tenant {
            t: tenant_id.clone(),
        },
        Notice::ApiKey { id } => Wire::ApiKey { id: id.clone() },
        Notice::Resync => Wire::Resync,
    };
    let text = serde_json::to_string(&wire).unwrap_or_else(|_| r#"{"k":"r"}"#.into());
    if text.len() > MAX_PAYLOAD {
        r#"{"k":"r"}"#.into()
    } else {
        text
    }
}

/// Parses a payload; unknown payloads (a newer node) mean "reload everything".
pub(crate) fn parse(payload: &str) -> Notice {
    match serde_json::from_str::<Wire>(payload) {
        Ok(Wire::Work) => Notice::Work,
        Ok(Wire::Destination { t, id }) => Notice::Destination { tenant_id: t, id },
        Ok(Wire::Tenant { t }) => Notice::TenantDeleted { tenant_id: t },
        Ok(Wire::ApiKey { id }) => Notice::ApiKey { id },
        Ok(Wire::Resync) | Err(_) => Notice::Resync,
    }
}

/// Listens until the last subscriber is gone, reconnecting with backoff.
pub(crate) async fn run(cfg: tokio_postgres::Config, tx: broadcast::Sender<Notice>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&cfg, &tx).await {
            Ok(()) => return, // nobody listens any more
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "PostgreSQL notice connection lost; other nodes' changes are picked up after it reconnects");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if tx.receiver_count() == 0 {
            return;
        }
    }
}

/// Why listening stopped.
type Lost = Box<dyn std::error::Error + Send + Sync>;

async fn listen_once(
    cfg: &tokio_postgres::Config,
    tx: &broadcast::Sender<Notice>,
) -> Result<(), Lost> {
    let (client, mut conn) = cfg.connect(NoTls).await?;
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel();
    // The connection object must be polled for the client to work; it also yields the
    // notifications, which this task forwards.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if msg_tx.send(Ok(n.payload().to_string())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = msg_tx.send(Err(e));
                    return;
                }
                None => return,
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Anything committed before LISTEN took effect was not seen: reload.
        let _ = tx.send(Notice::Resync);
        let mut ping = tokio::time::interval(Duration::from_secs(30));
        ping.tick().await;
        loop {
            tokio::select! {
                msg = msg_rx.recv() => match msg {
                    Some(Ok(p)) => {
                        if tx.send(parse(&p)).is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("the connection closed".into()),
                },
                // A quiet connection through a NAT or proxy can die silently; a query now
                // and then notices.
                _ = ping.tick() => {
                    if tx.receiver_count() == 0 {
                        return Ok(());
                    }
                    client.simple_query("SELECT 1").await?;
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for n in [
            Notice::Work,
            Notice::Resync,
            Notice::Destination {
                tenant_id: "t\"1".into(),
                id: "d:1".into(),
            },
            Notice::TenantDeleted {
                tenant_id: "acme".into(),
            },
            Notice::ApiKey { id: "key_1".into() },
        ] {
            assert_eq!(parse(&payload(&n)), n);
        }
        assert_eq!(parse("garbage"), Notice::Resync);
        let long = Notice::TenantDeleted {
            tenant_id: "x".repeat(9000),
        };
        assert_eq!(parse(&payload(&long)), Notice::Resync);
    }
}

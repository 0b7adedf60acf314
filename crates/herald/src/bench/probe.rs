//! The bench's in-process parts, used only where a rate must be paced or a single delivery
//! timed: a paced publisher (wrk cannot pace), a receiver that notes when each event id first
//! arrived (nginx's `$msec` has millisecond resolution, too coarse for a sub-millisecond p50),
//! a black-hole server for the fairness phase, and the bulk publisher of the backlog phase
//! (a count of events, not a rate).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::body::Bytes;
use axum::http::HeaderMap;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::herald::{Cluster, KEY};

/// A receiver noting the first arrival of each `webhook-id` (the event id).
#[derive(Clone, Default)]
pub struct TimingSink {
    pub hits: Arc<AtomicU64>,
    first_seen: Arc<Mutex<HashMap<String, Instant>>>,
}

impl TimingSink {
    pub async fn start() -> Result<(SocketAddr, TimingSink)> {
        let sink = TimingSink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let s = sink.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, _body: Bytes| {
            let s = s.clone();
            async move {
                let now = Instant::now();
                s.hits.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                    s.first_seen.lock().entry(id.to_string()).or_insert(now);
                }
                "ok"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((addr, sink))
    }

    fn seen(&self, id: &str) -> Option<Instant> {
        self.first_seen.lock().get(id).copied()
    }
}

/// Publish → first attempt latencies of a paced run.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// Sorted.
    pub sorted: Vec<Duration>,
    pub sent: usize,
}

impl Latencies {
    pub fn pct(&self, p: f64) -> Duration {
        pct(&self.sorted, p)
    }
}

/// The `p` quantile of sorted samples (nearest rank).
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How many requests a paced publisher should have sent `elapsed` into a run at `rate`/s.
pub fn due(rate: f64, elapsed: Duration) -> u64 {
    (rate * elapsed.as_secs_f64()).floor() as u64
}

/// Publishes `rate` events per second to `tenant` for `dur`, spread over the nodes, each
/// request on its own task (so a slow answer does not hold the schedule back). Returns the
/// send instants by event id and how many were answered 202.
pub async fn paced(
    urls: Vec<String>,
    tenant: &'static str,
    run: &'static str,
    rate: f64,
    dur: Duration,
) -> (Vec<(String, Instant)>, u64) {
    let c = super::herald::client();
    let ok = Arc::new(AtomicU64::new(0));
    let mut sent = Vec::new();
    let mut tasks = Vec::new();
    let start = Instant::now();
    let data: Value = serde_json::from_str(&super::tools::payload()).unwrap_or(Value::Null);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= dur {
            break;
        }
        while (sent.len() as u64) < due(rate, elapsed) {
            let i = sent.len();
            let id = format!("{run}-{i}");
            let body =
                json!({"tenant_id": tenant, "topic": "bench.latency", "id": id, "data": data});
            let (c, url, ok) = (c.clone(), urls[i % urls.len()].clone(), ok.clone());
            sent.push((id, Instant::now()));
            tasks.push(tokio::spawn(async move {
                if let Ok(r) = c.post(&url).bearer_auth(KEY).json(&body).send().await
                    && r.status().as_u16() == 202
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    (sent, ok.load(Ordering::Relaxed))
}

/// Waits (up to `wait`) for every sent event to arrive at `sink`, then measures.
pub async fn latencies(sink: &TimingSink, sent: &[(String, Instant)], wait: Duration) -> Latencies {
    let deadline = Instant::now() + wait;
    loop {
        let arrived = sent
            .iter()
            .filter(|(id, _)| sink.seen(id).is_some())
            .count();
        if arrived == sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sorted: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, t)| sink.seen(id).map(|r| r.saturating_duration_since(*t)))
        .collect();
    sorted.sort();
    Latencies {
        sorted,
        sent: sent.len(),
    }
}

/// A server that accepts TCP connections and never reads or answers: a hung receiver.
/// Returns its address and the number of connections it accepted.
pub async fn start_black_hole() -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            // Held open, never read: the client's request waits for its timeout.
            held.push(socket);
        }
    });
    Ok((addr, accepted))
}

/// Publishes exactly `events` events to `tenant` over `concurrency` connections.
pub async fn publish_count(cluster: &Cluster, tenant: &str, events: u64, concurrency: usize) {
    let c = super::herald::client();
    let urls: Arc<Vec<String>> = Arc::new(cluster.publish_urls());
    let next = Arc::new(AtomicU64::new(0));
    let tenant = Arc::new(tenant.to_string());
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (c, urls, next, tenant) = (c.clone(), urls.clone(), next.clone(), tenant.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        break;
                    }
                    let url = &urls[(i % urls.len() as u64) as usize];
                    let body = json!({"tenant_id": *tenant, "topic": "bench.down", "id": format!("b-{i}"), "data": {"i": i}});
                    let _ = c.post(url.as_str()).bearer_auth(KEY).json(&body).send().await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(pct(&s, 0.5), Duration::from_millis(500));
        assert_eq!(pct(&s, 0.99), Duration::from_millis(990));
        assert_eq!(pct(&s, 0.999), Duration::from_millis(999));
        assert_eq!(pct(&s, 1.0), Duration::from_millis(1000));
        assert_eq!(pct(&[], 0.5), Duration::ZERO);
        assert_eq!(pct(&s[..1], 0.999), Duration::from_millis(1));
    }

    #[test]
    fn pacing_schedule_is_linear() {
        assert_eq!(due(200.0, Duration::from_millis(4)), 0);
        assert_eq!(due(200.0, Duration::from_millis(5)), 1);
        assert_eq!(due(6000.0, Duration::from_secs(2)), 12000);
    }
}

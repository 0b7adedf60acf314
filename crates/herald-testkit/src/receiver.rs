//! A local HTTP receiver: records every request it gets and answers with a scripted status
//! (after an optional delay). It stands in for a webhook endpoint, an alert callback or an
//! egress proxy in the tests; it is not a protocol server for any other type.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;
use std::net::SocketAddr;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub path: String,
}

impl Received {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// A local HTTP receiver that records requests and answers with a scripted status.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer with, in order; after the script runs out, `default_status`.
    pub script: Arc<Mutex<std::collections::VecDeque<u16>>>,
    pub default_status: Arc<AtomicU16>,
    pub hits: Arc<AtomicUsize>,
    pub delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    /// Starts a receiver on a free port (answers 200 until told otherwise).
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            got: Arc::default(),
            script: Arc::default(),
            default_status: Arc::new(AtomicU16::new(200)),
            hits: Arc::default(),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
        };
        let state = r.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let delay = *state.delay.lock();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    state.got.lock().push(Received {
                        headers,
                        body,
                        path: uri.path().to_string(),
                    });
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    let code = state
                        .script
                        .lock()
                        .pop_front()
                        .unwrap_or(state.default_status.load(Ordering::SeqCst));
                    (StatusCode::from_u16(code).unwrap(), "ok")
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.got.lock().len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {n} requests",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got.lock().clone()
    }
}

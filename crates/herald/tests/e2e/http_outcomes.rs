//! How Herald treats particular HTTP answers, end to end against the real binary: a redirect
//! is a failed attempt and is never followed, and `Retry-After` stretches the next retry up to
//! the configured cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::IntoResponse;
use herald_testkit::Herald;
use parking_lot::Mutex;
use serde_json::json;

/// Requests seen by [`scripted`], with the path and when they arrived.
type Log = Arc<Mutex<Vec<(String, Instant)>>>;

/// A receiver whose answer depends on the path:
/// `/redirect` → 302 to `/target`; `/slow-down` → 429 with `Retry-After: <n>` the first time
/// (n from the query string), 200 afterwards; anything else → 200.
async fn scripted() -> (String, Log) {
    let log: Log = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = log.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let seen = seen.clone();
        async move {
            let path = uri.path().to_string();
            let earlier = {
                let mut l = seen.lock();
                let n = l.iter().filter(|(p, _)| *p == path).count();
                l.push((path.clone(), Instant::now()));
                n
            };
            let mut headers = HeaderMap::new();
            match path.as_str() {
                "/redirect" => {
                    headers.insert("location", HeaderValue::from_static("/target"));
                    (StatusCode::FOUND, headers, "moved").into_response()
                }
                "/slow-down" if earlier == 0 => {
                    let secs = uri.query().unwrap_or("1").to_string();
                    headers.insert("retry-after", HeaderValue::from_str(&secs).unwrap());
                    (StatusCode::TOO_MANY_REQUESTS, headers, "slow down").into_response()
                }
                _ => (StatusCode::OK, "ok").into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, log)
}

fn arrivals(log: &Log, path: &str) -> Vec<Instant> {
    log.lock()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, t)| *t)
        .collect()
}

/// Retries come one second apart unless the receiver asks for more.
const FAST_RETRIES: [(&str, &str); 3] = [
    ("HERALD_RETRY_SCHEDULE", "list"),
    ("HERALD_RETRY_DELAYS_SECS", "1,1,1"),
    ("HERALD_RETRY_JITTER", "0"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_fail_the_attempt_and_are_never_followed() {
    let (base, log) = scripted().await;
    let h = Herald::start(&FAST_RETRIES).await;
    h.webhook("t", &format!("{base}/redirect"), json!({})).await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "id": "evt_redirect", "data": {}}))
        .await;
    let a = h
        .wait_attempts("event_id=evt_redirect&include=response_data", |a| {
            !a.is_empty()
        })
        .await;
    assert_eq!(a[0]["status"], "failed");
    assert_eq!(a[0]["code"], "302");
    let err = a[0]["response_data"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("redirects are not followed"), "{}", a[0]);
    // Permanent (302 is classified so by `retry::classify_http`; a permanent failure is never
    // scheduled again, proven on the engine's clock in `dispatch::tests`), and the redirect
    // target was never requested.
    assert_eq!(arrivals(&log, "/redirect").len(), 1);
    assert!(
        arrivals(&log, "/target").is_empty(),
        "redirect was followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_stretches_the_next_attempt_up_to_the_cap() {
    let (base, log) = scripted().await;
    let mut env = FAST_RETRIES.to_vec();
    env.push(("HERALD_RETRY_MAX_RETRY_AFTER_SECS", "4"));
    let h = Herald::start(&env).await;
    // Asks for 3 s: honoured (the schedule alone would retry after 1 s).
    h.webhook("honoured", &format!("{base}/slow-down?3"), json!({}))
        .await;
    // Asks for an hour: capped at 4 s.
    let (capped_base, capped_log) = scripted().await;
    h.webhook(
        "capped",
        &format!("{capped_base}/slow-down?3600"),
        json!({}),
    )
    .await;
    h.publish(json!({"tenant_id": "honoured", "topic": "a", "id": "evt_ra", "data": {}}))
        .await;
    h.publish(json!({"tenant_id": "capped", "topic": "a", "id": "evt_cap", "data": {}}))
        .await;
    for id in ["evt_ra", "evt_cap"] {
        let a = h
            .wait_attempts(&format!("event_id={id}&dir=asc"), |a| {
                a.iter().any(|x| x["status"] == "success")
            })
            .await;
        let codes: Vec<_> = a.iter().map(|x| x["code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["429", "200"], "{id}");
    }
    let gap = |log: &Log| {
        let t = arrivals(log, "/slow-down");
        assert_eq!(t.len(), 2);
        t[1] - t[0]
    };
    let honoured = gap(&log);
    assert!(
        honoured >= Duration::from_millis(2900) && honoured < Duration::from_secs(4),
        "Retry-After: 3 gave a gap of {honoured:?}"
    );
    let capped = gap(&capped_log);
    assert!(
        capped >= Duration::from_millis(3900) && capped < Duration::from_secs(6),
        "Retry-After: 3600 capped at 4 s gave a gap of {capped:?}"
    );
}

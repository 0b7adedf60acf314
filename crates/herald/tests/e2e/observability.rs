//! What Herald tells operators, read the way they read it: `/metrics` text (every family
//! described, counters from zero, attempt latency by type and outcome, the bounded
//! per-destination backlog, store commit latency), the process's stderr (the attempt line at
//! its levels, the access log, no colour codes into a file, library events tagged with the
//! destination), and the spans it exports to an OTLP/HTTP endpoint the test runs.
//!
//! All of them start the real binary: metrics need a recorder of their own, and logs and
//! traces are set up by `main`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_testkit::{API_KEY, HeraldProcess, Receiver, TestDb, retry_fast};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;
use serde_json::json;

/// Every family in the text has a `# HELP` and a `# TYPE` line.
fn assert_every_family_described(text: &str) {
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() > 10, "{text}");
    for family in &typed {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} "))),
            "{family} has no # HELP:\n{text}"
        );
    }
    // And no series without a family.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            typed.iter().any(|f| name == *f
                || name
                    .strip_prefix(f)
                    .is_some_and(|rest| { ["_bucket", "_sum", "_count"].contains(&rest) })),
            "{name} has no # TYPE:\n{text}"
        );
    }
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_every_family_count_from_zero_and_bound_the_backlog() {
    let failing = Receiver::start().await;
    failing.default_status.store(500, Ordering::SeqCst);
    let h = crate::process(&[
        ("HERALD_METRICS_TOP_DESTINATIONS", "1"),
        // Pending for long after the first failure.
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "3600"),
    ]);

    let start = h.metrics().await;
    assert_every_family_described(&start);
    for zero in [
        "herald_events_published_total{outcome=\"accepted\"}",
        "herald_events_published_total{outcome=\"duplicate\"}",
        "herald_attempts_total{outcome=\"success\",destination_type=\"webhook\"}",
        "herald_attempts_total{outcome=\"failed\",destination_type=\"rabbitmq\"}",
        "herald_deliveries_total{outcome=\"failed\"}",
        "herald_deliveries_shed_total",
        "herald_destinations_disabled_total",
        "herald_leases_lost_total",
        "herald_http_connections_refused_total",
    ] {
        assert_eq!(value(&start, zero), Some(0.0), "{zero} at start:\n{start}");
    }

    // Two pending deliveries to `big`, one each to `small1` and `small2`: with one
    // destination shown, the other two are `other`.
    for (id, topic) in [("big", "x"), ("small1", "y"), ("small2", "y")] {
        h.webhook("t", &failing.url("/"), json!({"id": id, "topics": [topic]}))
            .await;
    }
    for topic in ["x", "x", "y"] {
        h.publish(json!({"tenant_id": "t", "topic": topic, "data": {}}))
            .await;
    }
    h.wait_attempts("tenant_id=t", |a| a.len() == 4).await;
    let text = h.metrics().await;
    assert_every_family_described(&text);
    assert_eq!(
        value(
            &text,
            "herald_pending_deliveries{tenant_id=\"t\",destination_id=\"big\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "herald_pending_deliveries{destination_id=\"other\"}"),
        Some(2.0),
        "{text}"
    );
    assert!(!text.contains("destination_id=\"small1\""), "{text}");
    let age = value(
        &text,
        "herald_oldest_pending_age_seconds{tenant_id=\"t\",destination_id=\"big\"}",
    )
    .expect("age of big's oldest");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(
        value(
            &text,
            "herald_oldest_pending_age_seconds{destination_id=\"other\"}"
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(value(&text, "herald_pending_deliveries_total"), Some(4.0));
    assert_eq!(
        value(
            &text,
            "herald_attempt_duration_seconds_count{outcome=\"failed\",destination_type=\"webhook\"}"
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "herald_attempts_total{outcome=\"failed\",destination_type=\"webhook\"}"
        ),
        Some(4.0)
    );
    let commits = value(
        &text,
        "herald_store_commit_duration_seconds_count{store=\"sqlite\",writer=\"group\"}",
    )
    .expect("store commit latency");
    assert!(
        commits >= 4.0,
        "publishes and attempts were committed: {commits}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reports_its_commit_latency_and_backlog_age() {
    let db = TestDb::create().await;
    let failing = Receiver::start().await;
    failing.default_status.store(500, Ordering::SeqCst);
    let mut env = db.env().to_vec();
    env.extend([
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "3600"),
    ]);
    let h = crate::process(&env);
    h.webhook("t", &failing.url("/"), json!({"id": "slow"}))
        .await;
    h.publish(json!({"tenant_id": "t", "topic": "a", "data": {}}))
        .await;
    h.wait_attempts("tenant_id=t", |a| a.len() == 1).await;
    // The attempt's result is committed just before it is listed; one more look if needed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = h.metrics().await;
        let attempts = value(
            &text,
            "herald_store_commit_duration_seconds_count{store=\"postgres\",writer=\"attempts\"}",
        );
        if attempts.is_some() || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_every_family_described(&text);
    for writer in ["publish", "attempts"] {
        let n = value(
            &text,
            &format!(
                "herald_store_commit_duration_seconds_count{{store=\"postgres\",writer=\"{writer}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("{writer} batches timed:\n{text}"));
        assert!(n >= 1.0, "{writer}: {n}");
    }
    assert_eq!(
        value(
            &text,
            "herald_pending_deliveries{tenant_id=\"t\",destination_id=\"slow\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "herald_oldest_pending_age_seconds{tenant_id=\"t\",destination_id=\"slow\"}"
        )
        .is_some_and(|age| (0.0..60.0).contains(&age)),
        "{text}"
    );
}

/// Starts the binary with its stderr in `log`; returns it with the log's path.
fn logged(env: &[(&str, &str)]) -> (HeraldProcess, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let h = HeraldProcess::start_logged(crate::BIN, &data, env, &log);
    (h, dir, log)
}

/// Waits until the log has a line with every one of `parts`; returns that line.
async fn log_line(log: &std::path::Path, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_and_requests_are_logged_at_their_levels_without_colour() {
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.default_status.store(500, Ordering::SeqCst);
    let mut env = retry_fast();
    env.extend([("HERALD_LOG_LEVEL", "info"), ("HERALD_LOG_ACCESS", "true")]);
    let (h, _dir, log) = logged(&env);
    h.webhook("t", &ok.url("/"), json!({"id": "good"})).await;
    h.webhook("t", &failing.url("/"), json!({"id": "bad"}))
        .await;
    let event = h.publish_event("t", "a", json!({})).await;
    h.attempts(&event, |a| a.len() >= 3).await;

    // A failure, retry scheduled, at INFO with every id.
    let line = log_line(
        &log,
        &["herald::attempt", "destination_id=bad", "attempt=1"],
    )
    .await;
    for part in [
        " INFO ",
        &format!("event_id={event}"),
        "tenant_id=t",
        "delivery_id=dlv_",
        "attempt_id=atm_",
        "outcome=failed",
        "code=500",
        "next=retry_scheduled",
        "destination_type=webhook",
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
    log_line(
        &log,
        &["herald::attempt", "destination_id=bad", "attempt=2"],
    )
    .await;
    // The access log: method, path, status; never the query.
    let access = log_line(&log, &["herald::access", "path=/api/v1/publish"]).await;
    assert!(
        access.contains("method=POST") && access.contains("status=202"),
        "{access}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("herald::attempt") && l.contains("destination_id=good")),
        "successes are DEBUG by default:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI codes into a file:\n{text}"
    );
    drop(h);

    // Levels are settings: successes at INFO, failures off. At `trace` the HTTP client's own
    // events inside an attempt carry the attempt's destination id.
    let env = [
        ("HERALD_LOG_LEVEL", "trace"),
        ("HERALD_LOG_ATTEMPT_SUCCESS_LEVEL", "info"),
        ("HERALD_LOG_ATTEMPT_FAILURE_LEVEL", "off"),
    ];
    let (h, _dir, log) = logged(&env);
    h.webhook("t", &ok.url("/"), json!({"id": "good"})).await;
    h.webhook("t", &failing.url("/"), json!({"id": "bad"}))
        .await;
    let event = h.publish_event("t", "a", json!({})).await;
    h.attempts(&event, |a| a.len() >= 2).await;
    let line = log_line(&log, &["herald::attempt", "destination_id=good"]).await;
    assert!(
        line.contains(" INFO ")
            && line.contains("outcome=success")
            && line.contains("next=success"),
        "{line}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let tagged = text
        .lines()
        .find(|l| {
            l.contains("attempt{")
                && l.contains("destination_id=good")
                && (l.contains(" hyper_util") || l.contains(" reqwest"))
        })
        .unwrap_or_else(|| panic!("no HTTP client line inside an attempt:\n{text}"));
    assert!(tagged.contains(&format!("event_id={event}")), "{tagged}");
    assert!(
        !text
            .lines()
            .any(|l| l.contains("herald::attempt") && l.contains("destination_id=bad")),
        "failures are off:\n{text}"
    );
}

/// A tiny OTLP/HTTP trace receiver: decodes each protobuf export and keeps its spans.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    async fn start(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: bytes::Bytes| {
                let me = me.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        for kv in rs.resource.iter().flat_map(|r| &r.attributes) {
                            if kv.key == "service.name" {
                                me.services.lock().push(string(kv.value.as_ref()));
                            }
                        }
                        for ss in rs.scope_spans {
                            me.spans.lock().extend(ss.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// Waits until the spans satisfy `pred`; returns them.
    async fn wait(&self, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans.lock().clone();
            if pred(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans never arrived; got {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn string(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| string(kv.value.as_ref()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_attempt_spans_reach_an_otlp_endpoint_in_the_callers_trace() {
    let collector = Collector::default();
    let at = collector.start().await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.default_status.store(500, Ordering::SeqCst);
    let endpoint = format!("http://{at}");
    let mut env = retry_fast();
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "herald-under-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let h = crate::process(&env);
    h.webhook("t", &ok.url("/"), json!({"id": "good"})).await;
    h.webhook("t", &failing.url("/"), json!({"id": "bad"}))
        .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = h
        .client
        .post(h.url("/publish"))
        .bearer_auth(API_KEY)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"tenant_id": "t", "id": "evt_traced", "topic": "a", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // The first attempt of each, and the retry of the failing one.
    let in_trace = |s: &Span| hex(&s.trace_id) == trace_id;
    let spans = collector
        .wait(|spans| {
            spans
                .iter()
                .filter(|s| s.name == "attempt" && in_trace(s))
                .count()
                >= 3
        })
        .await;
    let request = spans
        .iter()
        .find(|s| in_trace(s) && hex(&s.parent_span_id) == caller_span)
        .expect("the API request span is a child of the caller's span");
    assert_eq!(request.name, "POST /api/v1/publish");
    let publish = spans
        .iter()
        .find(|s| s.name == "publish" && in_trace(s))
        .expect("a publish span in the caller's trace");
    assert_eq!(publish.parent_span_id, request.span_id);
    assert_eq!(attr(publish, "event_id").as_deref(), Some("evt_traced"));
    assert_eq!(attr(publish, "tenant_id").as_deref(), Some("t"));
    assert_eq!(attr(publish, "outcome").as_deref(), Some("accepted"));
    assert_eq!(attr(publish, "destinations").as_deref(), Some("2"));

    let attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "attempt" && in_trace(s))
        .collect();
    for a in &attempts {
        assert_eq!(
            a.parent_span_id, publish.span_id,
            "attempts are children of the publish"
        );
        assert_eq!(attr(a, "event_id").as_deref(), Some("evt_traced"));
        assert_eq!(attr(a, "tenant_id").as_deref(), Some("t"));
        assert_eq!(attr(a, "destination_type").as_deref(), Some("webhook"));
    }
    let find = |dest: &str, n: &str| {
        attempts
            .iter()
            .find(|a| {
                attr(a, "destination_id").as_deref() == Some(dest)
                    && attr(a, "attempt").as_deref() == Some(n)
            })
            .unwrap_or_else(|| panic!("attempt {n} to {dest}"))
    };
    assert_eq!(
        attr(find("good", "1"), "outcome").as_deref(),
        Some("success")
    );
    let failed = find("bad", "1");
    assert_eq!(attr(failed, "outcome").as_deref(), Some("failed"));
    assert_eq!(attr(failed, "code").as_deref(), Some("500"));
    assert_eq!(attr(failed, "next").as_deref(), Some("retry_scheduled"));
    // The retry came from the store, after the publish had ended: still in the trace.
    assert_eq!(attr(find("bad", "2"), "outcome").as_deref(), Some("failed"));
    assert!(
        collector
            .services
            .lock()
            .iter()
            .all(|s| s == "herald-under-test"),
        "OTEL_SERVICE_NAME names the service"
    );

    // A publish without traceparent starts a trace of its own.
    h.publish(json!({"tenant_id": "t", "id": "evt_untraced", "topic": "a", "data": {}}))
        .await;
    let spans = collector
        .wait(|spans| {
            spans.iter().any(|s| {
                s.name == "publish" && attr(s, "event_id").as_deref() == Some("evt_untraced")
            })
        })
        .await;
    let own = spans
        .iter()
        .find(|s| s.name == "publish" && attr(s, "event_id").as_deref() == Some("evt_untraced"))
        .unwrap();
    assert_ne!(hex(&own.trace_id), trace_id);
}

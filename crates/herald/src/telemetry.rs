//! Logs and traces: the process's `tracing` subscriber (filter, text or JSON, ANSI colours only
//! on a terminal), the optional OpenTelemetry trace exporter (OTLP over HTTP/protobuf), the
//! engine's [`TraceContext`] over it, and the API middleware that takes an incoming
//! `traceparent` as the request's parent and writes the access log.
//!
//! Traces are off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! is set (and `OTEL_SDK_DISABLED` is not `true`): without them no exporter, provider or layer
//! is built and spans cost what a `tracing` span costs. The exporter reads the standard
//! `OTEL_*` variables itself (endpoint, headers, timeout; `OTEL_SERVICE_NAME`, default
//! `herald`; `OTEL_BSP_*` for batching).
//!
//! Metrics are not here: see `metrics.rs`.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context as _, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use herald_engine::telemetry::{TraceContext, TraceHook};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::Config;

/// Broker, database and HTTP client libraries whose events are set one level quieter than
/// Herald's own by [`log_filter`]: their INFO chatter (connections opened, frames) is our
/// DEBUG, their WARN our INFO. Their events inside an attempt carry the attempt span's
/// `destination_id`.
pub const LIBRARIES: &[&str] = &[
    "lapin",
    "amq_protocol",
    "async_nats",
    "rskafka",
    "rumqttc",
    "redis",
    "lettre",
    "aws_config",
    "aws_smithy",
    "aws_sdk",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tokio_postgres",
    "deadpool",
    "opentelemetry",
];

/// The `tracing` filter for `log_level`: a bare level (`info`, `debug`, …) becomes that level
/// for Herald and one level quieter for [`LIBRARIES`]; anything else is a filter of the
/// operator's own (`herald_engine=debug,info`) and used as written.
pub fn log_filter(log_level: &str) -> String {
    let level = log_level.trim().to_ascii_lowercase();
    let quieter = match level.as_str() {
        "trace" => "debug",
        "debug" => "info",
        "info" => "warn",
        "warn" | "error" => "error",
        "off" => "off",
        _ => return log_level.to_string(),
    };
    let mut filter = level.clone();
    for lib in LIBRARIES {
        filter.push_str(&format!(",{lib}={quieter}"));
    }
    filter
}

/// Whether the environment asks for traces to be exported.
pub fn otlp_enabled(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Set once [`init`] built a trace exporter: the engine and the API then carry trace context.
static TRACING: OnceLock<()> = OnceLock::new();

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans still batched.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still waiting in the batch (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "cannot flush the last spans to the OTLP endpoint");
        }
    }
}

/// Installs the process's subscriber from `cfg` (`log_level`, `log_format`, `[log]`) and,
/// when the environment asks for it, the OTLP trace exporter. Call once, first thing.
pub fn init(cfg: &Config) -> Result<Telemetry> {
    let mut filter = log_filter(&cfg.log_level);
    if cfg.log.access {
        // Asked for explicitly: shown whatever the general level.
        filter.push_str(",herald::access=info");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal; never into files, pipes or journald.
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = if cfg.log_format == "json" {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let provider = if otlp_enabled(|k| std::env::var(k).ok()) {
        Some(tracer_provider()?)
    } else {
        None
    };
    // Only Herald's own spans are exported (publish, attempt, API request), at INFO.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("herald"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("herald", tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry().with(fmt).with(otel).init();
    if provider.is_some() {
        let _ = TRACING.set(());
    }
    Ok(Telemetry { provider })
}

fn tracer_provider() -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP trace exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name("herald");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            resource
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}

/// The engine's hook into the exporter, when traces are exported.
pub(crate) fn trace_hook() -> Option<TraceHook> {
    TRACING
        .get()
        .map(|()| TraceHook(std::sync::Arc::new(OtelContext)))
}

/// Whether traces are exported in this process.
pub(crate) fn tracing_enabled() -> bool {
    TRACING.get().is_some()
}

/// [`TraceContext`] over `tracing-opentelemetry` and the W3C propagator.
struct OtelContext;

/// One `traceparent` value as a propagation carrier.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// An HTTP request's headers as a propagation carrier (`traceparent`, `tracestate`).
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

impl TraceContext for OtelContext {
    fn traceparent(&self, span: &tracing::Span) -> Option<String> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
        let cx = TraceContextPropagator::new().extract(&Traceparent(traceparent));
        let _ = span.set_parent(cx);
    }
}

/// What [`around_request`] does.
#[derive(Clone, Copy)]
pub(crate) struct RequestTelemetry {
    /// Write the access log line.
    pub access: bool,
    /// Run the request in a span whose parent is its `traceparent`.
    pub traces: bool,
}

/// API middleware: the request runs in an `HTTP request` span, a child of the caller's
/// `traceparent` when it sends one (so a publish joins the caller's trace), and one access log
/// line (target `herald::access`) is written when it is answered. The query string is never
/// logged (pre-signed links carry their signature there).
pub(crate) async fn around_request(
    State(t): State<RequestTelemetry>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let response = if t.traces {
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %format!("{method} {}", route.as_deref().unwrap_or(&path)),
            otel.kind = "server",
            http.request.method = %method,
            url.path = %path,
            http.route = route.as_deref().unwrap_or(""),
            http.response.status_code = tracing::field::Empty,
        );
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let response = next.run(req).instrument(span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    } else {
        next.run(req).await
    };
    if t.access {
        tracing::info!(
            target: "herald::access",
            method = %method,
            path = %path,
            status = response.status().as_u16(),
            // A number (in JSON too), to 10 µs.
            duration_ms = (started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0,
            "request"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_quiets_the_libraries_and_a_filter_is_kept() {
        let f = log_filter("info");
        assert!(f.starts_with("info,"));
        assert!(f.contains(",lapin=warn,") && f.contains(",rumqttc=warn,"));
        assert!(log_filter("DEBUG").contains(",async_nats=info,"));
        assert!(log_filter("error").contains(",redis=error,"));
        assert_eq!(
            log_filter("herald_engine=debug,info"),
            "herald_engine=debug,info"
        );
        tracing_subscriber::EnvFilter::try_new(log_filter("trace")).expect("a valid filter");
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(!otlp_enabled(env(&[])));
        assert!(!otlp_enabled(env(&[("OTEL_SERVICE_NAME", "x")])));
        assert!(!otlp_enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(otlp_enabled(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(otlp_enabled(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
        assert!(!otlp_enabled(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ])));
    }
}

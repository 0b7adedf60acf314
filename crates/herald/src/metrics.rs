//! `GET /metrics`: Prometheus text format. Counters and histograms come from the `metrics`
//! facade the engine records into; queue depth is read from the store at scrape time so it is
//! exact and never leaves stale series for deleted destinations.

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_api::auth::Scope;
use herald_api::keys::Authenticator;
use herald_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
struct MetricsState {
    engine: Engine,
    prometheus: PrometheusHandle,
    /// Checks that a scrape carries the admin key or a key with the `metrics` scope; `None`
    /// when the page is public (`metrics.public`, or served on its own `metrics.listen`
    /// address).
    auth: Option<Authenticator>,
}

/// The `/metrics` route; with `auth`, only for the admin key or a `metrics`-scoped key.
pub fn router(engine: Engine, prometheus: PrometheusHandle, auth: Option<Authenticator>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(MetricsState {
            engine,
            prometheus,
            auth,
        })
}

async fn render(State(s): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(auth) = &s.auth
        && let Err(e) = auth.authorize(&headers, Scope::Metrics).await
    {
        return e.into_response();
    }
    let mut text = s.prometheus.render();
    match s.engine.store().backlog().await {
        Ok(backlog) => {
            let total: u64 = backlog.per_destination.iter().map(|(_, n)| n).sum();
            let _ = writeln!(
                text,
                "# HELP herald_pending_deliveries Deliveries waiting for an attempt, per destination."
            );
            let _ = writeln!(text, "# TYPE herald_pending_deliveries gauge");
            for (id, n) in &backlog.per_destination {
                let _ = writeln!(
                    text,
                    "herald_pending_deliveries{{destination_id=\"{}\"}} {n}",
                    id.replace(['"', '\\', '\n'], "_")
                );
            }
            let _ = writeln!(
                text,
                "# HELP herald_pending_deliveries_total Deliveries waiting for an attempt."
            );
            let _ = writeln!(text, "# TYPE herald_pending_deliveries_total gauge");
            let _ = writeln!(text, "herald_pending_deliveries_total {total}");
            let _ = writeln!(
                text,
                "# HELP herald_retry_backlog Pending deliveries that already failed at least once."
            );
            let _ = writeln!(text, "# TYPE herald_retry_backlog gauge");
            let _ = writeln!(text, "herald_retry_backlog {}", backlog.retries);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the delivery backlog for /metrics");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                "backlog unavailable\n".to_string(),
            )
                .into_response();
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

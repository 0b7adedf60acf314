//! `GET /metrics`: Prometheus text format. Counters and histograms come from the `metrics`
//! facade the engine, the store and the HTTP server record into; every family is described
//! here ([`describe`], `# HELP`) and every counter exists from start, at zero, for each label
//! value it can take. The backlog gauges are read from the store at scrape time so they are
//! exact and never leave stale series for deleted destinations; per destination they keep
//! the `metrics.top_destinations` largest and sum the rest as `destination_id="other"`.

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_api::auth::Scope;
use herald_api::keys::Authenticator;
use herald_engine::Engine;
use herald_store::Backlog;
use jiff::Timestamp;
use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::PrometheusHandle;

/// Every family the process records, with its help text and, for counters, the label sets
/// registered at zero at start. A family recorded somewhere without an entry here has no
/// `# HELP` (the e2e test `metrics_describe_every_family` catches that).
pub(crate) fn describe(destination_types: &[String]) {
    const COUNTERS: &[(&str, &str)] = &[
        (
            "herald_events_published_total",
            "Publish requests by outcome: accepted, duplicate (same id within the idempotency window), conflict (id taken).",
        ),
        (
            "herald_events_unknown_tenant_total",
            "Publishes for a tenant that does not exist: accepted (tenant_found: false) or refused (publish.require_known_tenant).",
        ),
        (
            "herald_deliveries_created_total",
            "Deliveries created by accepted publishes (one per matching destination).",
        ),
        (
            "herald_attempts_total",
            "Delivery attempts by destination type and outcome (success, failed).",
        ),
        (
            "herald_deliveries_total",
            "Deliveries finished by an attempt, by outcome (success, failed for good).",
        ),
        (
            "herald_deliveries_shed_total",
            "Deliveries handed back to the store because their destination already had too many waiting in memory.",
        ),
        (
            "herald_destinations_disabled_total",
            "Destinations disabled automatically (410 Gone or too many consecutive failures).",
        ),
        (
            "herald_leases_lost_total",
            "Deliveries not attempted because another claimer took their lease.",
        ),
        (
            "herald_retention_purged_total",
            "Events, deliveries and attempts deleted by retention.",
        ),
        (
            "herald_destination_expiry_notices_total",
            "Subscription expiry notices produced, by topic.",
        ),
        (
            "herald_destination_concurrency_reduced_total",
            "Times a destination's adaptive in-flight limit was halved after timeouts.",
        ),
        (
            "herald_http_accept_errors_total",
            "Errors accepting an API connection.",
        ),
        (
            "herald_http_connections_refused_total",
            "API connections refused because http.max_connections were open.",
        ),
        (
            "herald_http_connections_timed_out_total",
            "API connections closed by their header, body or idle deadline.",
        ),
    ];
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    describe_gauge!("herald_http_connections", "Open API connections.");
    describe_histogram!(
        "herald_attempt_duration_seconds",
        metrics::Unit::Seconds,
        "Attempt latency (send to answer or timeout) by destination type and outcome."
    );
    describe_histogram!(
        herald_store::COMMIT_METRIC,
        metrics::Unit::Seconds,
        "Time one group-commit batch of the store took, first statement to commit (what its callers waited for), by store and writer."
    );

    // Zero at start, so rates and alerts work before the first occurrence. `increment(0)`
    // registers without changing a value (several in-process servers share one recorder).
    for (name, _) in COUNTERS {
        match *name {
            "herald_events_published_total" => {
                for outcome in ["accepted", "duplicate", "conflict"] {
                    metrics::counter!(*name, "outcome" => outcome).increment(0);
                }
            }
            "herald_attempts_total" => {
                for kind in destination_types {
                    for outcome in ["success", "failed"] {
                        metrics::counter!(*name, "outcome" => outcome, "destination_type" => kind.clone())
                            .increment(0);
                    }
                }
            }
            "herald_events_unknown_tenant_total" => {
                for outcome in ["accepted", "refused"] {
                    metrics::counter!(*name, "outcome" => outcome).increment(0);
                }
            }
            "herald_deliveries_total" => {
                for outcome in ["success", "failed"] {
                    metrics::counter!(*name, "outcome" => outcome).increment(0);
                }
            }
            "herald_destination_expiry_notices_total" => {
                for topic in [
                    herald_core::operator::topic::DESTINATION_EXPIRING,
                    herald_core::operator::topic::DESTINATION_EXPIRED,
                ] {
                    metrics::counter!(*name, "topic" => topic).increment(0);
                }
            }
            _ => metrics::counter!(*name).increment(0),
        }
    }
    metrics::gauge!("herald_http_connections").increment(0.0);
}

#[derive(Clone)]
struct MetricsState {
    engine: Engine,
    prometheus: PrometheusHandle,
    /// Checks that a scrape carries the admin key or a key with the `metrics` scope; `None`
    /// when the page is public (`metrics.public`, or served on its own `metrics.listen`
    /// address).
    auth: Option<Authenticator>,
    /// Destinations with their own backlog series (`metrics.top_destinations`).
    top: usize,
}

/// The `/metrics` route; with `auth`, only for the admin key or a `metrics`-scoped key.
pub fn router(
    engine: Engine,
    prometheus: PrometheusHandle,
    auth: Option<Authenticator>,
    top: usize,
) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(MetricsState {
            engine,
            prometheus,
            auth,
            top,
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
        Ok(backlog) => write_backlog(&mut text, &backlog, s.top, s.engine.clock().now()),
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

/// A label value as Prometheus text allows it.
fn label(id: &str) -> String {
    id.replace(['"', '\\', '\n'], "_")
}

/// The backlog gauges: per destination (`tenant_id`, `destination_id`) the `top` with the most
/// pending deliveries, the rest summed (count) or folded (oldest) into one series with
/// `destination_id="other"` and no tenant; then the totals.
fn write_backlog(text: &mut String, backlog: &Backlog, top: usize, now: Timestamp) {
    let mut rows: Vec<(String, u64, Timestamp)> = backlog
        .per_destination
        .iter()
        .map(|p| {
            let labels = format!(
                "tenant_id=\"{}\",destination_id=\"{}\"",
                label(&p.tenant_id),
                label(&p.destination_id)
            );
            (labels, p.pending, p.oldest)
        })
        .collect();
    // Most pending first; ties by labels so the chosen set is stable between scrapes.
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rest = rows.split_off(top.min(rows.len()));
    // `min` is `None` exactly when nothing was folded.
    if let Some(oldest) = rest.iter().map(|r| r.2).min() {
        rows.push((
            "destination_id=\"other\"".to_string(),
            rest.iter().map(|r| r.1).sum(),
            oldest,
        ));
    }
    let total: u64 = backlog.per_destination.iter().map(|p| p.pending).sum();
    let _ = writeln!(
        text,
        "# HELP herald_pending_deliveries Deliveries waiting for an attempt, per destination (tenant_id, destination_id; the metrics.top_destinations largest, the rest as destination_id=\"other\")."
    );
    let _ = writeln!(text, "# TYPE herald_pending_deliveries gauge");
    for (labels, n, _) in &rows {
        let _ = writeln!(text, "herald_pending_deliveries{{{labels}}} {n}");
    }
    let _ = writeln!(
        text,
        "# HELP herald_oldest_pending_age_seconds Age of the oldest pending delivery, per destination (same series as herald_pending_deliveries)."
    );
    let _ = writeln!(text, "# TYPE herald_oldest_pending_age_seconds gauge");
    for (labels, _, oldest) in &rows {
        let age = now.duration_since(*oldest).as_secs_f64().max(0.0);
        let _ = writeln!(
            text,
            "herald_oldest_pending_age_seconds{{{labels}}} {age:.3}"
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

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::PendingFor;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn the_backlog_keeps_the_largest_destinations_and_folds_the_rest() {
        let backlog = Backlog {
            per_destination: [
                ("t1", "a", 5, at(0)),
                ("t1", "b", 50, at(90)),
                ("t2", "a", 1, at(30)),
                ("t2", "d", 2, at(10)),
            ]
            .into_iter()
            .map(|(tenant, id, pending, oldest)| PendingFor {
                tenant_id: tenant.into(),
                destination_id: id.into(),
                pending,
                oldest,
            })
            .collect(),
            retries: 3,
        };
        let mut text = String::new();
        write_backlog(&mut text, &backlog, 2, at(100));
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        // Two tenants' destinations named `a` stay apart.
        assert_eq!(
            series,
            [
                "herald_pending_deliveries{tenant_id=\"t1\",destination_id=\"b\"} 50",
                "herald_pending_deliveries{tenant_id=\"t1\",destination_id=\"a\"} 5",
                "herald_pending_deliveries{destination_id=\"other\"} 3",
                "herald_oldest_pending_age_seconds{tenant_id=\"t1\",destination_id=\"b\"} 10.000",
                "herald_oldest_pending_age_seconds{tenant_id=\"t1\",destination_id=\"a\"} 100.000",
                "herald_oldest_pending_age_seconds{destination_id=\"other\"} 90.000",
                "herald_pending_deliveries_total 58",
                "herald_retry_backlog 3",
            ]
        );
    }
}

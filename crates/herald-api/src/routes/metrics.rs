//! `GET /metrics/events` and `GET /metrics/attempts`: aggregated counts with time buckets,
//! dimensions and filters. The store returns raw counts; ratios and rates are derived here.
//!
//! Parameter mistakes are 400s (the contract's answer). A tenant token may not use
//! `tenant_id` as a dimension or filter (403) and is always restricted to its own tenant.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::extract::{RawQuery, State};
use herald_store::{Bucket, MetricsQuery, MetricsRow};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::SharedState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::schemas;
use crate::query::{Params as Query, parse_time};
use crate::wire::ts;

/// Most rows one query returns; more are cut and `truncated` is set.
pub const ROW_LIMIT: usize = 100_000;

const EVENT_MEASURES: &[&str] = &["count", "rate"];
const EVENT_DIMENSIONS: &[&str] = &["tenant_id", "topic", "destination_id"];
const ATTEMPT_MEASURES: &[&str] = &[
    "count",
    "successful_count",
    "failed_count",
    "error_rate",
    "first_attempt_count",
    "retry_count",
    "manual_retry_count",
    "avg_attempt_number",
    "rate",
    "successful_rate",
    "failed_rate",
];
const ATTEMPT_DIMENSIONS: &[&str] = &[
    "tenant_id",
    "destination_id",
    "destination_type",
    "topic",
    "status",
    "code",
    "manual",
    "attempt_number",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Events,
    Attempts,
}

/// `GET /metrics/events`: measures `count`, `rate`.
#[utoipa::path(
    get,
    path = "/metrics/events",
    tag = "Metrics",
    operation_id = "getEventMetrics",
    summary = "Event metrics",
    params(("time[start]" = Option<String>, Query, format = DateTime, description = "Start of the range (required)."), ("time[end]" = Option<String>, Query, format = DateTime, description = "End of the range (required)."), ("granularity" = Option<String>, Query, description = "Bucket size, e.g. `1h`, `1d`."), ("measures" = Option<String>, Query, description = "Measures to compute (required)."), ("dimensions" = Option<String>, Query, description = "Dimensions to group by."), ("filters[tenant_id]" = Option<String>, Query), ("filters[topic]" = Option<String>, Query), ("filters[destination_id]" = Option<String>, Query)),
    responses((status = 200, description = "Counts by bucket and dimension.", body = schemas::MetricsResponse)),
)]
pub async fn events(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    run(&state, &caller, raw.as_deref(), Source::Events).await
}

/// `GET /metrics/attempts`: counts, ratios and rates of attempts.
#[utoipa::path(
    get,
    path = "/metrics/attempts",
    tag = "Metrics",
    operation_id = "getAttemptMetrics",
    summary = "Attempt metrics",
    params(("time[start]" = Option<String>, Query, format = DateTime, description = "Start of the range (required)."), ("time[end]" = Option<String>, Query, format = DateTime, description = "End of the range (required)."), ("granularity" = Option<String>, Query, description = "Bucket size, e.g. `1h`, `1d`."), ("measures" = Option<String>, Query, description = "Measures to compute (required)."), ("dimensions" = Option<String>, Query, description = "Dimensions to group by."), ("filters[tenant_id]" = Option<String>, Query), ("filters[topic]" = Option<String>, Query), ("filters[destination_id]" = Option<String>, Query), ("filters[status]" = Option<String>, Query)),
    responses((status = 200, description = "Counts by bucket and dimension.", body = schemas::MetricsResponse)),
)]
pub async fn attempts(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    run(&state, &caller, raw.as_deref(), Source::Attempts).await
}

/// A parsed request.
#[derive(Debug)]
struct Request {
    query: MetricsQuery,
    measures: Vec<String>,
    granularity: Option<String>,
}

fn parse(params: &Query, caller: &Caller, source: Source) -> Result<Request, ApiError> {
    let (allowed_measures, allowed_dims) = match source {
        Source::Events => (EVENT_MEASURES, EVENT_DIMENSIONS),
        Source::Attempts => (ATTEMPT_MEASURES, ATTEMPT_DIMENSIONS),
    };
    let mut dimensions = Vec::new();
    for d in params.list_split("dimensions") {
        if !dimensions.contains(&d) {
            dimensions.push(d);
        }
    }
    let filter_keys = params.keys_under("filters");
    if caller.tenant().is_some() {
        if dimensions.iter().any(|d| d == "tenant_id") {
            return Err(ApiError::forbidden(
                "the tenant_id dimension is not allowed with a tenant token",
            ));
        }
        if filter_keys.iter().any(|k| k == "tenant_id") {
            return Err(ApiError::forbidden(
                "the tenant_id filter is not allowed with a tenant token",
            ));
        }
    }

    let (Some(start), Some(end)) = (params.at(&["time", "start"]), params.at(&["time", "end"]))
    else {
        return Err(ApiError::bad_request(
            "time[start] and time[end] are required",
        ));
    };
    let start = parse_time(start).ok_or_else(|| {
        ApiError::bad_request(format!("invalid time[start] {start:?}: expected RFC 3339"))
    })?;
    let end = parse_time(end).ok_or_else(|| {
        ApiError::bad_request(format!("invalid time[end] {end:?}: expected RFC 3339"))
    })?;
    if end <= start {
        return Err(ApiError::bad_request("time[end] must be after time[start]"));
    }

    let granularity = params.get("granularity").map(str::to_string);
    let bucket = match &granularity {
        None => Bucket::None,
        Some(g) => parse_granularity(g)?,
    };

    let measures = params.list_split("measures");
    if measures.is_empty() {
        return Err(ApiError::bad_request(format!(
            "at least one measure is required (measures[]=…), one of: {}",
            allowed_measures.join(", ")
        )));
    }
    for m in &measures {
        if !allowed_measures.contains(&m.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown measure {m:?}; expected one of: {}",
                allowed_measures.join(", ")
            )));
        }
    }
    for d in &dimensions {
        if !allowed_dims.contains(&d.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown dimension {d:?}; expected one of: {}",
                allowed_dims.join(", ")
            )));
        }
    }

    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in filter_keys {
        if !allowed_dims.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown filter {key:?}; expected one of: {}",
                allowed_dims.join(", ")
            )));
        }
        let mut values = params.list_at(&["filters", &key]);
        match key.as_str() {
            "status" => {
                if let Some(v) = values.iter().find(|v| *v != "success" && *v != "failed") {
                    return Err(ApiError::bad_request(format!(
                        "invalid filters[status] {v:?}: expected success or failed"
                    )));
                }
            }
            "manual" => {
                // Stored as 0/1.
                for v in &mut values {
                    *v = match v.as_str() {
                        "true" => "1".into(),
                        "false" => "0".into(),
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "invalid filters[manual] {other:?}: expected true or false"
                            )));
                        }
                    };
                }
            }
            "attempt_number" => {
                if let Some(v) = values.iter().find(|v| v.parse::<u32>().is_err()) {
                    return Err(ApiError::bad_request(format!(
                        "invalid filters[attempt_number] {v:?}: expected an integer"
                    )));
                }
            }
            _ => {}
        }
        if !values.is_empty() {
            filters.insert(key, values);
        }
    }
    match caller.tenant() {
        Some(t) => {
            filters.insert("tenant_id".into(), vec![t.to_string()]);
        }
        None => {
            let extra = params.list("tenant_id");
            if !extra.is_empty() {
                filters.entry("tenant_id".into()).or_default().extend(extra);
            }
        }
    }
    Ok(Request {
        query: MetricsQuery {
            start,
            end,
            bucket,
            dimensions,
            filters,
            row_limit: ROW_LIMIT,
        },
        measures,
        granularity,
    })
}

/// `<n><unit>` with units s (1–60), m (1–60), h (1–24), d (1–31), w (1–4), M (1–12).
fn parse_granularity(g: &str) -> Result<Bucket, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid granularity {g:?}: expected <number><unit> with unit s (1-60), m (1-60), h (1-24), d (1-31), w (1-4) or M (1-12)"
        ))
    };
    let unit = g.chars().last().ok_or_else(bad)?;
    let digits = &g[..g.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let (max, seconds) = match unit {
        's' => (60, 1),
        'm' => (60, 60),
        'h' => (24, 3600),
        'd' => (31, 86_400),
        'w' => (4, 604_800),
        'M' => (12, 0),
        _ => return Err(bad()),
    };
    if !(1..=max).contains(&n) {
        return Err(bad());
    }
    Ok(if unit == 'M' {
        Bucket::Months(n)
    } else {
        Bucket::Seconds(n * seconds)
    })
}

/// Length of the bucket starting at `start`, in seconds (the whole range without buckets).
fn bucket_seconds(bucket: Bucket, start: Option<Timestamp>, q: &MetricsQuery) -> f64 {
    let secs = match (bucket, start) {
        (Bucket::Seconds(n), _) => n as f64,
        (Bucket::Months(n), Some(s)) => s
            .to_zoned(jiff::tz::TimeZone::UTC)
            .checked_add(jiff::Span::new().months(n))
            .map(|e| e.timestamp().duration_since(s).as_secs_f64())
            .unwrap_or(30.0 * 86_400.0 * n as f64),
        _ => q.end.duration_since(q.start).as_secs_f64(),
    };
    secs.max(f64::MIN_POSITIVE)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn data_point(row: &MetricsRow, req: &Request, source: Source) -> Value {
    let secs = bucket_seconds(req.query.bucket, row.bucket, &req.query);
    let mut metrics = Map::new();
    for m in &req.measures {
        let v = match m.as_str() {
            "count" => json!(row.count),
            "successful_count" => json!(row.successful),
            "failed_count" => json!(row.failed),
            "error_rate" => json!(ratio(row.failed, row.count)),
            "first_attempt_count" => json!(row.first_attempts),
            "retry_count" => json!(row.retries),
            "manual_retry_count" => json!(row.manual),
            "avg_attempt_number" => json!(ratio(row.attempt_number_sum, row.count)),
            "rate" => json!(row.count as f64 / secs),
            "successful_rate" => json!(row.successful as f64 / secs),
            "failed_rate" => json!(row.failed as f64 / secs),
            _ => continue,
        };
        metrics.insert(m.clone(), v);
    }
    let dimensions: Map<String, Value> = row
        .dimensions
        .iter()
        .map(|(k, v)| {
            // Dimension values are strings in the contract (`MetricsDataPoint.dimensions`),
            // booleans and numbers included: `"true"`, `"2"`.
            let v = match (source, k.as_str()) {
                (Source::Attempts, "manual") => json!((v == "1" || v == "true").to_string()),
                _ => json!(v),
            };
            (k.clone(), v)
        })
        .collect();
    let mut point = Map::new();
    if let Some(b) = row.bucket {
        point.insert("time_bucket".into(), json!(ts(b)));
    }
    point.insert("dimensions".into(), Value::Object(dimensions));
    point.insert("metrics".into(), Value::Object(metrics));
    Value::Object(point)
}

async fn run(
    state: &SharedState,
    caller: &Caller,
    raw: Option<&str>,
    source: Source,
) -> Result<Json<Value>, ApiError> {
    let params = Query::parse(raw);
    let req = parse(&params, caller, source)?;
    let started = Instant::now();
    let store = state.engine.store();
    let mut rows = match source {
        Source::Events => store.event_metrics(&req.query).await?,
        Source::Attempts => store.attempt_metrics(&req.query).await?,
    };
    let truncated = rows.len() > ROW_LIMIT;
    rows.truncate(ROW_LIMIT);
    let data: Vec<Value> = rows.iter().map(|r| data_point(r, &req, source)).collect();
    let mut metadata = Map::new();
    if let Some(g) = &req.granularity {
        metadata.insert("granularity".into(), json!(g));
    }
    metadata.insert(
        "query_time_ms".into(),
        json!(started.elapsed().as_millis() as u64),
    );
    metadata.insert("row_count".into(), json!(data.len()));
    metadata.insert("row_limit".into(), json!(ROW_LIMIT));
    metadata.insert("truncated".into(), json!(truncated));
    Ok(Json(json!({ "data": data, "metadata": metadata })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularities() {
        assert_eq!(parse_granularity("1h").unwrap(), Bucket::Seconds(3600));
        assert_eq!(parse_granularity("60s").unwrap(), Bucket::Seconds(60));
        assert_eq!(
            parse_granularity("2w").unwrap(),
            Bucket::Seconds(2 * 604_800)
        );
        assert_eq!(parse_granularity("12M").unwrap(), Bucket::Months(12));
        for bad in [
            "", "h", "0h", "25h", "61m", "5w", "13M", "1y", "1.5h", "-1h", "+1h", "1 h", "é",
        ] {
            assert_eq!(parse_granularity(bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn derived_measures() {
        let q = |measures: &[&str], bucket| Request {
            query: MetricsQuery {
                start: "2026-01-01T00:00:00Z".parse().unwrap(),
                end: "2026-01-01T00:01:40Z".parse().unwrap(),
                bucket,
                dimensions: vec!["manual".into(), "attempt_number".into()],
                filters: BTreeMap::new(),
                row_limit: ROW_LIMIT,
            },
            measures: measures.iter().map(|s| s.to_string()).collect(),
            granularity: None,
        };
        let row = MetricsRow {
            bucket: None,
            dimensions: vec![
                ("manual".into(), "1".into()),
                ("attempt_number".into(), "2".into()),
            ],
            count: 10,
            successful: 8,
            failed: 2,
            attempt_number_sum: 15,
            ..Default::default()
        };
        let v = data_point(
            &row,
            &q(
                &[
                    "count",
                    "error_rate",
                    "avg_attempt_number",
                    "rate",
                    "failed_rate",
                ],
                Bucket::None,
            ),
            Source::Attempts,
        );
        assert_eq!(
            v,
            json!({
                "dimensions": {"manual": "true", "attempt_number": "2"},
                "metrics": {"count": 10, "error_rate": 0.2, "avg_attempt_number": 1.5, "rate": 0.1, "failed_rate": 0.02}
            })
        );
        let monthly = MetricsRow {
            bucket: Some("2026-02-01T00:00:00Z".parse().unwrap()),
            count: 28 * 86_400,
            ..Default::default()
        };
        let v = data_point(&monthly, &q(&["rate"], Bucket::Months(1)), Source::Events);
        assert_eq!(v["metrics"]["rate"], json!(1.0));
        assert_eq!(v["time_bucket"], json!("2026-02-01T00:00:00Z"));
    }
}

//! Query descriptions shared by every store: list filters, seek pagination, metrics.

use herald_core::AttemptStatus;
use jiff::Timestamp;
use std::collections::BTreeMap;

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dir {
    /// Oldest first.
    Asc,
    /// Newest first (the default everywhere).
    #[default]
    Desc,
}

impl Dir {
    /// `asc` / `desc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Asc => "asc",
            Dir::Desc => "desc",
        }
    }
}

/// Which way a cursor points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Continue after the page the cursor came from.
    Next(String),
    /// Go back to the page before.
    Prev(String),
}

/// Seek pagination request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size.
    pub limit: u32,
    /// Sort direction.
    pub dir: Dir,
    /// Where to start; `None` for the first page.
    pub cursor: Option<Cursor>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: 100,
            dir: Dir::Desc,
            cursor: None,
        }
    }
}

/// A page of results with opaque cursors.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The records, in the requested order.
    pub models: Vec<T>,
    /// Cursor for the following page, if any.
    pub next: Option<String>,
    /// Cursor for the preceding page, if any.
    pub prev: Option<String>,
}

/// A time range; every bound is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    /// Inclusive lower bound.
    pub gte: Option<Timestamp>,
    /// Exclusive lower bound.
    pub gt: Option<Timestamp>,
    /// Inclusive upper bound.
    pub lte: Option<Timestamp>,
    /// Exclusive upper bound.
    pub lt: Option<Timestamp>,
}

/// Filter for listing tenants.
#[derive(Debug, Clone, Default)]
pub struct TenantQuery {
    /// Only these ids (empty: all).
    pub ids: Vec<String>,
    /// Pagination (sorted by creation time).
    pub page: PageRequest,
}

/// Filter for listing events. Empty vectors mean "no filter".
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Event ids.
    pub ids: Vec<String>,
    /// Tenants.
    pub tenant_ids: Vec<String>,
    /// Events routed to any of these destinations.
    pub destination_ids: Vec<String>,
    /// Topics.
    pub topics: Vec<String>,
    /// Event time range.
    pub time: TimeRange,
    /// Pagination (sorted by event time).
    pub page: PageRequest,
}

/// Filter for listing attempts. Empty vectors mean "no filter".
#[derive(Debug, Clone, Default)]
pub struct AttemptQuery {
    /// Tenants.
    pub tenant_ids: Vec<String>,
    /// Events.
    pub event_ids: Vec<String>,
    /// Destinations.
    pub destination_ids: Vec<String>,
    /// Destination types.
    pub destination_types: Vec<String>,
    /// Outcome.
    pub status: Option<AttemptStatus>,
    /// Event topics.
    pub topics: Vec<String>,
    /// Attempt time range.
    pub time: TimeRange,
    /// Pagination (sorted by attempt time).
    pub page: PageRequest,
}

/// Time bucketing for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One row per dimension combination.
    None,
    /// Fixed-width buckets aligned to the Unix epoch, in seconds (s, m, h, d, w units).
    Seconds(i64),
    /// Calendar months (UTC), `n` months per bucket, aligned to January of year 0.
    Months(i64),
}

/// An aggregate query over events or attempts.
#[derive(Debug, Clone)]
pub struct MetricsQuery {
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end.
    pub end: Timestamp,
    /// Bucketing.
    pub bucket: Bucket,
    /// Dimension column names to group by (already validated by the caller).
    pub dimensions: Vec<String>,
    /// Column name → accepted values (already validated by the caller).
    pub filters: BTreeMap<String, Vec<String>>,
    /// Maximum rows returned.
    pub row_limit: usize,
}

/// One aggregated row. Counts are raw; ratios are derived by the caller.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsRow {
    /// Start of the bucket (absent without bucketing).
    pub bucket: Option<Timestamp>,
    /// Dimension values, in the order requested.
    pub dimensions: Vec<(String, String)>,
    /// Rows in the group.
    pub count: u64,
    /// Successful attempts (attempt metrics only).
    pub successful: u64,
    /// Failed attempts (attempt metrics only).
    pub failed: u64,
    /// Attempts with number 1 (attempt metrics only).
    pub first_attempts: u64,
    /// Automatic retries: attempt number > 1 and not manual (attempt metrics only).
    pub retries: u64,
    /// Manual attempts (attempt metrics only).
    pub manual: u64,
    /// Sum of attempt numbers (attempt metrics only).
    pub attempt_number_sum: u64,
}

/// Which finished deliveries of one destination a bulk replay re-queues.
#[derive(Debug, Clone, Default)]
pub struct ReplayQuery {
    /// The destination's tenant.
    pub tenant_id: String,
    /// The destination.
    pub destination_id: String,
    /// Delivery statuses to replay (`failed`, `cancelled`, `success`); empty means `failed`.
    pub statuses: Vec<herald_core::DeliveryStatus>,
    /// Only events with these topics (empty: all).
    pub topics: Vec<String>,
    /// Only deliveries created in this range.
    pub time: TimeRange,
}

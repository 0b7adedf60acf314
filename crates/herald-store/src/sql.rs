//! SQL both stores share, written once: the column lists, row decoding, dynamic `WHERE`
//! building, seek pagination and metrics aggregation. What differs between SQLite and
//! PostgreSQL is a [`Dialect`]: how a parameter is written (`?N` / `$N`), how a column is
//! tested against a list (`IN (?1, ?2)` / `= ANY($1::text[])`), time buckets and casts.
//! Each store runs the statements this module builds with its own driver
//! (`sqlite/sql.rs`, `pg/sql.rs`).

use herald_core::{
    Attempt, AttemptStatus, Delivery, DeliveryStatus, Destination, Event, Tenant,
    operator::OPERATOR_TENANT,
};
use jiff::Timestamp;

use crate::codec::{from_json, opt_meta, topics_from_json, ts, us};
use crate::query::*;
use crate::seal::{self, Keyring};
use crate::{ApiKey, Result, StoreError, StoredEvent, cursor};

// ----- column lists -----

/// The columns [`destination_from_row`] reads, in order.
pub(crate) const DEST_COLS: &str = "id, tenant_id, type, topics, filter, config, credentials, delivery_metadata, metadata, disabled_at, created_at, updated_at, expires_at";
/// The columns [`event_at`] reads, in order.
pub(crate) const EVENT_COLS: &str = "id, tenant_id, destination_id, topic, time, metadata, data, eligible_for_retry, matched, created_at";
/// The columns [`delivery_from_row`] reads, in order.
pub(crate) const DELIVERY_COLS: &str = "id, event_id, tenant_id, destination_id, status, attempts, next_attempt_at, manual, created_at, retry_base";
/// The columns [`attempt_from_row`] reads, in order.
pub(crate) const ATTEMPT_COLS: &str = "id, delivery_id, tenant_id, event_id, destination_id, destination_type, topic, status, code, response_data, attempt_number, manual, time, latency_ms";
/// The columns [`tenant_from_row`] reads, in order.
pub(crate) const TENANT_COLS: &str = "id, metadata, created_at, updated_at, tokens_revoked_at";
/// The columns [`api_key_from_row`] reads, in order.
pub(crate) const API_KEY_COLS: &str =
    "id, name, scopes, tenant_id, secret_hash, created_at, expires_at, revoked_at, last_used_at";

// ----- row decoding -----

/// Typed access to one result row's columns by position, as each driver provides it.
pub(crate) trait Columns {
    /// A non-null text column.
    fn text(&self, i: usize) -> Result<String>;
    /// A nullable text column.
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    /// A non-null 64-bit integer column.
    fn int(&self, i: usize) -> Result<i64>;
    /// A nullable 64-bit integer column.
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    /// A non-null counter column (attempt numbers; `INTEGER` / `int4`).
    fn count(&self, i: usize) -> Result<u32>;
    /// A non-null flag column (`INTEGER` 0/1 / `boolean`).
    fn flag(&self, i: usize) -> Result<bool>;
}

pub(crate) fn destination_from_row(keys: &Keyring, r: &impl Columns) -> Result<Destination> {
    let id = r.text(0)?;
    Ok(Destination {
        config: seal::open_map(keys, seal::CONFIG, &id, &r.text(5)?)?,
        credentials: seal::open_map(keys, seal::CREDENTIALS, &id, &r.text(6)?)?,
        id,
        tenant_id: r.text(1)?,
        kind: r.text(2)?,
        topics: topics_from_json(&r.text(3)?)?,
        filter: r
            .opt_text(4)?
            .map(|s| from_json("destinations.filter", &s))
            .transpose()?,
        delivery_metadata: opt_meta("destinations.delivery_metadata", r.opt_text(7)?)?,
        metadata: opt_meta("destinations.metadata", r.opt_text(8)?)?,
        disabled_at: r.opt_int(9)?.map(ts),
        created_at: ts(r.int(10)?),
        updated_at: ts(r.int(11)?),
        expires_at: r.opt_int(12)?.map(ts),
    })
}

/// An event whose [`EVENT_COLS`] start at column `o`.
pub(crate) fn event_at(r: &impl Columns, o: usize) -> Result<StoredEvent> {
    Ok(StoredEvent {
        event: Event {
            id: r.text(o)?,
            tenant_id: r.text(o + 1)?,
            destination_id: r.opt_text(o + 2)?,
            topic: r.text(o + 3)?,
            time: ts(r.int(o + 4)?),
            metadata: from_json("events.metadata", &r.text(o + 5)?)?,
            data: from_json("events.data", &r.text(o + 6)?)?,
            eligible_for_retry: r.flag(o + 7)?,
        },
        matched_destination_ids: from_json("events.matched", &r.text(o + 8)?)?,
        created_at: ts(r.int(o + 9)?),
    })
}

pub(crate) fn event_from_row(r: &impl Columns) -> Result<StoredEvent> {
    event_at(r, 0)
}

pub(crate) fn delivery_from_row(r: &impl Columns) -> Result<Delivery> {
    let status = r.text(4)?;
    Ok(Delivery {
        id: r.text(0)?,
        event_id: r.text(1)?,
        tenant_id: r.text(2)?,
        destination_id: r.text(3)?,
        status: DeliveryStatus::parse(&status).ok_or(StoreError::Corrupt {
            column: "deliveries.status",
            detail: status,
        })?,
        attempts: r.count(5)?,
        next_attempt_at: ts(r.int(6)?),
        manual: r.flag(7)?,
        created_at: ts(r.int(8)?),
        retry_base: r.count(9)?,
    })
}

pub(crate) fn attempt_from_row(r: &impl Columns) -> Result<Attempt> {
    let status = r.text(7)?;
    Ok(Attempt {
        id: r.text(0)?,
        delivery_id: r.text(1)?,
        tenant_id: r.text(2)?,
        event_id: r.text(3)?,
        destination_id: r.text(4)?,
        destination_type: r.text(5)?,
        topic: r.text(6)?,
        status: AttemptStatus::parse(&status).ok_or(StoreError::Corrupt {
            column: "attempts.status",
            detail: status,
        })?,
        code: r.text(8)?,
        response_data: r
            .opt_text(9)?
            .map(|s| from_json("attempts.response_data", &s))
            .transpose()?,
        attempt_number: r.count(10)?,
        manual: r.flag(11)?,
        time: ts(r.int(12)?),
        latency_ms: r.int(13)?.max(0) as u64,
    })
}

pub(crate) fn tenant_from_row(r: &impl Columns) -> Result<Tenant> {
    Ok(Tenant {
        id: r.text(0)?,
        metadata: opt_meta("tenants.metadata", r.opt_text(1)?)?,
        created_at: ts(r.int(2)?),
        updated_at: ts(r.int(3)?),
        tokens_revoked_at: r.opt_int(4)?.map(ts),
    })
}

pub(crate) fn api_key_from_row(r: &impl Columns) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.text(0)?,
        name: r.text(1)?,
        scopes: from_json("api_keys.scopes", &r.text(2)?)?,
        tenant_id: r.opt_text(3)?,
        secret_hash: r.text(4)?,
        created_at: ts(r.int(5)?),
        expires_at: r.opt_int(6)?.map(ts),
        revoked_at: r.opt_int(7)?.map(ts),
        last_used_at: r.opt_int(8)?.map(ts),
    })
}

// ----- dialects and WHERE clauses -----

/// What differs between the two stores' SQL. Kept to a few explicit items.
pub(crate) trait Dialect: Sized {
    /// One bound parameter as the driver takes it.
    type Param;
    /// The placeholder of the `n`th parameter (1-based): `?n` or `$n`.
    fn mark(n: usize) -> String;
    /// A text parameter.
    fn text(v: String) -> Self::Param;
    /// An integer parameter.
    fn int(v: i64) -> Self::Param;
    /// The condition "`column` is one of `values`" (never empty), adding its parameters.
    fn any_of(w: &mut Where<Self>, column: &str, values: &[String]) -> String;
    /// How a text parameter compares with a text column inside a row value (a cast or nothing).
    const TEXT_CAST: &'static str;
    /// The bucket number of a microsecond column (`None` without bucketing).
    fn bucket(b: Bucket, col: &str) -> Option<String>;
    /// The first metrics column: the bucket number as an integer, or NULL.
    fn bucket_column(bucket: Option<&str>) -> String;
    /// A dimension column read (and grouped) as text.
    fn dimension(col: &str) -> String;
    /// A filter column compared with text values (`name` is the dimension name).
    fn filter_column(name: &str, col: &str) -> String;
}

/// `AND`-joined conditions and their parameters, numbered in order.
pub(crate) struct Where<D: Dialect> {
    clauses: Vec<String>,
    pub(crate) params: Vec<D::Param>,
}

impl<D: Dialect> Default for Where<D> {
    fn default() -> Self {
        Self {
            clauses: Vec::new(),
            params: Vec::new(),
        }
    }
}

impl<D: Dialect> Where<D> {
    /// Adds a parameter and returns its placeholder.
    pub(crate) fn bind(&mut self, p: D::Param) -> String {
        self.params.push(p);
        D::mark(self.params.len())
    }

    /// Adds a condition written with placeholders from [`Where::bind`].
    pub(crate) fn push(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// Without a tenant filter, the operator tenant's records are left out: they are listed
    /// only through the operator-events API, which asks for that tenant by id.
    pub(crate) fn not_operator(&mut self, column: &str, tenant_ids: &[String]) {
        if tenant_ids.is_empty() {
            let p = self.bind(D::text(OPERATOR_TENANT.to_string()));
            self.push(format!("{column} <> {p}"));
        }
    }

    /// `column` is one of `values`; nothing when `values` is empty.
    pub(crate) fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let c = D::any_of(self, column, values);
        self.push(c);
    }

    /// The range's bounds on a microsecond column.
    pub(crate) fn time(&mut self, column: &str, r: &TimeRange) {
        for (op, bound) in [(">=", r.gte), (">", r.gt), ("<=", r.lte), ("<", r.lt)] {
            if let Some(b) = bound {
                let p = self.bind(D::int(us(b)));
                self.push(format!("{column} {op} {p}"));
            }
        }
    }

    /// ` WHERE …`, or nothing.
    pub(crate) fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The filters of an event list (`events` unaliased).
pub(crate) fn event_filter<D: Dialect>(q: &EventQuery) -> Where<D> {
    let mut w = Where::default();
    w.any_of("id", &q.ids);
    w.any_of("tenant_id", &q.tenant_ids);
    w.not_operator("tenant_id", &q.tenant_ids);
    w.any_of("topic", &q.topics);
    w.time("time", &q.time);
    if !q.destination_ids.is_empty() {
        let routed = D::any_of(&mut w, "d.destination_id", &q.destination_ids);
        w.push(format!(
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.tenant_id = events.tenant_id
             AND {routed})"
        ));
    }
    w
}

/// The filters of an attempt list (`attempts` unaliased); `tenant_col` is how the tenant
/// column is named (SQLite keeps it off its index with a unary `+` in some plans).
pub(crate) fn attempt_filter<D: Dialect>(q: &AttemptQuery, tenant_col: &str) -> Where<D> {
    let mut w = Where::default();
    w.any_of(tenant_col, &q.tenant_ids);
    w.not_operator(tenant_col, &q.tenant_ids);
    w.any_of("event_id", &q.event_ids);
    w.any_of("destination_id", &q.destination_ids);
    w.any_of("destination_type", &q.destination_types);
    w.any_of("topic", &q.topics);
    if let Some(s) = q.status {
        let p = w.bind(D::text(s.as_str().to_string()));
        w.push(format!("status = {p}"));
    }
    w.time("time", &q.time);
    w
}

// ----- seek pagination -----

/// A seek-paginated query ordered by `(time_col, id_col)`: build it with [`Paged::new`], run
/// [`Paged::sql`] with the `Where`'s parameters, and turn the rows into a page with
/// [`Paged::finish`].
pub(crate) struct Paged {
    /// The statement to run.
    pub(crate) sql: String,
    forward: bool,
    had_cursor: bool,
    limit: usize,
}

impl Paged {
    /// Adds the cursor's condition to `w` and writes the statement.
    pub(crate) fn new<D: Dialect>(
        select_from: &str,
        (time_col, id_col): (&str, &str),
        w: &mut Where<D>,
        page: &PageRequest,
    ) -> Result<Self> {
        let forward = !matches!(page.cursor, Some(Cursor::Prev(_)));
        let descending = (page.dir == Dir::Desc) == forward;
        if let Some(Cursor::Next(c) | Cursor::Prev(c)) = &page.cursor {
            let (t, id) = cursor::decode(c)?;
            let op = if descending { "<" } else { ">" };
            let pt = w.bind(D::int(t));
            let pi = w.bind(D::text(id));
            w.push(format!(
                "({time_col}, {id_col}) {op} ({pt}, {pi}{})",
                D::TEXT_CAST
            ));
        }
        let order = if descending { "DESC" } else { "ASC" };
        let limit = page.limit.max(1) as usize;
        let sql = format!(
            "{select_from}{} ORDER BY {time_col} {order}, {id_col} {order} LIMIT {}",
            w.sql(),
            limit + 1
        );
        Ok(Self {
            sql,
            forward,
            had_cursor: page.cursor.is_some(),
            limit,
        })
    }

    /// Rows to fetch at most (one more than the page, to know whether another follows).
    pub(crate) fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// The page of `models` (as fetched, at most [`Paged::fetch`]), with its cursors.
    pub(crate) fn finish<T>(
        &self,
        mut models: Vec<T>,
        key: impl Fn(&T) -> (i64, String),
    ) -> Page<T> {
        let more = models.len() > self.limit;
        models.truncate(self.limit);
        if !self.forward {
            models.reverse();
        }
        let enc = |m: Option<&T>| {
            m.map(|m| {
                let (t, id) = key(m);
                cursor::encode(t, &id)
            })
        };
        let (next, prev) = if self.forward {
            (
                if more { enc(models.last()) } else { None },
                if self.had_cursor {
                    enc(models.first())
                } else {
                    None
                },
            )
        } else {
            (
                enc(models.last()),
                if more { enc(models.first()) } else { None },
            )
        };
        Page { models, next, prev }
    }
}

// ----- metrics -----

/// The extra measures of attempt metrics after `COUNT(*)`, given how each store sums a
/// condition (`sum("a.status = 'success'")`).
pub(crate) fn attempt_measures(sum: impl Fn(&str) -> String) -> String {
    [
        "a.status = 'success'",
        "a.status = 'failed'",
        "a.attempt_number = 1",
        "a.attempt_number > 1 AND NOT a.manual",
        "a.manual",
    ]
    .iter()
    .map(|c| format!(", {}", sum(c)))
    .chain(std::iter::once(format!(", {}", sum("a.attempt_number"))))
    .collect()
}

/// Where a metrics aggregate reads its rows and how it counts them.
pub(crate) struct MetricsFrom<'a> {
    /// The row source: a table with its alias, or a join.
    pub(crate) from: &'a str,
    /// Its microsecond time column.
    pub(crate) time_col: &'a str,
    /// A group's count: `COUNT(*)` over rows, `SUM(x.n)` over roll-up rows that count several.
    pub(crate) count: &'a str,
    /// The extra aggregates after the count: exactly six (see [`attempt_measures`]), or none.
    pub(crate) measures: &'a str,
    /// One more condition on the rows (a roll-up source, a rowid range), inlined.
    pub(crate) also: Option<&'a str>,
}

impl<'a> MetricsFrom<'a> {
    /// Plain rows counted one each.
    pub(crate) fn rows(from: &'a str, time_col: &'a str, measures: &'a str) -> Self {
        Self {
            from,
            time_col,
            count: "COUNT(*)",
            measures,
            also: None,
        }
    }
}

/// An aggregate statement over `src`; `column_of` maps a dimension name to an SQL expression.
pub(crate) fn metrics_sql<D: Dialect>(
    q: &MetricsQuery,
    src: &MetricsFrom,
    column_of: impl Fn(&str) -> String,
) -> (String, Where<D>) {
    let time_col = src.time_col;
    let mut w = Where::<D>::default();
    let start = w.bind(D::int(us(q.start)));
    let end = w.bind(D::int(us(q.end)));
    w.push(format!("{time_col} >= {start} AND {time_col} < {end}"));
    if let Some(also) = src.also {
        w.push(also.to_string());
    }
    for (name, values) in &q.filters {
        w.any_of(&D::filter_column(name, &column_of(name)), values);
    }
    if !q.filters.contains_key("tenant_id") {
        w.not_operator(&column_of("tenant_id"), &[]);
    }
    let bucket = D::bucket(q.bucket, time_col);
    let mut select = vec![D::bucket_column(bucket.as_deref())];
    let mut group = Vec::new();
    if bucket.is_some() {
        group.push("1".to_string());
    }
    for (i, d) in q.dimensions.iter().enumerate() {
        select.push(D::dimension(&column_of(d)));
        group.push((i + 2).to_string());
    }
    let group_by = if group.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {0} ORDER BY {0}", group.join(", "))
    };
    let sql = format!(
        "SELECT {}, {}{} FROM {}{}{group_by} LIMIT {}",
        select.join(", "),
        src.count,
        src.measures,
        src.from,
        w.sql(),
        q.row_limit + 1
    );
    (sql, w)
}

/// One row of a [`metrics_sql`] statement.
pub(crate) fn metrics_row(
    q: &MetricsQuery,
    has_measures: bool,
    r: &impl Columns,
) -> Result<MetricsRow> {
    let dims = q.dimensions.len();
    let extra = |i: usize| -> Result<u64> {
        if has_measures {
            Ok(r.opt_int(dims + 2 + i)?.unwrap_or(0) as u64)
        } else {
            Ok(0)
        }
    };
    Ok(MetricsRow {
        bucket: r.opt_int(0)?.and_then(|v| bucket_start(q.bucket, v)),
        dimensions: q
            .dimensions
            .iter()
            .enumerate()
            .map(|(i, d)| Ok((d.clone(), r.opt_text(i + 1)?.unwrap_or_default())))
            .collect::<Result<_>>()?,
        count: r.int(dims + 1)? as u64,
        successful: extra(0)?,
        failed: extra(1)?,
        first_attempts: extra(2)?,
        retries: extra(3)?,
        manual: extra(4)?,
        attempt_number_sum: extra(5)?,
    })
}

/// The start of the bucket a bucket number stands for.
fn bucket_start(b: Bucket, v: i64) -> Option<Timestamp> {
    match b {
        Bucket::None => None,
        Bucket::Seconds(_) => Timestamp::from_second(v).ok(),
        Bucket::Months(_) => {
            let (year, month) = (v.div_euclid(12), v.rem_euclid(12) + 1);
            jiff::civil::date(year as i16, month as i8, 1)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .ok()
                .map(|z| z.timestamp())
        }
    }
}

//! SQLite's dialect of the shared SQL ([`crate::sql`]): numbered `?n` parameters,
//! `IN (?1, ?2, …)` lists, `strftime` month buckets, and the driver's side of seek
//! pagination, metrics aggregation and row decoding.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row};

use crate::query::*;
use crate::sql::{self as shared, Columns, Dialect, Paged};
use crate::{Result, StoreError};

/// SQLite's SQL.
pub(super) struct Sqlite;

/// `AND`-joined conditions and their `?n` parameters.
pub(super) type Where = shared::Where<Sqlite>;

impl Dialect for Sqlite {
    type Param = SqlValue;
    fn mark(n: usize) -> String {
        format!("?{n}")
    }
    fn text(v: String) -> SqlValue {
        SqlValue::Text(v)
    }
    fn int(v: i64) -> SqlValue {
        SqlValue::Integer(v)
    }
    fn any_of(w: &mut Where, column: &str, values: &[String]) -> String {
        let marks: Vec<String> = values
            .iter()
            .map(|v| w.bind(SqlValue::Text(v.clone())))
            .collect();
        format!("{column} IN ({})", marks.join(", "))
    }
    const TEXT_CAST: &'static str = "";
    fn bucket(b: Bucket, col: &str) -> Option<String> {
        match b {
            Bucket::None => None,
            Bucket::Seconds(n) => Some(format!("(({col} / 1000000) / {n}) * {n}")),
            Bucket::Months(n) => Some(format!(
                "(((CAST(strftime('%Y', {col} / 1000000, 'unixepoch') AS INTEGER) * 12 + CAST(strftime('%m', {col} / 1000000, 'unixepoch') AS INTEGER) - 1) / {n}) * {n})"
            )),
        }
    }
    fn bucket_column(bucket: Option<&str>) -> String {
        bucket.unwrap_or("NULL").to_string()
    }
    fn dimension(col: &str) -> String {
        format!("CAST({col} AS TEXT)")
    }
    // Text columns are compared as they are, so their indexes serve the filter (a CAST would
    // hide them); the integer columns are compared as text.
    fn filter_column(name: &str, col: &str) -> String {
        match name {
            "manual" | "attempt_number" => Self::dimension(col),
            _ => col.to_string(),
        }
    }
}

impl Columns for Row<'_> {
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.get(i)?)
    }
    fn count(&self, i: usize) -> Result<u32> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.get(i)?)
    }
}

/// Runs a seek-paginated query ordered by `(time_col, id_col)`.
pub(super) fn paged<T>(
    conn: &Connection,
    select_from: &str,
    cols: (&str, &str),
    mut w: Where,
    page: &PageRequest,
    map: impl Fn(&Row) -> Result<T>,
    key: impl Fn(&T) -> (i64, String),
) -> Result<Page<T>> {
    let p = Paged::new(select_from, cols, &mut w, page)?;
    let mut stmt = conn.prepare_cached(&p.sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(w.params.iter()))?;
    let mut models = Vec::with_capacity(p.fetch());
    while let Some(r) = rows.next()? {
        models.push(map(r)?);
    }
    Ok(p.finish(models, key))
}

/// Runs an aggregate built by [`shared::metrics_sql`].
pub(super) fn aggregate(
    conn: &Connection,
    q: &MetricsQuery,
    src: &shared::MetricsFrom,
    column_of: impl Fn(&str) -> String,
) -> Result<Vec<MetricsRow>> {
    let (sql, w) = shared::metrics_sql::<Sqlite>(q, src, column_of);
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(w.params.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(shared::metrics_row(q, !src.measures.is_empty(), r)?);
    }
    Ok(out)
}

/// Sums a condition (SQLite's comparisons are already 0 or 1).
pub(super) fn sum(condition: &str) -> String {
    format!("SUM({condition})")
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        StoreError::Corrupt {
            column: "value",
            detail: e.to_string(),
        }
    }
}

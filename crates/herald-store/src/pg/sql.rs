//! PostgreSQL's dialect of the shared SQL ([`crate::sql`]): numbered `$n` parameters,
//! `= ANY($n::text[])` lists, explicit casts, and the drivers' side of seek pagination and
//! metrics aggregation.

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::Result;
use crate::query::*;
use crate::sql::{self as shared, Columns, Dialect, Paged};

/// A boxed query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// PostgreSQL's SQL.
pub(crate) struct Pg;

/// `AND`-joined conditions and their `$n` parameters.
pub(crate) type Where = shared::Where<Pg>;

impl Dialect for Pg {
    type Param = Param;
    fn mark(n: usize) -> String {
        format!("${n}")
    }
    fn text(v: String) -> Param {
        Box::new(v)
    }
    fn int(v: i64) -> Param {
        Box::new(v)
    }
    fn any_of(w: &mut Where, column: &str, values: &[String]) -> String {
        let p = w.param(values.to_vec());
        format!("{column} = ANY({p}::text[])")
    }
    const TEXT_CAST: &'static str = "::text";
    fn bucket(b: Bucket, col: &str) -> Option<String> {
        match b {
            Bucket::None => None,
            Bucket::Seconds(n) => Some(format!("((({col}) / 1000000) / {n}) * {n}")),
            Bucket::Months(n) => Some(format!(
                "((((EXTRACT(YEAR FROM to_timestamp(({col}) / 1000000) AT TIME ZONE 'UTC')::bigint * 12) \
                  + EXTRACT(MONTH FROM to_timestamp(({col}) / 1000000) AT TIME ZONE 'UTC')::bigint - 1) / {n}) * {n})"
            )),
        }
    }
    fn bucket_column(bucket: Option<&str>) -> String {
        bucket
            .map(|b| format!("({b})::bigint"))
            .unwrap_or_else(|| "NULL::bigint".into())
    }
    // Dimension values compare and sort as text in byte order, as on the embedded store.
    fn dimension(col: &str) -> String {
        format!("(CAST({col} AS TEXT) COLLATE \"C\")")
    }
    fn filter_column(_name: &str, col: &str) -> String {
        Self::dimension(col)
    }
}

impl Where {
    /// Adds a parameter of any type the driver takes and returns its placeholder (`$n`).
    pub(crate) fn param<T: ToSql + Sync + Send + 'static>(&mut self, v: T) -> String {
        self.bind(Box::new(v))
    }

    /// The parameters as the driver wants them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

impl Columns for Row {
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.try_get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }
    fn count(&self, i: usize) -> Result<u32> {
        Ok(self.try_get::<_, i32>(i)? as u32)
    }
    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.try_get(i)?)
    }
}

/// Runs a seek-paginated query ordered by `(time_col, id_col)`.
pub(crate) async fn paged<T, C: GenericClient>(
    client: &C,
    select_from: &str,
    cols: (&str, &str),
    mut w: Where,
    page: &PageRequest,
    map: impl Fn(&Row) -> Result<T>,
    key: impl Fn(&T) -> (i64, String),
) -> Result<Page<T>> {
    let p = Paged::new(select_from, cols, &mut w, page)?;
    let rows = client.query(&p.sql, &w.refs()).await?;
    let models = rows.iter().map(map).collect::<Result<Vec<T>>>()?;
    Ok(p.finish(models, key))
}

/// Runs an aggregate built by [`shared::metrics_sql`].
pub(crate) async fn aggregate<C: GenericClient>(
    client: &C,
    q: &MetricsQuery,
    from: &str,
    time_col: &str,
    column_of: impl Fn(&str) -> String,
    measures: &str,
) -> Result<Vec<MetricsRow>> {
    let src = shared::MetricsFrom::rows(from, time_col, measures);
    let (sql, w) = shared::metrics_sql::<Pg>(q, &src, column_of);
    let rows = client.query(&sql, &w.refs()).await?;
    rows.iter()
        .map(|r| shared::metrics_row(q, !measures.is_empty(), r))
        .collect()
}

/// Sums a condition as a `bigint` (the attempt metrics' measures).
pub(crate) fn sum(condition: &str) -> String {
    format!("SUM(({condition})::int)::bigint")
}

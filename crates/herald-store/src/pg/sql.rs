//! Dynamic SQL for PostgreSQL: `WHERE` clauses with numbered parameters, seek pagination and
//! metrics aggregation. Same semantics as the embedded store's versions; only the dialect
//! differs (`= ANY($n)` instead of `IN (?, …)`, explicit casts).

use jiff::Timestamp;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::codec::us;
use crate::query::*;
use crate::{Result, cursor};

/// A boxed query parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// `AND`-joined conditions and their parameters, numbered in order.
#[derive(Default)]
pub(crate) struct Where {
    clauses: Vec<String>,
    pub(crate) params: Vec<Param>,
}

impl Where {
    /// Adds a parameter and returns its placeholder (`$n`).
    pub(crate) fn param<T: ToSql + Sync + Send + 'static>(&mut self, v: T) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    /// Adds a condition written with placeholders from [`Where::param`].
    pub(crate) fn push(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// Without a tenant filter, the operator tenant's records are left out (they are listed
    /// only through the operator-events API, which asks for that tenant by id).
    pub(crate) fn not_operator(&mut self, column: &str, tenant_ids: &[String]) {
        if tenant_ids.is_empty() {
            let p = self.param(herald_core::operator::OPERATOR_TENANT.to_string());
            self.push(format!("{column} <> {p}"));
        }
    }

    /// `column = ANY($n)`; nothing when `values` is empty.
    pub(crate) fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let p = self.param(values.to_vec());
        self.push(format!("{column} = ANY({p}::text[])"));
    }

    /// The range's bounds on a microsecond column.
    pub(crate) fn time(&mut self, column: &str, r: &TimeRange) {
        for (op, bound) in [(">=", r.gte), (">", r.gt), ("<=", r.lte), ("<", r.lt)] {
            if let Some(b) = bound {
                let p = self.param(us(b));
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

    /// The parameters as the driver wants them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Runs a seek-paginated query ordered by `(time_col, id_col)`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn paged<T, C: GenericClient>(
    client: &C,
    select_from: &str,
    (time_col, id_col): (&str, &str),
    mut w: Where,
    page: &PageRequest,
    map: impl Fn(&Row) -> Result<T>,
    key: impl Fn(&T) -> (i64, String),
) -> Result<Page<T>> {
    let forward = !matches!(page.cursor, Some(Cursor::Prev(_)));
    let descending = (page.dir == Dir::Desc) == forward;
    if let Some(Cursor::Next(c) | Cursor::Prev(c)) = &page.cursor {
        let (t, id) = cursor::decode(c)?;
        let op = if descending { "<" } else { ">" };
        let pt = w.param(t);
        let pi = w.param(id);
        w.push(format!("({time_col}, {id_col}) {op} ({pt}, {pi}::text)"));
    }
    let order = if descending { "DESC" } else { "ASC" };
    let limit = page.limit.max(1) as usize;
    let sql = format!(
        "{select_from}{} ORDER BY {time_col} {order}, {id_col} {order} LIMIT {}",
        w.sql(),
        limit + 1
    );
    let rows = client.query(&sql, &w.refs()).await?;
    let mut models = rows.iter().map(map).collect::<Result<Vec<T>>>()?;
    let more = models.len() > limit;
    models.truncate(limit);
    if !forward {
        models.reverse();
    }
    let enc = |m: Option<&T>| {
        m.map(|m| {
            let (t, id) = key(m);
            cursor::encode(t, &id)
        })
    };
    let (next, prev) = if forward {
        (
            if more { enc(models.last()) } else { None },
            if page.cursor.is_some() {
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
    Ok(Page { models, next, prev })
}

fn bucket_sql(b: Bucket, col: &str) -> Option<String> {
    match b {
        Bucket::None => None,
        Bucket::Seconds(n) => Some(format!("((({col}) / 1000000) / {n}) * {n}")),
        Bucket::Months(n) => Some(format!(
            "((((EXTRACT(YEAR FROM to_timestamp(({col}) / 1000000) AT TIME ZONE 'UTC')::bigint * 12) \
              + EXTRACT(MONTH FROM to_timestamp(({col}) / 1000000) AT TIME ZONE 'UTC')::bigint - 1) / {n}) * {n})"
        )),
    }
}

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

/// Shared aggregation: `from` names the row source, `time_col` its time, `measures` the
/// extra aggregate expressions after `COUNT(*)` (exactly six, each a `bigint`, or none).
/// `column_of` maps a dimension name to an SQL expression.
pub(crate) async fn aggregate<C: GenericClient>(
    client: &C,
    q: &MetricsQuery,
    from: &str,
    time_col: &str,
    column_of: impl Fn(&str) -> String,
    measures: &str,
) -> Result<Vec<MetricsRow>> {
    let mut w = Where::default();
    let start = w.param(us(q.start));
    let end = w.param(us(q.end));
    w.push(format!("{time_col} >= {start} AND {time_col} < {end}"));
    // Dimension values compare and sort as text in byte order, as on the embedded store.
    let text = |name: &str| format!("(CAST({} AS TEXT) COLLATE \"C\")", column_of(name));
    for (name, values) in &q.filters {
        w.any_of(&text(name), values);
    }
    if !q.filters.contains_key("tenant_id") {
        w.not_operator(&column_of("tenant_id"), &[]);
    }
    let bucket = bucket_sql(q.bucket, time_col);
    let mut select = vec![
        bucket
            .clone()
            .map(|b| format!("({b})::bigint"))
            .unwrap_or_else(|| "NULL::bigint".into()),
    ];
    let mut group = Vec::new();
    if bucket.is_some() {
        group.push("1".to_string());
    }
    for (i, d) in q.dimensions.iter().enumerate() {
        select.push(text(d));
        group.push((i + 2).to_string());
    }
    let group_by = if group.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {0} ORDER BY {0}", group.join(", "))
    };
    let sql = format!(
        "SELECT {}, COUNT(*){measures} FROM {from}{}{group_by} LIMIT {}",
        select.join(", "),
        w.sql(),
        q.row_limit + 1
    );
    let rows = client.query(&sql, &w.refs()).await?;
    let dims = q.dimensions.len();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let count: i64 = r.try_get(dims + 1)?;
        let extra = |i: usize| -> Result<u64> {
            if measures.is_empty() {
                Ok(0)
            } else {
                Ok(r.try_get::<_, Option<i64>>(dims + 2 + i)?.unwrap_or(0) as u64)
            }
        };
        out.push(MetricsRow {
            bucket: r
                .try_get::<_, Option<i64>>(0)?
                .and_then(|v| bucket_start(q.bucket, v)),
            dimensions: q
                .dimensions
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    Ok((
                        d.clone(),
                        r.try_get::<_, Option<String>>(i + 1)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<_>>()?,
            count: count as u64,
            successful: extra(0)?,
            failed: extra(1)?,
            first_attempts: extra(2)?,
            retries: extra(3)?,
            manual: extra(4)?,
            attempt_number_sum: extra(5)?,
        });
    }
    Ok(out)
}

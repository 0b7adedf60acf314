//! The embedded store's query plans, for tests that check which index a statement uses.

/// The plan SQLite (the bundled version) picks for `sql`, one detail line per step, as
/// `EXPLAIN QUERY PLAN` gives it. Parameters stay unbound (NULL).
pub fn sqlite_plan(conn: &rusqlite::Connection, sql: &str) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("cannot plan {sql}: {e}"));
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(3))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .unwrap_or_else(|e| panic!("cannot plan {sql}: {e}"));
    rows.join("\n")
}

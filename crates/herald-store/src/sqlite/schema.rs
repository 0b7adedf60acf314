//! The embedded store's schema: versioned migrations, applied in order at open.

use rusqlite::Connection;

use crate::{Result, StoreError};

/// Newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Schema migrations; entry `i` moves the database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    metadata TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX tenants_created ON tenants (created_at, id);

CREATE TABLE destinations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    topics TEXT NOT NULL,
    filter TEXT,
    config TEXT NOT NULL,
    credentials TEXT NOT NULL,
    delivery_metadata TEXT,
    metadata TEXT,
    disabled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX destinations_tenant ON destinations (tenant_id, created_at);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    destination_id TEXT,
    topic TEXT NOT NULL,
    time INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    data TEXT NOT NULL,
    eligible_for_retry INTEGER NOT NULL,
    matched TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_time ON events (time, id);
CREATE INDEX events_tenant_time ON events (tenant_id, time, id);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    manual INTEGER NOT NULL,
    retry_base INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id, destination_id);
CREATE INDEX deliveries_destination ON deliveries (destination_id, status);
CREATE INDEX deliveries_created ON deliveries (created_at);

CREATE TABLE destination_health (
    destination_id TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL
);

CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    destination_type TEXT NOT NULL,
    topic TEXT NOT NULL,
    status TEXT NOT NULL,
    code TEXT NOT NULL,
    response_data TEXT,
    attempt_number INTEGER NOT NULL,
    manual INTEGER NOT NULL,
    time INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL
);
CREATE INDEX attempts_time ON attempts (time, id);
CREATE INDEX attempts_tenant_time ON attempts (tenant_id, time, id);
CREATE INDEX attempts_destination_time ON attempts (destination_id, time, id);
CREATE INDEX attempts_event ON attempts (event_id);
CREATE INDEX events_created ON events (created_at);
"#,
    // 2: settings shared by everything using the database (generated keys).
    r#"
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // 3: tenant token revocation (the generation tenant tokens carry).
    r#"
ALTER TABLE tenants ADD COLUMN tokens_revoked_at INTEGER;
"#,
    // 4: scoped API keys (only the SHA-256 of each secret is stored).
    r#"
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    tenant_id TEXT,
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_created ON api_keys (created_at, id);
"#,
    // 5: used single-use tokens (pre-signed CSV URLs), kept until they expire.
    r#"
CREATE TABLE used_nonces (
    nonce TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX used_nonces_expiry ON used_nonces (expires_at);
"#,
    // 6: destination expiry, and which expiry notice was produced for the current expiry
    // (0 none, 1 expiring, 2 expired; reset when expires_at changes).
    r#"
ALTER TABLE destinations ADD COLUMN expires_at INTEGER;
ALTER TABLE destinations ADD COLUMN expiry_notice INTEGER NOT NULL DEFAULT 0;
"#,
    // 7: destination and event ids are unique per tenant (they were global), and ids of events
    // purged inside the idempotency window are remembered. SQLite cannot change a primary key
    // in place: the two tables are rebuilt.
    r#"
CREATE TABLE destinations_v7 (
    id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    topics TEXT NOT NULL,
    filter TEXT,
    config TEXT NOT NULL,
    credentials TEXT NOT NULL,
    delivery_metadata TEXT,
    metadata TEXT,
    disabled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    expiry_notice INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO destinations_v7 (id, tenant_id, type, topics, filter, config, credentials, delivery_metadata,
    metadata, disabled_at, created_at, updated_at, expires_at, expiry_notice)
    SELECT id, tenant_id, type, topics, filter, config, credentials, delivery_metadata,
    metadata, disabled_at, created_at, updated_at, expires_at, expiry_notice FROM destinations;
DROP TABLE destinations;
ALTER TABLE destinations_v7 RENAME TO destinations;
CREATE INDEX destinations_tenant ON destinations (tenant_id, created_at);

CREATE TABLE events_v7 (
    id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    destination_id TEXT,
    topic TEXT NOT NULL,
    time INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    data TEXT NOT NULL,
    eligible_for_retry INTEGER NOT NULL,
    matched TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO events_v7 (id, tenant_id, destination_id, topic, time, metadata, data, eligible_for_retry, matched, created_at)
    SELECT id, tenant_id, destination_id, topic, time, metadata, data, eligible_for_retry, matched, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_v7 RENAME TO events;
CREATE INDEX events_time ON events (time, id);
CREATE INDEX events_tenant_time ON events (tenant_id, time, id);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE destination_health_v7 (
    tenant_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, destination_id)
);
INSERT INTO destination_health_v7 (tenant_id, destination_id, consecutive_failures)
    SELECT d.tenant_id, h.destination_id, h.consecutive_failures
    FROM destination_health h JOIN destinations d ON d.id = h.destination_id;
DROP TABLE destination_health;
ALTER TABLE destination_health_v7 RENAME TO destination_health;

CREATE TABLE purged_event_ids (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    matched TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX purged_event_ids_created ON purged_event_ids (created_at);
"#,
    // 8: the time indexes of events and attempts no longer repeat the text id after the time
    // (about 36 bytes per entry, five entries per published and delivered event). The lists
    // still order by (time, id): SQLite walks the index in time order and sorts only rows
    // with the same microsecond by id ("USE TEMP B-TREE FOR RIGHT PART OF ORDER BY"). Which
    // query needs which index:
    // - events_time: the event list and event metrics without a tenant filter;
    // - events_tenant_time: a tenant's event list and metrics;
    // - attempts_time: the attempt list and metrics without a tenant filter, retention purge;
    // - attempts_tenant_time: a tenant's attempt list and metrics;
    // - attempts_destination_time: a destination's attempt list.
    // Rows are not touched; only these indexes are rebuilt.
    r#"
DROP INDEX events_time;
CREATE INDEX events_time ON events (time);
DROP INDEX events_tenant_time;
CREATE INDEX events_tenant_time ON events (tenant_id, time);
DROP INDEX attempts_time;
CREATE INDEX attempts_time ON attempts (time);
DROP INDEX attempts_tenant_time;
CREATE INDEX attempts_tenant_time ON attempts (tenant_id, time);
DROP INDEX attempts_destination_time;
CREATE INDEX attempts_destination_time ON attempts (destination_id, time);
"#,
    // 9: fewer and narrower delivery index entries, about 120 bytes and two index inserts
    // fewer per published and delivered event. Rows are not touched, but for finished
    // deliveries whose event is already gone (a v8 purge took events and deliveries by their
    // own ages, so a delivery created after its event, by a manual retry, could outlive it):
    // retention now reaches deliveries only through their event, so these are dropped here.
    // - `deliveries_created` served only the retention purge, which now deletes an event's
    //   deliveries together with the event (walking `events_created`, one `deliveries_event`
    //   search per event).
    // - `deliveries_event` keeps the event id alone: an event has one delivery per routed
    //   destination, so the destination is checked on those few rows instead of being
    //   repeated in every entry (36 bytes).
    // - `deliveries_destination` has no entry for a successful delivery (most of them), so
    //   recording a success only deletes the pending entry. Its queries say `status <>
    //   'success'` (SQLite uses a partial index only when the query states its condition);
    //   replaying successful deliveries finds them through the destination's successful
    //   attempts.
    // Which query uses which delivery index (EXPLAIN QUERY PLAN, `tests/schema.rs` checks):
    // - deliveries_due: claims, pending count, releasing leases, the backlog, a tenant's
    //   cancellation;
    // - deliveries_event: the duplicate-delivery check of a manual retry, the event list's
    //   destination filter, event metrics by destination, replay's "already pending" check,
    //   the retention purge (pending check and deleting an event's deliveries);
    // - deliveries_destination: cancelling a destination's pending deliveries, replaying its
    //   failed or cancelled ones;
    // - the primary key: every update of one delivery by id.
    // The backlog reads pending deliveries through deliveries_due and groups them (it walked
    // all of deliveries_destination before).
    // Event metrics filtered by a destination walk the event time index and look each event's
    // deliveries up in `deliveries_event` (they searched `deliveries_destination` before).
    // Unchanged from migration 8: events_time, events_tenant_time, attempts_time,
    // attempts_tenant_time, attempts_destination_time (see there; also replaying successful
    // deliveries); attempts_event: an event's attempts and the attempt count of a manual
    // retry; events_created: the retention purge.
    r#"
DELETE FROM deliveries WHERE status <> 'pending' AND NOT EXISTS
    (SELECT 1 FROM events e WHERE e.tenant_id = deliveries.tenant_id AND e.id = deliveries.event_id);
DROP INDEX deliveries_created;
DROP INDEX deliveries_event;
CREATE INDEX deliveries_event ON deliveries (event_id);
DROP INDEX deliveries_destination;
CREATE INDEX deliveries_destination ON deliveries (destination_id, status) WHERE status <> 'success';
"#,
    // 10: the metrics roll-up (see `rollup.rs`): counts of events, routed deliveries and
    // attempts by tenant and dimension values, per minute (sources 0, 1, 2) and per second
    // (3, 4, 5), folded in after the rows are written, up to a watermark per kind (rows 0, 1,
    // 2 of the state; `changed` counts purges and replays, which a pass counting meanwhile
    // must not miss). `time` is the unit's start in microseconds. Existing rows are folded in
    // by the first roll-up passes after the upgrade (queries count the rows above the
    // watermark meanwhile). The primary key serves tenant-scoped queries (the portal's), the
    // time index the operator's queries over every tenant and the purge's clean-up of zero
    // rows.
    r#"
CREATE TABLE metric_rollup (
    source INTEGER NOT NULL,
    tenant_id TEXT NOT NULL,
    time INTEGER NOT NULL,
    topic TEXT NOT NULL,
    destination_id TEXT NOT NULL DEFAULT '',
    destination_type TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    code TEXT NOT NULL DEFAULT '',
    manual INTEGER NOT NULL DEFAULT 0,
    attempt_number INTEGER NOT NULL DEFAULT 0,
    n INTEGER NOT NULL,
    PRIMARY KEY (source, tenant_id, time, topic, destination_id, destination_type, status, code, manual, attempt_number)
) WITHOUT ROWID;
CREATE INDEX metric_rollup_time ON metric_rollup (source, time);
CREATE TABLE metric_rollup_state (
    source INTEGER PRIMARY KEY,
    upto INTEGER NOT NULL,
    changed INTEGER NOT NULL DEFAULT 0
);
INSERT INTO metric_rollup_state (source, upto) VALUES (0, 0), (1, 0), (2, 0);
"#,
];

/// Brings the database to [`SCHEMA_VERSION`] (with `apply` false, refuses one that needs
/// migrations); refuses a database written by a newer Herald.
pub(super) fn migrate(conn: &Connection, apply: bool) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if !apply && version < SCHEMA_VERSION {
        return Err(StoreError::MigrationRequired {
            found: version,
            required: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let next = i as i64 + 1;
        tracing::info!(version = next, "applying embedded store migration");
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {next}; COMMIT;"
        ))?;
    }
    Ok(())
}

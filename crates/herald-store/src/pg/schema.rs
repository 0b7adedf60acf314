//! PostgreSQL schema and versioned migrations.
//!
//! Versions are rows of `herald_schema_migrations`; migration `i` (1-based) creates version
//! `i`. All pending migrations are applied in one transaction holding an advisory lock, so
//! nodes starting at the same time never race: the first applies them, the others wait and
//! then find nothing to do. A database whose newest version is above [`SCHEMA_VERSION`] was
//! written by a newer Herald and is refused.
//!
//! Why the column types look like the embedded store's: times are `BIGINT` microseconds
//! since the Unix epoch (exact seek cursors, identical bucketing maths), JSON is `TEXT`
//! (events keep their key order byte for byte, as published), and every id column uses the
//! `"C"` collation so ordering, cursors and metrics sort exactly as the embedded store does,
//! whatever the database's default collation.

use tokio_postgres::Client;

use crate::{Result, StoreError};

/// One schema step.
struct Migration {
    /// What it does, recorded next to its version.
    description: &'static str,
    /// The DDL.
    sql: &'static str,
}

/// Every migration, oldest first; the position (1-based) is the version it creates.
const MIGRATIONS: &[Migration] = &[
    Migration {
        description: "initial schema",
        sql: r#"
CREATE TABLE tenants (
    id TEXT COLLATE "C" PRIMARY KEY,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tenants_created ON tenants (created_at, id);

CREATE TABLE destinations (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    type TEXT COLLATE "C" NOT NULL,
    topics TEXT NOT NULL,
    filter TEXT,
    config TEXT NOT NULL,
    credentials TEXT NOT NULL,
    delivery_metadata TEXT,
    metadata TEXT,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX destinations_tenant ON destinations (tenant_id, created_at);

CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    destination_id TEXT COLLATE "C",
    topic TEXT COLLATE "C" NOT NULL,
    time BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    data TEXT NOT NULL,
    eligible_for_retry BOOLEAN NOT NULL,
    matched TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_time ON events (time, id);
CREATE INDEX events_tenant_time ON events (tenant_id, time, id);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE deliveries (
    id TEXT COLLATE "C" PRIMARY KEY,
    event_id TEXT COLLATE "C" NOT NULL,
    tenant_id TEXT COLLATE "C" NOT NULL,
    destination_id TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    leased BOOLEAN NOT NULL DEFAULT false,
    manual BOOLEAN NOT NULL,
    retry_base INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id, destination_id);
-- At most one pending delivery per (event, destination), whichever node creates it.
CREATE UNIQUE INDEX deliveries_one_pending ON deliveries (event_id, destination_id)
    WHERE status = 'pending';
CREATE INDEX deliveries_destination ON deliveries (destination_id, status);
CREATE INDEX deliveries_created ON deliveries (created_at);

-- One row per existing destination, created with it: counting failures is then always an
-- UPDATE, which PostgreSQL serializes per row across nodes.
CREATE TABLE destination_health (
    destination_id TEXT COLLATE "C" PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL
);

CREATE TABLE attempts (
    id TEXT COLLATE "C" PRIMARY KEY,
    delivery_id TEXT COLLATE "C" NOT NULL,
    tenant_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    destination_id TEXT COLLATE "C" NOT NULL,
    destination_type TEXT COLLATE "C" NOT NULL,
    topic TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    code TEXT NOT NULL,
    response_data TEXT,
    attempt_number INTEGER NOT NULL,
    manual BOOLEAN NOT NULL,
    time BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX attempts_time ON attempts (time, id);
CREATE INDEX attempts_tenant_time ON attempts (tenant_id, time, id);
CREATE INDEX attempts_destination_time ON attempts (destination_id, time, id);
CREATE INDEX attempts_event ON attempts (event_id);

CREATE TABLE settings (
    name TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    },
    Migration {
        description: "tenant token revocation",
        sql: "ALTER TABLE tenants ADD COLUMN tokens_revoked_at BIGINT;",
    },
    Migration {
        description: "scoped API keys",
        sql: r#"
CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    tenant_id TEXT COLLATE "C",
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_created ON api_keys (created_at, id);
"#,
    },
    Migration {
        description: "used single-use tokens",
        sql: r#"
CREATE TABLE used_nonces (
    nonce TEXT COLLATE "C" PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_nonces_expiry ON used_nonces (expires_at);
"#,
    },
    Migration {
        description: "destination expiry",
        sql: r#"
ALTER TABLE destinations ADD COLUMN expires_at BIGINT;
ALTER TABLE destinations ADD COLUMN expiry_notice SMALLINT NOT NULL DEFAULT 0;
"#,
    },
    Migration {
        description: "ids unique per tenant; ids of purged events kept for the idempotency window",
        sql: r#"
ALTER TABLE destination_health ADD COLUMN tenant_id TEXT COLLATE "C";
UPDATE destination_health h SET tenant_id = d.tenant_id FROM destinations d WHERE d.id = h.destination_id;
DELETE FROM destination_health WHERE tenant_id IS NULL;
ALTER TABLE destination_health ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE destination_health DROP CONSTRAINT destination_health_pkey;
ALTER TABLE destination_health ADD PRIMARY KEY (tenant_id, destination_id);
ALTER TABLE destinations DROP CONSTRAINT destinations_pkey;
ALTER TABLE destinations ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD PRIMARY KEY (tenant_id, id);
DROP INDEX deliveries_one_pending;
CREATE UNIQUE INDEX deliveries_one_pending ON deliveries (tenant_id, event_id, destination_id)
    WHERE status = 'pending';
CREATE TABLE purged_event_ids (
    tenant_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    matched TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX purged_event_ids_created ON purged_event_ids (created_at);
"#,
    },
    // 7: two delivery index entries fewer per published and delivered event (one at the
    // insert, one at the success update, which PostgreSQL cannot make a HOT update since it
    // changes indexed columns), as in the embedded store's schema v9.
    // - `deliveries_created` served only the retention purge, which now deletes an event's
    //   deliveries together with the event. A finished delivery whose event is already gone
    //   (a v6 purge took deliveries by their own age and events by theirs, so a delivery
    //   created after its event, by a manual retry, could outlive it) would never be reached
    //   again, so those are deleted here.
    // - `deliveries_event` keeps the event id alone: an event has one delivery per routed
    //   destination, so the destination (and tenant) are checked on those few rows. It
    //   serves a manual retry's checks, the event list's destination filter, replay's
    //   "already pending" check and the purge.
    Migration {
        description: "deliveries purged with their event; narrower delivery indexes",
        sql: r#"
DELETE FROM deliveries d WHERE d.status <> 'pending' AND NOT EXISTS
    (SELECT 1 FROM events e WHERE e.tenant_id = d.tenant_id AND e.id = d.event_id);
DROP INDEX deliveries_created;
DROP INDEX deliveries_event;
CREATE INDEX deliveries_event ON deliveries (event_id);
"#,
    },
];

/// Newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Key of the advisory lock that serializes migrations (any constant unique to Herald).
const MIGRATION_LOCK: i64 = 0x4845_5241_4c44_0001;

const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS herald_schema_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// The schema version of the database (0 when Herald never migrated it).
pub async fn current_version(client: &Client) -> Result<i64> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('herald_schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> = client
        .query_one("SELECT max(version) FROM herald_schema_migrations", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

/// Checks the schema and, when `apply`, brings it up to date. Returns the version the
/// database is at afterwards.
pub async fn prepare(client: &mut Client, apply: bool) -> Result<i64> {
    let found = current_version(client).await?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    if !apply {
        return Err(StoreError::MigrationRequired {
            found,
            required: SCHEMA_VERSION,
        });
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(CREATE_VERSIONS).await?;
    // Read again under the lock: another node may have migrated while we waited.
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM herald_schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        tracing::info!(
            version,
            description = m.description,
            "applying PostgreSQL migration"
        );
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO herald_schema_migrations (version, description) VALUES ($1, $2)",
            &[&version, &m.description],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(SCHEMA_VERSION)
}

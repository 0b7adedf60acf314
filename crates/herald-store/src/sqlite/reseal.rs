//! Sealing destination rows and settings under the current key at open.

use rusqlite::{Connection, params};

use crate::seal::{self, Keyring, ResealReport};
use crate::{Result, StoreError};

/// A destination row's key (tenant, id) and its stored `config` and `credentials` text.
type RawRow = ((String, String), String, String);

/// Every destination's key and stored `config` and `credentials` text.
pub(super) fn raw_destination_rows(conn: &Connection) -> Result<Vec<RawRow>> {
    let mut stmt = conn.prepare(
        "SELECT tenant_id, id, config, credentials FROM destinations ORDER BY tenant_id, id",
    )?;
    let rows = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Seals every destination row that is not sealed under the current key, in one transaction,
/// before the writer starts. Refuses (changing nothing) when a row does not open with any
/// configured key. After rewriting plaintext rows, the old text is wiped from the file
/// (`secure_delete` while rewriting) and from the WAL (truncating checkpoint).
pub(super) fn reseal_all(conn: &Connection, keys: &Keyring) -> Result<ResealReport> {
    let rows = raw_destination_rows(conn)?;
    let mut report = ResealReport {
        examined: rows.len() as u64,
        ..Default::default()
    };
    let mut unreadable: Option<(u64, String, seal::SealError)> = None;
    let mut rewrite = Vec::new();
    for (key, config, credentials) in rows {
        match seal::row_state(keys, &key.1, &config, &credentials) {
            seal::RowState::Opens(seal::SealState::Current) => {}
            seal::RowState::Opens(state) => rewrite.push((key, config, credentials, state)),
            seal::RowState::Unreadable(e) => match &mut unreadable {
                Some((n, _, _)) => *n += 1,
                None => unreadable = Some((1, key.1, e)),
            },
        }
    }
    if let Some((n, first_id, reason)) = unreadable {
        return Err(StoreError::Unreadable {
            unreadable: n,
            total: report.examined,
            first_id,
            reason,
        });
    }
    let mut settings = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT name, value FROM settings")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (name, value): (String, String) = (r.get(0)?, r.get(1)?);
            if let Some((sealed, state)) = seal::reseal_setting(keys, &name, &value)? {
                settings.push((name, sealed, state));
            }
        }
    }
    if rewrite.is_empty() && settings.is_empty() {
        return Ok(report);
    }
    let had_plaintext = rewrite
        .iter()
        .map(|r| r.3)
        .chain(settings.iter().map(|s| s.2))
        .any(|s| s == seal::SealState::Plaintext);
    conn.pragma_update(None, "secure_delete", true)?;
    let out = (|| -> Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut stmt = conn.prepare(
            "UPDATE destinations SET config = ?2, credentials = ?3 WHERE id = ?1 AND tenant_id = ?4",
        )?;
        for ((tenant_id, id), config, credentials, state) in &rewrite {
            let (c, k) = seal::reseal_row(keys, id, config, credentials)?;
            stmt.execute(params![id, c, k, tenant_id])?;
            match state {
                seal::SealState::Plaintext => report.sealed_plaintext += 1,
                _ => report.rekeyed += 1,
            }
        }
        drop(stmt);
        for (name, sealed, _) in &settings {
            conn.execute(
                "UPDATE settings SET value = ?2 WHERE name = ?1",
                params![name, sealed],
            )?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    if out.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    conn.pragma_update(None, "secure_delete", false)?;
    out?;
    if had_plaintext {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    tracing::info!(
        sealed_plaintext = report.sealed_plaintext,
        rekeyed = report.rekeyed,
        destinations = report.examined,
        key_id = keys.current_id(),
        "sealed destination secrets under the current encryption key"
    );
    Ok(report)
}

//! Sealing destination rows again on PostgreSQL: the check every node runs when it connects
//! (refuse rows no configured key opens, seal plaintext rows from before sealing), and
//! [`PgStore::rekey`], which moves rows from old keys to the current one beside live nodes.
//!
//! Each row is rewritten with a compare-and-set on the text it was read with, so a
//! concurrent update from the API on any node is never overwritten: the pass reads the row
//! again and retries. `rekey` commits once per batch (a batch's row locks are held for that
//! transaction only, milliseconds); delivery never reads these rows, so it goes on meanwhile.
//! Other nodes' caches hold opened values, which a re-seal does not change, so nothing is
//! announced.

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;

use super::PgStore;
use crate::seal::{self, Keyring, ResealReport, RowState, SealCensus, SealState};
use crate::{Result, StoreError};

/// Rows read per round.
const PAGE: i64 = 500;

/// Refuses a database with destination rows no key in `keys` opens, and seals plaintext rows
/// under the current key. Rows under old keys are left to `herald rekey` (another node may
/// not know the current key yet while a rotation is rolled out).
pub(super) async fn check_and_seal_plaintext(pool: &Pool, keys: &Keyring) -> Result<()> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT tenant_id, id, config, credentials FROM destinations ORDER BY tenant_id, id",
            &[],
        )
        .await?;
    let mut census = SealCensus::default();
    let mut first_bad = None;
    let mut plaintext = Vec::new();
    for r in &rows {
        let (tenant_id, id, config, credentials): (String, String, String, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        let state = seal::row_state(keys, &id, &config, &credentials);
        census.count(&state);
        match state {
            RowState::Unreadable(e) => {
                first_bad.get_or_insert((id, e));
            }
            RowState::Opens(SealState::Plaintext) => {
                plaintext.push(((tenant_id, id), config, credentials))
            }
            RowState::Opens(_) => {}
        }
    }
    if let Some((first_id, reason)) = first_bad {
        return Err(StoreError::Unreadable {
            unreadable: census.unreadable,
            total: census.total(),
            first_id,
            reason,
        });
    }
    // Settings (generated admin key, JWT secret): a value no key opens refuses too.
    let mut settings_sealed = 0u64;
    for r in c.query("SELECT name, value FROM settings", &[]).await? {
        let (name, value): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        if let Some((sealed, SealState::Plaintext)) = seal::reseal_setting(keys, &name, &value)? {
            settings_sealed += c
                .execute(
                    "UPDATE settings SET value = $2 WHERE name = $1 AND value = $3",
                    &[&name, &sealed, &value],
                )
                .await?;
        }
    }
    if settings_sealed > 0 {
        tracing::info!(
            settings = settings_sealed,
            "sealed plaintext settings under the current encryption key"
        );
    }
    let mut sealed = 0u64;
    for (key, config, credentials) in plaintext {
        if reseal_one(&**c, keys, key, config, credentials, true).await? {
            sealed += 1;
        }
    }
    if sealed > 0 {
        tracing::info!(
            sealed_plaintext = sealed,
            destinations = census.total(),
            key_id = keys.current_id(),
            "sealed plaintext destination secrets under the current encryption key"
        );
    }
    if census.old > 0 {
        tracing::info!(
            destinations = census.old,
            "destinations are sealed with an old encryption key; run `herald rekey` to move them to the current key"
        );
    }
    Ok(())
}

/// Seals one row again under the current key, compare-and-set on the text it was read with;
/// on a lost race reads the row again and retries. With `only_plaintext`, a row found sealed
/// meanwhile is left alone. Returns whether this call rewrote it.
async fn reseal_one<C: GenericClient>(
    c: &C,
    keys: &Keyring,
    (tenant_id, id): (String, String),
    mut config: String,
    mut credentials: String,
    only_plaintext: bool,
) -> Result<bool> {
    for _ in 0..10 {
        let (new_config, new_credentials) = seal::reseal_row(keys, &id, &config, &credentials)?;
        let n = c
            .execute(
                "UPDATE destinations SET config = $2, credentials = $3
                 WHERE id = $1 AND tenant_id = $6 AND config = $4 AND credentials = $5",
                &[
                    &id,
                    &new_config,
                    &new_credentials,
                    &config,
                    &credentials,
                    &tenant_id,
                ],
            )
            .await?;
        if n == 1 {
            return Ok(true);
        }
        // Changed (or deleted) meanwhile: look again.
        let Some(r) = c
            .query_opt(
                "SELECT config, credentials FROM destinations WHERE id = $1 AND tenant_id = $2",
                &[&id, &tenant_id],
            )
            .await?
        else {
            return Ok(false);
        };
        config = r.try_get(0)?;
        credentials = r.try_get(1)?;
        match seal::row_state(keys, &id, &config, &credentials) {
            RowState::Opens(SealState::Current) => return Ok(false),
            RowState::Opens(SealState::Old) if only_plaintext => return Ok(false),
            RowState::Opens(_) => {}
            RowState::Unreadable(reason) => {
                return Err(StoreError::Sealed {
                    column: seal::CREDENTIALS,
                    id,
                    source: reason,
                });
            }
        }
    }
    Err(StoreError::Conflict {
        what: "destination (changed during re-sealing, try again)",
        id,
    })
}

impl PgStore {
    /// Seals every destination row that is not under the current key (old keys, plaintext)
    /// again under it, `batch` rows per round, calling `progress` after each round. Runs
    /// beside live nodes; each of them must already know the current key (as current or
    /// old). Rows that no configured key opens are skipped and counted, and make the call
    /// fail at the end ([`StoreError::Unreadable`]) after the others were moved.
    pub async fn rekey(
        &self,
        batch: usize,
        mut progress: impl FnMut(&ResealReport),
    ) -> Result<ResealReport> {
        let keys = &self.inner.keys;
        let limit = (batch.max(1) as i64).min(PAGE * 20);
        let mut report = ResealReport::default();
        let mut bad: Option<(u64, String, seal::SealError)> = None;
        let mut after = (String::new(), String::new());
        loop {
            let mut c = self.client().await?;
            let rows = c
                .query(
                    "SELECT tenant_id, id, config, credentials FROM destinations
                     WHERE (tenant_id, id) > ($1, $2) ORDER BY tenant_id, id LIMIT $3",
                    &[&after.0, &after.1, &limit],
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after = (last.try_get(0)?, last.try_get(1)?);
            let mut todo = Vec::new();
            for r in &rows {
                let (tenant_id, id, config, credentials): (String, String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                report.examined += 1;
                match seal::row_state(keys, &id, &config, &credentials) {
                    RowState::Opens(SealState::Current) => {}
                    RowState::Opens(state) => {
                        todo.push(((tenant_id, id), config, credentials, state))
                    }
                    RowState::Unreadable(e) => match &mut bad {
                        Some((n, _, _)) => *n += 1,
                        None => bad = Some((1, id, e)),
                    },
                }
            }
            // One transaction (one commit) per round; run again whole when PostgreSQL picks it
            // as a deadlock victim (e.g. against a tenant deletion locking the same rows).
            let mut tries = 0u32;
            let (rekeyed, sealed_plaintext) = loop {
                let out: Result<(u64, u64)> = async {
                    let tx = c.transaction().await?;
                    let (mut rekeyed, mut plain) = (0, 0);
                    for (key, config, credentials, state) in &todo {
                        let (key, config, credentials) =
                            (key.clone(), config.clone(), credentials.clone());
                        if reseal_one(&*tx, keys, key, config, credentials, false).await? {
                            match state {
                                SealState::Plaintext => plain += 1,
                                _ => rekeyed += 1,
                            }
                        }
                    }
                    tx.commit().await?;
                    Ok((rekeyed, plain))
                }
                .await;
                match out {
                    Err(e) if tries < 5 && super::is_retryable(&e) => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
                    }
                    other => break other?,
                }
            };
            report.rekeyed += rekeyed;
            report.sealed_plaintext += sealed_plaintext;
            progress(&report);
            if (rows.len() as i64) < limit {
                break;
            }
        }
        let c = self.client().await?;
        for r in c.query("SELECT name, value FROM settings", &[]).await? {
            let (name, value): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            if let Some((sealed, _)) = seal::reseal_setting(keys, &name, &value)? {
                c.execute(
                    "UPDATE settings SET value = $2 WHERE name = $1 AND value = $3",
                    &[&name, &sealed, &value],
                )
                .await?;
            }
        }
        if let Some((unreadable, first_id, reason)) = bad {
            return Err(StoreError::Unreadable {
                unreadable,
                total: report.examined,
                first_id,
                reason,
            });
        }
        Ok(report)
    }

    /// How the destination rows are sealed now.
    pub async fn seal_census(&self) -> Result<SealCensus> {
        let c = self.client().await?;
        let mut census = SealCensus::default();
        for r in c
            .query("SELECT id, config, credentials FROM destinations", &[])
            .await?
        {
            census.count(&seal::row_state(
                &self.inner.keys,
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
            ));
        }
        Ok(census)
    }
}

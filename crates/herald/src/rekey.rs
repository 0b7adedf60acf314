//! `herald rekey`: seal every destination again under the current encryption key, the last
//! step of a key rotation (docs/configuration.md, "Rotating the encryption key").
//!
//! - PostgreSQL: runs beside live nodes, a batch of rows at a time, each row rewritten with a
//!   compare-and-set so concurrent API updates win; delivery does not stop.
//! - Embedded store: the data directory belongs to one process, so this needs the server
//!   stopped. Opening the store re-seals every row under the current key — which is also what
//!   a server does when it starts, so restarting with the new key rotates too.
//!
//! It does not choose keys: they come from the configuration like for `herald serve`.

use anyhow::{Context, Result, bail};
use herald_store::pg::{PgOptions, PgStore};
use herald_store::seal::Keyring;
use herald_store::sqlite::SqliteStore;

use crate::config::Config;
use crate::secrets;

/// Options of `herald rekey`.
#[derive(clap::Args)]
pub struct RekeyArgs {
    /// Destinations read per round (PostgreSQL).
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

/// Runs `herald rekey`.
pub fn run(cfg: &Config, args: RekeyArgs) -> Result<()> {
    let keys = secrets::encryption_keys(cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if cfg.database.is_postgres() {
        rt.block_on(rekey_postgres(cfg, keys, args.batch))
    } else {
        rt.block_on(rekey_embedded(cfg, keys))
    }
}

async fn rekey_postgres(cfg: &Config, keys: Keyring, batch: usize) -> Result<()> {
    let where_ = herald_store::pg::describe_url(cfg.database.url.expose());
    let current = keys.current_id().to_string();
    let store = PgStore::connect(&PgOptions {
        url: cfg.database.url.expose().to_string(),
        pool_size: 2,
        migrate: false,
        keys,
    })
    .await
    .with_context(|| format!("cannot use PostgreSQL database {where_}"))?;
    println!("re-sealing destinations in {where_} under encryption key {current}");
    let report = store
        .rekey(batch, |r| {
            println!(
                "  {} destinations examined, {} moved from old keys, {} plaintext sealed",
                r.examined, r.rekeyed, r.sealed_plaintext
            );
        })
        .await
        .context("re-sealing destinations")?;
    let census = store.seal_census().await.context("counting destinations")?;
    println!(
        "done: {} destinations moved from old keys, {} plaintext sealed; {} of {} destinations are sealed with key {current}",
        report.rekeyed,
        report.sealed_plaintext,
        census.current,
        census.total()
    );
    if census.old + census.plaintext > 0 {
        bail!(
            "{} destinations were written under another key while this ran: a node still seals with an old key. Give every node HERALD_ENCRYPTION_KEY = the new key (the old one in HERALD_ENCRYPTION_OLD_KEYS), restart them, and run herald rekey again",
            census.old + census.plaintext
        );
    }
    Ok(())
}

async fn rekey_embedded(cfg: &Config, keys: Keyring) -> Result<()> {
    let _lock = secrets::lock_data_dir(&cfg.data_dir).context(
        "herald rekey needs the embedded store's server stopped; alternatively restart the server with the new key: it re-seals every destination when it starts",
    )?;
    let path = cfg.data_dir.join("herald.db");
    if !path.exists() {
        bail!("no database at {}: nothing to re-seal", path.display());
    }
    let current = keys.current_id().to_string();
    let store =
        SqliteStore::open(&path, &keys).with_context(|| format!("opening {}", path.display()))?;
    let report = store.resealed();
    let census = store.seal_census().await?;
    println!(
        "done: {} destinations moved from old keys, {} plaintext sealed; {} of {} destinations are sealed with key {current}",
        report.rekeyed,
        report.sealed_plaintext,
        census.current,
        census.total()
    );
    Ok(())
}

/// Comment lines for `herald config`: which keys are configured, by id (never the keys).
pub fn describe_keys(cfg: &Config) -> String {
    let mut out = String::new();
    if cfg.encryption_key.is_empty() {
        out.push_str(if cfg.database.is_postgres() {
            "# encryption_key: NOT SET (required with PostgreSQL)\n"
        } else {
            "# encryption_key: not set; the key generated into data_dir/encryption_key is used\n"
        });
    } else if let Some(id) = Keyring::key_id(&cfg.encryption_key.0) {
        out.push_str(&format!("# encryption_key: key id {id}\n"));
    }
    let old: Vec<String> = cfg
        .encryption_old_keys
        .iter()
        .filter_map(|k| Keyring::key_id(&k.0))
        .collect();
    if !old.is_empty() {
        out.push_str(&format!(
            "# encryption_old_keys: key ids {}\n",
            old.join(", ")
        ));
    }
    out
}

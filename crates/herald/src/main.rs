//! The `herald` binary: command line, configuration, logging, the listening socket and the
//! shutdown signal. The server itself is the library's [`herald::run`].

mod bench;
mod client;
mod rekey;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use herald::{config, secrets};
use herald_store::pg::PgStore;
use herald_store::sqlite::SqliteStore;

use crate::config::Config;

/// mimalloc instead of the system allocator: Herald allocates many small, short-lived buffers
/// per request and per attempt, and glibc's malloc and free were about 17 % of all instructions
/// under publish-and-deliver load (callgrind, see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Herald: outbound webhooks and event delivery in one binary.
///
/// Your platform publishes an event once; Herald delivers it to every destination your
/// tenants subscribed (webhooks, RabbitMQ, NATS, Kafka, SQS, Pub/Sub, …), signs it, retries
/// what fails and records every attempt, behind the Hookdeck Outpost API v1. Start with
/// `herald serve --dev`; settings come from a TOML file and `HERALD_*` variables
/// (docs/configuration.md).
#[derive(Parser)]
#[command(name = "herald", version)]
struct Cli {
    /// Path of a TOML configuration file (also `HERALD_CONFIG`).
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the delivery engine.
    Serve {
        /// Development mode: allow http:// and loopback/private targets.
        #[arg(long)]
        dev: bool,
        /// Do not apply pending schema migrations; refuse to start when there are any
        /// (overrides `database.migrate_on_start`).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations (embedded store or PostgreSQL) and exit.
    Migrate,
    /// Print the effective configuration (secrets hidden) and exit.
    Config,
    /// Seal every destination again under the current encryption key (key rotation).
    Rekey(rekey::RekeyArgs),
    /// Measure throughput, latency and memory on this machine and print a report.
    Bench(bench::BenchArgs),
    /// Manage API keys on a running server.
    #[command(name = "api-key", subcommand)]
    ApiKey(client::ApiKeyCommand),
    /// Import a CSV of webhook templates into a tenant's destinations (running server).
    Import(client::ImportArgs),
    /// Export a tenant's destinations as a CSV of webhook templates (running server).
    Export(client::ExportArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HERALD_"))
        .collect();
    let unknown = config::unknown_variables(&env);
    let cfg = match Config::load(cli.config.as_deref(), &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            // No logger yet (its settings are what failed): plain stderr, then the error once.
            for warning in &unknown {
                eprintln!("warning: {warning}");
            }
            return Err(e);
        }
    };
    let telemetry = herald::telemetry::init(&cfg)?;
    for warning in &unknown {
        tracing::warn!("{warning}");
    }
    let result = command(cli.command, cfg);
    // The last spans are exported before the process exits.
    telemetry.shutdown();
    result
}

fn command(command: Command, mut cfg: Config) -> Result<()> {
    match command {
        Command::Serve { dev, no_migrate } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            // The flags are configuration overrides.
            if dev {
                cfg.apply_dev();
            }
            if no_migrate {
                cfg.database.migrate_on_start = false;
            }
            rt.block_on(serve(cfg))
        }
        Command::Migrate => {
            if cfg.database.is_postgres() {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let where_ = herald_store::pg::describe_url(cfg.database.url.expose());
                let version = rt
                    .block_on(PgStore::migrate(cfg.database.url.expose()))
                    .with_context(|| format!("migrating PostgreSQL database {where_}"))?;
                println!("PostgreSQL database {where_} is up to date (schema version {version})");
                return Ok(());
            }
            let _lock = secrets::lock_data_dir(&cfg.data_dir)?;
            let path = cfg.data_dir.join("herald.db");
            let keys = secrets::encryption_keys(&cfg)?;
            SqliteStore::open(&path, &keys)
                .with_context(|| format!("migrating {}", path.display()))?;
            secrets::restrict_database_files(&path)?;
            println!(
                "database {} is up to date (schema version {})",
                path.display(),
                herald_store::sqlite::SCHEMA_VERSION
            );
            Ok(())
        }
        Command::Bench(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(bench::run(args))
        }
        Command::Rekey(args) => rekey::run(&cfg, args),
        Command::ApiKey(cmd) => client::api_key(&cfg, cmd),
        Command::Import(args) => client::import(&cfg, args),
        Command::Export(args) => client::export(&cfg, args),
        Command::Config => {
            // Secret settings serialize masked (`config::SecretSetting`, `config::SecretUrl`).
            print!("{}", toml::to_string_pretty(&cfg)?);
            print!("{}", rekey::describe_keys(&cfg));
            Ok(())
        }
    }
}

/// Binds the configured address and runs the server until Ctrl-C or SIGTERM.
async fn serve(cfg: Config) -> Result<()> {
    herald::raise_fd_limit();
    let host = cfg.listen_host().to_string();
    let listener = tokio::net::TcpListener::bind((host.as_str(), cfg.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {host}:{} (set HERALD_PORT to use another port)",
                cfg.port
            )
        })?;
    herald::run(cfg, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

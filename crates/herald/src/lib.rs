//! The Herald server as a library: [`run`] serves the API and runs the delivery engine on a
//! listener and until a shutdown signal, both chosen by the caller. The `herald` binary
//! (`main.rs`) parses the command line, sets up logging, binds the configured address and
//! calls [`run`]; tests call it in-process on `127.0.0.1:0`.
//!
//! This is the only place that knows the concrete store and destination types. It is not a
//! general embedding API: [`config::Config`] is the binary's configuration file format.

pub mod config;
mod http_server;
mod metrics;
pub mod secrets;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use herald_api::{ApiConfig, TopicSpec};
use herald_core::SystemClock;
use herald_destinations::{DestinationsConfig, TargetPolicy};
use herald_engine::{Engine, EngineConfig};
use herald_store::Store;
use herald_store::pg::{PgOptions, PgStore};
use herald_store::sqlite::SqliteStore;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
pub use crate::http_server::raise_fd_limit;

/// The process-wide Prometheus recorder, installed by the first [`run`] in this process and
/// shared by later ones (a process has one `metrics` recorder; tests run several servers).
fn prometheus() -> Result<PrometheusHandle> {
    static HANDLE: parking_lot::Mutex<Option<PrometheusHandle>> = parking_lot::Mutex::new(None);
    let mut handle = HANDLE.lock();
    if let Some(h) = handle.as_ref() {
        return Ok(h.clone());
    }
    let h = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    *handle = Some(h.clone());
    Ok(h)
}

/// The store `serve` runs on, and what the banner says about it.
struct OpenedStore {
    store: Arc<dyn Store>,
    /// Several nodes may share it.
    shared: bool,
    description: String,
    /// Keeps the data directory locked (embedded store).
    _lock: Option<std::fs::File>,
}

/// `database.result_linger_ms` as a duration.
fn result_linger(cfg: &Config) -> std::time::Duration {
    std::time::Duration::from_millis(cfg.database.result_linger_ms)
}

async fn open_store(cfg: &Config, migrate: bool) -> Result<OpenedStore> {
    if cfg.database.is_postgres() {
        let where_ = herald_store::pg::describe_url(cfg.database.url.expose());
        let store = PgStore::connect(&PgOptions {
            url: cfg.database.url.expose().to_string(),
            pool_size: cfg.database.pool_size,
            migrate,
            keys: secrets::encryption_keys(cfg)?,
        })
        .await
        .with_context(|| format!("cannot use PostgreSQL database {where_}"))?;
        store.set_result_linger(result_linger(cfg));
        return Ok(OpenedStore {
            store: Arc::new(store),
            shared: true,
            description: format!(
                "PostgreSQL, {where_} (pool of {} connections)",
                cfg.database.pool_size
            ),
            _lock: None,
        });
    }
    let lock = secrets::lock_data_dir(&cfg.data_dir)?;
    let db_path = cfg.data_dir.join("herald.db");
    let keys = secrets::encryption_keys(cfg)?;
    // Created empty with mode 0600 first, so the database, and the WAL and shared-memory
    // files SQLite derives from its mode, are never readable by others.
    #[cfg(unix)]
    if !db_path.exists() {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(&db_path)
            .with_context(|| format!("cannot create {}", db_path.display()))?;
    }
    let store = SqliteStore::open_with(&db_path, migrate, &keys)
        .with_context(|| format!("opening {}", db_path.display()))?;
    store.set_result_linger(result_linger(cfg));
    secrets::restrict_database_files(&db_path)?;
    Ok(OpenedStore {
        store: Arc::new(store),
        shared: false,
        description: format!("embedded, {}", db_path.display()),
        _lock: Some(lock),
    })
}

/// Runs the API and the delivery engine on `listener` until `shutdown` completes, then stops
/// accepting requests and gives attempts in flight `shutdown_grace_secs` to finish.
///
/// Everything comes from `cfg`: the store (embedded or PostgreSQL, migrated when
/// `database.migrate_on_start`, sealing destination secrets with the encryption keys), the
/// generated keys, the target policy, the portal (`cfg.dev` drops `Secure` from its session
/// cookie). The caller binds the
/// listener (port 0 works; the banner prints the bound address) and chooses the shutdown signal
/// (the binary's is Ctrl-C or SIGTERM). Logging is the caller's to set up.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let migrate = cfg.database.migrate_on_start;
    let opened = open_store(&cfg, migrate).await?;
    let keys = if opened.shared {
        secrets::load_or_create_shared(&cfg, opened.store.as_ref()).await?
    } else {
        secrets::load_or_create(&cfg)?
    };

    let prometheus = prometheus()?;

    let policy = TargetPolicy {
        allow_http: cfg.security.allow_http,
        allow_private: cfg.security.allow_private,
        allow_list: cfg.allowed_networks()?,
    };
    let tls_ca = match cfg.delivery.tls_ca_file.as_str() {
        "" => None,
        path => Some(std::fs::read_to_string(path).with_context(|| {
            format!("delivery.tls_ca_file (HERALD_DELIVERY_TLS_CA_FILE): cannot read {path:?}")
        })?),
    };
    let registry = herald_destinations::registry(&DestinationsConfig {
        target_policy: policy.clone(),
        proxy: (!cfg.delivery.proxy.is_empty())
            .then(|| herald_core::Secret::new(cfg.delivery.proxy.expose())),
        response_body_limit: cfg.delivery.response_body_limit,
        user_agent: cfg.delivery.user_agent.clone(),
        retry_on_status: cfg.delivery.retry_on_status.clone(),
        tls_ca,
        no_generated_secret: cfg.signing.no_generated_secret.clone(),
        email_for_tenants: cfg.delivery.email_for_tenants,
    })
    .map_err(anyhow::Error::msg)?;
    if !cfg.portal.default_type.is_empty() && registry.get(&cfg.portal.default_type).is_none() {
        let known: Vec<_> = registry.all().map(|t| t.spec().kind.clone()).collect();
        anyhow::bail!(
            "portal.default_type (HERALD_PORTAL_DEFAULT_TYPE): {:?} is not a destination type of this build; expected one of {}",
            cfg.portal.default_type,
            known.join(", ")
        );
    }
    if let Some(unknown) = cfg
        .signing
        .no_generated_secret
        .iter()
        .find(|k| registry.get(k).is_none())
    {
        let known: Vec<_> = registry.all().map(|t| t.spec().kind.clone()).collect();
        anyhow::bail!(
            "signing.no_generated_secret (HERALD_SIGNING_NO_GENERATED_SECRET): {unknown:?} is not a destination type of this build; expected some of {}",
            known.join(", ")
        );
    }
    metrics::describe(
        &registry
            .all()
            .map(|t| t.spec().kind.clone())
            .collect::<Vec<_>>(),
    );
    let engine_cfg = EngineConfig {
        retry: cfg.retry_policy()?,
        signing: cfg.signing_config()?,
        attempt_timeout: Duration::from_millis(cfg.delivery.timeout_ms),
        max_in_flight: cfg.delivery.max_in_flight,
        destination_max_in_flight: cfg.delivery.destination_max_in_flight,
        tenant_max_in_flight: cfg.delivery.tenant_limit(),
        queue_capacity: cfg.delivery.queue_capacity,
        poll_interval: Duration::from_millis(cfg.delivery.poll_interval_ms.max(10)),
        idempotency_window: Duration::from_secs(cfg.delivery.idempotency_window_secs),
        response_body_limit: cfg.delivery.response_body_limit,
        alerts: cfg.alert_config(),
        retention: Duration::from_secs(cfg.retention.max_age_secs),
        retention_interval: Duration::from_secs(cfg.retention.interval_secs),
        retention_batch: cfg.retention.batch,
        max_lifetime: config::parse_duration(&cfg.destinations.max_lifetime)
            .map_err(anyhow::Error::msg)?,
        expiring_notice_lead: config::parse_duration(&cfg.destinations.expiring_notice)
            .map_err(anyhow::Error::msg)?
            .unwrap_or_default(),
        expiry_check_interval: Duration::from_secs(cfg.destinations.expiry_check_interval_secs),
        attempt_log: cfg.log.attempt_log()?,
        traces: telemetry::trace_hook(),
        lease: Duration::from_secs(cfg.delivery.lease_secs),
        require_known_tenant: cfg.publish.require_known_tenant,
        // On a shared store, hold about what can be in flight soon and leave the rest of the
        // due work to other nodes.
        claim_limit: if opened.shared {
            cfg.delivery
                .queue_capacity
                .min(cfg.delivery.max_in_flight.saturating_mul(2))
        } else {
            cfg.delivery.queue_capacity
        },
    };
    // Only the embedded store may drop every lease at start: it has one process. Other nodes
    // of a shared store hold live leases; a dead node's simply expire.
    let engine = Engine::start(
        opened.store.clone(),
        registry,
        Arc::new(SystemClock),
        engine_cfg,
        !opened.shared,
    )
    .await?;
    // `alerts.callback_url` is an operator destination like any other, defined by the
    // configuration: created, changed or removed here to match it.
    engine
        .sync_operator_destination(config::ALERTS_DESTINATION_ID, cfg.alerts_destination())
        .await?;

    let addr = listener.local_addr()?;
    let public_url = if cfg.public_url.is_empty() {
        format!("http://localhost:{}", addr.port())
    } else {
        cfg.public_url.trim_end_matches('/').to_string()
    };
    let topics = cfg
        .topics
        .iter()
        .map(|t| TopicSpec {
            name: t.name.clone(),
            description: t.description.clone(),
            sample: match &t.sample {
                Some(toml::Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
                Some(other) => serde_json::to_value(other).unwrap_or_default(),
                // No sample: test events cannot use this topic.
                None => serde_json::Value::Null,
            },
        })
        .collect();
    let (mut api, authenticator) = herald_api::build(
        engine.clone(),
        ApiConfig {
            api_key: keys.api_key.clone(),
            jwt_secret: keys.jwt_secret.clone(),
            topics,
            portal_url: format!("{public_url}/portal"),
            max_body_bytes: cfg.max_body_bytes,
            max_batch_body_bytes: cfg.max_batch_body_bytes,
            version: env!("CARGO_PKG_VERSION").into(),
            portal: herald_api::portal::PortalConfig {
                referer_url: cfg.portal.referer_url.clone(),
                organization_name: cfg.portal.organization_name.clone(),
                logo: cfg.portal.logo.clone(),
                brand_color: cfg.portal.brand_color.clone(),
                force_theme: cfg.portal.force_theme.clone(),
                secure_cookies: !cfg.dev,
                default_type: cfg.portal.default_type.clone(),
            },
        },
    );

    // The API's shutdown signal, shared with the metrics listener when there is one.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let metrics_addr = if cfg.metrics.listen.is_empty() {
        let auth = (!cfg.metrics.public).then_some(authenticator);
        api = api.merge(metrics::router(
            engine.clone(),
            prometheus,
            auth,
            cfg.metrics.top_destinations,
        ));
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&cfg.metrics.listen)
            .await
            .with_context(|| {
                format!(
                    "metrics.listen (HERALD_METRICS_LISTEN): cannot listen on {}",
                    cfg.metrics.listen
                )
            })?;
        let at = listener.local_addr()?;
        let router = metrics::router(
            engine.clone(),
            prometheus,
            None,
            cfg.metrics.top_destinations,
        );
        tokio::spawn(http_server::serve(
            listener,
            router,
            http_limits(&cfg),
            stopped(),
        ));
        Some(at)
    };

    let request_telemetry = telemetry::RequestTelemetry {
        access: cfg.log.access,
        traces: telemetry::tracing_enabled(),
    };
    if request_telemetry.access || request_telemetry.traces {
        api = api.layer(axum::middleware::from_fn_with_state(
            request_telemetry,
            telemetry::around_request,
        ));
    }

    print_banner(
        &cfg,
        addr,
        &public_url,
        &opened.description,
        metrics_addr,
        &keys,
    );
    http_server::serve(listener, api, http_limits(&cfg), stopped()).await;
    tracing::info!("stopped accepting requests; finishing attempts in flight");
    engine
        .shutdown(Duration::from_secs(cfg.shutdown_grace_secs))
        .await;
    tracing::info!("herald stopped");
    Ok(())
}

/// The API server's limits from `[http]`, with the connection cap kept below the open-files
/// limit: a quarter of the descriptors stay for the store, destinations and the listener, so
/// the server refuses connections it cannot serve instead of failing to accept them.
fn http_limits(cfg: &Config) -> http_server::Limits {
    let h = &cfg.http;
    let mut max_connections = h.max_connections;
    #[cfg(unix)]
    if let Some(files) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        let usable = usize::try_from(files / 4 * 3).unwrap_or(usize::MAX).max(16);
        if usable < max_connections {
            tracing::warn!(
                configured = max_connections,
                open_files_limit = files,
                using = usable,
                "http.max_connections is above what the open-files limit allows; lowering it"
            );
            max_connections = usable;
        }
    }
    http_server::Limits {
        header_read_timeout: Duration::from_millis(h.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(h.body_read_timeout_ms),
        idle_timeout: Duration::from_millis(h.idle_timeout_ms),
        max_connections,
        max_uri_bytes: h.max_uri_bytes,
        max_header_bytes: h.max_header_bytes,
    }
}

/// What this configuration relaxes compared with production defaults, one line each, exactly
/// what is relaxed (the banner prints them as warnings).
fn relaxations(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.dev {
        out.push(
            "development mode (--dev): do not run like this in production. It implies the lines below and a portal session cookie without Secure."
                .to_string(),
        );
    }
    if cfg.security.allow_http {
        out.push("security.allow_http: plain http:// destination URLs are allowed.".to_string());
    }
    if cfg.security.allow_private {
        out.push(
            "security.allow_private: loopback, private and link-local destination targets are allowed."
                .to_string(),
        );
    }
    if cfg.metrics.public {
        out.push("metrics.public: /metrics is served without authentication.".to_string());
    }
    out
}

fn print_banner(
    cfg: &Config,
    addr: std::net::SocketAddr,
    public_url: &str,
    store: &str,
    metrics_addr: Option<std::net::SocketAddr>,
    keys: &secrets::Keys,
) {
    // Written in one go, and a closed stdout (a supervisor that stopped reading) is ignored:
    // the banner is informational and must never take the server down.
    use std::fmt::Write as _;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "herald {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(b, "  API:   {public_url}/api/v1");
    let _ = writeln!(b, "  store: {store}");
    let _ = writeln!(
        b,
        "  topics: {}",
        if cfg.topics.is_empty() {
            "any (no catalog configured)".to_string()
        } else {
            cfg.topics.len().to_string()
        }
    );
    let _ = writeln!(
        b,
        "  metrics: {}",
        match metrics_addr {
            Some(at) => format!("http://{at}/metrics (no authentication)"),
            None if cfg.metrics.public => "/metrics (public: no authentication)".to_string(),
            None => "/metrics (admin key required)".to_string(),
        }
    );
    for line in relaxations(cfg) {
        let _ = writeln!(b, "  WARNING: {line}");
    }
    if keys.api_key_generated {
        let _ = writeln!(b);
        let _ = writeln!(
            b,
            "  Generated an admin API key (kept in {}):",
            keys.kept_in
        );
        let _ = writeln!(b, "    {}", keys.api_key);
        let _ = writeln!(b, "  Try it:");
        let _ = writeln!(
            b,
            "    curl -H 'Authorization: Bearer {}' {public_url}/api/v1/tenants",
            keys.api_key
        );
        let _ = writeln!(b);
    }
    let _ = writeln!(b, "Press Ctrl-C to stop.");
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, b.as_bytes());
    let _ = std::io::Write::flush(&mut out);
}

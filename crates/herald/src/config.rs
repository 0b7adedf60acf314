//! Configuration: built-in defaults, overlaid by an optional TOML file (`HERALD_CONFIG`),
//! overlaid by `HERALD_*` environment variables. Every key is documented in
//! `docs/configuration.md`; the environment variable for `a.b_c` is `HERALD_A_B_C`.
//!
//! Unknown keys and values of the wrong type fail at start with a message naming the key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use herald_core::Secret;
use herald_core::retry::{RetryPolicy, Schedule};
use herald_core::signing::{SignatureEncoding, SigningConfig, SigningMode};
use serde::{Deserialize, Serialize, Serializer};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; empty is `0.0.0.0`, or `127.0.0.1` with `serve --dev`.
    pub host: String,
    /// Port to listen on (0 picks a free port).
    pub port: u16,
    /// Directory of the embedded database, generated keys and the lock file (unused with
    /// PostgreSQL).
    pub data_dir: PathBuf,
    /// Admin API key; generated and kept in the data directory when empty.
    pub api_key: SecretSetting,
    /// Secret for tenant JWTs; generated and kept in the data directory when empty.
    pub jwt_secret: SecretSetting,
    /// Key that seals destination secrets at rest: 32 random bytes in base64
    /// (`openssl rand -base64 32`). Required with PostgreSQL (the same on every node); with
    /// the embedded store, generated into `data_dir/encryption_key` when empty.
    pub encryption_key: SecretSetting,
    /// Older encryption keys, accepted for opening values sealed with them only (key
    /// rotation); comma-separated in `HERALD_ENCRYPTION_OLD_KEYS` (a list or a
    /// comma-separated string in the file).
    #[serde(deserialize_with = "secret_list")]
    pub encryption_old_keys: Vec<SecretSetting>,
    /// Base URL under which users reach this server (portal links); default `http://localhost:{port}`.
    pub public_url: String,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Log filter, e.g. `info` or `herald_engine=debug,info`. A bare level also sets the
    /// broker and HTTP client libraries one level quieter (see `docs/observability.md`).
    pub log_level: String,
    /// What is logged besides `log_level` and `log_format`.
    pub log: LogSection,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted body of `POST /publish/batch` (up to 1,000 events), in bytes.
    pub max_batch_body_bytes: usize,
    /// Seconds to wait for attempts in flight at shutdown.
    pub shutdown_grace_secs: u64,
    /// Where state is kept: the embedded store, or PostgreSQL shared by several nodes.
    pub database: DatabaseSection,
    /// Delivery settings.
    pub delivery: DeliveryConfig,
    /// Retry schedule.
    pub retry: RetryConfig,
    /// Webhook signatures.
    pub signing: SigningSection,
    /// Target safety.
    pub security: SecurityConfig,
    /// Operator alerts and auto-disable.
    pub alerts: AlertsSection,
    /// How long records are kept.
    pub retention: RetentionSection,
    /// Destination subscriptions: expiry.
    pub destinations: DestinationsSection,
    /// The topic catalog.
    pub topics: Vec<TopicConfig>,
    /// The tenant portal's branding and return link.
    pub portal: PortalSection,
    /// Connection limits of the API server.
    pub http: HttpSection,
    /// Who may read the Prometheus `/metrics` page.
    pub metrics: MetricsSection,
    /// `POST /publish` choices.
    pub publish: PublishSection,
    /// Development mode (`serve --dev`), set by the command line only, never by the file or
    /// the environment: the portal's session cookie is not marked `Secure` (plain http://).
    /// `--dev` also sets `security.allow_http` and `security.allow_private`.
    #[serde(skip)]
    pub dev: bool,
}

/// `[portal]`: the tenant portal served under `/portal`. Each key is Outpost's `PORTAL_*`
/// setting of the same meaning (`HERALD_PORTAL_REFERER_URL` ↔ `PORTAL_REFERER_URL`, …).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalSection {
    /// Your application's URL, linked from the portal's "session expired" page.
    pub referer_url: String,
    /// Organisation name shown in the portal's header and titles.
    pub organization_name: String,
    /// URL of a logo shown in the portal's header.
    pub logo: String,
    /// Accent colour, `#rgb` or `#rrggbb`.
    pub brand_color: String,
    /// `light` or `dark` forces the portal's theme; empty follows the link and the browser.
    pub force_theme: String,
    /// The destination type the portal's add-destination wizard preselects (Herald's own
    /// setting; Outpost has none).
    pub default_type: String,
}

impl Default for PortalSection {
    fn default() -> Self {
        Self {
            referer_url: String::new(),
            organization_name: String::new(),
            logo: String::new(),
            brand_color: String::new(),
            force_theme: String::new(),
            default_type: "webhook".into(),
        }
    }
}

/// `[http]`: what a client may hold of the API server. A connection past a deadline is
/// closed; one over `max_connections` is answered `503` and closed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Milliseconds a client has to send a request line and headers: from connecting, or
    /// from the first byte of a later request on a kept-alive connection.
    pub header_read_timeout_ms: u64,
    /// Milliseconds a client has to send a request body, from the end of its headers.
    pub body_read_timeout_ms: u64,
    /// Milliseconds a kept-alive connection may wait for its next request.
    pub idle_timeout_ms: u64,
    /// Open connections at most (also capped at three quarters of the open-files limit).
    pub max_connections: usize,
    /// Longest request target (path and query) in bytes; longer is answered `414`.
    pub max_uri_bytes: usize,
    /// Most bytes of request headers (names and values); more is answered `431`.
    pub max_header_bytes: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
        }
    }
}

/// `[metrics]`: `GET /metrics` lists every tenant's destination ids, so by default it needs
/// the admin key (`Authorization: Bearer <api_key>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `/metrics` on the API port without authentication.
    pub public: bool,
    /// Serve `/metrics` without authentication on this separate address (e.g.
    /// `127.0.0.1:9464`) instead of on the API port; empty for none.
    pub listen: String,
    /// Destinations with their own series in the per-destination backlog gauges (the ones
    /// with the most pending deliveries); the rest are summed under `destination_id="other"`,
    /// so the number of series stays bounded however many destinations there are.
    pub top_destinations: usize,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            public: false,
            listen: String::new(),
            top_destinations: 20,
        }
    }
}

/// `[log]`: the per-attempt line and the access log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Log one line per API request (target `herald::access`, level INFO): method, path,
    /// status, duration.
    pub access: bool,
    /// Level of the line each successful attempt logs (target `herald::attempt`): `error`,
    /// `warn`, `info`, `debug`, `trace` or `off`.
    pub attempt_success_level: String,
    /// Level of the line each failed attempt logs, whether a retry is scheduled or the
    /// delivery failed for good; same values.
    pub attempt_failure_level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            access: false,
            attempt_success_level: "debug".into(),
            attempt_failure_level: "info".into(),
        }
    }
}

impl LogSection {
    /// The engine's attempt log levels.
    pub fn attempt_log(&self) -> Result<herald_engine::telemetry::AttemptLog> {
        Ok(herald_engine::telemetry::AttemptLog {
            success: parse_level(
                "log.attempt_success_level (HERALD_LOG_ATTEMPT_SUCCESS_LEVEL)",
                &self.attempt_success_level,
            )?,
            failure: parse_level(
                "log.attempt_failure_level (HERALD_LOG_ATTEMPT_FAILURE_LEVEL)",
                &self.attempt_failure_level,
            )?,
        })
    }
}

/// A level name, or `off` (`None`).
fn parse_level(field: &str, value: &str) -> Result<Option<tracing::Level>> {
    match value.to_ascii_lowercase().as_str() {
        "off" => Ok(None),
        other => other.parse().map(Some).map_err(|_| {
            anyhow!("{field}: {value:?} is not one of error, warn, info, debug, trace, off")
        }),
    }
}

/// `[publish]`: what `POST /publish` accepts.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PublishSection {
    /// Answer `404` to a publish for a tenant that does not exist, storing nothing. Off by
    /// default, as in Outpost: the event is accepted (`202`, `tenant_found: false`) and
    /// matches no destination.
    pub require_known_tenant: bool,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    /// PostgreSQL URL (`postgres://user:password@host:5432/dbname`); empty for the embedded
    /// store in `data_dir`.
    pub url: SecretUrl,
    /// Most pooled connections to PostgreSQL per node (one more listens for notices).
    pub pool_size: usize,
    /// Apply pending schema migrations when `herald serve` starts (`--no-migrate` overrides).
    pub migrate_on_start: bool,
    /// Milliseconds attempt results may wait to share a commit with other writes (0–1000;
    /// 0: each group commits at once).
    pub result_linger_ms: u64,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: SecretUrl::default(),
            pool_size: 10,
            migrate_on_start: true,
            result_linger_ms: 10,
        }
    }
}

impl DeliveryConfig {
    /// The per-tenant in-flight bound in effect: the setting, or half of `max_in_flight` when
    /// it is 0; never more than `max_in_flight`.
    pub fn tenant_limit(&self) -> usize {
        match self.tenant_max_in_flight {
            0 => (self.max_in_flight / 2).max(1),
            n => n.min(self.max_in_flight),
        }
    }
}

impl DatabaseSection {
    /// Whether PostgreSQL is configured.
    pub fn is_postgres(&self) -> bool {
        !self.url.is_empty()
    }
}

/// `[delivery]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Deadline of one attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts in flight overall.
    pub max_in_flight: usize,
    /// Attempts in flight per destination (the ceiling; timeouts lower it for a while).
    pub destination_max_in_flight: usize,
    /// Attempts in flight per tenant; 0 means half of `max_in_flight`.
    pub tenant_max_in_flight: usize,
    /// Deliveries held in memory; the rest wait on disk.
    pub queue_capacity: usize,
    /// Window in which a re-published event id is a duplicate, in seconds.
    pub idempotency_window_secs: u64,
    /// Bytes of each response body kept in the attempt log.
    pub response_body_limit: usize,
    /// Extra HTTP statuses to retry (e.g. `[404]`).
    pub retry_on_status: Vec<u16>,
    /// `User-Agent` of webhook requests.
    pub user_agent: String,
    /// Egress proxy URL for webhook requests (`http://user:password@proxy:3128`); empty for none.
    pub proxy: SecretUrl,
    /// PEM file of CA certificates webhook destinations trust besides the system's; empty
    /// for none.
    pub tls_ca_file: String,
    /// How often due retries are looked for, in milliseconds.
    pub poll_interval_ms: u64,
    /// How long a node holds a delivery it took, in seconds; a node that dies leaves its
    /// deliveries to others after at most this long.
    pub lease_secs: u64,
    /// Whether tenants may create `email` destinations (operator destinations always may).
    pub email_for_tenants: bool,
}

/// `[retry]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// `exponential` or `list`.
    pub schedule: String,
    /// First retry delay (exponential), seconds.
    pub initial_secs: u64,
    /// Growth factor (exponential).
    pub factor: f64,
    /// Longest delay (exponential), seconds.
    pub max_interval_secs: u64,
    /// Number of retries after the first attempt (exponential).
    pub retries: u32,
    /// Explicit delays in seconds (list); one retry per entry.
    pub delays_secs: Vec<u64>,
    /// Random spread applied to each delay, as a fraction (0.1 = ±10 %).
    pub jitter: f64,
    /// Upper bound for a receiver's `Retry-After`, seconds.
    pub max_retry_after_secs: u64,
}

/// `[signing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningSection {
    /// `standard` (Standard Webhooks) or `outpost`.
    pub mode: String,
    /// Prefix of topic / metadata headers; empty for the mode's default.
    pub header_prefix: String,
    /// Outpost mode: what is signed; empty for the default (the body).
    pub content_template: String,
    /// Outpost mode: the signature header's value; empty for the default (`v0={signatures}`).
    pub header_template: String,
    /// Outpost mode: `hex` or `base64`.
    pub encoding: String,
    /// Outpost mode: signature header name; empty for `{prefix}signature`.
    pub signature_header: String,
    /// Destination types that get no generated signing secret when created without one.
    pub no_generated_secret: Vec<String>,
}

/// `[security]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Allow `http://` destination URLs (implied by `--dev`).
    pub allow_http: bool,
    /// Allow loopback / private / link-local targets (implied by `--dev`).
    pub allow_private: bool,
    /// Private networks allowed even in production, CIDR notation.
    pub allowed_networks: Vec<String>,
}

/// Id of the operator destination defined by `alerts.callback_url`.
pub const ALERTS_DESTINATION_ID: &str = "alerts-callback";

/// `[alerts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// URL that receives operator events (signed POSTs); empty logs them only.
    pub callback_url: SecretUrl,
    /// Standard Webhooks secret (`whsec_…`) signing operator events; empty sends them unsigned.
    pub secret: SecretSetting,
    /// Consecutive failed attempts that count as 100 %; 0 turns failure alerts off.
    pub consecutive_failure_threshold: u32,
    /// Disable a destination that reaches the threshold.
    pub auto_disable: bool,
    /// At most one exhausted-retries alert per destination per this many seconds.
    pub exhausted_retries_window_secs: u64,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            callback_url: SecretUrl::default(),
            secret: SecretSetting::default(),
            consecutive_failure_threshold: 100,
            auto_disable: true,
            exhausted_retries_window_secs: 3600,
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Keep events, deliveries and attempts this many seconds (default 7 days); 0 keeps everything.
    pub max_age_secs: u64,
    /// Seconds between purge runs.
    pub interval_secs: u64,
    /// Rows deleted per purge transaction.
    pub batch: usize,
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            max_age_secs: 7 * 24 * 3600,
            interval_secs: 60,
            batch: 500,
        }
    }
}

/// `[destinations]`: how long subscriptions last.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationsSection {
    /// Longest subscription, e.g. `90d`: caps `expires_at` and fills it on create. Empty or
    /// `0` (default): destinations expire only when given an `expires_at`.
    pub max_lifetime: String,
    /// How long before its expiry the `destination.expiring` notice is produced (default `7d`).
    pub expiring_notice: String,
    /// Seconds between expiry checks.
    pub expiry_check_interval_secs: u64,
}

impl Default for DestinationsSection {
    fn default() -> Self {
        Self {
            max_lifetime: String::new(),
            expiring_notice: "7d".into(),
            expiry_check_interval_secs: 60,
        }
    }
}

/// A duration written as a whole number with a unit: `90d`, `12h`, `30m`, `45s` (a bare
/// number is seconds). `None` for empty or zero.
pub fn parse_duration(s: &str) -> Result<Option<std::time::Duration>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90d, 12h, 30m or 45s"))?;
    let unit_secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?} is not a duration such as 90d, 12h, 30m or 45s"
            ));
        }
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("{s:?} is too long"))?;
    Ok((secs > 0).then(|| std::time::Duration::from_secs(secs)))
}

/// `[[topics]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name, e.g. `user.created`.
    pub name: String,
    /// What the topic means.
    #[serde(default)]
    pub description: String,
    /// A sample payload, as a JSON string (e.g. `'{"id": "u_1"}'`) or an inline table.
    #[serde(default)]
    pub sample: Option<toml::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 3333,
            data_dir: "./herald-data".into(),
            api_key: SecretSetting::default(),
            jwt_secret: SecretSetting::default(),
            encryption_key: SecretSetting::default(),
            encryption_old_keys: Vec::new(),
            public_url: String::new(),
            log_format: "text".into(),
            log_level: "info".into(),
            log: LogSection::default(),
            max_body_bytes: 1024 * 1024,
            max_batch_body_bytes: 8 * 1024 * 1024,
            shutdown_grace_secs: 10,
            database: DatabaseSection::default(),
            delivery: DeliveryConfig::default(),
            retry: RetryConfig::default(),
            signing: SigningSection::default(),
            security: SecurityConfig::default(),
            alerts: AlertsSection::default(),
            retention: RetentionSection::default(),
            destinations: DestinationsSection::default(),
            topics: Vec::new(),
            portal: PortalSection::default(),
            http: HttpSection::default(),
            metrics: MetricsSection::default(),
            publish: PublishSection::default(),
            dev: false,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 5000,
            max_in_flight: 512,
            destination_max_in_flight: 64,
            tenant_max_in_flight: 0,
            queue_capacity: 20_000,
            idempotency_window_secs: 24 * 3600,
            response_body_limit: 4096,
            retry_on_status: Vec::new(),
            user_agent: format!("herald/{}", env!("CARGO_PKG_VERSION")),
            proxy: SecretUrl::default(),
            tls_ca_file: String::new(),
            poll_interval_ms: 1000,
            lease_secs: 60,
            email_for_tenants: false,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            schedule: "exponential".into(),
            initial_secs: 30,
            factor: 2.0,
            max_interval_secs: 24 * 3600,
            retries: 10,
            delays_secs: Vec::new(),
            jitter: 0.1,
            max_retry_after_secs: 3600,
        }
    }
}

impl Default for SigningSection {
    fn default() -> Self {
        Self {
            mode: "standard".into(),
            header_prefix: String::new(),
            content_template: String::new(),
            header_template: String::new(),
            encoding: "hex".into(),
            signature_header: String::new(),
            no_generated_secret: Vec::new(),
        }
    }
}

/// Leaf keys of the defaults that can be set from the environment, with their TOML type.
fn env_keys() -> Vec<(String, Vec<String>, toml::Value)> {
    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialize");
    let mut out = Vec::new();
    fn walk(prefix: &[String], v: &toml::Value, out: &mut Vec<(String, Vec<String>, toml::Value)>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let mut path = prefix.to_vec();
                path.push(k.clone());
                match v {
                    toml::Value::Table(_) => walk(&path, v, out),
                    _ => out.push((
                        format!("HERALD_{}", path.join("_").to_uppercase()),
                        path,
                        v.clone(),
                    )),
                }
            }
        }
    }
    walk(&[], &defaults, &mut out);
    out
}

fn env_value(var: &str, raw: &str, like: &toml::Value) -> Result<toml::Value> {
    let bad = |what: &str| anyhow!("environment variable {var}={raw:?} is not {what}");
    Ok(match like {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" | "" => false,
            _ => return Err(bad("a boolean (true/false)")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<i64>()
                        .map(toml::Value::Integer)
                        .unwrap_or_else(|_| toml::Value::String(s.into()))
                })
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

impl Config {
    /// Loads defaults ← file ← environment.
    pub fn load(file: Option<&std::path::Path>, env: &BTreeMap<String, String>) -> Result<Config> {
        let mut table = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                text.parse::<toml::Table>()
                    .map_err(|e| anyhow!("config file {}: {e}", p.display()))?
            }
            None => toml::Table::new(),
        };
        for (var, path, like) in env_keys() {
            let Some(raw) = env.get(&var) else { continue };
            let value = env_value(&var, raw, &like)?;
            let mut t = &mut table;
            for seg in &path[..path.len() - 1] {
                let entry = t
                    .entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                t = entry
                    .as_table_mut()
                    .ok_or_else(|| anyhow!("config key {seg} must be a table"))?;
            }
            t.insert(path[path.len() - 1].clone(), value);
        }
        if let Some(names) = env.get("HERALD_TOPICS") {
            let topics = names
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|n| {
                    let mut t = toml::Table::new();
                    t.insert("name".into(), toml::Value::String(n.into()));
                    toml::Value::Table(t)
                })
                .collect();
            table.insert("topics".into(), toml::Value::Array(topics));
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                // One line, said once: the message and the key it is about (`in `a.b``).
                anyhow!(
                    "invalid configuration: {}",
                    e.to_string().trim().replace('\n', " ")
                )
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        self.log.attempt_log()?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!(
                "log_format (HERALD_LOG_FORMAT): {:?} is not text or json",
                self.log_format
            );
        }
        if self.delivery.timeout_ms == 0 {
            bail!("delivery.timeout_ms (HERALD_DELIVERY_TIMEOUT_MS): must be greater than 0");
        }
        if self.delivery.max_in_flight == 0
            || self.delivery.destination_max_in_flight == 0
            || self.delivery.queue_capacity == 0
        {
            bail!(
                "delivery.max_in_flight, delivery.destination_max_in_flight and delivery.queue_capacity must be greater than 0"
            );
        }
        if self.delivery.lease_secs.saturating_mul(1000)
            <= self.delivery.timeout_ms.saturating_mul(2)
        {
            bail!(
                "delivery.lease_secs (HERALD_DELIVERY_LEASE_SECS): {} s must be longer than twice delivery.timeout_ms ({} ms)",
                self.delivery.lease_secs,
                self.delivery.timeout_ms
            );
        }
        if self.database.is_postgres() {
            herald_store::pg::parse_url(self.database.url.expose())
                .map_err(|e| anyhow!("database.url (HERALD_DATABASE_URL): {e}"))?;
        }
        if self.database.pool_size == 0 || self.database.pool_size > 1000 {
            bail!(
                "database.pool_size (HERALD_DATABASE_POOL_SIZE): {} is not between 1 and 1000",
                self.database.pool_size
            );
        }
        if self.database.result_linger_ms > 1000 {
            bail!(
                "database.result_linger_ms (HERALD_DATABASE_RESULT_LINGER_MS): {} is more than 1000",
                self.database.result_linger_ms
            );
        }
        // The values are not echoed: they may hold a password.
        if !self.delivery.proxy.is_empty() && url::Url::parse(self.delivery.proxy.expose()).is_err()
        {
            bail!("delivery.proxy (HERALD_DELIVERY_PROXY): not a URL");
        }
        if !self.alerts.callback_url.is_empty()
            && url::Url::parse(self.alerts.callback_url.expose()).is_err()
        {
            bail!("alerts.callback_url (HERALD_ALERTS_CALLBACK_URL): not a URL");
        }
        if !self.encryption_key.is_empty() || !self.encryption_old_keys.is_empty() {
            self.keyring_from_settings()?;
        }
        if !self.alerts.secret.is_empty()
            && !herald_core::signing::is_valid_secret(self.alerts.secret.expose())
        {
            bail!(
                "alerts.secret (HERALD_ALERTS_SECRET): not a valid signing secret (use whsec_<base64>)"
            );
        }
        let h = &self.http;
        if h.header_read_timeout_ms == 0
            || h.body_read_timeout_ms == 0
            || h.idle_timeout_ms == 0
            || h.max_connections == 0
            || h.max_uri_bytes == 0
            || h.max_header_bytes == 0
        {
            bail!(
                "http.header_read_timeout_ms, http.body_read_timeout_ms, http.idle_timeout_ms, http.max_connections, http.max_uri_bytes and http.max_header_bytes must be greater than 0"
            );
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            bail!(
                "metrics.listen (HERALD_METRICS_LISTEN): {:?} is not an address like 127.0.0.1:9464",
                self.metrics.listen
            );
        }
        if self.retention.interval_secs == 0 || self.retention.batch == 0 {
            bail!("retention.interval_secs and retention.batch must be greater than 0");
        }
        parse_duration(&self.destinations.max_lifetime).map_err(|e| {
            anyhow!("destinations.max_lifetime (HERALD_DESTINATIONS_MAX_LIFETIME): {e}")
        })?;
        parse_duration(&self.destinations.expiring_notice).map_err(|e| {
            anyhow!("destinations.expiring_notice (HERALD_DESTINATIONS_EXPIRING_NOTICE): {e}")
        })?;
        if self.destinations.expiry_check_interval_secs == 0 {
            bail!(
                "destinations.expiry_check_interval_secs (HERALD_DESTINATIONS_EXPIRY_CHECK_INTERVAL_SECS): must be greater than 0"
            );
        }
        let p = &self.portal;
        if !p.brand_color.is_empty() && !herald_api::portal::is_hex_color(&p.brand_color) {
            bail!(
                "portal.brand_color (HERALD_PORTAL_BRAND_COLOR): {:?} is not a #rgb or #rrggbb colour",
                p.brand_color
            );
        }
        if !matches!(p.force_theme.as_str(), "" | "light" | "dark") {
            bail!(
                "portal.force_theme (HERALD_PORTAL_FORCE_THEME): {:?} is not light or dark",
                p.force_theme
            );
        }
        for (key, env, v) in [
            ("referer_url", "REFERER_URL", &p.referer_url),
            ("logo", "LOGO", &p.logo),
        ] {
            if !v.is_empty()
                && !url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            {
                bail!("portal.{key} (HERALD_PORTAL_{env}): {v:?} is not an http(s) URL");
            }
        }
        self.retry_policy()?;
        self.signing_config()?;
        self.allowed_networks()?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.topics.iter().enumerate() {
            if t.name.trim().is_empty() || t.name.contains('*') {
                bail!(
                    "topics[{i}].name: {:?} must be a non-empty topic name without '*'",
                    t.name
                );
            }
            if !seen.insert(&t.name) {
                bail!("topics[{i}].name: topic {:?} is declared twice", t.name);
            }
            if let Some(toml::Value::String(s)) = &t.sample {
                serde_json::from_str::<serde_json::Value>(s)
                    .map_err(|e| anyhow!("topics[{i}].sample: not valid JSON: {e}"))?;
            }
        }
        Ok(())
    }

    /// Development mode (`serve --dev`): allows http:// and loopback/private targets, drops
    /// `Secure` from the portal cookie, and listens on `127.0.0.1` unless `host` is set.
    pub fn apply_dev(&mut self) {
        self.dev = true;
        self.security.allow_http = true;
        self.security.allow_private = true;
    }

    /// The address to listen on: `host`, or when empty `127.0.0.1` in development mode and
    /// `0.0.0.0` otherwise.
    pub fn listen_host(&self) -> &str {
        match self.host.as_str() {
            "" if self.dev => "127.0.0.1",
            "" => "0.0.0.0",
            h => h,
        }
    }

    /// The alert settings described by `[alerts]`.
    pub fn alert_config(&self) -> herald_engine::operator::AlertConfig {
        let a = &self.alerts;
        herald_engine::operator::AlertConfig {
            consecutive_failure_threshold: a.consecutive_failure_threshold,
            auto_disable: a.auto_disable,
            exhausted_retries_window: Duration::from_secs(a.exhausted_retries_window_secs),
        }
    }

    /// The operator destination `alerts.callback_url` (and `alerts.secret`) define: a webhook
    /// destination of the operator tenant subscribed to the three alert topics, synced at
    /// start under the id [`ALERTS_DESTINATION_ID`]. `None` when no callback URL is set.
    pub fn alerts_destination(&self) -> Option<herald_core::Destination> {
        let a = &self.alerts;
        if a.callback_url.is_empty() {
            return None;
        }
        let mut credentials = std::collections::BTreeMap::new();
        if !a.secret.is_empty() {
            credentials.insert("secret".to_string(), a.secret.expose().to_string());
        }
        let epoch = jiff::Timestamp::UNIX_EPOCH;
        Some(herald_core::Destination {
            id: ALERTS_DESTINATION_ID.to_string(),
            tenant_id: herald_core::operator::OPERATOR_TENANT.to_string(),
            kind: "webhook".to_string(),
            topics: herald_core::Topics::List(
                herald_core::operator::topic::ALERTS
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
            ),
            filter: None,
            config: [("url".to_string(), a.callback_url.expose().to_string())].into(),
            credentials,
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: epoch,
            updated_at: epoch,
        })
    }

    /// The retry policy described by `[retry]`.
    pub fn retry_policy(&self) -> Result<RetryPolicy> {
        let r = &self.retry;
        let schedule = match r.schedule.as_str() {
            "exponential" => Schedule::Exponential {
                initial: Duration::from_secs(r.initial_secs),
                factor: r.factor,
                max_interval: Duration::from_secs(r.max_interval_secs),
                retries: r.retries,
            },
            "list" => Schedule::Fixed(
                r.delays_secs
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
            ),
            other => bail!(
                "retry.schedule (HERALD_RETRY_SCHEDULE): {other:?} is not exponential or list"
            ),
        };
        let policy = RetryPolicy {
            schedule,
            jitter: r.jitter,
            max_retry_after: Duration::from_secs(r.max_retry_after_secs),
        };
        policy.validate().map_err(|e| anyhow!("retry: {e}"))?;
        Ok(policy)
    }

    /// The signing settings described by `[signing]`.
    pub fn signing_config(&self) -> Result<SigningConfig> {
        let s = &self.signing;
        let mode = match s.mode.as_str() {
            "standard" => SigningMode::Standard,
            "outpost" => SigningMode::Outpost,
            "standard_ed25519" => SigningMode::StandardEd25519,
            other => {
                bail!(
                    "signing.mode (HERALD_SIGNING_MODE): {other:?} is not standard, standard_ed25519 or outpost"
                )
            }
        };
        let mut cfg = SigningConfig::new(mode);
        if !s.header_prefix.is_empty() {
            cfg.header_prefix = s.header_prefix.clone();
        }
        if !s.content_template.is_empty() {
            cfg.content_template = s.content_template.clone();
        }
        if !s.header_template.is_empty() {
            cfg.header_template = s.header_template.clone();
        }
        cfg.encoding = match s.encoding.as_str() {
            "hex" => SignatureEncoding::Hex,
            "base64" => SignatureEncoding::Base64,
            other => {
                bail!("signing.encoding (HERALD_SIGNING_ENCODING): {other:?} is not hex or base64")
            }
        };
        if !s.signature_header.is_empty() {
            cfg.signature_header = Some(s.signature_header.clone());
        }
        cfg.validate().map_err(|e| anyhow!("signing: {e}"))?;
        Ok(cfg)
    }

    /// Parsed `security.allowed_networks`.
    pub fn allowed_networks(&self) -> Result<Vec<herald_destinations::target::IpNet>> {
        self.security
            .allowed_networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.parse()
                    .map_err(|e| anyhow!("security.allowed_networks[{i}]: {e}"))
            })
            .collect()
    }
}

impl Config {
    /// The keyring described by `encryption_key` and `encryption_old_keys`, when a key is
    /// configured (`None` when `encryption_key` is empty).
    pub fn keyring_from_settings(&self) -> Result<Option<herald_store::seal::Keyring>> {
        if self.encryption_key.is_empty() {
            if !self.encryption_old_keys.is_empty() {
                bail!(
                    "encryption_old_keys (HERALD_ENCRYPTION_OLD_KEYS) is set but encryption_key (HERALD_ENCRYPTION_KEY) is not; old keys only open values, a current key must seal them"
                );
            }
            return Ok(None);
        }
        let old: Vec<Secret> = self
            .encryption_old_keys
            .iter()
            .map(|k| k.0.clone())
            .collect();
        herald_store::seal::Keyring::new(
            "encryption_key (HERALD_ENCRYPTION_KEY)",
            &self.encryption_key.0,
            "encryption_old_keys (HERALD_ENCRYPTION_OLD_KEYS)",
            &old,
        )
        .map(Some)
        .map_err(|e| anyhow!("{e}"))
    }
}

/// A list of secrets from a list or a comma-separated string; never echoed in an error.
fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretSetting>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Secret),
        Many(Vec<Secret>),
    }
    let items = OneOrMany::deserialize(d).map_err(|_| {
        serde::de::Error::custom("must be a list of keys or a comma-separated string of keys")
    })?;
    Ok(match items {
        OneOrMany::Many(v) => v.into_iter().map(SecretSetting).collect(),
        OneOrMany::One(s) => s
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| SecretSetting(Secret::new(k)))
            .collect(),
    })
}

/// A secret setting (key, token, password): deserializes from a string, and prints — in
/// `Debug` and in `herald config` (its `Serialize`) — as `(set)` or empty, never the value.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretSetting(pub Secret);

impl SecretSetting {
    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Whether it is unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.is_empty() { "" } else { "(set)" }
    }
}

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for SecretSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// A URL setting that may carry a password in its userinfo: prints with the password
/// replaced by `****` (and as `(set)` when it does not parse as a URL).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub Secret);

impl SecretUrl {
    /// The URL itself, password included.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Whether it is unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL with its password replaced.
    pub fn for_display(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        match url::Url::parse(self.expose()) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("****"));
                }
                u.to_string()
            }
            Err(_) => "(set)".into(),
        }
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.for_display())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.for_display())
    }
}

/// `HERALD_*` variables Herald reads that are not configuration keys.
const OTHER_VARIABLES: [&str; 3] = [
    "HERALD_CONFIG", // the file, also --config
    "HERALD_TOPICS", // topic names, a shorthand for [[topics]]
    "HERALD_URL",    // the server the CLI's client commands talk to
];

/// A warning for each `HERALD_*` variable in `env` that Herald does not read, naming the
/// closest variable it does read when one is close (a typo). Unknown variables are ignored
/// rather than refused, so that settings for a newer version or for tools around Herald do
/// not stop it from starting.
pub fn unknown_variables(env: &BTreeMap<String, String>) -> Vec<String> {
    let known: Vec<String> = env_keys()
        .into_iter()
        .map(|(var, _, _)| var)
        .chain(OTHER_VARIABLES.iter().map(|v| v.to_string()))
        .collect();
    env.keys()
        .filter(|var| var.starts_with("HERALD_") && !known.contains(var))
        .map(|var| {
            // Compared without the shared prefix, which would make every name look alike.
            // 0.7 similarity takes a missing `_MS`, a dropped or swapped letter or a missing
            // underscore, and leaves unrelated names alone.
            let name = &var["HERALD_".len()..];
            let closest = known
                .iter()
                .map(|k| {
                    let score = strsim::normalized_damerau_levenshtein(name, &k["HERALD_".len()..]);
                    (score, k)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .filter(|(score, _)| *score >= 0.7);
            match closest {
                Some((_, k)) => format!(
                    "environment variable {var} is not a Herald setting and is ignored; did you mean {k}?"
                ),
                None => format!(
                    "environment variable {var} is not a Herald setting and is ignored \
                     (docs/configuration.md lists them)"
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_the_destinations_section() {
        use std::time::Duration;
        assert_eq!(parse_duration(""), Ok(None));
        assert_eq!(parse_duration("0"), Ok(None));
        assert_eq!(
            parse_duration("90d"),
            Ok(Some(Duration::from_secs(90 * 86_400)))
        );
        assert_eq!(parse_duration("12h"), Ok(Some(Duration::from_secs(43_200))));
        assert_eq!(parse_duration("30m"), Ok(Some(Duration::from_secs(1800))));
        assert_eq!(parse_duration("45"), Ok(Some(Duration::from_secs(45))));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("d").is_err());
        let env: BTreeMap<String, String> = [("HERALD_DESTINATIONS_MAX_LIFETIME", "90d")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cfg = Config::load(None, &env).unwrap();
        assert_eq!(cfg.destinations.max_lifetime, "90d");
        assert_eq!(cfg.destinations.expiring_notice, "7d");
        let env: BTreeMap<String, String> = [("HERALD_DESTINATIONS_MAX_LIFETIME", "forever")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let e = Config::load(None, &env).unwrap_err().to_string();
        assert!(e.contains("HERALD_DESTINATIONS_MAX_LIFETIME"), "{e}");
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.port, 3333);
        assert_eq!(c.delivery.timeout_ms, 5000);
    }

    #[test]
    fn the_tenant_bound_defaults_to_half_the_pool_and_never_exceeds_it() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.delivery.tenant_limit(), 256);
        let c = Config::load(None, &env(&[("HERALD_DELIVERY_MAX_IN_FLIGHT", "100")])).unwrap();
        assert_eq!(c.delivery.tenant_limit(), 50);
        let c = Config::load(
            None,
            &env(&[
                ("HERALD_DELIVERY_MAX_IN_FLIGHT", "100"),
                ("HERALD_DELIVERY_TENANT_MAX_IN_FLIGHT", "300"),
            ]),
        )
        .unwrap();
        assert_eq!(c.delivery.tenant_limit(), 100);
        let c = Config::load(None, &env(&[("HERALD_DELIVERY_TENANT_MAX_IN_FLIGHT", "8")])).unwrap();
        assert_eq!(c.delivery.tenant_limit(), 8);
    }

    #[test]
    fn log_levels_are_settings_and_a_bad_one_names_its_key() {
        let c = Config::load(
            None,
            &env(&[
                ("HERALD_LOG_ACCESS", "true"),
                ("HERALD_LOG_ATTEMPT_SUCCESS_LEVEL", "INFO"),
                ("HERALD_LOG_ATTEMPT_FAILURE_LEVEL", "off"),
                ("HERALD_METRICS_TOP_DESTINATIONS", "5"),
            ]),
        )
        .unwrap();
        assert!(c.log.access);
        let levels = c.log.attempt_log().unwrap();
        assert_eq!(levels.success, Some(tracing::Level::INFO));
        assert_eq!(levels.failure, None);
        assert_eq!(c.metrics.top_destinations, 5);
        let defaults = Config::default().log.attempt_log().unwrap();
        assert_eq!(defaults, herald_engine::telemetry::AttemptLog::default());
        let e = Config::load(None, &env(&[("HERALD_LOG_ATTEMPT_FAILURE_LEVEL", "loud")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("log.attempt_failure_level (HERALD_LOG_ATTEMPT_FAILURE_LEVEL)"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_nested_keys() {
        let c = Config::load(
            None,
            &env(&[
                ("HERALD_PORT", "4000"),
                ("HERALD_DELIVERY_TIMEOUT_MS", "250"),
                ("HERALD_SECURITY_ALLOW_HTTP", "true"),
                ("HERALD_TOPICS", "a.b, c.d"),
            ]),
        )
        .unwrap();
        assert_eq!(c.port, 4000);
        assert_eq!(c.delivery.timeout_ms, 250);
        assert!(c.security.allow_http);
        assert_eq!(c.topics.len(), 2);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::load(None, &env(&[("HERALD_PORT", "abc")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HERALD_PORT"), "{e}");
        let e = format!(
            "{:#}",
            Config::load(None, &env(&[("HERALD_SIGNING_MODE", "rsa")])).unwrap_err()
        );
        assert!(e.contains("signing.mode"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "port = 1\nbogus_key = 2\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&p), &env(&[])).unwrap_err());
        assert!(e.contains("bogus_key"), "{e}");
        std::fs::write(&p, "[delivery]\ntimeout_ms = \"fast\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&p), &env(&[])).unwrap_err());
        assert!(e.contains("timeout_ms"), "{e}");
        std::fs::write(&p, "[[topics]]\nname = \"a\"\nsample = \"{not json\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&p), &env(&[])).unwrap_err());
        assert!(e.contains("topics[0].sample"), "{e}");
        std::fs::write(&p, "[database]\npool_size = \"many\"\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&p), &env(&[])).unwrap_err());
        assert!(e.contains("pool_size"), "{e}");
    }

    #[test]
    fn secret_settings_never_print() {
        let key = herald_store::seal::Keyring::generate_key();
        let secrets = [
            ("HERALD_API_KEY", "admin-key-1234567"),
            ("HERALD_JWT_SECRET", "jwt-secret-1234567"),
            ("HERALD_ENCRYPTION_KEY", key.expose()),
            (
                "HERALD_ALERTS_SECRET",
                "whsec_c2VhbC1hbGVydHMtc2VjcmV0LTEwMDMteHl6",
            ),
            ("HERALD_DELIVERY_PROXY", "http://u:proxy-pw-99@proxy:3128"),
            ("HERALD_DATABASE_URL", "postgres://h:db-pw-98@db/herald"),
        ];
        let c = Config::load(None, &env(&secrets)).unwrap();
        let shown = format!("{c:?}\n{}", toml::to_string(&c).unwrap());
        for needle in [
            "admin-key-1234567",
            "jwt-secret-1234567",
            key.expose(),
            "c2VhbC1hbGVydHMtc2VjcmV0LTEwMDMteHl6",
            "proxy-pw-99",
            "db-pw-98",
        ] {
            assert!(!shown.contains(needle), "{needle} shown: {shown}");
        }
        assert_eq!(c.alerts.secret.expose(), secrets[3].1);
        assert!(c.keyring_from_settings().unwrap().is_some());

        // Old keys from the file: a list or one comma-separated string; a bad one is refused
        // naming the setting, never echoed.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let (k1, k2) = (
            herald_store::seal::Keyring::generate_key(),
            herald_store::seal::Keyring::generate_key(),
        );
        for text in [
            format!(
                "encryption_key = \"{}\"\nencryption_old_keys = [\"{}\"]\n",
                key.expose(),
                k1.expose()
            ),
            format!(
                "encryption_key = \"{}\"\nencryption_old_keys = \"{}, {}\"\n",
                key.expose(),
                k1.expose(),
                k2.expose()
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let c = Config::load(Some(&p), &env(&[])).unwrap();
            assert!(!c.encryption_old_keys.is_empty());
            let ring = c.keyring_from_settings().unwrap().unwrap();
            assert!(!ring.old_ids().is_empty());
        }
        std::fs::write(&p, "encryption_old_keys = 42\n").unwrap();
        let e = format!("{:#}", Config::load(Some(&p), &env(&[])).unwrap_err());
        assert!(e.contains("encryption_old_keys"), "{e}");
        std::fs::write(
            &p,
            format!(
                "encryption_key = \"{}\"\nencryption_old_keys = \"not-a-key-31337\"\n",
                key.expose()
            ),
        )
        .unwrap();
        let e = format!("{:#}", Config::load(Some(&p), &env(&[])).unwrap_err());
        assert!(
            e.contains("encryption_old_keys") && !e.contains("not-a-key-31337"),
            "{e}"
        );
    }

    #[test]
    fn database_settings_from_env_and_their_errors() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert!(!c.database.is_postgres());
        assert_eq!(c.database.pool_size, 10);
        assert!(c.database.migrate_on_start);
        let c = Config::load(
            None,
            &env(&[
                ("HERALD_DATABASE_URL", "postgres://herald:pw@db:5432/herald"),
                ("HERALD_DATABASE_POOL_SIZE", "4"),
                ("HERALD_DATABASE_MIGRATE_ON_START", "false"),
                ("HERALD_DELIVERY_LEASE_SECS", "30"),
            ]),
        )
        .unwrap();
        assert!(c.database.is_postgres());
        assert_eq!(c.database.pool_size, 4);
        assert!(!c.database.migrate_on_start);
        assert_eq!(c.delivery.lease_secs, 30);
        assert_eq!(
            c.database.url.for_display(),
            "postgres://herald:****@db:5432/herald"
        );
        for (var, value, key) in [
            ("HERALD_DATABASE_URL", "mysql://x/y", "database.url"),
            (
                "HERALD_DATABASE_URL",
                "postgres://h/db?sslmode=require",
                "database.url",
            ),
            ("HERALD_DATABASE_POOL_SIZE", "0", "database.pool_size"),
            (
                "HERALD_DATABASE_RESULT_LINGER_MS",
                "5000",
                "database.result_linger_ms",
            ),
            ("HERALD_DATABASE_POOL_SIZE", "-3", "database.pool_size"),
            (
                "HERALD_DATABASE_MIGRATE_ON_START",
                "maybe",
                "HERALD_DATABASE_MIGRATE_ON_START",
            ),
            ("HERALD_DELIVERY_LEASE_SECS", "5", "delivery.lease_secs"),
        ] {
            let e = format!(
                "{:#}",
                Config::load(None, &env(&[(var, value)])).unwrap_err()
            );
            assert!(e.contains(key), "{var}={value}: {e}");
        }
    }
}

//! The `redis_stream` type: appends each event to a Redis stream with `XADD`, optionally
//! capped with `MAXLEN`. A successful attempt means Redis answered with the new entry's id.
//!
//! Fields (the Outpost contract does not define this type): `server_url` (`host:port`),
//! `stream` (the key; a template, e.g. `events:{topic}`), `max_len` (cap; empty means no
//! cap), `max_len_approximate` (`MAXLEN ~`, default `true`, much cheaper for Redis),
//! `database`; credentials `username` (Redis 6 ACL user, optional) and `password`. The
//! signing settings (`signing_mode`, `signing_secret`, generated when omitted) are the common
//! ones every signing type gets from [`herald_core::spec::Typed`].
//!
//! Message mapping: one stream entry per event. Its field `data` holds the event data (JSON);
//! every header the engine computed (event id, timestamp, topic, metadata, signature) is one
//! more field of the same name, e.g. `webhook-id`, `webhook-timestamp`, `webhook-signature`,
//! `x-herald-topic`. The entry id is Redis's (`*`).
//!
//! Connections: one multiplexed connection per destination, opened on the first attempt and
//! shared by concurrent attempts; any I/O error or timeout drops it and the next attempt
//! reconnects.
//!
//! Classification: refused or dropped connections, timeouts and the transient server errors
//! `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`, `READONLY`, `CLUSTERDOWN` and `OOM` are retried;
//! authentication failures (`WRONGPASS`, `NOAUTH`), missing ACL permissions (`NOPERM`), a key
//! that holds another type (`WRONGTYPE`), any other server error reply and a stream key whose
//! template fails or renders empty for the message (`invalid_stream`) are permanent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::DestinationsConfig;
use crate::support::address::{ServerAddress, resolve, within};
use crate::support::errors::root_message;
use crate::support::template::Template;
use crate::target::TargetPolicy;

const KIND: &str = "redis_stream";
const DEFAULT_PORT: u16 = 6379;

/// The redis_stream destination type.
pub struct RedisStream {
    policy: Arc<TargetPolicy>,
}

/// `config` of a redis_stream destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Server address
    ///
    /// Redis server address (host:port), e.g. localhost:6379.
    pub server_url: ServerAddress,
    /// Stream key
    ///
    /// Key of the stream; `{topic}` and `{event_id}` are replaced (any `{JMESPath}` over the
    /// message works too), e.g. `events:{topic}`.
    pub stream: Template,
    /// Maximum length
    ///
    /// Cap the stream at about this many entries (XADD MAXLEN). Empty: no cap.
    #[schemars(range(min = 1))]
    pub max_len: Option<u64>,
    /// Approximate cap
    ///
    /// Trim with `MAXLEN ~` (whole nodes, much cheaper) instead of an exact `MAXLEN`. Defaults
    /// to true.
    #[serde(default = "yes")]
    pub max_len_approximate: bool,
    /// Database
    ///
    /// Database number (SELECT). Default 0.
    #[schemars(range(min = 0))]
    pub database: Option<u32>,
}

/// `credentials` of a redis_stream destination.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Username
    ///
    /// ACL user (Redis 6+); empty for the default user.
    pub username: Option<String>,
    /// Password
    ///
    /// Password (AUTH).
    pub password: Option<Secret>,
}

fn yes() -> bool {
    true
}

impl RedisStream {
    /// Builds the type; the target policy decides which server addresses may be reached.
    pub fn new(cfg: &DestinationsConfig) -> Self {
        Self {
            policy: Arc::new(cfg.target_policy.clone()),
        }
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><ellipse cx="12" cy="6" rx="8" ry="3"/><path d="M4 6v6c0 1.7 3.6 3 8 3s8-1.3 8-3V6"/><path d="M4 12v6c0 1.7 3.6 3 8 3s8-1.3 8-3v-6"/></svg>"#;

impl Spec for RedisStream {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "Redis Stream",
            description: "Append events to a Redis stream (XADD), optionally capped with MAXLEN.",
            icon: ICON,
            instructions: "Enter the Redis address and the stream key. Each event becomes one entry with a `data` \
                field (the event data as JSON) and one field per header (event id, timestamp, topic, metadata, signature).",
        }
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = config.server_url.check(&self.policy, "config.server_url") {
            errs.push(e);
        }
        if credentials.username.as_ref().is_some_and(|u| !u.is_empty())
            && credentials.password.as_ref().is_none_or(|p| p.is_empty())
        {
            errs.push(FieldError::new(
                "credentials.password",
                "is required with a username",
            ));
        }
        errs
    }

    fn build(
        &self,
        _id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(RedisStreamDriver {
            port: config.server_url.port_or(DEFAULT_PORT),
            host: config.server_url.host,
            stream: config.stream,
            max_len: config.max_len.filter(|n| *n > 0),
            approximate: config.max_len_approximate,
            database: config.database.unwrap_or(0),
            username: credentials.username.filter(|u| !u.is_empty()),
            password: credentials.password.filter(|p| !p.is_empty()),
            policy: self.policy.clone(),
            live: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        (
            format!("{} {}", config.server_url, config.stream.source()),
            None,
        )
    }
}

struct RedisStreamDriver {
    host: String,
    port: u16,
    stream: Template,
    max_len: Option<u64>,
    approximate: bool,
    database: u32,
    username: Option<String>,
    password: Option<Secret>,
    policy: Arc<TargetPolicy>,
    live: tokio::sync::Mutex<Option<(MultiplexedConnection, u64)>>,
    generation: AtomicU64,
}

/// Maps a redis error to retry or permanent (see the module docs).
fn classify(e: &redis::RedisError) -> DeliveryError {
    let text = root_message(e);
    if e.is_timeout() {
        return DeliveryError::retry("timeout", text);
    }
    if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        return DeliveryError::retry("connection_error", text);
    }
    let auth = |text: String| {
        DeliveryError::permanent(
            "auth_failed",
            format!(
                "{text}; check credentials.password (and credentials.username for an ACL user)"
            ),
        )
    };
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return auth(text);
    }
    match e.code() {
        Some(
            c @ ("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "CLUSTERDOWN"
            | "OOM"),
        ) => DeliveryError::retry(c.to_ascii_lowercase(), text),
        Some("WRONGPASS" | "NOAUTH") => auth(text),
        Some(c) => DeliveryError::permanent(c.to_ascii_lowercase(), text),
        None => DeliveryError::retry("redis_error", text),
    }
}

impl RedisStreamDriver {
    async fn connection(
        &self,
        timeout: std::time::Duration,
    ) -> Result<(MultiplexedConnection, u64), DeliveryError> {
        let mut live = self.live.lock().await;
        if let Some(c) = live.as_ref() {
            return Ok(c.clone());
        }
        let addr = resolve(&self.policy, &self.host, self.port).await?;
        let info = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
            .into_connection_info()
            .map_err(|e| classify(&e))?
            .set_redis_settings(self.settings());
        let client = redis::Client::open(info).map_err(|e| classify(&e))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify(&e))?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *live = Some((conn.clone(), generation));
        Ok((conn, generation))
    }

    /// Database and AUTH settings (the password is exposed only to the client here).
    fn settings(&self) -> RedisConnectionInfo {
        let mut info = RedisConnectionInfo::default().set_db(i64::from(self.database));
        if let Some(u) = &self.username {
            info = info.set_username(u);
        }
        if let Some(p) = &self.password {
            info = info.set_password(p.expose());
        }
        info
    }

    async fn invalidate(&self, generation: u64) {
        let mut live = self.live.lock().await;
        if live.as_ref().is_some_and(|(_, g)| *g == generation) {
            *live = None;
        }
    }

    fn command(&self, key: &str, msg: &OutboundMessage) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key);
        if let Some(n) = self.max_len {
            cmd.arg("MAXLEN");
            if self.approximate {
                cmd.arg("~");
            }
            cmd.arg(n);
        }
        cmd.arg("*").arg("data").arg(&msg.body[..]);
        for (k, v) in &msg.headers {
            cmd.arg(k.as_str()).arg(v.as_str());
        }
        cmd
    }
}

#[async_trait]
impl Driver for RedisStreamDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let key = self
            .stream
            .render(msg)
            .map_err(|e| {
                DeliveryError::permanent("invalid_stream", format!("stream key template: {e}"))
            })?
            .ok_or_else(|| {
                DeliveryError::permanent("invalid_stream", "the stream key renders empty")
            })?;
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let (mut conn, generation) = within(
            msg.timeout,
            "connecting to Redis",
            self.connection(msg.timeout),
        )
        .await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let cmd = self.command(&key, msg);
        let result = within(left, "waiting for XADD", async {
            cmd.query_async::<String>(&mut conn)
                .await
                .map_err(|e| classify(&e))
        })
        .await;
        match result {
            Ok(id) => Ok(Receipt {
                code: "ok".into(),
                response: Some(json!({ "stream": key, "entry_id": id })),
            }),
            Err(e) => {
                if matches!(
                    e.disposition,
                    herald_core::destination::Disposition::Retry { .. }
                ) {
                    self.invalidate(generation).await;
                }
                Err(DeliveryError {
                    response: Some(json!({ "stream": key })),
                    ..e
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    fn redis_stream() -> Typed<RedisStream> {
        Typed::new(RedisStream::new(&DestinationsConfig::default()), true)
    }

    fn c(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_names_fields() {
        let t = redis_stream();
        let errs = t.validate(
            &c(&[
                ("server_url", "redis.example:6379"),
                ("stream", "ev:{bad}"),
                ("max_len", "-1"),
                ("database", "x"),
            ]),
            &c(&[]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["config.stream", "config.max_len", "config.database"]
        );
        // Cross-field checks run once every field parses.
        let errs = t.validate(
            &c(&[("server_url", "redis.example:6379"), ("stream", "s")]),
            &c(&[("username", "u")]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["credentials.password"]);
        let errs = t.validate(
            &c(&[
                ("server_url", "127.0.0.1"),
                ("stream", "s"),
                ("max_len", "0"),
            ]),
            &c(&[]),
        );
        assert_eq!(errs[0].field, "config.max_len");
        assert!(
            errs[0].problem.contains("at least 1"),
            "{}",
            errs[0].problem
        );
        assert!(
            t.validate(
                &c(&[
                    ("server_url", "redis.example"),
                    ("stream", "events:{topic}"),
                    ("max_len", "1000")
                ]),
                &c(&[])
            )
            .is_empty()
        );
    }

    #[test]
    fn schema_keeps_its_fields() {
        let t = redis_stream();
        let spec = t.spec();
        let f = |k: &str| spec.config_fields.iter().find(|f| f.key == k).unwrap();
        assert!(f("server_url").required && f("stream").required);
        assert_eq!(f("max_len").pattern.as_deref(), Some("^[0-9]*$"));
        assert_eq!(f("database").pattern.as_deref(), Some("^[0-9]*$"));
        assert!(f("database").default.is_none());
        assert_eq!(f("max_len_approximate").kind, "checkbox");
        assert_eq!(f("max_len_approximate").default.as_deref(), Some("true"));
        let creds: Vec<_> = spec
            .credential_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.sensitive))
            .collect();
        assert_eq!(
            &creds[..3],
            [
                ("username", false, false),
                ("password", false, true),
                ("signing_secret", false, true)
            ]
        );
    }

    #[test]
    fn the_command_caps_the_stream_and_carries_every_header() {
        let t = redis_stream();
        let cfg = c(&[
            ("server_url", "redis.example"),
            ("stream", "ev:{topic}"),
            ("max_len", "5"),
            ("max_len_approximate", "false"),
            ("database", "2"),
        ]);
        let (config, credentials) = (
            herald_core::spec::parse::<Config>(
                "config",
                &herald_core::spec::Fields::of::<Config>(),
                &cfg,
            )
            .unwrap(),
            Credentials {
                username: Some("u".into()),
                password: Some(Secret::new("p")),
            },
        );
        assert!(t.validate(&cfg, &c(&[])).is_empty());
        let d = RedisStreamDriver {
            port: config.server_url.port_or(DEFAULT_PORT),
            host: config.server_url.host,
            stream: config.stream,
            max_len: config.max_len,
            approximate: config.max_len_approximate,
            database: config.database.unwrap_or(0),
            username: credentials.username,
            password: credentials.password,
            policy: Arc::new(TargetPolicy::default()),
            live: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        };
        assert_eq!(d.port, 6379);
        let info = d.settings();
        assert_eq!(info.db(), 2);
        let msg = OutboundMessage {
            event_id: "evt_1".into(),
            delivery_id: "dlv_1".into(),
            topic: "a".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            body: Arc::from(&b"{}"[..]),
            headers: vec![("webhook-id".into(), "evt_1".into())],
            metadata: Default::default(),
            timeout: std::time::Duration::from_secs(1),
        };
        let key = d.stream.render(&msg).unwrap().unwrap();
        assert_eq!(key, "ev:a");
        // RESP: each argument is a `$<len>` line followed by the argument.
        let packed = String::from_utf8(d.command(&key, &msg).get_packed_command()).unwrap();
        let lines: Vec<_> = packed.split("\r\n").collect();
        let args: Vec<_> = lines
            .windows(2)
            .filter(|w| w[0].starts_with('$'))
            .map(|w| w[1])
            .collect();
        assert_eq!(
            args,
            [
                "XADD",
                "ev:a",
                "MAXLEN",
                "5",
                "*",
                "data",
                "{}",
                "webhook-id",
                "evt_1"
            ]
        );
    }
}

//! The `redis_stream` type: appends each event to a Redis stream with `XADD`, optionally
//! capped with `MAXLEN`. A successful attempt means Redis answered with the new entry's id.
//!
//! Fields (the Outpost contract does not define this type): `server_url` (`host:port`),
//! `stream` (the key; a template, e.g. `events:{topic}`), `max_len` (cap; empty means no
//! cap), `max_len_approximate` (`MAXLEN ~`, default `true`, much cheaper for Redis),
//! `database`, `signing_mode`; credentials `username` (Redis 6 ACL user, optional),
//! `password`, and an optional signing `secret`.
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
//! that holds another type (`WRONGTYPE`) and any other server error reply are permanent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use herald_core::Destination;
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use serde_json::json;

use crate::broker::{self, Template, field, with_pattern};
use crate::target::TargetPolicy;

const DEFAULT_PORT: u16 = 6379;

/// The redis_stream destination type.
pub struct RedisStreamType {
    spec: TypeSpec,
    policy: Arc<TargetPolicy>,
}

impl RedisStreamType {
    /// Builds the type; `policy` decides which server addresses may be reached.
    pub fn new(policy: TargetPolicy) -> Self {
        let spec = TypeSpec {
            kind: "redis_stream".into(),
            label: "Redis Stream".into(),
            description: "Append events to a Redis stream (XADD), optionally capped with MAXLEN.".into(),
            icon: ICON.into(),
            instructions: "Enter the Redis address and the stream key. Each event becomes one entry with a `data` \
                field (the event data as JSON) and one field per header (event id, timestamp, topic, metadata, signature)."
                .into(),
            config_fields: vec![
                broker::server_field("Redis", "localhost:6379"),
                field(
                    "stream",
                    "Stream key",
                    "Key of the stream; `{topic}` and `{event_id}` are replaced, e.g. `events:{topic}`.",
                    true,
                    false,
                ),
                with_pattern(
                    field(
                        "max_len",
                        "Maximum length",
                        "Cap the stream at about this many entries (XADD MAXLEN). Empty: no cap.",
                        false,
                        false,
                    ),
                    "^[0-9]*$",
                ),
                broker::bool_field(
                    "max_len_approximate",
                    "Approximate cap",
                    "Trim with `MAXLEN ~` (whole nodes, much cheaper) instead of an exact `MAXLEN`. Defaults to \"true\".",
                    "true",
                ),
                with_pattern(
                    field("database", "Database", "Database number (SELECT). Default 0.", false, false),
                    "^[0-9]*$",
                ),
                broker::signing_mode_field(),
            ],
            credential_fields: vec![
                field("username", "Username", "ACL user (Redis 6+); empty for the default user.", false, false),
                field("password", "Password", "Password (AUTH).", false, true),
                broker::secret_field(),
            ],
        };
        Self {
            spec,
            policy: Arc::new(policy),
        }
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><ellipse cx="12" cy="6" rx="8" ry="3"/><path d="M4 6v6c0 1.7 3.6 3 8 3s8-1.3 8-3V6"/><path d="M4 12v6c0 1.7 3.6 3 8 3s8-1.3 8-3v-6"/></svg>"#;

/// A non-negative whole number, or empty.
fn parse_count(v: &str) -> Result<Option<u64>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{v:?} is not a whole number"))
}

impl DestinationType for RedisStreamType {
    fn spec(&self) -> &TypeSpec {
        &self.spec
    }

    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        broker::validate_common(
            &self.policy,
            config,
            credentials,
            &["max_len_approximate"],
            &mut errs,
        );
        if let Some(raw) = config.get("stream")
            && let Err(e) = Template::parse(raw)
        {
            errs.push(FieldError::new("config.stream", e));
        }
        match config.get("max_len").map(|v| parse_count(v)) {
            Some(Err(e)) => errs.push(FieldError::new("config.max_len", e)),
            Some(Ok(Some(0))) => errs.push(FieldError::new(
                "config.max_len",
                "must be at least 1 (or empty for no cap)",
            )),
            _ => {}
        }
        match config.get("database").map(|v| parse_count(v)) {
            Some(Err(e)) => errs.push(FieldError::new("config.database", e)),
            Some(Ok(Some(n))) if n > i64::MAX as u64 => {
                errs.push(FieldError::new("config.database", "is too large"))
            }
            _ => {}
        }
        if credentials.get("username").is_some_and(|u| !u.is_empty())
            && credentials.get("password").is_none_or(|p| p.is_empty())
        {
            errs.push(FieldError::new(
                "credentials.password",
                "is required with a username",
            ));
        }
        errs
    }

    fn build(&self, d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        let raw = d.config.get("server_url").map_or("", String::as_str);
        let (host, port) = broker::parse_server(raw, DEFAULT_PORT)
            .map_err(|e| FieldError::new("config.server_url", e))?;
        let stream = Template::parse(d.config.get("stream").map_or("", String::as_str))
            .map_err(|e| FieldError::new("config.stream", e))?;
        let count = |k: &str| {
            d.config
                .get(k)
                .map(|v| parse_count(v))
                .transpose()
                .map(Option::flatten)
                .map_err(|e| FieldError::new(format!("config.{k}"), e))
        };
        let cred = |k: &str| d.credentials.get(k).filter(|v| !v.is_empty()).cloned();
        let mut info = RedisConnectionInfo::default()
            .set_db(count("database")?.unwrap_or(0).min(i64::MAX as u64) as i64);
        if let Some(u) = cred("username") {
            info = info.set_username(u);
        }
        if let Some(p) = cred("password") {
            info = info.set_password(p);
        }
        Ok(Arc::new(RedisStreamDriver {
            host,
            port,
            stream,
            max_len: count("max_len")?.filter(|n| *n > 0),
            approximate: broker::config_bool(&d.config, "max_len_approximate", true),
            info,
            policy: self.policy.clone(),
            live: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let server = d.config.get("server_url").cloned().unwrap_or_default();
        let stream = d.config.get("stream").cloned().unwrap_or_default();
        (format!("{server} {stream}"), None)
    }
}

struct RedisStreamDriver {
    host: String,
    port: u16,
    stream: Template,
    max_len: Option<u64>,
    approximate: bool,
    info: RedisConnectionInfo,
    policy: Arc<TargetPolicy>,
    live: tokio::sync::Mutex<Option<(MultiplexedConnection, u64)>>,
    generation: AtomicU64,
}

/// Maps a redis error to retry or permanent (see the module docs).
fn classify(e: &redis::RedisError) -> DeliveryError {
    let text = broker::root_message(e);
    if e.is_timeout() {
        return DeliveryError::retry("timeout", text);
    }
    if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        return DeliveryError::retry("connection_error", text);
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return DeliveryError::permanent("auth_failed", text);
    }
    match e.code() {
        Some(
            c @ ("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "CLUSTERDOWN"
            | "OOM"),
        ) => DeliveryError::retry(c.to_ascii_lowercase(), text),
        Some("WRONGPASS" | "NOAUTH") => DeliveryError::permanent("auth_failed", text),
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
        let addr = broker::resolve(&self.policy, &self.host, self.port).await?;
        let info = ConnectionAddr::Tcp(addr.ip().to_string(), addr.port())
            .into_connection_info()
            .map_err(|e| classify(&e))?
            .set_redis_settings(self.info.clone());
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
        let key = self.stream.render(msg);
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let (mut conn, generation) = broker::within(
            msg.timeout,
            "connecting to Redis",
            self.connection(msg.timeout),
        )
        .await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let cmd = self.command(&key, msg);
        let result = broker::within(left, "waiting for XADD", async {
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
    use super::*;

    #[test]
    fn validation_names_fields() {
        let t = RedisStreamType::new(TargetPolicy::default());
        let c = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let errs = t.validate(
            &c(&[
                ("server_url", "redis.example:6379"),
                ("stream", "ev:{bad}"),
                ("max_len", "-1"),
                ("database", "x"),
            ]),
            &c(&[("username", "u")]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.stream",
                "config.max_len",
                "config.database",
                "credentials.password"
            ]
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
}

//! The `rabbitmq` type: publishes each event to an AMQP 0-9-1 exchange with publisher
//! confirms, so a successful attempt means the broker has taken the message.
//!
//! Fields follow the Outpost contract (`server_url`, `exchange`, `tls`; `username`,
//! `password`) plus Herald extensions: `routing_key` (a template, default `{topic}`), `vhost`,
//! `signing_mode` and an optional signing `secret`.
//!
//! Message mapping: the body is the event data (JSON); the engine's headers (event id,
//! timestamp, topic, metadata, signature) go into the AMQP headers table; the properties are
//! `content_type: application/json`, `delivery_mode: 2` (persistent), `message_id` (event
//! id), `timestamp` (event time, unix seconds), `type` (topic) and `app_id: herald`. Messages
//! are published `mandatory`, so one that no queue receives comes back as unroutable.
//!
//! Connections: one AMQP connection with one confirm-mode channel per destination, opened on
//! the first attempt and reused. The socket goes to the address [`resolve`] checked against
//! the target policy, with or without TLS (a TLS certificate is verified against the
//! configured host name): lapin never resolves the name itself. Any failure other than a clean broker verdict drops it, and
//! the next attempt reconnects, so a broker restart costs one failed attempt.
//!
//! Classification: connection refused/reset, timeouts, `CONNECTION_FORCED`, broker NACKs and
//! unroutable returns are retried; `ACCESS_REFUSED` (bad credentials or permissions), a
//! missing exchange (`NOT_FOUND`), an unknown vhost (`NOT_ALLOWED`) and other configuration
//! errors are permanent — retrying cannot fix them until the destination is edited.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{AsyncTcpStream, TLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::DestinationsConfig;
use crate::support::address::{ServerAddress, resolve, within};
use crate::support::errors::root_message;
use crate::support::template::Template;
use crate::target::TargetPolicy;

const KIND: &str = "rabbitmq";
const DEFAULT_PORT: u16 = 5672;
const DEFAULT_TLS_PORT: u16 = 5671;
/// AMQP short strings (exchange, routing key, header names, message id) hold 255 bytes.
const SHORT_MAX: usize = 255;

/// The rabbitmq destination type.
pub struct RabbitMq {
    policy: Arc<TargetPolicy>,
}

/// `config` of a rabbitmq destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Server address
    ///
    /// RabbitMQ server address (host:port), e.g. localhost:5672.
    pub server_url: ServerAddress,
    /// Exchange
    ///
    /// The exchange to publish messages to (`amq.default` is the default exchange). It must
    /// exist.
    #[schemars(length(min = 1, max = 255))]
    pub exchange: String,
    /// Routing key
    ///
    /// Herald extension: routing key template; `{topic}` and `{event_id}` are replaced (any
    /// `{JMESPath}` over the message works too). Default `{topic}`.
    #[serde(default = "default_routing_key")]
    pub routing_key: Template,
    /// TLS
    ///
    /// Whether to use a TLS connection (amqps). Defaults to false.
    #[serde(default)]
    pub tls: bool,
    /// Virtual host
    ///
    /// Herald extension: the virtual host. Default `/`.
    #[serde(default = "default_vhost")]
    #[schemars(length(max = 255))]
    pub vhost: String,
}

/// `credentials` of a rabbitmq destination.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Username
    ///
    /// RabbitMQ username.
    pub username: String,
    /// Password
    ///
    /// RabbitMQ password.
    pub password: Secret,
}

fn default_routing_key() -> Template {
    // A constant template: parsing cannot fail.
    Template::placeholders("{topic}").unwrap_or_else(|_| unreachable!())
}

fn default_vhost() -> String {
    "/".into()
}

impl RabbitMq {
    /// Builds the type.
    pub fn new(cfg: &DestinationsConfig) -> Self {
        Self {
            policy: Arc::new(cfg.target_policy.clone()),
        }
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><rect x="3" y="3" width="7" height="18" rx="1"/><rect x="10" y="10" width="11" height="11" rx="1"/><circle cx="15.5" cy="15.5" r="1.5"/></svg>"#;

impl Spec for RabbitMq {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "RabbitMQ",
            description: "Publish events to a RabbitMQ exchange (AMQP 0-9-1) with publisher confirms.",
            icon: ICON,
            instructions: "Enter the broker address, the exchange to publish to and the credentials of a user \
                allowed to write to it. Each event is published with the routing key (default: the event topic); \
                bind a queue to the exchange to receive it. The exchange must exist.",
        }
    }

    fn check(&self, config: &Config, _: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = config.server_url.check(&self.policy, "config.server_url") {
            errs.push(e);
        }
        if config.exchange.len() > SHORT_MAX {
            errs.push(FieldError::new(
                "config.exchange",
                format!("must be at most {SHORT_MAX} bytes"),
            ));
        }
        if config.routing_key.literal_text().len() > SHORT_MAX {
            errs.push(FieldError::new(
                "config.routing_key",
                format!("must be at most {SHORT_MAX} bytes"),
            ));
        }
        if config.vhost.len() > SHORT_MAX {
            errs.push(FieldError::new(
                "config.vhost",
                format!("must be at most {SHORT_MAX} bytes"),
            ));
        }
        errs
    }

    fn build(
        &self,
        id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        let port = config.server_url.port_or(if config.tls {
            DEFAULT_TLS_PORT
        } else {
            DEFAULT_PORT
        });
        let exchange = ShortString::try_new(if config.exchange == "amq.default" {
            String::new()
        } else {
            config.exchange
        })
        .map_err(|e| FieldError::new("config.exchange", e.to_string()))?;
        Ok(Arc::new(RabbitMqDriver {
            host: config.server_url.host,
            port,
            tls: config.tls,
            vhost: if config.vhost.is_empty() {
                default_vhost()
            } else {
                config.vhost
            },
            username: credentials.username,
            password: credentials.password,
            exchange,
            routing_key: config.routing_key,
            policy: self.policy.clone(),
            name: format!("herald destination {id}"),
            live: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        (config.exchange.clone(), None)
    }
}

/// An open connection and its confirm-mode channel.
struct Live {
    conn: Connection,
    channel: Channel,
    generation: u64,
}

struct RabbitMqDriver {
    host: String,
    port: u16,
    tls: bool,
    vhost: String,
    username: String,
    password: Secret,
    exchange: ShortString,
    routing_key: Template,
    policy: Arc<TargetPolicy>,
    name: String,
    live: tokio::sync::Mutex<Option<Live>>,
    generation: AtomicU64,
}

/// Maps a lapin error to retry or permanent (see the module docs).
fn classify(e: &lapin::Error) -> DeliveryError {
    let text = root_message(e);
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let (code, permanent) = match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => ("access_refused", true),
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => ("not_found", true),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                    ("precondition_failed", true)
                }
                AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => ("content_too_large", true),
                AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => ("resource_locked", false),
                AMQPErrorKind::Soft(AMQPSoftError::NOROUTE | AMQPSoftError::NOCONSUMERS) => {
                    ("unroutable", false)
                }
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => ("not_allowed", true),
                AMQPErrorKind::Hard(AMQPHardError::INVALIDPATH) => ("invalid_path", true),
                AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => {
                    ("connection_forced", false)
                }
                AMQPErrorKind::Hard(_) => ("amqp_error", false),
            };
            let mut text = format!("broker answered {}: {text}", amqp.get_id());
            match code {
                "access_refused" => text.push_str(
                    "; check credentials.username and credentials.password, and that the user may write to the exchange",
                ),
                "not_found" => text.push_str("; check that config.exchange exists"),
                "not_allowed" => text.push_str("; check config.vhost and the user's access to it"),
                _ => {}
            }
            if permanent {
                DeliveryError::permanent(code, text)
            } else {
                DeliveryError::retry(code, text)
            }
        }
        ErrorKind::IOError(_) => DeliveryError::retry("connection_error", text),
        ErrorKind::AuthProviderError(_) => DeliveryError::permanent(
            "access_refused",
            format!("{text}; check credentials.username and credentials.password"),
        ),
        _ => DeliveryError::retry("amqp_error", text),
    }
}

impl RabbitMqDriver {
    fn uri(&self, host: String, timeout: Duration) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.username.clone(),
                    password: self.password.expose().to_string(),
                },
                host,
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                connection_timeout: Some(timeout.as_millis().max(1) as u64),
                heartbeat: Some(30),
                ..AMQPQueryString::default()
            },
        }
    }

    /// The cached channel, or a new connection and channel.
    async fn channel(&self, timeout: Duration) -> Result<(Channel, u64), DeliveryError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if l.conn.status().connected() && l.channel.status().connected() {
                return Ok((l.channel.clone(), l.generation));
            }
            if let Some(old) = live.take() {
                close_later(old.conn);
            }
        }
        let addr = resolve(&self.policy, &self.host, self.port).await?;
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(self.name.clone()));
        let runtime = lapin::runtime::default_runtime().map_err(|e| classify(&e))?;
        // The socket always goes to the address checked just above (lapin would resolve the
        // name again, a rebinding window); with TLS the certificate is verified against the
        // configured host name, which is also the SNI sent.
        let (tls, host) = (self.tls, self.host.clone());
        let conn = Connection::connector(
            self.uri(self.host.clone(), timeout),
            runtime,
            async move |_uri, runtime| {
                let stream = AsyncTcpStream::connect(&runtime, addr).await?;
                Ok(if tls {
                    stream.into_tls(&host, TLSConfig::default()).await?
                } else {
                    stream
                })
            },
            props,
        )
        .await
        .map_err(|e| classify(&e))?;
        let opened = async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, lapin::Error>(ch)
        }
        .await;
        let channel = match opened {
            Ok(ch) => ch,
            Err(e) => {
                close_later(conn);
                return Err(classify(&e));
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *live = Some(Live {
            conn,
            channel: channel.clone(),
            generation,
        });
        Ok((channel, generation))
    }

    /// Drops the cached connection if it is still the one that failed.
    async fn invalidate(&self, generation: u64) {
        let mut live = self.live.lock().await;
        if live.as_ref().is_some_and(|l| l.generation == generation)
            && let Some(old) = live.take()
        {
            close_later(old.conn);
        }
    }

    fn properties(&self, msg: &OutboundMessage) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (k, v) in &msg.headers {
            if let Ok(k) = ShortString::try_new(k.as_str()) {
                headers.insert(k, AMQPValue::LongString(LongString::from(v.as_bytes())));
            }
        }
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_timestamp(msg.time.as_second().max(0) as u64)
            .with_app_id("herald".into())
            .with_headers(headers);
        if let Ok(id) = ShortString::try_new(msg.event_id.as_str()) {
            props = props.with_message_id(id);
        }
        if let Ok(t) = ShortString::try_new(msg.topic.as_str()) {
            props = props.with_type(t);
        }
        props
    }

    async fn publish(
        &self,
        channel: &Channel,
        routing_key: ShortString,
        msg: &OutboundMessage,
    ) -> Result<Receipt, DeliveryError> {
        let confirm = channel
            .basic_publish(
                self.exchange.clone(),
                routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &msg.body,
                self.properties(msg),
            )
            .await
            .map_err(|e| classify(&e))?
            .await
            .map_err(|e| classify(&e))?;
        let response = json!({
            "exchange": self.exchange.as_str(),
            "routing_key": routing_key.as_str(),
        });
        let fail = |e: DeliveryError| DeliveryError {
            response: Some(response.clone()),
            ..e
        };
        match confirm {
            Confirmation::Ack(None) => Ok(Receipt {
                code: "ack".into(),
                response: Some(response.clone()),
            }),
            Confirmation::Ack(Some(ret)) | Confirmation::Nack(Some(ret)) => {
                Err(fail(DeliveryError::retry(
                    "unroutable",
                    format!(
                        "the broker returned the message ({} {}): no queue is bound to exchange {:?} for routing key {:?}",
                        ret.reply_code,
                        ret.reply_text,
                        self.exchange.as_str(),
                        routing_key.as_str()
                    ),
                )))
            }
            Confirmation::Nack(None) => Err(fail(DeliveryError::retry(
                "nack",
                "the broker did not accept the message (basic.nack)",
            ))),
            Confirmation::NotRequested => Err(fail(DeliveryError::retry(
                "amqp_error",
                "the channel is not in confirm mode",
            ))),
        }
    }
}

/// Closes a connection in the background (never blocks an attempt).
fn close_later(conn: Connection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                conn.close(200, ShortString::from("bye")),
            )
            .await;
        });
    }
}

impl Drop for RabbitMqDriver {
    fn drop(&mut self) {
        if let Some(l) = self.live.get_mut().take() {
            close_later(l.conn);
        }
    }
}

#[async_trait]
impl Driver for RabbitMqDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let key = self
            .routing_key
            .render(msg)
            .map_err(|e| {
                DeliveryError::permanent(
                    "invalid_routing_key",
                    format!("routing key template: {e}"),
                )
            })?
            .unwrap_or_default();
        let routing_key = ShortString::try_new(key).map_err(|e| {
            DeliveryError::permanent("invalid_routing_key", format!("routing key: {e}"))
        })?;
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let (channel, generation) = within(
            msg.timeout,
            "connecting to RabbitMQ",
            self.channel(msg.timeout),
        )
        .await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = within(
            left,
            "waiting for the publisher confirm",
            self.publish(&channel, routing_key, msg),
        )
        .await;
        if let Err(e) = &result
            && !matches!(e.code.as_str(), "unroutable" | "nack")
        {
            self.invalidate(generation).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herald_core::Destination;
    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    fn rabbitmq() -> Typed<RabbitMq> {
        Typed::new(RabbitMq::new(&DestinationsConfig::default()), true)
    }

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_names_fields() {
        let t = rabbitmq();
        let creds = config(&[("username", "u"), ("password", "p")]);
        let errs = t.validate(
            &config(&[
                ("server_url", "amqp://x"),
                ("exchange", "e"),
                ("routing_key", "{nope}"),
                ("tls", "maybe"),
            ]),
            &creds,
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["config.server_url", "config.routing_key", "config.tls"]
        );
        // Loopback needs --dev, as for webhooks.
        let errs = t.validate(
            &config(&[("server_url", "127.0.0.1:5672"), ("exchange", "e")]),
            &creds,
        );
        assert_eq!(errs[0].field, "config.server_url");
        assert!(
            t.validate(
                &config(&[("server_url", "rabbit.example:5672"), ("exchange", "e")]),
                &creds
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn an_overlong_routing_key_fails_permanently_without_connecting() {
        let t = rabbitmq();
        let d = Destination {
            id: "des_1".into(),
            tenant_id: "t".into(),
            kind: "rabbitmq".into(),
            topics: herald_core::Topics::All,
            filter: None,
            // Port 9 on a documentation address: a connection attempt would fail differently.
            config: config(&[
                ("server_url", "192.0.2.1:9"),
                ("exchange", "e"),
                ("routing_key", "{event_id}"),
            ]),
            credentials: config(&[("username", "u"), ("password", "p")]),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let driver = t.build(&d).unwrap();
        let msg = OutboundMessage {
            event_id: "e".repeat(300),
            delivery_id: "dlv_1".into(),
            topic: "t".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            body: Arc::from(&b"{}"[..]),
            headers: vec![("x".repeat(300), "v".into())],
            metadata: Default::default(),
            timeout: Duration::from_secs(1),
        };
        let e = driver.deliver(&msg).await.unwrap_err();
        assert_eq!(e.code, "invalid_routing_key");
        assert_eq!(
            e.disposition,
            herald_core::destination::Disposition::Permanent
        );
    }

    #[test]
    fn access_refused_is_permanent_and_io_is_retried() {
        let refused =
            lapin::Error::from(ErrorKind::ProtocolError(lapin::protocol::AMQPError::new(
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
                "ACCESS_REFUSED".into(),
            )));
        let e = classify(&refused);
        assert_eq!(e.code, "access_refused");
        assert_eq!(
            e.disposition,
            herald_core::destination::Disposition::Permanent
        );
        let io = lapin::Error::from(ErrorKind::IOError(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert!(matches!(
            classify(&io).disposition,
            herald_core::destination::Disposition::Retry { .. }
        ));
    }
}

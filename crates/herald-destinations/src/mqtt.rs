//! The `mqtt` type: publishes each event to an MQTT 5 broker at QoS 1 and waits for the
//! broker's PUBACK, so a successful attempt means the broker accepted the message.
//!
//! Fields (the Outpost contract does not define this type): `server_url` (`host:port`),
//! `topic` (a template, default `{topic}`), `retain`, `client_id`; credentials `username` and
//! `password`. The signing settings (`signing_mode`, `signing_secret`, generated when
//! omitted) are the common ones every signing type gets from [`herald_core::spec::Typed`].
//!
//! Message mapping: the payload is the event data (JSON) with `content_type:
//! application/json` and the UTF-8 payload format indicator; every header the engine computed
//! (event id, timestamp, topic, metadata, signature) is an MQTT 5 user property of the same
//! name.
//!
//! Connections: one MQTT session (clean start) per destination, opened on the first attempt
//! and shared by concurrent attempts. A task drives the session and matches each PUBACK to
//! its publish by packet id. When the connection fails, every attempt waiting on it fails (and
//! is retried by the engine) and the next attempt opens a new session; a publish is never
//! resent by the client on its own. An attempt that times out also drops the session, so a
//! broker that stopped answering cannot wedge the destination.
//!
//! Classification: refused or dropped connections, timeouts, CONNACK "server unavailable /
//! busy / quota exceeded / rate exceeded" and PUBACK errors such as "quota exceeded" or
//! "unspecified error" are retried; CONNACK "bad user name or password", "not authorized",
//! "banned", an unsupported protocol version, and PUBACK "not authorized", "topic name
//! invalid" or "payload format invalid" are permanent. PUBACK "no matching subscribers" is a
//! success (MQTT 5 counts it as one: the broker accepted the message).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Packet, PubAck, PubAckReason, PublishProperties,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::DestinationsConfig;
use crate::support::address::{ServerAddress, resolve, within};
use crate::support::errors::{random_suffix, root_message};
use crate::support::template::Template;
use crate::target::TargetPolicy;

const KIND: &str = "mqtt";
const DEFAULT_PORT: u16 = 1883;
/// Longest client id prefix (the random suffix comes on top).
const CLIENT_ID_MAX: usize = 40;

/// The mqtt destination type.
pub struct Mqtt {
    policy: Arc<TargetPolicy>,
}

/// `config` of an mqtt destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Server address
    ///
    /// MQTT broker server address (host:port), e.g. localhost:1883.
    pub server_url: ServerAddress,
    /// Topic
    ///
    /// Topic template; `{topic}` and `{event_id}` are replaced (any `{JMESPath}` over the
    /// message works too), e.g. `herald/{topic}`. Default `{topic}`.
    #[serde(default = "default_topic")]
    pub topic: Template,
    /// Retain
    ///
    /// Publish with the retain flag. Defaults to false.
    #[serde(default)]
    pub retain: bool,
    /// Client id
    ///
    /// Client identifier prefix; a random suffix keeps two Herald processes from taking over
    /// each other's session. Default `herald-<destination id>`.
    #[schemars(regex(pattern = r"^[0-9A-Za-z_.-]{0,40}$"))]
    pub client_id: Option<String>,
}

/// `credentials` of an mqtt destination.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Username
    ///
    /// MQTT user name.
    pub username: Option<String>,
    /// Password
    ///
    /// MQTT password.
    pub password: Option<Secret>,
}

fn default_topic() -> Template {
    // A constant template: parsing cannot fail.
    Template::placeholders("{topic}").unwrap_or_else(|_| unreachable!())
}

impl Mqtt {
    /// Builds the type; the target policy decides which broker addresses may be reached.
    pub fn new(cfg: &DestinationsConfig) -> Self {
        Self {
            policy: Arc::new(cfg.target_policy.clone()),
        }
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M4 4a16 16 0 0 1 16 16"/><path d="M4 10a10 10 0 0 1 10 10"/><circle cx="5" cy="19" r="1"/></svg>"#;

/// Why a rendered topic cannot be published to, if it cannot.
fn topic_problem(t: &str) -> Option<String> {
    if t.is_empty() {
        return Some("the topic is empty".into());
    }
    if t.contains(['+', '#']) {
        return Some(format!(
            "topic {t:?} contains a wildcard (+ or #); publish topics cannot"
        ));
    }
    if t.contains('\0') {
        return Some("the topic contains a NUL character".into());
    }
    if t.len() > 65535 {
        return Some("the topic is longer than 65535 bytes".into());
    }
    None
}

/// Whether `c` may appear in a client id prefix.
fn client_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.-".contains(c)
}

impl Spec for Mqtt {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "MQTT",
            description: "Publish events to an MQTT 5 broker at QoS 1, with headers as user properties.",
            icon: ICON,
            instructions: "Enter the broker address and the topic template (default: the event topic). \
                Messages are published at QoS 1; subscribers find the event id, timestamp, topic, metadata and \
                signature in the MQTT 5 user properties.",
        }
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = config.server_url.check(&self.policy, "config.server_url") {
            errs.push(e);
        }
        let t = &config.topic;
        let lit = t.literal_text();
        let problem = if t.is_literal() {
            topic_problem(&lit)
        } else {
            topic_problem(&format!("x{lit}"))
        };
        if let Some(p) = problem {
            errs.push(FieldError::new("config.topic", p));
        }
        if let Some(id) = &config.client_id
            && (id.len() > CLIENT_ID_MAX || !id.chars().all(client_id_char))
        {
            errs.push(FieldError::new(
                "config.client_id",
                "must be at most 40 characters of A-Z, a-z, 0-9, '_', '.', '-'",
            ));
        }
        if credentials.password.as_ref().is_some_and(|p| !p.is_empty())
            && credentials.username.as_ref().is_none_or(|u| u.is_empty())
        {
            errs.push(FieldError::new(
                "credentials.username",
                "is required with a password",
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
        let prefix = config
            .client_id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let id: String = id
                    .chars()
                    .filter(|c| client_id_char(*c))
                    .take(CLIENT_ID_MAX)
                    .collect();
                format!("herald-{id}")
            });
        Ok(Arc::new(MqttDriver {
            port: config.server_url.port_or(DEFAULT_PORT),
            host: config.server_url.host,
            topic: config.topic,
            retain: config.retain,
            client_id_prefix: prefix,
            username: credentials.username.filter(|u| !u.is_empty()),
            password: credentials.password.filter(|p| !p.is_empty()),
            policy: self.policy.clone(),
            live: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        (
            format!("{} {}", config.server_url, config.topic.source()),
            None,
        )
    }
}

type Waiter = oneshot::Sender<Result<PubAck, DeliveryError>>;

/// Attempts waiting on one session.
#[derive(Default)]
struct Waiters {
    /// Publishes handed to the client, not yet sent: in request order, which is the order
    /// the session sends them in.
    queued: VecDeque<(u64, Waiter)>,
    /// Sent publishes by packet id, waiting for their PUBACK.
    sent: HashMap<u16, Waiter>,
    /// Set when the session ended; later attempts must open a new one.
    ended: Option<DeliveryError>,
}

impl Waiters {
    fn end(&mut self, e: DeliveryError) {
        for (_, w) in self.queued.drain(..) {
            let _ = w.send(Err(e.clone()));
        }
        for (_, w) in self.sent.drain() {
            let _ = w.send(Err(e.clone()));
        }
        self.ended = Some(e);
    }
}

/// One MQTT session and the task that drives it.
struct Session {
    client: AsyncClient,
    waiters: Arc<StdMutex<Waiters>>,
    /// Serialises "queue the waiter, hand the publish to the client".
    send: tokio::sync::Mutex<u64>,
    task: tokio::task::JoinHandle<()>,
    generation: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct MqttDriver {
    host: String,
    port: u16,
    topic: Template,
    retain: bool,
    client_id_prefix: String,
    username: Option<String>,
    password: Option<Secret>,
    policy: Arc<TargetPolicy>,
    live: tokio::sync::Mutex<Option<Arc<Session>>>,
    generation: AtomicU64,
}

fn lock(w: &StdMutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// A refused CONNACK: permanent when only a configuration change can fix it.
fn refused(code: &ConnectReturnCode) -> DeliveryError {
    use ConnectReturnCode as C;
    let text = format!("the broker refused the connection: {code:?}");
    match code {
        C::BadUserNamePassword | C::BadAuthenticationMethod => DeliveryError::permanent(
            "bad_credentials",
            format!("{text}; check credentials.username and credentials.password"),
        ),
        C::NotAuthorized | C::Banned => DeliveryError::permanent(
            "not_authorized",
            format!(
                "{text}; check credentials.username and credentials.password, and the broker's ACL for this client"
            ),
        ),
        C::RefusedProtocolVersion
        | C::UnsupportedProtocolVersion
        | C::BadClientId
        | C::ClientIdentifierNotValid => DeliveryError::permanent("connection_refused", text),
        _ => DeliveryError::retry("connection_refused", text),
    }
}

fn connection_error(e: &ConnectionError) -> DeliveryError {
    match e {
        ConnectionError::ConnectionRefused(code) => refused(code),
        ConnectionError::MqttState(StateError::ConnFail { reason }) => refused(reason),
        ConnectionError::Timeout(_) => {
            DeliveryError::retry("timeout", "the broker did not answer in time")
        }
        ConnectionError::Io(io) => DeliveryError::retry("connection_error", io.to_string()),
        other => DeliveryError::retry("connection_error", root_message(other)),
    }
}

/// The failure a PUBACK reports, if it reports one.
fn puback_failure(ack: &PubAck) -> Option<DeliveryError> {
    let text = format!("the broker answered PUBACK {:?}", ack.reason);
    match ack.reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
        PubAckReason::NotAuthorized => Some(DeliveryError::permanent("not_authorized", text)),
        PubAckReason::TopicNameInvalid => Some(DeliveryError::permanent("topic_invalid", text)),
        PubAckReason::PayloadFormatInvalid => {
            Some(DeliveryError::permanent("payload_format_invalid", text))
        }
        _ => Some(DeliveryError::retry("puback_error", text)),
    }
}

/// Drives a session until it fails, resolving waiters as their PUBACKs arrive.
async fn drive(mut events: rumqttc::v5::EventLoop, waiters: Arc<StdMutex<Waiters>>) {
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut w = lock(&waiters);
                if let Some((_, waiter)) = w.queued.pop_front()
                    && let Some(old) = w.sent.insert(pkid, waiter)
                {
                    let _ = old.send(Err(DeliveryError::retry(
                        "mqtt_error",
                        "packet id reused before its PUBACK arrived",
                    )));
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = lock(&waiters).sent.remove(&ack.pkid) {
                    let _ = waiter.send(Ok(ack));
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                lock(&waiters).end(DeliveryError::retry(
                    "disconnected",
                    format!("the broker closed the session: {:?}", d.reason_code),
                ));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                lock(&waiters).end(connection_error(&e));
                return;
            }
        }
    }
}

impl MqttDriver {
    async fn session(&self, timeout: Duration) -> Result<Arc<Session>, DeliveryError> {
        let mut live = self.live.lock().await;
        if let Some(s) = live.as_ref()
            && lock(&s.waiters).ended.is_none()
        {
            return Ok(s.clone());
        }
        *live = None;
        let addr = resolve(&self.policy, &self.host, self.port).await?;
        let client_id = format!("{}-{}", self.client_id_prefix, random_suffix());
        let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_request_channel_capacity(256)
            .set_connection_timeout(timeout.as_secs().max(1));
        if let Some(u) = &self.username {
            let password = self.password.as_ref().map_or("", Secret::expose);
            opts.set_credentials(u.clone(), password.to_string());
        }
        let (client, events) = AsyncClient::new(opts, 256);
        let waiters = Arc::new(StdMutex::new(Waiters::default()));
        let task = tokio::spawn(drive(events, waiters.clone()));
        let session = Arc::new(Session {
            client,
            waiters,
            send: tokio::sync::Mutex::new(0),
            task,
            generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
        });
        *live = Some(session.clone());
        Ok(session)
    }

    async fn invalidate(&self, generation: u64) {
        let mut live = self.live.lock().await;
        if live.as_ref().is_some_and(|s| s.generation == generation) {
            *live = None;
        }
    }

    async fn publish(
        &self,
        session: &Session,
        topic: &str,
        msg: &OutboundMessage,
    ) -> Result<(), DeliveryError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut seq = session.send.lock().await;
            *seq += 1;
            let id = *seq;
            {
                let mut w = lock(&session.waiters);
                if let Some(e) = &w.ended {
                    return Err(e.clone());
                }
                w.queued.push_back((id, tx));
            }
            let props = PublishProperties {
                payload_format_indicator: Some(1),
                content_type: Some("application/json".into()),
                user_properties: msg.headers.clone(),
                ..PublishProperties::default()
            };
            if let Err(e) = session
                .client
                .publish_with_properties(
                    topic,
                    QoS::AtLeastOnce,
                    self.retain,
                    msg.body.to_vec(),
                    props,
                )
                .await
            {
                // The request never reached the session: take our waiter back out.
                lock(&session.waiters).queued.retain(|(i, _)| *i != id);
                return Err(DeliveryError::retry(
                    "mqtt_error",
                    format!("cannot hand the message to the MQTT session: {e}"),
                ));
            }
        }
        match rx.await {
            Ok(Ok(ack)) => puback_failure(&ack).map_or(Ok(()), Err),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DeliveryError::retry(
                "connection_error",
                "the MQTT session ended before the broker acknowledged the message",
            )),
        }
    }
}

#[async_trait]
impl Driver for MqttDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let topic = self
            .topic
            .render(msg)
            .map_err(|e| DeliveryError::permanent("invalid_topic", format!("topic template: {e}")))?
            .unwrap_or_default();
        if let Some(p) = topic_problem(&topic) {
            return Err(DeliveryError::permanent("invalid_topic", p));
        }
        let session = self.session(msg.timeout).await?;
        let result = within(
            msg.timeout,
            "waiting for the PUBACK",
            self.publish(&session, &topic, msg),
        )
        .await;
        match result {
            Ok(()) => Ok(Receipt {
                code: "puback".into(),
                response: Some(json!({ "topic": topic })),
            }),
            Err(e) => {
                if e.code == "timeout" {
                    self.invalidate(session.generation).await;
                }
                Err(DeliveryError {
                    response: Some(json!({ "topic": topic })),
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

    fn mqtt() -> Typed<Mqtt> {
        Typed::new(Mqtt::new(&DestinationsConfig::default()), true)
    }

    fn c(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topics_and_validation() {
        assert!(topic_problem("herald/user.created").is_none());
        assert!(topic_problem("a/+/b").is_some());
        assert!(topic_problem("").is_some());
        let t = mqtt();
        let errs = t.validate(
            &c(&[
                ("server_url", "mqtt.example:1883"),
                ("topic", "a/#/{topic}"),
                ("client_id", "has space"),
            ]),
            &c(&[("password", "p")]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["config.topic", "config.client_id", "credentials.username"]
        );
        assert!(
            t.validate(
                &c(&[
                    ("server_url", "mqtt.example"),
                    ("topic", "herald/{topic}"),
                    ("retain", "true"),
                    ("client_id", "edge-1")
                ]),
                &c(&[("username", "u"), ("password", "p")])
            )
            .is_empty()
        );
        // Loopback needs --dev; a bad flag names its field.
        let errs = t.validate(&c(&[("server_url", "[::1]:1883")]), &c(&[]));
        assert_eq!(errs[0].field, "config.server_url");
        let errs = t.validate(&c(&[("server_url", "h"), ("retain", "1")]), &c(&[]));
        assert_eq!(errs[0].field, "config.retain");
    }

    #[test]
    fn schema_keeps_its_fields() {
        let t = mqtt();
        let spec = t.spec();
        let keys: Vec<_> = spec.config_fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(&keys[..4], ["server_url", "topic", "retain", "client_id"]);
        assert_eq!(spec.config_fields[1].default.as_deref(), Some("{topic}"));
        assert_eq!(spec.config_fields[2].kind, "checkbox");
        assert_eq!(spec.config_fields[2].default.as_deref(), Some("false"));
        assert_eq!(
            spec.config_fields[3].pattern.as_deref(),
            Some("^[0-9A-Za-z_.-]{0,40}$")
        );
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
    fn classification() {
        let e = refused(&ConnectReturnCode::BadUserNamePassword);
        assert_eq!(
            e.disposition,
            herald_core::destination::Disposition::Permanent
        );
        assert!(matches!(
            refused(&ConnectReturnCode::ServerUnavailable).disposition,
            herald_core::destination::Disposition::Retry { .. }
        ));
        let ack = |reason| PubAck {
            pkid: 1,
            reason,
            properties: None,
        };
        assert!(puback_failure(&ack(PubAckReason::NoMatchingSubscribers)).is_none());
        assert_eq!(
            puback_failure(&ack(PubAckReason::NotAuthorized))
                .unwrap()
                .disposition,
            herald_core::destination::Disposition::Permanent
        );
    }
}

//! The `kafka` type: each event becomes one record on a Kafka topic.
//!
//! The record value is the event data and its key the rendered `partition_key_template`
//! (default: the event id); the engine's headers (event id, timestamp, topic, signature,
//! metadata) become record headers, plus `content-type: application/json`. The partition is
//! chosen from the key with Kafka's default partitioner (murmur2), so records with the same
//! key land where a Java producer would put them.
//!
//! Fields follow the Outpost contract: `brokers`, `topic`, `sasl_mechanism`, `tls`,
//! `partition_key_template`; credentials `username`, `password`. The signing settings
//! (`signing_mode`, `signing_secret`, generated when omitted) are the common ones every
//! signing type gets from [`herald_core::spec::Typed`].
//!
//! The client is the pure-Rust `rskafka` (no C build). One client per destination is
//! created on first use and kept; after a failure it is dropped and the next attempt
//! connects again, which also picks up a restarted broker.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, SaslConfig};

use crate::support::gateway::Gateway;
use rskafka::record::Record;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::DestinationsConfig;
use crate::support::address::ServerAddress;
use crate::support::template::KeyTemplate;
use crate::target::TargetPolicy;

const KIND: &str = "kafka";
/// Longest topic name Kafka accepts.
const TOPIC_MAX: usize = 249;

/// The `kafka` destination type.
pub struct Kafka {
    policy: Arc<TargetPolicy>,
}

/// `config` of a kafka destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Brokers
    ///
    /// Comma-separated list of Kafka broker addresses (host:port).
    pub brokers: Brokers,
    /// Topic
    ///
    /// The Kafka topic to publish records to.
    pub topic: String,
    /// SASL mechanism
    ///
    /// plain, scram-sha-256 or scram-sha-512. Empty: no SASL authentication (the contract
    /// lists this field as required; Herald, like Outpost, accepts it empty for brokers
    /// without authentication).
    pub sasl_mechanism: Option<SaslMechanism>,
    /// TLS
    ///
    /// Whether to connect with TLS. Defaults to true.
    #[serde(default = "yes")]
    pub tls: bool,
    /// Partition key template
    ///
    /// Optional JMESPath expression over the message ({data, metadata}, also topic,
    /// event_id and time) giving the record key, e.g. data.customer_id or
    /// metadata."event-id". Default (or when it yields nothing): the event id.
    pub partition_key_template: Option<KeyTemplate>,
}

/// `credentials` of a kafka destination.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Username
    ///
    /// SASL username.
    pub username: Option<String>,
    /// Password
    ///
    /// SASL password.
    pub password: Option<Secret>,
}

/// A SASL mechanism the client speaks.
// The variants carry plain comments, not doc comments: documented variants would make the
// schema a `oneOf` instead of the `enum` the served `select` options are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    // SASL PLAIN.
    #[serde(rename = "plain")]
    Plain,
    // SCRAM-SHA-256.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    // SCRAM-SHA-512.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
}

/// The bootstrap brokers: a comma-separated list of `host:port` (the port is required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brokers(pub Vec<ServerAddress>);

impl Brokers {
    /// Parses the comma-separated setting, naming the entry that is not `host:port`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut list = Vec::new();
        for b in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let addr = ServerAddress::parse(b).map_err(|_| format!("{b:?} is not host:port"))?;
            if addr.port.is_none() {
                return Err(format!("{b:?} is not host:port"));
            }
            list.push(addr);
        }
        if list.is_empty() {
            return Err("must name at least one broker as host:port".into());
        }
        Ok(Self(list))
    }
}

impl<'de> Deserialize<'de> for Brokers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Brokers {
    fn schema_name() -> Cow<'static, str> {
        "Brokers".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "x-herald-target": true })
    }
}

fn yes() -> bool {
    true
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><circle cx="12" cy="5" r="2"/><circle cx="12" cy="12" r="2"/><circle cx="12" cy="19" r="2"/><circle cx="19" cy="8" r="2"/><circle cx="19" cy="16" r="2"/><path d="M12 7v3M12 14v3M13.8 11l3.4-2M13.8 13l3.4 2"/></svg>"#;

impl Kafka {
    /// Builds the type; the target policy decides which broker addresses may be reached.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        Ok(Self {
            policy: Arc::new(cfg.target_policy.clone()),
        })
    }
}

/// A topic name Kafka accepts.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= TOPIC_MAX
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Spec for Kafka {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "Apache Kafka",
            description: "Produce events as records on a Kafka topic.",
            icon: ICON,
            instructions: "Enter the bootstrap brokers and the topic (it must exist). The record value is \
                the event data, the key is the partition key (the event id unless a template is set), and \
                id, topic, timestamp, signature and metadata are record headers.",
        }
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(e) = config
            .brokers
            .0
            .iter()
            .find_map(|b| b.check(&self.policy, "config.brokers").err())
        {
            errs.push(e);
        }
        if !valid_topic(&config.topic) {
            errs.push(FieldError::new(
                "config.topic",
                format!(
                    "{:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most {TOPIC_MAX})",
                    config.topic
                ),
            ));
        }
        if config.sasl_mechanism.is_some() {
            if credentials.username.as_ref().is_none_or(|u| u.is_empty()) {
                errs.push(FieldError::new(
                    "credentials.username",
                    "is required with a SASL mechanism",
                ));
            }
            if credentials.password.as_ref().is_none_or(|p| p.is_empty()) {
                errs.push(FieldError::new(
                    "credentials.password",
                    "is required with a SASL mechanism",
                ));
            }
        }
        errs
    }

    fn build(
        &self,
        _id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        let sasl = match (
            config.sasl_mechanism,
            credentials.username,
            credentials.password,
        ) {
            (None, _, _) => None,
            (Some(m), Some(u), Some(p)) => Some((m, u, p)),
            (Some(_), _, _) => {
                return Err(FieldError::new(
                    "credentials",
                    "username and password are required with a SASL mechanism",
                ));
            }
        };
        Ok(Arc::new(KafkaDriver {
            settings: Settings {
                brokers: config.brokers.0,
                topic: config.topic,
                sasl,
                tls: config.tls,
                template: config.partition_key_template,
            },
            policy: self.policy.clone(),
            conn: Mutex::new(None),
            gateway: tokio::sync::OnceCell::new(),
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        let first = config
            .brokers
            .0
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        (format!("{first} / {}", config.topic), None)
    }
}

/// What the driver needs of a destination's settings.
struct Settings {
    brokers: Vec<ServerAddress>,
    topic: String,
    /// Mechanism, username and password, when SASL is on.
    sasl: Option<(SaslMechanism, String, Secret)>,
    tls: bool,
    template: Option<KeyTemplate>,
}

impl Settings {
    /// The client's SASL settings (the password is exposed only to the client here).
    fn sasl_config(&self) -> Option<SaslConfig> {
        let (m, u, p) = self.sasl.as_ref()?;
        let creds = rskafka::client::Credentials::new(u.clone(), p.expose().to_string());
        Some(match m {
            SaslMechanism::Plain => SaslConfig::Plain(creds),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(creds),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(creds),
        })
    }
}

/// A connected client and the partition clients made from it.
struct Connection {
    client: Arc<Client>,
    partitions: Vec<i32>,
    producers: HashMap<i32, Arc<PartitionClient>>,
}

struct KafkaDriver {
    settings: Settings,
    policy: Arc<TargetPolicy>,
    conn: Mutex<Option<Connection>>,
    /// Every broker connection goes through it — the bootstrap brokers and the leaders
    /// Metadata names — so each address passes the target policy (`support::gateway`).
    gateway: tokio::sync::OnceCell<Gateway>,
}

/// Kafka's murmur2 (as in the Java client's default partitioner).
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a key.
fn partition_for(key: &[u8], partitions: &[i32]) -> i32 {
    let n = partitions.len().max(1);
    let idx = (murmur2(key) & 0x7fff_ffff) as usize % n;
    partitions.get(idx).copied().unwrap_or(0)
}

/// Classifies an `rskafka` error. Authentication and authorisation failures, oversized and
/// invalid records are permanent; everything else (connection refused or reset, timeouts,
/// leader changes, unknown topic — which Kafka marks retriable — and broker errors) is
/// retried.
fn classify(e: &rskafka::client::error::Error) -> DeliveryError {
    use rskafka::client::error::{Error, ProtocolError};
    let text = e.to_string();
    if let Error::ServerError { protocol_error, .. } = e {
        let permanent = matches!(
            protocol_error,
            ProtocolError::SaslAuthenticationFailed
                | ProtocolError::TopicAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed
                | ProtocolError::IllegalSaslState
                | ProtocolError::UnsupportedSaslMechanism
        );
        if permanent {
            return DeliveryError::permanent(
                "auth_failed",
                format!(
                    "{text}; check credentials.username, credentials.password and config.sasl_mechanism, and the user's ACL for config.topic"
                ),
            );
        }
        if matches!(
            protocol_error,
            ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidRecord
                | ProtocolError::CorruptMessage
                | ProtocolError::InvalidTopicException
        ) {
            return DeliveryError::permanent("rejected", text);
        }
        if matches!(protocol_error, ProtocolError::UnknownTopicOrPartition) {
            return DeliveryError::retry("topic_not_found", text);
        }
        return DeliveryError::retry("broker_error", text);
    }
    // Connection-level SASL failures arrive wrapped (in retries, in connection errors).
    let lower = text.to_ascii_lowercase();
    if lower.contains("sasl") || lower.contains("authentication") {
        return DeliveryError::permanent(
            "auth_failed",
            format!(
                "{text}; check credentials.username, credentials.password and config.sasl_mechanism"
            ),
        );
    }
    // Retries that ran out report "deadline" but carry the cause (refused, reset, …).
    let connection = ["refused", "reset", "broken pipe", "io error", "connect"]
        .iter()
        .any(|w| lower.contains(w));
    let code = if !connection && (lower.contains("timeout") || lower.contains("deadline")) {
        "timeout"
    } else {
        "connection_error"
    };
    DeliveryError::retry(code, text)
}

impl KafkaDriver {
    /// Resolves the bootstrap brokers and checks every address against the target policy.
    async fn check_brokers(&self) -> Result<(), DeliveryError> {
        for b in &self.settings.brokers {
            let addrs = tokio::net::lookup_host((b.host.as_str(), b.port_or(9092)))
                .await
                .map_err(|e| DeliveryError::retry("dns_error", format!("{b}: {e}")))?;
            for a in addrs {
                if let Err(crate::target::Blocked(why)) = self.policy.check_ip(a.ip()) {
                    return Err(DeliveryError::permanent(
                        "blocked_target",
                        format!("{b}: {why}"),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn connect(&self, _timeout: Duration) -> Result<Connection, DeliveryError> {
        self.check_brokers().await?;
        let s = &self.settings;
        // One try per attempt: a driver never retries by itself (the engine does, on its
        // schedule; it also bounds the attempt). A zero deadline makes rskafka give up after
        // the first failure.
        let brokers = s.brokers.iter().map(ToString::to_string).collect();
        let mut builder = ClientBuilder::new(brokers)
            .client_id("herald")
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(Duration::ZERO),
            });
        if s.tls {
            builder = builder
                .tls_config(tls_config().map_err(|e| DeliveryError::permanent("tls_error", e))?);
        }
        if let Some(sasl) = s.sasl_config() {
            builder = builder.sasl_config(sasl);
        }
        builder = builder.socks5_proxy(self.gateway().await?.proxy());
        let client = builder.build().await.map_err(|e| self.classify(&e))?;
        let topics = client.list_topics().await.map_err(|e| self.classify(&e))?;
        let Some(topic) = topics.into_iter().find(|t| t.name == s.topic) else {
            return Err(DeliveryError::retry(
                "topic_not_found",
                format!("topic {:?} does not exist on the cluster", s.topic),
            ));
        };
        Ok(Connection {
            client: Arc::new(client),
            partitions: topic.partitions.into_iter().collect(),
            producers: HashMap::new(),
        })
    }

    /// This driver's checking gateway, started on first use.
    async fn gateway(&self) -> Result<&Gateway, DeliveryError> {
        self.gateway
            .get_or_try_init(|| Gateway::start(self.policy.clone()))
            .await
            .map_err(|e| {
                DeliveryError::retry(
                    "connection_error",
                    format!("cannot start the broker address gateway: {e}"),
                )
            })
    }

    /// A client error, or `blocked_target` when the gateway refused a broker address the
    /// cluster named (a leader outside the target policy).
    fn classify(&self, e: &rskafka::client::error::Error) -> DeliveryError {
        match self.gateway.get().and_then(Gateway::take_refusal) {
            Some(why) => DeliveryError::permanent(
                "blocked_target",
                format!("the cluster named a broker this server may not reach: {why}"),
            ),
            None => classify(e),
        }
    }

    /// The producer for the key's partition, connecting first when needed.
    async fn producer(
        &self,
        key: &[u8],
        timeout: Duration,
    ) -> Result<(i32, Arc<PartitionClient>), DeliveryError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.connect(timeout).await?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(DeliveryError::retry("connection_error", "not connected"));
        };
        let partition = partition_for(key, &conn.partitions);
        if let Some(p) = conn.producers.get(&partition) {
            return Ok((partition, p.clone()));
        }
        let p = Arc::new(
            conn.client
                .partition_client(
                    self.settings.topic.clone(),
                    partition,
                    UnknownTopicHandling::Error,
                )
                .await
                .map_err(|e| self.classify(&e))?,
        );
        conn.producers.insert(partition, p.clone());
        Ok((partition, p))
    }
}

/// TLS with the system's roots and the aws-lc-rs provider (never the process default, which
/// is ambiguous when another crate compiled in ring).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[async_trait]
impl Driver for KafkaDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let key = self
            .settings
            .template
            .as_ref()
            .and_then(|t| t.0.render(msg).ok().flatten())
            .unwrap_or_else(|| msg.event_id.clone());
        let (partition, producer) = self.producer(key.as_bytes(), msg.timeout).await?;
        let mut headers: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        headers.insert("content-type".into(), b"application/json".to_vec());
        for (k, v) in &msg.headers {
            headers.insert(k.clone(), v.as_bytes().to_vec());
        }
        let record = Record {
            key: Some(key.clone().into_bytes()),
            value: Some(msg.body.to_vec()),
            headers,
            timestamp: rskafka::chrono::DateTime::from_timestamp_millis(
                jiff::Timestamp::now().as_millisecond(),
            )
            .unwrap_or_default(),
        };
        match producer
            .produce(vec![record], Compression::NoCompression)
            .await
        {
            Ok(offsets) => Ok(Receipt {
                code: "ack".into(),
                response: Some(json!({
                    "topic": self.settings.topic,
                    "partition": partition,
                    "offset": offsets.first().copied().map_or(Value::Null, Value::from),
                    "key": key,
                })),
            }),
            Err(e) => {
                // Reconnect on the next attempt (a restarted broker, a moved leader).
                *self.conn.lock().await = None;
                Err(self.classify(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    /// Values from the Java client's `Utils.murmur2` (as used by its partitioner tests).
    #[test]
    fn murmur2_matches_kafka() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn broker_lists() {
        let list = |raw: &str| {
            Brokers::parse(raw).map(|b| b.0.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(
            list(" a:9092, b:9093 ").unwrap(),
            vec!["a:9092".to_string(), "b:9093".to_string()]
        );
        assert_eq!(list("[::1]:9092").unwrap(), vec!["[::1]:9092".to_string()]);
        assert!(list("a").is_err());
        assert!(list("a:0").is_err());
        assert!(list(" , ").is_err());
    }

    fn kafka() -> Typed<Kafka> {
        Typed::new(Kafka::new(&DestinationsConfig::default()).unwrap(), true)
    }

    fn c(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_names_fields() {
        let t = kafka();
        let ok = [("brokers", "b:9092"), ("topic", "events")];
        assert!(t.validate(&c(&ok), &c(&[])).is_empty());
        let errs = t.validate(
            &c(&[
                ("brokers", "no-port"),
                ("topic", "events"),
                ("sasl_mechanism", "gssapi"),
                ("tls", "maybe"),
                ("partition_key_template", "join("),
            ]),
            &c(&[]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.brokers",
                "config.sasl_mechanism",
                "config.tls",
                "config.partition_key_template"
            ]
        );
        assert!(
            errs[1].problem.contains("scram-sha-256"),
            "{}",
            errs[1].problem
        );
        let errs = t.validate(
            &c(&[
                ("brokers", "127.0.0.1:9092"),
                ("topic", "bad topic"),
                ("sasl_mechanism", "scram-sha-512"),
            ]),
            &c(&[("username", "u")]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["config.brokers", "config.topic", "credentials.password"]
        );
        assert!(
            t.validate(
                &c(&[
                    ("brokers", "b1.example:9093,b2.example:9093"),
                    ("topic", "orders"),
                    ("sasl_mechanism", "plain"),
                    ("tls", "false"),
                    ("partition_key_template", "data.customer_id"),
                ]),
                &c(&[("username", "u"), ("password", "p")])
            )
            .is_empty()
        );
    }

    #[test]
    fn schema_keeps_its_fields() {
        let t = kafka();
        let spec = t.spec();
        let keys: Vec<_> = spec.config_fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            &keys[..5],
            [
                "brokers",
                "topic",
                "sasl_mechanism",
                "tls",
                "partition_key_template"
            ]
        );
        assert!(spec.config_fields[0].required && spec.config_fields[1].required);
        let sasl = &spec.config_fields[2];
        assert_eq!(sasl.kind, "select");
        assert!(!sasl.required);
        let options: Vec<_> = sasl.options.iter().map(|o| o.value.as_str()).collect();
        assert_eq!(options, ["plain", "scram-sha-256", "scram-sha-512"]);
        assert_eq!(spec.config_fields[3].kind, "checkbox");
        assert_eq!(spec.config_fields[3].default.as_deref(), Some("true"));
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
    fn partitions_follow_the_key() {
        let parts = [0, 1, 2];
        let p = partition_for(b"customer-1", &parts);
        assert_eq!(p, partition_for(b"customer-1", &parts));
        assert!(parts.contains(&p));
        assert_eq!(partition_for(b"x", &[]), 0);
    }
}

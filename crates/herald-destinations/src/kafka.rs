//! The `kafka` type: each event becomes one record on a Kafka topic.
//!
//! The record value is the event data and its key the rendered `partition_key_template`
//! (default: the event id); the engine's headers (event id, timestamp, topic, signature,
//! metadata) become record headers, plus `content-type: application/json`. The partition is
//! chosen from the key with Kafka's default partitioner (murmur2), so records with the same
//! key land where a Java producer would put them.
//!
//! The client is the pure-Rust `rskafka` (no C build). One client per destination is
//! created on first use and kept; after a failure it is dropped and the next attempt
//! connects again, which also picks up a restarted broker.

use std::collections::{BTreeMap, HashMap};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::Destination;
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::DestinationsConfig;
use crate::mapping::{
    SIGNING_SECRET, Template, body_json, check_signing_secret, field, field_with, first_error,
    flag, get, select, signing_secret_field, template_metadata,
};
use crate::target::TargetPolicy;

/// The `kafka` destination type.
pub struct KafkaType {
    spec: TypeSpec,
    policy: Arc<TargetPolicy>,
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><circle cx="12" cy="5" r="2"/><circle cx="12" cy="12" r="2"/><circle cx="12" cy="19" r="2"/><circle cx="19" cy="8" r="2"/><circle cx="19" cy="16" r="2"/><path d="M12 7v3M12 14v3M13.8 11l3.4-2M13.8 13l3.4 2"/></svg>"#;

impl KafkaType {
    /// Builds the type.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        Ok(Self {
            spec: TypeSpec {
                kind: "kafka".into(),
                label: "Apache Kafka".into(),
                description: "Produce events as records on a Kafka topic.".into(),
                icon: ICON.into(),
                instructions: "Enter the bootstrap brokers and the topic (it must exist). The record value is \
                    the event data, the key is the partition key (the event id unless a template is set), and \
                    id, topic, timestamp, signature and metadata are record headers."
                    .into(),
                config_fields: vec![
                    field(
                        "brokers",
                        "Brokers",
                        "Comma-separated list of Kafka broker addresses (host:port).",
                        true,
                        false,
                    ),
                    field(
                        "topic",
                        "Topic",
                        "The Kafka topic to publish records to.",
                        true,
                        false,
                    ),
                    select(field(
                        "sasl_mechanism",
                        "SASL mechanism",
                        "plain, scram-sha-256 or scram-sha-512. Empty: no SASL authentication (the contract \
                         lists this field as required; Herald, like Outpost, accepts it empty for brokers \
                         without authentication).",
                        false,
                        false,
                    )),
                    field_with(
                        select(field(
                            "tls",
                            "TLS",
                            "Whether to connect with TLS (\"true\" or \"false\").",
                            false,
                            false,
                        )),
                        Some("^(true|false)$"),
                        Some("true"),
                    ),
                    field(
                        "partition_key_template",
                        "Partition key template",
                        "Optional JMESPath expression over {data, metadata} giving the record key, e.g. \
                         data.customer_id or metadata.\"event-id\". Default (or when it yields nothing): the event id.",
                        false,
                        false,
                    ),
                ],
                credential_fields: vec![
                    field("username", "Username", "SASL username.", false, false),
                    field("password", "Password", "SASL password.", false, true),
                    signing_secret_field(),
                ],
            },
            policy: Arc::new(cfg.target_policy.clone()),
        })
    }
}

/// Broker addresses from the comma-separated setting.
fn brokers(raw: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err("must name at least one broker as host:port".into());
    }
    for b in &list {
        let Some((host, port)) = b.rsplit_once(':') else {
            return Err(format!("{b:?} is not host:port"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{b:?} is not host:port"));
        }
    }
    Ok(list)
}

/// A topic name Kafka accepts.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

struct Settings {
    brokers: Vec<String>,
    topic: String,
    sasl: Option<SaslConfig>,
    tls: bool,
    template: Option<Template>,
}

impl KafkaType {
    fn settings(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Settings, Vec<FieldError>> {
        let mut errs = Vec::new();
        let brokers = get(config, "brokers").and_then(|raw| {
            brokers(raw)
                .map_err(|e| errs.push(FieldError::new("config.brokers", e)))
                .ok()
        });
        let topic = get(config, "topic");
        if let Some(t) = topic
            && !valid_topic(t)
        {
            errs.push(FieldError::new(
                "config.topic",
                format!(
                    "{t:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
                ),
            ));
        }
        let tls = flag(config, "tls", true).map_err(|e| errs.push(e)).ok();
        let user = get(credentials, "username");
        let password = credentials.get("password").filter(|p| !p.is_empty());
        let creds = || -> Result<Credentials, FieldError> {
            match (user, password) {
                (Some(u), Some(p)) => Ok(Credentials::new(u.to_string(), p.clone())),
                _ => Err(FieldError::new(
                    "credentials",
                    "username and password are required with a SASL mechanism",
                )),
            }
        };
        let sasl = match get(config, "sasl_mechanism") {
            None => None,
            Some("plain") => creds()
                .map(SaslConfig::Plain)
                .map_err(|e| errs.push(e))
                .ok(),
            Some("scram-sha-256") => creds()
                .map(SaslConfig::ScramSha256)
                .map_err(|e| errs.push(e))
                .ok(),
            Some("scram-sha-512") => creds()
                .map(SaslConfig::ScramSha512)
                .map_err(|e| errs.push(e))
                .ok(),
            Some(other) => {
                errs.push(FieldError::new(
                    "config.sasl_mechanism",
                    format!("{other:?} is not supported; use plain, scram-sha-256 or scram-sha-512, or leave it empty"),
                ));
                None
            }
        };
        let template = get(config, "partition_key_template").and_then(|t| {
            Template::compile(t, "config.partition_key_template")
                .map_err(|e| errs.push(e))
                .ok()
        });
        check_signing_secret(credentials, &mut errs);
        match (brokers, topic, tls) {
            (Some(brokers), Some(topic), Some(tls)) if errs.is_empty() => Ok(Settings {
                brokers,
                topic: topic.to_string(),
                sasl,
                tls,
                template,
            }),
            _ => Err(errs),
        }
    }
}

impl DestinationType for KafkaType {
    fn spec(&self) -> &TypeSpec {
        &self.spec
    }

    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        self.settings(config, credentials).err().unwrap_or_default()
    }

    fn build(&self, d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        let s = self
            .settings(&d.config, &d.credentials)
            .map_err(first_error)?;
        Ok(Arc::new(KafkaDriver {
            settings: s,
            policy: self.policy.clone(),
            conn: Mutex::new(None),
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let first = d
            .config
            .get("brokers")
            .and_then(|b| b.split(',').next())
            .unwrap_or_default()
            .trim()
            .to_string();
        let topic = d.config.get("topic").cloned().unwrap_or_default();
        (format!("{first} / {topic}"), None)
    }

    fn signing_secret_key(&self) -> Option<&str> {
        Some(SIGNING_SECRET)
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
            return DeliveryError::permanent("auth_failed", text);
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
        return DeliveryError::permanent("auth_failed", text);
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
            let b2 = b.clone();
            let addrs = tokio::task::spawn_blocking(move || {
                b2.to_socket_addrs().map(|a| a.collect::<Vec<_>>())
            })
            .await
            .map_err(|e| DeliveryError::retry("dns_error", e.to_string()))?
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
        let mut builder = ClientBuilder::new(s.brokers.clone())
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
        if let Some(sasl) = &s.sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        let client = builder.build().await.map_err(|e| classify(&e))?;
        let topics = client.list_topics().await.map_err(|e| classify(&e))?;
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
                .map_err(|e| classify(&e))?,
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
        let key = match &self.settings.template {
            Some(t) => {
                let ctx = json!({"data": body_json(msg), "metadata": template_metadata(msg)});
                t.render(&ctx)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| msg.event_id.clone())
            }
            None => msg.event_id.clone(),
        };
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
                Err(classify(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            brokers(" a:9092, b:9093 ").unwrap(),
            vec!["a:9092".to_string(), "b:9093".to_string()]
        );
        assert!(brokers("a").is_err());
        assert!(brokers("a:0").is_err());
        assert!(brokers(" , ").is_err());
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

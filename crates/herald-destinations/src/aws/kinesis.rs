//! The `aws_kinesis` type: each event becomes one Kinesis record (`PutRecord`).
//!
//! Kinesis records have no headers, so — as in Outpost — the record data is by default a JSON
//! envelope `{"metadata": {…}, "data": <event data>}` whose `metadata` holds the engine's
//! headers (event id, timestamp, topic, signature, metadata). The `data` member is the event
//! data byte for byte as signed, so a receiver can check the signature over it. With
//! `metadata_in_payload` off (`"false"`) the record data is the bare event data. The partition key
//! is the contract's JMESPath `partition_key_template` over `{data, metadata}` (default: the
//! event id).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::DestinationsConfig;
use crate::aws::{self, Credentials, REGION_PATTERN, Region};
use crate::support::address::HttpUrl;
use crate::support::http::{Egress, Reply, transport_error};
use crate::support::template::{KeyTemplate, Template, headers_object};
use crate::target::{Blocked, TargetPolicy};

const KIND: &str = "aws_kinesis";

/// Kinesis's limit on partition keys, in Unicode characters.
const MAX_PARTITION_KEY: usize = 256;

/// The `aws_kinesis` destination type.
pub struct Kinesis {
    http: Egress,
}

/// `config` of an `aws_kinesis` destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Stream name
    ///
    /// The name of the AWS Kinesis stream.
    pub stream_name: String,
    /// Region
    ///
    /// The AWS region where the Kinesis stream is located.
    #[schemars(regex(pattern = REGION_PATTERN))]
    pub region: Region,
    /// Endpoint
    ///
    /// Optional custom AWS endpoint URL (VPC endpoints, LocalStack, moto).
    pub endpoint: Option<HttpUrl>,
    /// Partition key template
    ///
    /// Optional JMESPath expression over {data, metadata} giving the partition key, e.g.
    /// data."user_id". Default (or when it yields nothing): the event id.
    pub partition_key_template: Option<KeyTemplate>,
    /// Metadata in payload
    ///
    /// Herald extension: "true" wraps the event as {"metadata", "data"} (Outpost's default);
    /// "false" sends the bare event data without metadata or signature.
    #[serde(default = "yes")]
    pub metadata_in_payload: bool,
}

fn yes() -> bool {
    true
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M3 8c3-2 6 2 9 0s6-2 9 0M3 12c3-2 6 2 9 0s6-2 9 0M3 16c3-2 6 2 9 0s6-2 9 0"/></svg>"#;

impl Kinesis {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        Ok(Self {
            http: Egress::new(cfg)?,
        })
    }
}

/// A stream name Kinesis accepts.
fn valid_stream(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Spec for Kinesis {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "AWS Kinesis",
            description: "Put events as records on an Amazon Kinesis data stream.",
            icon: ICON,
            instructions: "Create a data stream and credentials allowed to call kinesis:PutRecord on it. \
                Each record is a JSON envelope {\"metadata\": {…}, \"data\": <event data>}; the partition \
                key is the event id unless a template is set.",
        }
    }

    fn check(&self, config: &Config, _: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let s = config.stream_name.trim();
        if !valid_stream(s) {
            errs.push(FieldError::new(
                "config.stream_name",
                format!("{s:?} is not a stream name (1-128 letters, digits, '_', '.', '-')"),
            ));
        }
        if let Some(e) = &config.endpoint
            && let Err(e) = e.check(&self.http.policy, "config.endpoint")
        {
            errs.push(e);
        }
        errs
    }

    fn build(
        &self,
        _id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        let region = config.region.0;
        let endpoint = match config.endpoint {
            Some(e) => e.0,
            None => url::Url::parse(&format!("https://kinesis.{region}.amazonaws.com/"))
                .map_err(|e| FieldError::new("config.region", e.to_string()))?,
        };
        Ok(Arc::new(KinesisDriver {
            settings: Settings {
                stream: config.stream_name.trim().to_string(),
                endpoint,
                region,
                template: config.partition_key_template.map(|t| t.0),
                envelope: config.metadata_in_payload,
                creds: credentials,
            },
            client: self.http.client.clone(),
            policy: self.http.policy.clone(),
            body_limit: self.http.body_limit,
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        let stream = &config.stream_name;
        let region = config.region.as_str();
        let link = format!(
            "https://{region}.console.aws.amazon.com/kinesis/home?region={region}#/streams/details/{stream}/details"
        );
        (format!("{stream} in {region}"), Some(link))
    }
}

struct Settings {
    stream: String,
    endpoint: url::Url,
    region: String,
    template: Option<Template>,
    envelope: bool,
    creds: Credentials,
}

struct KinesisDriver {
    settings: Settings,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

/// The record data: the envelope with the body spliced in unchanged, or the bare body.
fn record_data(msg: &OutboundMessage, envelope: bool) -> Vec<u8> {
    if !envelope {
        return msg.body.to_vec();
    }
    let metadata = Value::Object(headers_object(msg)).to_string();
    let mut out = Vec::with_capacity(msg.body.len() + metadata.len() + 24);
    out.extend_from_slice(b"{\"metadata\":");
    out.extend_from_slice(metadata.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(&msg.body);
    out.push(b'}');
    out
}

#[async_trait]
impl Driver for KinesisDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let s = &self.settings;
        if let Err(Blocked(why)) = self.policy.check_url(&s.endpoint) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let key = s
            .template
            .as_ref()
            .and_then(|t| t.render(msg).ok().flatten())
            .unwrap_or_else(|| msg.event_id.clone());
        let key: String = key.chars().take(MAX_PARTITION_KEY).collect();
        let request = json!({
            "StreamName": s.stream,
            "Data": STANDARD.encode(record_data(msg, s.envelope)),
            "PartitionKey": key,
        });
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let resp = aws::post_json(
            &self.client,
            &s.creds,
            &s.region,
            &s.endpoint,
            aws::JsonCall {
                service: "kinesis",
                content_type: "application/x-amz-json-1.1",
                target: "Kinesis_20131202.PutRecord",
            },
            body,
            msg.timeout,
        )
        .await
        .map_err(transport_error)?;
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let reply = Reply::read(resp, self.body_limit).await;
        if !(200..300).contains(&reply.status) {
            return Err(aws::classify(&reply, error_type.as_deref()));
        }
        let v: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        Ok(Receipt {
            code: reply.status.to_string(),
            response: Some(json!({
                "status_code": reply.status,
                "shard_id": v.get("ShardId"),
                "sequence_number": v.get("SequenceNumber"),
                "partition_key": key,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    fn kinesis() -> Typed<Kinesis> {
        Typed::new(Kinesis::new(&DestinationsConfig::default()).unwrap(), true)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn schema_keeps_the_contract_fields() {
        let t = kinesis();
        let f = &t.spec().config_fields;
        let keys: Vec<_> = f.iter().map(|f| (f.key.as_str(), f.required)).collect();
        assert_eq!(
            &keys[..5],
            [
                ("stream_name", true),
                ("region", true),
                ("endpoint", false),
                ("partition_key_template", false),
                ("metadata_in_payload", false),
            ]
        );
        assert_eq!(f[1].pattern.as_deref(), Some(REGION_PATTERN));
        assert_eq!(f[2].pattern.as_deref(), Some("^https?://.+"));
        assert_eq!(f[3].pattern, None);
        assert_eq!(f[4].kind, "checkbox");
        assert_eq!(f[4].default.as_deref(), Some("true"));
        let c: Vec<_> = t
            .spec()
            .credential_fields
            .iter()
            .map(|f| (f.key.as_str(), f.sensitive))
            .collect();
        assert_eq!(
            &c[..4],
            [
                ("key", false),
                ("secret", true),
                ("session", true),
                ("signing_secret", true)
            ]
        );
    }

    #[test]
    fn validation_names_fields() {
        let t = kinesis();
        let creds = map(&[("key", "AKID"), ("secret", "s")]);
        let errs = t.validate(
            &map(&[
                ("stream_name", "s"),
                ("region", "us-east"),
                ("partition_key_template", "join("),
                ("metadata_in_payload", "maybe"),
            ]),
            &map(&[]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.region",
                "config.partition_key_template",
                "config.metadata_in_payload",
                "credentials.key",
                "credentials.secret"
            ]
        );
        let errs = t.validate(
            &map(&[("stream_name", "a/b"), ("region", "us-east-1")]),
            &creds,
        );
        assert_eq!(errs[0].field, "config.stream_name");
        let errs = t.validate(
            &map(&[
                ("stream_name", "s"),
                ("region", "us-east-1"),
                ("endpoint", "http://127.0.0.1:5000"),
            ]),
            &creds,
        );
        assert_eq!(errs[0].field, "config.endpoint");
        assert!(
            t.validate(
                &map(&[
                    ("stream_name", "s"),
                    ("region", "us-east-1"),
                    ("metadata_in_payload", "false"),
                    ("partition_key_template", "data.user_id"),
                ]),
                &creds
            )
            .is_empty()
        );
    }

    #[test]
    fn envelope_keeps_the_body_bytes() {
        let msg = OutboundMessage {
            event_id: "e".into(),
            delivery_id: "d".into(),
            topic: "t".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            body: Arc::from(&b"{\"b\":1,\"a\":2}"[..]),
            headers: vec![("webhook-id".into(), "e".into())],
            metadata: Default::default(),
            timeout: std::time::Duration::from_secs(1),
        };
        let data = record_data(&msg, true);
        assert_eq!(
            std::str::from_utf8(&data).unwrap(),
            r#"{"metadata":{"webhook-id":"e"},"data":{"b":1,"a":2}}"#
        );
        assert_eq!(record_data(&msg, false), b"{\"b\":1,\"a\":2}");
        assert!(valid_stream("my-stream_1.x"));
        assert!(!valid_stream("a/b"));
    }
}

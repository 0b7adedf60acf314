//! The `aws_kinesis` type: each event becomes one Kinesis record (`PutRecord`).
//!
//! Kinesis records have no headers, so — as in Outpost — the record data is by default a JSON
//! envelope `{"metadata": {…}, "data": <event data>}` whose `metadata` holds the engine's
//! headers (event id, timestamp, topic, signature, metadata). The `data` member is the event
//! data byte for byte as signed, so a receiver can check the signature over it. With
//! `metadata_in_payload: "false"` the record data is the bare event data. The partition key
//! is the contract's JMESPath `partition_key_template` over `{data, metadata}` (default: the
//! event id).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald_core::Destination;
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use serde_json::{Value, json};

use crate::DestinationsConfig;
use crate::aws::{self, Credentials};
use crate::mapping::{
    HttpReply, SIGNING_SECRET, Template, body_json, check_endpoint, check_signing_secret, field,
    field_with, first_error, flag, get, headers_object, http_client, select, template_metadata,
    transport_error,
};
use crate::target::{Blocked, TargetPolicy};

/// Kinesis's limit on partition keys, in Unicode characters.
const MAX_PARTITION_KEY: usize = 256;

/// The `aws_kinesis` destination type.
pub struct KinesisType {
    spec: TypeSpec,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M3 8c3-2 6 2 9 0s6-2 9 0M3 12c3-2 6 2 9 0s6-2 9 0M3 16c3-2 6 2 9 0s6-2 9 0"/></svg>"#;

impl KinesisType {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let client = http_client(&policy, cfg.proxy.as_deref(), &cfg.user_agent)?;
        Ok(Self {
            spec: TypeSpec {
                kind: "aws_kinesis".into(),
                label: "AWS Kinesis".into(),
                description: "Put events as records on an Amazon Kinesis data stream.".into(),
                icon: ICON.into(),
                instructions: "Create a data stream and credentials allowed to call kinesis:PutRecord on it. \
                    Each record is a JSON envelope {\"metadata\": {…}, \"data\": <event data>}; the partition \
                    key is the event id unless a template is set."
                    .into(),
                config_fields: vec![
                    field(
                        "stream_name",
                        "Stream name",
                        "The name of the AWS Kinesis stream.",
                        true,
                        false,
                    ),
                    field_with(
                        field(
                            "region",
                            "Region",
                            "The AWS region where the Kinesis stream is located.",
                            true,
                            false,
                        ),
                        Some(aws::REGION_PATTERN),
                        None,
                    ),
                    field_with(
                        field(
                            "endpoint",
                            "Endpoint",
                            "Optional custom AWS endpoint URL (VPC endpoints, LocalStack, moto).",
                            false,
                            false,
                        ),
                        Some("^https?://.+"),
                        None,
                    ),
                    field(
                        "partition_key_template",
                        "Partition key template",
                        "Optional JMESPath expression over {data, metadata} giving the partition key, e.g. \
                         data.\"user_id\". Default (or when it yields nothing): the event id.",
                        false,
                        false,
                    ),
                    field_with(
                        select(field(
                            "metadata_in_payload",
                            "Metadata in payload",
                            "Herald extension: \"true\" wraps the event as {\"metadata\", \"data\"} (Outpost's \
                             default); \"false\" sends the bare event data without metadata or signature.",
                            false,
                            false,
                        )),
                        Some("^(true|false)$"),
                        Some("true"),
                    ),
                ],
                credential_fields: aws::credential_fields(),
            },
            client,
            policy,
            body_limit: cfg.response_body_limit.max(1),
        })
    }
}

/// A stream name Kinesis accepts.
fn valid_stream(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

struct Settings {
    stream: String,
    endpoint: url::Url,
    region: String,
    template: Option<Template>,
    envelope: bool,
    creds: Credentials,
}

impl KinesisType {
    fn settings(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Settings, Vec<FieldError>> {
        let mut errs = Vec::new();
        let stream = get(config, "stream_name");
        if let Some(s) = stream
            && !valid_stream(s)
        {
            errs.push(FieldError::new(
                "config.stream_name",
                format!("{s:?} is not a stream name (1-128 letters, digits, '_', '.', '-')"),
            ));
        }
        let region = get(config, "region");
        if let Some(r) = region
            && !aws::valid_region(r)
        {
            errs.push(FieldError::new(
                "config.region",
                format!("{r:?} is not an AWS region name like us-east-1"),
            ));
        }
        let endpoint = match get(config, "endpoint") {
            Some(raw) => check_endpoint(raw, "config.endpoint", &self.policy)
                .map_err(|e| errs.push(e))
                .ok(),
            None => region
                .and_then(|r| url::Url::parse(&format!("https://kinesis.{r}.amazonaws.com/")).ok()),
        };
        let template = get(config, "partition_key_template").and_then(|t| {
            Template::compile(t, "config.partition_key_template")
                .map_err(|e| errs.push(e))
                .ok()
        });
        let envelope = flag(config, "metadata_in_payload", true)
            .map_err(|e| errs.push(e))
            .ok();
        let creds = Credentials::from_map(credentials)
            .map_err(|e| errs.push(e))
            .ok();
        check_signing_secret(credentials, &mut errs);
        match (stream, endpoint, region, envelope, creds) {
            (Some(stream), Some(endpoint), Some(region), Some(envelope), Some(creds))
                if errs.is_empty() =>
            {
                Ok(Settings {
                    stream: stream.to_string(),
                    endpoint,
                    region: region.to_string(),
                    template,
                    envelope,
                    creds,
                })
            }
            _ => Err(errs),
        }
    }
}

impl DestinationType for KinesisType {
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
        Ok(Arc::new(KinesisDriver {
            settings: s,
            client: self.client.clone(),
            policy: self.policy.clone(),
            body_limit: self.body_limit,
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let stream = d.config.get("stream_name").cloned().unwrap_or_default();
        let region = d.config.get("region").cloned().unwrap_or_default();
        let link = format!(
            "https://{region}.console.aws.amazon.com/kinesis/home?region={region}#/streams/details/{stream}/details"
        );
        (format!("{stream} in {region}"), Some(link))
    }

    fn signing_secret_key(&self) -> Option<&str> {
        Some(SIGNING_SECRET)
    }
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
            .and_then(|t| {
                let ctx = json!({"data": body_json(msg), "metadata": template_metadata(msg)});
                t.render(&ctx).ok().flatten()
            })
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
        let reply = HttpReply::read(resp, self.body_limit).await;
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
    use super::*;

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

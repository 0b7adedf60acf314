//! The `aws_sqs` type: each event becomes one SQS message (`SendMessage`, JSON protocol).
//!
//! The message body is the event data; the engine's headers (event id, timestamp, topic,
//! signature, metadata) become String message attributes. SQS allows 10 attributes per
//! message: when there are more headers, the first nine stay separate attributes and the rest
//! travel together as a JSON object in a tenth attribute named `headers`. FIFO queues
//! (`….fifo`) get the event id as deduplication id and the topic as message group.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use herald_core::Destination;
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use serde_json::{Map, Value, json};

use crate::DestinationsConfig;
use crate::aws::{self, Credentials};
use crate::mapping::{
    HttpReply, SIGNING_SECRET, check_endpoint, check_signing_secret, field, field_with,
    first_error, get, http_client, transport_error,
};
use crate::target::{Blocked, TargetPolicy};

/// SQS's limit of message attributes per message.
const MAX_ATTRIBUTES: usize = 10;

/// The `aws_sqs` destination type.
pub struct SqsType {
    spec: TypeSpec,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

impl SqsType {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let client = http_client(&policy, cfg.proxy.as_deref(), &cfg.user_agent)?;
        Ok(Self {
            spec: TypeSpec {
                kind: "aws_sqs".into(),
                label: "AWS SQS".into(),
                description: "Send events as messages to an Amazon SQS queue.".into(),
                icon: ICON.into(),
                instructions: "Create an SQS queue and an IAM user (or role credentials) allowed to call \
                    sqs:SendMessage on it, then enter the queue URL and the access key. The message body is \
                    the event data; id, topic, timestamp, signature and metadata are message attributes."
                    .into(),
                config_fields: vec![
                    field_with(
                        field(
                            "queue_url",
                            "Queue URL",
                            "The URL of the SQS queue, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/my-queue.",
                            true,
                            false,
                        ),
                        Some("^https?://.+"),
                        None,
                    ),
                    field_with(
                        field(
                            "endpoint",
                            "Endpoint",
                            "Optional custom AWS endpoint URL (a VPC endpoint, LocalStack, moto). Default: the queue URL's host.",
                            false,
                            false,
                        ),
                        Some("^https?://.+"),
                        None,
                    ),
                    field_with(
                        field(
                            "region",
                            "Region",
                            "Herald extension: the region requests are signed for. Default: taken from the queue URL \
                             (sqs.<region>.amazonaws.com), else us-east-1.",
                            false,
                            false,
                        ),
                        Some(aws::REGION_PATTERN),
                        None,
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

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><rect x="3" y="6" width="18" height="12" rx="2"/><path d="M7 10h10M7 14h6"/></svg>"#;

/// The region of an AWS queue URL (`sqs.<region>.amazonaws.com` or
/// `<region>.queue.amazonaws.com`).
fn region_of(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        ["sqs", region, "amazonaws", ..] => Some((*region).to_string()),
        [region, "queue", "amazonaws", ..] => Some((*region).to_string()),
        _ => None,
    }
}

fn queue_url(config: &BTreeMap<String, String>) -> Result<url::Url, FieldError> {
    let raw = get(config, "queue_url")
        .ok_or_else(|| FieldError::new("config.queue_url", "is required"))?;
    let u = url::Url::parse(raw).map_err(|e| {
        FieldError::new(
            "config.queue_url",
            format!("{raw:?} is not a valid URL: {e}"),
        )
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.path().trim_matches('/').is_empty() {
        return Err(FieldError::new(
            "config.queue_url",
            format!("{raw:?} must be an http(s) queue URL ending in /<account>/<queue name>"),
        ));
    }
    Ok(u)
}

/// The settings a driver is built from, checked.
struct Settings {
    queue_url: url::Url,
    endpoint: url::Url,
    region: String,
    creds: Credentials,
}

impl SqsType {
    fn settings(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Settings, Vec<FieldError>> {
        let mut errs = Vec::new();
        let queue = queue_url(config).map_err(|e| errs.push(e)).ok();
        let endpoint = match get(config, "endpoint") {
            Some(raw) => check_endpoint(raw, "config.endpoint", &self.policy)
                .map_err(|e| errs.push(e))
                .ok(),
            // Without an override, requests go to the queue URL's own host.
            None => queue.as_ref().and_then(|q| {
                let mut origin = q.clone();
                origin.set_path("/");
                origin.set_query(None);
                match self.policy.check_url(&origin) {
                    Ok(()) => Some(origin),
                    Err(Blocked(why)) => {
                        errs.push(FieldError::new("config.queue_url", why));
                        None
                    }
                }
            }),
        };
        let region = match get(config, "region") {
            Some(r) if aws::valid_region(r) => Some(r.to_string()),
            Some(r) => {
                errs.push(FieldError::new(
                    "config.region",
                    format!("{r:?} is not an AWS region name like us-east-1"),
                ));
                None
            }
            None => Some(
                queue
                    .as_ref()
                    .and_then(region_of)
                    .unwrap_or_else(|| "us-east-1".into()),
            ),
        };
        let creds = Credentials::from_map(credentials)
            .map_err(|e| errs.push(e))
            .ok();
        check_signing_secret(credentials, &mut errs);
        match (queue, endpoint, region, creds) {
            (Some(queue_url), Some(endpoint), Some(region), Some(creds)) if errs.is_empty() => {
                Ok(Settings {
                    queue_url,
                    endpoint,
                    region,
                    creds,
                })
            }
            _ => Err(errs),
        }
    }
}

impl DestinationType for SqsType {
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
        Ok(Arc::new(SqsDriver {
            fifo: s.queue_url.path().ends_with(".fifo"),
            queue_url: s.queue_url.to_string(),
            endpoint: s.endpoint,
            region: s.region,
            creds: s.creds,
            client: self.client.clone(),
            policy: self.policy.clone(),
            body_limit: self.body_limit,
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let raw = d.config.get("queue_url").cloned().unwrap_or_default();
        let Ok(u) = url::Url::parse(&raw) else {
            return (raw, None);
        };
        let name = u
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_string();
        let link = region_of(&u).map(|r| {
            format!(
                "https://{r}.console.aws.amazon.com/sqs/v3/home?region={r}#/queues/{}",
                aws::uri_encode(&raw, false)
            )
        });
        (name, link)
    }

    fn signing_secret_key(&self) -> Option<&str> {
        Some(SIGNING_SECRET)
    }
}

/// An SQS attribute name for a header: letters, digits, `_`, `-` and `.`, not starting with
/// `AWS.`/`Amazon.` (reserved) nor with or ending in a dot.
fn attribute_name(header: &str) -> String {
    let mut n: String = header
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while n.contains("..") {
        n = n.replace("..", "._");
    }
    let lower = n.to_ascii_lowercase();
    if lower.starts_with("aws.") || lower.starts_with("amazon.") || n.starts_with('.') {
        n = format!("_{n}");
    }
    if n.ends_with('.') {
        n.push('_');
    }
    n.truncate(256);
    n
}

fn string_attribute(value: &str) -> Value {
    json!({"DataType": "String", "StringValue": value})
}

/// The message attributes for a message's headers (see the module docs for the limit).
pub(crate) fn attributes(headers: &[(String, String)]) -> Map<String, Value> {
    let usable: Vec<&(String, String)> = headers.iter().filter(|(_, v)| !v.is_empty()).collect();
    let mut out = Map::new();
    let separate = if usable.len() > MAX_ATTRIBUTES {
        MAX_ATTRIBUTES - 1
    } else {
        usable.len()
    };
    for (k, v) in &usable[..separate] {
        out.insert(attribute_name(k), string_attribute(v));
    }
    if separate < usable.len() {
        let rest: Map<String, Value> = usable[separate..]
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        out.insert(
            "headers".into(),
            string_attribute(&Value::Object(rest).to_string()),
        );
    }
    out
}

struct SqsDriver {
    queue_url: String,
    endpoint: url::Url,
    region: String,
    creds: Credentials,
    fifo: bool,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

#[async_trait]
impl Driver for SqsDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        if let Err(Blocked(why)) = self.policy.check_url(&self.endpoint) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let mut request = json!({
            "QueueUrl": self.queue_url,
            "MessageBody": String::from_utf8_lossy(&msg.body),
            "MessageAttributes": attributes(&msg.headers),
        });
        if self.fifo {
            request["MessageDeduplicationId"] = Value::String(msg.event_id.clone());
            request["MessageGroupId"] = Value::String(msg.topic.clone());
        }
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let resp = aws::post_json(
            &self.client,
            &self.creds,
            &self.region,
            &self.endpoint,
            aws::JsonCall {
                service: "sqs",
                content_type: "application/x-amz-json-1.0",
                target: "AmazonSQS.SendMessage",
            },
            body,
            msg.timeout,
        )
        .await
        .map_err(transport_error)?;
        let error_type = resp
            .headers()
            .get("x-amzn-query-error")
            .or_else(|| resp.headers().get("x-amzn-errortype"))
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).to_string());
        let reply = HttpReply::read(resp, self.body_limit).await;
        if !(200..300).contains(&reply.status) {
            return Err(aws::classify(&reply, error_type.as_deref()));
        }
        let id = serde_json::from_str::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("MessageId").cloned())
            .unwrap_or(Value::Null);
        Ok(Receipt {
            code: reply.status.to_string(),
            response: Some(json!({"status_code": reply.status, "message_id": id})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_are_sqs_safe() {
        assert_eq!(attribute_name("webhook-id"), "webhook-id");
        assert_eq!(attribute_name("x-herald-a b"), "x-herald-a_b");
        assert_eq!(attribute_name("AWS.trace"), "_AWS.trace");
        assert_eq!(attribute_name("a..b."), "a._b._");
    }

    #[test]
    fn more_than_ten_headers_fold_into_one_attribute() {
        let headers: Vec<(String, String)> = (0..12)
            .map(|i| (format!("h{i:02}"), format!("v{i}")))
            .collect();
        let a = attributes(&headers);
        assert_eq!(a.len(), 10);
        assert_eq!(a["h00"]["StringValue"], "v0");
        let rest: Value =
            serde_json::from_str(a["headers"]["StringValue"].as_str().unwrap()).unwrap();
        assert_eq!(rest, json!({"h09": "v9", "h10": "v10", "h11": "v11"}));
        assert_eq!(attributes(&headers[..10]).len(), 10);
    }

    #[test]
    fn region_from_queue_url() {
        let u = url::Url::parse("https://sqs.eu-west-2.amazonaws.com/1/q").unwrap();
        assert_eq!(region_of(&u).as_deref(), Some("eu-west-2"));
        let u = url::Url::parse("http://localhost:5000/1/q").unwrap();
        assert_eq!(region_of(&u), None);
    }
}

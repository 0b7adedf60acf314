//! The `aws_sqs` type: each event becomes one SQS message (`SendMessage`, JSON protocol).
//!
//! The message body is the event data; the engine's headers (event id, timestamp, topic,
//! signature, metadata) become String message attributes. SQS allows 10 attributes per
//! message: when there are more headers, the first nine stay separate attributes and the rest
//! travel together as a JSON object in a tenth attribute named `headers`. FIFO queues
//! (`….fifo`) get the event id as deduplication id and the topic as message group.

use std::sync::Arc;

use async_trait::async_trait;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::DestinationsConfig;
use crate::aws::{self, Credentials, REGION_PATTERN, Region};
use crate::support::address::HttpUrl;
use crate::support::http::{Egress, Reply, transport_error};
use crate::target::{Blocked, TargetPolicy};

const KIND: &str = "aws_sqs";

/// SQS's limit of message attributes per message.
const MAX_ATTRIBUTES: usize = 10;

/// The `aws_sqs` destination type.
pub struct Sqs {
    http: Egress,
}

/// `config` of an `aws_sqs` destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Queue URL
    ///
    /// The URL of the SQS queue, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/my-queue.
    pub queue_url: HttpUrl,
    /// Endpoint
    ///
    /// Optional custom AWS endpoint URL (a VPC endpoint, LocalStack, moto). Default: the
    /// queue URL's host.
    pub endpoint: Option<HttpUrl>,
    /// Region
    ///
    /// Herald extension: the region requests are signed for. Default: taken from the queue
    /// URL (sqs.<region>.amazonaws.com), else us-east-1.
    #[schemars(regex(pattern = REGION_PATTERN))]
    pub region: Option<Region>,
}

impl Sqs {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        Ok(Self {
            http: Egress::new(cfg)?,
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

/// Where requests go: the endpoint override, else the queue URL's origin.
fn endpoint_of(config: &Config) -> url::Url {
    match &config.endpoint {
        Some(e) => e.0.clone(),
        None => {
            let mut origin = config.queue_url.0.clone();
            origin.set_path("/");
            origin.set_query(None);
            origin.set_fragment(None);
            origin
        }
    }
}

impl Spec for Sqs {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "AWS SQS",
            description: "Send events as messages to an Amazon SQS queue.",
            icon: ICON,
            instructions: "Create an SQS queue and an IAM user (or role credentials) allowed to call \
                sqs:SendMessage on it, then enter the queue URL and the access key. The message body is \
                the event data; id, topic, timestamp, signature and metadata are message attributes.",
        }
    }

    fn check(&self, config: &Config, _: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let q = &config.queue_url.0;
        if q.path().trim_matches('/').is_empty() {
            errs.push(FieldError::new(
                "config.queue_url",
                format!(
                    "{:?} must be an http(s) queue URL ending in /<account>/<queue name>",
                    q.as_str()
                ),
            ));
        }
        match &config.endpoint {
            Some(e) => {
                if let Err(e) = e.check(&self.http.policy, "config.endpoint") {
                    errs.push(e);
                }
            }
            // Without an override, requests go to the queue URL's own host.
            None => {
                if let Err(Blocked(why)) = self.http.policy.check_url(&endpoint_of(config)) {
                    errs.push(FieldError::new("config.queue_url", why));
                }
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
        let endpoint = endpoint_of(&config);
        let queue = config.queue_url.0;
        let region = match config.region {
            Some(r) => r.0,
            None => region_of(&queue).unwrap_or_else(|| "us-east-1".into()),
        };
        Ok(Arc::new(SqsDriver {
            fifo: queue.path().ends_with(".fifo"),
            queue_url: queue.to_string(),
            endpoint,
            region,
            creds: credentials,
            client: self.http.client.clone(),
            policy: self.http.policy.clone(),
            body_limit: self.http.body_limit,
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        let u = &config.queue_url.0;
        let name = u
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_string();
        let link = region_of(u).map(|r| {
            format!(
                "https://{r}.console.aws.amazon.com/sqs/v3/home?region={r}#/queues/{}",
                aws::uri_encode(u.as_str(), false)
            )
        });
        (name, link)
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
        let reply = Reply::read(resp, self.body_limit).await;
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
    use std::collections::BTreeMap;

    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    fn sqs() -> Typed<Sqs> {
        Typed::new(Sqs::new(&DestinationsConfig::default()).unwrap(), true)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn creds() -> BTreeMap<String, String> {
        map(&[("key", "AKID"), ("secret", "s3cr3t")])
    }

    #[test]
    fn schema_keeps_the_contract_fields() {
        let t = sqs();
        let spec = t.spec();
        let config: Vec<_> = spec
            .config_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.pattern.as_deref()))
            .collect();
        assert_eq!(
            &config[..3],
            [
                ("queue_url", true, Some("^https?://.+")),
                ("endpoint", false, Some("^https?://.+")),
                ("region", false, Some(REGION_PATTERN)),
            ]
        );
        let creds: Vec<_> = spec
            .credential_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.sensitive))
            .collect();
        assert_eq!(
            &creds[..4],
            [
                ("key", true, false),
                ("secret", true, true),
                ("session", false, true),
                ("signing_secret", false, true),
            ]
        );
        assert_eq!(spec.credential_fields[1].label, "Secret access key");
        assert_eq!(
            t.signing().map(|s| s.key),
            Some(herald_core::spec::SigningField::SIGNING_SECRET)
        );
    }

    #[test]
    fn validation_names_fields() {
        let t = sqs();
        let errs = t.validate(
            &map(&[("queue_url", "ftp://q"), ("region", "US-EAST")]),
            &map(&[("key", "AKID")]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["config.queue_url", "config.region", "credentials.secret"]
        );
        assert!(
            errs[1].problem.contains("region name"),
            "{}",
            errs[1].problem
        );
        let q = "https://sqs.us-east-1.amazonaws.com/1/q";
        assert!(t.validate(&map(&[("queue_url", q)]), &creds()).is_empty());
        // The endpoint and, without one, the queue URL's host are checked against the policy.
        let errs = t.validate(
            &map(&[("queue_url", q), ("endpoint", "http://127.0.0.1:5000")]),
            &creds(),
        );
        assert_eq!(errs[0].field, "config.endpoint");
        let errs = t.validate(
            &map(&[("queue_url", "http://127.0.0.1:5000/1/q")]),
            &creds(),
        );
        assert_eq!(errs[0].field, "config.queue_url");
        let errs = t.validate(
            &map(&[("queue_url", "https://sqs.us-east-1.amazonaws.com/")]),
            &creds(),
        );
        assert!(
            errs[0].problem.contains("<queue name>"),
            "{}",
            errs[0].problem
        );
    }

    #[test]
    fn target_names_the_queue_and_links_its_console() {
        let t = sqs();
        let (name, link) = t.target(&herald_core::Destination {
            id: "des_1".into(),
            tenant_id: "t".into(),
            kind: KIND.into(),
            topics: herald_core::Topics::All,
            filter: None,
            config: map(&[("queue_url", "https://sqs.eu-west-2.amazonaws.com/1/q")]),
            credentials: creds(),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
        });
        assert_eq!(name, "q");
        assert!(link.unwrap().contains("region=eu-west-2"));
    }

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

//! The `aws_s3` type: each event becomes one S3 object (`PutObject`).
//!
//! The object body is the event data (`Content-Type: application/json`); the engine's headers
//! (event id, timestamp, topic, signature, metadata) become user metadata (`x-amz-meta-*`).
//! The object key comes from the contract's JMESPath `key_template`, evaluated over
//! `{data, metadata, time}` — by default `join('', [time.rfc3339_nano, '_',
//! metadata."event-id", '.json'])`, as in Outpost.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use herald_core::Destination;
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use serde_json::json;

use crate::DestinationsConfig;
use crate::aws::{self, Credentials};
use crate::mapping::{
    HttpReply, SIGNING_SECRET, Template, body_json, check_endpoint, check_signing_secret, field,
    field_with, first_error, get, http_client, template_metadata, time_fields, transport_error,
};
use crate::target::{Blocked, TargetPolicy};

/// Outpost's default object key.
const DEFAULT_KEY_TEMPLATE: &str =
    r#"join('', [time.rfc3339_nano, '_', metadata."event-id", '.json'])"#;

/// Storage classes S3 accepts.
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// The `aws_s3` destination type.
pub struct S3Type {
    spec: TypeSpec,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><ellipse cx="12" cy="5" rx="8" ry="3"/><path d="M4 5v14c0 1.7 3.6 3 8 3s8-1.3 8-3V5"/></svg>"#;

impl S3Type {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let client = http_client(&policy, cfg.proxy.as_deref(), &cfg.user_agent)?;
        Ok(Self {
            spec: TypeSpec {
                kind: "aws_s3".into(),
                label: "AWS S3".into(),
                description: "Store each event as an object in an Amazon S3 bucket.".into(),
                icon: ICON.into(),
                instructions: "Create a bucket and credentials allowed to call s3:PutObject on it. Each event \
                    is stored as a JSON object; id, topic, timestamp, signature and metadata are the object's \
                    user metadata (x-amz-meta-*)."
                    .into(),
                config_fields: vec![
                    field("bucket", "Bucket", "The name of your AWS S3 bucket.", true, false),
                    field_with(
                        field(
                            "region",
                            "Region",
                            "The AWS region where your bucket is located.",
                            true,
                            false,
                        ),
                        Some("^[a-z]{2}-[a-z]+-[0-9]+$"),
                        None,
                    ),
                    field_with(
                        field(
                            "key_template",
                            "Key template",
                            "JMESPath expression over {data, metadata, time} generating object keys. Default: \
                             join('', [time.rfc3339_nano, '_', metadata.\"event-id\", '.json']).",
                            false,
                            false,
                        ),
                        None,
                        Some(DEFAULT_KEY_TEMPLATE),
                    ),
                    field_with(
                        field(
                            "storage_class",
                            "Storage class",
                            "The storage class for the objects (STANDARD, INTELLIGENT_TIERING, GLACIER, …). Default: STANDARD.",
                            false,
                            false,
                        ),
                        None,
                        Some("STANDARD"),
                    ),
                    field_with(
                        field(
                            "endpoint",
                            "Endpoint",
                            "Herald extension: a custom S3 endpoint URL (MinIO, LocalStack, moto); path-style \
                             addressing is used with it. Default: https://<bucket>.s3.<region>.amazonaws.com.",
                            false,
                            false,
                        ),
                        Some("^https?://.+"),
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

/// A bucket name S3 accepts (3-63 lowercase letters, digits, dots and hyphens).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

struct Settings {
    /// Object URLs are `{base}{encoded key}`.
    base: String,
    region: String,
    storage_class: Option<String>,
    template: Template,
    creds: Credentials,
}

impl S3Type {
    fn settings(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<Settings, Vec<FieldError>> {
        let mut errs = Vec::new();
        let bucket = get(config, "bucket");
        if let Some(b) = bucket
            && !valid_bucket(b)
        {
            errs.push(FieldError::new(
                "config.bucket",
                format!(
                    "{b:?} is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"
                ),
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
        let template = Template::compile(
            get(config, "key_template").unwrap_or(DEFAULT_KEY_TEMPLATE),
            "config.key_template",
        )
        .map_err(|e| errs.push(e))
        .ok();
        let storage_class = match get(config, "storage_class") {
            None => None,
            Some(c) => match STORAGE_CLASSES.iter().find(|s| s.eq_ignore_ascii_case(c)) {
                Some(s) => Some((*s).to_string()),
                None => {
                    errs.push(FieldError::new(
                        "config.storage_class",
                        format!("{c:?} is not one of {}", STORAGE_CLASSES.join(", ")),
                    ));
                    None
                }
            },
        };
        let endpoint = get(config, "endpoint").and_then(|raw| {
            check_endpoint(raw, "config.endpoint", &self.policy)
                .map_err(|e| errs.push(e))
                .ok()
        });
        let creds = Credentials::from_map(credentials)
            .map_err(|e| errs.push(e))
            .ok();
        check_signing_secret(credentials, &mut errs);
        let (Some(bucket), Some(region), Some(template), Some(creds)) =
            (bucket, region, template, creds)
        else {
            return Err(errs);
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        let base = match endpoint {
            Some(e) => format!("{}/{bucket}/", e.as_str().trim_end_matches('/')),
            // Dotted names do not match the wildcard certificate of virtual-hosted style.
            None if bucket.contains('.') => {
                format!("https://s3.{region}.amazonaws.com/{bucket}/")
            }
            None => format!("https://{bucket}.s3.{region}.amazonaws.com/"),
        };
        Ok(Settings {
            base,
            region: region.to_string(),
            storage_class,
            template,
            creds,
        })
    }
}

impl DestinationType for S3Type {
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
        Ok(Arc::new(S3Driver {
            settings: s,
            client: self.client.clone(),
            policy: self.policy.clone(),
            body_limit: self.body_limit,
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let bucket = d.config.get("bucket").cloned().unwrap_or_default();
        let region = d.config.get("region").cloned().unwrap_or_default();
        let link = format!("https://s3.console.aws.amazon.com/s3/buckets/{bucket}?region={region}");
        (format!("{bucket} in {region}"), Some(link))
    }

    fn signing_secret_key(&self) -> Option<&str> {
        Some(SIGNING_SECRET)
    }
}

/// A user-metadata value: kept when it is printable ASCII, else RFC 2047-encoded (S3 stores
/// and returns that form).
fn metadata_value(v: &str) -> String {
    if v.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        v.trim().to_string()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(v)
        )
    }
}

struct S3Driver {
    settings: Settings,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
}

#[async_trait]
impl Driver for S3Driver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let s = &self.settings;
        let ctx = json!({
            "data": body_json(msg),
            "metadata": template_metadata(msg),
            "time": time_fields(msg.time),
        });
        let key = match s.template.render(&ctx) {
            Ok(Some(k)) => k,
            Ok(None) => {
                return Err(DeliveryError::permanent(
                    "key_template",
                    "the key template produced no key for this event",
                ));
            }
            Err(e) => {
                return Err(DeliveryError::permanent(
                    "key_template",
                    format!("the key template failed: {e}"),
                ));
            }
        };
        let url = url::Url::parse(&format!("{}{}", s.base, aws::uri_encode(&key, true)))
            .map_err(|e| DeliveryError::permanent("key_template", format!("bad key: {e}")))?;
        if let Err(Blocked(why)) = self.policy.check_url(&url) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(class) = &s.storage_class {
            headers.push(("x-amz-storage-class".into(), class.clone()));
        }
        for (k, v) in &msg.headers {
            headers.push((
                format!("x-amz-meta-{}", k.to_ascii_lowercase()),
                metadata_value(v),
            ));
        }
        let signed = aws::sign(
            &s.creds,
            &s.region,
            "s3",
            aws::Request {
                method: "PUT",
                url: &url,
                headers,
                payload_hash: aws::sha256_hex(&msg.body),
                double_encode_path: false,
                content_hash_header: true,
            },
            jiff::Timestamp::now(),
        );
        let mut req = self
            .client
            .put(url.clone())
            .timeout(msg.timeout)
            .body(msg.body.to_vec());
        for (k, v) in &signed {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(transport_error)?;
        let reply = HttpReply::read(resp, self.body_limit).await;
        if !(200..300).contains(&reply.status) {
            return Err(aws::classify(&reply, None));
        }
        Ok(Receipt {
            code: reply.status.to_string(),
            response: Some(json!({"status_code": reply.status, "key": key})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        assert!(valid_bucket("my-bucket.logs"));
        assert!(!valid_bucket("My_Bucket"));
        assert!(!valid_bucket("ab"));
        assert!(!valid_bucket("-abc"));
    }

    #[test]
    fn metadata_values() {
        assert_eq!(metadata_value("plain value"), "plain value");
        assert_eq!(metadata_value("é"), "=?UTF-8?B?w6k=?=");
    }
}

//! The `aws_s3` type: each event becomes one S3 object (`PutObject`).
//!
//! The object body is the event data (`Content-Type: application/json`); the engine's headers
//! (event id, timestamp, topic, signature, metadata) become user metadata (`x-amz-meta-*`).
//! The object key comes from the contract's JMESPath `key_template`, evaluated over
//! `{data, metadata, time}` — by default `join('', [time.rfc3339_nano, '_',
//! metadata."event-id", '.json'])`, as in Outpost.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::DestinationsConfig;
use crate::aws::{self, Credentials, Region};
use crate::support::address::HttpUrl;
use crate::support::http::{Egress, Reply, transport_error};
use crate::support::template::{KeyTemplate, Template};
use crate::target::{Blocked, TargetPolicy};

const KIND: &str = "aws_s3";

/// Outpost's default object key.
const DEFAULT_KEY_TEMPLATE: &str =
    r#"join('', [time.rfc3339_nano, '_', metadata."event-id", '.json'])"#;

/// The `aws_s3` destination type.
pub struct S3 {
    http: Egress,
}

/// `config` of an `aws_s3` destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Bucket
    ///
    /// The name of your AWS S3 bucket.
    pub bucket: String,
    /// Region
    ///
    /// The AWS region where your bucket is located.
    #[schemars(regex(pattern = "^[a-z]{2}-[a-z]+-[0-9]+$"))]
    pub region: Region,
    /// Key template
    ///
    /// JMESPath expression over {data, metadata, time} generating object keys. Default:
    /// join('', [time.rfc3339_nano, '_', metadata."event-id", '.json']).
    #[serde(default = "default_key_template")]
    pub key_template: KeyTemplate,
    /// Storage class
    ///
    /// The storage class for the objects (STANDARD, INTELLIGENT_TIERING, GLACIER, …).
    /// Default: STANDARD.
    #[serde(default)]
    pub storage_class: StorageClass,
    /// Endpoint
    ///
    /// Herald extension: a custom S3 endpoint URL (MinIO, LocalStack, moto); path-style
    /// addressing is used with it. Default: https://<bucket>.s3.<region>.amazonaws.com.
    pub endpoint: Option<HttpUrl>,
}

fn default_key_template() -> KeyTemplate {
    // A constant expression: compiling it cannot fail.
    KeyTemplate(Template::expression(DEFAULT_KEY_TEMPLATE).unwrap_or_else(|_| unreachable!()))
}

/// The storage classes S3 accepts (`x-amz-storage-class`). Input is case-insensitive.
/// (Variants carry no doc comments: with them the schema is not a plain `enum`.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    // S3's default.
    #[default]
    Standard,
    // Reduced redundancy (deprecated by AWS).
    ReducedRedundancy,
    // Infrequent access.
    StandardIa,
    // Infrequent access, one zone.
    OnezoneIa,
    // Intelligent tiering.
    IntelligentTiering,
    // Glacier flexible retrieval.
    Glacier,
    // Glacier deep archive.
    DeepArchive,
    // S3 on Outposts.
    Outposts,
    // Glacier instant retrieval.
    GlacierIr,
    // Snowball edge.
    Snow,
    // S3 Express One Zone.
    ExpressOnezone,
}

impl StorageClass {
    /// Every class, in the schema's order.
    const ALL: [Self; 11] = [
        Self::Standard,
        Self::ReducedRedundancy,
        Self::StandardIa,
        Self::OnezoneIa,
        Self::IntelligentTiering,
        Self::Glacier,
        Self::DeepArchive,
        Self::Outposts,
        Self::GlacierIr,
        Self::Snow,
        Self::ExpressOnezone,
    ];

    /// The name S3 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "STANDARD",
            Self::ReducedRedundancy => "REDUCED_REDUNDANCY",
            Self::StandardIa => "STANDARD_IA",
            Self::OnezoneIa => "ONEZONE_IA",
            Self::IntelligentTiering => "INTELLIGENT_TIERING",
            Self::Glacier => "GLACIER",
            Self::DeepArchive => "DEEP_ARCHIVE",
            Self::Outposts => "OUTPOSTS",
            Self::GlacierIr => "GLACIER_IR",
            Self::Snow => "SNOW",
            Self::ExpressOnezone => "EXPRESS_ONEZONE",
        }
    }
}

impl<'de> Deserialize<'de> for StorageClass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(d)?;
        let t = raw.trim();
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
                serde::de::Error::custom(format!("{raw:?} is not one of {}", all.join(", ")))
            })
    }
}

impl Serialize for StorageClass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><ellipse cx="12" cy="5" rx="8" ry="3"/><path d="M4 5v14c0 1.7 3.6 3 8 3s8-1.3 8-3V5"/></svg>"#;

impl S3 {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        Ok(Self {
            http: Egress::new(cfg)?,
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

impl Spec for S3 {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "AWS S3",
            description: "Store each event as an object in an Amazon S3 bucket.",
            icon: ICON,
            instructions: "Create a bucket and credentials allowed to call s3:PutObject on it. Each event \
                is stored as a JSON object; id, topic, timestamp, signature and metadata are the object's \
                user metadata (x-amz-meta-*).",
        }
    }

    fn check(&self, config: &Config, _: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let b = config.bucket.trim();
        if !valid_bucket(b) {
            errs.push(FieldError::new(
                "config.bucket",
                format!(
                    "{b:?} is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"
                ),
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
        let bucket = config.bucket.trim();
        let region = config.region.0;
        let base = match &config.endpoint {
            Some(e) => format!("{}/{bucket}/", e.0.as_str().trim_end_matches('/')),
            // Dotted names do not match the wildcard certificate of virtual-hosted style.
            None if bucket.contains('.') => {
                format!("https://s3.{region}.amazonaws.com/{bucket}/")
            }
            None => format!("https://{bucket}.s3.{region}.amazonaws.com/"),
        };
        Ok(Arc::new(S3Driver {
            settings: Settings {
                base,
                region,
                // STANDARD is S3's default: the header is left out for it.
                storage_class: (config.storage_class != StorageClass::Standard)
                    .then_some(config.storage_class),
                template: config.key_template.0,
                creds: credentials,
            },
            client: self.http.client.clone(),
            policy: self.http.policy.clone(),
            body_limit: self.http.body_limit,
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        let bucket = &config.bucket;
        let region = config.region.as_str();
        let link = format!("https://s3.console.aws.amazon.com/s3/buckets/{bucket}?region={region}");
        (format!("{bucket} in {region}"), Some(link))
    }
}

struct Settings {
    /// Object URLs are `{base}{encoded key}`.
    base: String,
    region: String,
    storage_class: Option<StorageClass>,
    template: Template,
    creds: Credentials,
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
        let key = match s.template.render(msg) {
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
            headers.push(("x-amz-storage-class".into(), class.as_str().to_string()));
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
        let reply = Reply::read(resp, self.body_limit).await;
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
    use std::collections::BTreeMap;
    use std::time::Duration;

    use herald_core::Destination;
    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    fn s3() -> Typed<S3> {
        Typed::new(S3::new(&DestinationsConfig::default()).unwrap(), true)
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
        let t = s3();
        let f = &t.spec().config_fields;
        let keys: Vec<_> = f.iter().map(|f| (f.key.as_str(), f.required)).collect();
        assert_eq!(
            &keys[..5],
            [
                ("bucket", true),
                ("region", true),
                ("key_template", false),
                ("storage_class", false),
                ("endpoint", false),
            ]
        );
        assert_eq!(f[1].pattern.as_deref(), Some("^[a-z]{2}-[a-z]+-[0-9]+$"));
        assert_eq!(f[2].default.as_deref(), Some(DEFAULT_KEY_TEMPLATE));
        assert_eq!(f[3].default.as_deref(), Some("STANDARD"));
        assert_eq!(f[3].kind, "select");
        let options: Vec<_> = f[3].options.iter().map(|o| o.value.as_str()).collect();
        let names: Vec<_> = StorageClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(options, names);
        assert_eq!(f[4].pattern.as_deref(), Some("^https?://.+"));
        let c: Vec<_> = t
            .spec()
            .credential_fields
            .iter()
            .map(|f| f.key.as_str())
            .collect();
        assert_eq!(&c[..4], ["key", "secret", "session", "signing_secret"]);
    }

    #[test]
    fn validation_names_fields() {
        let t = s3();
        let errs = t.validate(
            &map(&[
                ("bucket", "ok-bucket"),
                ("region", "nowhere"),
                ("key_template", "join("),
                ("storage_class", "FAST"),
            ]),
            &map(&[("secret", "s")]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.region",
                "config.key_template",
                "config.storage_class",
                "credentials.key"
            ]
        );
        assert!(
            errs[2].problem.contains("GLACIER_IR"),
            "{}",
            errs[2].problem
        );
        let errs = t.validate(
            &map(&[("bucket", "My_Bucket"), ("region", "us-east-1")]),
            &creds(),
        );
        assert_eq!(errs[0].field, "config.bucket");
        let errs = t.validate(
            &map(&[
                ("bucket", "b.logs"),
                ("region", "us-east-1"),
                ("endpoint", "http://127.0.0.1:9000"),
            ]),
            &creds(),
        );
        assert_eq!(errs[0].field, "config.endpoint");
        assert!(
            t.validate(
                &map(&[
                    ("bucket", "b.logs"),
                    ("region", "us-gov-west-1"),
                    ("storage_class", "standard_ia"),
                ]),
                &creds()
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn a_key_template_without_a_key_fails_permanently() {
        let d = Destination {
            id: "des_1".into(),
            tenant_id: "t".into(),
            kind: KIND.into(),
            topics: herald_core::Topics::All,
            filter: None,
            config: map(&[
                ("bucket", "b"),
                ("region", "us-east-1"),
                ("key_template", "data.missing"),
            ]),
            credentials: creds(),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let driver = s3().build(&d).unwrap();
        let msg = OutboundMessage {
            event_id: "e".into(),
            delivery_id: "dlv_1".into(),
            topic: "t".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            body: Arc::from(&b"{}"[..]),
            headers: vec![],
            metadata: Default::default(),
            timeout: Duration::from_secs(1),
        };
        let e = driver.deliver(&msg).await.unwrap_err();
        assert_eq!(e.code, "key_template");
        assert_eq!(
            e.disposition,
            herald_core::destination::Disposition::Permanent
        );
    }

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

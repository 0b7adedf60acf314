//! Pieces shared by the message-system types of this crate (Kafka, AWS, Pub/Sub, Service
//! Bus): how an [`OutboundMessage`] maps onto a protocol's headers, the JMESPath key
//! templates of the Outpost contract, the optional signing secret, endpoint checks, and the
//! HTTP plumbing of the types that speak HTTP.
//!
//! What it is not: a place for protocol logic. Each type's module owns its request format and
//! its error classification; this module only holds what would otherwise be copied.

#![allow(dead_code)] // Each feature uses a different subset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald_core::destination::{DeliveryError, FieldError, FieldSpec, OutboundMessage};
use herald_core::signing;
use serde_json::{Map, Value, json};

use crate::target::{Blocked, GuardedResolver, TargetPolicy};

/// The credential that holds a message-system type's optional signing secret.
pub(crate) const SIGNING_SECRET: &str = "signing_secret";

/// A text field of a type's schema.
pub(crate) fn field(
    key: &str,
    label: &str,
    description: &str,
    required: bool,
    sensitive: bool,
) -> FieldSpec {
    FieldSpec {
        key: key.into(),
        kind: "text".into(),
        label: label.into(),
        description: description.into(),
        required,
        sensitive,
        default: None,
        pattern: None,
    }
}

/// The same field with a pattern and/or a default.
pub(crate) fn field_with(
    mut f: FieldSpec,
    pattern: Option<&str>,
    default: Option<&str>,
) -> FieldSpec {
    f.pattern = pattern.map(Into::into);
    f.default = default.map(Into::into);
    f
}

/// A `select` field.
pub(crate) fn select(mut f: FieldSpec) -> FieldSpec {
    f.kind = "select".into();
    f
}

/// The optional `signing_secret` credential every type of this crate's message systems has.
pub(crate) fn signing_secret_field() -> FieldSpec {
    field(
        SIGNING_SECRET,
        "Signing secret",
        "Herald extension: when set, every message carries the signature headers the webhook type \
         sends (Standard Webhooks by default), as message headers/attributes, signed with this \
         secret (a whsec_ key or 1-1024 printable ASCII characters). Empty: messages are not signed.",
        false,
        true,
    )
}

/// Checks the signing secret's format.
pub(crate) fn check_signing_secret(
    credentials: &BTreeMap<String, String>,
    errs: &mut Vec<FieldError>,
) {
    if let Some(s) = credentials.get(SIGNING_SECRET).filter(|s| !s.is_empty())
        && !signing::is_valid_secret(s)
    {
        errs.push(FieldError::new(
            format!("credentials.{SIGNING_SECRET}"),
            "must be a whsec_ key (base64 of 24 to 64 bytes) or 1 to 1024 printable ASCII characters without spaces",
        ));
    }
}

/// The first of a type's validation errors, for `build` (which reports one).
pub(crate) fn first_error(errs: Vec<FieldError>) -> FieldError {
    errs.into_iter()
        .next()
        .unwrap_or_else(|| FieldError::new("config", "is not valid for this destination type"))
}

/// A non-empty, trimmed value of a map.
pub(crate) fn get<'a>(map: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    map.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Parses a `"true"`/`"false"` setting (empty: `default`).
pub(crate) fn flag(
    config: &BTreeMap<String, String>,
    key: &str,
    default: bool,
) -> Result<bool, FieldError> {
    match get(config, key) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(FieldError::new(
            format!("config.{key}"),
            format!("{other:?} is not a boolean; use \"true\" or \"false\""),
        )),
    }
}

/// Parses and checks an endpoint override: an absolute `http(s)` URL the target policy allows.
pub(crate) fn check_endpoint(
    raw: &str,
    field: &str,
    policy: &TargetPolicy,
) -> Result<url::Url, FieldError> {
    let url = url::Url::parse(raw)
        .map_err(|e| FieldError::new(field, format!("{raw:?} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FieldError::new(
            field,
            format!("{raw:?} must be an http:// or https:// URL"),
        ));
    }
    if let Err(Blocked(why)) = policy.check_url(&url) {
        return Err(FieldError::new(field, why));
    }
    Ok(url)
}

/// The message's headers as one ordered JSON object of strings.
pub(crate) fn headers_object(msg: &OutboundMessage) -> Map<String, Value> {
    msg.headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// Outpost's metadata map for message systems — `event-id`, `topic`, `timestamp` (Unix
/// seconds of the attempt) and the event's metadata — which the key templates read as
/// `metadata`. The engine's headers (signature included) are added under their own names
/// when they do not collide, so templates can use either spelling.
pub(crate) fn template_metadata(msg: &OutboundMessage) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event-id".into(), Value::String(msg.event_id.clone()));
    m.insert("topic".into(), Value::String(msg.topic.clone()));
    m.insert(
        "timestamp".into(),
        Value::String(jiff::Timestamp::now().as_second().to_string()),
    );
    for (k, v) in &msg.metadata {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    for (k, v) in &msg.headers {
        m.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    m
}

/// The event data as JSON (`null` if the body somehow is not JSON).
pub(crate) fn body_json(msg: &OutboundMessage) -> Value {
    serde_json::from_slice(&msg.body).unwrap_or(Value::Null)
}

/// The event time's parts, as Outpost's S3 key templates read them under `time`.
pub(crate) fn time_fields(t: jiff::Timestamp) -> Value {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    let dt = z.datetime();
    json!({
        "year": format!("{:04}", dt.year()),
        "month": format!("{:02}", dt.month()),
        "day": format!("{:02}", dt.day()),
        "hour": format!("{:02}", dt.hour()),
        "minute": format!("{:02}", dt.minute()),
        "second": format!("{:02}", dt.second()),
        "date": z.strftime("%Y-%m-%d").to_string(),
        "datetime": z.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
        "unix": t.as_second().to_string(),
        "rfc3339": t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "rfc3339_nano": rfc3339_nano(t),
    })
}

/// RFC 3339 with as many fraction digits as needed (Go's `time.RFC3339Nano`).
fn rfc3339_nano(t: jiff::Timestamp) -> String {
    let base = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

/// A compiled JMESPath key template (`partition_key_template`, `key_template`).
#[cfg(any(feature = "kafka", feature = "aws_s3", feature = "aws_kinesis"))]
pub(crate) struct Template {
    expr: jmespath::Expression<'static>,
}

#[cfg(any(feature = "kafka", feature = "aws_s3", feature = "aws_kinesis"))]
impl Template {
    /// Compiles a template, naming the field on failure.
    pub(crate) fn compile(source: &str, field: &str) -> Result<Self, FieldError> {
        jmespath::compile(source)
            .map(|expr| Self { expr })
            .map_err(|e| {
                FieldError::new(
                    field,
                    format!("{source:?} is not a valid JMESPath expression: {e}"),
                )
            })
    }

    /// Evaluates the template; `None` when it yields null or an empty string. Numbers and
    /// booleans are rendered as text; arrays and objects as compact JSON.
    pub(crate) fn render(&self, context: &Value) -> Result<Option<String>, String> {
        let data = jmespath::Variable::from_serializable(context).map_err(|e| e.to_string())?;
        let out = self.expr.search(data).map_err(|e| e.to_string())?;
        let v = serde_json::to_value(&*out).map_err(|e| e.to_string())?;
        Ok(match v {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => Some(other.to_string()),
        })
    }
}

/// An HTTP client for the HTTP-speaking message types: pooled, no redirects, every resolved
/// address checked against the target policy, the egress proxy when one is configured.
pub(crate) fn http_client(
    policy: &Arc<TargetPolicy>,
    proxy: Option<&str>,
    user_agent: &str,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .user_agent(if user_agent.is_empty() {
            "herald"
        } else {
            user_agent
        });
    b = match proxy {
        Some(p) => {
            b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("invalid proxy URL {p:?}: {e}"))?)
        }
        None => b.no_proxy(),
    };
    b.build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Finds a target refusal anywhere in an error's source chain.
fn blocked_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<Blocked>() {
            return Some(b.0.clone());
        }
        cur = err.source();
    }
    None
}

/// Classifies an HTTP transport failure (no response): a refused target is permanent,
/// everything else — connection refused, reset, timeout, DNS — is retried.
pub(crate) fn transport_error(e: reqwest::Error) -> DeliveryError {
    if let Some(why) = blocked_in(&e) {
        return DeliveryError::permanent("blocked_target", why);
    }
    let code = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection_error"
    } else {
        "network_error"
    };
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    DeliveryError::retry(code, msg)
}

/// A response read for classification and the attempt log.
pub(crate) struct HttpReply {
    /// HTTP status.
    pub status: u16,
    /// The body, cut to the configured limit.
    pub body: String,
    /// `Retry-After`, when the server sent one.
    pub retry_after: Option<Duration>,
}

impl HttpReply {
    /// Reads a response, keeping at most `limit` bytes of its body.
    pub(crate) async fn read(mut resp: reqwest::Response, limit: usize) -> Self {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| herald_core::retry::parse_retry_after(v, jiff::Timestamp::now()));
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = limit.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                break;
            }
        }
        Self {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            retry_after,
        }
    }

    /// `{status_code, body}` for the attempt log.
    pub(crate) fn log(&self) -> Value {
        json!({"status_code": self.status, "body": self.body})
    }

    /// A failed attempt carrying this response.
    pub(crate) fn error(&self, retry: bool, code: &str, message: String) -> DeliveryError {
        DeliveryError {
            disposition: if retry {
                herald_core::destination::Disposition::Retry {
                    after: self.retry_after,
                }
            } else {
                herald_core::destination::Disposition::Permanent
            },
            code: code.to_string(),
            message,
            response: Some(self.log()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_nano_trims_trailing_zeros() {
        let t: jiff::Timestamp = "2024-05-06T07:08:09.120Z".parse().unwrap();
        assert_eq!(rfc3339_nano(t), "2024-05-06T07:08:09.12Z");
        let t: jiff::Timestamp = "2024-05-06T07:08:09Z".parse().unwrap();
        assert_eq!(rfc3339_nano(t), "2024-05-06T07:08:09Z");
        let f = time_fields(t);
        assert_eq!(f["year"], "2024");
        assert_eq!(f["month"], "05");
        assert_eq!(f["date"], "2024-05-06");
    }

    #[cfg(any(feature = "kafka", feature = "aws_s3", feature = "aws_kinesis"))]
    #[test]
    fn templates_render_outpost_examples() {
        let ctx = json!({
            "data": {"user_id": "u1", "n": 7},
            "metadata": {"event-id": "evt_1"},
            "time": {"year": "2024", "month": "05", "day": "06", "rfc3339_nano": "2024-05-06T00:00:00Z"}
        });
        let t = Template::compile(r#"metadata."event-id""#, "f").unwrap();
        assert_eq!(t.render(&ctx).unwrap().as_deref(), Some("evt_1"));
        let t = Template::compile("data.n", "f").unwrap();
        assert_eq!(t.render(&ctx).unwrap().as_deref(), Some("7"));
        let t = Template::compile("data.missing", "f").unwrap();
        assert_eq!(t.render(&ctx).unwrap(), None);
        let t = Template::compile(
            r#"join('/', [time.year, time.month, time.day, metadata."event-id"])"#,
            "f",
        )
        .unwrap();
        assert_eq!(t.render(&ctx).unwrap().as_deref(), Some("2024/05/06/evt_1"));
        let e = Template::compile("join(", "config.key_template")
            .err()
            .unwrap();
        assert_eq!(e.field, "config.key_template");
    }
}

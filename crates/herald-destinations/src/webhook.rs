//! The `webhook` type: an HTTP POST of the event data to a URL.
//!
//! One pooled HTTP client serves every webhook destination (keep-alive connections are reused
//! per host). Redirects are never followed — a 3xx is a failed attempt — and every address is
//! checked against the [`TargetPolicy`] after DNS resolution.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::destination::{
    DeliveryError, DestinationType, Disposition, Driver, FieldError, FieldSpec, OutboundMessage,
    Receipt, TypeSpec,
};
use herald_core::retry::{Verdict, classify_http, parse_retry_after};
use herald_core::{Destination, signing};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::DestinationsConfig;
use crate::target::{Blocked, GuardedResolver, TargetPolicy};

/// Request headers a destination's `custom_headers` may not set: Herald owns them.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "user-agent",
    "proxy-authorization",
];

/// The webhook destination type.
pub struct WebhookType {
    spec: TypeSpec,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
    retry_on_status: Arc<[u16]>,
}

fn field(key: &str, label: &str, description: &str, required: bool, sensitive: bool) -> FieldSpec {
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

impl WebhookType {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(if cfg.user_agent.is_empty() {
                "herald"
            } else {
                cfg.user_agent.as_str()
            });
        builder = match &cfg.proxy {
            Some(p) => builder.proxy(
                reqwest::Proxy::all(p).map_err(|e| format!("invalid proxy URL {p:?}: {e}"))?,
            ),
            None => builder.no_proxy(),
        };
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        let mut url = field(
            "url",
            "URL",
            "The URL that receives events as HTTP POST requests.",
            true,
            false,
        );
        url.pattern = Some(
            if policy.allow_http {
                "^https?://.+"
            } else {
                "^https://.+"
            }
            .into(),
        );
        let mut mode = field(
            "signing_mode",
            "Signature scheme",
            "Herald extension: `standard` (Standard Webhooks) or `outpost`; empty uses the server default.",
            false,
            false,
        );
        mode.kind = "select".into();
        Ok(Self {
            spec: TypeSpec {
                kind: "webhook".into(),
                label: "Webhook".into(),
                description: "Send events as signed HTTP POST requests to a URL.".into(),
                icon: ICON.into(),
                instructions: "Enter the URL of an endpoint that accepts POST requests with a JSON body. \
                    Verify each request's signature with the destination's secret and answer with any 2xx status."
                    .into(),
                config_fields: vec![
                    url,
                    field(
                        "custom_headers",
                        "Custom headers",
                        "JSON object of extra HTTP headers sent with every request, e.g. {\"x-api-key\":\"…\"}. \
                         Reserved headers (Content-Type, Host, …) cannot be set.",
                        false,
                        false,
                    ),
                    mode,
                ],
                credential_fields: vec![
                    field("secret", "Signing secret", "Secret used to sign requests; generated when omitted.", false, true),
                    field("previous_secret", "Previous secret", "The secret before the last rotation (read-only).", false, true),
                    field(
                        "previous_secret_invalid_at",
                        "Previous secret valid until",
                        "RFC 3339 time until which the previous secret also signs (read-only).",
                        false,
                        false,
                    ),
                ],
            },
            client,
            policy,
            body_limit: cfg.response_body_limit.max(1),
            retry_on_status: cfg.retry_on_status.clone().into(),
        })
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M18 16.98h-5.99c-1.1 0-1.95.94-2.48 1.9A4 4 0 0 1 2 17c.01-.7.2-1.4.57-2"/><path d="m6 17 3.13-5.78c.53-.97.1-2.18-.5-3.1a4 4 0 1 1 6.89-4.06"/><path d="m12 6 3.13 5.73C15.66 12.7 16.9 13 18 13a4 4 0 0 1 0 8"/></svg>"#;

/// Parses `custom_headers` (a JSON object of strings) into a header map, naming the problem.
fn parse_custom_headers(raw: &str) -> Result<HeaderMap, String> {
    let v: Value =
        serde_json::from_str(raw).map_err(|e| format!("must be a JSON object of strings: {e}"))?;
    let Value::Object(map) = v else {
        return Err("must be a JSON object of strings".into());
    };
    let mut out = HeaderMap::new();
    for (k, v) in map {
        let Value::String(s) = v else {
            return Err(format!("header {k:?} must have a string value"));
        };
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("{k:?} is not a valid header name"))?;
        if RESERVED.contains(&name.as_str()) {
            return Err(format!("header {k:?} is reserved and cannot be overridden"));
        }
        let value =
            HeaderValue::from_str(&s).map_err(|_| format!("header {k:?} has an invalid value"))?;
        out.insert(name, value);
    }
    Ok(out)
}

impl DestinationType for WebhookType {
    fn spec(&self) -> &TypeSpec {
        &self.spec
    }

    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(raw) = config.get("url") {
            match url::Url::parse(raw) {
                Err(e) => errs.push(FieldError::new(
                    "config.url",
                    format!("{raw:?} is not a valid URL: {e}"),
                )),
                Ok(u) => {
                    if let Err(Blocked(why)) = self.policy.check_url(&u) {
                        errs.push(FieldError::new("config.url", why));
                    }
                }
            }
        }
        if let Some(raw) = config.get("custom_headers").filter(|s| !s.is_empty())
            && let Err(e) = parse_custom_headers(raw)
        {
            errs.push(FieldError::new("config.custom_headers", e));
        }
        if let Some(m) = config.get("signing_mode").filter(|s| !s.is_empty())
            && m != "standard"
            && m != "outpost"
        {
            errs.push(FieldError::new(
                "config.signing_mode",
                format!("{m:?} is not a signature scheme; use standard or outpost"),
            ));
        }
        if let Some(s) = credentials.get("secret")
            && !signing::is_valid_secret(s)
        {
            errs.push(FieldError::new(
                "credentials.secret",
                "must be a whsec_-prefixed base64 key of 24 to 64 bytes, or omitted to generate one",
            ));
        }
        if let Some(t) = credentials.get("previous_secret_invalid_at")
            && t.parse::<jiff::Timestamp>().is_err()
        {
            errs.push(FieldError::new(
                "credentials.previous_secret_invalid_at",
                format!("{t:?} is not an RFC 3339 time"),
            ));
        }
        errs
    }

    fn build(&self, d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        let raw = d
            .config
            .get("url")
            .ok_or_else(|| FieldError::new("config.url", "is required"))?;
        let url = url::Url::parse(raw).map_err(|e| FieldError::new("config.url", e.to_string()))?;
        let custom = match d.config.get("custom_headers").filter(|s| !s.is_empty()) {
            Some(raw) => parse_custom_headers(raw)
                .map_err(|e| FieldError::new("config.custom_headers", e))?,
            None => HeaderMap::new(),
        };
        Ok(Arc::new(WebhookDriver {
            url,
            custom,
            client: self.client.clone(),
            policy: self.policy.clone(),
            body_limit: self.body_limit,
            retry_on_status: self.retry_on_status.clone(),
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let raw = d.config.get("url").cloned().unwrap_or_default();
        let host = url::Url::parse(&raw)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_else(|| raw.clone());
        (host, Some(raw))
    }
}

struct WebhookDriver {
    url: url::Url,
    custom: HeaderMap,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
    retry_on_status: Arc<[u16]>,
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

fn transport_error(e: reqwest::Error) -> DeliveryError {
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
    // Show the innermost cause: it is the informative one ("connection refused", …).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    DeliveryError::retry(code, msg)
}

#[async_trait]
impl Driver for WebhookDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        if let Err(Blocked(why)) = self.policy.check_url(&self.url) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(msg.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .headers(self.custom.clone());
        for (k, v) in &msg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req
            .body(msg.body.to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
        let mut headers = Map::new();
        for (k, v) in resp.headers() {
            headers.insert(
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            );
        }
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.body_limit.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room {
                        truncated = true;
                        break;
                    }
                }
                Ok(None) => break,
                // The status already arrived; a broken body does not change the verdict.
                Err(_) => break,
            }
        }
        let mut response = json!({
            "status_code": status,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        if truncated {
            response["body_truncated"] = Value::Bool(true);
        }
        let code = status.to_string();
        let fail = |disposition: Disposition, message: String| DeliveryError {
            disposition,
            code: code.clone(),
            message,
            response: Some(response.clone()),
        };
        match classify_http(status, retry_after, &self.retry_on_status) {
            Verdict::Success => Ok(Receipt {
                code: code.clone(),
                response: Some(response.clone()),
            }),
            Verdict::Retry { after } => Err(fail(
                Disposition::Retry { after },
                format!("receiver answered HTTP {status}"),
            )),
            Verdict::Permanent if (300..400).contains(&status) => Err(fail(
                Disposition::Permanent,
                format!("receiver answered HTTP {status}; redirects are not followed"),
            )),
            Verdict::Permanent => Err(fail(
                Disposition::Permanent,
                format!("receiver answered HTTP {status}; not retried"),
            )),
            Verdict::Gone => Err(fail(
                Disposition::Gone,
                "receiver answered 410 Gone; the destination is disabled".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_headers_parsing() {
        assert_eq!(
            parse_custom_headers(r#"{"x-api-key":"k"}"#)
                .unwrap()
                .get("x-api-key")
                .unwrap(),
            "k"
        );
        assert!(parse_custom_headers("[]").is_err());
        assert!(
            parse_custom_headers(r#"{"x":1}"#)
                .unwrap_err()
                .contains("string")
        );
        assert!(
            parse_custom_headers(r#"{"Content-Type":"text/plain"}"#)
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            parse_custom_headers(r#"{"bad header":"v"}"#)
                .unwrap_err()
                .contains("valid header name")
        );
    }
}

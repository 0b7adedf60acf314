//! The `webhook` type: an HTTP POST of the event data to a URL.
//!
//! One pooled HTTP client serves every webhook destination (keep-alive connections are reused
//! per host). Redirects are never followed — a 3xx is a failed attempt — and every address is
//! checked against the [`TargetPolicy`] after DNS resolution.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use herald_core::Secret;
use herald_core::destination::{
    DeliveryError, Disposition, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use herald_core::retry::{Verdict, classify_http};
use herald_core::secret::mask;
use herald_core::spec::{About, SigningField, Spec};
use http::{HeaderMap, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::DestinationsConfig;
use crate::support::http::{Reply, client as http_client, transport_error};
use crate::target::{Blocked, TargetPolicy};

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
pub struct Webhook {
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
    retry_on_status: Arc<[u16]>,
}

/// `config` of a webhook destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// URL
    ///
    /// The URL that receives events as HTTP POST requests. A password in its userinfo
    /// (`https://user:password@host/`) is sent as Basic authentication, sealed at rest and
    /// masked on read.
    #[schemars(with = "String", regex(pattern = "^https?://.+"))]
    #[serde(deserialize_with = "de_url")]
    pub url: url::Url,
    /// Custom headers
    ///
    /// Extra HTTP headers sent with every request, e.g. {"x-api-key":"…"}. Reserved headers
    /// (Content-Type, Host, …) cannot be set. Values of headers whose name looks like a
    /// credential (Authorization, *-key, *-token, *-secret) are sealed at rest and masked on
    /// read.
    #[serde(default)]
    pub custom_headers: BTreeMap<String, String>,
}

/// `credentials` of a webhook destination: only the signing secret, which is common to every
/// signing type (`secret` here, as in the Outpost contract).
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {}

fn de_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let raw = String::deserialize(d)?;
    url::Url::parse(raw.trim())
        .map_err(|e| serde::de::Error::custom(format!("{raw:?} is not a valid URL: {e}")))
}

impl Webhook {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let client = http_client(
            &policy,
            cfg.proxy.as_ref().map(Secret::expose),
            &cfg.user_agent,
            256,
        )?;
        Ok(Self {
            client,
            policy,
            body_limit: cfg.response_body_limit.max(1),
            retry_on_status: cfg.retry_on_status.clone().into(),
        })
    }
}

const KIND: &str = "webhook";

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M18 16.98h-5.99c-1.1 0-1.95.94-2.48 1.9A4 4 0 0 1 2 17c.01-.7.2-1.4.57-2"/><path d="m6 17 3.13-5.78c.53-.97.1-2.18-.5-3.1a4 4 0 1 1 6.89-4.06"/><path d="m12 6 3.13 5.73C15.66 12.7 16.9 13 18 13a4 4 0 0 1 0 8"/></svg>"#;

/// Whether a custom header carries a credential (its value is masked on read).
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "cookie" | "api-key" | "apikey"
    ) || ["key", "token", "secret", "password", "signature"]
        .iter()
        .any(|s| n.ends_with(&format!("-{s}")) || n.ends_with(&format!("_{s}")))
}

/// Checks `custom_headers` and turns them into a header map, naming the problem.
fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("{k:?} is not a valid header name"))?;
        if RESERVED.contains(&name.as_str()) {
            return Err(format!("header {k:?} is reserved and cannot be overridden"));
        }
        let mut value =
            HeaderValue::from_str(v).map_err(|_| format!("header {k:?} has an invalid value"))?;
        value.set_sensitive(is_credential_header(k));
        out.insert(name, value);
    }
    Ok(out)
}

/// A URL with the password of its userinfo masked; `None` when it has none.
fn redact_url(raw: &str) -> Option<String> {
    let mut u = url::Url::parse(raw).ok()?;
    let pw = u.password()?.to_string();
    u.set_password(Some(&mask(&pw))).ok()?;
    Some(u.to_string())
}

impl Spec for Webhook {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "Webhook",
            description: "Send events as signed HTTP POST requests to a URL.",
            icon: ICON,
            instructions: "Enter the URL of an endpoint that accepts POST requests with a JSON body. \
                Verify each request's signature with the destination's secret and answer with any 2xx status.",
        }
    }

    fn signing(&self) -> Option<SigningField> {
        // The Outpost contract's name for the webhook signing secret.
        Some(SigningField {
            key: "secret",
            generate: true,
        })
    }

    fn tune(&self, spec: &mut TypeSpec) {
        if !self.policy.allow_http
            && let Some(f) = spec.config_fields.iter_mut().find(|f| f.key == "url")
        {
            f.pattern = Some("^https://.+".into());
        }
    }

    fn check(&self, config: &Config, _: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(Blocked(why)) = self.policy.check_url(&config.url) {
            errs.push(FieldError::new("config.url", why));
        }
        if let Err(e) = header_map(&config.custom_headers) {
            errs.push(FieldError::new("config.custom_headers", e));
        }
        errs
    }

    fn build(
        &self,
        _id: &str,
        config: Config,
        _: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        let custom = header_map(&config.custom_headers)
            .map_err(|e| FieldError::new("config.custom_headers", e))?;
        Ok(Arc::new(WebhookDriver {
            url: config.url,
            custom,
            client: self.client.clone(),
            policy: self.policy.clone(),
            body_limit: self.body_limit,
            retry_on_status: self.retry_on_status.clone(),
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        let u = &config.url;
        let host = u
            .host_str()
            .map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
            .unwrap_or_default();
        let link = redact_url(u.as_str()).unwrap_or_else(|| u.to_string());
        (host, Some(link))
    }

    fn redact(&self, key: &str, value: &str) -> Option<String> {
        match key {
            "url" => redact_url(value),
            "custom_headers" => {
                let mut headers: BTreeMap<String, String> = serde_json::from_str(value).ok()?;
                let mut changed = false;
                for (k, v) in headers.iter_mut() {
                    if is_credential_header(k) {
                        *v = mask(v);
                        changed = true;
                    }
                }
                changed.then(|| serde_json::to_string(&headers).unwrap_or_default())
            }
            _ => None,
        }
    }

    fn unredact(&self, key: &str, sent: &str, stored: &str) -> String {
        match key {
            "url" => match (url::Url::parse(sent), url::Url::parse(stored)) {
                (Ok(mut s), Ok(old))
                    if s.password().is_some()
                        && s.password() == old.password().map(mask).as_deref() =>
                {
                    if s.set_password(old.password()).is_ok() {
                        s.to_string()
                    } else {
                        sent.to_string()
                    }
                }
                _ => sent.to_string(),
            },
            "custom_headers" => {
                let (Ok(mut new), Ok(old)) = (
                    serde_json::from_str::<BTreeMap<String, String>>(sent),
                    serde_json::from_str::<BTreeMap<String, String>>(stored),
                ) else {
                    return sent.to_string();
                };
                for (k, v) in new.iter_mut() {
                    if let Some(o) = old.get(k)
                        && is_credential_header(k)
                        && *v == mask(o)
                    {
                        v.clone_from(o);
                    }
                }
                serde_json::to_string(&new).unwrap_or_else(|_| sent.to_string())
            }
            _ => sent.to_string(),
        }
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
        let resp = req
            .body(msg.body.to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let reply = Reply::read(resp, self.body_limit).await;
        let status = reply.status;
        let code = status.to_string();
        match classify_http(status, reply.retry_after, &self.retry_on_status) {
            Verdict::Success => Ok(Receipt {
                code,
                response: Some(reply.log()),
            }),
            Verdict::Retry { after } => Err(reply.error(
                Disposition::Retry { after },
                &code,
                format!("receiver answered HTTP {status}"),
            )),
            Verdict::Permanent if (300..400).contains(&status) => Err(reply.error(
                Disposition::Permanent,
                &code,
                format!("receiver answered HTTP {status}; redirects are not followed"),
            )),
            Verdict::Permanent => Err(reply.error(
                Disposition::Permanent,
                &code,
                format!("receiver answered HTTP {status}; not retried"),
            )),
            Verdict::Gone => Err(reply.error(
                Disposition::Gone,
                &code,
                "receiver answered 410 Gone; the destination is disabled".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn custom_headers_checks() {
        let m = header_map(&headers(&[("x-api-key", "k")])).unwrap();
        assert_eq!(m.get("x-api-key").unwrap(), "k");
        assert!(
            header_map(&headers(&[("Content-Type", "text/plain")]))
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            header_map(&headers(&[("bad header", "v")]))
                .unwrap_err()
                .contains("valid header name")
        );
    }

    #[test]
    fn credential_headers_and_userinfo_are_masked_and_kept() {
        let w = Webhook::new(&DestinationsConfig::default()).unwrap();
        let stored = r#"{"Authorization":"Bearer tok_0123456789","x-trace":"on"}"#;
        let shown = w.redact("custom_headers", stored).unwrap();
        assert!(!shown.contains("tok_0123456789"), "{shown}");
        assert!(shown.contains(r#""x-trace":"on""#));
        // Sent back as shown, the stored secret stays; a changed header is taken.
        assert_eq!(w.unredact("custom_headers", &shown, stored), stored);
        let edited = shown.replace(r#""on""#, r#""off""#);
        let kept = w.unredact("custom_headers", &edited, stored);
        assert!(
            kept.contains("tok_0123456789") && kept.contains("off"),
            "{kept}"
        );
        let url = "https://u:hunter2-secret@example.com/hook";
        let shown = w.redact("url", url).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(w.unredact("url", &shown, url), url);
        assert_eq!(w.redact("url", "https://example.com/"), None);
        assert!(is_credential_header("X-Api-Key"));
        assert!(is_credential_header("x-auth-token"));
        assert!(!is_credential_header("x-trace"));
    }
}

//! HTTP plumbing for every type that speaks HTTP (webhook, AWS, Pub/Sub, Service Bus).

use std::sync::Arc;
use std::time::Duration;

use herald_core::destination::{DeliveryError, Disposition};
use serde_json::{Map, Value, json};

use super::errors::innermost_message;
use crate::target::{Blocked, GuardedResolver, TargetPolicy};

/// A pooled HTTP client: redirects never followed, every resolved address checked against
/// the target policy, the egress proxy when one is configured.
pub fn client(
    policy: &Arc<TargetPolicy>,
    proxy: Option<&str>,
    user_agent: &str,
    max_idle_per_host: usize,
) -> Result<reqwest::Client, String> {
    client_with_tls(
        policy,
        proxy,
        user_agent,
        max_idle_per_host,
        &Tls::default(),
    )
}

/// TLS additions to a client: CAs trusted besides the platform's, a client certificate.
#[derive(Default, Clone)]
pub struct Tls {
    /// Extra trusted CA certificates.
    pub roots: Vec<reqwest::Certificate>,
    /// The client identity presented when the server asks (mTLS).
    pub identity: Option<reqwest::Identity>,
}

/// [`client`] with TLS additions (see [`super::tls`] to build them from PEM).
pub fn client_with_tls(
    policy: &Arc<TargetPolicy>,
    proxy: Option<&str>,
    user_agent: &str,
    max_idle_per_host: usize,
    tls: &Tls,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
        .pool_max_idle_per_host(max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .user_agent(if user_agent.is_empty() {
            "herald"
        } else {
            user_agent
        });
    if !tls.roots.is_empty() {
        b = b.tls_certs_merge(tls.roots.iter().cloned());
    }
    if let Some(id) = &tls.identity {
        b = b.identity(id.clone());
    }
    b = match proxy {
        Some(p) => b.proxy(
            reqwest::Proxy::all(p).map_err(|_| "the egress proxy URL is not valid".to_string())?,
        ),
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

/// Classifies an HTTP transport failure (no response): a refused target is permanent, and so
/// is a handshake the server broke off over the client certificate; a server certificate
/// that is not trusted is retried with a message that says so (`untrusted_certificate`);
/// everything else — connection refused, reset, timeout, DNS — is retried.
pub fn transport_error(e: reqwest::Error) -> DeliveryError {
    if let Some(why) = blocked_in(&e) {
        return DeliveryError::permanent("blocked_target", why);
    }
    match super::tls::failure_in(&e) {
        Some(super::tls::TlsFailure::Refused(alert)) => {
            return DeliveryError::permanent(
                "client_certificate_refused",
                format!(
                    "the receiver refused the TLS client certificate (alert {alert}); check credentials.client_cert and client_key"
                ),
            );
        }
        Some(super::tls::TlsFailure::Untrusted(why)) => {
            return DeliveryError::retry(
                "untrusted_certificate",
                format!(
                    "the receiver's TLS certificate is not trusted ({why}); a private CA can be trusted with config.tls_ca or delivery.tls_ca_file"
                ),
            );
        }
        None => {}
    }
    let code = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection_error"
    } else {
        "network_error"
    };
    DeliveryError::retry(code, innermost_message(&e))
}

/// A response read for classification and the attempt log.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Map<String, Value>,
    /// The body, cut to the configured limit.
    pub body: String,
    /// Whether the body was cut.
    pub truncated: bool,
    /// `Retry-After`, when the server sent one.
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// Reads a response, keeping at most `limit` bytes of its body. A body that breaks off
    /// after the status arrived does not change the verdict: what arrived is kept.
    pub async fn read(mut resp: reqwest::Response, limit: usize) -> Self {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| herald_core::retry::parse_retry_after(v, jiff::Timestamp::now()));
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = limit.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                truncated = true;
                break;
            }
        }
        Self {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            truncated,
            retry_after,
        }
    }

    /// `{status_code, headers, body}` (and `body_truncated`) for the attempt log.
    pub fn log(&self) -> Value {
        let mut v = json!({
            "status_code": self.status,
            "headers": self.headers,
            "body": self.body,
        });
        if self.truncated {
            v["body_truncated"] = Value::Bool(true);
        }
        v
    }

    /// A failed attempt carrying this response.
    pub fn error(&self, disposition: Disposition, code: &str, message: String) -> DeliveryError {
        DeliveryError {
            disposition,
            code: code.to_string(),
            message,
            response: Some(self.log()),
        }
    }

    /// A failed attempt carrying this response: retried (after `Retry-After`, if sent) or
    /// permanent.
    pub fn failure(&self, retry: bool, code: &str, message: String) -> DeliveryError {
        let disposition = if retry {
            Disposition::Retry {
                after: self.retry_after,
            }
        } else {
            Disposition::Permanent
        };
        self.error(disposition, code, message)
    }
}

/// What every HTTP-speaking message-system type holds (AWS, Pub/Sub, Service Bus): the shared
/// pooled client, the target policy its endpoints are checked against, and how much of a
/// response body the attempt log keeps. Built once per type; drivers clone it.
#[derive(Clone)]
pub struct Egress {
    /// The pooled client (see [`client`]).
    pub client: reqwest::Client,
    /// Which addresses may be reached.
    pub policy: Arc<TargetPolicy>,
    /// Bytes of a response body kept for the attempt log (at least 1).
    pub body_limit: usize,
}

impl Egress {
    /// The egress every such type builds from the server's settings.
    pub fn new(cfg: &crate::DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let client = client(
            &policy,
            cfg.proxy.as_ref().map(herald_core::Secret::expose),
            &cfg.user_agent,
            64,
        )?;
        Ok(Self {
            client,
            policy,
            body_limit: cfg.response_body_limit.max(1),
        })
    }
}

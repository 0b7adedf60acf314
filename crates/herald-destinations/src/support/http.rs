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

/// Classifies an HTTP transport failure (no response): a refused target is permanent,
/// everything else — connection refused, reset, timeout, DNS — is retried.
pub fn transport_error(e: reqwest::Error) -> DeliveryError {
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

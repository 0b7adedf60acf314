//! OAuth 2.0 client credentials grant (RFC 6749 §4.4) with one cached token per destination.
//!
//! [`TokenCache::get`] returns the cached access token while it is fresh (until shortly
//! before `expires_in`; a token without `expires_in` is kept until the receiver refuses it)
//! and otherwise fetches one. Concurrent attempts share one fetch: the cache's lock is held
//! while it is in flight. [`TokenCache::refresh`] replaces a token the receiver refused — once,
//! however many attempts saw it refused.
//!
//! Token endpoint failures are classified: no answer, a timeout, `429` or `5xx` are retried
//! (`auth_unavailable`); an OAuth error (`invalid_client`, `invalid_scope`, …) is permanent
//! (`auth_failed`) and its `error_description` goes into the message. The token URL goes
//! through the same client, and so the same target policy, as webhook requests.
//!
//! Not here: other grants, refresh tokens, token introspection.

use std::sync::Arc;
use std::time::Duration;

use herald_core::Secret;
use herald_core::clock::Clock;
use herald_core::destination::DeliveryError;
use http::HeaderValue;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::errors::innermost_message;
use crate::target::{Blocked, TargetPolicy};

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// The grant's parameters.
pub struct Grant {
    /// The token endpoint.
    pub token_url: url::Url,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: Secret,
    /// `scope`, space-separated.
    pub scope: Option<String>,
    /// `audience` (an extension many providers use).
    pub audience: Option<String>,
    /// How the client authenticates.
    pub method: ClientAuthMethod,
}

/// A token handed to an attempt.
pub struct Issued {
    /// `Bearer <token>`, marked sensitive.
    pub header: HeaderValue,
    /// Which fetch it came from (passed back to [`TokenCache::refresh`]).
    pub generation: u64,
    /// Whether this call fetched it (false: it was cached).
    pub fetched: bool,
}

struct Cached {
    header: HeaderValue,
    /// When to stop using it; `None`: until refused.
    renew_at: Option<Timestamp>,
    generation: u64,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    fetches: u64,
}

/// One destination's token and how to get a new one.
pub struct TokenCache {
    grant: Grant,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    clock: Arc<dyn Clock>,
    state: tokio::sync::Mutex<State>,
}

/// The token endpoint's JSON answer (success or error, RFC 6749 §5.1 and §5.2).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenCache {
    /// A cache with no token yet.
    pub fn new(
        grant: Grant,
        client: reqwest::Client,
        policy: Arc<TargetPolicy>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            grant,
            client,
            policy,
            clock,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The client id (for the attempt log).
    pub fn client_id(&self) -> &str {
        &self.grant.client_id
    }

    /// A fresh token: the cached one, or one fetched now (one fetch at a time).
    pub async fn get(&self, timeout: Duration) -> Result<Issued, DeliveryError> {
        let mut st = self.state.lock().await;
        let now = self.clock.now();
        if let Some(t) = &st.token
            && t.renew_at.is_none_or(|at| now < at)
        {
            return Ok(Issued {
                header: t.header.clone(),
                generation: t.generation,
                fetched: false,
            });
        }
        self.fetch_into(&mut st, timeout).await
    }

    /// A token to replace `rejected`, which the receiver refused: fetched unless another
    /// attempt already replaced it.
    pub async fn refresh(&self, rejected: u64, timeout: Duration) -> Result<Issued, DeliveryError> {
        let mut st = self.state.lock().await;
        if let Some(t) = &st.token
            && t.generation != rejected
        {
            return Ok(Issued {
                header: t.header.clone(),
                generation: t.generation,
                fetched: false,
            });
        }
        st.token = None;
        self.fetch_into(&mut st, timeout).await
    }

    async fn fetch_into(&self, st: &mut State, timeout: Duration) -> Result<Issued, DeliveryError> {
        let started = self.clock.now();
        let (token, expires_in) = self.fetch(timeout).await?;
        st.fetches += 1;
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                DeliveryError::permanent(
                    "auth_failed",
                    "the token endpoint returned an access token that cannot be sent in a header",
                )
            })?;
        header.set_sensitive(true);
        // Renew a tenth of the lifetime (at most a minute) early, counted from the request.
        let renew_at = expires_in.map(|secs| {
            let life = SignedDuration::from_secs(secs as i64);
            let margin = SignedDuration::from_millis((secs as i64 * 100).min(60_000));
            started.saturating_add(life - margin).unwrap_or(started)
        });
        st.token = Some(Cached {
            header: header.clone(),
            renew_at,
            generation: st.fetches,
        });
        Ok(Issued {
            header,
            generation: st.fetches,
            fetched: true,
        })
    }

    /// One token request: the token and its `expires_in` in seconds.
    async fn fetch(&self, timeout: Duration) -> Result<(Secret, Option<u64>), DeliveryError> {
        let g = &self.grant;
        if let Err(Blocked(why)) = self.policy.check_url(&g.token_url) {
            return Err(DeliveryError::permanent(
                "blocked_target",
                format!("OAuth2 token URL: {why}"),
            ));
        }
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(s) = g.scope.as_deref().filter(|s| !s.is_empty()) {
                form.append_pair("scope", s);
            }
            if let Some(a) = g.audience.as_deref().filter(|s| !s.is_empty()) {
                form.append_pair("audience", a);
            }
            if g.method == ClientAuthMethod::ClientSecretPost {
                form.append_pair("client_id", &g.client_id);
                form.append_pair("client_secret", g.client_secret.expose());
            }
            Secret::new(form.finish())
        };
        let mut req = self
            .client
            .post(g.token_url.clone())
            .timeout(timeout)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        match g.method {
            ClientAuthMethod::ClientSecretPost => {}
            ClientAuthMethod::ClientSecretBasic => {
                use base64::Engine as _;
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let pair = Secret::new(format!(
                    "{}:{}",
                    enc(&g.client_id),
                    enc(g.client_secret.expose())
                ));
                let b64 =
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(pair.expose()));
                let mut v =
                    HeaderValue::from_str(&format!("Basic {}", b64.expose())).map_err(|_| {
                        DeliveryError::permanent(
                            "auth_failed",
                            "the OAuth2 client credentials cannot be sent in a header",
                        )
                    })?;
                v.set_sensitive(true);
                req = req.header(http::header::AUTHORIZATION, v);
            }
        }
        let resp = req
            .body(body.expose().to_string())
            .send()
            .await
            .map_err(|e| {
                let why = if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    innermost_message(&e)
                };
                match crate::support::http::transport_error(e) {
                    blocked if blocked.code == "blocked_target" => blocked,
                    _ => DeliveryError::retry(
                        "auth_unavailable",
                        format!("OAuth2 token endpoint: {why}"),
                    ),
                }
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let parsed: Option<TokenResponse> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            let Some(TokenResponse {
                access_token: Some(token),
                token_type,
                expires_in,
                ..
            }) = parsed
            else {
                return Err(DeliveryError::retry(
                    "auth_unavailable",
                    format!("OAuth2 token endpoint answered HTTP {status} without an access_token"),
                ));
            };
            if let Some(t) = token_type
                && !t.eq_ignore_ascii_case("bearer")
            {
                return Err(DeliveryError::permanent(
                    "auth_failed",
                    format!(
                        "OAuth2 token endpoint issued a {t:?} token; only bearer tokens are supported"
                    ),
                ));
            }
            let expires_in = expires_in.and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            });
            return Ok((Secret::new(token), expires_in));
        }
        let oauth_error = parsed.as_ref().and_then(|p| p.error.clone());
        let described = match (
            &oauth_error,
            parsed.as_ref().and_then(|p| p.error_description.clone()),
        ) {
            (Some(e), Some(d)) if !d.is_empty() => format!("{e}: {d}"),
            (Some(e), _) => e.clone(),
            (None, _) => String::new(),
        };
        if status == 429 || status >= 500 || (oauth_error.is_none() && status == 408) {
            return Err(DeliveryError::retry(
                "auth_unavailable",
                format!("OAuth2 token endpoint answered HTTP {status} {described}")
                    .trim_end()
                    .to_string(),
            ));
        }
        Err(DeliveryError::permanent(
            "auth_failed",
            if described.is_empty() {
                format!("OAuth2 token endpoint refused the client credentials (HTTP {status})")
            } else {
                format!(
                    "OAuth2 token endpoint refused the client credentials (HTTP {status}): {described}"
                )
            },
        ))
    }
}

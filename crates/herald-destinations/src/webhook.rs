//! The `webhook` type: an HTTP POST of the event data to a URL.
//!
//! One pooled HTTP client serves every webhook destination (keep-alive connections are reused
//! per host). Redirects are never followed — a 3xx is a failed attempt — and every address is
//! checked against the [`TargetPolicy`] after DNS resolution.
//!
//! Endpoint authentication (`credentials.auth_type`): `bearer` and `basic` send their header on
//! every request; `digest` answers the receiver's challenge, kept per destination (see
//! [`crate::support::digest`]); `oauth2_client_credentials` sends a cached token (see
//! [`crate::support::oauth2`]). A client certificate (`client_cert`, `client_key`) and a
//! private CA (`config.tls_ca`) give the destination its own HTTP client; the others share
//! one. Every request carries `Idempotency-Key: <delivery id>`, the
//! same for every attempt of one delivery. The attempt log records which authentication was
//! used (`response_data.auth`), never a secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use herald_core::Secret;
use herald_core::clock::{Clock, SystemClock};
use herald_core::destination::{
    DeliveryError, Disposition, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use herald_core::retry::{Verdict, classify_http};
use herald_core::secret::mask;
use herald_core::spec::{About, SigningField, Spec};
use http::{HeaderMap, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::DestinationsConfig;
use crate::support::digest::{ChallengeError, DigestSession, pick_challenge};
use crate::support::http::{Reply, Tls, client_with_tls, transport_error};
use crate::support::oauth2::{ClientAuthMethod, Grant, TokenCache};
use crate::support::tls::{self, IdentityError};
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
    "idempotency-key",
];

/// Prefixes of headers Herald sends itself (Standard Webhooks' `webhook-*`, the topic,
/// metadata and signature headers of both signing modes): `custom_headers` may not set them.
const RESERVED_PREFIXES: &[&str] = &["webhook-", "x-herald-", "x-outpost-"];

/// Most `custom_headers` entries.
const MAX_CUSTOM_HEADERS: usize = 50;
/// Most bytes of `custom_headers` names and values together.
const MAX_CUSTOM_HEADER_BYTES: usize = 8 * 1024;

/// The header carrying the delivery id (stable across the retries of one delivery).
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The webhook destination type.
pub struct Webhook {
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
    retry_on_status: Arc<[u16]>,
    /// Decides when a cached OAuth2 token is renewed.
    clock: Arc<dyn Clock>,
    /// For destinations with their own client (mTLS, a private CA).
    proxy: Option<Secret>,
    user_agent: String,
    /// CAs trusted by every destination (`delivery.tls_ca_file`).
    server_roots: Vec<reqwest::Certificate>,
}

/// `config` of a webhook destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// URL
    ///
    /// The URL that receives events as HTTP POST requests. A password in its userinfo
    /// (`https://user:password@host/`) is sent as Basic authentication, sealed at rest and
    /// masked on read.
    #[schemars(with = "String", regex(pattern = "^https?://.+"), extend("x-herald-target" = true))]
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
    /// Trusted CA
    ///
    /// Herald extension: PEM of the CA certificate(s) that issued the receiver's TLS
    /// certificate, trusted for this destination besides the system's (a private CA).
    pub tls_ca: Option<String>,
}

/// How Herald authenticates to the receiving endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// No endpoint authentication (the signature still proves the sender).
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// HTTP Basic (RFC 7617).
    Basic,
    /// HTTP Digest (RFC 7616 / RFC 2617).
    Digest,
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4); the token is sent as Bearer.
    Oauth2ClientCredentials,
}

impl AuthType {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::Digest => "digest",
            Self::Oauth2ClientCredentials => "oauth2_client_credentials",
        }
    }
}

/// `credentials` of a webhook destination. The signing secret (`secret`, as in the Outpost
/// contract) is common to every signing type and not listed here.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Authentication
    ///
    /// Herald extension: how Herald authenticates to the endpoint. none; bearer (token);
    /// basic or digest (username, password); oauth2_client_credentials (oauth2_token_url,
    /// client_id, client_secret, optionally oauth2_scope, oauth2_audience,
    /// oauth2_auth_method).
    #[serde(default)]
    pub auth_type: AuthType,
    /// Bearer token
    ///
    /// Herald extension, auth_type bearer: sent as `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// Username
    ///
    /// Herald extension, auth_type basic or digest: the user name.
    pub username: Option<String>,
    /// Password
    ///
    /// Herald extension, auth_type basic or digest: the password.
    pub password: Option<Secret>,
    /// OAuth2 token URL
    ///
    /// Herald extension, auth_type oauth2_client_credentials: the token endpoint (https, also
    /// http with --dev; the target policy applies).
    #[schemars(extend("x-herald-target" = true))]
    pub oauth2_token_url: Option<String>,
    /// OAuth2 client id
    ///
    /// Herald extension, auth_type oauth2_client_credentials.
    pub client_id: Option<String>,
    /// OAuth2 client secret
    ///
    /// Herald extension, auth_type oauth2_client_credentials.
    pub client_secret: Option<Secret>,
    /// OAuth2 scope
    ///
    /// Herald extension, auth_type oauth2_client_credentials: space-separated scopes to ask
    /// for.
    pub oauth2_scope: Option<String>,
    /// OAuth2 audience
    ///
    /// Herald extension, auth_type oauth2_client_credentials: the `audience` parameter some
    /// providers require.
    pub oauth2_audience: Option<String>,
    /// OAuth2 client authentication
    ///
    /// Herald extension, auth_type oauth2_client_credentials: client_secret_basic (default)
    /// or client_secret_post.
    pub oauth2_auth_method: Option<ClientAuthMethod>,
    /// Client certificate
    ///
    /// Herald extension, mutual TLS with any auth_type: PEM of the certificate (and chain)
    /// presented to the receiver; needs client_key.
    pub client_cert: Option<String>,
    /// Client key
    ///
    /// Herald extension, mutual TLS: PEM of client_cert's private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub client_key: Option<Secret>,
}

const OAUTH2: &[AuthType] = &[AuthType::Oauth2ClientCredentials];

/// Which credential fields each `auth_type` uses, and whether it needs them (the fields of
/// other types must be empty).
const AUTH_FIELDS: &[(&str, &[AuthType], bool)] = &[
    ("token", &[AuthType::Bearer], true),
    ("username", &[AuthType::Basic, AuthType::Digest], true),
    ("password", &[AuthType::Basic, AuthType::Digest], true),
    ("oauth2_token_url", OAUTH2, true),
    ("client_id", OAUTH2, true),
    ("client_secret", OAUTH2, true),
    ("oauth2_scope", OAUTH2, false),
    ("oauth2_audience", OAUTH2, false),
    ("oauth2_auth_method", OAUTH2, false),
];

impl Credentials {
    fn is_set(&self, field: &str) -> bool {
        let text = |v: &Option<String>| v.as_ref().is_some_and(|s| !s.trim().is_empty());
        let secret = |v: &Option<Secret>| v.as_ref().is_some_and(|s| !s.is_empty());
        match field {
            "token" => secret(&self.token),
            "username" => text(&self.username),
            "password" => secret(&self.password),
            "oauth2_token_url" => text(&self.oauth2_token_url),
            "client_id" => text(&self.client_id),
            "client_secret" => secret(&self.client_secret),
            "oauth2_scope" => text(&self.oauth2_scope),
            "oauth2_audience" => text(&self.oauth2_audience),
            "oauth2_auth_method" => self.oauth2_auth_method.is_some(),
            _ => false,
        }
    }

    /// The token URL, parsed.
    fn token_url(&self) -> Result<url::Url, FieldError> {
        let raw = self.oauth2_token_url.as_deref().unwrap_or_default().trim();
        url::Url::parse(raw).map_err(|e| {
            FieldError::new(
                "credentials.oauth2_token_url",
                format!("{raw:?} is not a valid URL: {e}"),
            )
        })
    }

    /// Missing and stray fields for the chosen `auth_type`, and values that cannot be sent.
    fn check(&self, policy: &TargetPolicy) -> Vec<FieldError> {
        let t = self.auth_type;
        let mut errs = Vec::new();
        for (field, used_by, needed) in AUTH_FIELDS {
            let name = format!("credentials.{field}");
            match (used_by.contains(&t), self.is_set(field)) {
                (true, false) if *needed => errs.push(FieldError::new(
                    name,
                    format!("is required when auth_type is {}", t.as_str()),
                )),
                (false, true) => errs.push(FieldError::new(
                    name,
                    format!(
                        "is only used with auth_type {}; set auth_type or remove this field",
                        used_by
                            .iter()
                            .map(|a| a.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                )),
                _ => {}
            }
        }
        if let Some(tok) = &self.token
            && t == AuthType::Bearer
            && !tok.expose().bytes().all(|b| b.is_ascii_graphic())
        {
            errs.push(FieldError::new(
                "credentials.token",
                "must be printable ASCII without spaces",
            ));
        }
        if let Some(u) = &self.username {
            if t == AuthType::Basic && u.contains(':') {
                errs.push(FieldError::new(
                    "credentials.username",
                    "must not contain ':' (HTTP Basic separates user and password with it)",
                ));
            }
            if u.chars().any(char::is_control) {
                errs.push(FieldError::new(
                    "credentials.username",
                    "must not contain control characters",
                ));
            }
        }
        if let Some(p) = &self.password
            && p.expose().chars().any(char::is_control)
        {
            errs.push(FieldError::new(
                "credentials.password",
                "must not contain control characters",
            ));
        }
        match (
            self.client_cert.as_deref().filter(|c| !c.trim().is_empty()),
            self.client_key.as_ref().filter(|k| !k.is_empty()),
        ) {
            (Some(_), None) => errs.push(FieldError::new(
                "credentials.client_key",
                "is required with client_cert",
            )),
            (None, Some(_)) => errs.push(FieldError::new(
                "credentials.client_cert",
                "is required with client_key",
            )),
            (Some(cert), Some(key)) => match tls::client_identity(cert, key.expose()) {
                Ok(_) => {}
                Err(IdentityError::Certificate(why)) => {
                    errs.push(FieldError::new("credentials.client_cert", why))
                }
                Err(IdentityError::Key(why)) => {
                    errs.push(FieldError::new("credentials.client_key", why))
                }
            },
            (None, None) => {}
        }
        if t == AuthType::Oauth2ClientCredentials && self.is_set("oauth2_token_url") {
            match self.token_url() {
                Err(e) => errs.push(e),
                Ok(u) => {
                    if let Err(Blocked(why)) = policy.check_url(&u) {
                        errs.push(FieldError::new("credentials.oauth2_token_url", why));
                    }
                }
            }
        }
        errs
    }
}

fn de_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let raw = String::deserialize(d)?;
    url::Url::parse(raw.trim())
        .map_err(|e| serde::de::Error::custom(format!("{raw:?} is not a valid URL: {e}")))
}

impl Webhook {
    /// Builds the type with its shared HTTP client.
    pub fn new(cfg: &DestinationsConfig) -> Result<Self, String> {
        let policy = Arc::new(cfg.target_policy.clone());
        let server_roots = match cfg.tls_ca.as_deref() {
            Some(pem) => {
                tls::ca_certificates(pem).map_err(|why| format!("delivery.tls_ca_file {why}"))?
            }
            None => Vec::new(),
        };
        let shared = Tls {
            roots: server_roots.clone(),
            identity: None,
        };
        let client = client_with_tls(
            &policy,
            cfg.proxy.as_ref().map(Secret::expose),
            &cfg.user_agent,
            256,
            &shared,
        )?;
        Ok(Self {
            client,
            policy,
            body_limit: cfg.response_body_limit.max(1),
            retry_on_status: cfg.retry_on_status.clone().into(),
            clock: Arc::new(SystemClock),
            proxy: cfg.proxy.clone(),
            user_agent: cfg.user_agent.clone(),
            server_roots,
        })
    }

    /// The client for one destination: the shared one, or its own when it presents a client
    /// certificate or trusts a private CA.
    fn client_for(
        &self,
        config: &Config,
        credentials: &Credentials,
    ) -> Result<(reqwest::Client, bool), FieldError> {
        let ca = config.tls_ca.as_deref().filter(|c| !c.trim().is_empty());
        let identity = match (
            credentials
                .client_cert
                .as_deref()
                .filter(|c| !c.trim().is_empty()),
            credentials.client_key.as_ref().filter(|k| !k.is_empty()),
        ) {
            (Some(cert), Some(key)) => Some(tls::client_identity(cert, key.expose()).map_err(
                |e| match e {
                    IdentityError::Certificate(why) => {
                        FieldError::new("credentials.client_cert", why)
                    }
                    IdentityError::Key(why) => FieldError::new("credentials.client_key", why),
                },
            )?),
            _ => None,
        };
        if ca.is_none() && identity.is_none() {
            return Ok((self.client.clone(), false));
        }
        let mut roots = self.server_roots.clone();
        if let Some(ca) = ca {
            roots.extend(
                tls::ca_certificates(ca).map_err(|why| FieldError::new("config.tls_ca", why))?,
            );
        }
        let mtls = identity.is_some();
        let client = client_with_tls(
            &self.policy,
            self.proxy.as_ref().map(Secret::expose),
            &self.user_agent,
            8,
            &Tls { roots, identity },
        )
        .map_err(|why| FieldError::new("credentials.client_cert", why))?;
        Ok((client, mtls))
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
    if headers.len() > MAX_CUSTOM_HEADERS {
        return Err(format!(
            "{} headers; at most {MAX_CUSTOM_HEADERS} are allowed",
            headers.len()
        ));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_CUSTOM_HEADER_BYTES {
        return Err(format!(
            "{bytes} bytes of names and values; at most {MAX_CUSTOM_HEADER_BYTES} are allowed"
        ));
    }
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("{k:?} is not a valid header name"))?;
        if RESERVED.contains(&name.as_str())
            || RESERVED_PREFIXES
                .iter()
                .any(|p| name.as_str().starts_with(p))
        {
            return Err(format!(
                "header {k:?} is reserved: Herald sends it itself and it cannot be overridden"
            ));
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
        if !self.policy.allow_http {
            let urls = spec
                .config_fields
                .iter_mut()
                .chain(&mut spec.credential_fields);
            for f in urls.filter(|f| f.key == "url" || f.key == "oauth2_token_url") {
                f.pattern = Some("^https://.+".into());
            }
        }
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(Blocked(why)) = self.policy.check_url(&config.url) {
            errs.push(FieldError::new("config.url", why));
        }
        if let Err(e) = header_map(&config.custom_headers) {
            errs.push(FieldError::new("config.custom_headers", e));
        }
        errs.extend(credentials.check(&self.policy));
        if let Some(ca) = config.tls_ca.as_deref().filter(|c| !c.trim().is_empty())
            && let Err(why) = tls::ca_certificates(ca)
        {
            errs.push(FieldError::new("config.tls_ca", why));
        }
        if credentials.auth_type != AuthType::None {
            if config.url.password().is_some() || !config.url.username().is_empty() {
                errs.push(FieldError::new(
                    "config.url",
                    "must not carry user:password when credentials.auth_type is set",
                ));
            }
            if config
                .custom_headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("authorization"))
            {
                errs.push(FieldError::new(
                    "config.custom_headers",
                    "must not set Authorization when credentials.auth_type is set",
                ));
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
        let custom = header_map(&config.custom_headers)
            .map_err(|e| FieldError::new("config.custom_headers", e))?;
        let (client, mtls) = self.client_for(&config, &credentials)?;
        let auth = Auth::build(credentials, self, &client)?;
        Ok(Arc::new(WebhookDriver {
            url: config.url,
            custom,
            auth,
            mtls,
            client,
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

/// The endpoint authentication of one destination, ready to use.
enum Auth {
    None,
    /// The `Authorization` value (marked sensitive).
    Bearer(HeaderValue),
    /// The user (for the attempt log) and the `Authorization` value.
    Basic(String, HeaderValue),
    Digest(DigestSession),
    OAuth2(TokenCache),
}

fn sensitive(value: &str, field: &str) -> Result<HeaderValue, FieldError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| FieldError::new(field, "cannot be sent in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Auth {
    /// `client` is the destination's (its CA and certificate apply to the token endpoint too).
    fn build(c: Credentials, w: &Webhook, client: &reqwest::Client) -> Result<Self, FieldError> {
        use base64::Engine as _;
        let required = |f: &str| {
            FieldError::new(
                format!("credentials.{f}"),
                format!("is required when auth_type is {}", c.auth_type.as_str()),
            )
        };
        Ok(match c.auth_type {
            AuthType::None => Self::None,
            AuthType::Bearer => {
                let token = c.token.as_ref().ok_or_else(|| required("token"))?;
                Self::Bearer(sensitive(
                    &format!("Bearer {}", token.expose()),
                    "credentials.token",
                )?)
            }
            AuthType::Basic => {
                let user = c.username.clone().ok_or_else(|| required("username"))?;
                let pass = c.password.as_ref().ok_or_else(|| required("password"))?;
                let raw = Secret::new(format!("{user}:{}", pass.expose()));
                let encoded =
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(raw.expose()));
                let header = sensitive(
                    &format!("Basic {}", encoded.expose()),
                    "credentials.password",
                )?;
                Self::Basic(user, header)
            }
            AuthType::Digest => {
                let user = c.username.clone().ok_or_else(|| required("username"))?;
                let pass = c.password.clone().ok_or_else(|| required("password"))?;
                Self::Digest(DigestSession::new(user, pass))
            }
            AuthType::Oauth2ClientCredentials => {
                let grant = Grant {
                    token_url: c.token_url()?,
                    client_id: c.client_id.clone().ok_or_else(|| required("client_id"))?,
                    client_secret: c
                        .client_secret
                        .clone()
                        .ok_or_else(|| required("client_secret"))?,
                    scope: c.oauth2_scope.clone(),
                    audience: c.oauth2_audience.clone(),
                    method: c.oauth2_auth_method.unwrap_or_default(),
                };
                Self::OAuth2(TokenCache::new(
                    grant,
                    client.clone(),
                    w.policy.clone(),
                    w.clock.clone(),
                ))
            }
        })
    }

    /// What the attempt log says about the authentication (never a secret).
    fn log(&self) -> Value {
        match self {
            Self::None => json!({"type": "none"}),
            Self::Bearer(_) => json!({"type": "bearer"}),
            Self::Basic(user, _) => json!({"type": "basic", "username": user}),
            Self::Digest(s) => json!({"type": "digest", "username": s.username()}),
            Self::OAuth2(t) => {
                json!({"type": "oauth2_client_credentials", "client_id": t.client_id()})
            }
        }
    }
}

struct WebhookDriver {
    url: url::Url,
    custom: HeaderMap,
    auth: Auth,
    /// Whether a client certificate is presented.
    mtls: bool,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    body_limit: usize,
    retry_on_status: Arc<[u16]>,
}

/// A response and its `WWW-Authenticate` values (the attempt log's header map keeps one
/// value per name).
struct Answer {
    reply: Reply,
    challenges: Vec<String>,
}

/// The request target as Digest signs it: path and query.
fn request_uri(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

impl WebhookDriver {
    /// Sends the message once, with `authorization` when given.
    async fn send(
        &self,
        msg: &OutboundMessage,
        authorization: Option<HeaderValue>,
    ) -> Result<Answer, DeliveryError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(msg.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .headers(self.custom.clone());
        for (k, v) in &msg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header(IDEMPOTENCY_KEY, msg.delivery_id.as_str());
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let resp = req
            .body(msg.body.to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let challenges = resp
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let reply = Reply::read(resp, self.body_limit).await;
        Ok(Answer { reply, challenges })
    }

    /// One exchange with the receiver, authenticating as configured; `log` gathers what the
    /// attempt log records about it.
    async fn exchange(
        &self,
        msg: &OutboundMessage,
        log: &mut Value,
    ) -> Result<Reply, DeliveryError> {
        match &self.auth {
            Auth::None => Ok(self.send(msg, None).await?.reply),
            Auth::Bearer(h) | Auth::Basic(_, h) => Ok(self.send(msg, Some(h.clone())).await?.reply),
            Auth::Digest(session) => self.digest(session, msg, log).await,
            Auth::OAuth2(cache) => self.oauth2(cache, msg, log).await,
        }
    }

    /// OAuth2: send the cached (or a newly fetched) token; on a `401`, replace the token once
    /// and send again. A `401` to a new token means the receiver does not accept this client.
    async fn oauth2(
        &self,
        cache: &TokenCache,
        msg: &OutboundMessage,
        log: &mut Value,
    ) -> Result<Reply, DeliveryError> {
        let issued = cache.get(msg.timeout).await?;
        log["token"] = json!(if issued.fetched { "fetched" } else { "cached" });
        let answer = self.send(msg, Some(issued.header)).await?;
        if answer.reply.status != 401 {
            return Ok(answer.reply);
        }
        let renewed = cache.refresh(issued.generation, msg.timeout).await?;
        log["refreshed"] = json!(true);
        let answer = self.send(msg, Some(renewed.header)).await?;
        if answer.reply.status == 401 {
            return Err(answer.reply.error(
                Disposition::Permanent,
                "auth_failed",
                "receiver refused a newly issued OAuth2 token (HTTP 401)".into(),
            ));
        }
        Ok(answer.reply)
    }

    /// Digest: answer the cached challenge; on a `401` with a new or stale challenge, take it
    /// and send once more. A `401` to a fresh challenge means the credentials are wrong.
    async fn digest(
        &self,
        session: &DigestSession,
        msg: &OutboundMessage,
        log: &mut Value,
    ) -> Result<Reply, DeliveryError> {
        let uri = request_uri(&self.url);
        let mut auth = session.authorize("POST", &uri);
        // Without a cached challenge, one attempt at a time asks for one.
        let mut probe = None;
        if auth.is_none() {
            let guard = session.probe().await;
            auth = session.authorize("POST", &uri);
            if auth.is_none() {
                probe = Some(guard);
            }
        }
        let mut challenged = false;
        loop {
            let header = match &auth {
                Some(a) => {
                    log["algorithm"] = json!(a.algorithm.name());
                    log["nc"] = json!(a.nc);
                    Some(
                        sensitive(&a.header, "credentials.password")
                            .map_err(|e| DeliveryError::permanent("auth_failed", e.problem))?,
                    )
                }
                None => None,
            };
            let answer = self.send(msg, header).await?;
            if answer.reply.status != 401 {
                return Ok(answer.reply);
            }
            let refused = |why: String| {
                answer
                    .reply
                    .error(Disposition::Permanent, "auth_failed", why)
            };
            let challenge = match pick_challenge(answer.challenges.iter().map(String::as_str)) {
                Ok(c) => c,
                Err(ChallengeError::NotDigest) => {
                    return Err(refused(
                        "receiver answered HTTP 401 without a Digest challenge".into(),
                    ));
                }
                Err(ChallengeError::Unsupported(why)) => return Err(refused(why)),
            };
            let renewed = auth
                .as_ref()
                .is_none_or(|a| challenge.stale || a.nonce != challenge.nonce);
            if challenged || !renewed {
                session.clear();
                return Err(refused(format!(
                    "receiver refused the digest credentials of user {:?} (HTTP 401)",
                    session.username()
                )));
            }
            challenged = true;
            log["challenged"] = json!(true);
            session.set_challenge(challenge);
            drop(probe.take());
            auth = session.authorize("POST", &uri);
        }
    }

    // `DeliveryError` is what `Driver::deliver` returns; boxing it here would only unbox it.
    #[allow(clippy::result_large_err)]
    fn classify(&self, reply: Reply) -> Result<Receipt, DeliveryError> {
        let status = reply.status;
        let code = status.to_string();
        if tls::is_refused_certificate_page(status, &reply.body) {
            let why = if self.mtls {
                "the receiver refused the TLS client certificate (HTTP 400); check credentials.client_cert and client_key"
            } else {
                "the receiver requires a TLS client certificate (HTTP 400); set credentials.client_cert and client_key"
            };
            return Err(reply.error(
                Disposition::Permanent,
                "client_certificate_refused",
                why.into(),
            ));
        }
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
            Verdict::Permanent if status == 401 && !matches!(self.auth, Auth::None) => Err(reply
                .error(
                    Disposition::Permanent,
                    &code,
                    format!(
                        "receiver answered HTTP 401: it refused the {} credentials; not retried",
                        self.auth.log()["type"].as_str().unwrap_or("configured")
                    ),
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

/// Adds the authentication record to an attempt's response details.
fn attach(response: &mut Option<Value>, auth: Value) {
    match response {
        Some(Value::Object(m)) => {
            m.insert("auth".into(), auth);
        }
        _ => *response = Some(json!({ "auth": auth })),
    }
}

#[async_trait]
impl Driver for WebhookDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        if let Err(Blocked(why)) = self.policy.check_url(&self.url) {
            return Err(DeliveryError::permanent("blocked_target", why));
        }
        let mut log = self.auth.log();
        if self.mtls {
            log["client_certificate"] = json!(true);
        }
        let result = match self.exchange(msg, &mut log).await {
            Ok(reply) => self.classify(reply),
            Err(e) => Err(e),
        };
        match result {
            Ok(mut r) => {
                attach(&mut r.response, log);
                Ok(r)
            }
            Err(mut e) => {
                attach(&mut e.response, log);
                Err(e)
            }
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
    fn custom_headers_may_not_set_heralds_headers_and_are_capped() {
        for name in ["webhook-signature", "X-Herald-Topic", "x-outpost-event-id"] {
            assert!(
                header_map(&headers(&[(name, "v")]))
                    .unwrap_err()
                    .contains("reserved"),
                "{name}"
            );
        }
        let many: BTreeMap<String, String> = (0..51)
            .map(|i| (format!("x-h{i}"), "v".to_string()))
            .collect();
        assert!(header_map(&many).unwrap_err().contains("at most 50"));
        let big = headers(&[("x-big", &"v".repeat(8200))]);
        assert!(header_map(&big).unwrap_err().contains("at most 8192"));
        let fifty: BTreeMap<String, String> = (0..50)
            .map(|i| (format!("x-h{i}"), "v".to_string()))
            .collect();
        assert!(header_map(&fifty).is_ok());
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

    #[test]
    fn served_schema_types_the_auth_fields() {
        use herald_core::destination::DestinationType;
        let t = herald_core::spec::Typed::new(
            Webhook::new(&DestinationsConfig::default()).unwrap(),
            true,
        );
        let spec = t.spec();
        let field = |k: &str| {
            spec.credential_fields
                .iter()
                .chain(&spec.config_fields)
                .find(|f| f.key == k)
                .unwrap_or_else(|| panic!("{k} is not served"))
        };
        let auth = field("auth_type");
        assert_eq!(auth.kind, "select", "{auth:?}");
        let values: Vec<_> = auth.options.iter().map(|o| o.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "none",
                "bearer",
                "basic",
                "digest",
                "oauth2_client_credentials"
            ]
        );
        assert_eq!(auth.default.as_deref(), Some("none"));
        assert_eq!(field("oauth2_auth_method").kind, "select");
        assert_eq!(field("signature_encoding").kind, "select");
        for k in ["token", "password", "client_secret", "client_key"] {
            assert!(field(k).sensitive, "{k} must be sensitive");
        }
        for k in [
            "username",
            "client_id",
            "client_cert",
            "oauth2_token_url",
            "tls_ca",
        ] {
            assert!(!field(k).sensitive && !field(k).required, "{k}");
        }
    }
}

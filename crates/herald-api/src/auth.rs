//! Who is calling: the operator with the admin API key, a scoped API key, or one tenant with
//! a JWT from `GET /tenants/{id}/token`.
//!
//! Tenant tokens are compact JWS tokens signed with HS256 (RFC 7519), written here with
//! `hmac` + `sha2` + `base64` rather than a JWT crate: Herald issues exactly one kind of token
//! and accepts exactly one algorithm, so the whole format fits on a page and no `alg`
//! confusion is possible. Claims: `iss` (`"herald"`; `"outpost"` is accepted too, so tokens
//! minted by tools that follow the Outpost contract keep working), `sub` (the tenant id),
//! `iat`, `exp` (24 hours after `iat`), and Herald's `gen`: the tenant's token generation
//! ([`herald_core::Tenant::token_generation`]) when the token was issued. A token whose `gen`
//! is not the tenant's current one is refused, so deleting and re-creating a tenant, or
//! `POST /tenants/{id}/tokens/revoke`, ends every token issued before. A token without `gen`
//! (minted by an Outpost-contract tool with the shared secret) is accepted only when it was
//! issued (`iat`) in or after the second of the tenant's current generation.
//!
//! Authorisation rules that are the same for every route live here too: a tenant token
//! may only name its own tenant in a path (403 otherwise), and a token whose tenant has been
//! deleted is stale (401), as in Outpost. Scoped API keys ([`crate::keys`]) are checked
//! against [`required_scope`], one table for every route; a key bound to a tenant is confined
//! to it like a tenant token.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::Method;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::SharedState;
use crate::error::ApiError;

/// How long a tenant token is valid.
pub const TOKEN_TTL_SECS: i64 = 24 * 3600;

/// Issuer written into new tokens.
pub const ISSUER: &str = "herald";

/// Issuers accepted on incoming tokens.
const ACCEPTED_ISSUERS: [&str; 2] = [ISSUER, "outpost"];

/// A permission an API key can hold. A route needs exactly one ([`required_scope`]); `admin`
/// covers every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything, including API keys, tenants, tokens and portal links.
    Admin,
    /// `POST /publish` and `POST /publish/batch`.
    Publish,
    /// Every `GET` (and asking for a CSV download link).
    Read,
    /// Changes to destinations: create, update, delete, enable, disable, renew, secret
    /// rotation, retry, replay, test events, CSV upload links.
    DestinationsWrite,
    /// The Prometheus endpoint `/metrics`.
    Metrics,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 5] = [
        Scope::Admin,
        Scope::Publish,
        Scope::Read,
        Scope::DestinationsWrite,
        Scope::Metrics,
    ];

    /// The wire name (`destinations:write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::DestinationsWrite => "destinations:write",
            Scope::Metrics => "metrics",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An authenticated scoped API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrincipal {
    /// The key's id.
    pub id: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// The only tenant it may act on, when set.
    pub tenant_id: Option<String>,
}

impl KeyPrincipal {
    /// Whether the key holds `scope` (or `admin`).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator (the bootstrap admin API key): may do everything.
    Admin,
    /// A tenant (JWT): may only touch its own resources and may not publish.
    Tenant(String),
    /// A scoped API key (`POST /api-keys`).
    Key(KeyPrincipal),
}

impl Caller {
    /// The tenant the caller is confined to: a tenant token's, or a tenant-bound key's.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(t) => Some(t),
            Caller::Key(k) => k.tenant_id.as_deref(),
        }
    }

    /// Whether the caller has the operator's powers: the bootstrap admin key, or a key with
    /// the `admin` scope that is not bound to a tenant (a tenant-bound key acts like a tenant
    /// token whatever its scopes).
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Tenant(_) => false,
            Caller::Key(k) => k.tenant_id.is_none() && k.scopes.contains(&Scope::Admin),
        }
    }

    /// Whether the caller holds `scope`. A tenant token holds `read` and
    /// `destinations:write` on its own tenant.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Tenant(_) => matches!(scope, Scope::Read | Scope::DestinationsWrite),
            Caller::Key(k) => k.has(scope),
        }
    }

    /// 403 unless the caller is the admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else if let Caller::Key(k) = self
            && !k.has(Scope::Admin)
        {
            Err(missing_scope(Scope::Admin))
        } else {
            Err(ApiError::forbidden(
                "this endpoint requires the admin API key (or an API key with the admin scope and no tenant)",
            ))
        }
    }

    /// 403 when a tenant token (or tenant-bound key) names another tenant in the path.
    pub fn check_tenant(&self, tenant_id: &str) -> Result<(), ApiError> {
        match self.tenant() {
            Some(own) if own != tenant_id => Err(ApiError::forbidden(match self {
                Caller::Key(_) => "this API key is bound to another tenant",
                _ => "this token is scoped to another tenant",
            })),
            _ => Ok(()),
        }
    }
}

/// The 403 for a key without the scope a route needs.
pub fn missing_scope(scope: Scope) -> ApiError {
    ApiError::forbidden(format!(
        "this API key lacks the {:?} scope needed for this request",
        scope.as_str()
    ))
    .with_data(serde_json::json!({ "required_scope": scope.as_str() }))
}

/// The scope a request needs, from its method and route template (the path as registered,
/// without the `/api/v1` prefix, e.g. `/tenants/{tenant_id}/destinations`). One table for
/// every route, so what a key may do can be read here and is tested route by route.
pub fn required_scope(method: &Method, route: &str) -> Scope {
    let route = route.strip_prefix("/api/v1").unwrap_or(route);
    if route.starts_with("/api-keys")
        || route.starts_with("/operator-events")
        || route == "/tenants/{tenant_id}/token"
        || route == "/tenants/{tenant_id}/tokens/revoke"
        || route == "/tenants/{tenant_id}/portal"
    {
        return Scope::Admin;
    }
    if route == "/metrics" {
        return Scope::Metrics;
    }
    if route == "/publish" || route == "/publish/batch" {
        return Scope::Publish;
    }
    if route == "/tenants/{tenant_id}/webhook-templates/download-url" {
        return Scope::Read;
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Scope::Read;
    }
    if route == "/tenants/{tenant_id}" {
        // Creating, changing and deleting tenants is the operator's.
        return Scope::Admin;
    }
    Scope::DestinationsWrite
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let caller = state.auth.authenticate(&parts.headers).await?;
        if let Caller::Key(k) = &caller {
            let route = parts
                .extensions
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| parts.uri.path().to_string());
            let needed = required_scope(&parts.method, &route);
            if !k.has(needed) {
                return Err(missing_scope(needed));
            }
        }
        Ok(caller)
    }
}

/// Whether a verified token belongs to `tenant`'s current token generation (module docs).
pub fn current_generation(claims: &Claims, tenant: &herald_core::Tenant) -> bool {
    let generation = tenant.token_generation();
    match claims.generation {
        Some(g) => g == generation,
        None => claims.iat >= generation.div_euclid(1_000_000),
    }
}

/// Verifies a tenant token, that its tenant still exists and that the token belongs to the
/// tenant's current generation ([`current_generation`]).
pub(crate) async fn tenant_from_jwt(
    jwt_secret: &[u8],
    store: &dyn herald_store::Store,
    token: &str,
    now: Timestamp,
) -> Result<Caller, ApiError> {
    let claims = verify(jwt_secret, token, now).map_err(|_| ApiError::unauthorized())?;
    // A token outlives nothing: once its tenant is deleted (even if created again) or its
    // tokens are revoked, it is stale.
    match store.get_tenant(&claims.sub).await? {
        Some(t) if current_generation(&claims, &t.tenant) => Ok(Caller::Tenant(claims.sub)),
        _ => Err(ApiError::unauthorized()),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The claims of a tenant token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// The tenant id.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// The tenant's token generation at issue (Herald's claim; absent in tokens other tools
    /// minted).
    #[serde(rename = "gen", default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Why a token was refused. Callers only ever see a 401; the reason is for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm than HS256.
    #[error("unsupported algorithm")]
    Algorithm,
    /// The signature does not verify (or no secret is configured).
    #[error("bad signature")]
    Signature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// The issuer or subject is not acceptable.
    #[error("unacceptable claims")]
    Claims,
}

fn sign(secret: &[u8], signing_input: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(signing_input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Mints a tenant token of token generation `generation` valid for [`TOKEN_TTL_SECS`] from
/// `now`.
pub fn issue(secret: &[u8], tenant_id: &str, generation: i64, now: Timestamp) -> String {
    let iat = now.as_second();
    let claims = Claims {
        iss: ISSUER.to_string(),
        sub: tenant_id.to_string(),
        iat,
        exp: iat + TOKEN_TTL_SECS,
        generation: Some(generation),
    };
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign(secret, &input));
    format!("{input}.{signature}")
}

/// Checks a tenant token's header, signature (constant-time), expiry and claims.
pub fn verify(secret: &[u8], token: &str, now: Timestamp) -> Result<Claims, TokenError> {
    if secret.is_empty() {
        return Err(TokenError::Signature);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| TokenError::Malformed)
    };
    let header_json: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    if header_json.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Algorithm);
    }
    let given = decode(signature)?;
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| TokenError::Signature)?;
    let claims: Claims =
        serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
    if now.as_second() >= claims.exp {
        return Err(TokenError::Expired);
    }
    if !ACCEPTED_ISSUERS.contains(&claims.iss.as_str()) || claims.sub.is_empty() {
        return Err(TokenError::Claims);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_704_067_200).unwrap()
    }

    #[test]
    fn round_trip() {
        let token = issue(b"secret", "tenant_1", 7, now());
        let claims = verify(b"secret", &token, now()).unwrap();
        assert_eq!(
            claims,
            Claims {
                iss: "herald".into(),
                sub: "tenant_1".into(),
                iat: 1_704_067_200,
                exp: 1_704_153_600,
                generation: Some(7),
            }
        );
    }

    #[test]
    fn refusals() {
        let token = issue(b"secret", "tenant_1", 7, now());
        assert_eq!(verify(b"other", &token, now()), Err(TokenError::Signature));
        assert_eq!(verify(b"", &token, now()), Err(TokenError::Signature));
        let later = now() + jiff::SignedDuration::from_secs(TOKEN_TTL_SECS);
        assert_eq!(verify(b"secret", &token, later), Err(TokenError::Expired));
        assert_eq!(verify(b"secret", "a.b", now()), Err(TokenError::Malformed));
        assert_eq!(
            verify(b"secret", "a.b.c.d", now()),
            Err(TokenError::Malformed)
        );
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD
            .encode(br#"{"iss":"herald","sub":"tenant_2","iat":0,"exp":9999999999}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(b"secret", &parts.join("."), now()),
            Err(TokenError::Signature)
        );
        // alg=none is refused before the signature is looked at.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(verify(b"secret", &none, now()), Err(TokenError::Algorithm));
    }

    #[test]
    fn outpost_issuer_is_accepted_and_others_are_not() {
        let mk = |iss: &str| {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
            let claims = Claims {
                iss: iss.into(),
                sub: "t".into(),
                iat: 0,
                exp: i64::MAX,
                generation: None,
            };
            let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
            let input = format!("{header}.{payload}");
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sign(b"k", &input)))
        };
        assert!(verify(b"k", &mk("outpost"), now()).is_ok());
        assert_eq!(verify(b"k", &mk("someone"), now()), Err(TokenError::Claims));
    }

    #[test]
    fn generations() {
        let created = now();
        let mut tenant = herald_core::Tenant {
            id: "t".into(),
            metadata: None,
            created_at: created,
            updated_at: created,
            tokens_revoked_at: None,
        };
        let g = tenant.token_generation();
        let claims = |generation, iat| Claims {
            iss: ISSUER.into(),
            sub: "t".into(),
            iat,
            exp: i64::MAX,
            generation,
        };
        assert!(current_generation(&claims(Some(g), 0), &tenant));
        assert!(!current_generation(&claims(Some(g - 1), 0), &tenant));
        // Without `gen`: issued at or after the generation's second.
        assert!(current_generation(
            &claims(None, created.as_second()),
            &tenant
        ));
        assert!(!current_generation(
            &claims(None, created.as_second() - 1),
            &tenant
        ));
        tenant.tokens_revoked_at = Some(created + jiff::SignedDuration::from_secs(5));
        assert!(!current_generation(&claims(Some(g), 0), &tenant));
        assert!(!current_generation(
            &claims(None, created.as_second()),
            &tenant
        ));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}

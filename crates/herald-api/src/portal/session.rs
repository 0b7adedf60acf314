//! Portal sessions: the link token is exchanged once for a session cookie, and every
//! state-changing request is checked against cross-site forgery.
//!
//! - **Exchange.** `GET /portal?token=<tenant JWT>` verifies the token exactly as the API does
//!   (signature, expiry, issuer, the tenant still exists), sets the session cookie and answers
//!   a redirect to a URL without the token, so it leaves the address bar and the history.
//! - **Cookie.** `herald_portal=<payload>.<HMAC-SHA256>`, `HttpOnly`, `SameSite=Strict`,
//!   `Path=/portal`, `Secure` unless Herald runs with `--dev`. The payload holds the tenant,
//!   the expiry (the link token's own) and a random session id. It is stateless, so every
//!   node of a cluster accepts it; it is signed with a key derived from the JWT secret that
//!   differs from the one tenant tokens use, so a cookie is never a valid API token.
//! - **CSRF.** Each session has a token (an HMAC of its id) that every form carries; a POST
//!   without it, or whose `Origin` / `Sec-Fetch-Site` headers say it came from another site,
//!   is refused with 403 before anything happens.
//!
//! Not here: what a tenant may do. The API decides that for every call the portal makes.

use axum::extract::{FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{Api, PortalState, html, see_other};
use crate::auth;

/// Name of the session cookie.
pub const COOKIE: &str = "herald_portal";

/// Name of the CSRF form field.
pub const CSRF_FIELD: &str = "_csrf";

/// Derives the session key from the JWT secret (domain-separated from tenant tokens).
pub fn derive_key(jwt_secret: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(jwt_secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"herald portal session v1");
    mac.finalize().into_bytes().into()
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
        mac.update(b"|");
    }
    mac.finalize().into_bytes().to_vec()
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// Tenant id.
    t: String,
    /// Expiry, Unix seconds.
    exp: i64,
    /// Random session id.
    sid: String,
    /// Theme asked for by the link (`light`, `dark` or empty).
    #[serde(default)]
    th: String,
    /// The tenant's token generation when the session began: the session's API calls carry
    /// it, so revoking the tenant's tokens (or re-creating the tenant) ends the session.
    #[serde(default)]
    g: i64,
}

/// A valid portal session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The tenant this session acts for.
    pub tenant: String,
    /// The session's CSRF token, written into every form.
    pub csrf: String,
    /// Theme asked for by the link.
    pub theme: String,
    /// The tenant's token generation when the session began.
    pub generation: i64,
}

impl Session {
    /// The API as this session's tenant.
    pub fn api(&self, portal: &PortalState) -> Api {
        let now = portal.app.engine.clock().now();
        Api {
            router: portal.api.clone(),
            token: auth::issue(
                &portal.app.config.jwt_secret,
                &self.tenant,
                self.generation,
                now,
            ),
        }
    }
}

fn seal(key: &[u8; 32], p: &Payload) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(p).unwrap_or_default());
    let sig = URL_SAFE_NO_PAD.encode(mac(key, &[b"cookie", body.as_bytes()]));
    format!("{body}.{sig}")
}

fn open(key: &[u8; 32], value: &str, now: i64) -> Option<Payload> {
    let (body, sig) = value.split_once('.')?;
    let given = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let want = mac(key, &[b"cookie", body.as_bytes()]);
    if !bool::from(given.ct_eq(&want)) {
        return None;
    }
    let p: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
    (now < p.exp && !p.t.is_empty()).then_some(p)
}

fn csrf_token(key: &[u8; 32], sid: &str) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, &[b"csrf", sid.as_bytes()]))
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

fn set_cookie(portal: &PortalState, value: &str, max_age: i64) -> String {
    let secure = if portal.app.config.portal.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// The session of a request, if its cookie is valid.
pub fn current(portal: &PortalState, headers: &HeaderMap) -> Option<Session> {
    // Without a JWT secret there are no tenant tokens, so no session can be valid.
    if portal.app.config.jwt_secret.is_empty() {
        return None;
    }
    let now = portal.app.engine.clock().now().as_second();
    let p = open(&portal.key, cookie_value(headers)?, now)?;
    Some(Session {
        csrf: csrf_token(&portal.key, &p.sid),
        tenant: p.t,
        theme: p.th,
        generation: p.g,
    })
}

impl FromRequestParts<PortalState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        portal: &PortalState,
    ) -> Result<Self, Self::Rejection> {
        current(portal, &parts.headers).ok_or_else(|| expired(portal, Expiry::Session))
    }
}

/// Why the user has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No cookie, or an expired or tampered one.
    Session,
    /// The link's token has expired.
    LinkExpired,
    /// The link's token is not valid.
    LinkInvalid,
    /// The user signed out.
    SignedOut,
}

/// The page shown without a valid session: 401 with a link back to the operator's app.
pub fn expired(portal: &PortalState, why: Expiry) -> Response {
    let (title, text) = match why {
        Expiry::Session => (
            "Your session has expired",
            "Sessions end when the link that opened them expires. Open the portal again from the application you came from.",
        ),
        Expiry::LinkExpired => (
            "This link has expired",
            "Portal links are valid for a limited time. Open the portal again from the application you came from to get a new one.",
        ),
        Expiry::LinkInvalid => (
            "This link is not valid",
            "The portal link could not be verified. Open the portal again from the application you came from.",
        ),
        Expiry::SignedOut => (
            "You have signed out",
            "Open the portal again from the application you came from.",
        ),
    };
    let status = if why == Expiry::SignedOut {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut resp = html::bare_page(&portal.app.config.portal, title, text).into_response();
    *resp.status_mut() = status;
    if why != Expiry::SignedOut {
        // A stale cookie is dropped, so the next link starts clean.
        if let Ok(v) = set_cookie(portal, "", 0).parse() {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `GET /portal`: exchanges `?token=` for a session cookie, or continues an existing session.
pub async fn exchange(
    State(portal): State<PortalState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let Some(token) = get("token") else {
        return match current(&portal, &headers) {
            Some(_) => see_other("/portal/destinations"),
            None => expired(&portal, Expiry::Session),
        };
    };
    let now = portal.app.engine.clock().now();
    let claims = match auth::verify(&portal.app.config.jwt_secret, token, now) {
        Ok(c) => c,
        Err(auth::TokenError::Expired) => return expired(&portal, Expiry::LinkExpired),
        Err(_) => return expired(&portal, Expiry::LinkInvalid),
    };
    if get("tenant_id").is_some_and(|t| t != claims.sub) {
        return expired(&portal, Expiry::LinkInvalid);
    }
    let generation = match portal.app.engine.store().get_tenant(&claims.sub).await {
        Ok(Some(t)) if auth::current_generation(&claims, &t.tenant) => t.tenant.token_generation(),
        Ok(_) => return expired(&portal, Expiry::LinkInvalid),
        Err(e) => return html::error_page(&portal.app.config.portal, &e.to_string()),
    };
    let theme = match get("theme") {
        Some(t @ ("light" | "dark")) => t.to_string(),
        _ => String::new(),
    };
    let sid: [u8; 16] = rand::random();
    let payload = Payload {
        t: claims.sub,
        exp: claims.exp,
        sid: URL_SAFE_NO_PAD.encode(sid),
        th: theme,
        g: generation,
    };
    let cookie = set_cookie(
        &portal,
        &seal(&portal.key, &payload),
        claims.exp - now.as_second(),
    );
    let mut resp = see_other("/portal/destinations");
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /portal/logout`: drops the cookie.
pub async fn logout(State(portal): State<PortalState>, session: Session, form: Form) -> Response {
    if let Err(r) = form.check(&portal, &session) {
        return r;
    }
    let mut resp = expired(&portal, Expiry::SignedOut);
    if let Ok(v) = set_cookie(&portal, "", 0).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A submitted `application/x-www-form-urlencoded` form, with the headers that tell where it
/// came from.
pub struct Form {
    /// Fields in order; a name may repeat (checkboxes).
    pub fields: Vec<(String, String)>,
    headers: HeaderMap,
}

impl Form {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// 403 unless the form carries this session's CSRF token and came from this site.
    #[allow(clippy::result_large_err)]
    pub fn check(&self, portal: &PortalState, session: &Session) -> Result<(), Response> {
        let refuse = |why: &str| {
            let mut r = html::bare_page(
                &portal.app.config.portal,
                "Request refused",
                &format!("{why} Reload the page and try again."),
            )
            .into_response();
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        };
        if let Some(site) = self
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            && !matches!(site, "same-origin" | "none")
        {
            return Err(refuse("The form was sent from another site."));
        }
        if let Some(origin) = self.headers.get(header::ORIGIN) {
            let host = self.headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let origin_host = origin
                .to_str()
                .ok()
                .and_then(|o| url::Url::parse(o).ok())
                .map(|u| match (u.host_str(), u.port()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_string(),
                    _ => String::new(),
                });
            if origin_host.is_none() || origin_host.as_deref() != host {
                return Err(refuse("The form was sent from another site."));
            }
        }
        let given = self.get(CSRF_FIELD).unwrap_or_default();
        if given.is_empty() || !bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(refuse(
                "The form's security token is missing or out of date.",
            ));
        }
        Ok(())
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = url::form_urlencoded::parse(&bytes).into_owned().collect();
        Ok(Form { fields, headers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_round_trip_and_refuse_tampering() {
        let key = derive_key(b"secret");
        let p = Payload {
            t: "t1".into(),
            exp: 100,
            sid: "abc".into(),
            th: String::new(),
            g: 0,
        };
        let v = seal(&key, &p);
        assert_eq!(open(&key, &v, 99).unwrap().t, "t1");
        assert!(open(&key, &v, 100).is_none(), "expired");
        assert!(open(&derive_key(b"other"), &v, 1).is_none());
        let forged = seal(
            &key,
            &Payload {
                t: "t2".into(),
                ..p
            },
        );
        let (_, sig) = v.split_once('.').unwrap();
        let (body, _) = forged.split_once('.').unwrap();
        assert!(open(&key, &format!("{body}.{sig}"), 1).is_none());
    }

    #[test]
    fn a_cookie_is_not_an_api_token() {
        let key = derive_key(b"secret");
        let v = seal(
            &key,
            &Payload {
                t: "t1".into(),
                exp: i64::MAX,
                sid: "s".into(),
                th: String::new(),
                g: 0,
            },
        );
        let now = jiff::Timestamp::from_second(1).unwrap();
        assert!(auth::verify(b"secret", &v, now).is_err());
    }
}

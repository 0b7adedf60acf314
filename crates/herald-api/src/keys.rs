//! Checking credentials: the bootstrap admin key, scoped API keys and tenant tokens, with a
//! small cache of key records that follows the store.
//!
//! **Secrets.** A scoped key's secret is `hk_<key id>.<64 hex digits>`: 256 bits from the OS
//! random generator. Only its SHA-256 digest is stored. A slow password hash (argon2, bcrypt)
//! exists to make guessing *low-entropy* secrets expensive; a 256-bit random secret cannot be
//! guessed, so one SHA-256 is as irreversible as argon2 here and costs microseconds instead
//! of tens of milliseconds on every request. Digests are compared with `subtle` in constant
//! time. The key id is part of the secret, so a `Bearer` secret finds its record by primary
//! key; the `X-Api-Key-ID` + `X-Api-Key-Secret` pair names it explicitly.
//!
//! **The bootstrap admin key** (`HERALD_API_KEY`, or generated) works until it is rotated
//! (`POST /api-keys/rotate-admin`, `herald api-key rotate-admin`). Rotation stores the new
//! key's digest as the reserved key [`BOOTSTRAP_ID`]; from then on that record is the admin
//! key on every node and the configured value is refused.
//!
//! **Revocation on every node.** The store is the truth; records are cached here only to keep
//! the store off the hot path. A write on this node forgets its cached copy at once; on a
//! shared store every write also sends a [`Notice::ApiKey`] inside its transaction, and every
//! node's cache forgets that key when the notice arrives (all of them after a
//! [`Notice::Resync`]). As a backstop an entry is never trusted longer than [`CACHE_TTL`].
//!
//! **`last_used_at`** is written at most once per [`TOUCH_EVERY`] per key and node, by a
//! detached task: a request never waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use herald_core::Clock;
use herald_store::{ApiKey, Notice, Store};
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{self, Caller, KeyPrincipal, Scope};
use crate::error::ApiError;

/// Reserved id of the record that holds the rotated bootstrap admin key.
pub const BOOTSTRAP_ID: &str = "bootstrap";

/// Prefix of scoped key secrets.
pub const SECRET_PREFIX: &str = "hk_";

/// Longest a cached key record is trusted without a notice.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// `last_used_at` is written at most this often per key (and node).
pub const TOUCH_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// Checks credentials. Cheap to clone; the `herald` crate uses one for `/metrics`.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// SHA-256 of the configured (or generated) admin key; `None` when admin access is off.
    configured_admin: Option<[u8; 32]>,
    jwt_secret: Vec<u8>,
    /// Key records by id (`None`: the store has no such key), with when they were read.
    cache: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
    /// When this node last wrote each key's `last_used_at`.
    touched: Mutex<HashMap<String, Timestamp>>,
    following: std::sync::Once,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The stored form of a secret: SHA-256, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(digest(secret))
}

/// Whether `secret` matches a stored digest, in constant time.
fn matches(stored_hex: &str, secret: &str) -> bool {
    let Ok(stored) = hex::decode(stored_hex) else {
        return false;
    };
    stored.len() == 32 && bool::from(stored.as_slice().ct_eq(&digest(secret)))
}

/// 32 random bytes as hex.
fn random_hex() -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A fresh secret for key `id`.
pub fn new_secret(id: &str) -> String {
    format!("{SECRET_PREFIX}{id}.{}", random_hex())
}

/// A fresh bootstrap admin key, in the generated key's format.
pub fn new_admin_secret() -> String {
    format!("hrld_{}", &random_hex()[..48])
}

/// The key id a scoped secret names.
fn id_of(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(SECRET_PREFIX)?;
    let (id, random) = rest.rsplit_once('.')?;
    (!id.is_empty() && !random.is_empty()).then_some(id)
}

impl Authenticator {
    /// Checks against `store` (key records), `clock` (expiry), the configured admin key
    /// (empty: none) and the JWT secret (empty: tenant tokens off).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        admin_key: &str,
        jwt_secret: Vec<u8>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                configured_admin: (!admin_key.is_empty()).then(|| digest(admin_key)),
                jwt_secret,
                cache: Mutex::new(HashMap::new()),
                touched: Mutex::new(HashMap::new()),
                following: std::sync::Once::new(),
            }),
        }
    }

    /// Who sent `headers`: 401 for missing, unknown, revoked or expired credentials.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.follow_notices();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        if let (Some(id), Some(secret)) = (header("x-api-key-id"), header("x-api-key-secret")) {
            return self.scoped(id, secret).await;
        }
        let token = header(AUTHORIZATION.as_str())
            .and_then(auth::bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        if let Some(id) = id_of(token) {
            return self.scoped(id, token).await;
        }
        if self.is_admin_key(token).await? {
            return Ok(Caller::Admin);
        }
        let now = self.inner.clock.now();
        auth::tenant_from_jwt(&self.inner.jwt_secret, &*self.inner.store, token, now).await
    }

    /// Authenticates `headers` and requires `scope` (403 naming it otherwise); for routes
    /// outside the API router, such as `/metrics`.
    pub async fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        let caller = self.authenticate(headers).await?;
        match &caller {
            Caller::Key(k) if !k.has(scope) => Err(auth::missing_scope(scope)),
            Caller::Tenant(_) if scope != Scope::Read && scope != Scope::DestinationsWrite => Err(
                ApiError::forbidden("this endpoint is not available with a tenant token"),
            ),
            _ => Ok(caller),
        }
    }

    async fn is_admin_key(&self, token: &str) -> Result<bool, ApiError> {
        match self.record(BOOTSTRAP_ID).await? {
            // Rotated: only the stored key is the admin key.
            Some(k) => Ok(k.revoked_at.is_none() && matches(&k.secret_hash, token)),
            None => Ok(self
                .inner
                .configured_admin
                .is_some_and(|h| bool::from(h.ct_eq(&digest(token))))),
        }
    }

    async fn scoped(&self, id: &str, secret: &str) -> Result<Caller, ApiError> {
        if id == BOOTSTRAP_ID {
            return Err(ApiError::unauthorized());
        }
        let key = self.record(id).await?.ok_or_else(ApiError::unauthorized)?;
        let now = self.inner.clock.now();
        if !matches(&key.secret_hash, secret)
            || key.revoked_at.is_some()
            || key.expires_at.is_some_and(|e| e <= now)
        {
            return Err(ApiError::unauthorized());
        }
        self.touch(&key.id, now);
        Ok(Caller::Key(KeyPrincipal {
            id: key.id,
            scopes: key.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            tenant_id: key.tenant_id,
        }))
    }

    /// The key record `id`, from the cache or the store.
    async fn record(&self, id: &str) -> Result<Option<ApiKey>, ApiError> {
        if let Some((k, at)) = self.inner.cache.lock().get(id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(k.clone());
        }
        let k = self.inner.store.get_api_key(id).await?;
        let mut cache = self.inner.cache.lock();
        // Bounded: unknown ids are cached too, so a flood of made-up ids must not grow it.
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), (k.clone(), Instant::now()));
        Ok(k)
    }

    /// Forgets the cached copy of key `id` (after a write on this node).
    pub fn forget(&self, id: &str) {
        self.inner.cache.lock().remove(id);
    }

    /// Writes `last_used_at` when this node has not done so for a minute; never waited for.
    fn touch(&self, id: &str, now: Timestamp) {
        {
            let mut touched = self.inner.touched.lock();
            if touched
                .get(id)
                .is_some_and(|last| now.duration_since(*last) < TOUCH_EVERY)
            {
                return;
            }
            touched.insert(id.to_string(), now);
        }
        let store = self.inner.store.clone();
        let id = id.to_string();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::warn!(error = %e, key_id = %id, "cannot record an API key's last use");
                }
            });
        }
    }

    /// Subscribes (once) to the store's notices, forgetting cached keys other nodes changed.
    fn follow_notices(&self) {
        self.inner.following.call_once(|| {
            let Some(mut rx) = self.inner.store.notices() else {
                return;
            };
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            rt.spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let notice = rx.recv().await;
                    let Some(inner) = weak.upgrade() else { return };
                    match notice {
                        Ok(Notice::ApiKey { id }) => {
                            inner.cache.lock().remove(&id);
                        }
                        Ok(Notice::Resync) | Err(RecvError::Lagged(_)) => {
                            inner.cache.lock().clear();
                        }
                        Ok(_) => {}
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_name_their_key_and_hash_one_way() {
        let s = new_secret("key_0193abc");
        assert_eq!(id_of(&s), Some("key_0193abc"));
        assert_eq!(s.len(), SECRET_PREFIX.len() + "key_0193abc".len() + 1 + 64);
        let h = hash_secret(&s);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&s[s.len() - 64..]));
        assert!(matches(&h, &s));
        assert!(!matches(&h, &format!("{s}x")));
        assert!(!matches("not hex", &s));
        assert_eq!(id_of("hrld_abc"), None);
        assert_eq!(id_of("hk_.abc"), None);
        assert_eq!(id_of("hk_key"), None);
        assert_ne!(new_secret("k"), new_secret("k"));
    }
}

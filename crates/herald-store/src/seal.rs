//! Sealing destination secrets at rest: the [`Keyring`] both stores use to encrypt a
//! destination's whole `config` and `credentials` JSON text before it reaches the database,
//! and to open it again on read.
//!
//! **Why whole columns.** The store does not know which fields of which destination type are
//! sensitive (a custom `Authorization` header, a password in URL userinfo and a broker
//! password all live in those two maps), and it never queries inside them, so sealing both
//! columns whole protects every field without the store knowing any type.
//!
//! **Cipher.** XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`): an AEAD whose 24-byte
//! nonce is large enough to be drawn at random for every value with no practical risk of
//! reuse — no nonce counter to keep in step across nodes — and which is constant-time in
//! pure Rust on machines without AES instructions.
//!
//! **Format.** `hs1:<key-id>:<base64url(nonce | ciphertext | tag)>`. `hs1` is the format
//! version; the key id (8 hex digits of a SHA-256 of the key) says which key sealed it, so
//! values sealed by an older key are found and opened with it, and text without the prefix is
//! recognised as a plaintext row from before sealing (JSON always starts with `{`).
//!
//! **Binding.** The associated data is the column name and the row id, so a sealed value
//! copied into another row or another column does not open.
//!
//! This module does not decide where keys come from (the binary reads them from configuration
//! or generates one) and never prints one: [`Keyring`]'s `Debug` shows key ids only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use herald_core::Secret;
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Version prefix of a sealed value.
pub const PREFIX: &str = "hs1";
/// Length in bytes of an encryption key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The `config` column of `destinations`, as named in associated data and errors.
pub(crate) const CONFIG: &str = "destinations.config";
/// The `credentials` column of `destinations`.
pub(crate) const CREDENTIALS: &str = "destinations.credentials";

/// A key that cannot be used. The message names the setting and the problem, never the value.
#[derive(Debug, thiserror::Error)]
#[error(
    "{setting}: {problem}; it must be {KEY_LEN} random bytes in base64, e.g. the output of `openssl rand -base64 32`"
)]
pub struct KeyError {
    /// The setting the key came from (`HERALD_ENCRYPTION_KEY`, `HERALD_ENCRYPTION_OLD_KEYS[1]`).
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// It was sealed with a key that is neither the current key nor an old one.
    #[error("sealed with encryption key {key_id}, which is not configured")]
    UnknownKey {
        /// The key id found in the value.
        key_id: String,
    },
    /// The key is known but authentication failed: the value was altered, or copied from
    /// another row or column.
    #[error("does not open with encryption key {key_id}: altered, or copied from another row")]
    Forged {
        /// The key id found in the value.
        key_id: String,
    },
    /// Not a well-formed sealed value.
    #[error("malformed sealed value ({0})")]
    Malformed(&'static str),
    /// Sealed in a format this Herald does not know (written by a newer one).
    #[error("sealed in format {0:?}, which this herald does not know; upgrade herald")]
    UnknownFormat(String),
}

/// How a stored value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SealState {
    /// Sealed with the current key.
    Current,
    /// Sealed with one of the old keys: opens, but `herald rekey` should move it.
    Old,
    /// Not sealed (a row from before sealing): opens as is, and is sealed on start.
    Plaintext,
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn parse(setting: &str, value: &Secret) -> Result<Key, KeyError> {
        let bad = |problem: String| KeyError {
            setting: setting.to_string(),
            problem,
        };
        let text = value.expose().trim();
        if text.is_empty() {
            return Err(bad("is empty".into()));
        }
        let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(text).ok())
            .ok_or_else(|| bad("is not base64".into()))?;
        if bytes.len() != KEY_LEN {
            return Err(bad(format!(
                "decodes to {} bytes, not {KEY_LEN}",
                bytes.len()
            )));
        }
        let id = key_id_of(&bytes);
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| bad(format!("is not {KEY_LEN} bytes")))?;
        let mut bytes = bytes;
        zero(&mut bytes);
        Ok(Key { id, cipher })
    }
}

/// Wipes a decoded copy of a key (`Secret` wipes the configured text, the cipher its own copy).
fn zero(b: &mut [u8]) {
    zeroize::Zeroize::zeroize(b);
}

fn key_id_of(bytes: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"herald seal key id\0")
        .chain_update(bytes)
        .finalize();
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The encryption keys in effect: the current key, which seals every write, and older keys,
/// which only open. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Keys>,
}

struct Keys {
    current: Key,
    old: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.inner.current.id)
            .field(
                "old",
                &self.inner.old.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// A keyring from the current key and older keys (for opening only). `setting` names
    /// where the keys came from, for error messages (e.g. `HERALD_ENCRYPTION_KEY`); old keys
    /// are named `{old_setting}[i]`.
    pub fn new(
        setting: &str,
        current: &Secret,
        old_setting: &str,
        old: &[Secret],
    ) -> Result<Keyring, KeyError> {
        let current = Key::parse(setting, current)?;
        let mut olds: Vec<Key> = Vec::with_capacity(old.len());
        for (i, s) in old.iter().enumerate() {
            let k = Key::parse(&format!("{old_setting}[{i}]"), s)?;
            // The current key listed again among old keys, or an old key twice, is harmless.
            if k.id != current.id && olds.iter().all(|o| o.id != k.id) {
                olds.push(k);
            }
        }
        Ok(Keyring {
            inner: Arc::new(Keys { current, old: olds }),
        })
    }

    /// A keyring with a single current key (tests, and a freshly generated key).
    pub fn single(setting: &str, key: &Secret) -> Result<Keyring, KeyError> {
        Self::new(setting, key, "", &[])
    }

    /// A new random key, base64-encoded (the form `HERALD_ENCRYPTION_KEY` takes).
    pub fn generate_key() -> Secret {
        let mut bytes = chacha20poly1305::Key::generate();
        let text = STANDARD.encode(bytes.as_slice());
        zero(bytes.as_mut_slice());
        Secret::new(text)
    }

    /// The id of a configured key, for display (`herald config`); `None` when it is invalid.
    pub fn key_id(key: &Secret) -> Option<String> {
        Key::parse("key", key).ok().map(|k| k.id)
    }

    /// Id of the current key.
    pub fn current_id(&self) -> &str {
        &self.inner.current.id
    }

    /// Ids of the old keys.
    pub fn old_ids(&self) -> Vec<&str> {
        self.inner.old.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `plaintext` under the current key, bound to `column` of row `row_id`.
    pub fn seal(&self, plaintext: &str, column: &str, row_id: &str) -> String {
        let key = &self.inner.current;
        let nonce = XNonce::generate();
        let aad = associated_data(column, row_id);
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            // Encryption fails only for messages longer than the cipher allows (~256 GiB).
            .expect("XChaCha20-Poly1305 seals any value a row can hold");
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(nonce.as_slice());
        blob.extend_from_slice(&sealed);
        format!("{PREFIX}:{}:{}", key.id, URL_SAFE_NO_PAD.encode(blob))
    }

    /// Opens a stored value of `column` of row `row_id`: a sealed value with whichever
    /// configured key sealed it, or plaintext from before sealing as it is.
    pub fn open(
        &self,
        stored: &str,
        column: &str,
        row_id: &str,
    ) -> Result<(String, SealState), SealError> {
        let Some((format, rest)) = stored.split_once(':') else {
            return Ok((stored.to_string(), SealState::Plaintext));
        };
        if format != PREFIX {
            if format.len() > 2
                && format.starts_with("hs")
                && format[2..].bytes().all(|b| b.is_ascii_digit())
            {
                return Err(SealError::UnknownFormat(format.to_string()));
            }
            return Ok((stored.to_string(), SealState::Plaintext));
        }
        let (key_id, body) = rest
            .split_once(':')
            .ok_or(SealError::Malformed("no key id"))?;
        let (key, state) = if key_id == self.inner.current.id {
            (&self.inner.current, SealState::Current)
        } else {
            let k = self
                .inner
                .old
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| SealError::UnknownKey {
                    key_id: key_id.to_string(),
                })?;
            (k, SealState::Old)
        };
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed("not base64"))?;
        if blob.len() < NONCE_LEN {
            return Err(SealError::Malformed("too short"));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Malformed("bad nonce"))?;
        let aad = associated_data(column, row_id);
        let plain = key
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Forged {
                key_id: key_id.to_string(),
            })?;
        let text = String::from_utf8(plain).map_err(|_| SealError::Malformed("not UTF-8"))?;
        Ok((text, state))
    }

    /// The state of a stored value without opening it beyond what is needed to be sure it
    /// opens.
    pub fn state(&self, stored: &str, column: &str, row_id: &str) -> Result<SealState, SealError> {
        self.open(stored, column, row_id).map(|(_, s)| s)
    }
}

fn associated_data(column: &str, row_id: &str) -> String {
    format!("herald/{column}/{row_id}")
}

/// The `value` column of `settings` (generated admin key, JWT secret).
pub(crate) const SETTINGS: &str = "settings.value";

/// Opens a stored setting value.
pub(crate) fn open_setting(keys: &Keyring, name: &str, stored: &str) -> crate::Result<String> {
    keys.open(stored, SETTINGS, name)
        .map(|(t, _)| t)
        .map_err(|source| StoreError::Sealed {
            column: SETTINGS,
            id: name.to_string(),
            source,
        })
}

/// A stored setting value sealed again under the current key, or `None` when it already is.
pub(crate) fn reseal_setting(
    keys: &Keyring,
    name: &str,
    stored: &str,
) -> crate::Result<Option<(String, SealState)>> {
    let (text, state) = keys
        .open(stored, SETTINGS, name)
        .map_err(|source| StoreError::Sealed {
            column: SETTINGS,
            id: name.to_string(),
            source,
        })?;
    Ok((state != SealState::Current).then(|| (keys.seal(&text, SETTINGS, name), state)))
}

/// Sealed text of a destination's `config` and `credentials`.
pub(crate) fn seal_destination(keys: &Keyring, d: &herald_core::Destination) -> (String, String) {
    (
        keys.seal(&crate::codec::to_json(&d.config), CONFIG, &d.id),
        keys.seal(&crate::codec::to_json(&d.credentials), CREDENTIALS, &d.id),
    )
}

/// Opens and decodes a stored `config` or `credentials` column of destination `id`.
pub(crate) fn open_map(
    keys: &Keyring,
    column: &'static str,
    id: &str,
    stored: &str,
) -> crate::Result<BTreeMap<String, String>> {
    let (text, _) = keys
        .open(stored, column, id)
        .map_err(|source| StoreError::Sealed {
            column,
            id: id.to_string(),
            source,
        })?;
    crate::codec::from_json(column, &text)
}

/// How one destination row is stored, judged by the keyring: the worse of its two columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowState {
    /// Both columns open.
    Opens(SealState),
    /// A column does not open.
    Unreadable(SealError),
}

pub(crate) fn row_state(keys: &Keyring, id: &str, config: &str, credentials: &str) -> RowState {
    let a = keys.state(config, CONFIG, id);
    let b = keys.state(credentials, CREDENTIALS, id);
    match (a, b) {
        (Ok(a), Ok(b)) => RowState::Opens(a.max(b)),
        (Err(e), _) | (_, Err(e)) => RowState::Unreadable(e),
    }
}

/// Both columns of a row opened and sealed again under the current key.
pub(crate) fn reseal_row(
    keys: &Keyring,
    id: &str,
    config: &str,
    credentials: &str,
) -> crate::Result<(String, String)> {
    let open = |column: &'static str, stored: &str| {
        keys.open(stored, column, id)
            .map(|(t, _)| t)
            .map_err(|source| StoreError::Sealed {
                column,
                id: id.to_string(),
                source,
            })
    };
    let c = open(CONFIG, config)?;
    let k = open(CREDENTIALS, credentials)?;
    Ok((keys.seal(&c, CONFIG, id), keys.seal(&k, CREDENTIALS, id)))
}

/// How the destination rows of a database are sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealCensus {
    /// Rows sealed with the current key.
    pub current: u64,
    /// Rows sealed with an old key.
    pub old: u64,
    /// Rows not sealed.
    pub plaintext: u64,
    /// Rows that no configured key opens.
    pub unreadable: u64,
}

impl SealCensus {
    /// Rows counted.
    pub fn total(&self) -> u64 {
        self.current + self.old + self.plaintext + self.unreadable
    }

    pub(crate) fn count(&mut self, s: &RowState) {
        match s {
            RowState::Opens(SealState::Current) => self.current += 1,
            RowState::Opens(SealState::Old) => self.old += 1,
            RowState::Opens(SealState::Plaintext) => self.plaintext += 1,
            RowState::Unreadable(_) => self.unreadable += 1,
        }
    }
}

/// What a pass that seals rows again ([`crate::sqlite::SqliteStore::open`] on the embedded
/// store, `connect` and `rekey` on PostgreSQL) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Destination rows looked at.
    pub examined: u64,
    /// Plaintext rows sealed under the current key.
    pub sealed_plaintext: u64,
    /// Rows moved from an old key to the current key.
    pub rekeyed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Keyring::generate_key()
    }

    #[test]
    fn seals_opens_and_binds_to_the_row() {
        let k = Keyring::single("K", &key()).unwrap();
        let s = k.seal("{\"password\":\"hunter2\"}", CREDENTIALS, "d1");
        assert!(s.starts_with(&format!("hs1:{}:", k.current_id())), "{s}");
        assert!(!s.contains("hunter2"));
        assert_eq!(
            k.open(&s, CREDENTIALS, "d1").unwrap(),
            ("{\"password\":\"hunter2\"}".to_string(), SealState::Current)
        );
        assert_ne!(s, k.seal("{\"password\":\"hunter2\"}", CREDENTIALS, "d1"));
        assert!(matches!(
            k.open(&s, CREDENTIALS, "d2"),
            Err(SealError::Forged { .. })
        ));
        assert!(matches!(
            k.open(&s, CONFIG, "d1"),
            Err(SealError::Forged { .. })
        ));
        let mut tampered = s.clone();
        tampered.pop();
        tampered.push(if s.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open(&tampered, CREDENTIALS, "d1").is_err());
    }

    #[test]
    fn old_keys_open_unknown_keys_refuse_plaintext_passes() {
        let (a, b) = (key(), key());
        let old = Keyring::single("K", &a).unwrap();
        let s = old.seal("{}", CONFIG, "d");
        let both = Keyring::new("K", &b, "OLD", std::slice::from_ref(&a)).unwrap();
        assert_eq!(both.open(&s, CONFIG, "d").unwrap().1, SealState::Old);
        assert_eq!(both.old_ids(), vec![old.current_id()]);
        let new_only = Keyring::single("K", &b).unwrap();
        assert_eq!(
            new_only.open(&s, CONFIG, "d"),
            Err(SealError::UnknownKey {
                key_id: old.current_id().to_string()
            })
        );
        assert_eq!(
            new_only.open("{\"url\":\"x\"}", CONFIG, "d").unwrap().1,
            SealState::Plaintext
        );
        assert!(matches!(
            new_only.open("hs2:abc:def", CONFIG, "d"),
            Err(SealError::UnknownFormat(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        for bad in ["", "not base64 !!", "c2hvcnQ=", &"QUFB".repeat(20)] {
            let e = Keyring::single("HERALD_ENCRYPTION_KEY", &Secret::new(bad))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("HERALD_ENCRYPTION_KEY: "), "{e}");
            assert!(e.contains("openssl rand -base64 32"), "{e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "{e}");
            }
        }
        let k = key();
        let ring = Keyring::single("K", &k).unwrap();
        assert_eq!(Keyring::key_id(&k).as_deref(), Some(ring.current_id()));
        let dbg = format!("{ring:?}");
        assert!(!dbg.contains(k.expose()), "{dbg}");
    }
}

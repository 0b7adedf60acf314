//! HTTP Digest access authentication, client side (RFC 7616, and RFC 2617 which it updates).
//!
//! [`DigestSession`] keeps the last challenge a server sent (its realm, nonce, opaque,
//! algorithm) and counts `nc` for it, so a steady stream of requests answers the cached
//! challenge straight away — one request per delivery, not two. A `401` that carries
//! `stale=true` or a new nonce replaces the cached challenge. While no challenge is cached,
//! one request at a time fetches it ([`DigestSession::probe`]), so a burst of concurrent
//! deliveries does not cost a `401` each.
//!
//! Supported: `MD5`, `SHA-256` and their `-sess` variants; `qop=auth`, and the RFC 2069 form
//! when a server offers no `qop`. Not supported: `qop=auth-int` alone, `SHA-512-256`,
//! `userhash` (the plain username is sent, which RFC 7616 allows), non-ASCII usernames
//! (`username*`). Not a server implementation: nothing here checks responses.
//!
//! Why not the `http-auth` crate: it draws its own `cnonce` internally, so RFC 7616's published
//! example vectors (§3.9) cannot be checked against it, and it brings a second `sha2`/`digest`
//! generation into the build. The computation is a few hashes; the tests below check it
//! against the RFCs' examples and the e2e tests against Apache httpd's `mod_auth_digest`.

use std::sync::Mutex;

use herald_core::Secret;
use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm a server may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5` (the default when a challenge names none).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "MD5-SESS" => Some(Self::Md5Sess),
            "SHA-256" => Some(Self::Sha256),
            "SHA-256-SESS" => Some(Self::Sha256Sess),
            _ => None,
        }
    }

    /// The name as sent in the `Authorization` header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// Preference when a server offers several challenges: SHA-256 first (RFC 7616 §3.7).
    fn strength(self) -> u8 {
        match self {
            Self::Sha256 | Self::Sha256Sess => 2,
            Self::Md5 | Self::Md5Sess => 1,
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(data.as_bytes())),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One `Digest` challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back when present.
    pub opaque: Option<String>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// Whether the server offers `qop=auth` (false: the RFC 2069 form).
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired but the credentials were right.
    pub stale: bool,
}

/// Why no usable challenge came with a `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    /// No `Digest` challenge at all.
    NotDigest,
    /// Digest, but nothing Herald can answer (named in the message).
    Unsupported(String),
}

/// The best `Digest` challenge among `WWW-Authenticate` header values (a server may send
/// several challenges, in one header or many).
pub fn pick_challenge<'a>(
    headers: impl IntoIterator<Item = &'a str>,
) -> Result<Challenge, ChallengeError> {
    let mut best: Option<Challenge> = None;
    let mut unsupported = None;
    for header in headers {
        for (scheme, params) in parse_challenges(header) {
            if !scheme.eq_ignore_ascii_case("digest") {
                continue;
            }
            match challenge_of(&params) {
                Ok(c) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| c.algorithm.strength() > b.algorithm.strength())
                    {
                        best = Some(c);
                    }
                }
                Err(why) => unsupported = Some(why),
            }
        }
    }
    match (best, unsupported) {
        (Some(c), _) => Ok(c),
        (None, Some(why)) => Err(ChallengeError::Unsupported(why)),
        (None, None) => Err(ChallengeError::NotDigest),
    }
}

fn challenge_of(params: &[(String, String)]) -> Result<Challenge, String> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let algorithm = match get("algorithm") {
        None => Algorithm::Md5,
        Some(a) => Algorithm::parse(&a)
            .ok_or_else(|| format!("the receiver asks for digest algorithm {a:?}, which Herald does not support (MD5, SHA-256 and their -sess variants are)"))?,
    };
    let qop_auth = match get("qop") {
        None => false,
        Some(q) => {
            if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                true
            } else {
                return Err(format!(
                    "the receiver asks for digest qop {q:?}; Herald supports qop=auth"
                ));
            }
        }
    };
    let nonce = get("nonce").ok_or("the receiver's digest challenge has no nonce")?;
    Ok(Challenge {
        realm: get("realm").unwrap_or_default(),
        nonce,
        opaque: get("opaque"),
        algorithm,
        qop_auth,
        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// Splits a `WWW-Authenticate` value into challenges: `(scheme, [(name, value)])`, quoted
/// values unescaped. Tolerant: a malformed part ends that challenge.
fn parse_challenges(header: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        let token = &header[start..i];
        // `token=` is a parameter of the current challenge; `token ` starts a new one.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            j += 1;
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            let mut value = String::new();
            if j < b.len() && b[j] == b'"' {
                j += 1;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        j += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch = header[j..].chars().next().unwrap_or(' ');
                    value.push(ch);
                    j += ch.len_utf8();
                }
                j += 1;
            } else {
                let vs = j;
                while j < b.len() && b[j] != b',' && b[j] != b' ' {
                    j += 1;
                }
                value.push_str(&header[vs..j]);
            }
            if let Some(last) = out.last_mut() {
                last.1.push((token.to_string(), value));
            }
            i = j;
        } else {
            out.push((token.to_string(), Vec::new()));
        }
    }
    out
}

/// A quoted-string with `"` and `\` escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The challenge being answered and its request counter.
struct Current {
    challenge: Challenge,
    cnonce: String,
    nc: u32,
}

/// What [`DigestSession::authorize`] produced, for the request and the attempt log.
pub struct Authorization {
    /// The `Authorization` header value.
    pub header: String,
    /// The nonce answered (to tell a new challenge from a repeated one).
    pub nonce: String,
    /// The algorithm used.
    pub algorithm: Algorithm,
    /// The request count sent as `nc`.
    pub nc: u32,
}

/// One destination's digest credentials and the challenge they currently answer.
pub struct DigestSession {
    username: String,
    password: Secret,
    current: Mutex<Option<Current>>,
    probe: tokio::sync::Mutex<()>,
}

impl DigestSession {
    /// A session with no challenge yet.
    pub fn new(username: String, password: Secret) -> Self {
        Self {
            username,
            password,
            current: Mutex::new(None),
            probe: tokio::sync::Mutex::new(()),
        }
    }

    /// Held by the one request that goes out without a challenge to get one; the others wait
    /// for it and then answer the challenge it brought back.
    pub async fn probe(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.probe.lock().await
    }

    /// The username (for the attempt log).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Caches a challenge the server just sent; `nc` starts again at 1.
    pub fn set_challenge(&self, challenge: Challenge) {
        let cnonce = hex(&rand::random::<[u8; 16]>());
        *self.lock() = Some(Current {
            challenge,
            cnonce,
            nc: 0,
        });
    }

    /// Forgets the cached challenge.
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Authorization` value for one request, counting `nc`; `None` before any challenge.
    pub fn authorize(&self, method: &str, uri: &str) -> Option<Authorization> {
        let mut guard = self.lock();
        let cur = guard.as_mut()?;
        cur.nc = cur.nc.wrapping_add(1);
        let header = response_header(
            &cur.challenge,
            &self.username,
            self.password.expose(),
            method,
            uri,
            &cur.cnonce,
            cur.nc,
        );
        Some(Authorization {
            header,
            nonce: cur.challenge.nonce.clone(),
            algorithm: cur.challenge.algorithm,
            nc: cur.nc,
        })
    }
}

/// The `response` value (RFC 7616 §3.4.1).
pub fn response_value(
    c: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let a = c.algorithm;
    let mut ha1 = a.hash(&format!("{username}:{}:{password}", c.realm));
    if a.is_sess() {
        ha1 = a.hash(&format!("{ha1}:{}:{cnonce}", c.nonce));
    }
    let ha2 = a.hash(&format!("{method}:{uri}"));
    if c.qop_auth {
        a.hash(&format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", c.nonce))
    } else {
        a.hash(&format!("{ha1}:{}:{ha2}", c.nonce))
    }
}

/// The whole `Authorization` header value.
pub fn response_header(
    c: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let response = response_value(c, username, password, method, uri, cnonce, nc);
    let mut h = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, algorithm={}, response=\"{response}\"",
        quote(username),
        quote(&c.realm),
        quote(&c.nonce),
        quote(uri),
        c.algorithm.name(),
    );
    if c.qop_auth {
        h.push_str(&format!(
            ", qop=auth, nc={nc:08x}, cnonce={}",
            quote(cnonce)
        ));
    }
    if let Some(o) = &c.opaque {
        h.push_str(&format!(", opaque={}", quote(o)));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    const RFC7616: &str = r#"Digest
       realm="http-auth@example.org",
       qop="auth, auth-int",
       algorithm=SHA-256,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", Digest
       realm="http-auth@example.org",
       qop="auth, auth-int",
       algorithm=MD5,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc_challenge(algorithm: Algorithm) -> Challenge {
        Challenge {
            algorithm,
            ..pick_challenge([RFC7616]).unwrap()
        }
    }

    #[test]
    fn rfc7616_examples() {
        let c = pick_challenge([RFC7616]).unwrap();
        // SHA-256 is preferred over MD5.
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.realm, "http-auth@example.org");
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
        assert!(c.qop_auth && !c.stale);
        let r = |a| {
            response_value(
                &rfc_challenge(a),
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                CNONCE,
                1,
            )
        };
        assert_eq!(
            r(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(r(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
        // -sess: HA1 = H(H(user:realm:password):nonce:cnonce). The RFCs publish no -sess
        // vector; these were computed independently with Python's hashlib.
        assert_eq!(r(Algorithm::Md5Sess), "e783283f46242139c486a698fec7211d");
        assert_eq!(
            r(Algorithm::Sha256Sess),
            "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7"
        );
    }

    #[test]
    fn rfc2617_example() {
        let c = pick_challenge([r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#]).unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        let h = response_header(
            &c,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert!(
            h.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{h}"
        );
        assert!(
            h.contains("nc=00000001") && h.contains(r#"cnonce="0a4f113b""#),
            "{h}"
        );
        assert!(
            h.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#),
            "{h}"
        );
    }

    #[test]
    fn challenges_are_picked_and_refused_with_a_reason() {
        let c = pick_challenge([
            r#"Basic realm="x""#,
            r#"Digest realm="r", nonce="n1", stale=TRUE, algorithm=MD5-sess, qop="auth""#,
        ])
        .unwrap();
        assert!(c.stale);
        assert_eq!(c.algorithm, Algorithm::Md5Sess);
        assert_eq!(
            pick_challenge([r#"Basic realm="x""#]),
            Err(ChallengeError::NotDigest)
        );
        assert!(matches!(
            pick_challenge([r#"Digest realm="r", nonce="n", qop="auth-int""#]),
            Err(ChallengeError::Unsupported(m)) if m.contains("auth-int")
        ));
        assert!(matches!(
            pick_challenge([r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#]),
            Err(ChallengeError::Unsupported(m)) if m.contains("SHA-512-256")
        ));
        // No qop: the RFC 2069 form, no nc/cnonce.
        let c = pick_challenge([r#"Digest realm="r", nonce="n""#]).unwrap();
        let h = response_header(&c, "u", "p", "POST", "/", "c", 1);
        assert!(!h.contains("nc=") && !h.contains("qop="), "{h}");
    }

    #[test]
    fn session_counts_nc_and_restarts_on_a_new_challenge() {
        let s = DigestSession::new("a\"b".into(), Secret::new("pw"));
        assert!(s.authorize("POST", "/x").is_none());
        s.set_challenge(pick_challenge([r#"Digest realm="r", nonce="n1", qop=auth"#]).unwrap());
        let a1 = s.authorize("POST", "/x").unwrap();
        let a2 = s.authorize("POST", "/x").unwrap();
        assert_eq!((a1.nc, a2.nc), (1, 2));
        assert!(a2.header.contains("nc=00000002"), "{}", a2.header);
        assert!(a1.header.contains(r#"username="a\"b""#), "{}", a1.header);
        assert!(!a1.header.contains("pw"));
        s.set_challenge(pick_challenge([r#"Digest realm="r", nonce="n2", qop=auth"#]).unwrap());
        let a3 = s.authorize("POST", "/x").unwrap();
        assert_eq!((a3.nc, a3.nonce.as_str()), (1, "n2"));
    }
}

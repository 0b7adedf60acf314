//! Webhook signatures: the headers that let a receiver check that a request came from Herald,
//! unaltered, and which event it carries.
//!
//! [`headers`] turns a [`SigningConfig`], a [`Message`] and the destination's [`Secrets`] into
//! the list of headers to add to the request. Two modes exist:
//!
//! * [`SigningMode::Standard`] (the default) — [Standard Webhooks]:
//!   `webhook-id` (the event id), `webhook-timestamp` (unix seconds) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, several
//!   signatures separated by spaces. The HMAC key of a `whsec_<base64>` secret is the decoded
//!   base64 (padding optional); a secret without the `whsec_` prefix, or whose remainder is not
//!   base64, is used as raw UTF-8 bytes. Also sent: `{prefix}topic` and one
//!   `{prefix}{key}` per metadata entry, `prefix` defaulting to `x-herald-`.
//! * [`SigningMode::Outpost`] — Hookdeck Outpost's default: `x-outpost-event-id`,
//!   `x-outpost-topic`, `x-outpost-timestamp` (unix seconds), `x-outpost-<metadata key>`, and
//!   `x-outpost-signature` rendered from a header template (default `v0={signatures}`, i.e.
//!   `v0=<hex1>,<hex2>`) over HMAC-SHA256 signatures of a content template (default `{body}`).
//!   As in Outpost, the HMAC key is the secret string's raw UTF-8 bytes, `whsec_` included.
//!   The prefix (`x-outpost-`), the signature header name, the templates and the encoding
//!   (hex or base64) are configurable.
//!
//! # Templates (outpost mode)
//!
//! A template is literal text with placeholders. Herald's own spelling, and the Outpost Go
//! template actions accepted as synonyms (whitespace inside `{{ }}` is ignored):
//!
//! | placeholder | Go spelling | value | content | header |
//! |---|---|---|---|---|
//! | `{body}` | `{{.Body}}` | the raw request body | yes | no |
//! | `{timestamp}` or `{ts}` | `{{.Timestamp.Unix}}` | unix seconds | yes | yes |
//! | `{event_id}` | `{{.EventID}}` | the event id | yes | yes |
//! | `{topic}` | `{{.Topic}}` | the topic | yes | yes |
//! | `{signatures}` | `{{.Signatures \| join ","}}` | the signatures, comma-joined | no | yes |
//!
//! Any other `{…}` is an error, so literal braces cannot appear. The content template must
//! contain `{body}` (a signature that does not cover the body protects nothing) and the header
//! template `{signatures}`. Example: content `{timestamp}.{body}` with header
//! `t={timestamp},v0={signatures}` gives `t=1700000000,v0=5f2b…`. [`SigningConfig::validate`]
//! checks all this; [`headers`] given an invalid template falls back to the default one
//! rather than failing (as Outpost used to).
//!
//! # Rotation
//!
//! While `now < previous_secret_invalid_at`, both secrets sign, the current one first; from that
//! instant on, only the current one. A destination without any secret gets no signature header;
//! every other header is still sent.
//!
//! # Metadata headers
//!
//! The caller passes the already-merged metadata map. Keys are lowercased; keys that are not
//! valid header names (RFC 9110 tokens), values that are not valid header values (control
//! characters other than tab), names that this module already sets or reserves for the
//! signature scheme, and hop-by-hop or request-framing names (`host`, `content-type`,
//! `authorization`, …, reachable with an empty prefix) are skipped. Unlike Outpost, metadata
//! never overrides the event-id, topic or timestamp header. Two keys differing only in case
//! yield one header: the first in map order (uppercase sorts first).
//!
//! Not here: sending requests, endpoint authentication (Bearer, Basic, …), verifying
//! signatures on inbound requests, and the Standard Webhooks `v1a` (ed25519) scheme, which is
//! not implemented yet.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Prefix of Standard Webhooks secrets; the rest is the base64 key.
pub const STANDARD_SECRET_PREFIX: &str = "whsec_";
/// Default prefix of Herald's extra headers (topic, metadata) in standard mode.
pub const DEFAULT_HERALD_HEADER_PREFIX: &str = "x-herald-";
/// Default header prefix in outpost mode, as in Outpost.
pub const DEFAULT_OUTPOST_HEADER_PREFIX: &str = "x-outpost-";
/// Default content template of outpost mode: the body alone (Outpost's `{{.Body}}`).
pub const DEFAULT_CONTENT_TEMPLATE: &str = "{body}";
/// Default header template of outpost mode (Outpost's `v0={{.Signatures | join ","}}`).
pub const DEFAULT_HEADER_TEMPLATE: &str = "v0={signatures}";
/// Standard Webhooks message id header.
pub const HEADER_WEBHOOK_ID: &str = "webhook-id";
/// Standard Webhooks timestamp header.
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks signature header.
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Header names that metadata may never produce, whatever the prefix.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "expect",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
];

/// Which signature scheme a destination uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SigningMode {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[default]
    Standard,
    /// Hookdeck Outpost's `x-outpost-*` headers with templated signatures.
    Outpost,
}

/// How signature bytes are written in outpost mode (standard mode is always base64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lowercase hexadecimal (Outpost's default).
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Signature settings, chosen by config and overridable per destination.
///
/// `content_template`, `header_template`, `encoding` and `signature_header` only matter in
/// outpost mode. `header_prefix` is lowercased when used; it may be empty (as in Outpost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    /// The scheme.
    pub mode: SigningMode,
    /// Prefix of the topic, metadata and (outpost mode) event-id/timestamp/signature headers.
    pub header_prefix: String,
    /// What is signed (outpost mode); see the module docs for placeholders.
    pub content_template: String,
    /// The signature header's value (outpost mode); see the module docs for placeholders.
    pub header_template: String,
    /// Encoding of each signature (outpost mode).
    pub encoding: SignatureEncoding,
    /// Name of the signature header in outpost mode; `None` means `{header_prefix}signature`.
    pub signature_header: Option<String>,
}

impl Default for SigningConfig {
    /// Standard mode, `x-herald-` prefix (templates and encoding at the outpost defaults).
    fn default() -> Self {
        Self::new(SigningMode::Standard)
    }
}

/// A [`SigningConfig`] setting that cannot work; names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SigningConfigError {
    /// The offending field, e.g. `"content_template"`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl SigningConfig {
    /// The defaults of `mode`: prefix `x-herald-` (standard) or `x-outpost-` (outpost),
    /// content `{body}`, header `v0={signatures}`, hex, signature header `{prefix}signature`.
    pub fn new(mode: SigningMode) -> Self {
        let header_prefix = match mode {
            SigningMode::Standard => DEFAULT_HERALD_HEADER_PREFIX,
            SigningMode::Outpost => DEFAULT_OUTPOST_HEADER_PREFIX,
        };
        Self {
            mode,
            header_prefix: header_prefix.to_owned(),
            content_template: DEFAULT_CONTENT_TEMPLATE.to_owned(),
            header_template: DEFAULT_HEADER_TEMPLATE.to_owned(),
            encoding: SignatureEncoding::Hex,
            signature_header: None,
        }
    }

    /// Outpost's defaults: `x-outpost-` headers, `v0=<hex>` over the body.
    pub fn outpost_default() -> Self {
        Self::new(SigningMode::Outpost)
    }

    /// Checks every field, whatever the mode (so switching mode cannot expose a bad one):
    /// the prefix is made of header-name characters; the templates parse, use only the
    /// placeholders allowed where they are, contain `{body}` (content) and `{signatures}`
    /// (header), and the header template's literal text is a valid header value; the
    /// signature header, if set, is a valid, non-reserved name distinct from the other
    /// outpost headers.
    pub fn validate(&self) -> Result<(), SigningConfigError> {
        let err = |field, problem: String| Err(SigningConfigError { field, problem });
        if !self.header_prefix.bytes().all(is_tchar) {
            return err(
                "header_prefix",
                "may only contain letters, digits and !#$%&'*+-.^_`|~".to_owned(),
            );
        }
        let content =
            parse_template(&self.content_template, CONTENT_FIELDS).map_err(|problem| {
                SigningConfigError {
                    field: "content_template",
                    problem,
                }
            })?;
        if !content.contains(&Piece::Field(Field::Body)) {
            return err("content_template", "must contain {body}".to_owned());
        }
        let header = parse_template(&self.header_template, HEADER_FIELDS).map_err(|problem| {
            SigningConfigError {
                field: "header_template",
                problem,
            }
        })?;
        if !header.contains(&Piece::Field(Field::Signatures)) {
            return err("header_template", "must contain {signatures}".to_owned());
        }
        if header
            .iter()
            .any(|p| matches!(p, Piece::Text(t) if !is_header_value(t)))
        {
            return err(
                "header_template",
                "must not contain control characters (other than tab)".to_owned(),
            );
        }
        if let Some(name) = &self.signature_header {
            if !is_token(name) {
                return err(
                    "signature_header",
                    format!("{name:?} is not a valid header name"),
                );
            }
            let name = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return err("signature_header", format!("{name:?} is reserved"));
            }
            let prefix = self.prefix();
            if ["event-id", "topic", "timestamp"]
                .iter()
                .any(|k| name == format!("{prefix}{k}"))
            {
                return err(
                    "signature_header",
                    format!("{name:?} collides with the event-id, topic or timestamp header"),
                );
            }
        }
        Ok(())
    }

    /// The header prefix as used: lowercased.
    fn prefix(&self) -> String {
        self.header_prefix.to_ascii_lowercase()
    }

    /// The outpost-mode signature header name.
    fn outpost_signature_header(&self) -> String {
        match &self.signature_header {
            Some(name) => name.to_ascii_lowercase(),
            None => format!("{}signature", self.prefix()),
        }
    }
}

/// A destination's signing secrets. Empty strings count as absent.
///
/// `Debug` prints whether secrets are present, never their value.
#[derive(Clone, Copy, Default)]
pub struct Secrets<'a> {
    /// The current secret; signs first.
    pub current: Option<&'a str>,
    /// The secret being rotated out, and the instant it stops signing (its
    /// `previous_secret_invalid_at`).
    pub previous: Option<(&'a str, Timestamp)>,
}

impl fmt::Debug for Secrets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("current", &self.current.map(|_| "<redacted>"))
            .field(
                "previous",
                &self.previous.map(|(_, until)| ("<redacted>", until)),
            )
            .finish()
    }
}

/// What is being signed: one delivery attempt.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The event id (`webhook-id` / `x-outpost-event-id`).
    pub event_id: &'a str,
    /// The event topic.
    pub topic: &'a str,
    /// The attempt's time (not the event's: receivers reject stale timestamps); sent and
    /// signed as unix seconds.
    pub timestamp: Timestamp,
    /// The exact request body bytes.
    pub body: &'a [u8],
    /// Event metadata merged with the destination's delivery metadata, by the caller.
    pub metadata: &'a BTreeMap<String, String>,
}

/// The signature and metadata headers for one request, names lowercase, in a fixed order
/// (scheme headers, then metadata in key order).
///
/// `now` decides whether a previous secret still signs (see [`Secrets`]); it is normally the
/// same instant as `msg.timestamp`. A header whose value would not be a valid HTTP field value
/// (an event id or topic with control characters) is left out rather than sent broken.
pub fn headers(
    cfg: &SigningConfig,
    msg: &Message<'_>,
    secrets: &Secrets<'_>,
    now: Timestamp,
) -> Vec<(String, String)> {
    let keys = signing_secrets(secrets, now);
    let ts = msg.timestamp.as_second().to_string();
    let prefix = cfg.prefix();
    let mut out = Vec::with_capacity(4 + msg.metadata.len());
    // Names the scheme owns even when it does not send them (e.g. no secret → no signature).
    let claimed = match cfg.mode {
        SigningMode::Standard => standard_headers(&mut out, msg, &keys, &ts, &prefix),
        SigningMode::Outpost => outpost_headers(&mut out, cfg, msg, &keys, &ts, &prefix),
    };

    for (key, value) in msg.metadata {
        if !is_token(key) {
            continue;
        }
        let name = format!("{prefix}{}", key.to_ascii_lowercase());
        if claimed.contains(&name) || RESERVED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        push(&mut out, name, value.clone());
    }
    out
}

/// Appends the Standard Webhooks headers and `{prefix}topic`; returns the names it owns.
fn standard_headers(
    out: &mut Vec<(String, String)>,
    msg: &Message<'_>,
    keys: &[&str],
    ts: &str,
    prefix: &str,
) -> Vec<String> {
    let topic_header = format!("{prefix}topic");
    push(out, HEADER_WEBHOOK_ID.to_owned(), msg.event_id.to_owned());
    push(out, HEADER_WEBHOOK_TIMESTAMP.to_owned(), ts.to_owned());
    if !keys.is_empty() {
        let sigs: Vec<String> = keys
            .iter()
            .map(|secret| {
                let mac = hmac_sha256(
                    &standard_key(secret),
                    &[msg.event_id.as_bytes(), b".", ts.as_bytes(), b".", msg.body],
                );
                format!("v1,{}", STANDARD.encode(mac))
            })
            .collect();
        push(out, HEADER_WEBHOOK_SIGNATURE.to_owned(), sigs.join(" "));
    }
    push(out, topic_header.clone(), msg.topic.to_owned());
    vec![
        HEADER_WEBHOOK_ID.to_owned(),
        HEADER_WEBHOOK_TIMESTAMP.to_owned(),
        HEADER_WEBHOOK_SIGNATURE.to_owned(),
        topic_header,
    ]
}

/// Appends the outpost-mode headers; returns the names it owns.
fn outpost_headers(
    out: &mut Vec<(String, String)>,
    cfg: &SigningConfig,
    msg: &Message<'_>,
    keys: &[&str],
    ts: &str,
    prefix: &str,
) -> Vec<String> {
    let names = [
        format!("{prefix}event-id"),
        format!("{prefix}topic"),
        format!("{prefix}timestamp"),
        cfg.outpost_signature_header(),
    ];
    push(out, names[0].clone(), msg.event_id.to_owned());
    push(out, names[1].clone(), msg.topic.to_owned());
    push(out, names[2].clone(), ts.to_owned());
    if !keys.is_empty() {
        let content_pieces = parse_template(&cfg.content_template, CONTENT_FIELDS)
            .unwrap_or_else(|_| vec![Piece::Field(Field::Body)]);
        let header_pieces = parse_template(&cfg.header_template, HEADER_FIELDS)
            .unwrap_or_else(|_| vec![Piece::Text("v0="), Piece::Field(Field::Signatures)]);
        let content = render_content(&content_pieces, msg, ts);
        let sigs: Vec<String> = keys
            .iter()
            .map(|secret| {
                let mac = hmac_sha256(secret.as_bytes(), &[&content]);
                match cfg.encoding {
                    SignatureEncoding::Hex => to_hex(&mac),
                    SignatureEncoding::Base64 => STANDARD.encode(mac),
                }
            })
            .collect();
        let value = render_header(&header_pieces, msg, ts, &sigs.join(","));
        push(out, names[3].clone(), value);
    }
    names.into()
}

/// A new random secret: `whsec_` + base64 of 32 bytes from the OS-seeded CSPRNG.
///
/// It works in both modes: standard mode decodes the base64, outpost mode uses the string.
pub fn generate_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!("{STANDARD_SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// Whether a user-supplied secret is acceptable.
///
/// Accepted: 1 to 1024 printable ASCII characters without spaces; and if it starts with
/// `whsec_`, the rest must be base64 (padding optional) of 24 to 64 bytes, the range the
/// Standard Webhooks spec recommends, so that standard-mode receivers can load it. Secrets
/// without the prefix are used as raw bytes and have no minimum length, for compatibility
/// with existing Outpost secrets.
pub fn is_valid_secret(s: &str) -> bool {
    if s.is_empty() || s.len() > 1024 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    match s.strip_prefix(STANDARD_SECRET_PREFIX) {
        Some(rest) => BASE64_LENIENT
            .decode(rest)
            .is_ok_and(|key| (24..=64).contains(&key.len())),
        None => true,
    }
}

/// Standard base64 that accepts missing padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The secrets that sign now, current first, without duplicates.
fn signing_secrets<'a>(secrets: &Secrets<'a>, now: Timestamp) -> Vec<&'a str> {
    let mut keys = Vec::with_capacity(2);
    if let Some(current) = secrets.current.filter(|s| !s.is_empty()) {
        keys.push(current);
    }
    if let Some((previous, until)) = secrets.previous
        && !previous.is_empty()
        && now < until
        && !keys.contains(&previous)
    {
        keys.push(previous);
    }
    keys
}

/// The Standard Webhooks HMAC key of a secret (see the module docs).
fn standard_key(secret: &str) -> Cow<'_, [u8]> {
    if let Some(rest) = secret.strip_prefix(STANDARD_SECRET_PREFIX)
        && let Ok(key) = BASE64_LENIENT.decode(rest)
        && !key.is_empty()
    {
        return Cow::Owned(key);
    }
    Cow::Borrowed(secret.as_bytes())
}

/// HMAC-SHA256 of the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Appends a header unless its value is invalid or its name is already present.
fn push(out: &mut Vec<(String, String)>, name: String, value: String) {
    if is_header_value(&value) && !out.iter().any(|(n, _)| *n == name) {
        out.push((name, value));
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `token`: a valid header name.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A valid header value: no control characters except tab (what the `http` crate accepts).
fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A template placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Body,
    Timestamp,
    EventId,
    Topic,
    Signatures,
}

const CONTENT_FIELDS: &[Field] = &[Field::Body, Field::Timestamp, Field::EventId, Field::Topic];
const HEADER_FIELDS: &[Field] = &[
    Field::Signatures,
    Field::Timestamp,
    Field::EventId,
    Field::Topic,
];

/// A parsed template element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'t> {
    Text(&'t str),
    Field(Field),
}

fn herald_field(name: &str) -> Option<Field> {
    Some(match name {
        "body" => Field::Body,
        "timestamp" | "ts" => Field::Timestamp,
        "event_id" => Field::EventId,
        "topic" => Field::Topic,
        "signatures" => Field::Signatures,
        _ => return None,
    })
}

/// Maps a supported Go template action (whitespace outside quotes removed) to a field.
fn go_field(action: &str) -> Option<Field> {
    let mut squeezed = String::with_capacity(action.len());
    let mut quoted = false;
    for c in action.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if quoted || !c.is_whitespace() {
            squeezed.push(c);
        }
    }
    Some(match squeezed.as_str() {
        ".Body" => Field::Body,
        ".Timestamp.Unix" => Field::Timestamp,
        ".EventID" => Field::EventId,
        ".Topic" => Field::Topic,
        r#".Signatures|join",""# => Field::Signatures,
        _ => return None,
    })
}

fn field_name(f: Field) -> &'static str {
    match f {
        Field::Body => "{body}",
        Field::Timestamp => "{timestamp}",
        Field::EventId => "{event_id}",
        Field::Topic => "{topic}",
        Field::Signatures => "{signatures}",
    }
}

/// Splits a template into text and placeholders; the error says what is wrong.
fn parse_template<'t>(template: &'t str, allowed: &[Field]) -> Result<Vec<Piece<'t>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let tail = &rest[open..];
        let (field, len) = if let Some(inner) = tail.strip_prefix("{{") {
            let close = inner
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {template:?}"))?;
            let action = &inner[..close];
            let field = go_field(action).ok_or_else(|| {
                format!(
                    "unsupported template action `{{{{{action}}}}}`; supported: {{{{.Body}}}}, \
                     {{{{.Timestamp.Unix}}}}, {{{{.EventID}}}}, {{{{.Topic}}}}, \
                     {{{{.Signatures | join \",\"}}}}"
                )
            })?;
            (field, close + 4)
        } else {
            let close = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {template:?}"))?;
            let name = &tail[1..close];
            let field = herald_field(name).ok_or_else(|| {
                format!(
                    "unknown placeholder `{{{name}}}`; known: {{body}}, {{timestamp}}, \
                     {{event_id}}, {{topic}}, {{signatures}}"
                )
            })?;
            (field, close + 1)
        };
        if !allowed.contains(&field) {
            return Err(format!(
                "placeholder {} cannot be used here",
                field_name(field)
            ));
        }
        pieces.push(Piece::Field(field));
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn render_content(pieces: &[Piece<'_>], msg: &Message<'_>, ts: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.body.len() + 64);
    for piece in pieces {
        out.extend_from_slice(match piece {
            Piece::Text(t) => t.as_bytes(),
            Piece::Field(Field::Body) => msg.body,
            Piece::Field(Field::Timestamp) => ts.as_bytes(),
            Piece::Field(Field::EventId) => msg.event_id.as_bytes(),
            Piece::Field(Field::Topic) => msg.topic.as_bytes(),
            Piece::Field(Field::Signatures) => b"",
        });
    }
    out
}

fn render_header(pieces: &[Piece<'_>], msg: &Message<'_>, ts: &str, sigs: &str) -> String {
    let mut out = String::with_capacity(sigs.len() + 32);
    for piece in pieces {
        out.push_str(match piece {
            Piece::Text(t) => t,
            Piece::Field(Field::Signatures) => sigs,
            Piece::Field(Field::Timestamp) => ts,
            Piece::Field(Field::EventId) => msg.event_id,
            Piece::Field(Field::Topic) => msg.topic,
            Piece::Field(Field::Body) => "",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use standardwebhooks::Webhook;

    const BODY: &[u8] = br#"{"user_id":"usr_123","plan":"pro"}"#;
    const OUTPOST_NEW: &str = "whsec_outpost_current_secret";
    const OUTPOST_OLD: &str = "old-secret-value";
    // Independently computed with Python's hmac module:
    // hmac.new(key, msg, hashlib.sha256).hexdigest()
    /// HMAC(OUTPOST_NEW, BODY), hex.
    const A: &str = "2b1d3d59452ffae18c2b40cf3f88e31007fdc5b0c4d5cd407a0c4dcf852b6b22";
    /// HMAC(OUTPOST_OLD, BODY), hex.
    const B: &str = "131e11047bd4b481ba19e31d795adafcf0a84969e5943ad4c322ed3bcfcabfee";
    /// HMAC(OUTPOST_NEW, "1700000000." + BODY), hex.
    const C: &str = "b8c00ac4227d2554c0f6dd5244d8cb64983545ae5c36535ec2fa4f0a56e42326";
    /// HMAC(OUTPOST_OLD, "1700000000." + BODY), hex.
    const D: &str = "3a5b34e327a4887b14e85e390d5884b7cda6c00090cf1c144d1bd0ef1e0eb658";
    /// HMAC(OUTPOST_NEW, "1700000000." + BODY), base64.
    const E: &str = "uMAKxCJ9JVTA9t1SRNjLZJg1Ra5cNlNewvpPClbkIyY=";
    /// HMAC(OUTPOST_NEW, "evt_123:user.created:" + BODY), hex.
    const F: &str = "4cf605a8ab9ce9c4ae4c6e83837c56350da5612bfa5eb6d068e06241c1d0cdfc";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn msg<'a>(
        body: &'a [u8],
        metadata: &'a BTreeMap<String, String>,
        ts: Timestamp,
    ) -> Message<'a> {
        Message {
            event_id: "evt_123",
            topic: "user.created",
            timestamp: ts,
            body,
            metadata,
        }
    }

    fn get<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header_map(headers: &[(String, String)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (n, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn standard_webhooks_published_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let meta = BTreeMap::new();
        let m = Message {
            event_id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            topic: "t",
            timestamp: at(1614265330),
            body: br#"{"test": 2432232314}"#,
            metadata: &meta,
        };
        let h = headers(
            &SigningConfig::default(),
            &m,
            &Secrets {
                current: Some(secret),
                previous: None,
            },
            at(1614265330),
        );
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(get(&h, "webhook-signature"), Some(expected));
        assert_eq!(get(&h, "webhook-id"), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        assert_eq!(get(&h, "webhook-timestamp"), Some("1614265330"));
        assert_eq!(get(&h, "x-herald-topic"), Some("t"));
        // And the reference implementation agrees.
        let reference = Webhook::new(secret)
            .unwrap()
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(reference, expected);
    }

    #[test]
    fn standard_headers_verify_with_the_standardwebhooks_crate() {
        let secret = generate_secret();
        let meta = BTreeMap::new();
        let now = Timestamp::now();
        let m = msg(BODY, &meta, now);
        let h = headers(
            &SigningConfig::default(),
            &m,
            &Secrets {
                current: Some(&secret),
                previous: None,
            },
            now,
        );
        let map = header_map(&h);
        Webhook::new(&secret).unwrap().verify(BODY, &map).unwrap();
        // A different secret or a tampered body fails.
        assert!(
            Webhook::new(&generate_secret())
                .unwrap()
                .verify(BODY, &map)
                .is_err()
        );
        assert!(Webhook::new(&secret).unwrap().verify(b"{}", &map).is_err());
    }

    #[test]
    fn standard_secret_without_prefix_uses_raw_bytes() {
        let secret = "plain-secret-without-prefix";
        let meta = BTreeMap::new();
        let now = Timestamp::now();
        let h = headers(
            &SigningConfig::default(),
            &msg(BODY, &meta, now),
            &Secrets {
                current: Some(secret),
                previous: None,
            },
            now,
        );
        let map = header_map(&h);
        Webhook::from_bytes(secret.as_bytes().to_vec())
            .unwrap()
            .verify(BODY, &map)
            .unwrap();
        // A `whsec_` secret whose remainder is not base64 also falls back to raw bytes.
        let odd = "whsec_not*base64!";
        let h = headers(
            &SigningConfig::default(),
            &msg(BODY, &meta, now),
            &Secrets {
                current: Some(odd),
                previous: None,
            },
            now,
        );
        Webhook::from_bytes(odd.as_bytes().to_vec())
            .unwrap()
            .verify(BODY, &header_map(&h))
            .unwrap();
    }

    #[test]
    fn standard_rotation_verifies_with_either_secret_until_invalid_at() {
        let new = generate_secret();
        let old = generate_secret();
        let meta = BTreeMap::new();
        let now = Timestamp::now();
        let until = now + jiff::SignedDuration::from_hours(24);
        let secrets = Secrets {
            current: Some(&new),
            previous: Some((&old, until)),
        };

        let h = headers(
            &SigningConfig::default(),
            &msg(BODY, &meta, now),
            &secrets,
            now,
        );
        let sig = get(&h, "webhook-signature").unwrap();
        let parts: Vec<_> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        let map = header_map(&h);
        Webhook::new(&new).unwrap().verify(BODY, &map).unwrap();
        Webhook::new(&old).unwrap().verify(BODY, &map).unwrap();
        // New first.
        let new_only = headers(
            &SigningConfig::default(),
            &msg(BODY, &meta, now),
            &Secrets {
                current: Some(&new),
                previous: None,
            },
            now,
        );
        assert_eq!(parts[0], get(&new_only, "webhook-signature").unwrap());

        // From invalid_at on, only the new secret signs.
        let h = headers(
            &SigningConfig::default(),
            &msg(BODY, &meta, now),
            &secrets,
            until,
        );
        let map = header_map(&h);
        assert_eq!(get(&h, "webhook-signature").unwrap().split(' ').count(), 1);
        Webhook::new(&new).unwrap().verify(BODY, &map).unwrap();
        assert!(Webhook::new(&old).unwrap().verify(BODY, &map).is_err());
    }

    #[test]
    fn rotation_window_boundaries() {
        let meta = BTreeMap::new();
        let until = at(2_000_000_000);
        let secrets = Secrets {
            current: Some(OUTPOST_NEW),
            previous: Some((OUTPOST_OLD, until)),
        };
        let cfg = SigningConfig::outpost_default();
        let m = msg(BODY, &meta, at(1_700_000_000));
        let sig = |now| {
            headers(&cfg, &m, &secrets, now)
                .into_iter()
                .find(|(n, _)| n == "x-outpost-signature")
                .unwrap()
                .1
        };
        assert_eq!(sig(at(1_999_999_999)), format!("v0={A},{B}"));
        assert_eq!(sig(until), format!("v0={A}"));
        assert_eq!(sig(at(2_000_000_001)), format!("v0={A}"));

        // Only a previous secret (no current): it signs alone while valid.
        let only_prev = Secrets {
            current: None,
            previous: Some((OUTPOST_OLD, until)),
        };
        let h = headers(&cfg, &m, &only_prev, at(1));
        assert_eq!(
            get(&h, "x-outpost-signature"),
            Some(format!("v0={B}").as_str())
        );
        // The same secret twice signs once; empty strings are absent.
        let same = Secrets {
            current: Some(OUTPOST_NEW),
            previous: Some((OUTPOST_NEW, until)),
        };
        assert_eq!(
            get(&headers(&cfg, &m, &same, at(1)), "x-outpost-signature"),
            Some(format!("v0={A}").as_str())
        );
        let empty = Secrets {
            current: Some(""),
            previous: Some(("", until)),
        };
        assert_eq!(
            get(&headers(&cfg, &m, &empty, at(1)), "x-outpost-signature"),
            None
        );
    }

    #[test]
    fn outpost_default_headers() {
        let meta = BTreeMap::new();
        let ts = at(1_700_000_000);
        let h = headers(
            &SigningConfig::outpost_default(),
            &msg(BODY, &meta, ts),
            &Secrets {
                current: Some(OUTPOST_NEW),
                previous: None,
            },
            ts,
        );
        assert_eq!(
            h,
            vec![
                ("x-outpost-event-id".to_owned(), "evt_123".to_owned()),
                ("x-outpost-topic".to_owned(), "user.created".to_owned()),
                ("x-outpost-timestamp".to_owned(), "1700000000".to_owned()),
                ("x-outpost-signature".to_owned(), format!("v0={A}")),
            ]
        );
        // Cross-check against the hmac crate directly.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(OUTPOST_NEW.as_bytes()).unwrap();
        mac.update(BODY);
        assert_eq!(to_hex(&mac.finalize().into_bytes()), A);
    }

    #[test]
    fn outpost_templated_headers_in_both_spellings() {
        let meta = BTreeMap::new();
        let ts = at(1_700_000_000);
        let m = msg(BODY, &meta, ts);
        let rotating = Secrets {
            current: Some(OUTPOST_NEW),
            previous: Some((OUTPOST_OLD, at(1_800_000_000))),
        };
        let expected = format!("t=1700000000,v0={C},{D}");
        for (content, header) in [
            ("{timestamp}.{body}", "t={timestamp},v0={signatures}"),
            ("{ts}.{body}", "t={ts},v0={signatures}"),
            (
                "{{.Timestamp.Unix}}.{{.Body}}",
                r#"t={{.Timestamp.Unix}},v0={{.Signatures | join ","}}"#,
            ),
            (
                "{{ .Timestamp.Unix }}.{{ .Body }}",
                r#"t={{ .Timestamp.Unix }},v0={{.Signatures|join ","}}"#,
            ),
        ] {
            let cfg = SigningConfig {
                content_template: content.to_owned(),
                header_template: header.to_owned(),
                ..SigningConfig::outpost_default()
            };
            cfg.validate().unwrap();
            let h = headers(&cfg, &m, &rotating, ts);
            assert_eq!(
                get(&h, "x-outpost-signature"),
                Some(expected.as_str()),
                "{content} / {header}"
            );
        }

        // Base64 encoding, custom prefix and signature header name.
        let cfg = SigningConfig {
            content_template: "{timestamp}.{body}".to_owned(),
            header_template: "t={timestamp},v0={signatures}".to_owned(),
            encoding: SignatureEncoding::Base64,
            header_prefix: "X-Acme-".to_owned(),
            signature_header: Some("Acme-Signature".to_owned()),
            ..SigningConfig::outpost_default()
        };
        cfg.validate().unwrap();
        let h = headers(
            &cfg,
            &m,
            &Secrets {
                current: Some(OUTPOST_NEW),
                previous: None,
            },
            ts,
        );
        assert_eq!(
            get(&h, "acme-signature"),
            Some(format!("t=1700000000,v0={E}").as_str())
        );
        assert_eq!(get(&h, "x-acme-event-id"), Some("evt_123"));
        assert_eq!(get(&h, "x-acme-topic"), Some("user.created"));
        assert_eq!(get(&h, "x-acme-timestamp"), Some("1700000000"));

        // Event id and topic in the content.
        let cfg = SigningConfig {
            content_template: "{{.EventID}}:{topic}:{body}".to_owned(),
            header_template: "{signatures}".to_owned(),
            ..SigningConfig::outpost_default()
        };
        cfg.validate().unwrap();
        let h = headers(
            &cfg,
            &m,
            &Secrets {
                current: Some(OUTPOST_NEW),
                previous: None,
            },
            ts,
        );
        assert_eq!(get(&h, "x-outpost-signature"), Some(F));
    }

    #[test]
    fn no_secret_means_no_signature_but_other_headers() {
        let meta = BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]);
        let ts = at(1_700_000_000);
        let m = msg(BODY, &meta, ts);
        let h = headers(&SigningConfig::default(), &m, &Secrets::default(), ts);
        assert_eq!(
            h,
            vec![
                ("webhook-id".to_owned(), "evt_123".to_owned()),
                ("webhook-timestamp".to_owned(), "1700000000".to_owned()),
                ("x-herald-topic".to_owned(), "user.created".to_owned()),
                ("x-herald-tenant".to_owned(), "acme".to_owned()),
            ]
        );
        let h = headers(
            &SigningConfig::outpost_default(),
            &m,
            &Secrets::default(),
            ts,
        );
        assert_eq!(h.len(), 4);
        assert_eq!(get(&h, "x-outpost-signature"), None);
        assert_eq!(get(&h, "x-outpost-tenant"), Some("acme"));
    }

    #[test]
    fn metadata_headers_and_skipped_keys() {
        let meta: BTreeMap<String, String> = [
            ("Region", "eu"),
            ("region", "us"), // same header as "Region": first in map order wins
            ("source", "billing"),
            ("bad key", "x"),                   // space: not a token
            ("", "x"),                          // empty
            ("a:b", "x"),                       // colon
            ("ünï", "x"),                       // non-ASCII
            ("multi", "line\r\nInjected: yes"), // invalid value
            ("tab", "a\tb"),                    // tab is fine
            ("signature", "forged"),            // the scheme's own header
            ("event-id", "other"),
            ("topic", "other"),
            ("timestamp", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let ts = at(1_700_000_000);
        let m = msg(BODY, &meta, ts);
        let secrets = Secrets {
            current: Some(OUTPOST_NEW),
            previous: None,
        };

        let h = headers(&SigningConfig::outpost_default(), &m, &secrets, ts);
        let names: Vec<_> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-outpost-event-id",
                "x-outpost-topic",
                "x-outpost-timestamp",
                "x-outpost-signature",
                "x-outpost-region",
                "x-outpost-source",
                "x-outpost-tab",
            ]
        );
        assert_eq!(get(&h, "x-outpost-region"), Some("eu"));
        assert_eq!(get(&h, "x-outpost-tab"), Some("a\tb"));
        assert_eq!(
            get(&h, "x-outpost-signature"),
            Some(format!("v0={A}").as_str())
        );
        assert_eq!(get(&h, "x-outpost-event-id"), Some("evt_123"));

        // Standard mode: x-herald- prefix; metadata cannot take webhook-* names even with a
        // matching prefix, nor a reserved name with an empty prefix.
        let h = headers(&SigningConfig::default(), &m, &Secrets::default(), ts);
        assert_eq!(get(&h, "x-herald-source"), Some("billing"));
        assert_eq!(get(&h, "x-herald-topic"), Some("user.created"));
        assert_eq!(get(&h, "x-herald-signature"), Some("forged")); // harmless: not a scheme header
        let cfg = SigningConfig {
            header_prefix: "webhook-".to_owned(),
            ..SigningConfig::default()
        };
        let h = headers(&cfg, &m, &Secrets::default(), ts);
        assert_eq!(get(&h, "webhook-signature"), None);
        assert_eq!(get(&h, "webhook-id"), Some("evt_123"));
        let reserved = BTreeMap::from([
            ("Host".to_owned(), "evil".to_owned()),
            ("content-type".to_owned(), "text/plain".to_owned()),
            ("x-ok".to_owned(), "1".to_owned()),
        ]);
        let cfg = SigningConfig {
            header_prefix: String::new(),
            ..SigningConfig::outpost_default()
        };
        cfg.validate().unwrap();
        let h = headers(&cfg, &msg(BODY, &reserved, ts), &secrets, ts);
        let names: Vec<_> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["event-id", "topic", "timestamp", "signature", "x-ok"]
        );
    }

    #[test]
    fn invalid_event_id_or_topic_header_is_left_out() {
        let meta = BTreeMap::new();
        let ts = at(1_700_000_000);
        let m = Message {
            event_id: "evt\n1",
            topic: "a\u{7f}",
            timestamp: ts,
            body: BODY,
            metadata: &meta,
        };
        let h = headers(
            &SigningConfig::outpost_default(),
            &m,
            &Secrets {
                current: Some("k"),
                previous: None,
            },
            ts,
        );
        assert_eq!(get(&h, "x-outpost-event-id"), None);
        assert_eq!(get(&h, "x-outpost-topic"), None);
        assert!(get(&h, "x-outpost-signature").is_some());
        // Templated header carrying the bad topic is dropped rather than sent broken.
        let cfg = SigningConfig {
            header_template: "{topic};{signatures}".to_owned(),
            ..SigningConfig::outpost_default()
        };
        let h = headers(
            &cfg,
            &m,
            &Secrets {
                current: Some("k"),
                previous: None,
            },
            ts,
        );
        assert_eq!(get(&h, "x-outpost-signature"), None);
    }

    #[test]
    fn validate_rejects_bad_configs() {
        SigningConfig::default().validate().unwrap();
        SigningConfig::outpost_default().validate().unwrap();
        let with = |f: fn(&mut SigningConfig)| {
            let mut c = SigningConfig::outpost_default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        let e = with(|c| c.content_template = "{timestamp}.{bdy}".into());
        assert_eq!(e.field, "content_template");
        assert!(e.problem.contains("{bdy}"), "{e}");
        assert_eq!(
            with(|c| c.content_template = "{timestamp}".into()).field,
            "content_template"
        );
        assert_eq!(
            with(|c| c.content_template = "{body}.{signatures}".into()).field,
            "content_template"
        );
        assert_eq!(
            with(|c| c.content_template = "{body".into()).field,
            "content_template"
        );
        assert_eq!(
            with(|c| c.content_template = "{{.Body}".into()).field,
            "content_template"
        );
        assert_eq!(
            with(|c| c.content_template = "{{.Data}}{body}".into()).field,
            "content_template"
        );
        assert_eq!(
            with(|c| c.content_template = "{{.Timestamp}}.{body}".into()).field,
            "content_template"
        );
        assert_eq!(
            with(|c| c.header_template = "v0={body}".into()).field,
            "header_template"
        );
        assert_eq!(
            with(|c| c.header_template = "t={timestamp}".into()).field,
            "header_template"
        );
        assert_eq!(
            with(|c| c.header_template = r#"v0={{.Signatures | join ", "}}"#.into()).field,
            "header_template"
        );
        assert_eq!(
            with(|c| c.header_template = "v0={signatures}\r\nx: y".into()).field,
            "header_template"
        );
        assert_eq!(
            with(|c| c.header_prefix = "x outpost-".into()).field,
            "header_prefix"
        );
        assert_eq!(
            with(|c| c.header_prefix = "x-outpost:".into()).field,
            "header_prefix"
        );
        assert_eq!(
            with(|c| c.signature_header = Some(String::new())).field,
            "signature_header"
        );
        assert_eq!(
            with(|c| c.signature_header = Some("Content-Type".into())).field,
            "signature_header"
        );
        assert_eq!(
            with(|c| c.signature_header = Some("X-Outpost-Topic".into())).field,
            "signature_header"
        );
        let e = with(|c| c.content_template = "{nope}{body}".into());
        assert_eq!(e.to_string().split(':').next(), Some("content_template"));
    }

    #[test]
    fn invalid_templates_fall_back_to_defaults_without_panicking() {
        let meta = BTreeMap::new();
        let ts = at(1_700_000_000);
        let cfg = SigningConfig {
            content_template: "{{.Body".to_owned(),
            header_template: "{whatever}".to_owned(),
            ..SigningConfig::outpost_default()
        };
        let h = headers(
            &cfg,
            &msg(BODY, &meta, ts),
            &Secrets {
                current: Some(OUTPOST_NEW),
                previous: None,
            },
            ts,
        );
        assert_eq!(
            get(&h, "x-outpost-signature"),
            Some(format!("v0={A}").as_str())
        );
    }

    #[test]
    fn generated_secrets() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"));
        assert!(is_valid_secret(&a));
        assert_eq!(STANDARD.decode(&a[6..]).unwrap().len(), 32);
        Webhook::new(&a).unwrap();
    }

    #[test]
    fn secret_validation() {
        for ok in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // 24 bytes
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            // Outpost's default generator: whsec_ + 64 hex chars (valid base64, 48 bytes).
            "whsec_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my-secret",
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 32 bytes, padding omitted
        ] {
            assert!(is_valid_secret(ok), "{ok}");
        }
        for bad in [
            "",
            "whsec_",
            "whsec_c2hvcnQ=", // 5 bytes
            "whsec_not*base64!",
            "has space",
            "tab\tin",
            "ünïcode",
            &"a".repeat(1025),
            &format!("whsec_{}", STANDARD.encode([0u8; 65])),
        ] {
            assert!(!is_valid_secret(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_debug_is_redacted() {
        let s = Secrets {
            current: Some("top-secret"),
            previous: Some(("older-secret", at(5))),
        };
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("top-secret") && !dbg.contains("older-secret"),
            "{dbg}"
        );
    }
}

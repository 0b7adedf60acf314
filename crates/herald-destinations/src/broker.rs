//! Pieces shared by the message-system destination types (`rabbitmq`, `nats`, `redis_stream`,
//! `mqtt`): field schemas, `host:port` parsing, name templates, target checks and timeouts.
//!
//! Every broker type follows the same rules, so they are written once here:
//!
//! - **Addresses** are `host:port` (`[v6]:port` for IPv6 literals). Before connecting, the host
//!   is resolved and every address is checked against the [`TargetPolicy`] (loopback and
//!   private networks need `--dev` or the allow-list, exactly as for webhooks); the connection
//!   then goes to a checked IP address, so DNS cannot answer differently a second time.
//! - **Templates** (routing key, subject, stream key, MQTT topic) are literal text with the
//!   placeholders `{topic}` and `{event_id}`; any other `{…}` is rejected at create.
//! - **Signing**: each type has an optional `secret` credential. With it, the engine signs as
//!   for webhooks and the signature travels in the protocol's headers; without it, messages
//!   carry every header except the signature.

// Some helpers serve only some of the types; a build with a subset of them must stay clean.
#![cfg_attr(
    not(all(
        feature = "rabbitmq",
        feature = "nats",
        feature = "redis_stream",
        feature = "mqtt"
    )),
    allow(dead_code)
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use herald_core::destination::{DeliveryError, FieldError, FieldSpec, OutboundMessage};
use herald_core::signing;

use crate::target::TargetPolicy;

/// A text field of a type's schema.
pub(crate) fn field(
    key: &str,
    label: &str,
    description: &str,
    required: bool,
    sensitive: bool,
) -> FieldSpec {
    FieldSpec {
        key: key.into(),
        kind: "text".into(),
        label: label.into(),
        description: description.into(),
        required,
        sensitive,
        default: None,
        pattern: None,
    }
}

/// Adds a default value to a field.
pub(crate) fn with_default(mut f: FieldSpec, default: &str) -> FieldSpec {
    f.default = Some(default.into());
    f
}

/// Adds a pattern to a field.
pub(crate) fn with_pattern(mut f: FieldSpec, pattern: &str) -> FieldSpec {
    f.pattern = Some(pattern.into());
    f
}

/// Pattern of `server_url`: `host:port` or `[v6]:port`, the port optional.
pub(crate) const SERVER_PATTERN: &str = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]@]+)(:[0-9]{1,5})?$";

/// The `server_url` field.
pub(crate) fn server_field(what: &str, example: &str) -> FieldSpec {
    with_pattern(
        field(
            "server_url",
            "Server address",
            &format!("{what} server address (host:port), e.g. {example}."),
            true,
            false,
        ),
        SERVER_PATTERN,
    )
}

/// A `"true"`/`"false"` select field.
pub(crate) fn bool_field(key: &str, label: &str, description: &str, default: &str) -> FieldSpec {
    let mut f = with_pattern(
        with_default(field(key, label, description, false, false), default),
        "^(true|false)?$",
    );
    f.kind = "select".into();
    f
}

/// The per-destination `signing_mode` override the engine reads.
pub(crate) fn signing_mode_field() -> FieldSpec {
    let mut f = with_pattern(
        field(
            "signing_mode",
            "Signature scheme",
            "Herald extension: `standard` (Standard Webhooks headers) or `outpost` (x-outpost-* headers); empty uses the server default.",
            false,
            false,
        ),
        "^(standard|outpost)?$",
    );
    f.kind = "select".into();
    f
}

/// The optional signing secret.
pub(crate) fn secret_field() -> FieldSpec {
    field(
        "secret",
        "Signing secret",
        "Herald extension: when set, every message carries a signature header computed with this secret \
         (a whsec_ Standard Webhooks key, or any 1–1024 printable characters in outpost mode). \
         Not generated: without it, messages are not signed.",
        false,
        true,
    )
}

/// Checks the settings every broker type shares: `server_url`, `signing_mode`, `secret` and
/// the `true`/`false` fields named in `bools`.
pub(crate) fn validate_common(
    policy: &TargetPolicy,
    config: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, String>,
    bools: &[&str],
    errs: &mut Vec<FieldError>,
) {
    if let Some(raw) = config.get("server_url") {
        match parse_server(raw, 1) {
            Err(e) => errs.push(FieldError::new("config.server_url", e)),
            Ok((host, _)) => {
                if let Ok(ip) = host.parse::<IpAddr>()
                    && let Err(b) = policy.check_ip(ip)
                {
                    errs.push(FieldError::new("config.server_url", b.0));
                }
            }
        }
    }
    if let Some(m) = config.get("signing_mode").filter(|s| !s.is_empty())
        && m != "standard"
        && m != "outpost"
    {
        errs.push(FieldError::new(
            "config.signing_mode",
            format!("{m:?} is not a signature scheme; use standard or outpost"),
        ));
    }
    for key in bools {
        if let Some(v) = config.get(*key)
            && parse_bool(v).is_none()
        {
            errs.push(FieldError::new(
                format!("config.{key}"),
                format!("{v:?} must be \"true\" or \"false\""),
            ));
        }
    }
    if let Some(s) = credentials.get("secret").filter(|s| !s.is_empty())
        && !signing::is_valid_secret(s)
    {
        errs.push(FieldError::new(
            "credentials.secret",
            "must be 1 to 1024 printable ASCII characters without spaces; a whsec_ secret must be base64 of 24 to 64 bytes",
        ));
    }
}

/// `"true"` / `"false"`; empty means false.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "true" => Some(true),
        "false" | "" => Some(false),
        _ => None,
    }
}

/// Reads a `true`/`false` config value, `default` when absent or empty.
pub(crate) fn config_bool(config: &BTreeMap<String, String>, key: &str, default: bool) -> bool {
    match config.get(key).map(|v| v.trim()) {
        None | Some("") => default,
        Some(v) => parse_bool(v).unwrap_or(default),
    }
}

/// Splits `host:port` (or `[v6]:port`; the port defaults to `default_port`).
pub(crate) fn parse_server(raw: &str, default_port: u16) -> Result<(String, u16), String> {
    let raw = raw.trim();
    let bad =
        || format!("{raw:?} is not a server address; expected host:port, e.g. localhost:5672");
    if raw.is_empty() || raw.contains("://") || raw.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (h.to_string(), port)
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (raw.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ':']) && !raw.starts_with('[') {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port number (1–65535)"))?,
    };
    Ok((host, port))
}

/// A name template with `{topic}` and `{event_id}` placeholders.
#[derive(Debug, Clone)]
pub(crate) struct Template(Vec<Part>);

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Topic,
    EventId,
}

impl Template {
    /// Parses a template; names the problem when it has an unknown or unclosed placeholder.
    pub(crate) fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!(
                    "{raw:?} has a '}}' without '{{'; placeholders are {{topic}} and {{event_id}}"
                ));
            }
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{raw:?} has an unclosed '{{'"))?;
            parts.push(match &after[..close] {
                "topic" => Part::Topic,
                "event_id" => Part::EventId,
                other => {
                    return Err(format!(
                        "{raw:?} uses {{{other}}}; the placeholders are {{topic}} and {{event_id}}"
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(parts))
    }

    /// The literal text, with placeholders left out (for checks that need no message).
    pub(crate) fn literal_text(&self) -> String {
        self.0
            .iter()
            .filter_map(|p| match p {
                Part::Lit(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether the template has no placeholder.
    pub(crate) fn is_literal(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Renders the template for one message.
    pub(crate) fn render(&self, msg: &OutboundMessage) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Topic => out.push_str(&msg.topic),
                Part::EventId => out.push_str(&msg.event_id),
            }
        }
        out
    }
}

/// Reads an optional template from config, with a default.
pub(crate) fn config_template(
    config: &BTreeMap<String, String>,
    key: &str,
    default: &str,
) -> Result<Template, FieldError> {
    let raw = config
        .get(key)
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(default);
    Template::parse(raw).map_err(|e| FieldError::new(format!("config.{key}"), e))
}

/// Resolves `host` and returns the first address the policy allows.
///
/// A refused address is a permanent failure (`blocked_target`): the configuration names a
/// target this server may not reach. A failed lookup is retried (`dns_error`).
pub(crate) async fn resolve(
    policy: &TargetPolicy,
    host: &str,
    port: u16,
) -> Result<SocketAddr, DeliveryError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| DeliveryError::retry("dns_error", format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    let mut refusal = None;
    for a in &addrs {
        match policy.check_ip(a.ip()) {
            Ok(()) => return Ok(*a),
            Err(b) => refusal = Some(b.0),
        }
    }
    Err(match refusal {
        Some(why) => DeliveryError::permanent("blocked_target", format!("{host}: {why}")),
        None => DeliveryError::retry("dns_error", format!("{host} resolved to no address")),
    })
}

/// Runs `fut` with the attempt's deadline; a timeout is a retryable `timeout` error.
pub(crate) async fn within<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, DeliveryError>>,
) -> Result<T, DeliveryError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(DeliveryError::retry(
            "timeout",
            format!("{what}: no answer within {} ms", timeout.as_millis()),
        )),
    }
}

/// The innermost message of an error chain (the informative one: "connection refused", …).
pub(crate) fn root_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !m.is_empty() && !msg.contains(&m) {
            msg = format!("{msg}: {m}");
        }
        cur = s.source();
    }
    msg
}

/// A short random suffix (client ids, connection names).
pub(crate) fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> OutboundMessage {
        OutboundMessage {
            event_id: "evt_1".into(),
            delivery_id: "dlv_1".into(),
            topic: "user.created".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            body: std::sync::Arc::from(&b"{}"[..]),
            headers: vec![],
            metadata: Default::default(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn templates() {
        let t = Template::parse("events.{topic}.{event_id}").unwrap();
        assert_eq!(t.render(&msg()), "events.user.created.evt_1");
        assert!(!t.is_literal());
        assert_eq!(t.literal_text(), "events..");
        assert!(Template::parse("plain").unwrap().is_literal());
        assert!(Template::parse("{nope}").unwrap_err().contains("{nope}"));
        assert!(Template::parse("a{topic").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a}").is_err());
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("localhost:5672", 1).unwrap(),
            ("localhost".into(), 5672)
        );
        assert_eq!(parse_server("h", 4222).unwrap(), ("h".into(), 4222));
        assert_eq!(parse_server("[::1]:1883", 1).unwrap(), ("::1".into(), 1883));
        assert_eq!(parse_server("[::1]", 9).unwrap(), ("::1".into(), 9));
        for bad in [
            "",
            "amqp://h:1",
            "h:0",
            "h:70000",
            "h:x",
            "a b:1",
            "u@h:1",
            "[zz]:1",
            ":5672",
        ] {
            assert!(parse_server(bad, 1).is_err(), "{bad}");
        }
        assert!(parse_server("rabbit.internal:5671", 1).is_ok());
    }

    #[test]
    fn bools() {
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool(""), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[tokio::test]
    async fn resolve_applies_the_policy() {
        let strict = TargetPolicy::default();
        let e = resolve(&strict, "127.0.0.1", 5672).await.unwrap_err();
        assert_eq!(e.code, "blocked_target");
        assert_eq!(
            e.disposition,
            herald_core::destination::Disposition::Permanent
        );
        let dev = TargetPolicy {
            allow_private: true,
            ..TargetPolicy::default()
        };
        assert_eq!(
            resolve(&dev, "127.0.0.1", 5672).await.unwrap(),
            "127.0.0.1:5672".parse().unwrap()
        );
    }
}

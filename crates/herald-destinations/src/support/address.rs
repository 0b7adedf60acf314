//! Where a destination connects: typed `host:port` and endpoint fields, resolution checked
//! against the [`TargetPolicy`], and the attempt deadline.
//!
//! Before connecting, a host is resolved and every address is checked against the policy
//! (loopback and private networks need `--dev` or the allow-list, exactly as for webhooks);
//! the connection then goes to a checked IP address, so DNS cannot answer differently a
//! second time.

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use herald_core::destination::{DeliveryError, FieldError};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::target::{Blocked, TargetPolicy};

/// Pattern of a server address: `host:port` or `[v6]:port`, the port optional.
pub const SERVER_PATTERN: &str = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]@]+)(:[0-9]{1,5})?$";

/// A broker address as configured: `host:port` or `[v6]:port`; the port may be left out
/// (the type's default port applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port, when given.
    pub port: Option<u16>,
}

impl ServerAddress {
    /// Parses `host:port`, naming the problem.
    pub fn parse(raw: &str) -> Result<Self, String> {
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
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{p:?} is not a port number (1–65535)"))?,
            ),
        };
        Ok(Self { host, port })
    }

    /// The port, or `default`.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }

    /// Refuses an IP-literal host the policy does not allow (names are checked when they
    /// are resolved, at every connection).
    pub fn check(&self, policy: &TargetPolicy, field: &str) -> Result<(), FieldError> {
        policy
            .check_host(&self.host)
            .map_err(|b| FieldError::new(field, b.0))
    }
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host: Cow<'_, str> = if self.host.contains(':') {
            format!("[{}]", self.host).into()
        } else {
            self.host.as_str().into()
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

impl<'de> Deserialize<'de> for ServerAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ServerAddress {
    fn schema_name() -> Cow<'static, str> {
        "ServerAddress".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": SERVER_PATTERN, "x-herald-target": true })
    }
}

/// An absolute `http://` or `https://` URL (an endpoint override, a queue URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub url::Url);

impl HttpUrl {
    /// Parses and checks the scheme.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url =
            url::Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{raw:?} must be an http:// or https:// URL"));
        }
        Ok(Self(url))
    }

    /// Refuses a URL the target policy does not allow.
    pub fn check(&self, policy: &TargetPolicy, field: &str) -> Result<(), FieldError> {
        policy
            .check_url(&self.0)
            .map_err(|Blocked(why)| FieldError::new(field, why))
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl JsonSchema for HttpUrl {
    fn schema_name() -> Cow<'static, str> {
        "HttpUrl".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "uri", "pattern": "^https?://.+", "x-herald-target": true })
    }
}

/// Resolves `host` and returns the first address the policy allows.
///
/// A refused address is a permanent failure (`blocked_target`): the configuration names a
/// target this server may not reach. A failed lookup is retried (`dns_error`).
pub async fn resolve(
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
pub async fn within<T>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        let a = ServerAddress::parse("localhost:5672").unwrap();
        assert_eq!((a.host.as_str(), a.port_or(1)), ("localhost", 5672));
        assert_eq!(ServerAddress::parse("h").unwrap().port_or(4222), 4222);
        let v6 = ServerAddress::parse("[::1]:1883").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(1883)));
        assert_eq!(v6.to_string(), "[::1]:1883");
        assert_eq!(ServerAddress::parse("[::1]").unwrap().port_or(9), 9);
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
            assert!(ServerAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints() {
        assert!(HttpUrl::parse("https://sqs.us-east-1.amazonaws.com/1/q").is_ok());
        assert!(HttpUrl::parse("ftp://x").unwrap_err().contains("http"));
        assert!(HttpUrl::parse("nope").is_err());
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

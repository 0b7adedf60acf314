//! Target safety: which network addresses a destination may reach.
//!
//! By default only public addresses over HTTPS are allowed. The check runs on the *resolved*
//! addresses (so a DNS name pointing at `127.0.0.1` is refused) inside the HTTP client's own
//! resolver, which means the connection is made to exactly the addresses that were checked —
//! there is no second lookup a rebinding DNS server could answer differently. IP-literal URLs
//! never reach a resolver, so [`TargetPolicy::check_url`] checks them separately.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Which targets are allowed.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Allow `http://` URLs (development).
    pub allow_http: bool,
    /// Allow loopback, private, link-local and other non-public addresses (development).
    pub allow_private: bool,
    /// Non-public networks allowed anyway, e.g. `10.1.0.0/16`.
    pub allow_list: Vec<IpNet>,
}

/// An IP network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse().map_err(|_| format!("{s:?}: bad prefix length"))?
        };
        if prefix > max {
            return Err(format!("{s:?}: prefix length must be at most {max}"));
        }
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A refused target.
#[derive(Debug, Clone, thiserror::Error)]
#[error("blocked target: {0}")]
pub struct Blocked(pub String);

/// Why an address is not public, or `None` when it is.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            v6_reason(v6)
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(if ip.is_loopback() {
        "loopback address"
    } else if ip.is_private() {
        "private network address"
    } else if ip.is_link_local() {
        "link-local address (cloud metadata services live here)"
    } else if ip.is_unspecified() || o[0] == 0 {
        "unspecified address"
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        "broadcast, multicast or reserved address"
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        "carrier-grade NAT address"
    } else if o[0] == 198 && (o[1] == 18 || o[1] == 19) {
        "benchmarking network address"
    } else if (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
    {
        "reserved documentation or protocol address"
    } else {
        return None;
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(if ip.is_loopback() {
        "loopback address"
    } else if ip.is_unspecified() {
        "unspecified address"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "unique-local (private) address"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local address"
    } else if ip.is_multicast() {
        "multicast address"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation address"
    } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0 {
        "IPv4-compatible address"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        "NAT64 address"
    } else {
        return None;
    })
}

impl TargetPolicy {
    /// Checks one resolved address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Blocked> {
        if self.allow_private || self.allow_list.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match non_public_reason(ip) {
            Some(why) => Err(Blocked(format!(
                "{ip} is a {why}; only public addresses are allowed (use --dev or the private-network allow-list)"
            ))),
            None => Ok(()),
        }
    }

    /// Checks a host name as written in a destination, before any resolution: an IP literal
    /// (also the numeric forms resolvers accept, `2130706433`, `127.1`, `0x7f.1`), and
    /// `localhost` or a name under `.localhost` (always loopback, RFC 6761), are checked as
    /// the address they stand for. Other names are checked when resolved.
    pub fn check_host(&self, host: &str) -> Result<(), Blocked> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        if let Some(ip) = numeric_ipv4(bare) {
            return self.check_ip(IpAddr::V4(ip));
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        Ok(())
    }

    /// Checks a URL's scheme and, when its host is an IP literal, the address.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Blocked> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(Blocked(format!(
                    "{url} uses http://; only https:// is allowed outside --dev mode"
                )));
            }
            other => {
                return Err(Blocked(format!(
                    "scheme {other:?} is not supported; use https://"
                )));
            }
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => self.check_host(d),
            None => Err(Blocked(format!("{url} has no host"))),
        }
    }
}

/// The IPv4 address a resolver makes of an all-numeric host (`inet_aton`'s forms: one to four
/// parts, each decimal, `0x` hexadecimal or `0`-prefixed octal, the last filling the
/// remaining bytes), `None` for anything else.
pub fn numeric_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let v = if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            u32::from_str_radix(hex, 16).ok()?
        } else if p.len() > 1 && p.starts_with('0') {
            u32::from_str_radix(&p[1..], 8).ok()?
        } else if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()?
        } else {
            return None;
        };
        values.push(v);
    }
    let (last, head) = values.split_last()?;
    let mut n: u32 = 0;
    for (i, v) in head.iter().enumerate() {
        if *v > 255 {
            return None;
        }
        n |= v << (24 - 8 * i);
    }
    let rest_bits = 32 - 8 * head.len() as u32;
    if rest_bits < 32 && *last >= (1u32 << rest_bits) {
        return None;
    }
    Some(Ipv4Addr::from(n | last))
}

/// A DNS resolver for the HTTP client that drops every address the policy refuses and fails
/// when none is left, so connections only ever go to checked addresses.
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<TargetPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::with_capacity(addrs.len());
            let mut refusal = None;
            for a in addrs {
                match policy.check_ip(a.ip()) {
                    Ok(()) => allowed.push(a),
                    Err(e) => refusal = Some(e),
                }
            }
            if allowed.is_empty() {
                let e = refusal
                    .unwrap_or_else(|| Blocked(format!("{host} did not resolve to any address")));
                return Err(Box::new(Blocked(format!("{host}: {}", e.0)))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        let p = TargetPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(
                p.check_ip(bad.parse().unwrap()).is_err(),
                "{bad} should be blocked"
            );
        }
        for good in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(
                p.check_ip(good.parse().unwrap()).is_ok(),
                "{good} should be allowed"
            );
        }
    }

    #[test]
    fn allow_list_and_dev() {
        let p = TargetPolicy {
            allow_list: vec!["10.1.0.0/16".parse().unwrap()],
            ..Default::default()
        };
        assert!(p.check_ip("10.1.2.3".parse().unwrap()).is_ok());
        assert!(p.check_ip("10.2.0.1".parse().unwrap()).is_err());
        let dev = TargetPolicy {
            allow_http: true,
            allow_private: true,
            allow_list: vec![],
        };
        assert!(
            dev.check_url(&"http://127.0.0.1:9/x".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn numeric_hosts_and_localhost_are_checked_before_resolution() {
        assert_eq!(numeric_ipv4("2130706433"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(numeric_ipv4("127.1"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(numeric_ipv4("0x7f.1"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(numeric_ipv4("0177.0.0.1"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(numeric_ipv4("10.1.2"), Some(Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(numeric_ipv4("example.com"), None);
        assert_eq!(numeric_ipv4("1.2.3.4.5"), None);
        assert_eq!(numeric_ipv4("256.1"), None);
        let prod = TargetPolicy::default();
        for h in [
            "2130706433",
            "127.1",
            "localhost",
            "a.localhost",
            "[::1]",
            "LOCALHOST.",
        ] {
            assert!(prod.check_host(h).is_err(), "{h}");
        }
        assert!(prod.check_host("example.com").is_ok());
        assert!(prod.check_host("8.8.8.8").is_ok());
        let dev = TargetPolicy {
            allow_private: true,
            ..Default::default()
        };
        assert!(dev.check_host("localhost").is_ok());
    }

    #[test]
    fn urls() {
        let p = TargetPolicy::default();
        assert!(
            p.check_url(&"http://example.com/".parse().unwrap())
                .is_err()
        );
        assert!(
            p.check_url(&"https://example.com/".parse().unwrap())
                .is_ok()
        );
        assert!(p.check_url(&"https://127.0.0.1/".parse().unwrap()).is_err());
        assert!(p.check_url(&"https://[::1]/".parse().unwrap()).is_err());
        assert!(p.check_url(&"ftp://example.com/".parse().unwrap()).is_err());
        // Exotic IPv4 spellings are normalised by the URL parser, then checked.
        assert!(p.check_url(&"https://0x7f.1/".parse().unwrap()).is_err());
        assert!(
            p.check_url(&"https://2130706433/".parse().unwrap())
                .is_err()
        );
    }
}

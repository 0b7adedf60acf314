//! Query-string parsing with the notations the Outpost contract uses.
//!
//! A list parameter may be written `id=a` (one value), `id=a&id=b` (repeated), `id[]=a&id[]=b`
//! or `id[0]=a&id[1]=b` (bracket notation, ordered by index). Objects use deepObject style:
//! `time[gte]=…`, and the two nest: `filters[topic][0]=…`. Empty values count as absent, so
//! `next=` is the same as no cursor.
//!
//! Also here: the parsing shared by every list endpoint (limit, direction, cursors, time
//! ranges), each answering the contract's 400 / 422 on bad input.

use herald_store::{Cursor, Dir, PageRequest, TimeRange};
use jiff::Timestamp;

use crate::error::ApiError;

/// A parsed query string: `(base name, bracket segments, value)` in order of appearance.
#[derive(Debug, Default, Clone)]
pub struct Params {
    entries: Vec<(String, Vec<String>, String)>,
}

impl Params {
    /// Parses a raw (still percent-encoded) query string.
    pub fn parse(raw: Option<&str>) -> Self {
        let entries = raw
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| {
                        let (base, segments) = split_key(&k);
                        (base, segments, v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { entries }
    }

    /// The first non-empty value of a plain parameter (`name=value`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.at(&[name])
    }

    /// The first non-empty value at a bracket path: `at(&["time", "gte"])` reads `time[gte]`.
    pub fn at(&self, path: &[&str]) -> Option<&str> {
        self.entries
            .iter()
            .find(|(base, segs, v)| !v.is_empty() && key_is(base, segs, path))
            .map(|(_, _, v)| v.as_str())
    }

    /// Every value of a list parameter at `path`, in any of the list notations.
    pub fn list_at(&self, path: &[&str]) -> Vec<String> {
        let mut plain = Vec::new();
        let mut indexed: Vec<(u64, usize, String)> = Vec::new();
        for (seq, (base, segs, v)) in self.entries.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            if key_is(base, segs, path) {
                plain.push(v.clone());
            } else if segs.len() == path.len() && key_is(base, &segs[..path.len() - 1], path) {
                match segs[path.len() - 1].as_str() {
                    "" => plain.push(v.clone()),
                    idx => {
                        if let Ok(i) = idx.parse::<u64>() {
                            indexed.push((i, seq, v.clone()));
                        }
                    }
                }
            }
        }
        indexed.sort();
        plain.extend(indexed.into_iter().map(|(_, _, v)| v));
        plain
    }

    /// [`Params::list_at`] for a top-level name.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.list_at(&[name])
    }

    /// A list of enumerated values where commas also separate (`include=event,response_data`).
    pub fn list_split(&self, name: &str) -> Vec<String> {
        self.list(name)
            .iter()
            .flat_map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The bracket keys used under `base`, e.g. `["topic", "code"]` for `filters[topic]=…&filters[code]=…`.
    pub fn keys_under(&self, base: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(b, segs, _)| b == base && !segs.is_empty())
            .map(|(_, s, _)| s[0].clone())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Whether `(base, segments)` spells exactly `path`.
fn key_is(base: &str, segments: &[String], path: &[&str]) -> bool {
    path.first() == Some(&base)
        && segments.len() + 1 == path.len()
        && segments.iter().zip(&path[1..]).all(|(s, p)| s == p)
}

/// `a[b][0]` → (`a`, [`b`, `0`]). A key that is not well-formed bracket notation is kept
/// whole as its own name.
fn split_key(key: &str) -> (String, Vec<String>) {
    let Some(open) = key.find('[') else {
        return (key.to_string(), Vec::new());
    };
    let (base, mut rest) = key.split_at(open);
    let mut segments = Vec::new();
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else {
            return (key.to_string(), Vec::new());
        };
        segments.push(stripped[..close].to_string());
        rest = &stripped[close + 1..];
    }
    if !rest.is_empty() || base.is_empty() {
        return (key.to_string(), Vec::new());
    }
    (base.to_string(), segments)
}

/// Parses an RFC 3339 timestamp or a `YYYY-MM-DD` date (midnight UTC).
pub fn parse_time(s: &str) -> Option<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let date: jiff::civil::Date = s.parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// `limit`: default when absent or empty, else an integer in `1..=max` (400 otherwise).
pub fn limit(params: &Params, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(raw) = params.get("limit") else {
        return Ok(default);
    };
    let n: i64 = raw
        .parse()
        .map_err(|_| ApiError::bad_request("invalid limit: must be an integer"))?;
    if n < 1 || n > i64::from(max) {
        return Err(ApiError::bad_request(format!(
            "invalid limit: must be between 1 and {max}"
        )));
    }
    Ok(n as u32)
}

/// `dir`: `asc` or `desc` (default), 422 otherwise.
pub fn dir(params: &Params) -> Result<Dir, ApiError> {
    match params.get("dir") {
        None | Some("desc") => Ok(Dir::Desc),
        Some("asc") => Ok(Dir::Asc),
        Some(other) => Err(ApiError::invalid(
            "dir",
            format!("must be \"asc\" or \"desc\", got {other:?}"),
        )),
    }
}

/// `order_by`: only `allowed` is accepted (422 otherwise).
pub fn order_by(params: &Params, allowed: &str) -> Result<(), ApiError> {
    match params.get("order_by") {
        None => Ok(()),
        Some(v) if v == allowed => Ok(()),
        Some(other) => Err(ApiError::invalid(
            "order_by",
            format!("must be {allowed:?}, got {other:?}"),
        )),
    }
}

/// `limit`, `dir`, `next` / `prev` (mutually exclusive, 400 when both are given).
pub fn page(params: &Params, default_limit: u32, max_limit: u32) -> Result<PageRequest, ApiError> {
    let cursor = match (params.get("next"), params.get("prev")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "next and prev are mutually exclusive",
            ));
        }
        (Some(n), None) => Some(Cursor::Next(n.to_string())),
        (None, Some(p)) => Some(Cursor::Prev(p.to_string())),
        (None, None) => None,
    };
    Ok(PageRequest {
        limit: limit(params, default_limit, max_limit)?,
        dir: dir(params)?,
        cursor,
    })
}

/// `time[gte|gt|lte|lt]` (422 naming the key when a value is not a time; 400 for an
/// operator the contract does not define).
pub fn time_range(params: &Params, name: &str) -> Result<TimeRange, ApiError> {
    let mut range = TimeRange::default();
    for key in params.keys_under(name) {
        let slot = match key.as_str() {
            "gte" => &mut range.gte,
            "gt" => &mut range.gt,
            "lte" => &mut range.lte,
            "lt" => &mut range.lt,
            other => {
                return Err(ApiError::bad_request(format!(
                    "operator {other:?} is not supported in {name}[…]; use gte, gt, lte or lt"
                )));
            }
        };
        if let Some(raw) = params.at(&[name, &key]) {
            *slot = Some(parse_time(raw).ok_or_else(|| {
                ApiError::invalid(
                    &format!("{name}[{key}]"),
                    "invalid format, expected RFC 3339 or YYYY-MM-DD",
                )
            })?);
        }
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        Params::parse(Some(q))
    }

    #[test]
    fn list_notations() {
        assert_eq!(p("id=a").list("id"), ["a"]);
        assert_eq!(p("id=a&id=b").list("id"), ["a", "b"]);
        assert_eq!(p("id[]=a&id[]=b").list("id"), ["a", "b"]);
        assert_eq!(p("id[1]=b&id[0]=a").list("id"), ["a", "b"]);
        assert_eq!(p("id%5B0%5D=a&id%5B1%5D=b").list("id"), ["a", "b"]);
        assert_eq!(p("id=&other=x").list("id"), Vec::<String>::new());
        assert_eq!(p("ids=a").list("id"), Vec::<String>::new());
    }

    #[test]
    fn nested() {
        let q = p("time[gte]=2024-01-01&filters[topic][0]=a&filters[topic][1]=b&filters[code]=200");
        assert_eq!(q.at(&["time", "gte"]), Some("2024-01-01"));
        assert_eq!(q.list_at(&["filters", "topic"]), ["a", "b"]);
        assert_eq!(q.list_at(&["filters", "code"]), ["200"]);
        assert_eq!(q.keys_under("filters"), ["code", "topic"]);
        assert_eq!(q.get("time"), None);
    }

    #[test]
    fn malformed_keys_stay_whole() {
        assert_eq!(split_key("a[b"), ("a[b".to_string(), vec![]));
        assert_eq!(split_key("a[b]c"), ("a[b]c".to_string(), vec![]));
        assert_eq!(split_key("[x]"), ("[x]".to_string(), vec![]));
    }

    #[test]
    fn limits_and_cursors() {
        assert_eq!(limit(&p(""), 20, 100).unwrap(), 20);
        assert_eq!(limit(&p("limit="), 20, 100).unwrap(), 20);
        assert_eq!(limit(&p("limit=100"), 20, 100).unwrap(), 100);
        for bad in ["limit=0", "limit=101", "limit=-1", "limit=ten", "limit=1.5"] {
            assert_eq!(limit(&p(bad), 20, 100).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(
            page(&p("next=a&prev=b"), 20, 100).unwrap_err().status(),
            400
        );
        assert_eq!(
            page(&p("next=&prev=b"), 20, 100).unwrap().cursor,
            Some(Cursor::Prev("b".into()))
        );
        assert_eq!(dir(&p("dir=up")).unwrap_err().status(), 422);
    }

    #[test]
    fn times() {
        assert!(parse_time("2024-01-01T00:00:00Z").is_some());
        assert!(parse_time("2024-01-01T00:00:00.123+02:00").is_some());
        assert_eq!(parse_time("2024-01-02"), parse_time("2024-01-02T00:00:00Z"));
        assert!(parse_time("yesterday").is_none());
        let r = time_range(&p("time[gte]=2024-01-01&time[lt]=2024-02-01"), "time").unwrap();
        assert!(r.gte.is_some() && r.lt.is_some() && r.gt.is_none());
        assert_eq!(
            time_range(&p("time[gte]=nope"), "time")
                .unwrap_err()
                .status(),
            422
        );
        assert_eq!(
            time_range(&p("time[any]=x"), "time").unwrap_err().status(),
            400
        );
    }
}

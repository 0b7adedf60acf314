//! Value encodings both stores share: times as microseconds since the Unix epoch, JSON as
//! text, topic lists with `"*"` for "every topic".

use herald_core::{Metadata, Topics};
use jiff::Timestamp;

use crate::{Result, StoreError};

/// Microseconds since the epoch.
pub(crate) fn us(t: Timestamp) -> i64 {
    t.as_microsecond()
}

/// A stored microsecond value as a timestamp (the epoch if out of range).
pub(crate) fn ts(v: i64) -> Timestamp {
    Timestamp::from_microsecond(v).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// JSON text of a value.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Decodes stored JSON text, naming the column when it is corrupt.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    column: &'static str,
    s: &str,
) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        column,
        detail: e.to_string(),
    })
}

/// Decodes optional stored metadata.
pub(crate) fn opt_meta(column: &'static str, s: Option<String>) -> Result<Option<Metadata>> {
    s.map(|s| from_json(column, &s)).transpose()
}

/// `"*"` or a JSON list.
pub(crate) fn topics_to_json(t: &Topics) -> String {
    match t {
        Topics::All => "\"*\"".into(),
        Topics::List(l) => to_json(l),
    }
}

/// Inverse of [`topics_to_json`].
pub(crate) fn topics_from_json(s: &str) -> Result<Topics> {
    if s == "\"*\"" {
        return Ok(Topics::All);
    }
    Ok(Topics::List(from_json("destinations.topics", s)?))
}

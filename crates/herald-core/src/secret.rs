//! [`Secret`]: a string that must never be printed.
//!
//! `Secret` implements neither `Debug` nor `Display`, so `format!("{secret:?}")` or a
//! `#[derive(Debug)]` on a struct holding one is a compile error, not a leak found later in a
//! log. Reading the value takes an explicit [`Secret::expose`]; printing goes through
//! [`Secret::masked`] (or a hand-written `Debug` that prints [`REDACTED`]). It deserializes
//! from a plain string, so configuration and typed destination credentials can hold one, and
//! its memory is wiped when dropped.
//!
//! It is not encryption: sealing secrets at rest is the store's job.

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroize;

/// What a redacted secret prints as.
pub const REDACTED: &str = "[redacted]";

/// A secret string (password, token, signing key). See the module docs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (a request header, a MAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The display form for API responses and CLI output: values of 10 characters or more keep
    /// their first 4 characters and the rest becomes `*`; shorter values become `****`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    /// A value that prints as [`REDACTED`] (for `Debug` impls of structs holding a secret).
    pub fn redacted(&self) -> Redacted {
        Redacted
    }
}

/// Masks a secret for display (see [`Secret::masked`]).
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    if n < 10 {
        "****".to_string()
    } else {
        value
            .chars()
            .take(4)
            .chain(std::iter::repeat_n('*', n - 4))
            .collect()
    }
}

/// Prints as [`REDACTED`].
#[derive(Clone, Copy)]
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// A secret is a string in the schema, marked `writeOnly`: typed destination specs read that
/// mark as "sensitive" (see [`crate::spec`]).
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_exposes() {
        let s = Secret::new("AKIAIOSFODNN7EXAMPLE");
        assert_eq!(s.masked(), "AKIA****************");
        assert_eq!(Secret::new("short").masked(), "****");
        assert_eq!(s.expose(), "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(format!("{:?}", s.redacted()), REDACTED);
        let parsed: Secret = serde_json::from_str("\"pw\"").unwrap();
        assert_eq!(parsed.expose(), "pw");
    }
}

//! Request bodies: the extractor that reads JSON under the size limit, and typed readers
//! over the parsed object.
//!
//! Bodies are read as a [`serde_json::Value`] first and then field by field, rather than
//! through `#[derive(Deserialize)]`, for three reasons: every problem names its field
//! (`config.url: expected a string`), all problems are reported at once, and merge-patch
//! needs to tell an absent field from an explicit `null`.
//!
//! Malformed JSON is a 400; JSON of the wrong shape is a 422; a body over the limit is a 413.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::SharedState;
use crate::error::{ApiError, Problems};
use crate::query::parse_time;

/// A JSON request body; `None` when the body is empty.
#[derive(Debug)]
pub struct JsonBody(pub Option<Value>);

impl FromRequest<SharedState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        read_json(req, state, state.config.max_body_bytes).await
    }
}

/// The body of `POST /publish/batch`: a [`JsonBody`] under the larger limit
/// `max_batch_body_bytes` (the route's own `DefaultBodyLimit` layer sets the same limit).
#[derive(Debug)]
pub struct BatchBody(pub JsonBody);

impl FromRequest<SharedState> for BatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        read_json(req, state, state.config.max_batch_body_bytes)
            .await
            .map(BatchBody)
    }
}

/// Reads a JSON body; `limit` is the one the route's `DefaultBodyLimit` enforces, named in
/// the 413.
async fn read_json(req: Request, state: &SharedState, limit: usize) -> Result<JsonBody, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("cannot read request body: {e}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonBody(None));
    }
    serde_json::from_slice(&bytes)
        .map(|v| JsonBody(Some(v)))
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

impl JsonBody {
    /// The body as an object: 400 when empty and `required`, 422 when not an object.
    pub fn object(self, required: bool) -> Result<Map<String, Value>, ApiError> {
        match self.0 {
            None if required => Err(ApiError::bad_request("request body is required")),
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m),
            Some(other) => Err(ApiError::invalid(
                "body",
                format!("expected a JSON object, got {}", kind(&other)),
            )),
        }
    }
}

/// A JSON type name for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A merge-patch field: absent, explicitly `null`, or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch<T> {
    /// Not in the body: leave unchanged.
    Absent,
    /// `null`: clear.
    Null,
    /// A new value.
    Set(T),
}

/// Typed field access over a body object, recording problems instead of stopping at the first.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
    /// Problems found so far.
    pub problems: Problems,
}

impl<'a> Fields<'a> {
    /// Reads `obj`; field names in messages get `prefix` (e.g. `"config."`).
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Self {
            obj,
            prefix: String::new(),
            problems: Problems::default(),
        }
    }

    /// Reads `obj`, naming fields `{prefix}{key}` in messages (e.g. `events[3].`).
    pub fn with_prefix(obj: &'a Map<String, Value>, prefix: impl Into<String>) -> Self {
        Self {
            obj,
            prefix: prefix.into(),
            problems: Problems::default(),
        }
    }

    /// A field's name as messages give it.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The raw value, if present (including `null`).
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key)
    }

    /// An optional string; `null` counts as absent.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problems.push(
                    self.name(key),
                    format!("expected a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// A required, non-empty string.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        let present = matches!(self.obj.get(key), Some(v) if !v.is_null());
        match self.string(key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.problems.push(self.name(key), "must not be empty");
                None
            }
            None if !present => {
                self.problems.push(self.name(key), "is required");
                None
            }
            None => None,
        }
    }

    /// An optional boolean; `null` counts as absent.
    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.problems.push(
                    self.name(key),
                    format!("expected a boolean, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// An optional RFC 3339 timestamp, with `null` kept apart from absent.
    pub fn timestamp(&mut self, key: &str) -> Patch<Timestamp> {
        match self.obj.get(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(Value::String(s)) => match parse_time(s) {
                Some(t) => Patch::Set(t),
                None => {
                    self.problems.push(
                        self.name(key),
                        format!("{s:?} is not an RFC 3339 date-time"),
                    );
                    Patch::Absent
                }
            },
            Some(other) => {
                self.problems.push(
                    self.name(key),
                    format!("expected an RFC 3339 date-time string, got {}", kind(other)),
                );
                Patch::Absent
            }
        }
    }

    /// A string map (`metadata`), with `null` kept apart from absent. Values must be strings.
    pub fn string_map(&mut self, key: &str) -> Patch<BTreeMap<String, String>> {
        match self.obj.get(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => self.problems.push(
                            format!("{}.{k}", self.name(key)),
                            format!("expected a string, got {}", kind(other)),
                        ),
                    }
                }
                Patch::Set(out)
            }
            Some(other) => {
                self.problems.push(
                    self.name(key),
                    format!("expected an object of strings, got {}", kind(other)),
                );
                Patch::Absent
            }
        }
    }

    /// A merge-patch of a string map: each key maps to a new value or `None` (delete).
    /// `native` accepts JSON numbers, booleans, objects and arrays as well and stores them in
    /// the contract's string form (`60` as `"60"`, an object as its JSON text): destination
    /// `config` and `credentials`, whose typed fields parse either form.
    pub fn string_patch_map(
        &mut self,
        key: &str,
        native: bool,
    ) -> Patch<BTreeMap<String, Option<String>>> {
        match self.obj.get(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), Some(s.clone()));
                        }
                        Value::Null => {
                            out.insert(k.clone(), None);
                        }
                        other if native => {
                            out.insert(k.clone(), herald_core::spec::canonical_text(other));
                        }
                        other => self.problems.push(
                            format!("{}.{k}", self.name(key)),
                            format!("expected a string, got {}", kind(other)),
                        ),
                    }
                }
                Patch::Set(out)
            }
            Some(other) => {
                self.problems.push(
                    self.name(key),
                    format!("expected an object, got {}", kind(other)),
                );
                Patch::Absent
            }
        }
    }
}

/// Applies a merge-patch to a string map: `Some` sets, `None` deletes.
pub fn merge_map(base: &mut BTreeMap<String, String>, patch: BTreeMap<String, Option<String>>) {
    for (k, v) in patch {
        match v {
            Some(v) => {
                base.insert(k, v);
            }
            None => {
                base.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_record_every_problem() {
        let body = json!({"a": 1, "b": "", "m": {"x": "1", "y": 2}, "t": "nope", "flag": "yes"});
        let obj = body.as_object().unwrap();
        let mut f = Fields::new(obj);
        assert_eq!(f.string("a"), None);
        assert_eq!(f.required_string("b"), None);
        assert_eq!(f.required_string("missing"), None);
        assert!(matches!(f.string_map("m"), Patch::Set(m) if m.len() == 1));
        assert_eq!(f.timestamp("t"), Patch::Absent);
        assert_eq!(f.boolean("flag"), None);
        let err = f.problems.finish().unwrap_err();
        assert_eq!(err.status(), 422);
        for needle in [
            "a: expected a string",
            "b: must not be empty",
            "missing: is required",
            "m.y: expected a string",
            "t: ",
            "flag: expected a boolean",
        ] {
            assert!(
                err.message().contains(needle),
                "{needle} not in {}",
                err.message()
            );
        }
    }

    #[test]
    fn patch_maps() {
        let body = json!({"c": {"a": "1", "b": null, "r": true}, "n": null});
        let obj = body.as_object().unwrap();
        let mut f = Fields::new(obj);
        let Patch::Set(p) = f.string_patch_map("c", true) else {
            panic!()
        };
        assert_eq!(f.string_patch_map("n", false), Patch::Null);
        assert_eq!(f.string_patch_map("absent", false), Patch::Absent);
        let mut base = BTreeMap::from([
            ("b".to_string(), "old".to_string()),
            ("z".to_string(), "keep".to_string()),
        ]);
        merge_map(&mut base, p);
        assert_eq!(
            base,
            BTreeMap::from([
                ("a".into(), "1".into()),
                ("r".into(), "true".into()),
                ("z".into(), "keep".into())
            ])
        );
    }
}

//! Payload filters: whether an event should go to a destination.
//!
//! A destination may carry a filter, a JSON object matched against the event's *filter
//! document*:
//!
//! ```json
//! { "id": "evt_1", "topic": "order.created", "time": "2025-03-14T15:09:26Z",
//!   "metadata": { "source": "api" }, "data": { "amount": 250, "tags": ["vip"] } }
//! ```
//!
//! `metadata` is a map of strings and `data` is the publisher's JSON object. The syntax is the
//! one Hookdeck Outpost uses (a port of Hookdeck's `simple-json-match`), so a filter written for
//! Outpost means the same thing here, apart from the few cases listed under
//! [Differences from Outpost](#differences-from-outpost).
//!
//! # Structure
//!
//! - `null` and `{}` match every event.
//! - The keys of an object are combined with AND.
//! - A key that does not start with `$` names a field of the current value and applies its own
//!   value to that field: `{"data": {"customer": {"tier": "premium"}}}`.
//! - A value that is not an object is an equality test: `{"data": {"type": "order"}}`.
//! - A key that starts with `$` is an operator applied to the current value:
//!   `{"data": {"amount": {"$gte": 100, "$lt": 500}}}`.
//!
//! # Equality
//!
//! Numbers are compared as `f64`, so `1` equals `1.0` (and integers beyond 2^53 can compare
//! equal to their neighbours, as in Outpost). Strings are compared exactly (case-sensitive),
//! booleans and `null` only equal themselves. There is no conversion between types: `"5"` is
//! not `5`. Metadata values are always strings, so compare them with strings.
//!
//! # Operators
//!
//! | Operator | Operand | Matches when the field… |
//! |---|---|---|
//! | `$eq` / `$neq` | any value | equals / does not equal it. Objects and arrays compare as a whole (key order does not matter, array order does). |
//! | `$gt` `$gte` `$lt` `$lte` | number or string | is a number and compares that way with a number operand, or is a string and compares that way with a string operand (character by character, so RFC 3339 times in the same offset and precision order correctly). Any other pairing fails. |
//! | `$in` | array of scalars | is a string, number, boolean or null equal to one of them, or an array with an element equal to one of them. |
//! | `$in` | string | is a string containing it as a substring, or an array with an element equal to it. |
//! | `$in` | number or boolean | is an array with an element equal to it. |
//! | `$nin` | as `$in` | is one `$in` could test, and `$in` does not match. |
//! | `$startsWith` / `$endsWith` | string, or non-empty array of strings | is a string that starts / ends with it (with any of them). Non-strings fail. |
//! | `$exist` | boolean | `true`: is present (a `null` value is present); `false`: is absent. |
//! | `$or` / `$and` | non-empty array of conditions | matches any / every condition. Each condition is applied to the same value as the operator. |
//! | `$not` | condition object | does not match the condition. |
//!
//! A condition inside `$or`/`$and` is usually an object, but below the top level it may also be a
//! plain value as an equality shorthand, as Outpost allows: `{"data": {"currency": {"$or":
//! ["usd", "eur"]}}}`.
//!
//! `$nin` is not simply "not `$in`": like Outpost, it fails on an absent field and on pairings
//! `$in` cannot test (a number field with a string operand, an object field). On an array field
//! with a list operand it matches when no element is in the list (so an empty array matches). Use `{"$not": {"$in": …}}` for a plain negation.
//!
//! # Absent fields
//!
//! A field is absent when its key is not in the object, or when the value it would be read from
//! is not an object (so `data.customer.tier` is absent when `data.customer` is absent, a string
//! or `null`). An absent field fails every test except `$exist: false`; that includes `$neq` and
//! `$nin`, as in Outpost. `$not`, `$or` and `$and` combine those results normally, so
//! `{"data": {"status": {"$not": {"$eq": "cancelled"}}}}` matches an event without a status.
//!
//! # Arrays in the event
//!
//! Following Outpost, an array field is tested by its elements:
//!
//! - a plain value matches when **any element** equals it (nested arrays are searched too):
//!   `{"data": {"tags": "vip"}}` matches `"tags": ["urgent", "vip"]`;
//! - an array matches when **every item listed** is matched by some element, in any order and
//!   with other elements allowed: `{"data": {"tags": ["vip", "urgent"]}}`;
//! - an object that names fields matches when **one element** matches the whole object:
//!   `{"data": {"items": {"sku": "A-1", "qty": 2}}}` needs one item with both;
//! - an object holding only operators applies them to the array **as a whole**: `$eq` compares
//!   whole arrays, `$in`/`$nin` with a scalar operand look for it among the elements, `$in`
//!   with a list operand matches when **any element** is in the list (`{"tags": {"$in": ["a",
//!   "b"]}}` asks "has any of these tags") and `$nin` when none is, `$exist` checks presence,
//!   and the comparisons, `$startsWith` and `$endsWith` fail. Elements are compared as scalars:
//!   an object or nested array among the elements is never in the list.
//!
//! An array in a filter is never compared to a non-array field: `{"status": ["a", "b"]}` does not
//! mean "status is a or b" (use `$in` for that).
//!
//! # Validation
//!
//! [`validate`] rejects a filter that is not an object (or `null`), an unknown `$` operator, an
//! operand of the wrong type (see the table), an empty `$or`/`$and`, a non-object as a
//! top-level `$or`/`$and` condition, an empty condition object below the top level, and nesting
//! deeper than 32 levels (counting every object and array, the filter itself being level 1).
//!
//! [`matches()`] never panics and uses bounded recursion on any input. It returns `false` for any
//! filter [`validate`] rejects, so a malformed part cannot make a filter match by accident, even
//! inside `$not`.
//!
//! # Differences from Outpost
//!
//! - Outpost fails every condition on an absent field unless the condition object itself holds
//!   `$exist: false` (in which case the rest of that object is skipped). Here absence composes
//!   as described above: a field-level `$not`, or an `$or` containing `{"$exist": false}`,
//!   matches an absent field, while `{"$exist": false, "$eq": 1}` does not.
//! - Outpost fails a condition below an absent or non-object parent; here the child is simply
//!   absent, so `{"data": {"customer": {"tier": {"$exist": false}}}}` matches an event without a
//!   customer.
//! - Outpost's matcher refuses `$in`/`$nin` with a list operand on an array field (the condition
//!   fails); here it tests whether any element is in the list, as MongoDB-style filters do, so
//!   `{"tags": {"$in": ["vip"]}}` matches `"tags": ["a", "vip"]`. This only makes more filters
//!   match: a filter that matched an event under Outpost still matches it, except `$not` around
//!   such a condition.
//! - Outpost stores and evaluates any JSON as a filter (an unknown `$foo` is treated as a field
//!   name); Herald rejects such filters in [`validate`] and never matches them.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

/// A filter that is not well-formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter{path}: {problem}")]
pub struct FilterError {
    /// JSON-pointer-like location of the problem inside the filter, e.g. `.data.amount.$gte`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// The deepest a filter may nest, counting every object and array (the filter itself is 1).
const MAX_DEPTH: usize = 32;

/// How deep [`matches()`] recurses before giving up (no match). Leaves room for a filter of
/// [`MAX_DEPTH`] plus arrays nested inside arrays in the event.
const EVAL_DEPTH_LIMIT: usize = 128;

/// The operators a filter may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
    StartsWith,
    EndsWith,
    Exist,
    Or,
    And,
    Not,
}

const OPERATORS: [(&str, Op); 14] = [
    ("$eq", Op::Eq),
    ("$neq", Op::Neq),
    ("$gt", Op::Gt),
    ("$gte", Op::Gte),
    ("$lt", Op::Lt),
    ("$lte", Op::Lte),
    ("$in", Op::In),
    ("$nin", Op::Nin),
    ("$startsWith", Op::StartsWith),
    ("$endsWith", Op::EndsWith),
    ("$exist", Op::Exist),
    ("$or", Op::Or),
    ("$and", Op::And),
    ("$not", Op::Not),
];

impl Op {
    fn from_key(key: &str) -> Option<Op> {
        OPERATORS
            .iter()
            .find(|(name, _)| *name == key)
            .map(|&(_, op)| op)
    }
}

// ------------------------------------------------------------------------------------------
// Validation
// ------------------------------------------------------------------------------------------

/// Where we are inside the filter; rendered only when there is an error to report.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

fn problem(path: &Path<'_>, problem: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_string(),
        problem: problem.into(),
    }
}

fn too_deep(path: &Path<'_>) -> FilterError {
    problem(
        path,
        format!(
            "the filter nests more than {MAX_DEPTH} levels deep; flatten it \
             (for example, list the conditions side by side in one $and)"
        ),
    )
}

/// Names a JSON value's type in plain words, for error messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn unknown_operator(path: &Path<'_>, key: &str) -> FilterError {
    let names: Vec<&str> = OPERATORS.iter().map(|(name, _)| *name).collect();
    let hint = match key {
        "$exists" => Some("$exist"),
        "$ne" => Some("$neq"),
        _ => OPERATORS
            .iter()
            .map(|(name, _)| *name)
            .find(|name| name.eq_ignore_ascii_case(key)),
    };
    let hint = hint
        .map(|name| format!(" (did you mean {name}?)"))
        .unwrap_or_default();
    problem(
        path,
        format!(
            "unknown operator {key}{hint}; the supported operators are {}",
            names.join(", ")
        ),
    )
}

/// Checks that `filter` is a well-formed filter document.
///
/// `null` and `{}` are valid and match everything. On failure the error names where the
/// problem is (e.g. `.data.amount.$gte`) and what would be accepted there. See the
/// [module documentation](self) for the rules.
pub fn validate(filter: &Value) -> Result<(), FilterError> {
    match filter {
        Value::Null => Ok(()),
        Value::Object(conditions) => check_conditions(conditions, &Path::Root, 1, true),
        other => Err(problem(
            &Path::Root,
            format!(
                "a filter must be a JSON object such as {{\"data\": {{\"type\": \"order\"}}}} \
                 (or null to match every event), not {}",
                describe(other)
            ),
        )),
    }
}

/// Checks a condition object found at `path`, itself at nesting level `depth`.
/// `at_event` is true while the value being tested is the event document itself.
fn check_conditions(
    conditions: &Map<String, Value>,
    path: &Path<'_>,
    depth: usize,
    at_event: bool,
) -> Result<(), FilterError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path));
    }
    if conditions.is_empty() && !matches!(path, Path::Root) {
        return Err(problem(
            path,
            "an empty object sets no condition; remove it, or write {\"$exist\": true} \
             to require the field",
        ));
    }
    for (key, operand) in conditions {
        let here = Path::Key(path, key);
        if key.starts_with('$') {
            let Some(op) = Op::from_key(key) else {
                return Err(unknown_operator(&here, key));
            };
            check_operator(op, key, operand, &here, depth, at_event)?;
        } else {
            check_value(operand, &here, depth + 1)?;
        }
    }
    Ok(())
}

/// Checks the value given for a field: an equality value, an array of items, or a condition
/// object. `depth` is the level the value would occupy if it is an object or array.
fn check_value(value: &Value, path: &Path<'_>, depth: usize) -> Result<(), FilterError> {
    match value {
        Value::Object(conditions) => check_conditions(conditions, path, depth, false),
        Value::Array(items) => {
            if depth > MAX_DEPTH {
                return Err(too_deep(path));
            }
            for (index, item) in items.iter().enumerate() {
                check_value(item, &Path::Index(path, index), depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks that a literal operand (e.g. of `$eq`) does not nest too deep.
fn check_literal(value: &Value, path: &Path<'_>, depth: usize) -> Result<(), FilterError> {
    match value {
        Value::Array(items) => {
            if depth > MAX_DEPTH {
                return Err(too_deep(path));
            }
            for (index, item) in items.iter().enumerate() {
                check_literal(item, &Path::Index(path, index), depth + 1)?;
            }
            Ok(())
        }
        Value::Object(fields) => {
            if depth > MAX_DEPTH {
                return Err(too_deep(path));
            }
            for (key, item) in fields {
                check_literal(item, &Path::Key(path, key), depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks the operand of operator `op` (spelled `key`) found at `path`, inside a condition
/// object at level `depth`.
fn check_operator(
    op: Op,
    key: &str,
    operand: &Value,
    path: &Path<'_>,
    depth: usize,
    at_event: bool,
) -> Result<(), FilterError> {
    match op {
        Op::Eq | Op::Neq => check_literal(operand, path, depth + 1),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match operand {
            Value::Number(_) | Value::String(_) => Ok(()),
            other => Err(problem(
                path,
                format!(
                    "{key} needs a number or a string to compare with (strings compare \
                     character by character, which orders RFC 3339 times correctly), not {}",
                    describe(other)
                ),
            )),
        },
        Op::In | Op::Nin => match operand {
            Value::Array(options) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep(path));
                }
                for (index, option) in options.iter().enumerate() {
                    if option.is_array() || option.is_object() {
                        return Err(problem(
                            &Path::Index(path, index),
                            format!(
                                "each value listed in {key} must be a string, number, boolean \
                                 or null, not {}",
                                describe(option)
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
            other => Err(problem(
                path,
                format!(
                    "{key} needs an array of values such as [\"paid\", \"shipped\"], or a single \
                     string, number or boolean to look for inside a string or array field; \
                     not {}",
                    describe(other)
                ),
            )),
        },
        Op::StartsWith | Op::EndsWith => match operand {
            Value::String(_) => Ok(()),
            Value::Array(affixes) if affixes.is_empty() => Err(problem(
                path,
                format!("{key} needs at least one string in its array"),
            )),
            Value::Array(affixes) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep(path));
                }
                for (index, affix) in affixes.iter().enumerate() {
                    if !affix.is_string() {
                        return Err(problem(
                            &Path::Index(path, index),
                            format!(
                                "each value listed in {key} must be a string, not {}",
                                describe(affix)
                            ),
                        ));
                    }
                }
                Ok(())
            }
            other => Err(problem(
                path,
                format!(
                    "{key} needs a string (or an array of strings, any of which may match), \
                     not {}",
                    describe(other)
                ),
            )),
        },
        Op::Exist => match operand {
            Value::Bool(_) => Ok(()),
            other => Err(problem(
                path,
                format!(
                    "$exist needs true (the field must be present) or false (the field must be \
                     absent), not {}",
                    describe(other)
                ),
            )),
        },
        Op::Or | Op::And => match operand {
            Value::Array(alternatives) if alternatives.is_empty() => Err(problem(
                path,
                format!("{key} needs at least one condition in its array"),
            )),
            Value::Array(alternatives) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep(path));
                }
                for (index, alternative) in alternatives.iter().enumerate() {
                    let here = Path::Index(path, index);
                    match alternative {
                        Value::Object(conditions) => {
                            check_conditions(conditions, &here, depth + 2, at_event)?;
                        }
                        other if at_event => {
                            return Err(problem(
                                &here,
                                format!(
                                    "at the top level each {key} condition must be an object \
                                     such as {{\"topic\": \"order.created\"}}, not {}",
                                    describe(other)
                                ),
                            ));
                        }
                        other => check_value(other, &here, depth + 2)?,
                    }
                }
                Ok(())
            }
            other => Err(problem(
                path,
                format!(
                    "{key} needs an array of conditions such as [{{\"data\": {{\"status\": \
                     \"paid\"}}}}, {{\"data\": {{\"status\": \"shipped\"}}}}], not {}",
                    describe(other)
                ),
            )),
        },
        Op::Not => match operand {
            Value::Object(conditions) => check_conditions(conditions, path, depth + 1, at_event),
            other => Err(problem(
                path,
                format!(
                    "$not needs a condition object such as {{\"$in\": [\"cancelled\", \
                     \"refunded\"]}}, not {}",
                    describe(other)
                ),
            )),
        },
    }
}

// ------------------------------------------------------------------------------------------
// Matching
// ------------------------------------------------------------------------------------------

/// Whether `doc` matches `filter`.
///
/// `doc` is the event's filter document `{id, topic, time, metadata, data}`. A `null` or `{}`
/// filter matches everything; a filter that [`validate`] rejects matches nothing. Never
/// panics, whatever the input. See the [module documentation](self) for the semantics.
pub fn matches(filter: &Value, doc: &Value) -> bool {
    match filter {
        Value::Null => true,
        _ => validate(filter).is_ok() && eval(filter, Some(doc), 0),
    }
}

/// Whether `subject` (`None` when the field is absent) satisfies `filter`.
fn eval(filter: &Value, subject: Option<&Value>, depth: usize) -> bool {
    if depth > EVAL_DEPTH_LIMIT {
        return false;
    }
    let next = depth + 1;
    match filter {
        Value::Object(conditions) => {
            // An object naming fields is tried against each element of an array.
            if let Some(Value::Array(items)) = subject
                && conditions.keys().any(|key| !key.starts_with('$'))
            {
                return items.iter().any(|item| eval(filter, Some(item), next));
            }
            conditions
                .iter()
                .all(|(key, operand)| eval_key(key, operand, subject, next))
        }
        Value::Array(wanted) => match subject {
            Some(Value::Array(items)) => wanted
                .iter()
                .all(|want| items.iter().any(|item| eval(want, Some(item), next))),
            _ => false,
        },
        scalar => match subject {
            Some(Value::Array(items)) => items.iter().any(|item| eval(scalar, Some(item), next)),
            Some(value) => scalar_eq(scalar, value),
            None => false,
        },
    }
}

/// One entry of a condition object, applied to `subject`.
fn eval_key(key: &str, operand: &Value, subject: Option<&Value>, depth: usize) -> bool {
    let Some(op) = Op::from_key(key) else {
        if key.starts_with('$') {
            return false; // unknown operator; validate() rejects these
        }
        let field = match subject {
            Some(Value::Object(fields)) => fields.get(key),
            _ => None,
        };
        return eval(operand, field, depth);
    };
    match op {
        Op::Or => operand
            .as_array()
            .is_some_and(|alts| alts.iter().any(|alt| eval(alt, subject, depth))),
        Op::And => operand
            .as_array()
            .is_some_and(|alts| alts.iter().all(|alt| eval(alt, subject, depth))),
        Op::Not => operand.is_object() && !eval(operand, subject, depth),
        Op::Exist => operand
            .as_bool()
            .is_some_and(|want| subject.is_some() == want),
        _ => subject.is_some_and(|value| compare(op, operand, value)),
    }
}

/// A value operator applied to a present field value.
fn compare(op: Op, operand: &Value, value: &Value) -> bool {
    match op {
        Op::Eq => json_eq(value, operand, 0),
        Op::Neq => !json_eq(value, operand, 0),
        Op::Gt => order(value, operand).is_some_and(Ordering::is_gt),
        Op::Gte => order(value, operand).is_some_and(Ordering::is_ge),
        Op::Lt => order(value, operand).is_some_and(Ordering::is_lt),
        Op::Lte => order(value, operand).is_some_and(Ordering::is_le),
        Op::In => membership(value, operand) == Some(true),
        Op::Nin => membership(value, operand) == Some(false),
        Op::StartsWith => affix(value, operand, |text, prefix| text.starts_with(prefix)),
        Op::EndsWith => affix(value, operand, |text, suffix| text.ends_with(suffix)),
        // Structural operators are handled by `eval_key`.
        Op::Exist | Op::Or | Op::And | Op::Not => false,
    }
}

fn is_scalar(value: &Value) -> bool {
    !(value.is_array() || value.is_object())
}

/// Equality of two scalars (numbers as `f64`); containers never equal here.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    is_scalar(a) && is_scalar(b) && json_eq(a, b, 0)
}

/// Deep equality with numbers compared as `f64` and object key order ignored.
fn json_eq(a: &Value, b: &Value, depth: usize) -> bool {
    if depth > EVAL_DEPTH_LIMIT {
        return false;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(fx), Some(fy)) => fx == fy,
            _ => x == y,
        },
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y, depth + 1))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| json_eq(x, y, depth + 1)))
        }
        _ => a == b,
    }
}

/// Ordering for `$gt` and friends: number with number, string with string, else none.
fn order(value: &Value, operand: &Value) -> Option<Ordering> {
    match (value, operand) {
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        _ => None,
    }
}

/// `$in`: `Some(found)` when the pairing can be tested, `None` when it cannot.
fn membership(value: &Value, operand: &Value) -> Option<bool> {
    match operand {
        Value::Array(options) => {
            let listed = |item: &Value| options.iter().any(|option| scalar_eq(item, option));
            match value {
                // Any element in the list, as MongoDB reads it (an Outpost difference).
                Value::Array(items) => Some(items.iter().any(listed)),
                Value::Object(_) => None,
                scalar => Some(listed(scalar)),
            }
        }
        needle => match value {
            Value::String(text) => needle.as_str().map(|needle| text.contains(needle)),
            Value::Array(items) => {
                is_scalar(needle).then(|| items.iter().any(|item| scalar_eq(item, needle)))
            }
            _ => None,
        },
    }
}

/// `$startsWith` / `$endsWith`: a string field against a string or any of several strings.
fn affix(value: &Value, operand: &Value, test: fn(&str, &str) -> bool) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    match operand {
        Value::String(affix) => test(text, affix),
        Value::Array(affixes) => affixes
            .iter()
            .any(|affix| affix.as_str().is_some_and(|affix| test(text, affix))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One `matches` case.
    struct Case {
        name: &'static str,
        filter: Value,
        doc: Value,
        expected: bool,
    }

    fn case(name: &'static str, filter: Value, doc: Value, expected: bool) -> Case {
        Case {
            name,
            filter,
            doc,
            expected,
        }
    }

    /// The event most cases run against.
    fn ev() -> Value {
        json!({
            "id": "evt_123",
            "topic": "order.created",
            "time": "2025-03-14T15:09:26Z",
            "metadata": {"source": "api", "region": "eu-west-1", "priority": "5"},
            "data": {
                "type": "order",
                "amount": 250,
                "price": 19.99,
                "one": 1.0,
                "count": 0,
                "delta": -5,
                "currency": "usd",
                "paid": true,
                "refunded": false,
                "note": null,
                "email": "ada@example.com",
                "tags": ["urgent", "vip", 7],
                "items": [
                    {"sku": "A-1", "qty": 2, "price": 10},
                    {"sku": "B-2", "qty": 1, "price": 5.5}
                ],
                "customer": {
                    "id": "cus_1",
                    "tier": "premium",
                    "address": {"country": "DE", "city": "Berlin"}
                },
                "matrix": [[1, 2], [3, 4]],
                "empty": []
            }
        })
    }

    /// Runs every case; on failure, lists the names of all failing cases. For each valid,
    /// non-empty filter it also checks that wrapping it in `$not` inverts the result.
    fn check(cases: &[Case]) {
        let mut failures = Vec::new();
        for c in cases {
            let got = matches(&c.filter, &c.doc);
            if got != c.expected {
                failures.push(format!(
                    "{}: expected {}, got {got} (filter {})",
                    c.name, c.expected, c.filter
                ));
            }
            let non_empty = c.filter.as_object().is_some_and(|o| !o.is_empty());
            if non_empty && validate(&c.filter).is_ok() {
                let negated = json!({"$not": c.filter});
                if matches(&negated, &c.doc) == got {
                    failures.push(format!("{}: $not did not invert the result", c.name));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    fn match_cases() -> Vec<Case> {
        vec![
            // --- empty filters and top-level fields ---
            case("null filter matches everything", json!(null), ev(), true),
            case("empty filter matches everything", json!({}), ev(), true),
            case("topic equal", json!({"topic": "order.created"}), ev(), true),
            case(
                "topic differs",
                json!({"topic": "order.updated"}),
                ev(),
                false,
            ),
            case("id equal", json!({"id": "evt_123"}), ev(), true),
            case("id differs", json!({"id": "evt_999"}), ev(), false),
            case(
                "time equal",
                json!({"time": "2025-03-14T15:09:26Z"}),
                ev(),
                true,
            ),
            case(
                "time $gte earlier instant",
                json!({"time": {"$gte": "2025-01-01T00:00:00Z"}}),
                ev(),
                true,
            ),
            case(
                "time $lt earlier instant",
                json!({"time": {"$lt": "2025-01-01T00:00:00Z"}}),
                ev(),
                false,
            ),
            case(
                "time inside window",
                json!({"time": {"$gte": "2025-03-01T00:00:00Z", "$lt": "2025-04-01T00:00:00Z"}}),
                ev(),
                true,
            ),
            case(
                "time outside window",
                json!({"time": {"$gte": "2025-04-01T00:00:00Z", "$lt": "2025-05-01T00:00:00Z"}}),
                ev(),
                false,
            ),
            case(
                "unknown top-level field is absent",
                json!({"tenant": "t1"}),
                ev(),
                false,
            ),
            case(
                "several top-level keys all match",
                json!({"topic": "order.created", "metadata": {"source": "api"}, "data": {"type": "order"}}),
                ev(),
                true,
            ),
            case(
                "several top-level keys, one fails",
                json!({"topic": "order.created", "metadata": {"source": "dashboard"}}),
                ev(),
                false,
            ),
            // --- metadata (string map) ---
            case(
                "metadata equal",
                json!({"metadata": {"source": "api"}}),
                ev(),
                true,
            ),
            case(
                "metadata differs",
                json!({"metadata": {"source": "dashboard"}}),
                ev(),
                false,
            ),
            case(
                "metadata string is not a number",
                json!({"metadata": {"priority": 5}}),
                ev(),
                false,
            ),
            case(
                "metadata numeric string as string",
                json!({"metadata": {"priority": "5"}}),
                ev(),
                true,
            ),
            case(
                "metadata missing key",
                json!({"metadata": {"team": "x"}}),
                ev(),
                false,
            ),
            case(
                "metadata missing key $exist false",
                json!({"metadata": {"team": {"$exist": false}}}),
                ev(),
                true,
            ),
            case(
                "metadata $startsWith",
                json!({"metadata": {"region": {"$startsWith": "eu-"}}}),
                ev(),
                true,
            ),
            case(
                "metadata $in list",
                json!({"metadata": {"source": {"$in": ["api", "dashboard"]}}}),
                ev(),
                true,
            ),
            case(
                "metadata $gt compares strings",
                json!({"metadata": {"priority": {"$gt": "4"}}}),
                ev(),
                true,
            ),
            case(
                "metadata $gt is lexicographic, not numeric",
                json!({"metadata": {"priority": {"$gt": "10"}}}),
                ev(),
                true,
            ),
            // --- plain equality and nesting in data ---
            case(
                "data string equal",
                json!({"data": {"type": "order"}}),
                ev(),
                true,
            ),
            case(
                "data string case-sensitive",
                json!({"data": {"type": "Order"}}),
                ev(),
                false,
            ),
            case(
                "nested object field",
                json!({"data": {"customer": {"tier": "premium"}}}),
                ev(),
                true,
            ),
            case(
                "two levels nested",
                json!({"data": {"customer": {"address": {"country": "DE"}}}}),
                ev(),
                true,
            ),
            case(
                "nested mismatch",
                json!({"data": {"customer": {"address": {"country": "FR"}}}}),
                ev(),
                false,
            ),
            case(
                "nested keys are ANDed",
                json!({"data": {"customer": {"tier": "premium", "id": "cus_2"}}}),
                ev(),
                false,
            ),
            case(
                "object filter against scalar field",
                json!({"data": {"amount": {"value": 250}}}),
                ev(),
                false,
            ),
            case(
                "scalar filter against object field",
                json!({"data": {"customer": "premium"}}),
                ev(),
                false,
            ),
            case(
                "integer equal",
                json!({"data": {"amount": 250}}),
                ev(),
                true,
            ),
            case(
                "integer equals float form",
                json!({"data": {"amount": 250.0}}),
                ev(),
                true,
            ),
            case("float equal", json!({"data": {"price": 19.99}}), ev(), true),
            case(
                "float field equals integer",
                json!({"data": {"one": 1}}),
                ev(),
                true,
            ),
            case(
                "number is not a string",
                json!({"data": {"amount": "250"}}),
                ev(),
                false,
            ),
            case("boolean true", json!({"data": {"paid": true}}), ev(), true),
            case(
                "boolean mismatch",
                json!({"data": {"paid": false}}),
                ev(),
                false,
            ),
            case(
                "boolean false",
                json!({"data": {"refunded": false}}),
                ev(),
                true,
            ),
            case(
                "zero is not false",
                json!({"data": {"count": false}}),
                ev(),
                false,
            ),
            case("zero equal", json!({"data": {"count": 0}}), ev(), true),
            case(
                "null equals null",
                json!({"data": {"note": null}}),
                ev(),
                true,
            ),
            case(
                "null is not false",
                json!({"data": {"note": false}}),
                ev(),
                false,
            ),
            case(
                "null filter on absent field",
                json!({"data": {"nope": null}}),
                ev(),
                false,
            ),
            case(
                "string on absent field",
                json!({"data": {"nope": "x"}}),
                ev(),
                false,
            ),
            // --- $eq / $neq ---
            case(
                "$eq string",
                json!({"data": {"type": {"$eq": "order"}}}),
                ev(),
                true,
            ),
            case(
                "$eq int vs float",
                json!({"data": {"amount": {"$eq": 250.0}}}),
                ev(),
                true,
            ),
            case(
                "$eq mismatch",
                json!({"data": {"type": {"$eq": "refund"}}}),
                ev(),
                false,
            ),
            case(
                "$eq whole object",
                json!({"data": {"customer": {"address": {"$eq": {"country": "DE", "city": "Berlin"}}}}}),
                ev(),
                true,
            ),
            case(
                "$eq object ignores key order",
                json!({"data": {"customer": {"address": {"$eq": {"city": "Berlin", "country": "DE"}}}}}),
                ev(),
                true,
            ),
            case(
                "$eq object subset is not equal",
                json!({"data": {"customer": {"address": {"$eq": {"country": "DE"}}}}}),
                ev(),
                false,
            ),
            case(
                "$eq whole array",
                json!({"data": {"matrix": {"$eq": [[1, 2], [3, 4]]}}}),
                ev(),
                true,
            ),
            case(
                "$eq array order matters",
                json!({"data": {"tags": {"$eq": ["vip", "urgent", 7]}}}),
                ev(),
                false,
            ),
            case(
                "$eq scalar against array compares the whole array",
                json!({"data": {"tags": {"$eq": "vip"}}}),
                ev(),
                false,
            ),
            case(
                "$eq null on null",
                json!({"data": {"note": {"$eq": null}}}),
                ev(),
                true,
            ),
            case(
                "$eq on absent field",
                json!({"data": {"nope": {"$eq": null}}}),
                ev(),
                false,
            ),
            case(
                "$neq different",
                json!({"data": {"type": {"$neq": "refund"}}}),
                ev(),
                true,
            ),
            case(
                "$neq same",
                json!({"data": {"type": {"$neq": "order"}}}),
                ev(),
                false,
            ),
            case(
                "$neq absent field fails",
                json!({"data": {"nope": {"$neq": "x"}}}),
                ev(),
                false,
            ),
            case(
                "$neq null on null",
                json!({"data": {"note": {"$neq": null}}}),
                ev(),
                false,
            ),
            case(
                "$neq null on value",
                json!({"data": {"type": {"$neq": null}}}),
                ev(),
                true,
            ),
            case(
                "$neq across types",
                json!({"data": {"amount": {"$neq": "250"}}}),
                ev(),
                true,
            ),
            case(
                "$neq scalar against array",
                json!({"data": {"tags": {"$neq": "vip"}}}),
                ev(),
                true,
            ),
            // --- comparisons ---
            case(
                "$gt number true",
                json!({"data": {"amount": {"$gt": 100}}}),
                ev(),
                true,
            ),
            case(
                "$gt equal is false",
                json!({"data": {"amount": {"$gt": 250}}}),
                ev(),
                false,
            ),
            case(
                "$gte equal",
                json!({"data": {"amount": {"$gte": 250}}}),
                ev(),
                true,
            ),
            case(
                "$lt number",
                json!({"data": {"amount": {"$lt": 1000}}}),
                ev(),
                true,
            ),
            case(
                "$lt false",
                json!({"data": {"amount": {"$lt": 100}}}),
                ev(),
                false,
            ),
            case(
                "$lte equal",
                json!({"data": {"amount": {"$lte": 250.0}}}),
                ev(),
                true,
            ),
            case(
                "$gt float vs int",
                json!({"data": {"price": {"$gt": 19}}}),
                ev(),
                true,
            ),
            case(
                "$lt float",
                json!({"data": {"price": {"$lt": 19.5}}}),
                ev(),
                false,
            ),
            case(
                "negative numbers",
                json!({"data": {"delta": {"$gte": -10}}}),
                ev(),
                true,
            ),
            case(
                "$lte zero",
                json!({"data": {"count": {"$lte": 0}}}),
                ev(),
                true,
            ),
            case(
                "range inside",
                json!({"data": {"amount": {"$gte": 100, "$lt": 500}}}),
                ev(),
                true,
            ),
            case(
                "range outside",
                json!({"data": {"amount": {"$gte": 300, "$lt": 500}}}),
                ev(),
                false,
            ),
            case(
                "$gt string",
                json!({"data": {"currency": {"$gt": "eur"}}}),
                ev(),
                true,
            ),
            case(
                "$lt string",
                json!({"data": {"currency": {"$lt": "abc"}}}),
                ev(),
                false,
            ),
            case(
                "$gt string operand on number field",
                json!({"data": {"amount": {"$gt": "100"}}}),
                ev(),
                false,
            ),
            case(
                "$gt number operand on string field",
                json!({"data": {"currency": {"$gt": 1}}}),
                ev(),
                false,
            ),
            case(
                "$gt on boolean",
                json!({"data": {"paid": {"$gt": 0}}}),
                ev(),
                false,
            ),
            case(
                "$gte on null",
                json!({"data": {"note": {"$gte": 0}}}),
                ev(),
                false,
            ),
            case(
                "$lt on absent field",
                json!({"data": {"nope": {"$lt": 1}}}),
                ev(),
                false,
            ),
            case(
                "$lt on array field compares the whole array",
                json!({"data": {"tags": {"$lt": "zzz"}}}),
                ev(),
                false,
            ),
            // --- $in / $nin ---
            case(
                "$in list contains",
                json!({"data": {"currency": {"$in": ["eur", "usd"]}}}),
                ev(),
                true,
            ),
            case(
                "$in list lacks",
                json!({"data": {"currency": {"$in": ["eur", "gbp"]}}}),
                ev(),
                false,
            ),
            case(
                "$in list numbers int/float",
                json!({"data": {"amount": {"$in": [100, 250.0]}}}),
                ev(),
                true,
            ),
            case(
                "$in list no type coercion",
                json!({"data": {"amount": {"$in": ["250"]}}}),
                ev(),
                false,
            ),
            case(
                "$in list boolean",
                json!({"data": {"paid": {"$in": [true]}}}),
                ev(),
                true,
            ),
            case(
                "$in list null",
                json!({"data": {"note": {"$in": [null, "x"]}}}),
                ev(),
                true,
            ),
            case(
                "$in empty list",
                json!({"data": {"currency": {"$in": []}}}),
                ev(),
                false,
            ),
            case(
                "$in substring",
                json!({"data": {"email": {"$in": "example"}}}),
                ev(),
                true,
            ),
            case(
                "$in substring absent",
                json!({"data": {"email": {"$in": "gmail"}}}),
                ev(),
                false,
            ),
            case(
                "$in empty substring",
                json!({"data": {"email": {"$in": ""}}}),
                ev(),
                true,
            ),
            case(
                "$in string operand on number field",
                json!({"data": {"amount": {"$in": "25"}}}),
                ev(),
                false,
            ),
            case(
                "$in array field contains string",
                json!({"data": {"tags": {"$in": "vip"}}}),
                ev(),
                true,
            ),
            case(
                "$in array field contains number",
                json!({"data": {"tags": {"$in": 7}}}),
                ev(),
                true,
            ),
            case(
                "$in array field element is not a substring match",
                json!({"data": {"tags": {"$in": "vi"}}}),
                ev(),
                false,
            ),
            case(
                "$in array field no coercion",
                json!({"data": {"tags": {"$in": "7"}}}),
                ev(),
                false,
            ),
            case(
                "$in list on array field: one element listed",
                json!({"data": {"tags": {"$in": ["vip", "x"]}}}),
                ev(),
                true,
            ),
            case(
                "$in list on array field: issue 13 example",
                json!({"tags": {"$in": ["vip"]}}),
                json!({"tags": ["a", "vip"]}),
                true,
            ),
            case(
                "$in list on array field: number element, int/float",
                json!({"data": {"tags": {"$in": [7.0]}}}),
                ev(),
                true,
            ),
            case(
                "$in list on array field: no element listed",
                json!({"data": {"tags": {"$in": ["spam", "x"]}}}),
                ev(),
                false,
            ),
            case(
                "$in list on array field: no coercion",
                json!({"data": {"tags": {"$in": ["7"]}}}),
                ev(),
                false,
            ),
            case(
                "$in list on array field: elements are not substring-matched",
                json!({"data": {"tags": {"$in": ["vi"]}}}),
                ev(),
                false,
            ),
            case(
                "$in list on empty array field",
                json!({"data": {"empty": {"$in": ["x"]}}}),
                ev(),
                false,
            ),
            case(
                "$in empty list on array field",
                json!({"data": {"tags": {"$in": []}}}),
                ev(),
                false,
            ),
            case(
                "$in list on array of objects",
                json!({"data": {"items": {"$in": ["A-1"]}}}),
                ev(),
                false,
            ),
            case(
                "$in list on array of arrays: nested arrays are not searched",
                json!({"data": {"matrix": {"$in": [1, 2]}}}),
                ev(),
                false,
            ),
            case(
                "$in list on array field with null element",
                json!({"data": {"tags": {"$in": [null]}}}),
                json!({"data": {"tags": ["a", null]}}),
                true,
            ),
            case(
                "$in list on object field",
                json!({"data": {"customer": {"$in": ["premium"]}}}),
                ev(),
                false,
            ),
            case(
                "$in on absent field",
                json!({"data": {"nope": {"$in": ["x"]}}}),
                ev(),
                false,
            ),
            case(
                "$nin list lacks",
                json!({"data": {"currency": {"$nin": ["eur", "gbp"]}}}),
                ev(),
                true,
            ),
            case(
                "$nin list contains",
                json!({"data": {"currency": {"$nin": ["usd"]}}}),
                ev(),
                false,
            ),
            case(
                "$nin substring absent",
                json!({"data": {"email": {"$nin": "gmail"}}}),
                ev(),
                true,
            ),
            case(
                "$nin substring present",
                json!({"data": {"email": {"$nin": "example"}}}),
                ev(),
                false,
            ),
            case(
                "$nin array field lacks",
                json!({"data": {"tags": {"$nin": "spam"}}}),
                ev(),
                true,
            ),
            case(
                "$nin array field contains",
                json!({"data": {"tags": {"$nin": "urgent"}}}),
                ev(),
                false,
            ),
            case(
                "$nin list on array field: no element listed",
                json!({"data": {"tags": {"$nin": ["spam", "x"]}}}),
                ev(),
                true,
            ),
            case(
                "$nin list on array field: one element listed",
                json!({"data": {"tags": {"$nin": ["spam", "vip"]}}}),
                ev(),
                false,
            ),
            case(
                "$nin list on array field: number element listed",
                json!({"data": {"tags": {"$nin": [7]}}}),
                ev(),
                false,
            ),
            case(
                "$nin list on empty array field",
                json!({"data": {"empty": {"$nin": ["x"]}}}),
                ev(),
                true,
            ),
            case(
                "$nin list on array of objects",
                json!({"data": {"items": {"$nin": ["A-1"]}}}),
                ev(),
                true,
            ),
            case(
                "$nin list on object field fails",
                json!({"data": {"customer": {"$nin": ["premium"]}}}),
                ev(),
                false,
            ),
            case(
                "$nin absent field fails",
                json!({"data": {"nope": {"$nin": ["x"]}}}),
                ev(),
                false,
            ),
            case(
                "$nin unsupported pairing fails",
                json!({"data": {"amount": {"$nin": "x"}}}),
                ev(),
                false,
            ),
            // --- $startsWith / $endsWith ---
            case(
                "$startsWith",
                json!({"data": {"email": {"$startsWith": "ada@"}}}),
                ev(),
                true,
            ),
            case(
                "$startsWith fails",
                json!({"data": {"email": {"$startsWith": "bob@"}}}),
                ev(),
                false,
            ),
            case(
                "$startsWith case-sensitive",
                json!({"data": {"email": {"$startsWith": "ADA"}}}),
                ev(),
                false,
            ),
            case(
                "$startsWith empty prefix",
                json!({"data": {"email": {"$startsWith": ""}}}),
                ev(),
                true,
            ),
            case(
                "$startsWith any of list",
                json!({"data": {"email": {"$startsWith": ["bob@", "ada@"]}}}),
                ev(),
                true,
            ),
            case(
                "$startsWith none of list",
                json!({"data": {"email": {"$startsWith": ["bob@", "eve@"]}}}),
                ev(),
                false,
            ),
            case(
                "$endsWith",
                json!({"data": {"email": {"$endsWith": "@example.com"}}}),
                ev(),
                true,
            ),
            case(
                "$endsWith fails",
                json!({"data": {"email": {"$endsWith": "@example.org"}}}),
                ev(),
                false,
            ),
            case(
                "$endsWith any of list",
                json!({"data": {"email": {"$endsWith": [".org", ".com"]}}}),
                ev(),
                true,
            ),
            case(
                "$startsWith on number",
                json!({"data": {"amount": {"$startsWith": "2"}}}),
                ev(),
                false,
            ),
            case(
                "$startsWith on array field",
                json!({"data": {"tags": {"$startsWith": "urg"}}}),
                ev(),
                false,
            ),
            case(
                "$endsWith on absent field",
                json!({"data": {"nope": {"$endsWith": ""}}}),
                ev(),
                false,
            ),
            case(
                "topic $startsWith",
                json!({"topic": {"$startsWith": "order."}}),
                ev(),
                true,
            ),
            case(
                "id $endsWith",
                json!({"id": {"$endsWith": "_123"}}),
                ev(),
                true,
            ),
            // --- $exist ---
            case(
                "$exist true, present",
                json!({"data": {"type": {"$exist": true}}}),
                ev(),
                true,
            ),
            case(
                "$exist true, absent",
                json!({"data": {"nope": {"$exist": true}}}),
                ev(),
                false,
            ),
            case(
                "$exist false, absent",
                json!({"data": {"nope": {"$exist": false}}}),
                ev(),
                true,
            ),
            case(
                "$exist false, present",
                json!({"data": {"type": {"$exist": false}}}),
                ev(),
                false,
            ),
            case(
                "$exist true on null",
                json!({"data": {"note": {"$exist": true}}}),
                ev(),
                true,
            ),
            case(
                "$exist false on null",
                json!({"data": {"note": {"$exist": false}}}),
                ev(),
                false,
            ),
            case(
                "$exist on array field",
                json!({"data": {"empty": {"$exist": true}}}),
                ev(),
                true,
            ),
            case(
                "$exist true, nested present",
                json!({"data": {"customer": {"address": {"city": {"$exist": true}}}}}),
                ev(),
                true,
            ),
            case(
                "$exist false below absent parent",
                json!({"data": {"shipping": {"carrier": {"$exist": false}}}}),
                ev(),
                true,
            ),
            case(
                "$exist true below absent parent",
                json!({"data": {"shipping": {"carrier": {"$exist": true}}}}),
                ev(),
                false,
            ),
            case(
                "$exist false below scalar parent",
                json!({"data": {"currency": {"code": {"$exist": false}}}}),
                ev(),
                true,
            ),
            case(
                "$exist with $eq",
                json!({"data": {"type": {"$exist": true, "$eq": "order"}}}),
                ev(),
                true,
            ),
            case(
                "$exist false with $eq on absent field",
                json!({"data": {"nope": {"$exist": false, "$eq": 1}}}),
                ev(),
                false,
            ),
            case(
                "top-level field $exist",
                json!({"metadata": {"$exist": true}}),
                ev(),
                true,
            ),
            // --- arrays in the document ---
            case(
                "array contains scalar",
                json!({"data": {"tags": "urgent"}}),
                ev(),
                true,
            ),
            case(
                "array lacks scalar",
                json!({"data": {"tags": "spam"}}),
                ev(),
                false,
            ),
            case(
                "array contains number",
                json!({"data": {"tags": 7}}),
                ev(),
                true,
            ),
            case(
                "array contains number as float",
                json!({"data": {"tags": 7.0}}),
                ev(),
                true,
            ),
            case(
                "array filter is a subset",
                json!({"data": {"tags": ["vip", "urgent"]}}),
                ev(),
                true,
            ),
            case(
                "array filter not a subset",
                json!({"data": {"tags": ["vip", "spam"]}}),
                ev(),
                false,
            ),
            case(
                "empty array filter",
                json!({"data": {"tags": []}}),
                ev(),
                true,
            ),
            case(
                "array filter against scalar field",
                json!({"data": {"currency": ["usd", "eur"]}}),
                ev(),
                false,
            ),
            case(
                "empty array field",
                json!({"data": {"empty": "x"}}),
                ev(),
                false,
            ),
            case(
                "element object matches",
                json!({"data": {"items": {"sku": "B-2"}}}),
                ev(),
                true,
            ),
            case(
                "no element object matches",
                json!({"data": {"items": {"sku": "C-3"}}}),
                ev(),
                false,
            ),
            case(
                "one element must match every field",
                json!({"data": {"items": {"sku": "A-1", "qty": 2}}}),
                ev(),
                true,
            ),
            case(
                "fields split across elements do not match",
                json!({"data": {"items": {"sku": "A-1", "qty": 1}}}),
                ev(),
                false,
            ),
            case(
                "operator inside element",
                json!({"data": {"items": {"price": {"$lt": 6}}}}),
                ev(),
                true,
            ),
            case(
                "operator inside element, none match",
                json!({"data": {"items": {"qty": {"$gt": 5}}}}),
                ev(),
                false,
            ),
            case(
                "$exist false inside element",
                json!({"data": {"items": {"discount": {"$exist": false}}}}),
                ev(),
                true,
            ),
            case(
                "array of element objects",
                json!({"data": {"items": [{"sku": "B-2"}, {"sku": "A-1"}]}}),
                ev(),
                true,
            ),
            case(
                "field object against scalar elements",
                json!({"data": {"tags": {"name": "vip"}}}),
                ev(),
                false,
            ),
            case(
                "nested arrays searched",
                json!({"data": {"matrix": 4}}),
                ev(),
                true,
            ),
            case(
                "nested arrays lack",
                json!({"data": {"matrix": 5}}),
                ev(),
                false,
            ),
            case(
                "nested array subset",
                json!({"data": {"matrix": [[3, 4]]}}),
                ev(),
                true,
            ),
            case(
                "$or over elements",
                json!({"data": {"items": {"$or": [{"sku": "Z"}, {"qty": 1}]}}}),
                ev(),
                true,
            ),
            case(
                "$or shorthand on array field",
                json!({"data": {"tags": {"$or": ["spam", "vip"]}}}),
                ev(),
                true,
            ),
            case(
                "$not $in on array field",
                json!({"data": {"tags": {"$not": {"$in": "urgent"}}}}),
                ev(),
                false,
            ),
            // --- $or / $and / $not ---
            case(
                "$or one matches",
                json!({"$or": [{"topic": "order.updated"}, {"data": {"type": "order"}}]}),
                ev(),
                true,
            ),
            case(
                "$or none match",
                json!({"$or": [{"topic": "order.updated"}, {"data": {"type": "refund"}}]}),
                ev(),
                false,
            ),
            case(
                "$or with failing sibling key",
                json!({"$or": [{"data": {"type": "order"}}], "topic": "order.updated"}),
                ev(),
                false,
            ),
            case(
                "$or shorthand values",
                json!({"data": {"currency": {"$or": ["eur", "usd"]}}}),
                ev(),
                true,
            ),
            case(
                "$or shorthand values none",
                json!({"data": {"currency": {"$or": ["eur", "gbp"]}}}),
                ev(),
                false,
            ),
            case(
                "$or inside data",
                json!({"data": {"$or": [{"type": "refund"}, {"amount": {"$gte": 200}}]}}),
                ev(),
                true,
            ),
            case(
                "$or with $exist false on absent field",
                json!({"data": {"coupon": {"$or": [{"$exist": false}, {"$eq": "FREE"}]}}}),
                ev(),
                true,
            ),
            case(
                "$and all match",
                json!({"$and": [{"data": {"type": "order"}}, {"data": {"amount": {"$gte": 100}}}]}),
                ev(),
                true,
            ),
            case(
                "$and one fails",
                json!({"$and": [{"data": {"type": "order"}}, {"data": {"amount": {"$gte": 1000}}}]}),
                ev(),
                false,
            ),
            case(
                "$and at field level",
                json!({"data": {"amount": {"$and": [{"$gt": 100}, {"$lt": 300}]}}}),
                ev(),
                true,
            ),
            case(
                "$and at field level fails",
                json!({"data": {"amount": {"$and": [{"$gt": 100}, {"$lt": 200}]}}}),
                ev(),
                false,
            ),
            case(
                "$not top level, inner fails",
                json!({"$not": {"topic": "order.updated"}}),
                ev(),
                true,
            ),
            case(
                "$not top level, inner matches",
                json!({"$not": {"topic": "order.created"}}),
                ev(),
                false,
            ),
            case(
                "$not at field level",
                json!({"data": {"currency": {"$not": {"$in": ["eur", "gbp"]}}}}),
                ev(),
                true,
            ),
            case(
                "$not at field level, inner matches",
                json!({"data": {"currency": {"$not": {"$in": ["usd"]}}}}),
                ev(),
                false,
            ),
            case(
                "$not on absent field matches",
                json!({"data": {"status": {"$not": {"$eq": "cancelled"}}}}),
                ev(),
                true,
            ),
            case(
                "$not $exist",
                json!({"data": {"note": {"$not": {"$exist": true}}}}),
                ev(),
                false,
            ),
            case(
                "double $not",
                json!({"$not": {"$not": {"topic": "order.created"}}}),
                ev(),
                true,
            ),
            case(
                "$not beside $and",
                json!({
                    "$not": {"data": {"type": "refund"}},
                    "$and": [{"data": {"type": "order"}}, {"metadata": {"source": "api"}}]
                }),
                ev(),
                true,
            ),
            case(
                "$not beside $and, $not fails",
                json!({
                    "$not": {"data": {"type": "order"}},
                    "$and": [{"data": {"type": "order"}}]
                }),
                ev(),
                false,
            ),
            case(
                "$or inside $and",
                json!({"$and": [
                    {"$or": [{"metadata": {"source": "x"}}, {"metadata": {"source": "api"}}]},
                    {"topic": {"$startsWith": "order."}}
                ]}),
                ev(),
                true,
            ),
            case(
                "$and inside $or",
                json!({"$or": [
                    {"$and": [{"data": {"paid": true}}, {"data": {"refunded": true}}]},
                    {"$and": [{"data": {"paid": true}}, {"data": {"amount": {"$gt": 200}}}]}
                ]}),
                ev(),
                true,
            ),
            case(
                "$and inside $or, none",
                json!({"$or": [
                    {"$and": [{"data": {"paid": true}}, {"data": {"refunded": true}}]},
                    {"$and": [{"data": {"paid": false}}]}
                ]}),
                ev(),
                false,
            ),
            case(
                "operators with sibling field and $and",
                json!({"data": {"customer": {
                    "tier": {"$exist": true, "$or": ["premium", "gold"]},
                    "$and": [{"id": "cus_1"}, {"address": {"city": "Berlin"}}]
                }}}),
                ev(),
                true,
            ),
            // --- other documents ---
            case(
                "deep nesting",
                json!({"data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"$gte": 3}}}}}}}}}),
                json!({"data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 3}}}}}}}}),
                true,
            ),
            case(
                "data missing from document",
                json!({"data": {"type": {"$exist": false}}}),
                json!({"topic": "t"}),
                true,
            ),
            case(
                "document is not an object",
                json!({"topic": "x"}),
                json!("x"),
                false,
            ),
            case(
                "null filter on null document",
                json!(null),
                json!(null),
                true,
            ),
            // --- malformed filters never match ---
            case(
                "unknown operator never matches",
                json!({"data": {"$regex": "x"}}),
                ev(),
                false,
            ),
            case(
                "bad operand never matches",
                json!({"data": {"type": {"$exist": "yes"}}}),
                ev(),
                false,
            ),
            case(
                "malformed part under $not never matches",
                json!({"$not": {"data": {"type": {"$bogus": 1}}}}),
                ev(),
                false,
            ),
            case(
                "non-object filter never matches",
                json!("order.created"),
                ev(),
                false,
            ),
            // --- from Outpost's test table (adapted to the event shape) ---
            case(
                "outpost: $in substring and $in list",
                json!({"data": {"email": {"$in": "example"}, "amount": {"$in": [250, 456]}}}),
                ev(),
                true,
            ),
            case(
                "outpost: $in list needs exact element",
                json!({"data": {"email": {"$in": ["ada", "example"]}}}),
                ev(),
                false,
            ),
            case(
                "outpost: $or inside field object",
                json!({"data": {"customer": {"$or": [{"tier": true}, {"tier": {"$in": "prem"}}]}}}),
                ev(),
                true,
            ),
        ]
    }

    #[test]
    fn filter_match_table() {
        let cases = match_cases();
        assert!(cases.len() >= 120, "only {} cases", cases.len());
        check(&cases);
    }

    #[test]
    fn filter_validate_rejections() {
        // (filter, expected path, substring of the problem)
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!("order.created"), "", "must be a JSON object"),
            (json!([{"topic": "x"}]), "", "must be a JSON object"),
            (json!(42), "", "not a number"),
            (json!(true), "", "not a boolean"),
            (json!({"$foo": 1}), ".$foo", "unknown operator $foo"),
            (
                json!({"data": {"x": {"$exists": true}}}),
                ".data.x.$exists",
                "did you mean $exist?",
            ),
            (
                json!({"data": {"x": {"$startswith": "a"}}}),
                ".data.x.$startswith",
                "did you mean $startsWith?",
            ),
            (
                json!({"data": {"amount": {"$gte": [1]}}}),
                ".data.amount.$gte",
                "number or a string",
            ),
            (
                json!({"data": {"amount": {"$gt": true}}}),
                ".data.amount.$gt",
                "not a boolean",
            ),
            (
                json!({"data": {"amount": {"$lt": null}}}),
                ".data.amount.$lt",
                "number or a string",
            ),
            (
                json!({"data": {"amount": {"$lte": {"v": 1}}}}),
                ".data.amount.$lte",
                "not an object",
            ),
            (
                json!({"data": {"x": {"$in": {"a": 1}}}}),
                ".data.x.$in",
                "array of values",
            ),
            (
                json!({"data": {"x": {"$in": null}}}),
                ".data.x.$in",
                "not null",
            ),
            (
                json!({"data": {"x": {"$in": ["a", {"b": 1}]}}}),
                ".data.x.$in[1]",
                "string, number, boolean or null",
            ),
            (
                json!({"data": {"x": {"$nin": [["a"]]}}}),
                ".data.x.$nin[0]",
                "not an array",
            ),
            (
                json!({"data": {"x": {"$nin": {}}}}),
                ".data.x.$nin",
                "array of values",
            ),
            (
                json!({"data": {"x": {"$exist": "yes"}}}),
                ".data.x.$exist",
                "true (the field must be present)",
            ),
            (
                json!({"data": {"x": {"$exist": 1}}}),
                ".data.x.$exist",
                "not a number",
            ),
            (
                json!({"data": {"x": {"$startsWith": 5}}}),
                ".data.x.$startsWith",
                "needs a string",
            ),
            (
                json!({"data": {"x": {"$endsWith": []}}}),
                ".data.x.$endsWith",
                "at least one string",
            ),
            (
                json!({"data": {"x": {"$endsWith": ["a", 1]}}}),
                ".data.x.$endsWith[1]",
                "must be a string",
            ),
            (
                json!({"$or": {"topic": "x"}}),
                ".$or",
                "array of conditions",
            ),
            (json!({"$or": []}), ".$or", "at least one condition"),
            (json!({"$and": "topic"}), ".$and", "array of conditions"),
            (
                json!({"$or": ["order.created"]}),
                ".$or[0]",
                "must be an object",
            ),
            (
                json!({"$not": {"$and": [1]}}),
                ".$not.$and[0]",
                "must be an object",
            ),
            (
                json!({"data": {"x": {"$not": "a"}}}),
                ".data.x.$not",
                "condition object",
            ),
            (
                json!({"data": {"x": {"$not": ["a"]}}}),
                ".data.x.$not",
                "not an array",
            ),
            (
                json!({"data": {"customer": {}}}),
                ".data.customer",
                "empty object",
            ),
            (json!({"$not": {}}), ".$not", "empty object"),
            (json!({"$and": [{}]}), ".$and[0]", "empty object"),
            (
                json!({"$or": [{"topic": "x"}, {"data": {"$regex": "a"}}]}),
                ".$or[1].data.$regex",
                "unknown operator",
            ),
            (
                json!({"data": {"tags": [{"$bogus": 1}]}}),
                ".data.tags[0].$bogus",
                "unknown operator",
            ),
            (
                json!({"data": {"x": {"$or": [{"$gt": []}]}}}),
                ".data.x.$or[0].$gt",
                "number or a string",
            ),
        ];
        assert!(cases.len() >= 20);
        let mut failures = Vec::new();
        for (filter, path, needle) in &cases {
            match validate(filter) {
                Ok(()) => {
                    failures.push(format!("{filter}: accepted, expected an error at {path:?}"))
                }
                Err(e) => {
                    if e.path != *path || !e.problem.contains(needle) {
                        failures.push(format!(
                            "{filter}: got path {:?} problem {:?}; expected path {path:?} and \
                             a problem containing {needle:?}",
                            e.path, e.problem
                        ));
                    }
                }
            }
            assert!(!matches(filter, &ev()), "{filter}: invalid filter matched");
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn filter_validate_accepts() {
        let good = [
            json!(null),
            json!({}),
            json!({"topic": "order.created", "data": {"status": "paid", "currency": "usd"}}),
            json!({"data": {"amount": {"$gte": 100, "$lt": 500}}}),
            json!({"data": {"status": {"$in": ["pending", "processing", "completed"]}}}),
            json!({"data": {"email": {"$endsWith": "@example.com"}}}),
            json!({"data": {"discount_code": {"$exist": true}, "deleted_at": {"$exist": false}}}),
            json!({"$or": [{"data": {"status": "paid"}}, {"data": {"status": "shipped"}}]}),
            json!({"$and": [{"data": {"status": "active"}}, {"data": {"amount": {"$gte": 100}}}]}),
            json!({"data": {"status": {"$not": {"$in": ["cancelled", "refunded"]}}}}),
            json!({"time": {"$gte": "2025-01-01T00:00:00Z", "$lt": "2025-02-01T00:00:00Z"}}),
            json!({"metadata": {"source": "api"}}),
            json!({"data": {"title": {"$in": "sale"}, "tags": {"$nin": 7}}}),
            json!({"data": {"title": {"$startsWith": ["a", "b"]}}}),
            json!({"data": {"currency": {"$or": ["usd", "eur", null, 1, true]}}}),
            json!({"data": {"x": {"$eq": {"nested": [1, {"$not": "literal keys are fine"}]}}}}),
            json!({"data": {"tags": ["a", {"name": "b"}, [1, 2]]}}),
            json!({"data": {"x": {"$neq": null}}}),
        ];
        for filter in &good {
            assert_eq!(validate(filter), Ok(()), "{filter}");
        }
    }

    /// A filter made of `levels` nested objects: `{"data": {"a": … {"$exist": true}}}`.
    fn nested_filter(levels: usize) -> Value {
        let mut filter = json!({"$exist": true});
        for _ in 0..levels.saturating_sub(2) {
            filter = json!({ "a": filter });
        }
        json!({ "data": filter })
    }

    #[test]
    fn filter_depth_limit() {
        let mut doc = json!(1);
        for _ in 0..31 {
            doc = json!({ "a": doc });
        }
        let doc = json!({ "data": doc });

        assert_eq!(validate(&nested_filter(32)), Ok(()));
        assert!(matches(&nested_filter(32), &doc));

        let err = validate(&nested_filter(33)).expect_err("33 levels must be rejected");
        assert_eq!(err.path, format!(".data{}", ".a".repeat(31)));
        assert!(
            err.problem.contains("more than 32 levels"),
            "{}",
            err.problem
        );
        assert!(!matches(&nested_filter(33), &doc));

        let deep_literal = (0..40).fold(json!(1), |v, _| json!([v]));
        let err = validate(&json!({"data": {"x": {"$eq": deep_literal}}})).expect_err("deep $eq");
        assert!(err.path.starts_with(".data.x.$eq[0]"), "{}", err.path);
    }

    #[test]
    fn filter_never_panics_on_hostile_input() {
        // A very deep filter: validate stops early, matches refuses it.
        let deep = (0..300).fold(json!({"$exist": true}), |v, _| json!({ "$not": v }));
        assert!(validate(&deep).is_err());
        assert!(!matches(&deep, &ev()));

        // A very deep array in the document: element-wise search gives up (no match) instead
        // of overflowing the stack, even on a small one. (Depth 300 only: building and dropping
        // much deeper values overflows inside serde_json itself, before the filter runs.)
        let deep_doc = (0..300).fold(json!(1), |v, _| json!([v]));
        let doc = json!({ "data": { "x": deep_doc } });
        let results = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(scope, || {
                    (
                        matches(&json!({"data": {"x": 1}}), &doc),
                        matches(&json!({"data": {"x": {"a": 1}}}), &doc),
                        matches(&json!({"data": {"x": {"$exist": true}}}), &doc),
                    )
                })
                .map(|handle| handle.join())
        });
        assert!(
            matches!(results, Ok(Ok((false, false, true)))),
            "{results:?}"
        );

        // Odd but well-formed: big numbers, unicode, empty keys.
        let doc = json!({"data": {"": "empty key", "n": u64::MAX, "s": "ünïcödé ✓"}});
        assert!(matches(&json!({"data": {"": "empty key"}}), &doc));
        assert!(matches(&json!({"data": {"n": {"$gt": 1e19}}}), &doc));
        assert!(matches(&json!({"data": {"s": {"$endsWith": "✓"}}}), &doc));
    }

    #[test]
    fn filter_error_display() {
        let err = validate(&json!({"data": {"amount": {"$gte": [1]}}})).expect_err("invalid");
        assert!(
            err.to_string()
                .starts_with("filter.data.amount.$gte: $gte needs a number or a string"),
            "{err}"
        );
        let err = validate(&json!("x")).expect_err("invalid");
        assert!(
            err.to_string().starts_with("filter: a filter must be"),
            "{err}"
        );
    }
}

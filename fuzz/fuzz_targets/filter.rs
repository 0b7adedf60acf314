//! Payload filters (`herald_core::filter`): `validate` and `matches` never panic or overflow
//! the stack, whatever JSON they get, and agree with each other.
//!
//! Input: a filter document and an event document as JSON text, separated by the first
//! newline (a missing second part is the document `{}`).

#![no_main]

use herald_core::filter::{matches, validate};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (f, d) = text.split_once('\n').unwrap_or((&text, "{}"));
    let Ok(filter) = serde_json::from_str::<Value>(f) else {
        return;
    };
    let doc = serde_json::from_str::<Value>(d).unwrap_or_else(|_| json!({}));
    let valid = validate(&filter).is_ok();
    let hit = matches(&filter, &doc);
    // A filter `validate` rejects matches nothing (null is valid and matches everything).
    if !valid {
        assert!(!hit, "an invalid filter matched: {filter}");
        return;
    }
    if let Err(e) = validate(&filter) {
        panic!("validate is not deterministic: {e}");
    }
    // `$and` / `$or` of the filter with itself mean the filter (when they still validate:
    // one more level may pass the nesting limit).
    for op in ["$and", "$or"] {
        let Value::Object(_) = filter else { break };
        let twice = json!({ op: [filter.clone(), filter.clone()] });
        if validate(&twice).is_ok() {
            assert_eq!(
                matches(&twice, &doc),
                hit,
                "{op} of a filter with itself differs from the filter: {filter} on {doc}"
            );
        }
    }
});

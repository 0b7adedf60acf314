//! CSV webhook-template uploads through `herald_api::templates`, the code the upload route
//! runs: the first pass ([`check`]) on arbitrary bytes, then, for a file it accepts, the
//! second pass ([`writes`]) that produces the store writes.
//!
//! What must hold: no panic on any input; the report lists at most `MAX_ERRORS` problems and
//! counts every one, each on a line of the file; a file the first pass accepts is written by
//! the second pass without a single refusal, one write per created or updated row, and each
//! written destination exports back to a CSV row.
//!
//! The tenant already has destination `d1` (mapped from a fixed row at start), so rows can
//! create, update or leave a destination unchanged. Nothing is delivered or resolved:
//! validation only parses URLs.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use herald_api::templates::{self, MAX_ERRORS, Mapper};
use herald_core::signing::SigningMode;
use herald_destinations::{DestinationsConfig, registry};
use libfuzzer_sys::fuzz_target;

/// A row that maps to destination `d1`.
const EXISTING: &str = "ID,Name,Value,EntityType,Type,Scope,Server Url,Auth Token\n\
d1,Existing,v,user,finding,global,https://hooks.example.com/in,tok_1\n";

fn mapper() -> &'static Arc<Mapper> {
    static MAPPER: OnceLock<Arc<Mapper>> = OnceLock::new();
    MAPPER.get_or_init(|| {
        let registry = registry(&DestinationsConfig::default()).expect("registry");
        let mut mapper = Mapper {
            tenant_id: "fz".into(),
            existing: HashMap::new(),
            registry,
            catalog: Vec::new(),
            signing_mode: SigningMode::default(),
            now: "2026-01-01T00:00:00Z".parse().expect("time"),
            max_lifetime: None,
        };
        let writes: Vec<_> = templates::writes(Arc::new(clone(&mapper)), EXISTING.as_bytes())
            .collect::<Result<_, _>>()
            .expect("the fixed row maps");
        for (d, _) in writes {
            mapper.existing.insert(d.id.clone(), d);
        }
        assert_eq!(mapper.existing.len(), 1);
        Arc::new(mapper)
    })
}

/// A copy of `m` (Mapper holds only owned data).
fn clone(m: &Mapper) -> Mapper {
    Mapper {
        tenant_id: m.tenant_id.clone(),
        existing: m.existing.clone(),
        registry: m.registry.clone(),
        catalog: m.catalog.clone(),
        signing_mode: m.signing_mode,
        now: m.now,
        max_lifetime: m.max_lifetime,
    }
}

fuzz_target!(|data: &[u8]| {
    let mapper = mapper();
    let check = templates::check(mapper, data);
    assert!(check.errors.len() <= MAX_ERRORS);
    assert!(check.error_count >= check.errors.len() as u64);
    let lines = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    for e in &check.errors {
        assert!(
            e.line <= lines,
            "error on line {} of {lines}: {e:?}",
            e.line
        );
    }
    let _ = check.report();
    if check.error_count > 0 {
        return;
    }
    let mut written = 0u64;
    for w in templates::writes(mapper.clone(), std::io::Cursor::new(data.to_vec())) {
        let (d, created) = w.unwrap_or_else(|e| panic!("checked file refused on write: {e}"));
        assert_eq!(created, !mapper.existing.contains_key(&d.id));
        assert!(
            templates::export_row(&d, true).is_some(),
            "exports back: {}",
            d.id
        );
        written += 1;
    }
    assert_eq!(written, check.created + check.updated);
});

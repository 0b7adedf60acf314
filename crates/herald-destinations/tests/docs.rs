//! docs/destinations.md agrees with the served schemas: every type compiled into this build
//! has a section, and the section names every field its schema serves, except the
//! engine-level and signing fields every type shares (documented once, at the top).

use herald_destinations::{DestinationsConfig, registry};

/// Fields every type (or every signing type) gets from `herald_core::spec`.
const COMMON: [&str; 6] = [
    "rate_limit_per_minute",
    "max_in_flight",
    "signing_mode",
    "signing_secret",
    "previous_secret",
    "previous_secret_invalid_at",
];

#[test]
fn every_served_field_is_documented() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/destinations.md"
    ))
    .expect("docs/destinations.md");
    let registry = registry(&DestinationsConfig::default()).expect("registry");
    let mut missing = Vec::new();
    for t in registry.all() {
        let spec = t.spec();
        let heading = format!("## `{}`", spec.kind);
        let Some(start) = doc.find(&heading) else {
            missing.push(format!("no section {heading}"));
            continue;
        };
        let rest = &doc[start + heading.len()..];
        let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
        for f in spec.config_fields.iter().chain(&spec.credential_fields) {
            if COMMON.contains(&f.key.as_str()) || f.key == "secret" && spec.kind == "webhook" {
                continue;
            }
            if !section.contains(&format!("`{}`", f.key)) {
                missing.push(format!("{}: `{}`", spec.kind, f.key));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/destinations.md is missing: {missing:?}"
    );
}

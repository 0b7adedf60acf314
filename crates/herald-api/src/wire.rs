//! Response shapes of the Outpost contract, built from domain records.
//!
//! Timestamps are RFC 3339 in UTC. Optional fields the contract marks `nullable` are written
//! as `null`; fields it documents as "only present when …" are omitted.
//!
//! **Credentials.** Fields a destination type marks `sensitive` are masked for every caller,
//! admin included (Outpost's rule, and SPEC §4): values of 10 characters or more keep their
//! first 4 characters and the rest becomes `*`; shorter values become `****`. `config` values
//! that embed a secret (a password in URL userinfo, a credential-like custom header) show
//! with that part masked, as the type's `redact` says. A masked value sent back unchanged on
//! `PATCH` keeps the stored secret. The exception is the signing secret (the type's signing
//! credential and `previous_secret`): receivers need it to verify signatures, and the contract
//! documents it as readable ("read-only for tenants unless rotating"), so it is returned in
//! full, as Outpost does.

pub use herald_core::destination::Section;
use herald_core::destination::{FieldSpec, Registry, TypeSpec};
use herald_core::{Attempt, Destination, Event, TenantSummary, Topics};
use herald_store::{Dir, StoredEvent};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// The signing credentials every signing type has besides its current secret.
pub const ROTATION_FIELDS: [&str; 2] = ["previous_secret", "previous_secret_invalid_at"];

/// Credentials derived on read, never stored: the `whpk_` public keys of `whsk_` signing keys
/// (what ed25519 receivers verify with). Sent back, they are ignored.
pub const PUBLIC_KEY_FIELDS: [&str; 2] = ["public_key", "previous_public_key"];

/// RFC 3339 text of a timestamp.
pub fn ts(t: Timestamp) -> String {
    t.to_string()
}

fn opt_ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// A scoped API key, without its secret (only its digest is stored anyway).
pub fn api_key(k: &herald_store::ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "scopes": k.scopes,
        "tenant_id": k.tenant_id,
        "created_at": ts(k.created_at),
        "expires_at": opt_ts(k.expires_at),
        "last_used_at": opt_ts(k.last_used_at),
    })
}

/// A tenant with its derived figures.
pub fn tenant(s: &TenantSummary) -> Value {
    json!({
        "id": s.tenant.id,
        "destinations_count": s.destinations_count,
        "topics": s.topics,
        "metadata": s.tenant.metadata,
        "created_at": ts(s.tenant.created_at),
        "updated_at": ts(s.tenant.updated_at),
    })
}

/// `SeekPagination`.
pub fn pagination(
    order_by: &str,
    dir: Dir,
    limit: u32,
    next: Option<String>,
    prev: Option<String>,
) -> Value {
    json!({ "order_by": order_by, "dir": dir.as_str(), "limit": limit, "next": next, "prev": prev })
}

/// Topics as the contract writes them: `"*"` or an array.
pub fn topics(t: &Topics) -> Value {
    match t {
        Topics::All => json!("*"),
        Topics::List(l) => json!(l),
    }
}

/// Masks a secret for display.
pub fn mask(value: &str) -> String {
    herald_core::secret::mask(value)
}

/// Whether a field is masked on read (see the module docs).
pub fn is_masked(registry: &Registry, kind: &str, section: Section, key: &str) -> bool {
    let Some(t) = registry.get(kind) else {
        // A type this binary does not know: mask every credential, to be safe.
        return section == Section::Credentials;
    };
    if section == Section::Credentials
        && (t.signing_secret_key() == Some(key) || key == "previous_secret")
    {
        return false;
    }
    t.spec().field(section, key).is_some_and(|f| f.sensitive)
}

/// The display form of one stored value.
pub fn shown(registry: &Registry, kind: &str, section: Section, key: &str, value: &str) -> String {
    // An ed25519 signing key is never shown: receivers verify with its public key.
    let private_key = section == Section::Credentials
        && value.starts_with(herald_core::signing::ED25519_SECRET_PREFIX);
    if private_key || is_masked(registry, kind, section, key) {
        return mask(value);
    }
    match (section, registry.get(kind)) {
        (Section::Config, Some(t)) => t.redact(key, value).unwrap_or_else(|| value.to_string()),
        _ => value.to_string(),
    }
}

/// A destination, with sensitive fields masked and `target` / `target_url` from its type;
/// `expires_at` and `expired` (at `now`) are Herald extensions.
pub fn destination(registry: &Registry, d: &Destination, now: Timestamp) -> Value {
    let show = |section: Section,
                map: &std::collections::BTreeMap<String, String>|
     -> Map<String, Value> {
        map.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(shown(registry, &d.kind, section, k, v)),
                )
            })
            .collect()
    };
    let (target, target_url) = match registry.get(&d.kind) {
        Some(t) => {
            let (target, url) = t.target(d);
            (
                Value::String(target),
                url.map_or(Value::Null, Value::String),
            )
        }
        None => (Value::Null, Value::Null),
    };
    let mut credentials = show(Section::Credentials, &d.credentials);
    if let Some(signing) = registry.get(&d.kind).and_then(|t| t.signing()) {
        for (secret, public) in [signing.key, "previous_secret"]
            .into_iter()
            .zip(PUBLIC_KEY_FIELDS)
        {
            if let Some(pk) = d
                .credentials
                .get(secret)
                .and_then(|s| herald_core::signing::ed25519_public_key(s))
            {
                credentials.insert(public.to_string(), Value::String(pk));
            }
        }
    }
    json!({
        "id": d.id,
        "type": d.kind,
        "topics": topics(&d.topics),
        "filter": d.filter,
        "config": show(Section::Config, &d.config),
        "credentials": credentials,
        "delivery_metadata": d.delivery_metadata,
        "metadata": d.metadata,
        "disabled_at": opt_ts(d.disabled_at),
        "expires_at": opt_ts(d.expires_at),
        "expired": d.is_expired(now),
        "created_at": ts(d.created_at),
        "updated_at": ts(d.updated_at),
        "target": target,
        "target_url": target_url,
    })
}

/// `Event` as listed by `/events`.
pub fn event(e: &StoredEvent) -> Value {
    let mut v = event_summary(&e.event, e.event.destination_id.as_deref());
    if let Some(obj) = v.as_object_mut() {
        obj.insert("data".into(), e.event.data.clone());
        obj.insert(
            "matched_destination_ids".into(),
            json!(e.matched_destination_ids),
        );
    }
    v
}

/// `EventSummary`: an event without its data. `destination_id` is the destination the
/// event was delivered to (for attempts) or targeted at (for events).
pub fn event_summary(e: &Event, destination_id: Option<&str>) -> Value {
    let mut v = json!({
        "id": e.id,
        "tenant_id": e.tenant_id,
        "topic": e.topic,
        "time": ts(e.time),
        "eligible_for_retry": e.eligible_for_retry,
        "metadata": e.metadata,
    });
    if let (Some(d), Some(obj)) = (destination_id, v.as_object_mut()) {
        obj.insert("destination_id".into(), json!(d));
    }
    v
}

/// `EventFull`: a summary plus `data`.
pub fn event_full(e: &Event, destination_id: Option<&str>) -> Value {
    let mut v = event_summary(e, destination_id);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("data".into(), e.data.clone());
    }
    v
}

/// An `Attempt` without includes; `response_data` only when asked for.
pub fn attempt(a: &Attempt, with_response: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(a.id));
    m.insert("tenant_id".into(), json!(a.tenant_id));
    m.insert("event_id".into(), json!(a.event_id));
    m.insert("destination_id".into(), json!(a.destination_id));
    m.insert("destination_type".into(), json!(a.destination_type));
    m.insert("topic".into(), json!(a.topic));
    m.insert("status".into(), json!(a.status.as_str()));
    m.insert("time".into(), json!(ts(a.time)));
    m.insert("code".into(), json!(a.code));
    m.insert("attempt_number".into(), json!(a.attempt_number));
    m.insert("manual".into(), json!(a.manual));
    m.insert("latency_ms".into(), json!(a.latency_ms));
    if with_response {
        m.insert(
            "response_data".into(),
            a.response_data.clone().unwrap_or(Value::Null),
        );
    }
    m
}

/// `DestinationTypeSchema`.
pub fn type_spec(s: &TypeSpec) -> Value {
    let fields = |fs: &[FieldSpec]| -> Vec<Value> {
        fs.iter()
            .map(|f| {
                let mut v = json!({
                    "key": f.key,
                    "type": f.kind,
                    "label": f.label,
                    "description": f.description,
                    "required": f.required,
                    "sensitive": f.sensitive,
                });
                if let Some(obj) = v.as_object_mut() {
                    if let Some(d) = &f.default {
                        obj.insert("default".into(), json!(d));
                    }
                    if let Some(p) = &f.pattern {
                        obj.insert("pattern".into(), json!(p));
                    }
                    if let Some(n) = f.min_length {
                        obj.insert("minlength".into(), json!(n));
                    }
                    if let Some(n) = f.max_length {
                        obj.insert("maxlength".into(), json!(n));
                    }
                    if !f.options.is_empty() {
                        obj.insert("options".into(), json!(f.options));
                    }
                }
                v
            })
            .collect()
    };
    let mut v = json!({
        "type": s.kind,
        "label": s.label,
        "description": s.description,
        "icon": s.icon,
        "instructions": s.instructions,
        "config_fields": fields(&s.config_fields),
        "credential_fields": fields(&s.credential_fields),
    });
    // Herald extension: which credential holds the signing secret, for UIs that show it and
    // offer rotation instead of an input.
    if let (Some(key), Some(obj)) = (&s.signing_secret_key, v.as_object_mut()) {
        obj.insert("signing_secret_key".into(), json!(key));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masking() {
        assert_eq!(mask("short"), "****");
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "AKIA****************");
        assert_eq!(mask("0123456789"), "0123******");
    }
}

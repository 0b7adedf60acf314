//! Destinations of a tenant: list, create, get, merge-patch, delete, enable, disable.
//!
//! Every write is validated whole before anything is stored: topics against the catalog,
//! the filter's syntax, then the type's schema and checks through the registry. A request
//! either applies completely or not at all.
//!
//! Signing secrets, the same for every type that signs (the registry names the credential:
//! `secret` for webhooks as in Outpost, `signing_secret` elsewhere; this module names no type):
//! - on create, a missing secret is generated (unless the operator turned that off for the
//!   type); a tenant token may not choose one (422 `credentials.secret: is forbidden …`);
//! - on update, `credentials.rotate_secret: true` moves the current secret to
//!   `previous_secret`, generates a new one, and sets `previous_secret_invalid_at` to the given
//!   value or 24 hours from now; otherwise a tenant token may only send the stored values back
//!   (or their masked form), while the admin may set them directly.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use herald_core::spec::SigningField;
use herald_core::{Destination, Topics, filter, ids, signing, topic};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{Params, load_destination, tenant_scope};
use crate::auth::Caller;
use crate::body::{Fields, JsonBody, Patch, merge_map};
use crate::error::{ApiError, Problems};
use crate::openapi::schemas;
use crate::query::Params as Query;
use crate::wire::{self, ROTATION_FIELDS, Section};
use crate::{AppState, SharedState};

/// Longest accepted destination id.
const MAX_ID_LEN: usize = 255;

/// How long a rotated-out webhook secret keeps signing by default.
const PREVIOUS_SECRET_GRACE: SignedDuration = SignedDuration::from_hours(24);

fn render(state: &AppState, d: &Destination) -> Json<Value> {
    Json(wire::destination(
        state.engine.registry(),
        d,
        state.engine.clock().now(),
    ))
}

/// `destinations.max_lifetime`, when configured.
pub(crate) fn max_lifetime(state: &AppState) -> Option<SignedDuration> {
    state
        .engine
        .config()
        .max_lifetime
        .and_then(|m| SignedDuration::try_from(m).ok())
        .filter(|m| !m.is_zero())
}

/// Checks a requested `expires_at`: in the future, and within the max lifetime.
fn check_expiry(
    state: &AppState,
    field: &str,
    t: Timestamp,
    now: Timestamp,
    problems: &mut Problems,
) {
    if t <= now {
        problems.push(field, "must be in the future");
    } else if let Some(max) = max_lifetime(state)
        && t > now + max
    {
        problems.push(
            field,
            format!(
                "must be at most {} from now (destinations.max_lifetime), i.e. not after {}",
                friendly(max),
                wire::ts(now + max)
            ),
        );
    }
}

/// A duration for messages: whole days or hours when it is one.
fn friendly(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs % 86_400 == 0 {
        format!("{} days", secs / 86_400)
    } else if secs % 3600 == 0 {
        format!("{} hours", secs / 3600)
    } else {
        format!("{secs} seconds")
    }
}

/// `GET /tenants/{t}/destinations`: not paged. `type` and `topics` filter (any notation); a
/// destination matches a `topics` filter when it subscribes to any of the given topics.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/destinations",
    tag = "Destinations",
    operation_id = "listTenantDestinations",
    summary = "List destinations",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("type" = Option<String>, Query, description = "Only these types."), ("topics" = Option<String>, Query, description = "Only destinations subscribed to these topics.")),
    responses((status = 200, description = "The tenant's destinations.", body = Vec<schemas::DestinationDoc>)),
)]
pub async fn list(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    let params = Query::parse(raw.as_deref());
    let kinds = params.list("type");
    let wanted_topics = params.list("topics");
    let all = state.engine.store().list_destinations(&tenant_id).await?;
    let registry = state.engine.registry();
    let models: Vec<Value> = all
        .iter()
        .filter(|d| kinds.is_empty() || kinds.contains(&d.kind))
        .filter(|d| wanted_topics.is_empty() || wanted_topics.iter().any(|t| d.topics.matches(t)))
        .map(|d| wire::destination(registry, d, state.engine.clock().now()))
        .collect();
    Ok(Json(Value::Array(models)))
}

/// `GET /tenants/{t}/destinations/{d}`.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/destinations/{destination_id}",
    tag = "Destinations",
    operation_id = "getTenantDestination",
    summary = "Get a destination",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "The destination.", body = schemas::DestinationDoc)),
)]
pub async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    Ok(render(
        &state,
        &load_destination(&state, &tenant_id, &id).await?,
    ))
}

/// Which topics a destination may subscribe to: the tenant topic catalog (when configured),
/// or the operator topics for operator destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A tenant's destination.
    Tenant,
    /// An operator destination (tenant [`herald_core::operator::OPERATOR_TENANT`]).
    Operator,
}

/// `DELETE /tenants/{t}/destinations/{d}`: cancels its pending deliveries.
#[utoipa::path(
    delete,
    path = "/tenants/{tenant_id}/destinations/{destination_id}",
    tag = "Destinations",
    operation_id = "deleteTenantDestination",
    summary = "Delete a destination",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "Deleted.", body = schemas::SuccessResponse)),
)]
pub async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    delete_in(&state, &tenant_id, &id).await
}

/// Deletes a destination of `tenant_id` (scope already checked).
pub(crate) async fn delete_in(
    state: &SharedState,
    tenant_id: &str,
    id: &str,
) -> Result<Json<Value>, ApiError> {
    if !state
        .engine
        .store()
        .delete_destination(tenant_id, id, state.engine.clock().now())
        .await?
    {
        return Err(ApiError::not_found("destination"));
    }
    state.engine.destination_removed(tenant_id, id);
    Ok(Json(json!({ "success": true })))
}

/// `PUT /tenants/{t}/destinations/{d}/enable`.
#[utoipa::path(
    put,
    path = "/tenants/{tenant_id}/destinations/{destination_id}/enable",
    tag = "Destinations",
    operation_id = "enableTenantDestination",
    summary = "Enable a destination",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "Enabled.", body = schemas::DestinationDoc)),
)]
pub async fn enable(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_disabled(state, caller, tenant_id, id, false).await
}

/// `PUT /tenants/{t}/destinations/{d}/disable`: cancels its pending deliveries.
#[utoipa::path(
    put,
    path = "/tenants/{tenant_id}/destinations/{destination_id}/disable",
    tag = "Destinations",
    operation_id = "disableTenantDestination",
    summary = "Disable a destination",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    responses((status = 200, description = "Disabled.", body = schemas::DestinationDoc)),
)]
pub async fn disable(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_disabled(state, caller, tenant_id, id, true).await
}

async fn set_disabled(
    state: SharedState,
    caller: Caller,
    tenant_id: String,
    id: String,
    disabled: bool,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    set_disabled_in(&state, &tenant_id, &id, disabled).await
}

/// Enables or disables a destination of `tenant_id` (scope already checked).
pub(crate) async fn set_disabled_in(
    state: &SharedState,
    tenant_id: &str,
    id: &str,
    disabled: bool,
) -> Result<Json<Value>, ApiError> {
    let mut d = load_destination(state, tenant_id, id).await?;
    if d.is_enabled() == disabled {
        let now = state.engine.clock().now();
        d.disabled_at = disabled.then_some(now);
        d.updated_at = now;
        state
            .engine
            .store()
            .update_destination(&d, disabled, now)
            .await?;
        state.engine.destination_saved(&d);
    }
    Ok(render(state, &d))
}

/// `POST /tenants/{t}/destinations`: 201 with the stored destination.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/destinations",
    tag = "Destinations",
    operation_id = "createTenantDestination",
    summary = "Create a destination",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme")),
    request_body = schemas::DestinationCreateDoc,
    responses((status = 201, description = "Created.", body = schemas::DestinationDoc), (status = 409, description = "The id is taken.", body = schemas::ApiErrorResponse)),
)]
pub async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    Params(tenant_id): Params<String>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    let d = create_in(&state, &caller, tenant_id, Owner::Tenant, body).await?;
    Ok((StatusCode::CREATED, render(&state, &d)))
}

/// Validates and stores a new destination of `tenant_id` (scope already checked).
pub(crate) async fn create_in(
    state: &SharedState,
    caller: &Caller,
    tenant_id: String,
    owner: Owner,
    body: JsonBody,
) -> Result<Destination, ApiError> {
    let state: &AppState = state;
    let obj = body.object(true)?;
    let now = state.engine.clock().now();
    let mut f = Fields::new(&obj);

    let id = match f.string("id") {
        Some(id) if !id.is_empty() => {
            check_id(&id, &mut f.problems);
            id
        }
        _ => ids::new_id(ids::DESTINATION),
    };
    let kind = f.required_string("type");
    let topics = match f.raw("topics") {
        None | Some(Value::Null) => {
            f.problems.push(
                "topics",
                "is required: \"*\" or a non-empty array of topics",
            );
            None
        }
        Some(v) => parse_topics(state, owner, v, &mut f.problems),
    };
    let filter = parse_filter(f.raw("filter"), &mut f.problems);
    if let Some(kind) = obj.get("type").and_then(Value::as_str) {
        check_native(state, kind, &obj, &mut f.problems);
        if owner == Owner::Tenant
            && state
                .engine
                .registry()
                .get(kind)
                .is_some_and(|t| !t.tenant_usable())
        {
            f.problems.push(
                "type",
                format!("{kind:?} destinations are available to operator destinations only on this server"),
            );
        }
    }
    let config = present(f.string_patch_map("config", true));
    let mut credentials = present(f.string_patch_map("credentials", true));
    for k in wire::PUBLIC_KEY_FIELDS {
        credentials.remove(k);
    }
    let delivery_metadata = f.string_map("delivery_metadata");
    let metadata = f.string_map("metadata");
    let created_at = f.timestamp("created_at");
    let updated_at = f.timestamp("updated_at");
    let disabled_at = f.timestamp("disabled_at");
    let expires_at = f.timestamp("expires_at");

    if !caller.is_admin()
        && (matches!(created_at, Patch::Set(_)) || matches!(updated_at, Patch::Set(_)))
    {
        return Err(ApiError::forbidden(
            "created_at and updated_at may only be set with the admin API key",
        ));
    }
    let mut problems = f.problems;
    if let Patch::Set(m) = &delivery_metadata {
        check_header_values(m.iter().map(|(k, v)| (k, Some(v))), &mut problems);
    }
    for (name, t) in [
        ("created_at", &created_at),
        ("updated_at", &updated_at),
        ("disabled_at", &disabled_at),
    ] {
        if let Patch::Set(t) = t
            && *t > now
        {
            problems.push(name, "must not be in the future");
        }
    }
    let expires_at = match expires_at {
        Patch::Set(t) => {
            check_expiry(state, "expires_at", t, now, &mut problems);
            Some(t)
        }
        // With a max lifetime every destination expires; without one, none has to.
        Patch::Absent | Patch::Null => max_lifetime(state).map(|m| now + m),
    };
    let created_at = set_or(created_at, now);
    let updated_at = set_or(updated_at, created_at);
    if updated_at < created_at {
        problems.push("updated_at", "must not be before created_at");
    }
    let (Some(kind), Some(topics)) = (kind, topics) else {
        return Err(problems_or_fail(problems));
    };
    problems.finish()?;

    if credentials.contains_key("rotate_secret") {
        return Err(ApiError::invalid(
            "credentials.rotate_secret",
            "can only be used when updating a destination",
        ));
    }
    if let Some(signing) = signing_field(state, &kind) {
        rename_old_secret(state, &kind, &mut credentials);
        let mut problems = Problems::default();
        if !caller.is_admin() {
            for key in std::iter::once(signing.key).chain(ROTATION_FIELDS) {
                if credentials.get(key).is_some_and(|v| !v.is_empty()) {
                    problems.push(
                        format!("credentials.{key}"),
                        "is forbidden with a tenant token: the secret is generated, and rotated with rotate_secret",
                    );
                }
            }
        }
        problems.finish()?;
        if signing.generate && credentials.get(signing.key).is_none_or(|s| s.is_empty()) {
            let mode = signing_mode_of(state, &config);
            credentials.insert(signing.key.into(), signing::generate_secret_for(mode));
        }
        default_invalid_at(&mut credentials, now);
    }
    validate_with_registry(state, &kind, &config, &credentials)?;

    let d = Destination {
        id,
        tenant_id,
        kind,
        topics,
        filter,
        config,
        credentials,
        delivery_metadata: patch_to_option(delivery_metadata),
        metadata: patch_to_option(metadata),
        disabled_at: match disabled_at {
            Patch::Set(t) => Some(t),
            _ => None,
        },
        expires_at,
        created_at,
        updated_at,
    };
    state.engine.store().insert_destination(&d).await?;
    state.engine.destination_saved(&d);
    Ok(d)
}

/// `PATCH /tenants/{t}/destinations/{d}`: RFC 7396 merge-patch (see the module docs).
#[utoipa::path(
    patch,
    path = "/tenants/{tenant_id}/destinations/{destination_id}",
    tag = "Destinations",
    operation_id = "updateTenantDestination",
    summary = "Update a destination",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    request_body = schemas::DestinationUpdateDoc,
    responses((status = 200, description = "Updated.", body = schemas::DestinationDoc)),
)]
pub async fn update(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    let d = update_in(&state, &caller, &tenant_id, &id, Owner::Tenant, body).await?;
    Ok(render(&state, &d))
}

/// Validates and applies a merge-patch to a destination of `tenant_id` (scope already
/// checked).
pub(crate) async fn update_in(
    shared: &SharedState,
    caller: &Caller,
    tenant_id: &str,
    id: &str,
    owner: Owner,
    body: JsonBody,
) -> Result<Destination, ApiError> {
    let state: &AppState = shared;
    let obj = body.object(true)?;
    let old = load_destination(shared, tenant_id, id).await?;
    let now = state.engine.clock().now();
    let registry = state.engine.registry();
    let mut f = Fields::new(&obj);
    let mut d = old.clone();

    if let Some(kind) = f.string("type")
        && kind != old.kind
    {
        f.problems.push(
            "type",
            format!(
                "cannot be changed (this destination is a {} destination)",
                old.kind
            ),
        );
    }
    match f.raw("topics") {
        None => {}
        Some(Value::Null) => f.problems.push(
            "topics",
            "must be \"*\" or a non-empty array of topics, not null",
        ),
        Some(v) => {
            if let Some(t) = parse_topics(state, owner, v, &mut f.problems) {
                d.topics = t;
            }
        }
    }
    if let Some(raw) = f.raw("filter") {
        d.filter = parse_filter(Some(raw), &mut f.problems);
    }
    check_native(state, &old.kind, &obj, &mut f.problems);
    let config_patch = f.string_patch_map("config", true);
    let creds_patch = f.string_patch_map("credentials", true);
    if let Patch::Null = config_patch {
        f.problems.push("config", "must be an object, not null");
    }
    if let Patch::Null = creds_patch {
        f.problems
            .push("credentials", "must be an object, not null");
    }
    for (key, slot) in [
        ("delivery_metadata", &mut d.delivery_metadata),
        ("metadata", &mut d.metadata),
    ] {
        match f.string_patch_map(key, false) {
            Patch::Absent => {}
            Patch::Null => *slot = None,
            Patch::Set(p) => {
                if key == "delivery_metadata" {
                    check_header_values(p.iter().map(|(k, v)| (k, v.as_ref())), &mut f.problems);
                }
                merge_map(slot.get_or_insert_with(BTreeMap::new), p)
            }
        }
    }
    match f.timestamp("disabled_at") {
        Patch::Absent => {}
        Patch::Null => d.disabled_at = None,
        Patch::Set(t) if t > now => f.problems.push("disabled_at", "must not be in the future"),
        Patch::Set(t) => d.disabled_at = Some(t),
    }
    match f.timestamp("expires_at") {
        Patch::Absent => {}
        Patch::Null if max_lifetime(state).is_some() => f.problems.push(
            "expires_at",
            "cannot be removed: destinations.max_lifetime is set; renew to extend it",
        ),
        Patch::Null => d.expires_at = None,
        Patch::Set(t) => {
            check_expiry(state, "expires_at", t, now, &mut f.problems);
            d.expires_at = Some(t);
        }
    }
    let mut problems = f.problems;
    let sent = Sent::of(&config_patch, &creds_patch);

    if let Patch::Set(p) = config_patch {
        merge_keeping_masked(registry, &old, Section::Config, &mut d.config, p);
    }
    if let Patch::Set(mut p) = creds_patch {
        for k in wire::PUBLIC_KEY_FIELDS {
            p.remove(k);
        }
        let rotate = match p.remove("rotate_secret") {
            None | Some(None) => false,
            Some(Some(v)) => match v.as_str() {
                "true" => true,
                "false" => false,
                other => {
                    problems.push(
                        "credentials.rotate_secret",
                        format!("expected a boolean, got {other:?}"),
                    );
                    false
                }
            },
        };
        match signing_field(state, &old.kind) {
            Some(signing) => {
                rename_old_secret(state, &old.kind, &mut p);
                let others: BTreeMap<_, _> = p
                    .extract_if(.., |k, _| {
                        k != signing.key && !ROTATION_FIELDS.contains(&k.as_str())
                    })
                    .collect();
                merge_keeping_masked(
                    registry,
                    &old,
                    Section::Credentials,
                    &mut d.credentials,
                    others,
                );
                let rules = SecretRules {
                    key: signing.key,
                    caller,
                    now,
                    mode: signing_mode_of(state, &d.config),
                };
                rules.apply(&old, &mut d, p, rotate, &mut problems);
            }
            None => {
                if rotate {
                    problems.push(
                        "credentials.rotate_secret",
                        format!(
                            "{} destinations are not signed: there is no secret to rotate",
                            old.kind
                        ),
                    );
                }
                merge_keeping_masked(registry, &old, Section::Credentials, &mut d.credentials, p);
            }
        }
    }
    follow_target(registry, &old, &mut d, &sent, &mut problems);
    problems.finish()?;
    validate_with_registry(state, &d.kind, &d.config, &d.credentials)?;

    d.updated_at = now;
    let becomes_disabled = old.is_enabled() && !d.is_enabled();
    state
        .engine
        .store()
        .update_destination(&d, becomes_disabled, now)
        .await?;
    state.engine.destination_saved(&d);
    Ok(d)
}

/// The `config` and `credentials` values a PATCH sent, as sent (masked forms included).
struct Sent {
    config: BTreeMap<String, String>,
    credentials: BTreeMap<String, String>,
}

impl Sent {
    fn of(
        config: &Patch<BTreeMap<String, Option<String>>>,
        credentials: &Patch<BTreeMap<String, Option<String>>>,
    ) -> Sent {
        let values = |p: &Patch<BTreeMap<String, Option<String>>>| match p {
            Patch::Set(m) => m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                .collect(),
            _ => BTreeMap::new(),
        };
        Sent {
            config: values(config),
            credentials: values(credentials),
        }
    }
}

/// Credentials follow their target: when an update changes where the destination connects
/// (a field the type marks as a target — host, URL, endpoint, token URL), the stored secrets
/// are not carried over to the new place. Every sensitive credential the request does not
/// send again (in full, not masked) is dropped, so a type that needs it answers 422 naming it;
/// a config value that embeds a stored secret (URL userinfo, an `Authorization` header) must
/// be sent again in full. The signing secret is Herald's own and stays.
fn follow_target(
    registry: &herald_core::destination::Registry,
    old: &Destination,
    d: &mut Destination,
    sent: &Sent,
    problems: &mut Problems,
) {
    let Some(t) = registry.get(&old.kind) else {
        return;
    };
    let spec = t.spec();
    let changed = |section: Section,
                   old_map: &BTreeMap<String, String>,
                   new_map: &BTreeMap<String, String>| {
        spec.target_keys(section).any(|k| {
            old_map.get(k).filter(|v| !v.is_empty()) != new_map.get(k).filter(|v| !v.is_empty())
        })
    };
    if !changed(Section::Config, &old.config, &d.config)
        && !changed(Section::Credentials, &old.credentials, &d.credentials)
    {
        return;
    }
    let signing = t.signing_secret_key();
    let keep = |k: &str| Some(k) == signing || ROTATION_FIELDS.contains(&k);
    for f in spec.fields(Section::Credentials) {
        if !f.sensitive || keep(&f.key) {
            continue;
        }
        let Some(stored) = old.credentials.get(&f.key).filter(|v| !v.is_empty()) else {
            continue;
        };
        let sent_again = sent
            .credentials
            .get(&f.key)
            .is_some_and(|v| !v.is_empty() && *v != wire::mask(stored));
        if !sent_again {
            d.credentials.remove(&f.key);
        }
    }
    for (k, v) in &d.config {
        let Some(stored) = old.config.get(k) else {
            continue;
        };
        // The new value still holds a part that was shown masked, and the client did not
        // send it in full.
        if t.redact(k, v).is_some()
            && sent.config.get(k) != Some(v)
            && t.redact(k, stored).is_some()
        {
            problems.push(
                format!("config.{k}"),
                "holds a secret that does not follow a change of where this destination connects; send it again in full",
            );
        }
    }
}

/// `POST /tenants/{t}/destinations/{d}/renew` `{expires_at?}`: extends the subscription, by
/// default to now + `destinations.max_lifetime` (without a max lifetime `expires_at` is
/// required). An expired destination receives events again from then on; a new expiry starts
/// a new round of expiry notices.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/destinations/{destination_id}/renew",
    tag = "Destinations",
    operation_id = "renewTenantDestination",
    summary = "Renew a subscription",
    params(("tenant_id" = String, Path, description = "The tenant id.", example = "acme"), ("destination_id" = String, Path, description = "The destination id.", example = "des_example")),
    request_body = schemas::RenewRequest,
    responses((status = 200, description = "Renewed.", body = schemas::DestinationDoc)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub async fn renew(
    State(state): State<SharedState>,
    caller: Caller,
    Params((tenant_id, id)): Params<(String, String)>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    tenant_scope(&state, &caller, &tenant_id).await?;
    let obj = body.object(false)?;
    let mut d = load_destination(&state, &tenant_id, &id).await?;
    let now = state.engine.clock().now();
    let mut f = Fields::new(&obj);
    for key in obj.keys() {
        if key != "expires_at" {
            f.problems
                .push(key, "is not a renew option (only expires_at is)");
        }
    }
    let expires_at = match f.timestamp("expires_at") {
        Patch::Set(t) => {
            check_expiry(&state, "expires_at", t, now, &mut f.problems);
            Some(t)
        }
        Patch::Absent | Patch::Null => match max_lifetime(&state) {
            Some(m) => Some(now + m),
            None => {
                f.problems.push(
                    "expires_at",
                    "is required: no destinations.max_lifetime is configured to renew by",
                );
                None
            }
        },
    };
    f.problems.finish()?;
    d.expires_at = expires_at;
    d.updated_at = now;
    state
        .engine
        .store()
        .update_destination(&d, false, now)
        .await?;
    state.engine.destination_saved(&d);
    Ok(render(&state, &d))
}

/// The signing-secret rules of an update (module docs), for the type's signing credential
/// `key` and the rotation fields.
struct SecretRules<'a> {
    key: &'a str,
    caller: &'a Caller,
    now: Timestamp,
    /// The destination's signature scheme after the update (which kind of key to generate).
    mode: signing::SigningMode,
}

impl SecretRules<'_> {
    fn apply(
        &self,
        old: &Destination,
        d: &mut Destination,
        mut patch: BTreeMap<String, Option<String>>,
        rotate: bool,
        problems: &mut Problems,
    ) {
        let key = self.key;
        let stored = |k: &str| old.credentials.get(k).cloned();
        // A value sent back as shown (in full or masked) is "unchanged".
        let unchanged = |k: &str, v: &Option<String>| match (v, stored(k)) {
            (Some(v), Some(s)) => *v == s || *v == wire::mask(&s),
            (None, None) => true,
            _ => false,
        };
        let invalid_at_given = patch.get("previous_secret_invalid_at").cloned().flatten();
        if rotate {
            let Some(current) = stored(key).filter(|s| !s.is_empty()) else {
                problems.push(
                    "credentials.rotate_secret",
                    "there is no current secret to rotate",
                );
                return;
            };
            d.credentials.insert("previous_secret".into(), current);
            d.credentials
                .insert(key.into(), signing::generate_secret_for(self.mode));
            let invalid_at =
                invalid_at_given.unwrap_or_else(|| wire::ts(self.now + PREVIOUS_SECRET_GRACE));
            d.credentials
                .insert("previous_secret_invalid_at".into(), invalid_at);
            return;
        }
        if !self.caller.is_admin() {
            for k in std::iter::once(key).chain(ROTATION_FIELDS) {
                if let Some(v) = patch.remove(k)
                    && !unchanged(k, &v)
                {
                    problems.push(
                        format!("credentials.{k}"),
                        "is forbidden with a tenant token; use rotate_secret: true to rotate",
                    );
                }
            }
        } else {
            for k in [key, "previous_secret"] {
                if patch.get(k).is_some_and(|v| unchanged(k, v)) {
                    patch.remove(k);
                }
            }
        }
        merge_map(&mut d.credentials, patch);
        default_invalid_at(&mut d.credentials, self.now);
    }
}

/// Refuses a JSON number, boolean, object or array in `config`/`credentials` where the field
/// is text: native JSON is accepted only where it is the field's own type (`60` for a number).
fn check_native(
    state: &AppState,
    kind: &str,
    obj: &serde_json::Map<String, Value>,
    problems: &mut Problems,
) {
    let Some(t) = state.engine.registry().get(kind) else {
        return;
    };
    for section in [Section::Config, Section::Credentials] {
        let Some(Value::Object(values)) = obj.get(section.as_str()) else {
            continue;
        };
        for (key, v) in values {
            if !(v.is_string() || v.is_null() || t.accepts_native(section, key, v)) {
                problems.push(
                    format!("{}.{key}", section.as_str()),
                    format!("expected a string, got {}", crate::body::kind(v)),
                );
            }
        }
    }
}

/// The signature scheme a destination with `config` signs with: its `signing_mode`, else the
/// server's.
fn signing_mode_of(state: &AppState, config: &BTreeMap<String, String>) -> signing::SigningMode {
    config
        .get("signing_mode")
        .filter(|m| !m.is_empty())
        .and_then(|m| serde_json::from_value(Value::String(m.clone())).ok())
        .unwrap_or(state.engine.config().signing.mode)
}

/// Where a type keeps its signing secret, when it signs.
fn signing_field(state: &AppState, kind: &str) -> Option<SigningField> {
    state.engine.registry().get(kind)?.signing().cloned()
}

/// `secret` was the signing credential's name on message-system types before it became
/// `signing_secret` everywhere; a client still sending it is understood, where the type has
/// no credential of its own by that name.
fn rename_old_secret<V>(state: &AppState, kind: &str, credentials: &mut BTreeMap<String, V>) {
    let Some(t) = state.engine.registry().get(kind) else {
        return;
    };
    let Some(key) = t.signing_secret_key() else {
        return;
    };
    if key != "secret"
        && !t.known_keys(Section::Credentials).contains(&"secret")
        && !credentials.contains_key(key)
        && let Some(v) = credentials.remove("secret")
    {
        credentials.insert(key.to_string(), v);
    }
}

/// Merges a patch into `config` or `credentials`, keeping the stored value of a sensitive
/// field when the caller sent back its masked form.
fn merge_keeping_masked(
    registry: &herald_core::destination::Registry,
    old: &Destination,
    section: Section,
    target: &mut BTreeMap<String, String>,
    mut patch: BTreeMap<String, Option<String>>,
) {
    let stored = match section {
        Section::Config => &old.config,
        Section::Credentials => &old.credentials,
    };
    patch.retain(|k, v| match (v, stored.get(k)) {
        (Some(v), Some(s)) if wire::is_masked(registry, &old.kind, section, k) => {
            *v != wire::mask(s)
        }
        _ => true,
    });
    // A config value shown with a masked part (URL userinfo, a credential header) keeps the
    // stored secret where the masked part came back unchanged.
    if section == Section::Config
        && let Some(t) = registry.get(&old.kind)
    {
        for (k, v) in patch.iter_mut() {
            if let (Some(sent), Some(s)) = (v.as_mut(), stored.get(k))
                && t.redact(k, s).is_some()
            {
                *sent = t.unredact(k, sent, s);
            }
        }
    }
    merge_map(target, patch);
}

/// With a previous secret but no expiry, the previous secret expires in 24 hours.
fn default_invalid_at(credentials: &mut BTreeMap<String, String>, now: Timestamp) {
    if credentials
        .get("previous_secret")
        .is_some_and(|s| !s.is_empty())
        && credentials
            .get("previous_secret_invalid_at")
            .is_none_or(|s| s.is_empty())
    {
        credentials.insert(
            "previous_secret_invalid_at".into(),
            wire::ts(now + PREVIOUS_SECRET_GRACE),
        );
    }
}

fn validate_with_registry(
    state: &AppState,
    kind: &str,
    config: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    state
        .engine
        .registry()
        .validate(kind, config, credentials)
        .map_err(|errs| ApiError::validation(errs.iter().map(ToString::to_string).collect()))
}

/// `"*"` or a non-empty array of non-empty strings; with a catalog, each topic must be in it
/// and each wildcard pattern must match at least one catalog topic.
fn parse_topics(
    state: &AppState,
    owner: Owner,
    v: &Value,
    problems: &mut Problems,
) -> Option<Topics> {
    let list = match v {
        Value::String(s) if s == "*" => return Some(Topics::All),
        Value::Array(a) if a.is_empty() => {
            problems.push("topics", "must not be empty; use \"*\" for every topic");
            return None;
        }
        Value::Array(a) => a,
        other => {
            problems.push(
                "topics",
                format!(
                    "expected \"*\" or an array of topics, got {}",
                    crate::body::kind(other)
                ),
            );
            return None;
        }
    };
    let before = problems.len();
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = format!("topics[{i}]");
        let Some(t) = item.as_str() else {
            problems.push(
                &field,
                format!("expected a string, got {}", crate::body::kind(item)),
            );
            continue;
        };
        if t.trim().is_empty() {
            problems.push(&field, "must not be empty");
            continue;
        }
        let checked = owner == Owner::Operator || state.has_catalog();
        if t != "*" && checked {
            let names: Vec<&str> = match owner {
                Owner::Operator => herald_core::operator::topic::ALL.to_vec(),
                Owner::Tenant => state
                    .config
                    .topics
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect(),
            };
            let known = if t.contains('*') {
                names.iter().any(|c| topic::pattern_matches(t, c))
            } else {
                names.contains(&t)
            };
            if !known {
                let catalog = match owner {
                    Owner::Operator => "the operator topics",
                    Owner::Tenant => "the topic catalog",
                };
                let what = if t.contains('*') {
                    format!("matches no topic in {catalog}")
                } else {
                    format!("is not in {catalog}")
                };
                problems.push(&field, format!("{t:?} {what}"));
                continue;
            }
        }
        out.push(t.to_string());
    }
    if problems.len() != before {
        return None;
    }
    if out.iter().any(|t| t == "*") {
        Some(Topics::All)
    } else {
        Some(Topics::List(out))
    }
}

/// `null` or `{}` means no filter; an object is validated; anything else is a 422.
fn parse_filter(v: Option<&Value>, problems: &mut Problems) -> Option<Value> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(f @ Value::Object(_)) => match filter::validate(f) {
            Ok(()) => Some(f.clone()),
            Err(e) => {
                problems.push_line(e.to_string());
                None
            }
        },
        Some(other) => {
            problems.push(
                "filter",
                format!("expected an object, got {}", crate::body::kind(other)),
            );
            None
        }
    }
}

/// `delivery_metadata` travels in headers: no control characters in its keys or values.
fn check_header_values<'a>(
    entries: impl Iterator<Item = (&'a String, Option<&'a String>)>,
    problems: &mut Problems,
) {
    for (k, v) in entries {
        if k.chars().any(char::is_control) || v.is_some_and(|v| v.chars().any(char::is_control)) {
            problems.push(
                format!("delivery_metadata.{}", k.escape_debug()),
                "contains a control character (CR, LF, NUL, …), which cannot travel in a header",
            );
        }
    }
}

fn check_id(id: &str, problems: &mut Problems) {
    if id.len() > MAX_ID_LEN
        || id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/' || c == '?' || c == '#')
    {
        problems.push(
            "id",
            format!("must be at most {MAX_ID_LEN} characters without whitespace, '/', '?' or '#'"),
        );
    }
}

/// A create-time map: `null` values and a `null` map count as absent.
fn present(p: Patch<BTreeMap<String, Option<String>>>) -> BTreeMap<String, String> {
    match p {
        Patch::Set(m) => m
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        Patch::Absent | Patch::Null => BTreeMap::new(),
    }
}

fn patch_to_option<T>(p: Patch<T>) -> Option<T> {
    match p {
        Patch::Set(v) => Some(v),
        Patch::Absent | Patch::Null => None,
    }
}

fn set_or(p: Patch<Timestamp>, default: Timestamp) -> Timestamp {
    match p {
        Patch::Set(t) => t,
        Patch::Absent | Patch::Null => default,
    }
}

/// The 422 for recorded problems; a required field that was missing always recorded one.
fn problems_or_fail(problems: Problems) -> ApiError {
    match problems.finish() {
        Err(e) => e,
        Ok(()) => ApiError::internal(
            "a required destination field was missing without a recorded problem",
        ),
    }
}

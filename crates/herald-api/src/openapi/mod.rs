//! Herald's OpenAPI 3.1 document, served at `/api/v1/openapi.json`, and the page that renders
//! it at `/api/v1/docs`.
//!
//! The document is built from the same declarations as the router: every handler carries a
//! `#[utoipa::path]` and is registered with `utoipa_axum::routes!`, which adds the route to the
//! axum router and the operation to the document in one step (`crate::build`). What is not
//! known at compile time is added here when the router is built ([`finish`]):
//! - the destination shapes (`Destination`, `DestinationCreate`, `DestinationUpdate` and their
//!   `Operator…` twins), one `oneOf` variant per destination type of this build, with that
//!   type's `config` and `credentials` fields from the registry;
//! - the error answers every route can give (bad input, missing or refused credentials, an
//!   unknown resource, a body over the limit) in the error shape, where a handler's own
//!   declaration does not already name them;
//! - `x-herald-extension: true` on every tag made only of extensions (operations carry it from
//!   their own `#[utoipa::path(extensions(...))]`).
//!
//! The tenant portal (`/portal`) is not in the document: it is an HTML application for people,
//! with its own cookie session and CSRF checks, and a client of the routes described here.
//! `/metrics` is (it is declared here, [`metrics_doc`], because the binary mounts it).
//!
//! This module is not the wire: it describes it. The shapes are in [`schemas`].

pub mod schemas;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::destination::{DestinationType, FieldSpec};
use serde_json::json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder, Tag};
use utoipa::{Modify, OpenApi, PartialSchema};

use crate::SharedState;

/// The extension marker on operations and tags that are not in the Outpost contract.
pub const EXTENSION: &str = "x-herald-extension";

/// Tags whose every operation is an extension.
const EXTENSION_TAGS: [&str; 5] = [
    "API keys",
    "Operator events",
    "Webhook templates",
    "Documentation",
    "Prometheus",
];

/// The static part of the document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald API",
        description = "Herald's HTTP API: the Outpost API v1 (same paths, fields, status codes, \
            pagination and error shape) plus Herald's extensions, each marked \
            `x-herald-extension: true`. Paths are absolute (`/api/v1/...`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/", description = "This server")),
    security(("AdminApiKey" = []), ("TenantJwt" = []), ("ApiKeyId" = [], "ApiKeySecret" = [])),
    modifiers(&SecuritySchemes),
    paths(metrics_doc),
    // Referenced by the destination envelopes, which no declaration names.
    components(schemas(
        schemas::Topics,
        schemas::AllTopics,
        schemas::AttemptEvent,
        schemas::EventFull,
        schemas::EventSummary
    )),
    tags(
        (name = "Health", description = "Liveness."),
        (name = "Tenants", description = "Tenants, their tokens and portal links."),
        (name = "Destinations", description = "A tenant's destinations."),
        (name = "Publish", description = "Publishing events and retrying deliveries."),
        (name = "Events", description = "Published events."),
        (name = "Attempts", description = "Delivery attempts."),
        (name = "Schemas", description = "Destination type field schemas and topics."),
        (name = "Metrics", description = "Aggregated event and attempt counts."),
        (name = "API keys", description = "Scoped API keys and the admin key's rotation."),
        (name = "Operator events", description = "Herald's own alerts and lifecycle events: \
            operator destinations, events, attempts and retry."),
        (name = "Webhook templates", description = "CSV import and export of webhook \
            destinations through pre-signed URLs."),
        (name = "Prometheus", description = "Operator metrics in the Prometheus text format."),
        (name = "Documentation", description = "This document and its rendering."),
    )
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "AdminApiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin API key (`api_key` / `HERALD_API_KEY`), or a scoped API key \
                         (`hk_…`, extension).",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "TenantJwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A tenant token from `GET /api/v1/tenants/{tenant_id}/token` (HS256, 24 h).",
                    ))
                    .build(),
            ),
        );
        // A scoped key may also travel as two headers, both needed (one requirement).
        c.add_security_scheme(
            "ApiKeyId",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key-ID",
                "A scoped API key's id, with its secret in `X-Api-Key-Secret` (extension).",
            ))),
        );
        c.add_security_scheme(
            "ApiKeySecret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key-Secret",
                "A scoped API key's secret (`hk_…`), with its id in `X-Api-Key-ID` (extension).",
            ))),
        );
    }
}

/// `GET /metrics`, mounted by the binary beside the API (or on `metrics.listen`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "Prometheus",
    summary = "Prometheus metrics",
    description = "Counters, histograms and queue depths in the Prometheus text format. Needs \
        the admin key or a key with the `metrics` scope unless `metrics.public` is set; with \
        `metrics.listen` set it is served on that address instead, without credentials.",
    responses(
        (status = 200, description = "The metrics.", content_type = "text/plain", body = String),
    ),
    extensions(("x-herald-extension" = json!(true))),
)]
#[allow(dead_code)]
fn metrics_doc() {}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "Documentation",
    summary = "This OpenAPI document",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub(crate) async fn openapi_json(State(state): State<SharedState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json().to_string(),
    )
        .into_response()
}

/// `GET /api/v1/docs`: a page that renders the document, with its script inline (no asset is
/// fetched from anywhere but this server).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "Documentation",
    summary = "API reference page",
    security(()),
    responses((status = 200, description = "An HTML page rendering this document.", content_type = "text/html", body = String)),
    extensions(("x-herald-extension" = json!(true))),
)]
pub(crate) async fn docs() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; base-uri 'none'; form-action 'none'",
            ),
        ],
        include_str!("docs.html"),
    )
        .into_response()
}

/// Completes the document built by the router (module docs) and renders it as JSON.
pub(crate) fn finish(mut doc: Document, types: &[&dyn DestinationType]) -> Arc<str> {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    let tenant: Vec<&dyn DestinationType> = types
        .iter()
        .copied()
        .filter(|t| t.tenant_usable())
        .collect();
    // An event with its payload is also a valid summary: the choice is `anyOf`, not the
    // `oneOf` utoipa writes for an untagged enum.
    if let Some(RefOr::T(Schema::OneOf(one))) = components.schemas.get("AttemptEvent") {
        let mut any = AnyOfBuilder::new().description(one.description.clone());
        for item in &one.items {
            any = any.item(item.clone());
        }
        components
            .schemas
            .insert("AttemptEvent".into(), RefOr::T(Schema::AnyOf(any.build())));
    }
    for (prefix, set) in [("", &tenant), ("Operator", &types.to_vec())] {
        for (name, schema) in destination_schemas(prefix, set) {
            components.schemas.insert(name, schema);
        }
    }
    for item in doc.paths.paths.values_mut() {
        let has_path_params = item
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path);
        for op in [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            add_errors(op, has_path_params);
        }
    }
    for tag in doc.tags.iter_mut().flatten() {
        if EXTENSION_TAGS.contains(&tag.name.as_str()) {
            mark(tag);
        }
    }
    // utoipa writes 3.1.0 already; say so explicitly for readers of this code.
    doc.openapi = utoipa::openapi::OpenApiVersion::Version31;
    let mut doc = match serde_json::to_value(&doc) {
        Ok(v) => v,
        Err(_) => return Arc::from("{}"),
    };
    add_links(&mut doc);
    match serde_json::to_string(&doc) {
        Ok(s) => s.into(),
        // Serialising a document of plain maps and strings cannot fail; answer an empty
        // document rather than panic if it ever does.
        Err(_) => Arc::from("{}"),
    }
}

/// Operations whose answer names a resource other operations take in their path, for
/// clients and fuzzers that follow OpenAPI links (schemathesis' stateful phase): the producing
/// operation, its success codes, the path parameter its answer's `id` fills (none when the
/// id was in its own path), and the path prefix of the operations that take it.
const LINKS: [(&str, &[&str], Option<&str>, &str); 5] = [
    (
        "upsertTenant",
        &["200", "201"],
        None,
        "/api/v1/tenants/{tenant_id}",
    ),
    (
        "createTenantDestination",
        &["201"],
        Some("destination_id"),
        "/api/v1/tenants/{tenant_id}/destinations/{destination_id}",
    ),
    (
        "publishEvent",
        &["202"],
        Some("event_id"),
        "/api/v1/events/{event_id}",
    ),
    (
        "createApiKey",
        &["201"],
        Some("key_id"),
        "/api/v1/api-keys/{key_id}",
    ),
    (
        "createOperatorDestination",
        &["200"],
        Some("destination_id"),
        "/api/v1/operator-events/destinations/{destination_id}",
    ),
];

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// Adds [`LINKS`] to the rendered document. (On the JSON: utoipa 5 writes a link's
/// `operationId` as `operation_id`, which validators rightly refuse.)
fn add_links(doc: &mut serde_json::Value) {
    let methods = ["get", "put", "post", "patch", "delete"];
    // (path, method, operationId) of every operation.
    let mut ops: Vec<(String, &str, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for m in methods {
            if let Some(id) = item[m]["operationId"].as_str() {
                ops.push((path.clone(), m, id.to_string()));
            }
        }
    }
    for (producer, codes, produced, prefix) in LINKS {
        let Some((producer_path, producer_method, _)) =
            ops.iter().find(|(_, _, id)| id == producer)
        else {
            continue;
        };
        let own = path_params(producer_path);
        let mut links = serde_json::Map::new();
        for (path, _, id) in &ops {
            if id == producer || !path.starts_with(prefix) {
                continue;
            }
            let params = path_params(path);
            if !params
                .iter()
                .all(|p| own.contains(p) || Some(*p) == produced)
            {
                continue;
            }
            let parameters: serde_json::Map<String, serde_json::Value> = params
                .into_iter()
                .map(|p| {
                    let source = if Some(p) == produced {
                        "$response.body#/id".to_string()
                    } else {
                        format!("$request.path.{p}")
                    };
                    (p.to_string(), json!(source))
                })
                .collect();
            links.insert(
                id.clone(),
                json!({ "operationId": id, "parameters": parameters }),
            );
        }
        let responses = &mut doc["paths"][producer_path.as_str()][*producer_method]["responses"];
        for code in codes {
            if let Some(r) = responses.get_mut(*code).and_then(|r| r.as_object_mut()) {
                r.insert("links".into(), json!(links));
            }
        }
    }
}

fn mark(tag: &mut Tag) {
    tag.extensions
        .get_or_insert_with(Default::default)
        .insert(EXTENSION.to_string(), json!(true));
}

/// The error answers any route can give, added where the handler did not declare them.
fn add_errors(op: &mut Operation, has_path_params: bool) {
    let has_params = op.parameters.as_ref().is_some_and(|p| {
        p.iter()
            .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
    });
    let public = op.security.as_ref().is_some_and(|s| {
        s.iter()
            .all(|r| serde_json::to_value(r).is_ok_and(|v| v == json!({})))
    });
    let body = op.request_body.is_some();
    let query = op.parameters.as_ref().is_some_and(|p| {
        p.iter()
            .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
    });
    let mut codes: Vec<(&str, &str)> = vec![(
        "400",
        "Malformed input that is not about one field: bad JSON, a bad cursor or query parameter.",
    )];
    if !public {
        codes.push(("401", "No or invalid credentials."));
        codes.push((
            "403",
            "Valid credentials that may not do this (another tenant, a missing scope).",
        ));
    }
    if has_params || has_path_params {
        codes.push(("404", "A resource named in the path does not exist."));
    }
    if body {
        codes.push(("413", "The body is larger than `max_body_bytes`."));
    }
    if body || query {
        codes.push((
            "422",
            "A field or query parameter is invalid; `data` names each one.",
        ));
    }
    codes.push((
        "500",
        "An unexpected server error (no internals are included).",
    ));
    for (code, description) in codes {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| error_response(description));
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("APIErrorResponse")))
                    .build(),
            )
            .build(),
    )
}

/// Which of the three destination shapes.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// What is read back.
    Read,
    /// A create body.
    Create,
    /// A merge-patch body.
    Update,
}

/// `Destination`, `DestinationCreate` and `DestinationUpdate` (with `prefix`), each a choice
/// over `types`, and one component per type and shape (`DestinationWebhook`, …).
fn destination_schemas(
    prefix: &str,
    types: &[&dyn DestinationType],
) -> Vec<(String, RefOr<Schema>)> {
    let mut out = Vec::new();
    for (shape, suffix) in [
        (Shape::Read, ""),
        (Shape::Create, "Create"),
        (Shape::Update, "Update"),
    ] {
        let mut names = Vec::new();
        for t in types {
            let name = format!("{prefix}Destination{suffix}_{}", t.spec().kind);
            out.push((name.clone(), RefOr::T(Schema::Object(variant(shape, *t)))));
            names.push(name);
        }
        let description = match shape {
            Shape::Read => "A destination, by type. Sensitive credentials are masked.",
            Shape::Create => "A destination to create, by type.",
            Shape::Update => {
                "A merge-patch of a destination: `topics` is replaced whole, `config` and \
                 `credentials` are merged (`null` deletes a key). The type never changes."
            }
        };
        let schema = if shape == Shape::Update {
            // `type` is optional in a patch, so variants may overlap: any of them.
            let mut b = AnyOfBuilder::new().description(Some(description));
            for n in &names {
                b = b.item(Ref::from_schema_name(n));
            }
            Schema::AnyOf(b.build())
        } else {
            let mut b = OneOfBuilder::new().description(Some(description));
            for n in &names {
                b = b.item(Ref::from_schema_name(n));
            }
            Schema::OneOf(b.build())
        };
        out.push((format!("{prefix}Destination{suffix}"), RefOr::T(schema)));
    }
    out
}

/// One type's variant of a shape: the envelope with `type` fixed and the type's fields.
fn variant(shape: Shape, t: &dyn DestinationType) -> Object {
    let envelope = match shape {
        Shape::Read => schemas::DestinationEnvelope::schema(),
        Shape::Create => schemas::DestinationCreateEnvelope::schema(),
        Shape::Update => schemas::DestinationUpdateEnvelope::schema(),
    };
    let mut obj = match envelope {
        RefOr::T(Schema::Object(o)) => o,
        _ => Object::new(),
    };
    let spec = t.spec();
    obj.description = Some(format!("{}: {}", spec.label, spec.description));
    obj.properties.insert(
        "type".into(),
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([spec.kind.clone()]))
            .into(),
    );
    let mut config = fields(shape, &spec.config_fields, false);
    config.description = Some(format!("`{}` settings.", spec.kind));
    obj.properties.insert("config".into(), config.into());
    let mut credentials = fields(shape, &spec.credential_fields, true);
    credentials.description = Some(format!("`{}` credentials.", spec.kind));
    obj.properties
        .insert("credentials".into(), credentials.into());
    obj
}

/// A `config` or `credentials` object: one string property per field (the wire form of every
/// value), required where the type requires it — except in a patch, where nothing is.
fn fields(shape: Shape, specs: &[FieldSpec], credentials: bool) -> Object {
    let mut b = ObjectBuilder::new().schema_type(Type::Object);
    let mut names: Vec<&str> = Vec::new();
    for f in specs {
        let mut p = ObjectBuilder::new()
            .schema_type(if shape == Shape::Update {
                utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])
            } else {
                utoipa::openapi::schema::SchemaType::new(Type::String)
            })
            .description(Some(format!("{}. {}", f.label, f.description)));
        if f.sensitive && shape == Shape::Read {
            p = p.description(Some(format!(
                "{}. {} Masked on read.",
                f.label, f.description
            )));
        }
        b = b.property(&f.key, p);
        names.push(&f.key);
        if f.required && shape != Shape::Update {
            // A required credential the server generates (a signing secret) is optional in
            // a create body.
            if !(credentials && shape == Shape::Create) {
                b = b.required(&f.key);
            }
        }
    }
    if credentials {
        // Rotation and derived public keys, present on signing types.
        for extra in crate::wire::ROTATION_FIELDS
            .into_iter()
            .chain(crate::wire::PUBLIC_KEY_FIELDS)
        {
            if !names.contains(&extra) {
                b = b.property(
                    extra,
                    ObjectBuilder::new().schema_type(if shape == Shape::Update {
                        utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])
                    } else {
                        utoipa::openapi::schema::SchemaType::new(Type::String)
                    }),
                );
            }
        }
        if shape == Shape::Update {
            b = b.property(
                "rotate_secret",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some("`true` rotates the signing secret.")),
            );
        }
    }
    // Values the registry does not list are refused by validation, not by the document:
    // leave the object open so the error comes from the server, naming the field.
    b = b.additional_properties(Some(AdditionalProperties::FreeForm(true)));
    b.build()
}

//! Typed destination specs: a destination type states its settings once, as serde structs.
//!
//! A type's module writes a `Config` and a `Credentials` struct (doc comments, `#[serde]` and
//! `#[schemars]` attributes) and implements [`Spec`]; [`Typed`] turns that into the
//! object-safe [`DestinationType`] the registry holds. From those two structs come:
//!
//! - **the served schema** (`GET /destination-types`), generated from their JSON schemas: the
//!   first paragraph of a field's doc comment is its label and the rest its description; a
//!   field without a serde default that is not an `Option` is required; a [`Secret`] field is
//!   sensitive; `#[serde(default = …)]`, `#[schemars(regex(pattern = …), length(…))]` give
//!   the default, pattern and lengths; an enum is a `select` with its options, a `bool` a
//!   `checkbox`, a string map a `key_value_map`;
//! - **validation and the driver**, which parse the stored values into the same structs through
//!   one function ([`parse`]), so the two can never disagree.
//!
//! Stored and wire values stay strings, as the Outpost contract writes them (`"60"`,
//! `"true"`, a JSON-encoded object). Parsing turns each string into the JSON type its field's
//! schema declares before serde sees it; the API accepts native JSON too and writes it back as
//! the contract's string form ([`canonical_text`]).
//!
//! Settings the engine applies to every type — rate and in-flight limits, signing — are not in
//! a type's structs: they are [`DeliverySettings`] and [`SigningKeys`], common to all types.
//!
//! [`DestinationType`]: crate::destination::DestinationType

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::destination::{
    DestinationType, Driver, FieldError, FieldSpec, Section, SelectOption, TypeSpec,
};
use crate::signing::{self, SignatureEncoding, SignatureOverrides, SigningConfig, SigningMode};
use crate::{Destination, Secret};

/// The parts of a type's description that are not fields.
#[derive(Debug, Clone)]
pub struct About {
    /// Type name, e.g. `rabbitmq`.
    pub kind: &'static str,
    /// Display label.
    pub label: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// SVG icon.
    pub icon: &'static str,
    /// Setup instructions (Markdown).
    pub instructions: &'static str,
}

/// Where a type keeps the secret its messages are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningField {
    /// The credential holding the current secret: `secret` for webhooks (the Outpost
    /// contract's name), `signing_secret` everywhere else.
    pub key: &'static str,
    /// Whether a secret is generated when a destination is created without one.
    pub generate: bool,
}

impl SigningField {
    /// The credential name of every type but the webhook.
    pub const SIGNING_SECRET: &'static str = "signing_secret";
}

/// What a destination type's module implements. See the module docs.
pub trait Spec: Send + Sync + 'static {
    /// Non-secret settings (`config`).
    type Config: DeserializeOwned + JsonSchema;
    /// Secrets (`credentials`). Fields holding a [`Secret`] are sensitive.
    type Credentials: DeserializeOwned + JsonSchema;

    /// Name, label, description, icon and instructions.
    fn about(&self) -> About;

    /// Where the signing secret lives; `None` for a type whose messages are never signed.
    fn signing(&self) -> Option<SigningField> {
        Some(SigningField {
            key: SigningField::SIGNING_SECRET,
            generate: true,
        })
    }

    /// Whether tenants may create destinations of this type (an operator setting for some
    /// types); operator destinations may use every type.
    fn tenant_usable(&self) -> bool {
        true
    }

    /// Adjusts the generated schema where it depends on runtime settings (a URL pattern
    /// that depends on the target policy, say).
    fn tune(&self, _spec: &mut TypeSpec) {}

    /// Checks beyond what parsing proves (target policy, value ranges, cross-field rules).
    fn check(&self, _config: &Self::Config, _credentials: &Self::Credentials) -> Vec<FieldError> {
        Vec::new()
    }

    /// Builds the runtime sender of destination `id`.
    fn build(
        &self,
        id: &str,
        config: Self::Config,
        credentials: Self::Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError>;

    /// Human-readable target and a link to it, for API responses. Must not contain secrets.
    fn target(&self, config: &Self::Config) -> (String, Option<String>);

    /// The display form of a non-sensitive `config` value that embeds a secret (a password
    /// in URL userinfo, an `Authorization` custom header); `None` when it shows as stored.
    fn redact(&self, _key: &str, _value: &str) -> Option<String> {
        None
    }

    /// The value to store when a client sends `sent` back for a config field that
    /// [`Spec::redact`] masks: the stored value wherever `sent` holds a masked part.
    fn unredact(&self, key: &str, sent: &str, stored: &str) -> String {
        if self.redact(key, stored).as_deref() == Some(sent) {
            stored.to_string()
        } else {
            sent.to_string()
        }
    }
}

/// How a stored string becomes the JSON value a field's schema declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Text,
    Integer,
    Number,
    Boolean,
    Json,
}

/// One field as parsing needs it.
#[derive(Debug, Clone)]
struct Prop {
    key: String,
    kind: ValueKind,
    required: bool,
    minimum: Option<f64>,
}

/// A struct's fields: the served [`FieldSpec`]s and what parsing needs.
#[derive(Debug, Clone)]
pub struct Fields {
    specs: Vec<FieldSpec>,
    props: Vec<Prop>,
}

impl Fields {
    /// The fields of `T`, read off its JSON schema.
    pub fn of<T: JsonSchema>() -> Self {
        let generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
            s.inline_subschemas = true;
        }));
        let root = generator.into_root_schema_for::<T>();
        let root = root.as_value();
        let required: Vec<&str> = root
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut specs = Vec::new();
        let mut props = Vec::new();
        if let Some(Value::Object(properties)) = root.get("properties") {
            for (key, schema) in properties {
                let (spec, prop) = field_of(key, schema, required.contains(&key.as_str()));
                specs.push(spec);
                props.push(prop);
            }
        }
        Self { specs, props }
    }

    /// The served field schemas, in declaration order.
    pub fn specs(&self) -> &[FieldSpec] {
        &self.specs
    }

    /// Whether `key` is one of these fields.
    pub fn has(&self, key: &str) -> bool {
        self.props.iter().any(|p| p.key == key)
    }

    /// Whether `value` is the native JSON form of field `key` (see
    /// [`DestinationType::accepts_native`]); `None` when `key` is not one of these fields.
    fn native(&self, key: &str, value: &Value) -> Option<bool> {
        let p = self.props.iter().find(|p| p.key == key)?;
        Some(match p.kind {
            ValueKind::Text => false,
            ValueKind::Integer | ValueKind::Number => value.is_number(),
            ValueKind::Boolean => value.is_boolean(),
            ValueKind::Json => value.is_object() || value.is_array(),
        })
    }

    /// Renames a field (the webhook's signing secret is `secret`, not `signing_secret`).
    fn rename(&mut self, from: &str, to: &str) {
        for s in &mut self.specs {
            if s.key == from {
                s.key = to.to_string();
            }
        }
        for p in &mut self.props {
            if p.key == from {
                p.key = to.to_string();
            }
        }
    }
}

/// The first type of a schema's `type` that is not `null`.
fn json_type(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(s) => Some(s.as_str()),
        Value::Array(a) => a.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// The choices of an enum — `enum: [...]`, or `oneOf: [{const}, ...]` when its variants have
/// doc comments, either possibly inside the `anyOf` of an `Option` — labelled by their value.
fn select_options(schema: &Value) -> Vec<SelectOption> {
    let mut out = Vec::new();
    collect_options(schema, &mut out);
    out
}

fn collect_options(schema: &Value, out: &mut Vec<SelectOption>) {
    let option = |value: &str, label: &str| SelectOption {
        label: label.to_string(),
        value: value.to_string(),
    };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        out.extend(
            values
                .iter()
                .filter_map(Value::as_str)
                .map(|v| option(v, v)),
        );
    }
    if let Some(value) = schema.get("const").and_then(Value::as_str) {
        out.push(option(value, value));
    }
    for key in ["oneOf", "anyOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_options(sub, out);
        }
    }
}

/// The schema keyword that marks a field naming where a destination connects (a host, URL or
/// endpoint): `#[schemars(extend("x-herald-target" = true))]`, or in a field type's own schema.
pub const TARGET_KEYWORD: &str = "x-herald-target";

/// Whether a field's schema, or a schema inside it (an `Option`'s `anyOf`), is marked
/// [`TARGET_KEYWORD`].
fn is_target(schema: &Value) -> bool {
    match schema {
        Value::Object(o) => {
            o.get(TARGET_KEYWORD) == Some(&Value::Bool(true))
                || ["anyOf", "oneOf", "allOf"].iter().any(|k| {
                    o.get(*k)
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(is_target))
                })
        }
        _ => false,
    }
}

fn field_of(key: &str, schema: &Value, required: bool) -> (FieldSpec, Prop) {
    let doc = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Convention: the doc comment's first paragraph is the label, the rest the description.
    let (label, description) = match doc.split_once("\n\n") {
        Some((l, d)) => (l.trim().to_string(), d.trim().replace('\n', " ")),
        None if doc.is_empty() => (key.to_string(), String::new()),
        None => (key.to_string(), doc.trim().replace('\n', " ")),
    };
    let options = select_options(schema);
    let (kind, value_kind) = match json_type(schema) {
        _ if !options.is_empty() => ("select", ValueKind::Text),
        Some("boolean") => ("checkbox", ValueKind::Boolean),
        Some("integer") => ("text", ValueKind::Integer),
        Some("number") => ("text", ValueKind::Number),
        Some("object") => {
            let string_map = schema
                .get("additionalProperties")
                .and_then(json_type)
                .is_some_and(|t| t == "string");
            (
                if string_map { "key_value_map" } else { "text" },
                ValueKind::Json,
            )
        }
        Some("array") => ("text", ValueKind::Json),
        _ => ("text", ValueKind::Text),
    };
    let minimum = schema.get("minimum").and_then(Value::as_f64);
    let pattern = schema
        .get("pattern")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            (value_kind == ValueKind::Integer && minimum.is_some_and(|m| m >= 0.0))
                .then(|| "^[0-9]*$".to_string())
        });
    let default = match schema.get("default") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(v @ (Value::Bool(_) | Value::Number(_))) => Some(v.to_string()),
        _ => None,
    };
    let length = |k: &str| schema.get(k).and_then(Value::as_u64);
    let spec = FieldSpec {
        key: key.to_string(),
        kind: kind.to_string(),
        label,
        description,
        required,
        sensitive: schema.get("writeOnly") == Some(&Value::Bool(true)),
        default,
        pattern,
        min_length: length("minLength"),
        max_length: length("maxLength"),
        options,
        target: is_target(schema),
    };
    let prop = Prop {
        key: key.to_string(),
        kind: value_kind,
        required,
        minimum,
    };
    (spec, prop)
}

/// Parses one section (`config` or `credentials`) of stored string values into `T`.
///
/// Keys that are not fields of `T` are ignored here (the registry reports unknown keys, and
/// the common settings share the maps); empty values count as absent.
pub fn parse<T: DeserializeOwned>(
    section: &str,
    fields: &Fields,
    values: &BTreeMap<String, String>,
) -> Result<T, Vec<FieldError>> {
    let mut obj = Map::new();
    let mut errs = Vec::new();
    for p in &fields.props {
        let name = || format!("{section}.{}", p.key);
        let Some(raw) = values.get(&p.key).filter(|v| !v.trim().is_empty()) else {
            if p.required {
                errs.push(FieldError::new(name(), "is required"));
            }
            continue;
        };
        match coerce(p, raw) {
            Ok(v) => {
                obj.insert(p.key.clone(), v);
            }
            Err(problem) => errs.push(FieldError::new(name(), problem)),
        }
    }
    let result = collect(section, obj, errs);
    // Report in declaration order, as the schema lists the fields.
    result.map_err(|mut errs| {
        errs.sort_by_key(|e| {
            fields.props.iter().position(|p| {
                let name = format!("{section}.{}", p.key);
                e.field == name || e.field.starts_with(&format!("{name}."))
            })
        });
        errs
    })
}

/// Deserializes `obj`, collecting one error per bad field after those already in `errs`.
fn collect<T: DeserializeOwned>(
    section: &str,
    mut obj: Map<String, Value>,
    mut errs: Vec<FieldError>,
) -> Result<T, Vec<FieldError>> {
    // Serde stops at the first error; take that field out and go on, so one response names
    // every bad field.
    loop {
        match serde_path_to_error::deserialize::<_, T>(Value::Object(obj.clone())) {
            Ok(v) if errs.is_empty() => return Ok(v),
            Ok(_) => return Err(errs),
            Err(e) => {
                let key = e.path().iter().next().and_then(|seg| match seg {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    _ => None,
                });
                match key.filter(|k| obj.contains_key(k)) {
                    Some(k) => {
                        errs.push(FieldError::new(
                            format!("{section}.{}", e.path()),
                            e.into_inner().to_string(),
                        ));
                        obj.remove(&k);
                    }
                    // An error about the whole section (a field taken out above is now
                    // "missing"): report it only when it is the only one.
                    None => {
                        if errs.is_empty() {
                            errs.push(FieldError::new(section, e.into_inner().to_string()));
                        }
                        return Err(errs);
                    }
                }
            }
        }
    }
}

fn coerce(p: &Prop, raw: &str) -> Result<Value, String> {
    let t = raw.trim();
    let v = match p.kind {
        ValueKind::Text => Value::String(raw.to_string()),
        ValueKind::Boolean => match t {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("{raw:?} is not a boolean; use true or false")),
        },
        ValueKind::Integer => {
            let n: i64 = t
                .parse()
                .map_err(|_| format!("{raw:?} is not a whole number"))?;
            Value::from(n)
        }
        ValueKind::Number => {
            let n: f64 = t.parse().map_err(|_| format!("{raw:?} is not a number"))?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| format!("{raw:?} is not a finite number"))?
        }
        ValueKind::Json => {
            serde_json::from_str(t).map_err(|e| format!("is not valid JSON: {e}"))?
        }
    };
    if let (Some(min), Some(n)) = (p.minimum, v.as_f64())
        && n < min
    {
        return Err(format!("{raw:?} must be at least {min}"));
    }
    Ok(v)
}

/// The contract's string form of a JSON value a client sent for a `config` or `credentials`
/// field: strings as they are, numbers and booleans as their text, objects and arrays as
/// compact JSON. `None` for `null` (a merge-patch deletion).
pub fn canonical_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Array(_) | Value::Object(_) => Some(v.to_string()),
    }
}

/// Settings every destination type accepts in `config`; the engine applies them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
pub struct DeliverySettings {
    /// Rate limit (per minute)
    ///
    /// Herald extension: at most this many deliveries per minute, evenly spaced. Empty:
    /// unlimited.
    #[schemars(range(min = 1))]
    pub rate_limit_per_minute: Option<u32>,
    /// Maximum in flight
    ///
    /// Herald extension: at most this many attempts at once to this destination. Empty: the
    /// server default.
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<u32>,
}

/// The signature-scheme override every signing type accepts in `config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
pub struct SigningSettings {
    /// Signature scheme
    ///
    /// Herald extension: `standard` (Standard Webhooks headers), `standard_ed25519` (the same
    /// headers, signed with a generated ed25519 key: v1a) or `outpost` (x-outpost-* headers);
    /// empty uses the server default.
    pub signing_mode: Option<SigningMode>,
    /// Signature content template
    ///
    /// Herald extension: what this destination's signature covers, e.g.
    /// {body}{timestamp}{idempotency_key}; placeholders {body}, {timestamp}, {event_id},
    /// {topic}, {idempotency_key}. Setting a template signs in outpost mode (x-outpost-*
    /// headers); empty uses the server's templates.
    pub signature_content_template: Option<String>,
    /// Signature header template
    ///
    /// Herald extension: the signature header's value, e.g. t={timestamp},v0={signatures};
    /// placeholders {signatures}, {timestamp}, {event_id}, {topic}, {idempotency_key}.
    pub signature_header_template: Option<String>,
    /// Signature encoding
    ///
    /// Herald extension: hex or base64, for the templated signature; empty uses the
    /// server's.
    pub signature_encoding: Option<SignatureEncoding>,
}

impl SigningSettings {
    /// The template overrides, empty strings counting as absent.
    pub fn overrides(&self) -> SignatureOverrides {
        let text = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
        SignatureOverrides {
            content_template: text(&self.signature_content_template),
            header_template: text(&self.signature_header_template),
            encoding: self.signature_encoding,
        }
    }

    /// Problems with the overrides: a template that does not parse (with the outpost-mode
    /// rules), or templates with an explicitly standard mode.
    fn check(&self) -> Vec<FieldError> {
        let o = self.overrides();
        if o.is_empty() {
            return Vec::new();
        }
        if matches!(
            self.signing_mode,
            Some(SigningMode::Standard | SigningMode::StandardEd25519)
        ) {
            return vec![FieldError::new(
                "config.signing_mode",
                "must be outpost or empty when signature templates are set (templates sign in outpost mode)",
            )];
        }
        match SigningConfig::outpost_default()
            .with_overrides(&o)
            .validate()
        {
            Ok(()) => Vec::new(),
            Err(e) => {
                let field = match e.field {
                    "content_template" => "config.signature_content_template",
                    "header_template" => "config.signature_header_template",
                    _ => "config.signature_encoding",
                };
                vec![FieldError::new(field, e.problem)]
            }
        }
    }
}

/// The signing credentials every signing type accepts (the current secret's name depends on
/// the type, see [`SigningField`]).
#[derive(Deserialize, JsonSchema)]
struct SigningCredentials {
    /// Signing secret
    ///
    /// Secret the signature headers are computed with: a whsec_ Standard Webhooks key (base64
    /// of 24 to 64 bytes) or, in outpost mode, 1 to 1024 printable ASCII characters.
    /// Generated when omitted unless the operator turned generation off for this type;
    /// rotate it with rotate_secret.
    signing_secret: Option<Secret>,
    /// Previous secret
    ///
    /// The secret before the last rotation; it keeps signing until
    /// previous_secret_invalid_at (read-only).
    previous_secret: Option<Secret>,
    /// Previous secret valid until
    ///
    /// RFC 3339 time until which the previous secret also signs (read-only).
    #[schemars(extend("format" = "date-time"))]
    previous_secret_invalid_at: Option<String>,
    /// Public key
    ///
    /// With an ed25519 (whsk_) signing key: its whpk_ public key, which receivers verify
    /// v1a signatures with (read-only).
    #[allow(dead_code)]
    public_key: Option<String>,
    /// Previous public key
    ///
    /// The whpk_ public key of previous_secret, while it still signs (read-only).
    #[allow(dead_code)]
    previous_public_key: Option<String>,
}

/// A destination's signing secrets, parsed.
#[derive(Clone, Default)]
pub struct SigningKeys {
    /// The current secret.
    pub current: Option<Secret>,
    /// The rotated-out secret and the instant it stops signing.
    pub previous: Option<(Secret, Timestamp)>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &self.current.as_ref().map(Secret::redacted))
            .field("previous_until", &self.previous.as_ref().map(|p| p.1))
            .finish()
    }
}

impl SigningKeys {
    /// The secrets as the signing functions take them.
    pub fn secrets(&self) -> signing::Secrets<'_> {
        signing::Secrets {
            current: self.current.as_ref().map(Secret::expose),
            previous: self.previous.as_ref().map(|(s, t)| (s.expose(), *t)),
        }
    }
}

/// Everything about a destination the engine applies, parsed once when its route is built.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Rate and in-flight limits.
    pub settings: DeliverySettings,
    /// Signature scheme override (`None`: the server's).
    pub signing_mode: Option<SigningMode>,
    /// The destination's own signature templates (empty: the server's).
    pub signature: SignatureOverrides,
    /// Signing secrets (empty for a type that never signs).
    pub keys: SigningKeys,
}

/// The common sections every type's schema and validation include.
struct Common {
    delivery: Fields,
    signing_mode: Fields,
    /// The signing credentials under the type's own name for the current secret (served).
    signing: Fields,
    /// The same under `signing_secret` (parsed).
    signing_raw: Fields,
}

impl Common {
    fn new(signing_key: Option<&str>) -> Self {
        let signing_raw = Fields::of::<SigningCredentials>();
        let mut signing = signing_raw.clone();
        if let Some(key) = signing_key {
            signing.rename(SigningField::SIGNING_SECRET, key);
        }
        Self {
            delivery: Fields::of::<DeliverySettings>(),
            signing_mode: Fields::of::<SigningSettings>(),
            signing,
            signing_raw,
        }
    }
}

/// A [`Spec`] as a [`DestinationType`]: the schema generated once, parsing shared by
/// validation and building.
pub struct Typed<S: Spec> {
    spec: S,
    schema: TypeSpec,
    config: Fields,
    credentials: Fields,
    signing: Option<SigningField>,
    common: Common,
}

impl<S: Spec> Typed<S> {
    /// Wraps a type's spec; `generate_secret: false` turns signing-secret generation off
    /// for this type (the operator's choice).
    pub fn new(spec: S, generate_secret: bool) -> Self {
        let about = spec.about();
        let config = Fields::of::<S::Config>();
        let credentials = Fields::of::<S::Credentials>();
        let signing = spec.signing().map(|mut s| {
            s.generate &= generate_secret;
            s
        });
        let common = Common::new(signing.as_ref().map(|s| s.key));
        let mut schema = TypeSpec {
            kind: about.kind.to_string(),
            label: about.label.to_string(),
            description: about.description.to_string(),
            icon: about.icon.to_string(),
            instructions: about.instructions.to_string(),
            config_fields: config.specs().to_vec(),
            credential_fields: credentials.specs().to_vec(),
            signing_secret_key: signing.as_ref().map(|s| s.key.to_string()),
        };
        schema
            .config_fields
            .extend(common.delivery.specs().iter().cloned());
        if signing.is_some() {
            schema
                .config_fields
                .extend(common.signing_mode.specs().iter().cloned());
            schema
                .credential_fields
                .extend(common.signing.specs().iter().cloned());
        }
        spec.tune(&mut schema);
        Self {
            spec,
            schema,
            config,
            credentials,
            signing,
            common,
        }
    }

    fn typed(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<(S::Config, S::Credentials), Vec<FieldError>> {
        let c = parse::<S::Config>("config", &self.config, config);
        let k = parse::<S::Credentials>("credentials", &self.credentials, credentials);
        match (c, k) {
            (Ok(c), Ok(k)) => Ok((c, k)),
            (c, k) => Err(c
                .err()
                .into_iter()
                .flatten()
                .chain(k.err().into_iter().flatten())
                .collect()),
        }
    }

    /// The stored signing credentials of a destination, under this type's name for the
    /// current secret; a message-system type's old `secret` name is still read.
    fn signing_values(&self, credentials: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = credentials.clone();
        if let Some(s) = &self.signing
            && s.key == SigningField::SIGNING_SECRET
            && !self.credentials.has("secret")
            && !out.contains_key(s.key)
            && let Some(old) = credentials.get("secret")
        {
            out.insert(s.key.to_string(), old.clone());
        }
        out
    }

    fn signing_keys(
        &self,
        credentials: &BTreeMap<String, String>,
    ) -> Result<SigningKeys, Vec<FieldError>> {
        let Some(field) = &self.signing else {
            return Ok(SigningKeys::default());
        };
        let mut values = self.signing_values(credentials);
        if let Some(v) = values.remove(field.key) {
            values.insert(SigningField::SIGNING_SECRET.to_string(), v);
        }
        // Parsed under `signing_secret`; errors name the type's own key.
        let raw: SigningCredentials = parse("credentials", &self.common.signing_raw, &values)
            .map_err(|errs| {
                errs.into_iter()
                    .map(|e| rename_error(e, field.key))
                    .collect::<Vec<_>>()
            })?;
        let mut errs = Vec::new();
        for (key, s) in [
            (field.key, &raw.signing_secret),
            ("previous_secret", &raw.previous_secret),
        ] {
            if let Some(s) = s
                && !signing::is_valid_secret(s.expose())
            {
                errs.push(FieldError::new(
                    format!("credentials.{key}"),
                    "must be a whsec_ key (base64 of 24 to 64 bytes) or 1 to 1024 printable ASCII characters without spaces",
                ));
            }
        }
        let until = match &raw.previous_secret_invalid_at {
            None => None,
            Some(t) => match t.parse::<Timestamp>() {
                Ok(t) => Some(t),
                Err(_) => {
                    errs.push(FieldError::new(
                        "credentials.previous_secret_invalid_at",
                        format!("{t:?} is not an RFC 3339 date-time"),
                    ));
                    None
                }
            },
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(SigningKeys {
            current: raw.signing_secret.filter(|s| !s.is_empty()),
            // Without an expiry the previous secret keeps signing until one is set; the API
            // always sets one (24 hours by default) when it stores a previous secret.
            previous: raw
                .previous_secret
                .filter(|s| !s.is_empty())
                .map(|s| (s, until.unwrap_or(Timestamp::MAX))),
        })
    }
}

/// An ed25519 (`whsk_`) key signs only in the standard modes, and `standard_ed25519` needs
/// one as the current key.
fn key_fits_mode(key: &str, mode: Option<SigningMode>, keys: &SigningKeys) -> Vec<FieldError> {
    let is_ed25519 = |s: &Secret| s.expose().starts_with(signing::ED25519_SECRET_PREFIX);
    let mut errs = Vec::new();
    let field = format!("credentials.{key}");
    match mode {
        Some(SigningMode::StandardEd25519)
            if keys.current.as_ref().is_some_and(|s| !is_ed25519(s)) =>
        {
            errs.push(FieldError::new(
                field,
                "must be a whsk_ ed25519 key with signing_mode standard_ed25519; send rotate_secret: true to generate one",
            ));
        }
        Some(SigningMode::Outpost)
            if keys.current.as_ref().is_some_and(is_ed25519)
                || keys.previous.as_ref().is_some_and(|(s, _)| is_ed25519(s)) =>
        {
            errs.push(FieldError::new(
                field,
                "is a whsk_ ed25519 key, which signs only in the standard modes; outpost mode needs a shared secret",
            ));
        }
        _ => {}
    }
    errs
}

fn rename_error(mut e: FieldError, key: &str) -> FieldError {
    let from = format!("credentials.{}", SigningField::SIGNING_SECRET);
    if e.field == from {
        e.field = format!("credentials.{key}");
    }
    e
}

impl<S: Spec> DestinationType for Typed<S> {
    fn spec(&self) -> &TypeSpec {
        &self.schema
    }

    fn tenant_usable(&self) -> bool {
        self.spec.tenant_usable()
    }

    fn known_keys(&self, section: Section) -> Vec<&str> {
        self.schema
            .fields(section)
            .iter()
            .map(|f| f.key.as_str())
            .collect()
    }

    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = parse::<DeliverySettings>("config", &self.common.delivery, config) {
            errs.extend(e);
        }
        if let Some(field) = &self.signing {
            let mode = match parse::<SigningSettings>("config", &self.common.signing_mode, config) {
                Ok(s) => {
                    errs.extend(s.check());
                    s.signing_mode
                }
                Err(e) => {
                    errs.extend(e);
                    None
                }
            };
            match self.signing_keys(credentials) {
                Ok(keys) => errs.extend(key_fits_mode(field.key, mode, &keys)),
                Err(e) => errs.extend(e),
            }
        }
        match self.typed(config, credentials) {
            Ok((c, k)) => errs.extend(self.spec.check(&c, &k)),
            Err(e) => errs.extend(e),
        }
        errs
    }

    fn build(&self, d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        // The target policy is checked at every connection, not here: a destination the
        // policy refuses still builds, and its attempts fail as `blocked_target`.
        let (c, k) = self.typed(&d.config, &d.credentials).map_err(first_error)?;
        self.spec.build(&d.id, c, k)
    }

    fn delivery(&self, d: &Destination) -> Delivery {
        // Stored destinations were validated when written; a value that no longer parses
        // (a setting this version reads differently) falls back to the server default.
        let settings = parse("config", &self.common.delivery, &d.config).unwrap_or_default();
        let signing = self
            .signing
            .as_ref()
            .and_then(|_| {
                parse::<SigningSettings>("config", &self.common.signing_mode, &d.config).ok()
            })
            .unwrap_or_default();
        let keys = self.signing_keys(&d.credentials).unwrap_or_default();
        Delivery {
            settings,
            signing_mode: signing.signing_mode,
            signature: signing.overrides(),
            keys,
        }
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        match parse::<S::Config>("config", &self.config, &d.config) {
            Ok(c) => self.spec.target(&c),
            Err(_) => (String::new(), None),
        }
    }

    fn signing(&self) -> Option<&SigningField> {
        self.signing.as_ref()
    }

    fn accepts_native(&self, section: Section, key: &str, value: &Value) -> bool {
        let sections: Vec<&Fields> = match section {
            Section::Config => vec![
                &self.config,
                &self.common.delivery,
                &self.common.signing_mode,
            ],
            Section::Credentials => vec![&self.credentials, &self.common.signing],
        };
        // A key of no section is reported as unknown later, with the list of valid keys.
        sections
            .iter()
            .find_map(|f| f.native(key, value))
            .unwrap_or(true)
    }

    fn redact(&self, key: &str, value: &str) -> Option<String> {
        self.spec.redact(key, value)
    }

    fn unredact(&self, key: &str, sent: &str, stored: &str) -> String {
        self.spec.unredact(key, sent, stored)
    }
}

/// The first of several errors (building reports one).
pub fn first_error(errs: Vec<FieldError>) -> FieldError {
    errs.into_iter()
        .next()
        .unwrap_or_else(|| FieldError::new("config", "is not valid for this destination type"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Flavour {
        Plain,
        Fancy,
    }

    fn default_key() -> String {
        "{topic}".into()
    }

    #[derive(Debug, Deserialize, Serialize, JsonSchema)]
    struct Config {
        /// Server address
        ///
        /// Where the server is, e.g.
        /// localhost:1.
        #[schemars(regex(pattern = r"^\S+$"), length(max = 255))]
        server_url: String,
        /// Routing key
        ///
        /// Template.
        #[serde(default = "default_key")]
        routing_key: String,
        /// TLS
        ///
        /// Use TLS.
        #[serde(default)]
        tls: bool,
        /// Batch
        ///
        /// How many.
        #[schemars(range(min = 1))]
        batch: Option<u32>,
        /// Flavour
        ///
        /// Which.
        flavour: Option<Flavour>,
        /// Headers
        ///
        /// Extra.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    }

    #[derive(Deserialize, JsonSchema)]
    struct Creds {
        /// Username
        ///
        /// Who.
        username: String,
        /// Password
        ///
        /// Secret.
        password: Secret,
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn schema_comes_from_the_struct() {
        let f = Fields::of::<Config>();
        let keys: Vec<_> = f.specs().iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server_url",
                "routing_key",
                "tls",
                "batch",
                "flavour",
                "headers"
            ]
        );
        let s = &f.specs()[0];
        assert_eq!(s.label, "Server address");
        assert_eq!(s.description, "Where the server is, e.g. localhost:1.");
        assert!(s.required && !s.sensitive);
        assert_eq!(s.pattern.as_deref(), Some(r"^\S+$"));
        assert_eq!(s.max_length, Some(255));
        assert_eq!(f.specs()[1].default.as_deref(), Some("{topic}"));
        assert!(!f.specs()[1].required);
        assert_eq!(f.specs()[2].kind, "checkbox");
        assert_eq!(f.specs()[2].default.as_deref(), Some("false"));
        assert_eq!(f.specs()[3].pattern.as_deref(), Some("^[0-9]*$"));
        assert_eq!(f.specs()[4].kind, "select");
        assert_eq!(f.specs()[4].options.len(), 2);
        assert_eq!(f.specs()[5].kind, "key_value_map");
        let c = Fields::of::<Creds>();
        assert!(!c.specs()[0].sensitive);
        assert!(c.specs()[1].sensitive && c.specs()[1].required);
        let creds: Creds = parse(
            "credentials",
            &c,
            &map(&[("username", "u"), ("password", "pw")]),
        )
        .unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.expose()),
            ("u", "pw")
        );
    }

    #[test]
    fn parsing_accepts_the_contract_strings() {
        let f = Fields::of::<Config>();
        let c: Config = parse(
            "config",
            &f,
            &map(&[
                ("server_url", "h:1"),
                ("tls", "true"),
                ("batch", "60"),
                ("flavour", "fancy"),
                ("headers", r#"{"a":"b"}"#),
                ("routing_key", ""),
                ("not_mine", "ignored"),
            ]),
        )
        .unwrap();
        assert!(c.tls);
        assert_eq!(c.batch, Some(60));
        assert_eq!(c.flavour, Some(Flavour::Fancy));
        assert_eq!(c.headers["a"], "b");
        assert_eq!(c.routing_key, "{topic}");
    }

    #[test]
    fn parsing_names_the_field() {
        let f = Fields::of::<Config>();
        let errs = parse::<Config>(
            "config",
            &f,
            &map(&[("tls", "yes"), ("batch", "0"), ("headers", "{")]),
        )
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.server_url",
                "config.tls",
                "config.batch",
                "config.headers"
            ]
        );
        assert_eq!(errs[0].problem, "is required");
        assert!(
            errs[2].problem.contains("at least 1"),
            "{}",
            errs[2].problem
        );
        let errs = parse::<Config>(
            "config",
            &f,
            &map(&[("server_url", "h"), ("flavour", "odd")]),
        )
        .unwrap_err();
        assert_eq!(errs[0].field, "config.flavour");
        assert!(errs[0].problem.contains("plain"), "{}", errs[0].problem);
    }

    #[test]
    fn documented_enum_variants_are_select_options() {
        let f = Fields::of::<SigningSettings>();
        let mode = &f.specs()[0];
        assert_eq!(mode.kind, "select", "{mode:?}");
        let values: Vec<_> = mode.options.iter().map(|o| o.value.as_str()).collect();
        assert_eq!(values, ["standard", "outpost", "standard_ed25519"]);
        let s: SigningSettings = parse("config", &f, &map(&[("signing_mode", "outpost")])).unwrap();
        assert_eq!(s.signing_mode, Some(SigningMode::Outpost));
    }

    #[test]
    fn canonical_text_is_the_contract_form() {
        assert_eq!(canonical_text(&serde_json::json!(60)).unwrap(), "60");
        assert_eq!(canonical_text(&serde_json::json!(true)).unwrap(), "true");
        assert_eq!(
            canonical_text(&serde_json::json!({"a": "b"})).unwrap(),
            r#"{"a":"b"}"#
        );
        assert_eq!(canonical_text(&Value::Null), None);
    }
}

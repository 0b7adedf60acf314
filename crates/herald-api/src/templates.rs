//! CSV webhook templates in BalkanID's bulk format, both ways, and the pre-signed URLs they
//! travel through. The mapping onto destinations is documented in `docs/csv.md`; this module
//! is its one implementation.
//!
//! - [`Mapper`] turns one CSV row into the destination it describes (validated like an API
//!   write: topics against the catalog, the URL and token by the destination type) and says
//!   whether that creates, updates or leaves unchanged the tenant's destination with the
//!   row's `ID`. [`export_row`] is its inverse.
//! - An upload is read twice from a temporary file, never held in memory: the first pass
//!   checks every row and collects every error; only a file without errors gets the second
//!   pass, which produces the writes while one store transaction applies them all
//!   ([`herald_store::Store::import_destinations`]). A file with any invalid row changes
//!   nothing.
//! - [`Grant`]: a pre-signed URL's claims, HMAC-SHA256-signed with a key derived from the JWT
//!   secret, valid for [`URL_TTL`] by the engine's clock, single use across nodes (its nonce
//!   is recorded in the store).
//!
//! Templates are webhooks: this is the one place in the API crate that names a destination
//! type and its fields ([`TEMPLATE_TYPE`]), because the CSV format is about webhooks.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::destination::Registry;
use herald_core::{Destination, Topics, ids, signing};
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::wire;

/// The destination type templates become.
pub const TEMPLATE_TYPE: &str = "webhook";

/// How long a pre-signed URL is valid.
pub const URL_TTL: SignedDuration = SignedDuration::from_mins(15);

/// Largest accepted CSV upload.
pub const MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// At most this many errors are listed in a report (the count of rows is exact).
pub const MAX_ERRORS: usize = 1000;

/// The columns, in the format's order.
pub const COLUMNS: [&str; 17] = [
    "ID",
    "Name",
    "Description",
    "Value",
    "Metadata",
    "EntityType",
    "CreatedBy",
    "CreatedAt",
    "UpdatedBy",
    "UpdatedAt",
    "Active",
    "Status",
    "Type",
    "Scope",
    "Server Url",
    "Auth Token",
    "Integration",
];

/// Columns a file must have, and a row must fill.
const REQUIRED: [usize; 6] = [NAME, VALUE, ENTITY_TYPE, TYPE, SCOPE, SERVER_URL];

const ID: usize = 0;
const NAME: usize = 1;
const VALUE: usize = 3;
const METADATA: usize = 4;
const ENTITY_TYPE: usize = 5;
const ACTIVE: usize = 10;
const TYPE: usize = 12;
const SCOPE: usize = 13;
const SERVER_URL: usize = 14;
const AUTH_TOKEN: usize = 15;
const INTEGRATION: usize = 16;

/// Columns kept verbatim in the destination's metadata, under these keys.
const META_KEYS: [(usize, &str); 13] = [
    (NAME, "template.name"),
    (2, "template.description"),
    (VALUE, "template.value"),
    (METADATA, "template.metadata"),
    (ENTITY_TYPE, "template.entity_type"),
    (6, "template.created_by"),
    (7, "template.created_at"),
    (8, "template.updated_by"),
    (9, "template.updated_at"),
    (11, "template.status"),
    (TYPE, "template.type"),
    (SCOPE, "template.scope"),
    (INTEGRATION, "template.integration"),
];

/// Prefix of every metadata key the mapping owns.
const META_PREFIX: &str = "template.";

/// Valid `Type` values (each becomes the destination's one topic).
pub const TYPES: [&str; 3] = ["finding", "request", "review"];
/// Valid `Scope` values.
pub const SCOPES: [&str; 2] = ["integration", "global"];

/// The event metadata key an `integration`-scoped template filters on.
pub const INTEGRATION_METADATA: &str = "integration";

/// One problem with an uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line where the record starts (the header is line 1).
    pub line: u64,
    /// The column's name as the format spells it (or as the file spelled an unknown one).
    pub column: String,
    /// What is wrong.
    pub message: String,
}

impl RowError {
    fn new(line: u64, column: &str, message: impl Into<String>) -> Self {
        Self {
            line,
            column: column.to_string(),
            message: message.into(),
        }
    }

    /// The report's JSON form.
    pub fn to_json(&self) -> Value {
        json!({"line": self.line, "column": self.column, "message": self.message})
    }
}

/// What importing one row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new destination.
    Create,
    /// The destination with the row's ID changes.
    Update,
    /// The destination with the row's ID already looks like this.
    Unchanged,
}

/// Where each column is in the file (`None`: the file does not have it), and how many
/// fields the header has.
pub struct Header([Option<usize>; 17], usize);

/// Reads and checks the header: names matched case-insensitively (a UTF-8 BOM and spaces
/// around names are ignored), unknown and repeated names refused by name, required columns
/// present.
pub fn header(names: &csv::StringRecord) -> Result<Header, Vec<RowError>> {
    let mut at = [None; 17];
    let mut errors = Vec::new();
    for (pos, raw) in names.iter().enumerate() {
        let name = raw.trim_start_matches('\u{feff}').trim();
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            Some(i) if at[i].is_some() => {
                errors.push(RowError::new(1, name, "column appears more than once"))
            }
            Some(i) => at[i] = Some(pos),
            None => errors.push(RowError::new(
                1,
                name,
                format!("unknown column; expected some of {}", COLUMNS.join(", ")),
            )),
        }
    }
    for i in REQUIRED {
        if at[i].is_none() {
            errors.push(RowError::new(1, COLUMNS[i], "required column is missing"));
        }
    }
    if errors.is_empty() {
        Ok(Header(at, names.len()))
    } else {
        Err(errors)
    }
}

/// Everything a row needs to become a destination, owned, so the second pass can run on the
/// store's writer.
pub struct Mapper {
    /// The tenant.
    pub tenant_id: String,
    /// Its destinations by id, as they were before the import.
    pub existing: HashMap<String, Destination>,
    /// Destination types.
    pub registry: Registry,
    /// The topic catalog (empty: any topic).
    pub catalog: Vec<String>,
    /// The signature scheme for generated secrets.
    pub signing_mode: signing::SigningMode,
    /// "Now" for the whole import.
    pub now: Timestamp,
    /// `destinations.max_lifetime`: a new template destination expires this long from now.
    pub max_lifetime: Option<SignedDuration>,
}

impl Mapper {
    /// The destination row `rec` (starting on `line`) describes, and what writing it changes.
    pub fn map(
        &self,
        h: &Header,
        rec: &csv::StringRecord,
        line: u64,
    ) -> Result<(Destination, Change), Vec<RowError>> {
        let get = |i: usize| h.0[i].and_then(|p| rec.get(p)).unwrap_or("");
        let mut errors = Vec::new();
        let err = |errors: &mut Vec<RowError>, i: usize, m: String| {
            errors.push(RowError::new(line, COLUMNS[i], m))
        };
        for i in REQUIRED {
            if get(i).trim().is_empty() {
                err(&mut errors, i, "is required".into());
            }
        }
        let id = get(ID).trim();
        if id.len() > 255
            || id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '?' | '#'))
        {
            err(
                &mut errors,
                ID,
                "must be at most 255 characters without whitespace, '/', '?' or '#'".into(),
            );
        }
        let kind = get(TYPE).trim();
        if !kind.is_empty() && !TYPES.contains(&kind) {
            err(
                &mut errors,
                TYPE,
                format!(
                    "{kind:?} is not a type; expected one of {}",
                    TYPES.join(", ")
                ),
            );
        } else if !kind.is_empty()
            && !self.catalog.is_empty()
            && !self.catalog.iter().any(|t| t == kind)
        {
            err(
                &mut errors,
                TYPE,
                format!("topic {kind:?} is not in the topic catalog"),
            );
        }
        let scope = get(SCOPE).trim();
        if !scope.is_empty() && !SCOPES.contains(&scope) {
            err(
                &mut errors,
                SCOPE,
                format!(
                    "{scope:?} is not a scope; expected one of {}",
                    SCOPES.join(", ")
                ),
            );
        }
        let integration = get(INTEGRATION).trim();
        if scope == "integration" && integration.is_empty() {
            err(
                &mut errors,
                INTEGRATION,
                "is required when Scope is integration".into(),
            );
        }
        let active = match get(ACTIVE).trim().to_ascii_lowercase().as_str() {
            "" | "true" => true,
            "false" => false,
            other => {
                err(
                    &mut errors,
                    ACTIVE,
                    format!("{other:?} is not a boolean; expected true or false"),
                );
                true
            }
        };
        let meta_text = get(METADATA).trim();
        if !meta_text.is_empty() && serde_json::from_str::<Value>(meta_text).is_err() {
            err(&mut errors, METADATA, "must be JSON".into());
        }
        let old = (!id.is_empty()).then(|| self.existing.get(id)).flatten();
        if let Some(old) = old
            && old.kind != TEMPLATE_TYPE
        {
            err(
                &mut errors,
                ID,
                format!(
                    "destination {id:?} is a {} destination, not a {TEMPLATE_TYPE}",
                    old.kind
                ),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut d = match old {
            Some(o) => o.clone(),
            None => Destination {
                id: if id.is_empty() {
                    ids::new_id(ids::DESTINATION)
                } else {
                    id.to_string()
                },
                tenant_id: self.tenant_id.clone(),
                kind: TEMPLATE_TYPE.into(),
                topics: Topics::All,
                filter: None,
                config: BTreeMap::new(),
                credentials: BTreeMap::new(),
                delivery_metadata: None,
                metadata: None,
                disabled_at: None,
                expires_at: self.max_lifetime.map(|m| self.now + m),
                created_at: self.now,
                updated_at: self.now,
            },
        };
        d.topics = Topics::List(vec![kind.to_string()]);
        d.filter = (scope == "integration")
            .then(|| json!({"metadata": {INTEGRATION_METADATA: integration}}));
        let new_url = get(SERVER_URL).trim().to_string();
        // Credentials follow their target: a masked token is kept only for the same URL.
        let same_target = d.config.get("url") == Some(&new_url);
        d.config.insert("url".into(), new_url);
        let token = get(AUTH_TOKEN).trim();
        let stored_token = d.credentials.get("token").cloned();
        let auth = d.credentials.get("auth_type").map(String::as_str);
        if token.is_empty() {
            if matches!(auth, None | Some("bearer") | Some("none")) {
                d.credentials.remove("auth_type");
                d.credentials.remove("token");
            }
        } else if stored_token
            .as_deref()
            .is_some_and(|s| token == wire::mask(s) && auth == Some("bearer"))
        {
            // The masked form a non-admin export shows: keep the stored token, unless the row
            // points it somewhere else.
            if !same_target {
                return Err(vec![RowError::new(
                    line,
                    COLUMNS[AUTH_TOKEN],
                    "the Server Url changed, so the stored token is not kept: send the token again in full (stored credentials never follow a new target)",
                )]);
            }
        } else {
            d.credentials.insert("auth_type".into(), "bearer".into());
            d.credentials.insert("token".into(), token.to_string());
        }
        let mut metadata: BTreeMap<String, String> = d
            .metadata
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(META_PREFIX))
            .collect();
        for (i, key) in META_KEYS {
            let v = get(i).trim();
            if !v.is_empty() {
                metadata.insert(key.to_string(), v.to_string());
            }
        }
        d.metadata = Some(metadata);
        match (active, d.disabled_at) {
            (true, _) => d.disabled_at = None,
            (false, None) => d.disabled_at = Some(self.now),
            (false, Some(_)) => {}
        }
        if old.is_none()
            && let Some(signing) = self.registry.get(TEMPLATE_TYPE).and_then(|t| t.signing())
            && signing.generate
        {
            d.credentials.insert(
                signing.key.to_string(),
                signing::generate_secret_for(self.signing_mode),
            );
        }
        if let Err(errs) = self
            .registry
            .validate(TEMPLATE_TYPE, &d.config, &d.credentials)
        {
            return Err(errs
                .into_iter()
                .map(|e| {
                    let col = if e.field.starts_with("credentials.") {
                        AUTH_TOKEN
                    } else {
                        SERVER_URL
                    };
                    RowError::new(line, COLUMNS[col], e.to_string())
                })
                .collect());
        }
        let change = match old {
            None => Change::Create,
            Some(o) if *o == d => Change::Unchanged,
            Some(_) => {
                d.updated_at = self.now;
                Change::Update
            }
        };
        Ok((d, change))
    }
}

/// The CSV row of a template destination (`None` for destinations that did not come from a
/// template: they have no `template.name`). The token is masked unless `reveal`.
pub fn export_row(d: &Destination, reveal: bool) -> Option<[String; 17]> {
    if d.kind != TEMPLATE_TYPE {
        return None;
    }
    let meta = d.metadata.as_ref()?;
    meta.get("template.name")?;
    let mut row: [String; 17] = Default::default();
    row[ID] = d.id.clone();
    for (i, key) in META_KEYS {
        row[i] = meta.get(key).cloned().unwrap_or_default();
    }
    row[ACTIVE] = d.is_enabled().to_string();
    row[SERVER_URL] = d.config.get("url").cloned().unwrap_or_default();
    if d.credentials.get("auth_type").map(String::as_str) == Some("bearer")
        && let Some(t) = d.credentials.get("token")
    {
        row[AUTH_TOKEN] = if reveal { t.clone() } else { wire::mask(t) };
    }
    Some(row)
}

/// A CSV reader with the format's settings: a header row; records end at `\n` (a `\r`
/// before it is trimmed off with the field), which keeps the csv crate's line numbers right
/// for CRLF files. Record lengths are checked by [`record_problem`].
pub fn reader<R: Read>(r: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(r)
}

/// Whether a record is a blank line (skipped), fine, or of the wrong length (an error naming
/// the first missing or extra column).
fn record_problem(h: &Header, rec: &csv::StringRecord, line: u64) -> Option<Option<RowError>> {
    if rec.len() == h.1 {
        return Some(None);
    }
    if rec.len() == 1 && rec[0].trim().is_empty() {
        return None;
    }
    let idx = rec.len().min(h.1);
    let column =
        h.0.iter()
            .position(|p| *p == Some(idx))
            .map(|i| COLUMNS[i].to_string())
            .unwrap_or_else(|| format!("#{}", idx + 1));
    Some(Some(RowError {
        line,
        column,
        message: format!(
            "the record has {} fields but the header has {}; check the quoting (a field with a comma, quote or line break must be in double quotes, and a quote inside one doubled)",
            rec.len(),
            h.1
        ),
    }))
}

/// The error a CSV parsing failure becomes.
pub fn parse_error(e: &csv::Error, h: Option<&Header>) -> RowError {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            // Name the first column that is missing (or the first extra one).
            let idx = (*len).min(*expected_len) as usize;
            let column = h
                .and_then(|h| {
                    h.0.iter()
                        .position(|p| *p == Some(idx))
                        .map(|i| COLUMNS[i].to_string())
                })
                .unwrap_or_else(|| format!("#{}", idx + 1));
            RowError {
                line,
                column,
                message: format!(
                    "the record has {len} fields but the header has {expected_len}; check the quoting (a field with a comma, quote or line break must be in double quotes, and a quote inside one doubled)"
                ),
            }
        }
        csv::ErrorKind::Utf8 { err, .. } => RowError {
            line,
            column: h
                .and_then(|h| {
                    h.0.iter()
                        .position(|p| *p == Some(err.field()))
                        .map(|i| COLUMNS[i].to_string())
                })
                .unwrap_or_else(|| format!("#{}", err.field() + 1)),
            message: "is not valid UTF-8".into(),
        },
        _ => RowError {
            line,
            column: String::new(),
            message: format!("cannot read the CSV: {e}"),
        },
    }
}

/// What checking a whole file found.
#[derive(Debug, Default)]
pub struct Check {
    /// Rows that create a destination.
    pub created: u64,
    /// Rows that change one.
    pub updated: u64,
    /// Rows that change nothing.
    pub unchanged: u64,
    /// Problems (at most [`MAX_ERRORS`]).
    pub errors: Vec<RowError>,
    /// Problems in all.
    pub error_count: u64,
    /// Line of each ID in the file.
    pub lines: HashMap<String, u64>,
}

impl Check {
    fn push(&mut self, e: RowError) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        }
    }

    /// The report's JSON form; counts are zero when anything is wrong (nothing was applied).
    pub fn report(&self) -> Value {
        let ok = self.error_count == 0;
        json!({
            "created": if ok { self.created } else { 0 },
            "updated": if ok { self.updated } else { 0 },
            "unchanged": if ok { self.unchanged } else { 0 },
            "errors": self.errors.iter().map(RowError::to_json).collect::<Vec<_>>(),
        })
    }
}

/// The first pass: every row of `r`, checked; nothing is kept but counts, errors and the line
/// of each ID (to refuse duplicates and name the line of an ID created meanwhile).
pub fn check<R: Read>(mapper: &Mapper, r: R) -> Check {
    let mut out = Check::default();
    let mut rd = reader(BufReader::new(r));
    let h = match rd.headers() {
        Ok(names) => match header(names) {
            Ok(h) => h,
            Err(errs) => {
                for e in errs {
                    out.push(e);
                }
                return out;
            }
        },
        Err(e) => {
            out.push(parse_error(&e, None));
            return out;
        }
    };
    let mut rec = csv::StringRecord::new();
    loop {
        match rd.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                out.push(parse_error(&e, Some(&h)));
                if matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) {
                    continue;
                }
                break;
            }
        }
        let line = rec.position().map_or(0, |p| p.line());
        match record_problem(&h, &rec, line) {
            None => continue,
            Some(Some(e)) => {
                out.push(e);
                continue;
            }
            Some(None) => {}
        }
        let id = h.0[ID].and_then(|p| rec.get(p)).unwrap_or("").trim();
        if !id.is_empty() {
            if let Some(first) = out.lines.get(id) {
                out.push(RowError::new(
                    line,
                    COLUMNS[ID],
                    format!("duplicate ID {id:?} (first on line {first})"),
                ));
                continue;
            }
            out.lines.insert(id.to_string(), line);
        }
        match mapper.map(&h, &rec, line) {
            Ok((_, Change::Create)) => out.created += 1,
            Ok((_, Change::Update)) => out.updated += 1,
            Ok((_, Change::Unchanged)) => out.unchanged += 1,
            Err(errs) => {
                for e in errs {
                    out.push(e);
                }
            }
        }
    }
    out
}

/// The second pass: the writes for a file [`check`] accepted, produced row by row.
pub fn writes<R: Read + Send + 'static>(
    mapper: Arc<Mapper>,
    r: R,
) -> herald_store::DestinationBatch {
    use herald_store::StoreError;
    let mut rd = reader(BufReader::new(r));
    let h = match rd
        .headers()
        .map_err(|e| parse_error(&e, None))
        .and_then(|n| header(n).map_err(|mut e| e.remove(0)))
    {
        Ok(h) => h,
        Err(e) => {
            return Box::new(std::iter::once(Err(StoreError::Refused(format!(
                "line {}: {}",
                e.line, e.message
            )))));
        }
    };
    let mut rec = csv::StringRecord::new();
    Box::new(std::iter::from_fn(move || {
        loop {
            match rd.read_record(&mut rec) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => return Some(Err(StoreError::Refused(e.to_string()))),
            }
            let line = rec.position().map_or(0, |p| p.line());
            match record_problem(&h, &rec, line) {
                None => continue,
                Some(Some(e)) => {
                    return Some(Err(StoreError::Refused(format!(
                        "line {line}: {}",
                        e.message
                    ))));
                }
                Some(None) => {}
            }
            match mapper.map(&h, &rec, line) {
                Ok((_, Change::Unchanged)) => continue,
                Ok((d, change)) => return Some(Ok((d, change == Change::Create))),
                Err(errs) => {
                    return Some(Err(StoreError::Refused(format!(
                        "line {line}: {}",
                        errs.first()
                            .map(|e| e.message.as_str())
                            .unwrap_or("invalid")
                    ))));
                }
            }
        }
    }))
}

// ----- pre-signed URLs -----

/// What a pre-signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `PUT` a CSV.
    Upload,
    /// `GET` the CSV.
    Download,
}

impl Op {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upload => "upload",
            Op::Download => "download",
        }
    }
}

/// The signed claims of a pre-signed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What it allows.
    pub op: Op,
    /// On which tenant.
    pub tenant_id: String,
    /// Unix seconds after which it is refused.
    pub expires: i64,
    /// Single-use token.
    pub nonce: String,
    /// Whether the requester had the operator's powers (export shows tokens unmasked).
    pub admin: bool,
}

/// Why a pre-signed URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Missing or malformed parameters, or a signature that does not verify.
    #[error("the URL's signature does not verify")]
    Signature,
    /// Past its expiry.
    #[error("the URL has expired; ask for a new one")]
    Expired,
}

fn url_key(jwt_secret: &[u8]) -> Hmac<Sha256> {
    // A key of its own, derived from the JWT secret: a URL signature is never a valid token
    // signature and the other way round.
    let mut derive = <Hmac<Sha256>>::new_from_slice(jwt_secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    derive.update(b"herald pre-signed url v1");
    let key = derive.finalize().into_bytes();
    <Hmac<Sha256>>::new_from_slice(&key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

impl Grant {
    /// A grant for `op` on `tenant_id`, valid [`URL_TTL`] from `now`.
    pub fn new(op: Op, tenant_id: &str, admin: bool, now: Timestamp) -> Grant {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        Grant {
            op,
            tenant_id: tenant_id.to_string(),
            expires: (now + URL_TTL).as_second(),
            nonce: hex::encode(nonce),
            admin,
        }
    }

    fn signing_input(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.op.as_str(),
            self.tenant_id,
            self.expires,
            self.nonce,
            u8::from(self.admin)
        )
    }

    /// The URL's query string (after `?`).
    pub fn query(&self, jwt_secret: &[u8]) -> String {
        let mut mac = url_key(jwt_secret);
        mac.update(self.signing_input().as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("tenant_id", &self.tenant_id)
            .append_pair("expires", &self.expires.to_string())
            .append_pair("nonce", &self.nonce)
            .append_pair("admin", if self.admin { "1" } else { "0" })
            .append_pair("signature", &sig)
            .finish()
    }

    /// Checks a URL's query for `op`: signature (constant time), then expiry by `now`.
    pub fn verify(
        op: Op,
        query: &str,
        jwt_secret: &[u8],
        now: Timestamp,
    ) -> Result<Grant, GrantError> {
        if jwt_secret.is_empty() {
            return Err(GrantError::Signature);
        }
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| params.get(k).ok_or(GrantError::Signature);
        let grant = Grant {
            op,
            tenant_id: get("tenant_id")?.clone(),
            expires: get("expires")?.parse().map_err(|_| GrantError::Signature)?,
            nonce: get("nonce")?.clone(),
            admin: match get("admin")?.as_str() {
                "1" => true,
                "0" => false,
                _ => return Err(GrantError::Signature),
            },
        };
        let sig = URL_SAFE_NO_PAD
            .decode(get("signature")?)
            .map_err(|_| GrantError::Signature)?;
        let mut mac = url_key(jwt_secret);
        mac.update(grant.signing_input().as_bytes());
        mac.verify_slice(&sig).map_err(|_| GrantError::Signature)?;
        if now.as_second() >= grant.expires {
            return Err(GrantError::Expired);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn grants_verify_expire_and_refuse_tampering() {
        let g = Grant::new(Op::Upload, "acme corp", false, now());
        let q = g.query(b"secret");
        assert_eq!(
            Grant::verify(Op::Upload, &q, b"secret", now()),
            Ok(g.clone())
        );
        let almost = now() + URL_TTL - SignedDuration::from_secs(1);
        assert!(Grant::verify(Op::Upload, &q, b"secret", almost).is_ok());
        assert_eq!(
            Grant::verify(Op::Upload, &q, b"secret", now() + URL_TTL),
            Err(GrantError::Expired)
        );
        assert_eq!(
            Grant::verify(Op::Download, &q, b"secret", now()),
            Err(GrantError::Signature)
        );
        assert_eq!(
            Grant::verify(Op::Upload, &q, b"other", now()),
            Err(GrantError::Signature)
        );
        assert_eq!(
            Grant::verify(
                Op::Upload,
                &q.replace("admin=0", "admin=1"),
                b"secret",
                now()
            ),
            Err(GrantError::Signature)
        );
        assert_eq!(
            Grant::verify(Op::Upload, &q.replace("acme", "acmf"), b"secret", now()),
            Err(GrantError::Signature)
        );
        assert_eq!(
            Grant::verify(Op::Upload, &q, b"", now()),
            Err(GrantError::Signature)
        );
    }

    #[test]
    fn headers_match_case_insensitively_and_refuse_unknown_names() {
        let rec = csv::StringRecord::from(vec![
            "\u{feff}id",
            "NAME",
            "value",
            "entitytype",
            "type",
            "scope",
            "server url",
        ]);
        assert!(header(&rec).is_ok());
        let rec = csv::StringRecord::from(vec!["Name", "Value", "Colour"]);
        let errs = header(&rec).err().unwrap();
        assert!(
            errs.iter()
                .any(|e| e.column == "Colour" && e.message.starts_with("unknown column"))
        );
        assert!(
            errs.iter()
                .any(|e| e.column == "Server Url" && e.message.contains("missing"))
        );
        assert!(errs.iter().all(|e| e.line == 1));
    }
}

//! The wire shapes as OpenAPI schemas: one Rust type per component of the served document.
//!
//! These types only *describe* JSON; handlers build their bodies in `wire` and read requests
//! field by field in `body`, so nothing here is ever constructed (hence the `dead_code`
//! allowance). Drift between a shape here and what a handler writes is caught from two sides:
//! `crates/herald/tests/e2e/openapi.rs` compares every contract route's schemas with the Outpost
//! contract, and the schemathesis phase of `.ci/run` validates live responses against this
//! document. Names of contract shapes are the contract's component names. Destination shapes
//! are not here: they depend on the destination types of the build and are made at run time
//! (`super::destination_schemas`) from the registry, on the envelopes below.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// The error shape of every failure.
#[derive(ToSchema)]
#[schema(as = APIErrorResponse)]
pub struct ApiErrorResponse {
    /// The HTTP status code, repeated.
    status: u16,
    /// What went wrong; on a validation error, every `field: problem` line joined.
    message: String,
    /// Details: on a validation error one `field: problem` string per problem; an object on
    /// some errors (`required_scope`, CSV row errors).
    #[schema(required = false)]
    data: ErrorData,
}

/// Details of an error.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum ErrorData {
    /// One line per problem.
    Lines(Vec<String>),
    /// Structured details.
    #[schema(value_type = Object)]
    Object(Value),
}

/// `{"success": true}`.
#[derive(ToSchema)]
pub struct SuccessResponse {
    /// Always `true`.
    success: bool,
}

/// Sort direction of a page.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// Seek pagination of a list.
#[derive(ToSchema)]
pub struct SeekPagination {
    /// The field the list is ordered by.
    order_by: String,
    /// The direction.
    dir: Dir,
    /// The page size.
    limit: u32,
    /// Cursor of the next page; `null` on the last page.
    #[schema(required = true)]
    next: Option<String>,
    /// Cursor of the previous page; `null` on the first page.
    #[schema(required = true)]
    prev: Option<String>,
}

/// A tenant.
#[derive(ToSchema)]
pub struct Tenant {
    /// The tenant's id, chosen by the platform.
    id: String,
    /// How many destinations it has.
    destinations_count: u64,
    /// The union of its destinations' topics.
    topics: Vec<String>,
    /// Free-form string metadata.
    #[schema(required = true)]
    metadata: Option<BTreeMap<String, String>>,
    /// When it was created (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    updated_at: String,
}

/// Body of `PUT /tenants/{tenant_id}`.
#[derive(ToSchema)]
pub struct TenantUpsert {
    /// Replaces the tenant's metadata when present.
    metadata: Option<BTreeMap<String, String>>,
}

/// A page of tenants.
#[derive(ToSchema)]
pub struct TenantPaginatedResult {
    /// The tenants of this page.
    models: Vec<Tenant>,
    /// Cursors.
    pagination: SeekPagination,
    /// How many tenants match in all.
    count: u64,
}

/// Where to send a tenant for the portal.
#[derive(ToSchema)]
pub struct PortalRedirect {
    /// The portal URL with a fresh tenant token.
    redirect_url: String,
    /// The tenant.
    tenant_id: String,
}

/// A tenant token.
#[derive(ToSchema)]
pub struct TenantToken {
    /// An HS256 JWT valid for 24 hours.
    token: String,
    /// The tenant it is for.
    tenant_id: String,
}

/// Answer of `POST /tenants/{tenant_id}/tokens/revoke` (extension).
#[derive(ToSchema)]
pub struct TokensRevoked {
    /// Always `true`.
    success: bool,
    /// The tenant.
    tenant_id: String,
    /// Tokens issued before this instant are refused.
    #[schema(format = DateTime)]
    revoked_at: String,
}

/// `"*"`: every topic, present and future.
#[derive(ToSchema)]
pub enum AllTopics {
    /// Every topic.
    #[serde(rename = "*")]
    All,
}

/// The topics a destination subscribes to: `"*"` or a list.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum Topics {
    /// Every topic.
    All(AllTopics),
    /// These topics (each may contain `*` wildcards).
    List(Vec<String>),
}

/// A body to publish.
#[derive(ToSchema)]
pub struct PublishRequest {
    /// The event id, also its idempotency key; generated when absent.
    #[schema(required = false)]
    id: String,
    /// The tenant the event belongs to.
    #[schema(required = false)]
    tenant_id: String,
    /// Deliver only to this destination.
    #[schema(required = false)]
    destination_id: String,
    /// The topic (required when a topic catalog is configured).
    #[schema(required = false)]
    topic: String,
    /// Whether failed deliveries are retried (default `true`).
    #[schema(required = false)]
    eligible_for_retry: bool,
    /// When the event happened (default: now).
    #[schema(required = false, format = DateTime)]
    time: String,
    /// String metadata, sent along with the event.
    #[schema(required = false)]
    metadata: BTreeMap<String, String>,
    /// The payload.
    #[schema(value_type = Object)]
    data: Value,
}

/// Answer of `POST /publish`.
#[derive(ToSchema)]
pub struct PublishResponse {
    /// The event id.
    id: String,
    /// Whether this id was already accepted (nothing new was created).
    duplicate: bool,
    /// The destinations the event will be delivered to.
    destination_ids: Vec<String>,
    /// Whether the event's tenant exists (Herald extension; an unknown tenant's event matches
    /// nothing).
    tenant_found: bool,
}

/// Body of `POST /publish/batch` (extension).
#[derive(ToSchema)]
pub struct PublishBatchRequest {
    /// The events, each exactly what `POST /publish` accepts.
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<PublishRequest>,
}

/// Answer of `POST /publish/batch`.
#[derive(ToSchema)]
pub struct PublishBatchResponse {
    /// One result per event, in the order of `events`.
    results: Vec<PublishBatchResult>,
}

/// What became of one event of a batch.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum PublishBatchResult {
    /// Accepted (or a duplicate): the single publish's answer.
    Accepted(PublishBatchAccepted),
    /// Refused: this event's error.
    Refused(PublishBatchRefused),
}

/// An accepted event of a batch.
#[derive(ToSchema)]
pub struct PublishBatchAccepted {
    /// The event's position in `events`.
    index: usize,
    /// The event id.
    id: String,
    /// Whether this id was already accepted, earlier or by an earlier event of the batch
    /// (nothing new was created).
    duplicate: bool,
    /// The destinations the event will be delivered to.
    destination_ids: Vec<String>,
    /// Whether the event's tenant exists.
    tenant_found: bool,
}

/// A refused event of a batch.
#[derive(ToSchema)]
pub struct PublishBatchRefused {
    /// The event's position in `events`.
    index: usize,
    /// Why, as the single publish would answer: `422` with `events[i].field: problem`
    /// lines, `409` for an id taken before the idempotency window, `404` for an unknown
    /// tenant when `publish.require_known_tenant` is set.
    error: ApiErrorResponse,
}

/// Body of `POST /retry`.
#[derive(ToSchema)]
pub struct RetryRequest {
    /// The event to deliver again.
    event_id: String,
    /// The destination to deliver it to.
    destination_id: String,
    /// The event's tenant (Herald extension): event ids are unique per tenant, so an admin
    /// names it when several tenants use the id. A tenant token may only name its own.
    tenant_id: Option<String>,
}

/// An event as `/events` lists it.
#[derive(ToSchema)]
pub struct Event {
    /// The event id.
    id: String,
    /// Its tenant.
    tenant_id: String,
    /// The destination it was targeted at, when it was.
    #[schema(required = false)]
    destination_id: String,
    /// The destinations it matched when published.
    matched_destination_ids: Vec<String>,
    /// Its topic.
    topic: String,
    /// When it happened.
    #[schema(format = DateTime)]
    time: String,
    /// Whether its failed deliveries are retried.
    eligible_for_retry: bool,
    /// Its metadata.
    #[schema(required = true)]
    metadata: Option<BTreeMap<String, String>>,
    /// Its payload.
    #[schema(value_type = Object)]
    data: Value,
}

/// An event without its payload (an attempt's `include=event`).
#[derive(ToSchema)]
pub struct EventSummary {
    /// The event id.
    id: String,
    /// Its tenant.
    tenant_id: String,
    /// The destination of the attempt.
    #[schema(required = false)]
    destination_id: String,
    /// Its topic.
    topic: String,
    /// When it happened.
    #[schema(format = DateTime)]
    time: String,
    /// Whether its failed deliveries are retried.
    eligible_for_retry: bool,
    /// Its metadata.
    #[schema(required = true)]
    metadata: Option<BTreeMap<String, String>>,
}

/// An event with its payload (an attempt's `include=event.data`).
#[derive(ToSchema)]
pub struct EventFull {
    /// The event id.
    id: String,
    /// Its tenant.
    tenant_id: String,
    /// The destination of the attempt.
    #[schema(required = false)]
    destination_id: String,
    /// Its topic.
    topic: String,
    /// When it happened.
    #[schema(format = DateTime)]
    time: String,
    /// Whether its failed deliveries are retried.
    eligible_for_retry: bool,
    /// Its metadata.
    #[schema(required = true)]
    metadata: Option<BTreeMap<String, String>>,
    /// Its payload.
    #[schema(value_type = Object)]
    data: Value,
}

/// An included event: with its payload or without. (`anyOf`, not the contract's `oneOf`:
/// an event with its payload is also a valid summary.)
#[derive(ToSchema)]
#[serde(untagged)]
pub enum AttemptEvent {
    /// With `data`.
    Full(EventFull),
    /// Without.
    Summary(EventSummary),
}

/// Outcome of an attempt.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    /// 2xx (or the protocol's acknowledgement).
    Success,
    /// Anything else.
    Failed,
}

/// One try of a delivery.
#[derive(ToSchema)]
pub struct Attempt {
    /// The attempt id.
    id: String,
    /// Its tenant.
    tenant_id: String,
    /// The event delivered.
    event_id: String,
    /// The destination it went to.
    destination_id: String,
    /// That destination's type (extension).
    destination_type: String,
    /// The event's topic (extension).
    topic: String,
    /// The outcome.
    status: AttemptStatus,
    /// When it was made.
    #[schema(format = DateTime)]
    time: String,
    /// The status code or error class.
    code: String,
    /// 1 for the first attempt.
    attempt_number: u32,
    /// Whether it was asked for by hand (`POST /retry`).
    manual: bool,
    /// How long it took, in milliseconds (extension).
    latency_ms: u64,
    /// The request sent and the response received (`include=response_data`).
    #[schema(required = false, value_type = Option<Object>)]
    response_data: Option<Value>,
    /// The event (`include=event` or `include=event.data`).
    #[schema(required = false, value_type = AttemptEvent)]
    event: Value,
    /// The destination (`include=destination`).
    #[schema(required = false, value_type = DestinationDoc)]
    destination: Value,
}

/// A page of events.
#[derive(ToSchema)]
pub struct EventPaginatedResult {
    /// The events of this page.
    models: Vec<Event>,
    /// Cursors.
    pagination: SeekPagination,
}

/// A page of attempts.
#[derive(ToSchema)]
pub struct AttemptPaginatedResult {
    /// The attempts of this page.
    models: Vec<Attempt>,
    /// Cursors.
    pagination: SeekPagination,
}

/// One input of a destination type.
#[derive(ToSchema)]
pub struct DestinationSchemaField {
    /// The key under `config` or `credentials`.
    key: String,
    /// The input kind (`text`, `checkbox`, `key_value_map`, `select`, …).
    #[schema(rename = "type")]
    kind: String,
    /// A short label.
    label: String,
    /// What it means.
    description: String,
    /// Whether it must be given.
    required: bool,
    /// Whether its value is masked on read.
    sensitive: bool,
    /// Its default.
    #[schema(required = false)]
    default: String,
    /// A regular expression the value matches.
    #[schema(required = false)]
    pattern: String,
    /// Shortest length.
    #[schema(required = false)]
    minlength: u32,
    /// Longest length.
    #[schema(required = false)]
    maxlength: u32,
    /// The choices of a `select`.
    #[schema(required = false)]
    options: Vec<SelectOption>,
}

/// One choice of a `select` field.
#[derive(ToSchema)]
pub struct SelectOption {
    /// What the user sees.
    label: String,
    /// What is stored.
    value: String,
}

/// The fields of one destination type.
#[derive(ToSchema)]
pub struct DestinationTypeSchema {
    /// The type key, e.g. `webhook`.
    #[schema(rename = "type")]
    kind: String,
    /// A short label.
    label: String,
    /// What it is.
    description: String,
    /// An SVG icon.
    icon: String,
    /// Setup instructions (Markdown).
    instructions: String,
    /// `config` inputs.
    config_fields: Vec<DestinationSchemaField>,
    /// `credentials` inputs.
    credential_fields: Vec<DestinationSchemaField>,
    /// Which credential holds the signing secret, on types that sign (extension).
    #[schema(required = false)]
    signing_secret_key: String,
}

/// An entry of the topic catalog (extension).
#[derive(ToSchema)]
pub struct TopicCatalogEntry {
    /// The topic.
    name: String,
    /// What it means.
    description: String,
    /// A sample `data` payload.
    #[schema(value_type = Object)]
    sample: Value,
}

/// One bucket and dimension combination of a metrics query.
#[derive(ToSchema)]
pub struct MetricsDataPoint {
    /// Start of the bucket; absent without `granularity`.
    #[schema(required = false, format = DateTime)]
    time_bucket: String,
    /// The dimension values of this point.
    dimensions: BTreeMap<String, String>,
    /// The measures asked for.
    #[schema(value_type = Object)]
    metrics: Value,
}

/// About a metrics query.
#[derive(ToSchema)]
pub struct MetricsMetadata {
    /// The bucket size, when one was asked for.
    #[schema(required = false)]
    granularity: String,
    /// How long the query took.
    query_time_ms: u64,
    /// How many points are returned.
    row_count: u64,
    /// The most points one answer holds.
    row_limit: u64,
    /// Whether points were left out because of the limit.
    truncated: bool,
}

/// A metrics answer.
#[derive(ToSchema)]
pub struct MetricsResponse {
    /// The points.
    data: Vec<MetricsDataPoint>,
    /// About the query.
    metadata: MetricsMetadata,
}

/// One worker's state in `/healthz`.
#[derive(ToSchema)]
pub struct WorkerHealth {
    /// `healthy` or `failed`.
    status: String,
}

/// The workers reported by `/healthz`.
#[derive(ToSchema)]
pub struct Workers {
    /// The HTTP server.
    #[schema(rename = "http-server")]
    http_server: WorkerHealth,
    /// The delivery engine.
    delivery: WorkerHealth,
}

/// Liveness.
#[derive(ToSchema)]
pub struct Health {
    /// `healthy` or `failed`.
    status: String,
    /// The server's time.
    #[schema(format = DateTime)]
    timestamp: String,
    /// Herald's version.
    version: String,
    /// Per worker.
    workers: Workers,
}

/// A scoped API key (extension); never its secret.
#[derive(ToSchema)]
pub struct ApiKey {
    /// The key id.
    id: String,
    /// Its name.
    name: String,
    /// Its scopes: `admin`, `publish`, `read`, `destinations:write`, `metrics`.
    scopes: Vec<String>,
    /// The only tenant it may act on.
    #[schema(required = true)]
    tenant_id: Option<String>,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it stops working.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// When it was last used (updated about once a minute).
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
}

/// A new API key with its secret, shown this once (extension).
#[derive(ToSchema)]
pub struct ApiKeyCreated {
    /// The key id.
    id: String,
    /// Its name.
    name: String,
    /// Its scopes.
    scopes: Vec<String>,
    /// The only tenant it may act on.
    #[schema(required = true)]
    tenant_id: Option<String>,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it stops working.
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// When it was last used.
    #[schema(required = true, format = DateTime)]
    last_used_at: Option<String>,
    /// The secret to send as a bearer token.
    secret: String,
}

/// Body of `POST /api-keys` (extension).
#[derive(ToSchema)]
pub struct ApiKeyCreate {
    /// A name for people.
    name: String,
    /// At least one scope.
    scopes: Vec<String>,
    /// Confine the key to this tenant.
    #[schema(required = false)]
    tenant_id: String,
    /// When it stops working (in the future).
    #[schema(required = false, format = DateTime)]
    expires_at: String,
}

/// Body of `POST …/replay` (extension). Every field narrows the replay.
#[derive(ToSchema)]
pub struct ReplayRequest {
    /// Delivery statuses to replay (`failed`, `cancelled`, `success`); a string or a list.
    #[schema(required = false, value_type = Vec<String>)]
    status: Value,
    /// Topics to replay; a string or a list.
    #[schema(required = false, value_type = Vec<String>)]
    topics: Value,
    /// Events at or after this instant.
    #[schema(required = false, format = DateTime)]
    start: String,
    /// Events before this instant.
    #[schema(required = false, format = DateTime)]
    end: String,
}

/// Answer of `POST …/replay` (extension).
#[derive(ToSchema)]
pub struct ReplayResponse {
    /// How many deliveries were queued again.
    count: u64,
}

/// Body of `POST …/test` (extension).
#[derive(ToSchema)]
pub struct TestEventRequest {
    /// The topic to send (default: the destination's first catalog topic).
    #[schema(required = false)]
    topic: String,
}

/// Answer of `POST …/test` (extension).
#[derive(ToSchema)]
pub struct TestEventResponse {
    /// The test event's id.
    id: String,
    /// Its topic.
    topic: String,
    /// The destination it goes to.
    destination_ids: Vec<String>,
}

/// Body of `POST …/renew` (extension).
#[derive(ToSchema)]
pub struct RenewRequest {
    /// The new end of the subscription (default: now + `destinations.max_lifetime`).
    #[schema(required = false, format = DateTime)]
    expires_at: String,
}

/// A pre-signed URL for a CSV upload or download (extension).
#[derive(ToSchema)]
pub struct PresignedUrl {
    /// The URL; its query string is the authorisation.
    url: String,
    /// When it stops working.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// One refused CSV cell or row (extension).
#[derive(ToSchema)]
pub struct CsvRowError {
    /// 1-based line.
    line: u64,
    /// The column's name.
    column: String,
    /// What is wrong.
    message: String,
}

/// What a CSV upload did (extension).
#[derive(ToSchema)]
pub struct CsvImportReport {
    /// Destinations created.
    created: u64,
    /// Destinations changed.
    updated: u64,
    /// Rows that matched an existing destination.
    unchanged: u64,
    /// Refused rows (nothing is written when there is one).
    errors: Vec<CsvRowError>,
}

/// A destination as read back; `type`, `config` and `credentials` are filled in per type
/// (`super::destination_schemas`).
#[derive(ToSchema)]
pub struct DestinationEnvelope {
    /// The destination id.
    id: String,
    /// The destination type.
    #[schema(rename = "type")]
    kind: String,
    /// What it subscribes to.
    topics: Topics,
    /// A payload filter (`$eq`, `$in`, `$or`, …), or `null`.
    #[schema(required = true, value_type = Option<Object>)]
    filter: Option<Value>,
    /// Type-specific settings (strings).
    #[schema(value_type = Object)]
    config: Value,
    /// Type-specific credentials (strings; sensitive ones masked).
    #[schema(value_type = Object)]
    credentials: Value,
    /// Key-value pairs sent with every delivery (headers, attributes).
    #[schema(required = true)]
    delivery_metadata: Option<BTreeMap<String, String>>,
    /// Free-form string metadata.
    #[schema(required = true)]
    metadata: Option<BTreeMap<String, String>>,
    /// When it was disabled, or `null` when enabled.
    #[schema(required = true, format = DateTime)]
    disabled_at: Option<String>,
    /// When its subscription ends, or `null` (extension).
    #[schema(required = true, format = DateTime)]
    expires_at: Option<String>,
    /// Whether its subscription has ended (extension).
    expired: bool,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    updated_at: String,
    /// A short description of where it delivers.
    target: String,
    /// A link to the target, when there is one.
    #[schema(required = true)]
    target_url: Option<String>,
}

/// A destination to create.
#[derive(ToSchema)]
pub struct DestinationCreateEnvelope {
    /// A client-chosen id (default: generated).
    #[schema(required = false)]
    id: String,
    /// The destination type.
    #[schema(rename = "type")]
    kind: String,
    /// What it subscribes to.
    topics: Topics,
    /// A payload filter.
    #[schema(required = false, value_type = Option<Object>)]
    filter: Option<Value>,
    /// Type-specific settings.
    #[schema(required = false, value_type = Object)]
    config: Value,
    /// Type-specific credentials.
    #[schema(required = false, value_type = Object)]
    credentials: Value,
    /// Key-value pairs sent with every delivery.
    #[schema(required = false)]
    delivery_metadata: Option<BTreeMap<String, String>>,
    /// Free-form string metadata.
    #[schema(required = false)]
    metadata: Option<BTreeMap<String, String>>,
    /// Creation time to record (admin only; imports).
    #[schema(required = false, format = DateTime)]
    created_at: Option<String>,
    /// Update time to record (admin only; imports).
    #[schema(required = false, format = DateTime)]
    updated_at: Option<String>,
    /// Create it disabled at this instant.
    #[schema(required = false, format = DateTime)]
    disabled_at: Option<String>,
    /// When its subscription ends (extension).
    #[schema(required = false, format = DateTime)]
    expires_at: Option<String>,
}

/// A merge-patch of a destination.
#[derive(ToSchema)]
pub struct DestinationUpdateEnvelope {
    /// The destination's type; it cannot change.
    #[schema(rename = "type", required = false)]
    kind: String,
    /// Replaces the topics.
    #[schema(required = false)]
    topics: Topics,
    /// Replaces the filter (`null` removes it).
    #[schema(required = false, value_type = Option<Object>)]
    filter: Option<Value>,
    /// Merged into the settings; `null` deletes a key.
    #[schema(required = false, value_type = Object)]
    config: Value,
    /// Merged into the credentials; `null` deletes a key.
    #[schema(required = false, value_type = Object)]
    credentials: Value,
    /// Merged into the delivery metadata.
    #[schema(required = false)]
    delivery_metadata: Option<BTreeMap<String, Option<String>>>,
    /// Merged into the metadata.
    #[schema(required = false)]
    metadata: Option<BTreeMap<String, Option<String>>>,
    /// Disable (an instant) or enable (`null`).
    #[schema(required = false, format = DateTime)]
    disabled_at: Option<String>,
    /// Set or clear (`null`) the subscription's end (extension).
    #[schema(required = false, format = DateTime)]
    expires_at: Option<String>,
}

/// Stand-ins for the destination shapes, whose schemas depend on the build's destination types:
/// handlers name them in their declarations, and `super::finish` replaces each with the real
/// choice over the registry's types.
macro_rules! placeholder {
    ($($ty:ident => $name:ident),* $(,)?) => {$(
        /// Replaced when the document is finished (see above).
        #[derive(ToSchema)]
        #[schema(as = $name)]
        pub struct $ty {}
    )*};
}

placeholder!(
    DestinationDoc => Destination,
    DestinationCreateDoc => DestinationCreate,
    DestinationUpdateDoc => DestinationUpdate,
    OperatorDestinationDoc => OperatorDestination,
    OperatorDestinationCreateDoc => OperatorDestinationCreate,
    OperatorDestinationUpdateDoc => OperatorDestinationUpdate,
);

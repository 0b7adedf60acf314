//! The Driver contract: one suite of scenarios that every destination type passes against its
//! real server, in-process, calling [`Driver::deliver`] directly (no engine, no API).
//!
//! A type takes part by implementing [`Case`] — the destination settings for its server, how
//! to read messages back with the protocol's own client, how to produce credentials the
//! server refuses, how to route through a [`Forwarder`] — and by running every scenario
//! below (the e2e binary's `contract` module does, one test per type and scenario). Drivers
//! are built the way the binary builds them: [`registry`] → `registry.get(kind).build(..)`.
//! Messages carry the headers the engine computes ([`outbound`], the same
//! `herald_core::signing::headers` call as the engine's dispatch). The suite checks the
//! driver's contract only; engine behaviour (retry schedules, rate limits) and type-specific
//! mapping details are tested elsewhere.
//!
//! Scenarios: [`delivery_arrives_mapped_and_signed`], [`bad_credentials_are_permanent`],
//! [`outage_is_retry_then_recovers`], [`burst_arrives_exactly_once`],
//! [`hung_server_costs_one_timeout`], [`never_retries_by_itself`].

// The scenarios pass the Driver trait's own error type around as it is.
#![allow(clippy::result_large_err)]

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::destination::{DeliveryError, Disposition, Driver, OutboundMessage, Registry};
use herald_core::signing::{self, SigningConfig, SigningMode};
use herald_core::{Destination, Topics};
use herald_destinations::{DestinationsConfig, TargetPolicy};
use serde_json::{Value, json};

use crate::forwarder::{Forwarder, Mode};
use crate::services::unique;
use crate::signing::{SECRET, check_headers, header};

/// A string map, for configs and credentials.
pub type Fields = BTreeMap<String, String>;

/// Builds a [`Fields`] from pairs.
pub fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One message as the server holds it, read back with the protocol's own client.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The payload (decoded where the protocol wraps it, e.g. base64 in Pub/Sub).
    pub body: Vec<u8>,
    /// Herald's headers as the protocol carries them: AMQP headers, NATS and Kafka headers,
    /// Redis entry fields, MQTT user properties, SQS/Pub/Sub attributes, S3 user metadata,
    /// Service Bus custom properties, HTTP headers.
    pub headers: Vec<(String, String)>,
    /// Protocol-native fields the case maps Herald's own to (e.g. AMQP `message-id` and
    /// `type`), by the case's names; checked by [`Case::check_native`].
    pub native: Fields,
}

/// How a case's server refuses credentials.
pub enum Auth {
    /// Settings the server refuses; the permanent error has `code` and its message mentions
    /// one of `mentions` (what to fix). `keep` holds what must live as long (a private server).
    Refused {
        /// Destination config.
        config: Fields,
        /// Destination credentials (the suite adds the signing secret).
        credentials: Fields,
        /// The error code the type records for this refusal.
        code: &'static str,
        /// Words of which the error message names at least one (case-insensitive).
        mentions: &'static [&'static str],
        /// The server's own words for the refusal, which the message must carry, if any.
        server_says: Option<&'static str>,
        /// Kept alive for the scenario.
        keep: Box<dyn Any + Send>,
    },
    /// The protocol (or the server this case can run) has no authentication to refuse: the
    /// reason, and where what can be tested instead is tested.
    NotApplicable(&'static str),
}

/// One destination type's part in the contract suite.
#[allow(async_fn_in_trait)]
pub trait Case {
    /// The destination type's name, e.g. `rabbitmq`.
    fn kind(&self) -> &'static str;
    /// `host:port` of the real server, which [`Case::forwarder`] forwards to.
    fn upstream(&self) -> String;
    /// Config and credentials (without the signing secret) of a destination that sends to
    /// this case's target through `addr` (`host:port`: the server, or a forwarder).
    fn destination(&self, addr: &str) -> (Fields, Fields);
    /// Every message the target has received since the case was made, oldest first.
    async fn received(&self) -> Vec<Delivered>;
    /// Credentials the server refuses, or why there are none.
    async fn bad_credentials(&self) -> Auth;
    /// Checks of protocol-native fields beyond Herald's headers (default: none).
    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        let _ = (got, sent);
    }
    /// A forwarder to the server that this case's destinations can be routed through (a
    /// broker that advertises its address, like Kafka, has its own).
    async fn forwarder(&self) -> Arc<Forwarder> {
        Arc::new(Forwarder::start(&self.upstream()).await)
    }
    /// The error codes an attempt may have while the server is unreachable.
    fn outage_codes(&self) -> &'static [&'static str] {
        &["connection_error"]
    }
    /// How many connections a driver opens for sequential deliveries (default: one, reused).
    fn connections(&self) -> usize {
        1
    }
    /// The address destinations use for `fwd` (default: the forwarder's `host:port`).
    fn through(&self, fwd: &Forwarder) -> String {
        fwd.server_url()
    }
}

/// The registry as the binary builds it, in development mode (loopback targets allowed).
pub fn registry() -> Registry {
    herald_destinations::registry(&DestinationsConfig {
        target_policy: TargetPolicy {
            allow_http: true,
            allow_private: true,
            allow_list: Vec::new(),
        },
        proxy: None,
        response_body_limit: 4096,
        user_agent: "herald-contract-tests".into(),
        retry_on_status: Vec::new(),
        tls_ca: None,
        no_generated_secret: Vec::new(),
        email_for_tenants: true,
    })
    .expect("the destination registry")
}

/// A stored destination of `kind`; the signing secret [`SECRET`] goes into the credential
/// the type names (`signing_secret_key`), whatever that is called.
pub fn destination(
    registry: &Registry,
    kind: &str,
    config: Fields,
    credentials: Fields,
) -> Destination {
    let t = registry
        .get(kind)
        .unwrap_or_else(|| panic!("{kind} is not in this build's registry"));
    let mut credentials = credentials;
    if let Some(key) = t.signing_secret_key() {
        credentials.insert(key.to_string(), SECRET.to_string());
    }
    let now = jiff::Timestamp::now();
    Destination {
        id: unique("des_"),
        tenant_id: "contract".into(),
        kind: kind.into(),
        topics: Topics::All,
        filter: None,
        config,
        credentials,
        delivery_metadata: None,
        metadata: None,
        disabled_at: None,
        expires_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// Validates and builds the driver, as the engine does for a stored destination.
pub fn driver(registry: &Registry, d: &Destination) -> Arc<dyn Driver> {
    if let Err(problems) = registry.validate(&d.kind, &d.config, &d.credentials) {
        panic!("the case's {} destination is invalid: {problems:?}", d.kind);
    }
    registry
        .get(&d.kind)
        .expect("registered")
        .build(d)
        .unwrap_or_else(|e| panic!("building the {} driver: {e}", d.kind))
}

/// The message the engine would send for event (`event_id`, `topic`, `data`, metadata
/// `source: tests`) to `d` now: the same body, merged metadata and
/// `herald_core::signing::headers` call as the engine's dispatch, in the default (standard)
/// signing mode, with the secret from the type's `signing_secret_key`.
pub fn outbound(
    registry: &Registry,
    d: &Destination,
    event_id: &str,
    topic: &str,
    data: &Value,
    timeout: Duration,
) -> OutboundMessage {
    let now = jiff::Timestamp::now();
    let body: Arc<[u8]> = serde_json::to_vec(data).expect("JSON").into();
    let mut metadata = d.delivery_metadata.clone().unwrap_or_default();
    metadata.insert("source".into(), "tests".into());
    let key = registry
        .get(&d.kind)
        .map_or(Some("secret"), |t| t.signing_secret_key());
    let secrets = signing::Secrets {
        current: key.and_then(|k| d.credentials.get(k)).map(String::as_str),
        previous: None,
    };
    let delivery_id = unique("del_");
    let msg = signing::Message {
        event_id,
        topic,
        timestamp: now,
        body: &body,
        metadata: &metadata,
        idempotency_key: &delivery_id,
    };
    let headers = signing::headers(
        &SigningConfig::new(SigningMode::Standard),
        &msg,
        &secrets,
        now,
    );
    OutboundMessage {
        event_id: event_id.to_string(),
        delivery_id,
        topic: topic.to_string(),
        time: now,
        body,
        headers,
        metadata,
        timeout,
    }
}

/// The per-attempt timeout the scenarios give messages.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How much longer than [`TIMEOUT`] an attempt may take (scheduling, connection teardown).
pub const MARGIN: Duration = Duration::from_secs(1);

struct Setup {
    registry: Registry,
    destination: Destination,
    driver: Arc<dyn Driver>,
}

impl Setup {
    fn new<C: Case>(case: &C, addr: &str) -> Setup {
        let registry = registry();
        let (config, credentials) = case.destination(addr);
        let destination = destination(&registry, case.kind(), config, credentials);
        let driver = driver(&registry, &destination);
        Setup {
            registry,
            destination,
            driver,
        }
    }

    fn message(&self, data: Value) -> OutboundMessage {
        outbound(
            &self.registry,
            &self.destination,
            &unique("evt_"),
            "order.paid",
            &data,
            TIMEOUT,
        )
    }

    /// Delivers as the engine does: the attempt ends at the message's timeout (a driver may
    /// give up earlier), which is then a retryable `timeout`.
    async fn deliver(&self, msg: &OutboundMessage) -> Result<(), DeliveryError> {
        attempt(&self.driver, msg).await
    }
}

/// One attempt as the engine makes it: `deliver` bounded by the message's timeout.
async fn attempt(driver: &Arc<dyn Driver>, msg: &OutboundMessage) -> Result<(), DeliveryError> {
    match tokio::time::timeout(msg.timeout, driver.deliver(msg)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(DeliveryError::retry(
            "timeout",
            format!("no answer within {} ms", msg.timeout.as_millis()),
        )),
    }
}

/// Waits (10 s at most) until the target holds at least `n` messages; returns them.
async fn wait_received<C: Case>(case: &C, n: usize) -> Vec<Delivered> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = case.received().await;
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the server holds {} of {n} messages",
            case.kind(),
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event_id(d: &Delivered) -> String {
    header(&d.headers, "webhook-id")
}

fn expect_retry(kind: &str, what: &str, r: Result<(), DeliveryError>) -> DeliveryError {
    let e = r
        .err()
        .unwrap_or_else(|| panic!("{kind}: {what} succeeded"));
    assert!(
        matches!(e.disposition, Disposition::Retry { .. }),
        "{kind}: {what} must be retried, got {e:?}"
    );
    e
}

/// A delivery arrives once, with its body, with the event id, topic, timestamp and metadata
/// in the protocol's own headers/attributes, and (protocol-native fields aside) a signature
/// that the independent `standardwebhooks` verifier accepts with the destination's secret
/// and refuses with another.
pub async fn delivery_arrives_mapped_and_signed<C: Case>(case: &C) {
    let s = Setup::new(case, &case.upstream());
    let data = json!({"order": 42, "name": "Ada"});
    let msg = s.message(data.clone());
    s.deliver(&msg)
        .await
        .unwrap_or_else(|e| panic!("{}: delivery failed: {e:?}", case.kind()));
    let got = wait_received(case, 1).await;
    assert_eq!(got.len(), 1, "{}: one delivery, one message", case.kind());
    let m = &got[0];
    assert_eq!(
        serde_json::from_slice::<Value>(&m.body).expect("a JSON body"),
        data,
        "{}: the body is the event data",
        case.kind()
    );
    check_headers(&m.headers, &m.body, &msg.event_id, &msg.topic);
    case.check_native(m, &msg);
}

/// Credentials the server refuses fail the attempt permanently, with a message naming what
/// to fix. A case whose server has no authentication says so ([`Auth::NotApplicable`]).
pub async fn bad_credentials_are_permanent<C: Case>(case: &C) {
    match case.bad_credentials().await {
        Auth::NotApplicable(why) => {
            assert!(
                why.len() > 20,
                "{}: say why there is nothing to refuse",
                case.kind()
            );
        }
        Auth::Refused {
            config,
            credentials,
            code,
            mentions,
            server_says,
            keep,
        } => {
            let registry = registry();
            let d = destination(&registry, case.kind(), config, credentials);
            let driver = driver(&registry, &d);
            let msg = outbound(
                &registry,
                &d,
                &unique("evt_"),
                "order.paid",
                &json!({}),
                TIMEOUT,
            );
            let e = attempt(&driver, &msg)
                .await
                .err()
                .unwrap_or_else(|| panic!("{}: refused credentials delivered", case.kind()));
            assert_eq!(
                e.disposition,
                Disposition::Permanent,
                "{}: refused credentials are permanent: {e:?}",
                case.kind()
            );
            eprintln!(
                "{}: refused credentials: {} {}",
                case.kind(),
                e.code,
                e.message
            );
            assert_eq!(e.code, code, "{}: {e:?}", case.kind());
            let text = e.message.to_lowercase();
            assert!(
                mentions.iter().any(|w| text.contains(&w.to_lowercase())),
                "{}: the message {:?} should say what to fix (one of {mentions:?})",
                case.kind(),
                e.message
            );
            if let Some(words) = server_says {
                assert!(
                    e.message.contains(words),
                    "{}: the message {:?} should carry the server's {words:?}",
                    case.kind(),
                    e.message
                );
            }
            drop(keep);
        }
    }
}

/// Through a forwarder: three deliveries succeed over [`Case::connections`] connections (the
/// driver reuses them); with the server unreachable (connections cut, port refused) the next
/// is `Retry` with one of [`Case::outage_codes`]; after recovery its next attempt (the same message, as
/// the engine retries it) succeeds on the same driver, and every delivery is at the server
/// exactly once.
pub async fn outage_is_retry_then_recovers<C: Case>(case: &C) {
    let fwd = case.forwarder().await;
    let before = fwd.accepted();
    let s = Setup::new(case, &case.through(&fwd));
    let first = s.message(json!({"n": 1}));
    for m in [
        first.clone(),
        s.message(json!({"n": 1.1})),
        s.message(json!({"n": 1.2})),
    ] {
        s.deliver(&m)
            .await
            .unwrap_or_else(|e| panic!("{}: a delivery failed: {e:?}", case.kind()));
        // An HTTP client puts a connection back in its pool just after the answer: let it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fwd.accepted() - before,
        case.connections(),
        "{}: sequential deliveries reuse the driver's connections",
        case.kind()
    );
    fwd.set(Mode::Refuse).await;
    let during = s.message(json!({"n": 2}));
    let e = expect_retry(
        case.kind(),
        "a delivery during an outage",
        s.deliver(&during).await,
    );
    assert!(
        case.outage_codes().contains(&e.code.as_str()),
        "{}: {e:?} (expected one of {:?})",
        case.kind(),
        case.outage_codes()
    );
    fwd.set(Mode::Forward).await;
    s.deliver(&during).await.unwrap_or_else(|e| {
        panic!(
            "{}: the first attempt after recovery failed: {e:?}",
            case.kind()
        )
    });
    wait_received(case, 4).await;
    // Give a duplicate a moment to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = case.received().await.iter().map(event_id).collect();
    assert!(ids.contains(&first.event_id), "{}: {ids:?}", case.kind());
    assert!(ids.contains(&during.event_id), "{}: {ids:?}", case.kind());
    assert_eq!(
        ids.len(),
        4,
        "{}: each delivery exactly once: {ids:?}",
        case.kind()
    );
}

/// How many deliveries [`burst_arrives_exactly_once`] sends at once.
pub const BURST: usize = 50;

/// [`BURST`] concurrent deliveries on one driver all succeed and arrive exactly once each.
pub async fn burst_arrives_exactly_once<C: Case>(case: &C) {
    let s = Setup::new(case, &case.upstream());
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = BTreeSet::new();
    for i in 0..BURST {
        let msg = s.message(json!({"i": i}));
        sent.insert(msg.event_id.clone());
        let driver = s.driver.clone();
        tasks.spawn(async move { attempt(&driver, &msg).await });
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("delivery task") {
            panic!("{}: a delivery of the burst failed: {e:?}", case.kind());
        }
    }
    wait_received(case, BURST).await;
    // Give duplicates a moment to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = case.received().await;
    let ids: Vec<String> = got.iter().map(event_id).collect();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct, sent, "{}: every delivery arrived", case.kind());
    assert_eq!(ids.len(), BURST, "{}: each exactly once", case.kind());
}

/// A server that accepts the connection and never answers costs one attempt timeout: the
/// attempt ends `Retry` within the message's timeout plus [`MARGIN`], having opened one
/// connection, and nothing keeps trying behind it.
pub async fn hung_server_costs_one_timeout<C: Case>(case: &C) {
    let fwd = case.forwarder().await;
    fwd.set(Mode::Hang).await;
    let before = fwd.accepted();
    let s = Setup::new(case, &case.through(&fwd));
    let msg = s.message(json!({}));
    let started = Instant::now();
    let r = s.deliver(&msg).await;
    let took = started.elapsed();
    let e = expect_retry(case.kind(), "a delivery to a hung server", r);
    eprintln!(
        "{}: hung server: {} {} after {took:?}",
        case.kind(),
        e.code,
        e.message
    );
    assert!(
        took <= msg.timeout + MARGIN,
        "{}: a hung server cost {took:?}",
        case.kind()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fwd.accepted() - before,
        1,
        "{}: one attempt opens one connection",
        case.kind()
    );
}

/// One `deliver` is one attempt: against a server that accepts and closes every connection,
/// the driver answers `Retry` having connected once — it never retries by itself.
pub async fn never_retries_by_itself<C: Case>(case: &C) {
    let fwd = case.forwarder().await;
    fwd.set(Mode::Drop).await;
    let before = fwd.accepted();
    let s = Setup::new(case, &case.through(&fwd));
    let msg = s.message(json!({}));
    let e = expect_retry(
        case.kind(),
        "a delivery to a server that closes connections",
        s.deliver(&msg).await,
    );
    eprintln!(
        "{}: closed connection: {} {}",
        case.kind(),
        e.code,
        e.message
    );
    // Anything still under way in the background would show up here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fwd.accepted() - before,
        1,
        "{}: the driver connected more than once for one deliver()",
        case.kind()
    );
}

/// Generates one `#[tokio::test]` per scenario for a case: `contract_tests!(rabbitmq,
/// RabbitCase::new().await)` defines module `rabbitmq` with tests named after the scenarios.
#[macro_export]
macro_rules! contract_tests {
    ($name:ident, $case:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::contract;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delivery_arrives_mapped_and_signed() {
                contract::delivery_arrives_mapped_and_signed(&$case).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_credentials_are_permanent() {
                contract::bad_credentials_are_permanent(&$case).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn outage_is_retry_then_recovers() {
                contract::outage_is_retry_then_recovers(&$case).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn burst_arrives_exactly_once() {
                contract::burst_arrives_exactly_once(&$case).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hung_server_costs_one_timeout() {
                contract::hung_server_costs_one_timeout(&$case).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn never_retries_by_itself() {
                contract::never_retries_by_itself(&$case).await;
            }
        }
    };
}

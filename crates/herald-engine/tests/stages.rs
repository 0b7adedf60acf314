//! The engine in-process, on a real embedded store, with a [`ManualClock`] and a scripted
//! destination type: every time the engine reads comes from the clock, so the tests move
//! time by hand and prove what did not happen by the store's state (what is due when) or by
//! the rate limiter having refused at the current clock time, never by sleeping.
//!
//! Covered: the retry schedule at exact clock times, rate-limit spacing, lease renewal before
//! a late attempt, 410 → disable (with its operator event), the consecutive-failure levels
//! 50/70/90/100 %, exhausted retries, and shutdown handing back leased work. (Retry maths and
//! its jitter bounds and the `Retry-After` cap are tested on the `decide` stage in
//! `dispatch.rs`.)

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::destination::{
    DeliveryError, Disposition, Driver, FieldError, OutboundMessage, Receipt, Registry,
};
use herald_core::operator::{OPERATOR_TENANT, topic};
use herald_core::retry::{RetryPolicy, Schedule};
use herald_core::spec::{About, SigningField, Spec, Typed};
use herald_core::{Clock, Destination, Event, ManualClock, Topics};
use herald_engine::operator::AlertConfig;
use herald_engine::{Engine, EngineConfig};
use herald_store::seal::Keyring;
use herald_store::sqlite::SqliteStore;
use herald_store::{AttemptQuery, EventQuery, PageRequest, Store};
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the scripted driver does for one delivery.
/// A destination without a step left succeeds with code `200`.
enum Step {
    /// Fail with this error.
    Fail(DeliveryError),
    /// Wait until notified, then succeed.
    Block(Arc<Notify>),
}

/// One message the scripted driver was asked to send.
#[derive(Debug, Clone)]
struct Sent {
    destination: String,
    topic: String,
    event_id: String,
    body: Value,
}

#[derive(Default)]
struct Script {
    /// Steps per destination id; a destination without steps succeeds.
    steps: Mutex<BTreeMap<String, VecDeque<Step>>>,
    sent: Mutex<Vec<Sent>>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoConfig {}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoCredentials {}

struct Scripted(Arc<Script>);

impl Spec for Scripted {
    type Config = NoConfig;
    type Credentials = NoCredentials;

    fn about(&self) -> About {
        About {
            kind: "scripted",
            label: "Scripted",
            description: "Answers as the test scripts it.",
            icon: "",
            instructions: "",
        }
    }

    fn signing(&self) -> Option<SigningField> {
        None
    }

    fn build(
        &self,
        id: &str,
        _config: NoConfig,
        _credentials: NoCredentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(ScriptedDriver {
            id: id.to_string(),
            script: self.0.clone(),
        }))
    }

    fn target(&self, _config: &NoConfig) -> (String, Option<String>) {
        ("scripted".into(), None)
    }
}

struct ScriptedDriver {
    id: String,
    script: Arc<Script>,
}

#[async_trait]
impl Driver for ScriptedDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        self.script.sent.lock().push(Sent {
            destination: self.id.clone(),
            topic: msg.topic.clone(),
            event_id: msg.event_id.clone(),
            body: serde_json::from_slice(&msg.body).unwrap_or(Value::Null),
        });
        let step = self
            .script
            .steps
            .lock()
            .get_mut(&self.id)
            .and_then(VecDeque::pop_front);
        match step {
            None => {}
            Some(Step::Fail(e)) => return Err(e),
            Some(Step::Block(n)) => n.notified().await,
        }
        Ok(Receipt {
            code: "200".into(),
            response: None,
        })
    }
}

struct Rig {
    engine: Engine,
    store: Arc<dyn Store>,
    clock: ManualClock,
    script: Arc<Script>,
    t0: Timestamp,
    _dir: tempfile::TempDir,
}

fn config() -> EngineConfig {
    EngineConfig {
        retry: RetryPolicy {
            schedule: Schedule::Fixed(vec![Duration::from_secs(10), Duration::from_secs(20)]),
            jitter: 0.0,
            max_retry_after: Duration::from_secs(3600),
        },
        poll_interval: Duration::from_millis(5),
        alerts: AlertConfig {
            consecutive_failure_threshold: 0,
            ..AlertConfig::default()
        },
        ..EngineConfig::default()
    }
}

async fn rig(cfg: EngineConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keyring::single("k", &Keyring::generate_key()).unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("herald.db"), &keys).unwrap());
    let script = Arc::new(Script::default());
    let mut registry = Registry::default();
    registry.register(Arc::new(Typed::new(Scripted(script.clone()), false)));
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let clock = ManualClock::new(t0);
    let engine = Engine::start(store.clone(), registry, Arc::new(clock.clone()), cfg, true)
        .await
        .unwrap();
    Rig {
        engine,
        store,
        clock,
        script,
        t0,
        _dir: dir,
    }
}

impl Rig {
    /// A scripted destination `id` of `tenant` on `topics`, with `config`.
    async fn destination(&self, tenant: &str, id: &str, topics: Topics, config: &[(&str, &str)]) {
        let now = self.clock.now();
        let d = Destination {
            id: id.into(),
            tenant_id: tenant.into(),
            kind: "scripted".into(),
            topics,
            filter: None,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            credentials: BTreeMap::new(),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_destination(&d).await.unwrap();
        self.engine.destination_saved(&d);
    }

    /// An operator destination `ops` on the alert topics.
    async fn operator(&self) {
        self.destination(
            OPERATOR_TENANT,
            "ops",
            Topics::List(vec!["alert.*".into()]),
            &[],
        )
        .await;
    }

    fn script(&self, destination: &str, steps: Vec<Step>) {
        self.script
            .steps
            .lock()
            .entry(destination.into())
            .or_default()
            .extend(steps);
    }

    async fn publish(&self, tenant: &str, id: &str, retry: bool) -> Vec<String> {
        let e = Event {
            id: id.into(),
            tenant_id: tenant.into(),
            destination_id: None,
            topic: "order.paid".into(),
            time: self.clock.now(),
            metadata: BTreeMap::new(),
            data: json!({"id": id}),
            eligible_for_retry: retry,
        };
        self.engine.publish(e).await.unwrap().destination_ids
    }

    /// Attempts of `event_id`, oldest first.
    async fn attempts(&self, tenant: &str, event_id: &str) -> Vec<herald_core::Attempt> {
        let mut page = self
            .store
            .list_attempts(&AttemptQuery {
                tenant_ids: vec![tenant.into()],
                event_ids: vec![event_id.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .models;
        page.reverse();
        page
    }

    /// Waits for a condition the engine's tasks make true (they run on this runtime and on
    /// the store's writer thread); fails after 10 s of wall time.
    async fn until<F: std::future::Future<Output = bool>>(&self, what: &str, f: impl Fn() -> F) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f().await {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Waits until tenant `t`'s `destination`'s rate limiter has refused `n` more attempts from now.
    async fn refused_again(&self, destination: &str, n: u64) {
        let from = self.engine.rate_limit_refusals("t", destination);
        self.until("refusals", || async {
            self.engine.rate_limit_refusals("t", destination) >= from + n
        })
        .await;
    }

    fn sent(&self, destination: &str) -> Vec<Sent> {
        self.script
            .sent
            .lock()
            .iter()
            .filter(|s| s.destination == destination)
            .cloned()
            .collect()
    }

    fn at(&self, secs: i64) -> Timestamp {
        self.t0 + SignedDuration::from_secs(secs)
    }
}

fn retry_err() -> DeliveryError {
    DeliveryError::retry("503", "busy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_happen_exactly_when_the_clock_says() {
    let r = rig(config()).await;
    r.destination("t", "d", Topics::All, &[]).await;
    r.script("d", vec![Step::Fail(retry_err()), Step::Fail(retry_err())]);
    r.publish("t", "e1", true).await;
    r.until("first attempt", || async {
        r.attempts("t", "e1").await.len() == 1
    })
    .await;
    // Not due a moment before the schedule's 10 s: the store holds it until then.
    assert!(
        r.store
            .claim_due(r.at(10) - SignedDuration::from_micros(1), 10, r.at(100))
            .await
            .unwrap()
            .is_empty()
    );
    r.clock.advance(Duration::from_secs(10));
    r.until("second attempt", || async {
        r.attempts("t", "e1").await.len() == 2
    })
    .await;
    r.clock.advance(Duration::from_secs(20));
    r.until("third attempt", || async {
        r.attempts("t", "e1").await.len() == 3
    })
    .await;
    let times: Vec<Timestamp> = r.attempts("t", "e1").await.iter().map(|a| a.time).collect();
    assert_eq!(
        times,
        [r.at(0), r.at(10), r.at(30)],
        "attempts at clock times"
    );
    let a = r.attempts("t", "e1").await;
    assert_eq!(
        a.iter().map(|a| a.status.as_str()).collect::<Vec<_>>(),
        ["failed", "failed", "success"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_about_to_run_out_is_renewed_before_the_attempt() {
    let r = rig(config()).await;
    r.destination("t", "d", Topics::All, &[("max_in_flight", "1")])
        .await;
    let first = Arc::new(Notify::new());
    let second = Arc::new(Notify::new());
    r.script(
        "d",
        vec![Step::Block(first.clone()), Step::Block(second.clone())],
    );
    r.publish("t", "e1", true).await;
    r.publish("t", "e2", true).await; // both leased until t0 + 60 s; one waits for the slot
    r.until("one out", || async { r.sent("d").len() == 1 })
        .await;
    // The two jobs race for the destination's one slot: whichever lost it is "the second".
    let waiting = if r.sent("d")[0].event_id == "e1" {
        "e2"
    } else {
        "e1"
    };
    r.clock.advance(Duration::from_secs(55));
    first.notify_one();
    r.until("the second out", || async { r.sent("d").len() == 2 })
        .await;
    // The second started with 5 s of its lease left (less than two 5 s timeouts): it was
    // renewed, so past the original expiry nobody else may claim it while it is out.
    r.clock.advance(Duration::from_secs(15));
    assert!(
        r.store
            .claim_due(r.at(70), 10, r.at(130))
            .await
            .unwrap()
            .is_empty(),
        "the renewed lease still holds at t0 + 70 s"
    );
    second.notify_one();
    r.until("the second recorded", || async {
        r.attempts("t", waiting).await.len() == 1
    })
    .await;
    assert_eq!(r.attempts("t", waiting).await[0].time, r.at(55));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_destination_and_alerts_in_one_step() {
    let r = rig(config()).await;
    r.operator().await;
    r.destination("t", "d", Topics::All, &[]).await;
    r.script(
        "d",
        vec![Step::Fail(DeliveryError {
            disposition: Disposition::Gone,
            code: "410".into(),
            message: "gone".into(),
            response: None,
        })],
    );
    r.publish("t", "e1", true).await;
    r.until("the alert", || async { !r.sent("ops").is_empty() })
        .await;
    let alert = &r.sent("ops")[0];
    assert_eq!(alert.topic, topic::DESTINATION_DISABLED);
    assert_eq!(
        alert.body["data"]["reason"],
        "the receiver answered 410 Gone"
    );
    let d = r.store.get_destination("t", "d").await.unwrap().unwrap();
    assert_eq!(d.disabled_at, Some(r.at(0)));
    assert!(
        r.publish("t", "e2", true).await.is_empty(),
        "the routing table follows the disable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_alert_at_each_level_then_disable() {
    let mut cfg = config();
    cfg.alerts.consecutive_failure_threshold = 10;
    let r = rig(cfg).await;
    r.operator().await;
    r.destination("t", "d", Topics::All, &[("max_in_flight", "1")])
        .await;
    r.script(
        "d",
        (0..10)
            .map(|_| Step::Fail(DeliveryError::permanent("500", "down")))
            .collect(),
    );
    for i in 0..10 {
        r.publish("t", &format!("e{i}"), false).await;
    }
    r.until("four level alerts and the disable", || async {
        r.sent("ops").len() == 5
    })
    .await;
    let got = r.sent("ops");
    let mut levels: Vec<(u64, u64)> = got
        .iter()
        .filter(|s| s.topic == topic::CONSECUTIVE_FAILURE)
        .map(|s| {
            (
                s.body["data"]["consecutive_failures"].as_u64().unwrap(),
                s.body["data"]["progress"].as_u64().unwrap(),
            )
        })
        .collect();
    levels.sort();
    assert_eq!(levels, [(5, 50), (7, 70), (9, 90), (10, 100)]);
    assert_eq!(
        got.iter()
            .filter(|s| s.topic == topic::DESTINATION_DISABLED)
            .count(),
        1
    );
    assert!(
        r.store
            .get_destination("t", "d")
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_some()
    );
    let events = r
        .store
        .list_events(&EventQuery {
            tenant_ids: vec![OPERATOR_TENANT.into()],
            page: PageRequest::default(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.models.len(), 5, "each written once, in the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_raise_one_alert_per_window() {
    let mut cfg = config();
    cfg.retry.schedule = Schedule::Fixed(vec![Duration::from_secs(1)]);
    cfg.alerts.exhausted_retries_window = Duration::from_secs(3600);
    let r = rig(cfg).await;
    r.operator().await;
    r.destination("t", "d", Topics::All, &[]).await;
    r.script("d", (0..4).map(|_| Step::Fail(retry_err())).collect());
    r.publish("t", "e1", true).await;
    r.publish("t", "e2", true).await;
    r.until("first attempts", || async {
        r.attempts("t", "e1").await.len() == 1 && r.attempts("t", "e2").await.len() == 1
    })
    .await;
    r.clock.advance(Duration::from_secs(1));
    r.until("last attempts", || async {
        r.attempts("t", "e1").await.len() == 2 && r.attempts("t", "e2").await.len() == 2
    })
    .await;
    r.until("the alert", || async { !r.sent("ops").is_empty() })
        .await;
    let alerts = r.sent("ops");
    assert_eq!(
        alerts.len(),
        1,
        "one per destination per window: {alerts:?}"
    );
    assert_eq!(alerts[0].topic, topic::EXHAUSTED_RETRIES);
    let ev = alerts[0].body["data"]["event"]["id"].as_str().unwrap();
    assert!(ev == "e1" || ev == "e2");
    assert_eq!(alerts[0].body["data"]["attempt"]["attempt_number"], 2);
    assert!(!alerts[0].event_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_leased_work_due_at_once() {
    let r = rig(config()).await;
    r.destination("t", "d", Topics::All, &[("max_in_flight", "1")])
        .await;
    let hold = Arc::new(Notify::new());
    r.script("d", vec![Step::Block(hold.clone())]);
    for i in 0..3 {
        r.publish("t", &format!("e{i}"), true).await;
    }
    r.until("e0 out", || async { r.sent("d").len() == 1 }).await;
    // Published deliveries are leased until t0 + 60 s; e1 and e2 wait for the slot.
    assert!(
        r.store
            .claim_due(r.at(1), 10, r.at(100))
            .await
            .unwrap()
            .is_empty()
    );
    r.engine.shutdown(Duration::from_millis(50)).await;
    let back = r.store.claim_due(r.at(1), 10, r.at(100)).await.unwrap();
    let mut ids: Vec<String> = back.iter().map(|j| j.event.id.clone()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["e1", "e2"],
        "handed back, due now, not at lease expiry"
    );
    hold.notify_one();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_attempts_by_the_clock() {
    // Leases far longer than the test's clock moves, so nothing is claimed twice.
    let r = rig(EngineConfig {
        lease: Duration::from_secs(3600),
        ..config()
    })
    .await;
    // One a minute: a burst of one, then one more per 60 s of clock time. (Sixty seconds of
    // real time never pass here, so a limiter on the wall clock would release nothing.)
    r.destination("t", "d", Topics::All, &[("rate_limit_per_minute", "1")])
        .await;
    for id in ["e1", "e2", "e3"] {
        r.publish("t", id, true).await;
    }
    r.until("the burst", || async { r.sent("d").len() == 1 })
        .await;
    // The limiter's answer depends only on the clock: once it has refused the waiting
    // attempts (each asks again at least every 100 ms), nothing more can go while the clock
    // stands still.
    r.refused_again("d", 4).await;
    assert_eq!(r.sent("d").len(), 1, "clock frozen: only the burst");
    // A moment short of the interval is still too early. (At most one refusal per waiter can
    // have read the clock before it moved, so three more include one that read it after.)
    r.clock.advance(Duration::from_secs(59));
    r.refused_again("d", 3).await;
    assert_eq!(r.sent("d").len(), 1, "59 s: still only the burst");
    // One interval after the first: exactly one more.
    r.clock.advance(Duration::from_secs(1));
    r.until("the second", || async { r.sent("d").len() == 2 })
        .await;
    r.refused_again("d", 2).await;
    assert_eq!(r.sent("d").len(), 2, "60 s: exactly one more");
    r.clock.advance(Duration::from_secs(60));
    r.until("the third", || async { r.sent("d").len() == 3 })
        .await;
    let mut times = Vec::new();
    for id in ["e1", "e2", "e3"] {
        r.until("recorded", || async {
            r.attempts("t", id).await.len() == 1
        })
        .await;
        times.push(r.attempts("t", id).await[0].time);
    }
    times.sort();
    assert_eq!(
        times,
        [r.at(0), r.at(60), r.at(120)],
        "attempts one interval apart"
    );
}

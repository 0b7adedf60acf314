//! `gcp_pubsub` in the Driver contract suite, against Google's Pub/Sub emulator (shared by the
//! cases running at the same time, a topic and subscription of their own each), read back with
//! google-cloud-pubsub.

use std::sync::Arc;

use base64::Engine as _;
use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::python::reader_env;
use herald_testkit::servers::{PUBSUB_PROJECT, Server, shared_pubsub_emulator};
use herald_testkit::{contract_tests, unique};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub struct PubSubCase {
    emulator: Arc<Server>,
    topic: String,
    subscription: String,
    /// Pulls acknowledge: what was read so far.
    got: Mutex<Vec<Delivered>>,
}

impl PubSubCase {
    pub async fn new() -> PubSubCase {
        let case = PubSubCase {
            emulator: shared_pubsub_emulator(),
            topic: unique("topic-"),
            subscription: unique("sub-"),
            got: Mutex::default(),
        };
        case.read(
            "pubsub-setup",
            json!({"project": PUBSUB_PROJECT, "topic": case.topic, "subscription": case.subscription}),
        )
        .await;
        case
    }

    async fn read(&self, command: &str, args: Value) -> Value {
        reader_env(command, args, &[("PUBSUB_EMULATOR_HOST", self.upstream())]).await
    }
}

impl Case for PubSubCase {
    fn kind(&self) -> &'static str {
        "gcp_pubsub"
    }

    fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.emulator.port)
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[
                ("project_id", PUBSUB_PROJECT),
                ("topic", &self.topic),
                ("endpoint", addr),
            ]),
            Fields::new(),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        let got = self
            .read(
                "pubsub-read",
                json!({"project": PUBSUB_PROJECT, "subscription": self.subscription, "count": 1000, "wait": 1}),
            )
            .await;
        for m in got.as_array().unwrap() {
            let body = base64::engine::general_purpose::STANDARD
                .decode(m["data"].as_str().unwrap())
                .unwrap();
            let headers = m["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            self.got.lock().push(Delivered {
                body,
                headers,
                native: Fields::new(),
            });
        }
        self.got.lock().clone()
    }

    async fn bad_credentials(&self) -> Auth {
        Auth::NotApplicable(
            "the Pub/Sub emulator accepts every caller; refused service-account keys and \
             tokens are tested against a local OAuth token server in destinations::gcp",
        )
    }

    fn check_native(&self, _got: &Delivered, _sent: &OutboundMessage) {}
}

contract_tests!(suite, PubSubCase::new().await);

//! `kafka` in the Driver contract suite, against tansu (a fresh broker per case, memory
//! storage) reached through the forwarder it advertises, read back with kafka-python.

use std::sync::Arc;

use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::servers::Tansu;
use herald_testkit::{Forwarder, contract_tests};

const TOPIC: &str = "events";

pub struct KafkaCase {
    broker: Tansu,
}

impl KafkaCase {
    pub async fn new() -> KafkaCase {
        let broker = Tansu::start(false).await;
        broker.create_topic(TOPIC).await;
        KafkaCase { broker }
    }
}

impl Case for KafkaCase {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    /// Clients always go through the forwarder the broker advertises.
    fn upstream(&self) -> String {
        self.broker.bootstrap()
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[("brokers", addr), ("topic", TOPIC), ("tls", "false")]),
            Fields::new(),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        self.broker
            .records(TOPIC, 1000)
            .await
            .iter()
            .map(|r| Delivered {
                body: r["value"].as_str().unwrap().as_bytes().to_vec(),
                headers: r["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
                    .collect(),
                native: fields(&[("key", r["key"].as_str().unwrap_or_default())]),
            })
            .collect()
    }

    async fn bad_credentials(&self) -> Auth {
        // tansu with --authentication offers SCRAM and refuses unknown users.
        let broker = Tansu::start(true).await;
        Auth::Refused {
            config: fields(&[
                ("brokers", &broker.bootstrap()),
                ("topic", TOPIC),
                ("tls", "false"),
                ("sasl_mechanism", "scram-sha-256"),
            ]),
            credentials: fields(&[("username", "nobody"), ("password", "wrong")]),
            code: "auth_failed",
            mentions: &["credentials", "password", "username", "sasl"],
            server_says: None,
            keep: Box::new(broker),
        }
    }

    /// The bootstrap connection and the partition leader's (tansu advertises the same
    /// forwarder for both).
    fn connections(&self) -> usize {
        2
    }

    async fn forwarder(&self) -> Arc<Forwarder> {
        self.broker.fwd.clone()
    }

    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        // Without a partition key template the record key is the event id.
        assert_eq!(got.native["key"], sent.event_id);
        let ct = herald_testkit::signing::header(&got.headers, "content-type");
        assert_eq!(ct, "application/json");
    }
}

contract_tests!(suite, KafkaCase::new().await);

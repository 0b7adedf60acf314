//! `nats` in the Driver contract suite, against the machine's NATS with JetStream: a test
//! stream capturing the destination's subjects, read back by sequence.

use async_nats::jetstream;
use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::services::NATS;
use herald_testkit::{contract_tests, require, unique};

/// A JetStream stream on `<prefix>.>`.
pub struct Setup {
    pub js: jetstream::Context,
    pub stream: String,
    pub prefix: String,
}

impl Setup {
    pub async fn new() -> Setup {
        require("NATS", NATS);
        let client = async_nats::connect(NATS).await.expect("connect to NATS");
        let js = jetstream::new(client);
        let stream = unique("HERALD_TEST_");
        let prefix = unique("herald-test-");
        js.create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .expect("create a JetStream stream (is the server started with -js?)");
        Setup { js, stream, prefix }
    }

    /// Messages in the stream.
    pub async fn count(&self) -> usize {
        let mut s = self.js.get_stream(&self.stream).await.unwrap();
        s.info().await.unwrap().state.messages as usize
    }

    pub async fn cleanup(&self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

pub struct NatsCase {
    setup: Setup,
}

impl NatsCase {
    pub async fn new() -> NatsCase {
        NatsCase {
            setup: Setup::new().await,
        }
    }
}

impl Case for NatsCase {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn upstream(&self) -> String {
        NATS.into()
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[
                ("server_url", addr),
                ("subject", &format!("{}.{{topic}}", self.setup.prefix)),
            ]),
            Fields::new(),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        let n = self.setup.count().await;
        let stream = self.setup.js.get_stream(&self.setup.stream).await.unwrap();
        let mut out = Vec::new();
        for seq in 1..=n as u64 {
            let m = stream.get_raw_message(seq).await.unwrap();
            let headers: Vec<(String, String)> = m
                .headers
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect();
            let msg_id = headers
                .iter()
                .find(|(k, _)| k == "Nats-Msg-Id")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            out.push(Delivered {
                body: m.payload.to_vec(),
                headers,
                native: fields(&[("subject", m.subject.as_str()), ("msg_id", &msg_id)]),
            });
        }
        out
    }

    async fn bad_credentials(&self) -> Auth {
        // The shared server has no authentication: a private one with a user refuses.
        let private = super::private_nats();
        Auth::Refused {
            config: fields(&[("server_url", &private.addr)]),
            credentials: fields(&[("username", "herald"), ("password", "wrong")]),
            code: "authorization_violation",
            mentions: &["password", "credentials", "authorization"],
            server_says: None,
            keep: Box::new(private),
        }
    }

    /// async-nats keeps a publish for its reconnect when the connection drops, so an attempt
    /// in an outage usually ends waiting for the acknowledgement.
    fn outage_codes(&self) -> &'static [&'static str] {
        &["timeout", "connection_error"]
    }

    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        assert_eq!(
            got.native["subject"],
            format!("{}.{}", self.setup.prefix, sent.topic)
        );
        // JetStream deduplicates on the delivery id.
        assert_eq!(got.native["msg_id"], sent.delivery_id);
    }
}

contract_tests!(suite, NatsCase::new().await);

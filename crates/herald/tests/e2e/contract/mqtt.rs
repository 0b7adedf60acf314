//! `mqtt` in the Driver contract suite, against the machine's Mosquitto (MQTT 5): a subscriber
//! on `<prefix>/#` collects what arrives.

use std::sync::Arc;
use std::time::Duration;

use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::services::MQTT;
use herald_testkit::{contract_tests, require, unique};
use parking_lot::Mutex;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// A subscriber on `prefix/#` collecting what arrives.
pub struct Sub {
    pub got: Arc<Mutex<Vec<Publish>>>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to `prefix/#` on the machine's Mosquitto and waits for the SUBACK.
pub async fn subscribe(prefix: &str) -> Sub {
    require("Mosquitto", MQTT);
    let mut opts = MqttOptions::new(unique("herald-test-sub-"), "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let got: Arc<Mutex<Vec<Publish>>> = Arc::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sink = got.clone();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().push(p),
                Ok(_) => {}
                Err(e) => panic!("test subscriber failed: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("SUBACK from Mosquitto")
        .unwrap();
    Sub {
        got,
        _client: client,
        task,
    }
}

pub struct MqttCase {
    prefix: String,
    sub: Sub,
}

impl MqttCase {
    pub async fn new() -> MqttCase {
        let prefix = unique("herald-test-");
        let sub = subscribe(&prefix).await;
        MqttCase { prefix, sub }
    }
}

impl Case for MqttCase {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn upstream(&self) -> String {
        MQTT.into()
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[
                ("server_url", addr),
                ("topic", &format!("{}/{{topic}}", self.prefix)),
            ]),
            Fields::new(),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        self.sub
            .got
            .lock()
            .iter()
            .map(|p| {
                let props = p.properties.clone().unwrap_or_default();
                Delivered {
                    body: p.payload.to_vec(),
                    headers: props.user_properties.clone(),
                    native: fields(&[
                        ("topic", std::str::from_utf8(&p.topic).unwrap()),
                        ("qos", &format!("{:?}", p.qos)),
                        ("content_type", &props.content_type.unwrap_or_default()),
                    ]),
                }
            })
            .collect()
    }

    async fn bad_credentials(&self) -> Auth {
        // The shared broker allows anonymous clients; a private one checks passwords.
        let private = super::private_mosquitto();
        Auth::Refused {
            config: fields(&[("server_url", &private.addr)]),
            credentials: fields(&[("username", "herald"), ("password", "wrong")]),
            code: "not_authorized",
            mentions: &["password", "credentials", "authorized"],
            server_says: Some("NotAuthorized"),
            keep: Box::new(private),
        }
    }

    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        let n = &got.native;
        assert_eq!(n["topic"], format!("{}/{}", self.prefix, sent.topic));
        assert_eq!(n["qos"], "AtLeastOnce");
        assert_eq!(n["content_type"], "application/json");
    }
}

contract_tests!(suite, MqttCase::new().await);

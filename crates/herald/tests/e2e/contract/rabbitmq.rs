//! `rabbitmq` in the Driver contract suite, against the machine's RabbitMQ: a test exchange
//! with one exclusive queue bound to every routing key, read with lapin.

use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::services::RABBITMQ;
use herald_testkit::{contract_tests, require, unique};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use parking_lot::Mutex;

/// A test exchange with one exclusive queue bound to every routing key; the exchange is
/// deleted when dropped.
pub struct Setup {
    pub channel: Channel,
    _conn: Connection,
    pub exchange: String,
    pub queue: String,
}

impl Setup {
    pub async fn new() -> Setup {
        require("RabbitMQ", RABBITMQ);
        let conn = Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            ConnectionProperties::default(),
        )
        .await
        .expect("connect to RabbitMQ as guest");
        let channel = conn.create_channel().await.unwrap();
        let exchange = unique("herald-test-");
        declare_exchange(&channel, &exchange, true).await;
        let q = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = q.name().as_str().to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Setup {
            channel,
            _conn: conn,
            exchange,
            queue,
        }
    }

    /// Takes the next message off the queue.
    pub async fn get(&self) -> Option<lapin::message::BasicGetMessage> {
        self.channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    }

    pub async fn cleanup(&self) {
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

/// Declares topic exchange `name`.
pub async fn declare_exchange(channel: &Channel, name: &str, auto_delete: bool) {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// A message's string headers.
pub fn headers(m: &lapin::message::BasicGetMessage) -> Vec<(String, String)> {
    m.delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter_map(|(k, v)| match v {
                    AMQPValue::LongString(s) => Some((
                        k.as_str().to_string(),
                        String::from_utf8(s.as_bytes().to_vec()).unwrap(),
                    )),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The case's exchange is auto-deleted with its last binding (the exclusive queue) when the
/// case's connection closes.
pub struct RabbitCase {
    setup: Setup,
    got: Mutex<Vec<Delivered>>,
}

impl RabbitCase {
    pub async fn new() -> RabbitCase {
        RabbitCase {
            setup: Setup::new().await,
            got: Mutex::default(),
        }
    }
}

impl Case for RabbitCase {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn upstream(&self) -> String {
        RABBITMQ.into()
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[
                ("server_url", addr),
                ("exchange", &self.setup.exchange),
                ("routing_key", "herald.{topic}"),
            ]),
            fields(&[("username", "guest"), ("password", "guest")]),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        while let Some(m) = self.setup.get().await {
            let p = &m.delivery.properties;
            let opt = |v: Option<String>| v.unwrap_or_default();
            self.got.lock().push(Delivered {
                body: m.delivery.data.clone(),
                headers: headers(&m),
                native: fields(&[
                    ("routing_key", m.delivery.routing_key.as_str()),
                    (
                        "message_id",
                        &opt(p.message_id().as_ref().map(|s| s.to_string())),
                    ),
                    ("type", &opt(p.kind().as_ref().map(|s| s.to_string()))),
                    (
                        "content_type",
                        &opt(p.content_type().as_ref().map(|s| s.to_string())),
                    ),
                    (
                        "delivery_mode",
                        &opt(p.delivery_mode().map(|m| m.to_string())),
                    ),
                ]),
            });
        }
        self.got.lock().clone()
    }

    async fn bad_credentials(&self) -> Auth {
        let (config, _) = self.destination(RABBITMQ);
        Auth::Refused {
            config,
            credentials: fields(&[("username", "guest"), ("password", "wrong")]),
            code: "access_refused",
            mentions: &["password", "credentials", "login"],
            server_says: Some("ACCESS_REFUSED"),
            keep: Box::new(()),
        }
    }

    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        let n = &got.native;
        assert_eq!(n["routing_key"], format!("herald.{}", sent.topic));
        assert_eq!(n["message_id"], sent.event_id);
        assert_eq!(n["type"], sent.topic);
        assert_eq!(n["content_type"], "application/json");
        assert_eq!(n["delivery_mode"], "2", "persistent");
    }
}

contract_tests!(suite, RabbitCase::new().await);

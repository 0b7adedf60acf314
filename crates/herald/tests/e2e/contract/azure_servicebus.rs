//! `azure_servicebus` in the Driver contract suite, against the wire-faithful Service Bus
//! server of `herald_testkit::servicebus` (SAS tokens checked as Azure documents them).

use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::contract_tests;
use herald_testkit::servicebus::{KEY, QUEUE, ServiceBus, connection_string};

pub struct ServiceBusCase {
    bus: ServiceBus,
    port: u16,
}

impl ServiceBusCase {
    pub async fn new() -> ServiceBusCase {
        let bus = ServiceBus::default();
        let (_, port) = bus.start().await;
        ServiceBusCase { bus, port }
    }
}

impl Case for ServiceBusCase {
    fn kind(&self) -> &'static str {
        "azure_servicebus"
    }

    fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[("name", QUEUE), ("endpoint", &format!("http://{addr}"))]),
            fields(&[("connection_string", &connection_string(KEY))]),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        self.bus
            .accepted
            .lock()
            .iter()
            .map(|m| {
                let mut headers = Vec::new();
                let mut native = Fields::new();
                for (k, v) in &m.headers {
                    let v = v.to_str().unwrap_or_default();
                    // Custom properties are JSON strings; broker properties are one JSON object.
                    match serde_json::from_str::<String>(v) {
                        Ok(s) => headers.push((k.to_string(), s)),
                        Err(_) => {
                            native.insert(k.to_string(), v.to_string());
                        }
                    }
                }
                Delivered {
                    body: m.body.to_vec(),
                    headers,
                    native,
                }
            })
            .collect()
    }

    async fn bad_credentials(&self) -> Auth {
        let wrong = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode("another key")
        };
        Auth::Refused {
            config: fields(&[
                ("name", QUEUE),
                ("endpoint", &format!("http://{}", self.upstream())),
            ]),
            credentials: fields(&[("connection_string", &connection_string(&wrong))]),
            code: "auth_failed",
            mentions: &["connection string", "key", "credentials", "signature"],
            server_says: None,
            keep: Box::new(()),
        }
    }

    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        let props: serde_json::Value = serde_json::from_str(
            got.native
                .get("brokerproperties")
                .unwrap_or_else(|| panic!("no BrokerProperties: {:?}", got.native)),
        )
        .unwrap();
        assert_eq!(props["MessageId"], sent.event_id.as_str(), "{props}");
    }
}

contract_tests!(suite, ServiceBusCase::new().await);

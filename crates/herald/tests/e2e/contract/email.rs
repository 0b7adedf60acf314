//! `email` in the Driver contract suite, against a real SMTP server (aiosmtpd from PyPI,
//! `herald_testkit::servers::Smtp`): mails are parsed by Python's `email` package; the
//! delivered body is the `event.json` attachment (what the signature covers) and the headers
//! are the mail's.

use base64::Engine as _;
use herald_core::destination::OutboundMessage;
use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::contract_tests;
use herald_testkit::servers::{Smtp, mail_header};

pub struct EmailCase {
    smtp: Smtp,
}

impl EmailCase {
    pub fn new() -> EmailCase {
        EmailCase {
            smtp: Smtp::start(None),
        }
    }
}

/// Config of an email destination sending to `addr` (`host:port`) without TLS (the test
/// registry allows insecure targets, as `--dev` does).
pub fn config(addr: &str) -> Fields {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    fields(&[
        ("to", "ops@example.com, oncall@example.com"),
        ("from", "Herald <herald@example.com>"),
        ("smtp_host", host),
        ("smtp_port", port),
        ("tls", "none"),
    ])
}

impl Case for EmailCase {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn upstream(&self) -> String {
        self.smtp.addr()
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (config(addr), Fields::new())
    }

    async fn received(&self) -> Vec<Delivered> {
        self.smtp
            .messages()
            .into_iter()
            .map(|m| {
                let att = m["attachments"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["filename"] == "event.json"))
                    .unwrap_or_else(|| panic!("no event.json attachment in {m}"));
                let body = base64::engine::general_purpose::STANDARD
                    .decode(att["data_b64"].as_str().unwrap())
                    .unwrap();
                let headers = m["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h[0].as_str().unwrap().to_string(),
                            h[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                let rcpt: Vec<&str> = m["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                Delivered {
                    body,
                    headers,
                    native: fields(&[
                        ("subject", &mail_header(&m, "subject").unwrap_or_default()),
                        (
                            "message_id",
                            &mail_header(&m, "message-id").unwrap_or_default(),
                        ),
                        ("rcpt_tos", &rcpt.join(",")),
                        ("mail_from", m["mail_from"].as_str().unwrap_or_default()),
                        ("text", m["text"].as_str().unwrap_or_default()),
                    ]),
                }
            })
            .collect()
    }

    async fn bad_credentials(&self) -> Auth {
        let private = Smtp::start(Some(("herald", "right-password")));
        let mut credentials = Fields::new();
        credentials.insert("username".into(), "herald".into());
        credentials.insert("password".into(), "wrong-password".into());
        Auth::Refused {
            config: config(&private.addr()),
            credentials,
            code: "535",
            mentions: &["credentials.password", "username"],
            server_says: Some("Authentication credentials invalid"),
            keep: Box::new(private),
        }
    }

    fn check_native(&self, got: &Delivered, sent: &OutboundMessage) {
        assert_eq!(got.native["subject"], format!("[Herald] {}", sent.topic));
        assert_eq!(
            got.native["message_id"],
            format!("<{}@herald>", sent.delivery_id)
        );
        assert_eq!(got.native["rcpt_tos"], "ops@example.com,oncall@example.com");
        assert_eq!(got.native["mail_from"], "herald@example.com");
        assert!(
            got.native["text"]
                .contains(&format!("Event {} on topic {}", sent.event_id, sent.topic)),
            "{}",
            got.native["text"]
        );
    }

    /// Each delivery is one SMTP session (no pooling), so sequential deliveries open one
    /// connection each.
    fn connections(&self) -> usize {
        3
    }
}

contract_tests!(suite, EmailCase::new());

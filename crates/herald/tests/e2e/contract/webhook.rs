//! `webhook` in the Driver contract suite, against a local HTTP receiver.

use herald_testkit::contract::{Auth, Case, Delivered, Fields, fields};
use herald_testkit::{Receiver, contract_tests};

/// A receiver on a free port; destinations post to `/hook`.
pub struct WebhookCase {
    rx: Receiver,
}

impl WebhookCase {
    pub async fn new() -> WebhookCase {
        WebhookCase {
            rx: Receiver::start().await,
        }
    }
}

impl Case for WebhookCase {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn upstream(&self) -> String {
        self.rx.addr.to_string()
    }

    fn destination(&self, addr: &str) -> (Fields, Fields) {
        (
            fields(&[("url", &format!("http://{addr}/hook"))]),
            Fields::new(),
        )
    }

    async fn received(&self) -> Vec<Delivered> {
        self.rx
            .got
            .lock()
            .iter()
            .map(|r| Delivered {
                body: r.body.to_vec(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                    .collect(),
                native: fields(&[("path", &r.path)]),
            })
            .collect()
    }

    async fn bad_credentials(&self) -> Auth {
        Auth::NotApplicable(
            "a webhook destination has no credentials of its own (its secret only signs); \
             how receivers' 4xx answers are classified is tested in e2e::http_outcomes and e2e::api",
        )
    }

    fn check_native(&self, got: &Delivered, _sent: &herald_core::destination::OutboundMessage) {
        assert_eq!(got.native["path"], "/hook");
        let ct = herald_testkit::signing::header(&got.headers, "content-type");
        assert!(ct.starts_with("application/json"), "{ct}");
    }
}

contract_tests!(suite, WebhookCase::new().await);

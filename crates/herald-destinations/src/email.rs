//! The `email` type: sends each event as one e-mail over SMTP (lettre, on tokio with rustls
//! and the aws-lc-rs provider, like every other TLS client in Herald).
//!
//! Fields (Herald's own; the Outpost contract has no e-mail type): `to` (one address or
//! several, comma-separated), `from`, `subject_template` (`{topic}`-style placeholders or
//! JMESPath over the message; default `[Herald] {topic}`), `smtp_host`, `smtp_port` (default
//! 587 with `starttls`, 465 with `tls`, 25 with `none`), `tls` (`starttls` | `tls` | `none`;
//! `none` only where the target policy allows insecure transports, i.e. `--dev` or
//! `security.allow_http`); credentials `username` and `password` (SMTP AUTH, both or
//! neither). The signing settings are the common ones (`signing_secret`, generated when
//! omitted), as on every other signing type.
//!
//! Message mapping: a `multipart/mixed` mail. Its first part is plain text: for operator events
//! (`alert.*`, `attempt.*`, `tenant.subscription.updated`, `destination.expir*`) what happened,
//! which tenant and destination, and what to do; for any other event the topic, the event id
//! and the time; then the event's JSON, pretty-printed, for reading. The second part is the
//! attachment `event.json` (`application/json`) holding the event's body byte for byte, which
//! the signature covers. Every header the engine computed (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, `x-herald-topic`, `x-herald-<metadata key>`) is a mail header of the
//! same name; `Message-ID` is derived from the delivery id (a retry sends the same id, so mail
//! clients show one message).
//!
//! Tenants may create e-mail destinations only when the operator allows it
//! (`destinations.email_for_tenants`, off by default): otherwise the type serves operator
//! destinations alone.
//!
//! Classification: SMTP 4xx replies are retried, 5xx replies are permanent (the code is the
//! attempt's code, e.g. `451`, `550`); connection failures and timeouts are retried; an
//! address the target policy refuses is permanent. One delivery opens one SMTP connection.

// The helpers pass `Driver::deliver`'s own error type along; boxing it would only unbox it.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use async_trait::async_trait;
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials as SmtpCredentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::DestinationsConfig;
use crate::support::address::resolve;
use crate::support::template::Template;
use crate::target::TargetPolicy;

const KIND: &str = "email";

/// The email destination type.
pub struct Email {
    policy: Arc<TargetPolicy>,
    for_tenants: bool,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (refused if the server does not offer it).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No TLS: development only (refused unless the target policy allows insecure targets).
    None,
}

impl TlsMode {
    fn default_port(self) -> u16 {
        match self {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }
}

/// `config` of an email destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// To
    ///
    /// Recipient address, or several separated by commas, e.g. `ops@example.com, oncall@example.com`.
    pub to: String,
    /// From
    ///
    /// Sender address, e.g. `Herald <herald@example.com>`.
    pub from: String,
    /// Subject
    ///
    /// Subject line; `{topic}` and `{event_id}` are replaced (any `{JMESPath}` over the
    /// message works too). Default `[Herald] {topic}`.
    pub subject_template: Option<Template>,
    /// SMTP host
    ///
    /// Host name or IP address of the SMTP server.
    pub smtp_host: String,
    /// SMTP port
    ///
    /// Default 587 with starttls, 465 with tls, 25 with none.
    #[schemars(range(min = 1, max = 65535))]
    pub smtp_port: Option<u16>,
    /// TLS
    ///
    /// `starttls` (default), `tls` (SMTPS) or `none` (development only).
    #[serde(default)]
    pub tls: TlsMode,
}

/// `credentials` of an email destination.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Username
    ///
    /// SMTP AUTH user; empty to send without authentication.
    pub username: Option<String>,
    /// Password
    ///
    /// SMTP AUTH password.
    pub password: Option<Secret>,
}

impl Email {
    /// Builds the type; the target policy decides which SMTP servers may be reached and
    /// whether `tls: none` is allowed.
    pub fn new(cfg: &DestinationsConfig) -> Self {
        Self {
            policy: Arc::new(cfg.target_policy.clone()),
            for_tenants: cfg.email_for_tenants,
        }
    }
}

fn mailboxes(raw: &str) -> Result<Vec<Mailbox>, String> {
    let list: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err("needs at least one address".into());
    }
    list.into_iter()
        .map(|a| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("{a:?} is not an e-mail address ({e})"))
        })
        .collect()
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><rect x="3" y="5" width="18" height="14" rx="2"/><path d="m3 7 9 6 9-6"/></svg>"#;

impl Spec for Email {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "Email",
            description: "Send each event as an e-mail over SMTP; operator alerts read as plain text.",
            icon: ICON,
            instructions: "Enter the recipients, the sender, and your SMTP server. Each event becomes one plain-text \
                e-mail: what happened (for operator alerts: which tenant and destination, and what to do), then the event's JSON.",
        }
    }

    fn tenant_usable(&self) -> bool {
        self.for_tenants
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = mailboxes(&config.to) {
            errs.push(FieldError::new("config.to", e));
        }
        match mailboxes(&config.from) {
            Ok(m) if m.len() == 1 => {}
            Ok(_) => errs.push(FieldError::new("config.from", "must be one address")),
            Err(e) => errs.push(FieldError::new("config.from", e)),
        }
        let host = config.smtp_host.trim();
        if host.is_empty() || host.contains([':', '/', ' ', '@']) && !host.starts_with('[') {
            errs.push(FieldError::new(
                "config.smtp_host",
                "must be a host name or IP address (the port goes in smtp_port)",
            ));
        } else if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
            && let Err(b) = self.policy.check_ip(ip)
        {
            errs.push(FieldError::new("config.smtp_host", b.0));
        }
        if config.smtp_port == Some(0) {
            errs.push(FieldError::new("config.smtp_port", "must be 1–65535"));
        }
        if config.tls == TlsMode::None && !self.policy.allow_http {
            errs.push(FieldError::new(
                "config.tls",
                "none (no TLS) is only allowed in development (--dev or security.allow_http); use starttls or tls",
            ));
        }
        let user = credentials.username.as_ref().is_some_and(|u| !u.is_empty());
        let pass = credentials.password.as_ref().is_some_and(|p| !p.is_empty());
        if user != pass {
            let (field, what) = if user {
                ("credentials.password", "is required with a username")
            } else {
                ("credentials.username", "is required with a password")
            };
            errs.push(FieldError::new(field, what));
        }
        errs
    }

    fn build(
        &self,
        _id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        let to = mailboxes(&config.to).map_err(|e| FieldError::new("config.to", e))?;
        let from = mailboxes(&config.from)
            .map_err(|e| FieldError::new("config.from", e))?
            .remove(0);
        let subject = match config.subject_template {
            Some(t) => t,
            None => Template::placeholders("[Herald] {topic}")
                .map_err(|e| FieldError::new("config.subject_template", e))?,
        };
        let auth = match (credentials.username, credentials.password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, p)),
            _ => None,
        };
        Ok(Arc::new(EmailDriver {
            port: config.smtp_port.unwrap_or(config.tls.default_port()),
            host: config.smtp_host.trim().trim_matches(['[', ']']).to_string(),
            tls: config.tls,
            to,
            from,
            subject,
            auth,
            policy: self.policy.clone(),
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        (config.to.clone(), None)
    }
}

struct EmailDriver {
    host: String,
    port: u16,
    tls: TlsMode,
    to: Vec<Mailbox>,
    from: Mailbox,
    subject: Template,
    auth: Option<(String, Secret)>,
    policy: Arc<TargetPolicy>,
}

/// Maps an SMTP failure to retry or permanent (module docs).
fn classify(e: &lettre::transport::smtp::Error) -> DeliveryError {
    let text = crate::support::errors::root_message(e);
    if let Some(code) = e.status() {
        let code = code.to_string();
        if code.starts_with("53") {
            // 530 authentication required, 534/535 credentials refused.
            return DeliveryError::permanent(
                code,
                format!(
                    "the SMTP server refused the login; check credentials.username and credentials.password: {text}"
                ),
            );
        }
        if e.is_permanent() {
            return DeliveryError::permanent(
                code,
                format!("the SMTP server refused the message: {text}"),
            );
        }
        return DeliveryError::retry(
            code,
            format!("the SMTP server deferred the message: {text}"),
        );
    }
    if e.is_timeout() {
        return DeliveryError::retry("timeout", text);
    }
    if e.is_tls() {
        return DeliveryError::retry("tls_error", text);
    }
    DeliveryError::retry("connection_error", text)
}

impl EmailDriver {
    fn mail(&self, msg: &OutboundMessage) -> Result<Message, DeliveryError> {
        let subject = self
            .subject
            .render(msg)
            .map_err(|e| DeliveryError::permanent("invalid_subject", e))?
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| format!("[Herald] {}", msg.topic));
        let data: Value = serde_json::from_slice(&msg.body).unwrap_or(Value::Null);
        let mut text = describe(&msg.topic, &msg.event_id, msg.time, &data);
        text.push_str(
            "\n\n-- event JSON (also attached as event.json, which the signature covers) --\n",
        );
        text.push_str(&serde_json::to_string_pretty(&data).unwrap_or_default());
        text.push('\n');
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject.replace(['\r', '\n'], " "))
            .message_id(Some(format!("<{}@herald>", msg.delivery_id)));
        let to: Mailboxes = self.to.iter().cloned().collect();
        for m in to {
            b = b.to(m);
        }
        let json_type = ContentType::parse("application/json")
            .map_err(|e| DeliveryError::permanent("invalid_message", e.to_string()))?;
        let body = MultiPart::mixed()
            .singlepart(SinglePart::plain(text))
            .singlepart(
                Attachment::new("event.json".to_string()).body(msg.body.to_vec(), json_type),
            );
        let built = b
            .multipart(body)
            .map_err(|e| DeliveryError::permanent("invalid_message", e.to_string()))?;
        Ok(with_headers(built, msg))
    }

    fn transport(
        &self,
        ip: std::net::IpAddr,
        timeout: std::time::Duration,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
        // Connect to the address the policy checked; TLS still verifies the configured name.
        let params = || {
            TlsParameters::new(self.host.clone())
                .map_err(|e| DeliveryError::permanent("tls_error", e.to_string()))
        };
        let tls = match self.tls {
            TlsMode::Starttls => Tls::Required(params()?),
            TlsMode::Tls => Tls::Wrapper(params()?),
            TlsMode::None => Tls::None,
        };
        let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ip.to_string())
            .port(self.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some((u, p)) = &self.auth {
            t = t.credentials(SmtpCredentials::new(u.clone(), p.expose().to_string()));
        }
        Ok(t.build())
    }
}

/// Adds the engine's headers (id, timestamp, signature, topic, metadata) as mail headers of
/// the same names; a name that is not a valid mail header name is left out.
fn with_headers(mut m: Message, msg: &OutboundMessage) -> Message {
    use lettre::message::header::{HeaderName, HeaderValue};
    let headers = m.headers_mut();
    for (name, value) in &msg.headers {
        if let Ok(n) = HeaderName::new_from_ascii(name.clone()) {
            headers.insert_raw(HeaderValue::new(n, value.replace(['\r', '\n'], " ")));
        }
    }
    m
}

#[async_trait]
impl Driver for EmailDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let mail = self.mail(msg)?;
        let addr = resolve(&self.policy, &self.host, self.port).await?;
        let transport = self.transport(addr.ip(), msg.timeout)?;
        let sent = tokio::time::timeout(msg.timeout, transport.send(mail))
            .await
            .map_err(|_| {
                DeliveryError::retry(
                    "timeout",
                    format!(
                        "no answer from {}:{} within {} ms",
                        self.host,
                        self.port,
                        msg.timeout.as_millis()
                    ),
                )
            })?;
        match sent {
            Ok(r) => Ok(Receipt {
                code: r.code().to_string(),
                response: Some(json!({
                    "smtp_code": r.code().to_string(),
                    "message": r.message().collect::<Vec<_>>().join("\n"),
                    "recipients": self.to.len(),
                })),
            }),
            Err(e) => Err(classify(&e)),
        }
    }
}

/// The readable part of a mail: for operator events what happened, who is concerned and what
/// to do; for other events what the message is.
pub fn describe(topic: &str, event_id: &str, time: jiff::Timestamp, body: &Value) -> String {
    let d = &body["data"];
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let tenant = s(&d["tenant_id"]);
    let dest = &d["destination"];
    let dest_line = || {
        format!(
            "Destination: {} (type {}, tenant {tenant})",
            s(&dest["id"]),
            s(&dest["type"])
        )
    };
    let api = |path: String| {
        format!(
            "/api/v1/tenants/{tenant}/destinations/{}{path}",
            s(&dest["id"])
        )
    };
    let mut out = match topic {
        "alert.destination.consecutive_failure" => format!(
            "A destination keeps failing: {} consecutive failed attempts, {} % of the {} after which it is disabled{}.\n\n{}\n\n\
             What to do: check that the receiver is reachable and answers with a 2xx status; its recent attempts and their \
             errors are at GET {}.",
            d["consecutive_failures"],
            d["progress"],
            d["max_consecutive_failures"],
            if d["will_disable"] == true {
                " (it is being disabled now)"
            } else {
                ""
            },
            dest_line(),
            api("/attempts".into()),
        ),
        "alert.destination.disabled" => format!(
            "A destination was disabled automatically: {}.\n\n{}\n\n\
             It receives no new events until it is enabled again, and its pending deliveries were cancelled.\n\
             What to do: fix the receiver, then enable the destination (PUT {}) and replay what it missed if needed (POST {}).",
            s(&d["reason"]),
            dest_line(),
            api("/enable".into()),
            api("/replay".into()),
        ),
        "alert.attempt.exhausted_retries" => format!(
            "An event could not be delivered: all retries are used up.\n\n{}\nEvent: {} (topic {})\nLast attempt: number {}, result {}\n\n\
             What to do: fix the receiver, then retry the event (POST /api/v1/retry with this event id and destination id).",
            dest_line(),
            s(&d["event"]["id"]),
            s(&d["event"]["topic"]),
            d["attempt"]["attempt_number"],
            s(&d["attempt"]["code"]),
        ),
        "attempt.success" | "attempt.failed" => format!(
            "Delivery attempt {} of event {} (topic {}) to destination {} of tenant {tenant}: {} ({}).",
            d["attempt"]["attempt_number"],
            s(&d["event_id"]),
            s(&d["topic"]),
            s(&d["destination_id"]),
            s(&d["attempt"]["status"]),
            s(&d["attempt"]["code"]),
        ),
        "tenant.subscription.updated" => format!(
            "Tenant {tenant} changed its subscription: {} destinations (was {}), topics {} (were {}).",
            d["destinations_count"],
            d["previous_destinations_count"],
            d["topics"],
            d["previous_topics"],
        ),
        "destination.expiring" | "destination.expired" => format!(
            "{}\n\n{}\n\nWhat to do: renew the destination before it expires, or create a new one.",
            if topic == "destination.expired" {
                format!("A destination expired at {}.", s(&d["expires_at"]))
            } else {
                format!("A destination expires at {}.", s(&d["expires_at"]))
            },
            dest_line(),
        ),
        _ => format!("Event {event_id} on topic {topic}."),
    };
    out.push_str(&format!("\n\nEvent id: {event_id}\nTime: {time}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_one_by_one() {
        assert_eq!(
            mailboxes("a@example.com, B <b@example.com>").unwrap().len(),
            2
        );
        assert!(mailboxes(" , ").unwrap_err().contains("at least one"));
        assert!(
            mailboxes("a@example.com, nope")
                .unwrap_err()
                .contains("\"nope\"")
        );
    }

    #[test]
    fn an_alert_reads_as_what_happened_who_and_what_to_do() {
        let body = json!({
            "id": "opr_1", "topic": "alert.destination.disabled", "time": "2026-12-01T10:00:00Z",
            "tenant_id": "acme",
            "data": {"tenant_id": "acme", "reason": "too many consecutive failures",
                     "destination": {"id": "des_1", "type": "webhook", "tenant_id": "acme"}},
        });
        let t = describe(
            "alert.destination.disabled",
            "opr_1",
            jiff::Timestamp::UNIX_EPOCH,
            &body,
        );
        assert!(
            t.contains("disabled automatically: too many consecutive failures"),
            "{t}"
        );
        assert!(
            t.contains("Destination: des_1 (type webhook, tenant acme)"),
            "{t}"
        );
        assert!(
            t.contains("PUT /api/v1/tenants/acme/destinations/des_1/enable"),
            "{t}"
        );
    }
}

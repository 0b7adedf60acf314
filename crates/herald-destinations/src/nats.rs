//! The `nats` type: publishes each event to a NATS JetStream subject and waits for the
//! stream's publish acknowledgement, so a successful attempt means a stream stored it.
//!
//! Fields (the Outpost contract does not define this type): `server_url` (`host:port`),
//! `subject` (a template, default `{topic}`), `tls`, `signing_mode`; credentials `username` +
//! `password` or `token`, and an optional signing `secret`.
//!
//! Message mapping: the body is the event data (JSON); the engine's headers (event id,
//! timestamp, topic, metadata, signature) become NATS message headers, plus
//! `Content-Type: application/json` and `Nats-Msg-Id` set to the delivery id, so JetStream's
//! duplicate window drops a retry whose first try was stored but not acknowledged in time.
//!
//! Connections: one client per destination, opened on the first attempt. The client
//! reconnects by itself after a broker restart (publishes wait for the reconnection until the
//! attempt's deadline), giving up after [`MAX_RECONNECTS`] tries (about two minutes) so a
//! client whose destination is gone does not retry forever in the background. A client that
//! could not connect, gave up, or failed a publish for any reason other than a timeout is not
//! kept: the next attempt opens a new one.
//!
//! Classification: refused connections, timeouts, "no responders" (no stream captures the
//! subject, or the stream's leader is being elected), and other JetStream errors are retried;
//! an authorization violation at connect, a subject that is not a valid NATS subject and a
//! message above the server's maximum payload are permanent.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{ConnectErrorKind, ConnectOptions, HeaderMap};
use async_trait::async_trait;
use herald_core::Destination;
use herald_core::destination::{
    DeliveryError, DestinationType, Driver, FieldError, OutboundMessage, Receipt, TypeSpec,
};
use serde_json::json;

use crate::broker::{self, Template, field, with_default};
use crate::target::TargetPolicy;

const DEFAULT_PORT: u16 = 4222;
const DEFAULT_SUBJECT: &str = "{topic}";
/// Reconnection tries of an established client before it gives up (the client waits up to
/// 4 s between tries).
pub const MAX_RECONNECTS: usize = 30;

/// The nats destination type.
pub struct NatsType {
    spec: TypeSpec,
    policy: Arc<TargetPolicy>,
}

impl NatsType {
    /// Builds the type; `policy` decides which server addresses may be reached.
    pub fn new(policy: TargetPolicy) -> Self {
        let spec = TypeSpec {
            kind: "nats".into(),
            label: "NATS JetStream".into(),
            description: "Publish events to a NATS JetStream subject and wait for the stream's acknowledgement.".into(),
            icon: ICON.into(),
            instructions: "Enter the NATS server address and the subject template (default: the event topic). \
                A JetStream stream must capture the subject; attempts fail and are retried until one does."
                .into(),
            config_fields: vec![
                broker::server_field("NATS", "localhost:4222"),
                with_default(
                    field(
                        "subject",
                        "Subject",
                        "Subject template; `{topic}` and `{event_id}` are replaced, e.g. `events.{topic}`. Default `{topic}`.",
                        false,
                        false,
                    ),
                    DEFAULT_SUBJECT,
                ),
                broker::bool_field(
                    "tls",
                    "TLS",
                    "Whether to require a TLS connection. Defaults to \"false\".",
                    "false",
                ),
                broker::signing_mode_field(),
            ],
            credential_fields: vec![
                field("username", "Username", "NATS user (with password).", false, false),
                field("password", "Password", "NATS password.", false, true),
                field("token", "Token", "NATS authentication token (instead of user and password).", false, true),
                broker::secret_field(),
            ],
        };
        Self {
            spec,
            policy: Arc::new(policy),
        }
    }
}

const ICON: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M3 3h18v14h-7l-5 4v-4H3z"/><path d="M8 7v6l8-6v6"/></svg>"#;

/// Why a rendered subject cannot be published to, if it cannot.
fn subject_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("the subject is empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("subject {s:?} contains whitespace"));
    }
    if s.split('.').any(|t| t.is_empty()) {
        return Some(format!("subject {s:?} has an empty token"));
    }
    if s.split('.').any(|t| t == "*" || t == ">") {
        return Some(format!(
            "subject {s:?} contains a wildcard; publish subjects cannot"
        ));
    }
    None
}

impl DestinationType for NatsType {
    fn spec(&self) -> &TypeSpec {
        &self.spec
    }

    fn validate(
        &self,
        config: &BTreeMap<String, String>,
        credentials: &BTreeMap<String, String>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        broker::validate_common(&self.policy, config, credentials, &["tls"], &mut errs);
        match broker::config_template(config, "subject", DEFAULT_SUBJECT) {
            Err(e) => errs.push(e),
            Ok(t) => {
                // A literal subject must be valid as is; with placeholders, the literal parts
                // must not break it (whitespace, wildcards).
                let probe = if t.is_literal() {
                    t.literal_text()
                } else {
                    t.literal_text().replace("..", ".x.")
                };
                let problem = if t.is_literal() {
                    subject_problem(&probe)
                } else {
                    probe
                        .chars()
                        .any(|c| c.is_whitespace() || c == '*' || c == '>')
                        .then(|| "must not contain whitespace or wildcards (* >)".to_string())
                };
                if let Some(p) = problem {
                    errs.push(FieldError::new("config.subject", p));
                }
            }
        }
        let has = |k: &str| credentials.get(k).is_some_and(|v| !v.is_empty());
        if has("token") && (has("username") || has("password")) {
            errs.push(FieldError::new(
                "credentials.token",
                "use either a token or a username and password, not both",
            ));
        }
        if has("username") != has("password") {
            errs.push(FieldError::new(
                if has("username") {
                    "credentials.password"
                } else {
                    "credentials.username"
                },
                "username and password go together",
            ));
        }
        errs
    }

    fn build(&self, d: &Destination) -> Result<Arc<dyn Driver>, FieldError> {
        let raw = d.config.get("server_url").map_or("", String::as_str);
        let (host, port) = broker::parse_server(raw, DEFAULT_PORT)
            .map_err(|e| FieldError::new("config.server_url", e))?;
        let cred = |k: &str| d.credentials.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(Arc::new(NatsDriver {
            host,
            port,
            tls: broker::config_bool(&d.config, "tls", false),
            subject: broker::config_template(&d.config, "subject", DEFAULT_SUBJECT)?,
            user: cred("username").zip(cred("password")),
            token: cred("token"),
            policy: self.policy.clone(),
            name: format!("herald destination {}", d.id),
            live: tokio::sync::Mutex::new(None),
        }))
    }

    fn target(&self, d: &Destination) -> (String, Option<String>) {
        let server = d.config.get("server_url").cloned().unwrap_or_default();
        let subject = d
            .config
            .get("subject")
            .filter(|s| !s.is_empty())
            .map_or(DEFAULT_SUBJECT, String::as_str);
        (format!("{server} {subject}"), None)
    }
}

struct NatsDriver {
    host: String,
    port: u16,
    tls: bool,
    subject: Template,
    user: Option<(String, String)>,
    token: Option<String>,
    policy: Arc<TargetPolicy>,
    name: String,
    live: tokio::sync::Mutex<Option<jetstream::Context>>,
}

impl NatsDriver {
    async fn context(
        &self,
        timeout: std::time::Duration,
    ) -> Result<jetstream::Context, DeliveryError> {
        let mut live = self.live.lock().await;
        if let Some(js) = live.as_ref() {
            return Ok(js.clone());
        }
        let addr = broker::resolve(&self.policy, &self.host, self.port).await?;
        let mut opts = ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(timeout)
            .ignore_discovered_servers()
            .max_reconnects(MAX_RECONNECTS)
            .require_tls(self.tls);
        if let Some((u, p)) = &self.user {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &self.token {
            opts = opts.token(t.clone());
        }
        // With TLS the certificate is checked against the configured name (resolved and
        // checked above); without it, connect to the checked address itself.
        let url = if self.tls {
            format!("tls://{}:{}", self.host, self.port)
        } else {
            format!("nats://{addr}")
        };
        let client = opts.connect(url).await.map_err(|e| {
            let text = broker::root_message(&e);
            match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    DeliveryError::permanent("authorization_violation", text)
                }
                ConnectErrorKind::TimedOut => DeliveryError::retry("timeout", text),
                ConnectErrorKind::Tls => DeliveryError::retry("tls_error", text),
                _ => DeliveryError::retry("connection_error", text),
            }
        })?;
        let mut js = jetstream::new(client);
        js.set_timeout(timeout);
        *live = Some(js.clone());
        Ok(js)
    }

    fn headers(msg: &OutboundMessage) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &msg.headers {
            h.insert(k.as_str(), v.as_str());
        }
        h.insert("Content-Type", "application/json");
        h.insert("Nats-Msg-Id", msg.delivery_id.as_str());
        h
    }
}

fn publish_error(e: &jetstream::context::PublishError) -> DeliveryError {
    let text = broker::root_message(e);
    match e.kind() {
        PublishErrorKind::StreamNotFound => DeliveryError::retry(
            "no_stream",
            format!("{text} (no responders: no JetStream stream captures this subject)"),
        ),
        PublishErrorKind::TimedOut => DeliveryError::retry("timeout", text),
        PublishErrorKind::BrokenPipe => DeliveryError::retry("connection_error", text),
        PublishErrorKind::MaxPayloadExceeded => DeliveryError::permanent("payload_too_large", text),
        _ => DeliveryError::retry("jetstream_error", text),
    }
}

#[async_trait]
impl Driver for NatsDriver {
    async fn deliver(&self, msg: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let subject = self.subject.render(msg);
        if let Some(p) = subject_problem(&subject) {
            return Err(DeliveryError::permanent("invalid_subject", p));
        }
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let js =
            broker::within(msg.timeout, "connecting to NATS", self.context(msg.timeout)).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = broker::within(left, "waiting for the JetStream acknowledgement", async {
            let ack = js
                .publish_with_headers(
                    subject.clone(),
                    Self::headers(msg),
                    msg.body.to_vec().into(),
                )
                .await
                .map_err(|e| publish_error(&e))?
                .await
                .map_err(|e| publish_error(&e))?;
            Ok(Receipt {
                code: "ack".into(),
                response: Some(json!({
                    "subject": subject,
                    "stream": ack.stream,
                    "sequence": ack.sequence,
                    "duplicate": ack.duplicate,
                })),
            })
        })
        .await;
        if let Err(e) = &result
            && !matches!(
                e.code.as_str(),
                "timeout" | "no_stream" | "payload_too_large"
            )
        {
            // Possibly a client that gave up reconnecting: start afresh next time.
            *self.live.lock().await = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert!(subject_problem("events.user.created").is_none());
        assert!(subject_problem("").is_some());
        assert!(subject_problem("a..b").is_some());
        assert!(subject_problem("a.*").is_some());
        assert!(subject_problem("a b").is_some());
    }

    #[test]
    fn validation_names_fields() {
        let t = NatsType::new(TargetPolicy::default());
        let c = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let errs = t.validate(
            &c(&[("server_url", "nats.example:4222"), ("subject", "ev.>")]),
            &c(&[("token", "t"), ("username", "u")]),
        );
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "config.subject",
                "credentials.token",
                "credentials.password"
            ]
        );
        assert!(
            t.validate(
                &c(&[
                    ("server_url", "nats.example"),
                    ("subject", "events.{topic}")
                ]),
                &c(&[])
            )
            .is_empty()
        );
    }
}

//! The `nats` type: publishes each event to a NATS JetStream subject and waits for the
//! stream's publish acknowledgement, so a successful attempt means a stream stored it.
//!
//! Fields (the Outpost contract does not define this type): `server_url` (`host:port`),
//! `subject` (a template, default `{topic}`), `tls`; credentials `username` + `password` or
//! `token`. The signing settings (`signing_mode`, `signing_secret`, generated when omitted)
//! are the common ones every signing type gets from [`herald_core::spec::Typed`].
//!
//! Message mapping: the body is the event data (JSON); the engine's headers (event id,
//! timestamp, topic, metadata, signature) become NATS message headers, plus
//! `Content-Type: application/json` and `Nats-Msg-Id` set to the delivery id, so JetStream's
//! duplicate window drops a retry whose first try was stored but not acknowledged in time.
//!
//! Connections: one client per destination, opened on the first attempt, to the address
//! [`resolve`] checked against the target policy (also when it reconnects: the client is
//! given that address, never the name). With `tls`, the server's certificate is verified
//! against the configured host name ([`verifying_for`]); no SNI is sent. The client
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

use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{ConnectErrorKind, ConnectOptions, HeaderMap};
use async_trait::async_trait;
use herald_core::Secret;
use herald_core::destination::{DeliveryError, Driver, FieldError, OutboundMessage, Receipt};
use herald_core::spec::{About, Spec};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::DestinationsConfig;
use crate::support::address::{ServerAddress, resolve, within};
use crate::support::errors::root_message;
use crate::support::template::Template;
use crate::support::tls::verifying_for;
use crate::target::TargetPolicy;

const KIND: &str = "nats";
const DEFAULT_PORT: u16 = 4222;
/// Reconnection tries of an established client before it gives up (the client waits up to
/// 4 s between tries).
pub const MAX_RECONNECTS: usize = 30;

/// The nats destination type.
pub struct Nats {
    policy: Arc<TargetPolicy>,
}

/// `config` of a nats destination.
#[derive(Deserialize, JsonSchema)]
pub struct Config {
    /// Server address
    ///
    /// NATS server address (host:port), e.g. localhost:4222.
    pub server_url: ServerAddress,
    /// Subject
    ///
    /// Subject template; `{topic}` and `{event_id}` are replaced (any `{JMESPath}` over the
    /// message works too), e.g. `events.{topic}`. Default `{topic}`.
    #[serde(default = "default_subject")]
    pub subject: Template,
    /// TLS
    ///
    /// Whether to require a TLS connection. Defaults to false.
    #[serde(default)]
    pub tls: bool,
}

/// `credentials` of a nats destination: a user and password, or a token, or neither.
#[derive(Deserialize, JsonSchema)]
pub struct Credentials {
    /// Username
    ///
    /// NATS user (with password).
    pub username: Option<String>,
    /// Password
    ///
    /// NATS password.
    pub password: Option<Secret>,
    /// Token
    ///
    /// NATS authentication token (instead of user and password).
    pub token: Option<Secret>,
}

fn default_subject() -> Template {
    // A constant template: parsing cannot fail.
    Template::placeholders("{topic}").unwrap_or_else(|_| unreachable!())
}

impl Nats {
    /// Builds the type; the target policy decides which server addresses may be reached.
    pub fn new(cfg: &DestinationsConfig) -> Self {
        Self {
            policy: Arc::new(cfg.target_policy.clone()),
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

impl Spec for Nats {
    type Config = Config;
    type Credentials = Credentials;

    fn about(&self) -> About {
        About {
            kind: KIND,
            label: "NATS JetStream",
            description: "Publish events to a NATS JetStream subject and wait for the stream's acknowledgement.",
            icon: ICON,
            instructions: "Enter the NATS server address and the subject template (default: the event topic). \
                A JetStream stream must capture the subject; attempts fail and are retried until one does.",
        }
    }

    fn check(&self, config: &Config, credentials: &Credentials) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(e) = config.server_url.check(&self.policy, "config.server_url") {
            errs.push(e);
        }
        // A literal subject must be valid as is; with placeholders, the literal parts must
        // not break it (whitespace, wildcards).
        let t = &config.subject;
        let problem = if t.is_literal() {
            subject_problem(&t.literal_text())
        } else {
            t.literal_text()
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
                .then(|| "must not contain whitespace or wildcards (* >)".to_string())
        };
        if let Some(p) = problem {
            errs.push(FieldError::new("config.subject", p));
        }
        let user = credentials.username.as_ref().is_some_and(|u| !u.is_empty());
        let password = credentials.password.as_ref().is_some_and(|p| !p.is_empty());
        let token = credentials.token.as_ref().is_some_and(|t| !t.is_empty());
        if token && (user || password) {
            errs.push(FieldError::new(
                "credentials.token",
                "use either a token or a username and password, not both",
            ));
        }
        if user != password {
            errs.push(FieldError::new(
                if user {
                    "credentials.password"
                } else {
                    "credentials.username"
                },
                "username and password go together",
            ));
        }
        errs
    }

    fn build(
        &self,
        id: &str,
        config: Config,
        credentials: Credentials,
    ) -> Result<Arc<dyn Driver>, FieldError> {
        Ok(Arc::new(NatsDriver {
            port: config.server_url.port_or(DEFAULT_PORT),
            host: config.server_url.host,
            tls: config.tls,
            subject: config.subject,
            user: credentials.username.zip(credentials.password),
            token: credentials.token,
            policy: self.policy.clone(),
            name: format!("herald destination {id}"),
            live: tokio::sync::Mutex::new(None),
        }))
    }

    fn target(&self, config: &Config) -> (String, Option<String>) {
        (
            format!("{} {}", config.server_url, config.subject.source()),
            None,
        )
    }
}

struct NatsDriver {
    host: String,
    port: u16,
    tls: bool,
    subject: Template,
    user: Option<(String, Secret)>,
    token: Option<Secret>,
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
        let addr = resolve(&self.policy, &self.host, self.port).await?;
        let mut opts = ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(timeout)
            .ignore_discovered_servers()
            .max_reconnects(MAX_RECONNECTS)
            .require_tls(self.tls);
        if let Some((u, p)) = &self.user {
            opts = opts.user_and_password(u.clone(), p.expose().to_string());
        }
        if let Some(t) = &self.token {
            opts = opts.token(t.expose().to_string());
        }
        // Always the checked address, so neither the first connection nor a reconnection
        // resolves the name again (a rebinding window). With TLS, the certificate is still
        // verified against the configured host name.
        let url = if self.tls {
            let tls =
                verifying_for(&self.host).map_err(|e| DeliveryError::retry("tls_error", e))?;
            opts = opts.tls_client_config(tls);
            format!("tls://{addr}")
        } else {
            format!("nats://{addr}")
        };
        let client = opts.connect(url).await.map_err(|e| {
            let text = root_message(&e);
            match e.kind() {
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                    DeliveryError::permanent(
                        "authorization_violation",
                        format!(
                            "{text}; check credentials.username and credentials.password, or credentials.token"
                        ),
                    )
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
    let text = root_message(e);
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
        let subject = self
            .subject
            .render(msg)
            .map_err(|e| {
                DeliveryError::permanent("invalid_subject", format!("subject template: {e}"))
            })?
            .unwrap_or_default();
        if let Some(p) = subject_problem(&subject) {
            return Err(DeliveryError::permanent("invalid_subject", p));
        }
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let js = within(msg.timeout, "connecting to NATS", self.context(msg.timeout)).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = within(left, "waiting for the JetStream acknowledgement", async {
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
    use std::collections::BTreeMap;

    use herald_core::destination::DestinationType;
    use herald_core::spec::Typed;

    use super::*;

    fn nats() -> Typed<Nats> {
        Typed::new(Nats::new(&DestinationsConfig::default()), true)
    }

    fn c(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
        let t = nats();
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
        // Loopback needs --dev, as for webhooks; a bad address and TLS flag name their field.
        let errs = t.validate(&c(&[("server_url", "127.0.0.1:4222")]), &c(&[]));
        assert_eq!(errs[0].field, "config.server_url");
        let errs = t.validate(&c(&[("server_url", "h:99999"), ("tls", "yes")]), &c(&[]));
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["config.server_url", "config.tls"]);
    }

    #[test]
    fn schema_keeps_its_fields() {
        let t = nats();
        let spec = t.spec();
        let config: Vec<_> = spec.config_fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(&config[..3], ["server_url", "subject", "tls"]);
        assert!(spec.config_fields[0].required);
        assert_eq!(
            spec.config_fields[0].pattern.as_deref(),
            Some(crate::support::address::SERVER_PATTERN)
        );
        assert_eq!(spec.config_fields[1].default.as_deref(), Some("{topic}"));
        assert_eq!(spec.config_fields[2].kind, "checkbox");
        assert_eq!(spec.config_fields[2].default.as_deref(), Some("false"));
        let creds: Vec<_> = spec
            .credential_fields
            .iter()
            .map(|f| (f.key.as_str(), f.required, f.sensitive))
            .collect();
        assert_eq!(
            &creds[..4],
            [
                ("username", false, false),
                ("password", false, true),
                ("token", false, true),
                ("signing_secret", false, true)
            ]
        );
    }

    #[tokio::test]
    async fn a_subject_that_renders_invalid_fails_permanently_without_connecting() {
        let t = nats();
        let d = herald_core::Destination {
            id: "des_1".into(),
            tenant_id: "t".into(),
            kind: KIND.into(),
            topics: herald_core::Topics::All,
            filter: None,
            // A documentation address: a connection attempt would fail differently.
            config: c(&[("server_url", "192.0.2.1:9"), ("subject", "ev.{topic}")]),
            credentials: c(&[]),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            expires_at: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let driver = t.build(&d).unwrap();
        let msg = OutboundMessage {
            event_id: "e".into(),
            delivery_id: "dlv_1".into(),
            topic: "a b".into(),
            time: jiff::Timestamp::UNIX_EPOCH,
            body: Arc::from(&b"{}"[..]),
            headers: vec![],
            metadata: Default::default(),
            timeout: std::time::Duration::from_secs(1),
        };
        let e = driver.deliver(&msg).await.unwrap_err();
        assert_eq!(e.code, "invalid_subject");
        assert_eq!(
            e.disposition,
            herald_core::destination::Disposition::Permanent
        );
    }
}

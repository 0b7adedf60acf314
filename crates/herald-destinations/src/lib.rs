//! Herald's destination types. Each type is one module implementing
//! [`herald_core::destination::DestinationType`]; [`registry`] assembles the ones this build
//! includes. Only the binary calls [`registry`]: the engine and API see types through the
//! registry alone.

#[cfg(feature = "email")]
pub mod email;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis_stream")]
pub mod redis_stream;
pub mod support;
pub mod target;
pub mod webhook;

#[cfg(any(feature = "aws_sqs", feature = "aws_s3", feature = "aws_kinesis"))]
pub mod aws;
#[cfg(feature = "azure_servicebus")]
pub mod azure_servicebus;
#[cfg(feature = "gcp_pubsub")]
pub mod gcp_pubsub;
#[cfg(feature = "kafka")]
pub mod kafka;

use std::sync::Arc;

use herald_core::destination::Registry;
use herald_core::spec::{Spec, Typed};

pub use target::TargetPolicy;

/// Settings shared by destination types.
#[derive(Clone, Default)]
pub struct DestinationsConfig {
    /// Which network targets are allowed.
    pub target_policy: TargetPolicy,
    /// Optional egress proxy for HTTP requests (`http://user:password@host:port`); a `Secret`
    /// because its URL may carry a password.
    pub proxy: Option<herald_core::Secret>,
    /// Response bodies kept in the attempt log are cut to this many bytes.
    pub response_body_limit: usize,
    /// `User-Agent` sent with webhook requests.
    pub user_agent: String,
    /// HTTP statuses retried although they would otherwise be permanent failures.
    pub retry_on_status: Vec<u16>,
    /// PEM of CA certificates every webhook destination trusts besides the platform's
    /// (`delivery.tls_ca_file`).
    pub tls_ca: Option<String>,
    /// Types whose destinations get no generated signing secret when created without one
    /// (their messages are then unsigned until a secret is set). Empty: every type generates.
    pub no_generated_secret: Vec<String>,
    /// Whether tenants may create `email` destinations (operator destinations always may).
    pub email_for_tenants: bool,
}

impl std::fmt::Debug for DestinationsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationsConfig")
            .field("target_policy", &self.target_policy)
            .field("proxy", &self.proxy.as_ref().map(|p| p.redacted()))
            .field("response_body_limit", &self.response_body_limit)
            .field("user_agent", &self.user_agent)
            .field("retry_on_status", &self.retry_on_status)
            .field("no_generated_secret", &self.no_generated_secret)
            .field("email_for_tenants", &self.email_for_tenants)
            .finish()
    }
}

impl DestinationsConfig {
    /// Whether destinations of `kind` get a generated signing secret.
    pub fn generates_secret(&self, kind: &str) -> bool {
        !self.no_generated_secret.iter().any(|k| k == kind)
    }
}

/// A type as the registry holds it, with the operator's secret-generation choice applied.
fn typed<S: Spec>(cfg: &DestinationsConfig, spec: S) -> Arc<Typed<S>> {
    let generate = cfg.generates_secret(spec.about().kind);
    Arc::new(Typed::new(spec, generate))
}

/// Every destination type compiled into this build.
pub fn registry(cfg: &DestinationsConfig) -> Result<Registry, String> {
    let mut r = Registry::default();
    r.register(typed(cfg, webhook::Webhook::new(cfg)?));
    #[cfg(feature = "rabbitmq")]
    r.register(typed(cfg, rabbitmq::RabbitMq::new(cfg)));
    #[cfg(feature = "nats")]
    r.register(typed(cfg, nats::Nats::new(cfg)));
    #[cfg(feature = "redis_stream")]
    r.register(typed(cfg, redis_stream::RedisStream::new(cfg)));
    #[cfg(feature = "mqtt")]
    r.register(typed(cfg, mqtt::Mqtt::new(cfg)));
    #[cfg(feature = "kafka")]
    r.register(typed(cfg, kafka::Kafka::new(cfg)?));
    #[cfg(feature = "aws_sqs")]
    r.register(typed(cfg, aws::sqs::Sqs::new(cfg)?));
    #[cfg(feature = "aws_s3")]
    r.register(typed(cfg, aws::s3::S3::new(cfg)?));
    #[cfg(feature = "aws_kinesis")]
    r.register(typed(cfg, aws::kinesis::Kinesis::new(cfg)?));
    #[cfg(feature = "gcp_pubsub")]
    r.register(typed(cfg, gcp_pubsub::PubSub::new(cfg)?));
    #[cfg(feature = "azure_servicebus")]
    r.register(typed(cfg, azure_servicebus::ServiceBus::new(cfg)?));
    #[cfg(feature = "email")]
    r.register(typed(cfg, email::Email::new(cfg)));
    Ok(r)
}

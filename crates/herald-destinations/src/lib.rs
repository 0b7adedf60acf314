//! Herald's destination types. Each type is one module implementing
//! [`herald_core::destination::DestinationType`]; [`registry`] assembles the ones this build
//! includes. Only the binary calls [`registry`]: the engine and API see types through the
//! registry alone.

#[cfg(any(
    feature = "rabbitmq",
    feature = "nats",
    feature = "redis_stream",
    feature = "mqtt"
))]
mod broker;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis_stream")]
pub mod redis_stream;
pub mod target;
pub mod webhook;

#[cfg(any(feature = "aws_sqs", feature = "aws_s3", feature = "aws_kinesis"))]
mod aws;
#[cfg(feature = "aws_kinesis")]
pub mod aws_kinesis;
#[cfg(feature = "aws_s3")]
pub mod aws_s3;
#[cfg(feature = "aws_sqs")]
pub mod aws_sqs;
#[cfg(feature = "azure_servicebus")]
pub mod azure_servicebus;
#[cfg(feature = "gcp_pubsub")]
pub mod gcp_pubsub;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(any(
    feature = "kafka",
    feature = "aws_sqs",
    feature = "aws_s3",
    feature = "aws_kinesis",
    feature = "gcp_pubsub",
    feature = "azure_servicebus"
))]
mod mapping;

use std::sync::Arc;

use herald_core::destination::Registry;

pub use target::TargetPolicy;

/// Settings shared by destination types.
#[derive(Debug, Clone, Default)]
pub struct DestinationsConfig {
    /// Which network targets are allowed.
    pub target_policy: TargetPolicy,
    /// Optional egress proxy for webhook requests (`http://host:port`).
    pub proxy: Option<String>,
    /// Response bodies kept in the attempt log are cut to this many bytes.
    pub response_body_limit: usize,
    /// `User-Agent` sent with webhook requests.
    pub user_agent: String,
    /// HTTP statuses retried although they would otherwise be permanent failures.
    pub retry_on_status: Vec<u16>,
}

/// Every destination type compiled into this build.
pub fn registry(cfg: &DestinationsConfig) -> Result<Registry, String> {
    let mut r = Registry::default();
    r.register(Arc::new(webhook::WebhookType::new(cfg)?));
    #[cfg(feature = "rabbitmq")]
    r.register(Arc::new(rabbitmq::RabbitMqType::new(
        cfg.target_policy.clone(),
    )));
    #[cfg(feature = "nats")]
    r.register(Arc::new(nats::NatsType::new(cfg.target_policy.clone())));
    #[cfg(feature = "redis_stream")]
    r.register(Arc::new(redis_stream::RedisStreamType::new(
        cfg.target_policy.clone(),
    )));
    #[cfg(feature = "mqtt")]
    r.register(Arc::new(mqtt::MqttType::new(cfg.target_policy.clone())));
    #[cfg(feature = "aws_kinesis")]
    r.register(Arc::new(aws_kinesis::KinesisType::new(cfg)?));
    #[cfg(feature = "aws_s3")]
    r.register(Arc::new(aws_s3::S3Type::new(cfg)?));
    #[cfg(feature = "aws_sqs")]
    r.register(Arc::new(aws_sqs::SqsType::new(cfg)?));
    #[cfg(feature = "azure_servicebus")]
    r.register(Arc::new(azure_servicebus::ServiceBusType::new(cfg)?));
    #[cfg(feature = "gcp_pubsub")]
    r.register(Arc::new(gcp_pubsub::PubSubType::new(cfg)?));
    #[cfg(feature = "kafka")]
    r.register(Arc::new(kafka::KafkaType::new(cfg)?));
    Ok(r)
}

//! Herald's destination types. Each type is one module implementing
//! [`herald_core::destination::DestinationType`]; [`registry`] assembles the ones this build
//! includes. Only the binary calls [`registry`]: the engine and API see types through the
//! registry alone.

pub mod target;
pub mod webhook;

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
    Ok(r)
}

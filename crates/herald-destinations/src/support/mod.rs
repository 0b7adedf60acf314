//! The one helper layer every destination type builds on, compiled whatever features are on:
//!
//! - [`http`]: the pooled HTTP client (no redirects, guarded DNS, optional proxy), transport
//!   error classification and response capture for the attempt log;
//! - [`address`]: typed `host:port` and endpoint fields, resolution checked against the
//!   [`TargetPolicy`](crate::target::TargetPolicy), deadlines;
//! - [`template`]: the one name/key template engine (`{topic}` placeholders and the Outpost
//!   contract's JMESPath key templates are two spellings of the same thing);
//! - [`errors`]: error-chain text and small utilities.
//!
//! What it is not: protocol logic. Each type's module owns its request format and its error
//! classification; this layer holds only what would otherwise be copied between them.

pub mod address;
pub mod errors;
pub mod http;
pub mod template;

//! The one helper layer every destination type builds on, compiled whatever features are on:
//!
//! - [`http`]: the pooled HTTP client (no redirects, guarded DNS, optional proxy), transport
//!   error classification and response capture for the attempt log;
//! - [`address`]: typed `host:port` and endpoint fields, resolution checked against the
//!   [`TargetPolicy`](crate::target::TargetPolicy), deadlines;
//! - [`template`]: the one name/key template engine (`{topic}` placeholders and the Outpost
//!   contract's JMESPath key templates are two spellings of the same thing);
//! - [`errors`]: error-chain text and small utilities;
//! - [`digest`]: HTTP Digest authentication (RFC 7616/2617), the client side with a cached
//!   challenge per destination;
//! - [`oauth2`]: the OAuth 2.0 client credentials grant with a shared, cached token;
//! - `gateway` (with Kafka): a private SOCKS5 listener that checks every address a client
//!   connects to, also those a server told it about;
//! - [`tls`]: PEM certificates and keys, client identities (mTLS), TLS failure classification.
//!
//! What it is not: protocol logic. Each type's module owns its request format and its error
//! classification; this layer holds only what would otherwise be copied between them.

pub mod address;
pub mod digest;
pub mod errors;
#[cfg(feature = "kafka")]
pub mod gateway;
pub mod http;
pub mod oauth2;
pub mod template;
pub mod tls;

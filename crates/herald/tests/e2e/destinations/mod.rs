//! Per-type behaviour over the API: what the Driver contract suite (`crate::contract`) does not
//! cover — field mapping details, templates, validation at create, served schemas, masked
//! secrets, and engine interplay (a slow destination not holding up others); and `tls`:
//! RabbitMQ and NATS over TLS reach only the address the target policy checked.

mod aws;
mod azure;
mod brokers;
#[cfg(feature = "email")]
mod email;
mod gcp;
mod kafka;
mod tls;

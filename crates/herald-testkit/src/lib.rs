//! Herald's test support, in one place for every test suite of the workspace: a recording
//! HTTP receiver, a TCP forwarder that simulates outages and hung servers, free ports, one
//! PostgreSQL database per test, a private PostgreSQL server a test may stop and restart,
//! reachability checks for the machine's services, the Python virtualenv of the independent
//! readers, the servers the tests start (moto, tansu, the Pub/Sub emulator, a wire-faithful
//! Service Bus), the embedded store's query plans, and — with the `server` feature — Herald
//! itself (in-process on `herald::run`, or the real binary as a child process), the API
//! helpers and the Driver contract suite.
//!
//! It is a dev-dependency only (`publish = false`): no production crate may depend on it.
//! Nothing here skips: a missing server or tool fails the test with a message saying what is
//! missing and how `.ci/run` provides it.

pub mod forwarder;
pub mod pg;
pub mod ports;
pub mod private_pg;
pub mod python;
pub mod receiver;
pub mod servers;
pub mod servicebus;
pub mod services;
pub mod sqlite;

#[cfg(feature = "server")]
pub mod contract;
#[cfg(feature = "server")]
pub mod herald;
#[cfg(feature = "server")]
pub mod signing;

pub use forwarder::{Forwarder, Mode};
pub use pg::{TestDb, test_keys};
pub use ports::{free_port, wait_port};
pub use private_pg::{PrivatePostgres, StopMode};
pub use receiver::{Received, Receiver};
pub use services::{require, unique};
pub use sqlite::sqlite_plan;

#[cfg(feature = "server")]
pub use herald::{API_KEY, Api, Herald, HeraldProcess, output_within, retry_fast, server_env};
#[cfg(feature = "server")]
pub use signing::{SECRET, check_headers, verify_standard};

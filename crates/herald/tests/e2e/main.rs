//! Herald's end-to-end tests, in one test binary (one link instead of a dozen).
//!
//! Most run Herald in-process on `herald::run` (`herald_testkit::Herald`, `127.0.0.1:0`, a
//! temporary data directory); the ones that need a process — SIGKILL and SIGTERM, restarts
//! after a crash, the banner, the CLI, several nodes killed on one PostgreSQL database —
//! start the real binary ([`process`]). Every test talks to real servers: a local receiver,
//! the machine's PostgreSQL, RabbitMQ, NATS, Redis and Mosquitto, and the servers the
//! destination tests start (tansu, moto, the Pub/Sub emulator, a Service Bus server). A test
//! whose server is missing fails; nothing skips.
//!
//! - `access`: scoped API keys across nodes, admin key rotation, CSV templates and the CLI.
//! - `api`: publish → delivery, retries, signing, filters, restart, production mode, CLI.
//! - `publish_batch`: `POST /publish/batch` — results per event, deliveries, limits, scopes.
//! - `crash`, `multinode`: processes killed mid-stream, nodes sharing PostgreSQL.
//! - `chaos`: PostgreSQL restarted under load (a private server), the embedded store on a full
//!   disk (a tmpfs), SIGKILL during a migration on both stores.
//! - `fairness`: one tenant's hung destinations leave another tenant its throughput.
//! - `failure_policy`, `http_outcomes`: alerts, disabling, rate limits, metrics, HTTP answers.
//! - `endpoint_auth`: Basic, Bearer, Digest, OAuth2, mTLS, ed25519 and signature templates
//!   against nginx, Apache httpd, an Authlib token endpoint and PyNaCl.
//! - `hardening`: credentials follow their target, token generations and revocation, input
//!   hygiene, `/metrics` authentication, file modes.
//! - `http_hygiene`: connection deadlines and cap, size limits, `--dev` on loopback, fd limit.
//! - `observability`: `/metrics` text, the attempt and access logs on stderr, spans at an
//!   OTLP/HTTP endpoint the test runs.
//! - `outpost_sdk`: the Outpost Python SDK against Herald.
//! - `portal_browser`: the tenant portal in headless Chromium (`tests/portal/run.mjs`).
//! - `sealed_at_rest`: destination secrets sealed in the store, `herald rekey`, `herald config`.
//! - `destinations`: per-type behaviour over the API (mapping details, validation, schemas).
//! - `contract`: the Driver contract suite (`herald_testkit::contract`) for every type.

mod access;
mod api;
mod chaos;
mod contract;
mod crash;
mod destinations;
mod endpoint_auth;
mod failure_policy;
mod fairness;
mod hardening;
mod http_hygiene;
mod http_outcomes;
mod multinode;
mod observability;
mod openapi;
mod outpost_sdk;
mod portal_browser;
mod publish_batch;
mod sealed_at_rest;

use std::path::Path;

use herald_testkit::HeraldProcess;

/// The `herald` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// The real binary (`serve --dev`) with a fresh data directory and extra environment.
pub fn process(env: &[(&str, &str)]) -> HeraldProcess {
    HeraldProcess::start(BIN, env)
}

/// The real binary on an existing data directory.
pub fn process_in(dir: &Path, env: &[(&str, &str)], dev: bool) -> HeraldProcess {
    HeraldProcess::start_in(BIN, dir, env, dev)
}

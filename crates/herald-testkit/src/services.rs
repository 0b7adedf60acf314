//! The shared servers this machine runs, and reachability checks that fail (never skip) with
//! a message saying what is missing.

use std::net::SocketAddr;
use std::time::Duration;

/// RabbitMQ (guest/guest).
pub const RABBITMQ: &str = "127.0.0.1:5672";
/// NATS with JetStream.
pub const NATS: &str = "127.0.0.1:4222";
/// Redis.
pub const REDIS: &str = "127.0.0.1:6379";
/// Mosquitto (anonymous clients allowed).
pub const MQTT: &str = "127.0.0.1:1883";

/// Fails the test when `name` does not accept connections on `addr`.
pub fn require(name: &str, addr: &str) {
    let a: SocketAddr = addr.parse().expect("a socket address");
    if std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_err() {
        panic!(
            "{name} is not reachable on {addr}; start it (`.ci/run` does) — these tests need the real server"
        );
    }
}

/// A name no other test (or test run) uses: `prefix`, the process id and a clock reading.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{prefix}{}x{}x{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

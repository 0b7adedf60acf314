//! Local ports: a free one for a server a test starts, and waiting until one accepts.

use std::time::{Duration, Instant};

/// A port nobody listens on right now (bound, then released for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`; fails the test after
/// `within`, naming `what`.
pub fn wait_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! The Driver contract suite (`herald_testkit::contract`) run against every destination type's
//! real server: one module per type implementing `Case`, each running every scenario (one
//! test per scenario, `contract::<type>::suite::<scenario>`).
//!
//! Adding a destination type means adding a module here whose case passes the suite.

// A build without some types still compiles the rest.
#![cfg_attr(
    not(all(
        feature = "rabbitmq",
        feature = "nats",
        feature = "redis_stream",
        feature = "mqtt",
        feature = "kafka",
        feature = "aws_sqs",
        feature = "aws_s3",
        feature = "aws_kinesis",
        feature = "gcp_pubsub",
        feature = "azure_servicebus",
        feature = "email"
    )),
    allow(dead_code, unused_imports)
)]

use std::process::Command;
use std::time::Duration;

use herald_testkit::ports::free_port;
use herald_testkit::servers::Server;

#[cfg(all(feature = "aws_sqs", feature = "aws_s3", feature = "aws_kinesis"))]
pub mod aws;
#[cfg(feature = "azure_servicebus")]
pub mod azure_servicebus;
#[cfg(feature = "email")]
pub mod email;
#[cfg(feature = "gcp_pubsub")]
pub mod gcp_pubsub;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis_stream")]
pub mod redis_stream;
pub mod webhook;

/// A private broker with authentication (the shared ones allow anonymous clients), on a free
/// port, with its working directory; both go away when dropped.
pub struct Private {
    _server: Server,
    /// `127.0.0.1:port`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// A `nats-server` that knows user `herald` with password `right-password`.
pub fn private_nats() -> Private {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", "herald", "--pass", "right-password"]);
    let server = Server::start(cmd, port, "nats-server", Duration::from_secs(20));
    Private {
        _server: server,
        addr: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// A `mosquitto` that refuses anonymous clients and knows `herald` / `right-password`.
pub fn private_mosquitto() -> Private {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let pw = dir.path().join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["herald", "right-password"])
        .status()
        .expect("mosquitto_passwd is installed with mosquitto");
    assert!(status.success());
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nuser root\n",
            pw.display()
        ),
    )
    .expect("write mosquitto.conf");
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&conf);
    let server = Server::start(cmd, port, "mosquitto", Duration::from_secs(20));
    Private {
        _server: server,
        addr: format!("127.0.0.1:{port}"),
        _dir: dir,
    }
}

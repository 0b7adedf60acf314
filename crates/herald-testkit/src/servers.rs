//! The servers the message-system tests start as child processes on free ports: moto (SQS, S3,
//! Kinesis), tansu (Kafka) and Google's Pub/Sub emulator. Each is killed when its value is
//! dropped. A server that is not installed or does not come up fails the test, saying how
//! `.ci/run` installs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::forwarder::Forwarder;
use crate::ports::free_port;
use crate::python::{reader, reader_env, venv};

/// A server process this test started; killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Server {
    /// Starts `cmd` (output discarded) and waits until it listens on `port`.
    pub fn start(mut cmd: Command, port: u16, what: &str, within: Duration) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        let mut s = Server { child, port };
        let deadline = Instant::now() + within;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("{what} exited with {status} before listening on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on 127.0.0.1:{port} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// moto's server (SQS, S3, Kinesis) on a free port, from the readers' virtualenv.
    pub fn moto() -> Server {
        let port = free_port();
        let mut cmd = Command::new(venv().join("bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        Server::start(cmd, port, "moto_server", Duration::from_secs(60))
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto with an IAM user (and its access key), a queue, a bucket and a stream, with request
/// authentication on (every request must be signed with that key) unless asked otherwise.
pub struct Aws {
    /// The moto process.
    pub server: Server,
    /// The IAM user's access key id.
    pub key: String,
    /// Its secret access key.
    pub secret: String,
    /// The queue's URL.
    pub queue_url: String,
}

/// The queue [`Aws::start`] creates.
pub const AWS_QUEUE: &str = "herald-queue";
/// The bucket [`Aws::start`] creates.
pub const AWS_BUCKET: &str = "herald-bucket";
/// The Kinesis stream [`Aws::start`] creates.
pub const AWS_STREAM: &str = "herald-stream";

impl Aws {
    /// moto with authentication on.
    pub async fn start() -> Aws {
        Self::start_with(true).await
    }

    /// `auth: false` leaves moto's request authentication off.
    pub async fn start_with(auth: bool) -> Aws {
        let server = Server::moto();
        let out = reader(
            "aws-setup",
            json!({"endpoint": server.url(), "queue": AWS_QUEUE, "bucket": AWS_BUCKET, "stream": AWS_STREAM, "auth": auth}),
        )
        .await;
        Aws {
            key: out["key"].as_str().expect("key").into(),
            secret: out["secret"].as_str().expect("secret").into(),
            queue_url: out["queue_url"].as_str().expect("queue_url").into(),
            server,
        }
    }

    /// Reader arguments with this server's endpoint and credentials, plus `extra`.
    pub fn args(&self, extra: Value) -> Value {
        let mut a = json!({"endpoint": self.server.url(), "key": self.key, "secret": self.secret});
        if let (Value::Object(a), Value::Object(e)) = (&mut a, extra) {
            a.extend(e);
        }
        a
    }
}

/// The tansu binary: `HERALD_TANSU`, else `tansu` in `~/.cargo/bin` or on `PATH`.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HERALD_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    let on_path = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("tansu"))
        .find(|p| p.exists());
    on_path.unwrap_or_else(|| {
        panic!("the tansu broker is not installed (.ci/run runs `cargo install tansu --locked --features dynostore`)")
    })
}

/// A tansu broker (memory storage) and the forwarder clients reach it through: the broker
/// advertises the forwarder's port, so the forwarder can take it "down" and back with its
/// topics intact.
pub struct Tansu {
    _server: Server,
    /// What clients connect to.
    pub fwd: Arc<Forwarder>,
}

impl Tansu {
    /// Starts a broker; with `authentication`, it offers SASL/SCRAM and refuses unknown users.
    pub async fn start(authentication: bool) -> Tansu {
        let port = free_port();
        let public = free_port();
        let fwd = Forwarder::start_on(public, &format!("127.0.0.1:{port}")).await;
        let mut cmd = Command::new(tansu_bin());
        cmd.arg("broker")
            .arg(format!("--kafka-listener-url=tcp://127.0.0.1:{port}"))
            .arg(format!(
                "--kafka-advertised-listener-url=tcp://127.0.0.1:{public}"
            ))
            .arg("--storage-engine=memory://tansu/");
        if authentication {
            cmd.arg("--authentication");
        }
        let server = Server::start(cmd, port, "tansu", Duration::from_secs(60));
        Tansu {
            _server: server,
            fwd: Arc::new(fwd),
        }
    }

    /// The bootstrap address (the forwarder).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.fwd.port)
    }

    /// Creates `topic` with kafka-python.
    pub async fn create_topic(&self, topic: &str) {
        reader(
            "kafka-create-topic",
            json!({"bootstrap": self.bootstrap(), "topic": topic}),
        )
        .await;
    }

    /// Reads up to `count` records of `topic` from the start, with kafka-python.
    pub async fn records(&self, topic: &str, count: usize) -> Vec<Value> {
        let v = reader(
            "kafka-read",
            json!({"bootstrap": self.bootstrap(), "topic": topic, "count": count}),
        )
        .await;
        v.as_array().cloned().unwrap_or_default()
    }
}

/// The Pub/Sub emulator's project, topic and subscription.
pub const PUBSUB_PROJECT: &str = "herald-test";
/// The topic [`PubSubEmulator::start`] creates.
pub const PUBSUB_TOPIC: &str = "events-topic";
/// The subscription on [`PUBSUB_TOPIC`].
pub const PUBSUB_SUBSCRIPTION: &str = "events-sub";

/// The emulator's launcher: `HERALD_PUBSUB_EMULATOR`, else where the Debian package puts it.
pub fn pubsub_emulator_bin() -> PathBuf {
    let p = std::env::var("HERALD_PUBSUB_EMULATOR").map_or_else(
        |_| {
            PathBuf::from(
                "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
            )
        },
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "the Pub/Sub emulator is missing at {} (.ci/run installs google-cloud-cli-pubsub-emulator; \
         set HERALD_PUBSUB_EMULATOR to use another path)",
        p.display()
    );
    p
}

/// Google's Pub/Sub emulator with [`PUBSUB_TOPIC`] and [`PUBSUB_SUBSCRIPTION`].
pub struct PubSubEmulator {
    /// The emulator process.
    pub server: Server,
}

fn start_emulator() -> Server {
    let port = free_port();
    let mut cmd = Command::new(pubsub_emulator_bin());
    cmd.arg("--host=127.0.0.1").arg(format!("--port={port}"));
    Server::start(cmd, port, "Pub/Sub emulator", Duration::from_secs(120))
}

/// One Pub/Sub emulator shared by the tests of this process that hold it at the same time
/// (a JVM takes seconds to start); it stops when the last holder drops it. Holders use topics
/// of their own.
pub fn shared_pubsub_emulator() -> Arc<Server> {
    static SHARED: parking_lot::Mutex<Weak<Server>> = parking_lot::Mutex::new(Weak::new());
    let mut shared = SHARED.lock();
    if let Some(s) = shared.upgrade() {
        return s;
    }
    let s = Arc::new(start_emulator());
    *shared = Arc::downgrade(&s);
    s
}

impl PubSubEmulator {
    /// Starts the emulator on a free port and creates the topic and subscription.
    pub async fn start() -> PubSubEmulator {
        let e = PubSubEmulator {
            server: start_emulator(),
        };
        e.read(
            "pubsub-setup",
            json!({"project": PUBSUB_PROJECT, "topic": PUBSUB_TOPIC, "subscription": PUBSUB_SUBSCRIPTION}),
        )
        .await;
        e
    }

    /// `127.0.0.1:port` (what `PUBSUB_EMULATOR_HOST` takes).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// Runs a reader command against this emulator.
    pub async fn read(&self, command: &str, args: Value) -> Value {
        reader_env(command, args, &[("PUBSUB_EMULATOR_HOST", self.host())]).await
    }

    /// Pulls (and acknowledges) up to `count` messages of the subscription.
    pub async fn messages(&self, count: usize) -> Vec<Value> {
        let v = self
            .read(
                "pubsub-read",
                json!({"project": PUBSUB_PROJECT, "subscription": PUBSUB_SUBSCRIPTION, "count": count}),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }
}

/// The PyPI package the SMTP server runs on.
pub const AIOSMTPD: &str = "aiosmtpd==1.4.6";

/// A real SMTP server: aiosmtpd from PyPI in its own virtualenv, on a free port, running
/// `tests/destinations/smtp_server.py`. Every accepted message is parsed by Python's `email`
/// package and kept as JSON ([`Smtp::messages`]); [`Smtp::reply`] makes it answer DATA with a
/// given SMTP reply instead (a `4xx` or `5xx`). Killed on drop.
pub struct Smtp {
    server: Server,
    dir: tempfile::TempDir,
}

impl Smtp {
    /// Starts a server; with `auth` (user, password) it requires AUTH and refuses other
    /// credentials with `535`.
    pub fn start(auth: Option<(&str, &str)>) -> Smtp {
        let python = crate::python::venv_with("smtp-venv", &[AIOSMTPD]).join("bin/python");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/destinations/smtp_server.py");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(python);
        cmd.arg(script).arg(port.to_string()).arg(dir.path());
        if let Some((u, p)) = auth {
            cmd.args([u, p]);
        }
        let server = Server::start(cmd, port, "aiosmtpd", Duration::from_secs(30));
        Smtp { server, dir }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Answer DATA with `reply` (e.g. `"451 4.3.0 try again later"`) from now on, or accept
    /// messages again with `None`.
    pub fn reply(&self, reply: Option<&str>) {
        std::fs::write(self.dir.path().join("reply"), reply.unwrap_or(""))
            .expect("write the reply file");
    }

    /// Every accepted message, oldest first: `{mail_from, rcpt_tos, headers: [[name, value]],
    /// text, attachments: [{filename, content_type, data_b64}]}`.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .expect("read the mail folder")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let raw = std::fs::read(self.dir.path().join(n)).expect("read a mail");
                serde_json::from_slice(&raw).expect("a mail record")
            })
            .collect()
    }

    /// Waits (20 s at most) until at least `n` messages were accepted; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP server accepted {} of {n} messages",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A mail record's header `name` (case-insensitive), if present.
pub fn mail_header(mail: &Value, name: &str) -> Option<String> {
    mail["headers"].as_array()?.iter().find_map(|h| {
        let k = h[0].as_str()?;
        k.eq_ignore_ascii_case(name)
            .then(|| h[1].as_str().unwrap_or_default().to_string())
    })
}

//! Support for the message-system destination tests: the real servers these tests start as
//! child processes (moto, tansu, the Pub/Sub emulator) on free ports, a TCP forwarder that can
//! take a server "down" and back "up" without losing its state, the independent Python
//! readers, and signature checks with the `standardwebhooks` verifier.
//!
//! Nothing here skips: a server or tool that cannot be started fails the test with a message
//! saying what is missing and how `.ci/run` installs it.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::task::JoinHandle;

/// Python packages of the independent readers (and moto's server), pinned.
const PACKAGES: &[&str] = &[
    "moto[server]==5.2.1",
    "boto3==1.44.5",
    "kafka-python==3.0.12",
    "google-cloud-pubsub==2.44.0",
];

static VENV_LOCK: Mutex<()> = Mutex::new(());

/// The virtualenv with [`PACKAGES`], created under the cargo target directory on first use.
pub fn venv() -> PathBuf {
    venv_with("cloud-venv", PACKAGES)
}

/// A virtualenv named `name` under the cargo target directory with `packages` (pinned)
/// installed, created on first use.
pub fn venv_with(name: &str, packages: &[&str]) -> PathBuf {
    let _guard = VENV_LOCK.lock();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let marker = dir.join(format!(
        "installed-{}",
        packages.join("-").replace(['[', ']', '='], "_")
    ));
    if !marker.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect(
                "python3 is required for the destination tests (.ci/run installs python3-venv)",
            );
        assert!(ok.success(), "python3 -m venv {} failed", dir.display());
        let ok = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .expect("pip");
        assert!(ok.success(), "pip install {packages:?} failed");
        std::fs::write(&marker, "").unwrap();
    }
    dir
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
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

/// A server process this test started; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `cmd` and waits for `port`.
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

    /// moto's server on a free port.
    pub fn moto() -> Server {
        let port = free_port();
        let mut cmd = Command::new(venv().join("bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        Server::start(cmd, port, "moto_server", Duration::from_secs(60))
    }

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

/// A TCP forwarder in front of a server. `down()` closes the listening socket and every
/// forwarded connection (clients see "connection refused"); `up()` listens again on the same
/// port. The server behind it keeps running, so its state survives the outage.
pub struct Forwarder {
    pub port: u16,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Forwarder {
    pub async fn start(target_port: u16) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let f = Forwarder {
            port,
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            tasks: Arc::default(),
            acceptor: Mutex::new(None),
        };
        f.serve(listener);
        f
    }

    /// A forwarder on a given free port (for brokers that advertise it before it runs).
    pub async fn start_on(port: u16, target_port: u16) -> Forwarder {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let f = Forwarder {
            port,
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            tasks: Arc::default(),
            acceptor: Mutex::new(None),
        };
        f.serve(listener);
        f
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let target = self.target;
        let tasks = self.tasks.clone();
        let handle = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let t = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().push(t);
            }
        });
        *self.acceptor.lock() = Some(handle);
    }

    /// Stops listening and cuts every open connection.
    pub async fn down(&self) {
        if let Some(a) = self.acceptor.lock().take() {
            a.abort();
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        // Let the aborted tasks drop their sockets.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(a) = self.acceptor.lock().take() {
            a.abort();
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Runs one command of `tests/destinations/reader.py` with the service's own client library.
pub async fn reader(command: &str, args: Value) -> Value {
    reader_env(command, args, &[]).await
}

/// [`reader`] with extra environment (e.g. `PUBSUB_EMULATOR_HOST`).
pub async fn reader_env(command: &str, args: Value, env: &[(&str, String)]) -> Value {
    let python = venv().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/destinations/reader.py");
    let command = command.to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(&command)
            .arg(args.to_string())
            .envs(env)
            .output()
            .expect("run reader.py")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "reader.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader.py prints JSON")
}

/// Verifies a Standard Webhooks signature carried in message headers/attributes.
pub fn verify_standard(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", id.parse().unwrap());
    headers.insert("webhook-timestamp", timestamp.parse().unwrap());
    headers.insert("webhook-signature", signature.parse().unwrap());
    wh.verify(body, &headers).is_ok()
}

/// A fixed Standard Webhooks secret for the tests.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

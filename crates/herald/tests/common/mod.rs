//! End-to-end harness: the real `herald` binary on an ephemeral port with a temporary data
//! directory, driven over HTTP, delivering to a real local HTTP receiver.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const API_KEY: &str = "test-admin-key";

/// A running herald process; killed on drop.
pub struct Herald {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    _tmp: Option<tempfile::TempDir>,
}

impl Herald {
    /// Starts `herald serve --dev` with a fresh data directory and extra environment.
    pub fn start(env: &[(&str, &str)]) -> Herald {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut h = Self::start_in(&dir, env, true);
        h._tmp = Some(tmp);
        h
    }

    /// Starts herald on an existing data directory.
    pub fn start_in(dir: &Path, env: &[(&str, &str)], dev: bool) -> Herald {
        Self::spawn(dir, env, dev, Stdio::inherit())
    }

    /// Starts herald on an existing data directory with its logs (stderr) appended to `log`.
    pub fn start_logged(dir: &Path, env: &[(&str, &str)], log: &Path) -> Herald {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log file");
        Self::spawn(dir, env, true, Stdio::from(file))
    }

    fn spawn(dir: &Path, env: &[(&str, &str)], dev: bool, stderr: Stdio) -> Herald {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.arg("serve");
        if dev {
            cmd.arg("--dev");
        }
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HERALD_HOST", "127.0.0.1")
            .env("HERALD_PORT", "0")
            .env("HERALD_DATA_DIR", dir)
            .env("HERALD_API_KEY", API_KEY)
            .env("HERALD_LOG_LEVEL", "warn")
            .env("HERALD_DELIVERY_POLL_INTERVAL_MS", "50")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                    sent = true;
                }
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("herald did not print its listening address within 30 s")
            .parse()
            .expect("address");
        Herald {
            child,
            addr,
            data_dir: dir.to_path_buf(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            _tmp: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.addr)
    }

    /// Sends a request with the admin key; returns status and JSON body (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(API_KEY, method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path} -> {s}: {v}");
        v
    }

    /// Creates a tenant and a webhook destination pointing at `url`; returns the destination.
    pub async fn webhook(&self, tenant: &str, url: &str, extra: Value) -> Value {
        self.ok("PUT", &format!("/tenants/{tenant}"), None).await;
        let mut body = json!({"type": "webhook", "topics": "*", "config": {"url": url}});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            for (k, v) in e {
                b.insert(k, v);
            }
        }
        self.ok(
            "POST",
            &format!("/tenants/{tenant}/destinations"),
            Some(body),
        )
        .await
    }

    pub async fn publish(&self, body: Value) -> Value {
        let (s, v) = self.call("POST", "/publish", Some(body)).await;
        assert_eq!(s, 202, "publish: {v}");
        v
    }

    /// Polls the attempts list until `pred` holds or the deadline passes.
    pub async fn wait_attempts(&self, query: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.ok("GET", &format!("/attempts?{query}"), None).await;
            let models = v["models"].as_array().cloned().unwrap_or_default();
            if pred(&models) {
                return models;
            }
            assert!(
                Instant::now() < deadline,
                "attempts never satisfied the condition; last: {models:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for exit; returns whether it exited successfully in time.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub path: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// A local HTTP receiver that records requests and answers with a scripted status.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer with, in order; after the script runs out, `default_status`.
    pub script: Arc<Mutex<std::collections::VecDeque<u16>>>,
    pub default_status: Arc<AtomicU16>,
    pub hits: Arc<AtomicUsize>,
    pub delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            got: Arc::default(),
            script: Arc::default(),
            default_status: Arc::new(AtomicU16::new(200)),
            hits: Arc::default(),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
        };
        let state = r.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let delay = *state.delay.lock();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    state.got.lock().push(Received {
                        headers,
                        body,
                        path: uri.path().to_string(),
                    });
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    let code = state
                        .script
                        .lock()
                        .pop_front()
                        .unwrap_or(state.default_status.load(Ordering::SeqCst));
                    (StatusCode::from_u16(code).unwrap(), "ok")
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.got.lock().len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {n} requests",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got.lock().clone()
    }
}

/// A PostgreSQL database for one test, dropped with this value (also when the test fails).
/// The server comes from `HERALD_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`); when it is unreachable the test fails.
pub struct TestDb {
    pub url: String,
    /// `HERALD_ENCRYPTION_KEY` for every node on this database.
    pub key: String,
    name: String,
    admin: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        static N: AtomicUsize = AtomicUsize::new(0);
        let admin = std::env::var("HERALD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!(
            "herald_e2e_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let _ = herald_store::pg::drop_database(&admin, &name).await;
        let url = herald_store::pg::create_database(&admin, &name)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs PostgreSQL at {} (set HERALD_TEST_POSTGRES_URL): {e}",
                    herald_store::pg::describe_url(&admin)
                )
            });
        TestDb {
            url,
            key: herald_store::seal::Keyring::generate_key()
                .expose()
                .to_string(),
            name,
            admin,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                && let Err(e) = rt.block_on(herald_store::pg::drop_database(&admin, &name))
            {
                eprintln!("could not drop test database {name}: {e}");
            }
        })
        .join();
    }
}

/// Runs a command to completion, killing it after `limit` (then it counts as failed), and
/// returns whether it succeeded and its stdout and stderr. A command expected to refuse to
/// start that starts anyway fails the test instead of hanging it.
pub fn output_within(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run herald");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for herald") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = format!(
        "{}{}",
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    if status.is_none() {
        text.push_str(&format!("\n(still running after {limit:?}: killed)"));
    }
    (status.is_some_and(|s| s.success()), text)
}

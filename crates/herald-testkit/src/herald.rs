//! Herald under test: in-process on [`herald::run`] ([`Herald`], the default), or the real
//! binary as a child process ([`HeraldProcess`], for what needs a process: SIGKILL, SIGTERM,
//! the banner, the CLI). Both listen on `127.0.0.1:0` with a temporary data directory, the
//! admin key [`API_KEY`] and a 50 ms poll interval, take extra settings as `HERALD_*`
//! variables, and expose the same API helpers through [`Api`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::services::unique;

/// The admin API key every test server uses.
pub const API_KEY: &str = "test-admin-key";

/// Quick, jitter-free retries (eight, one second apart) for tests that watch retries.
pub fn retry_fast() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1,1,1,1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ]
}

/// The settings every test server starts with, then `env` on top.
fn settings(dir: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = [
        ("HERALD_HOST", "127.0.0.1"),
        ("HERALD_PORT", "0"),
        ("HERALD_API_KEY", API_KEY),
        ("HERALD_LOG_LEVEL", "warn"),
        ("HERALD_DELIVERY_POLL_INTERVAL_MS", "50"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    all.push(("HERALD_DATA_DIR".into(), dir.display().to_string()));
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}

/// The environment [`HeraldProcess`] gives the binary on data directory `dir`, with `env` on
/// top: for tests that start it under another program (e.g. `strace`).
pub fn server_env(dir: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    settings(dir, env)
}

/// The API of one running Herald, called with the admin key.
#[derive(Clone)]
pub struct Api {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A client without proxy.
    pub client: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            addr,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        }
    }

    /// `http://addr/api/v1{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.addr)
    }

    /// Sends a request with the admin key; returns status and JSON body (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(API_KEY, method, path, body).await
    }

    /// Sends a request with `token`.
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().expect("HTTP method"), self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// [`Api::call`], expecting a 2xx answer.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path} -> {s}: {v}");
        v
    }

    /// The `/metrics` page (Prometheus text), scraped with the admin key.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.addr))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates (or keeps) `tenant` and a destination from `body`; returns the destination.
    pub async fn create(&self, tenant: &str, body: Value) -> Value {
        self.ok("PUT", &format!("/tenants/{tenant}"), None).await;
        self.ok(
            "POST",
            &format!("/tenants/{tenant}/destinations"),
            Some(body),
        )
        .await
    }

    /// Posts destination `body` for `tenant` and expects 422 with a problem about `field`
    /// (a problem that starts with it, e.g. `config.url`); returns the answer.
    pub async fn expect_rejected(&self, tenant: &str, body: &Value, field: &str) -> Value {
        let (status, v) = self
            .call(
                "POST",
                &format!("/tenants/{tenant}/destinations"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body} -> {v}");
        assert!(
            v["data"].as_array().is_some_and(|a| a
                .iter()
                .any(|p| p.as_str().unwrap_or_default().starts_with(field))),
            "expected a problem with {field}: {v}"
        );
        v
    }

    /// Creates a tenant and a webhook destination pointing at `url`; returns the destination.
    pub async fn webhook(&self, tenant: &str, url: &str, extra: Value) -> Value {
        let mut body = json!({"type": "webhook", "topics": "*", "config": {"url": url}});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            for (k, v) in e {
                b.insert(k, v);
            }
        }
        self.create(tenant, body).await
    }

    /// Publishes `body`, expecting 202.
    pub async fn publish(&self, body: Value) -> Value {
        let (s, v) = self.call("POST", "/publish", Some(body)).await;
        assert_eq!(s, 202, "publish: {v}");
        v
    }

    /// Publishes `body` within `timeout`; the status, or `None` when no answer came (the
    /// server is gone or too slow) — for tests that kill servers under load.
    pub async fn try_publish(&self, body: &Value, timeout: Duration) -> Option<u16> {
        self.client
            .post(self.url("/publish"))
            .bearer_auth(API_KEY)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Publishes one event with metadata `source: tests` and a fresh id; returns the id.
    pub async fn publish_event(&self, tenant: &str, topic: &str, data: Value) -> String {
        let id = unique("evt_");
        self.publish(json!({
            "tenant_id": tenant, "id": id, "topic": topic, "data": data,
            "metadata": {"source": "tests"}
        }))
        .await;
        id
    }

    /// Polls the attempts list until `pred` holds or 30 s pass.
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

    /// Attempts of one event with their response data, oldest first, once `pred` holds.
    pub async fn attempts(&self, event_id: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.wait_attempts(
            &format!("event_id={event_id}&dir=asc&include=response_data"),
            pred,
        )
        .await
    }
}

/// Whether any attempt succeeded.
pub fn succeeded(a: &[Value]) -> bool {
    a.iter().any(|x| x["status"] == "success")
}

/// Herald running in this process on [`herald::run`]; shut down when dropped (or by
/// [`Herald::stop`], which waits for the graceful shutdown to finish).
pub struct Herald {
    api: Api,
    /// The data directory.
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _tmp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Herald {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Herald {
    /// Starts Herald in development mode with a fresh data directory and extra settings.
    pub async fn start(env: &[(&str, &str)]) -> Herald {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut h = Self::start_in(tmp.path(), env, true).await;
        h._tmp = Some(tmp);
        h
    }

    /// Starts Herald on an existing data directory; `dev` is `serve --dev`.
    pub async fn start_in(dir: &Path, env: &[(&str, &str)], dev: bool) -> Herald {
        let vars: BTreeMap<String, String> = settings(dir, env).into_iter().collect();
        let mut cfg = herald::config::Config::load(None, &vars).expect("test configuration");
        if dev {
            cfg.apply_dev();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(herald::run(cfg, listener, async move {
            let _ = rx.await;
        }));
        let h = Herald {
            api: Api::new(addr),
            data_dir: dir.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
            _tmp: None,
        };
        h.wait_ready().await;
        h
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = &self.task
                && t.is_finished()
            {
                panic!("herald::run ended before serving (see the error above)");
            }
            let ok = self
                .client
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not serve within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Triggers the graceful shutdown and waits for `run` to return its result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("herald::run task"),
            None => Ok(()),
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The real `herald` binary as a child process (`serve`); killed when dropped.
pub struct HeraldProcess {
    api: Api,
    /// The banner it printed at start, line by line.
    pub banner: Vec<String>,
    /// The process.
    pub child: Child,
    /// The data directory.
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for HeraldProcess {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl HeraldProcess {
    /// Starts `bin serve --dev` (pass `env!("CARGO_BIN_EXE_herald")`) with a fresh data
    /// directory and extra environment.
    pub fn start(bin: &str, env: &[(&str, &str)]) -> HeraldProcess {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut h = Self::start_in(bin, tmp.path(), env, true);
        h._tmp = Some(tmp);
        h
    }

    /// Starts the binary on an existing data directory; waits for its banner's address.
    pub fn start_in(bin: &str, dir: &Path, env: &[(&str, &str)], dev: bool) -> HeraldProcess {
        Self::spawn(bin, dir, env, dev, Stdio::inherit())
    }

    /// Starts `bin serve --dev` on an existing data directory with its logs (stderr) appended
    /// to `log`.
    pub fn start_logged(bin: &str, dir: &Path, env: &[(&str, &str)], log: &Path) -> HeraldProcess {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log file");
        Self::spawn(bin, dir, env, true, Stdio::from(file))
    }

    fn spawn(
        bin: &str,
        dir: &Path,
        env: &[(&str, &str)],
        dev: bool,
        stderr: Stdio,
    ) -> HeraldProcess {
        let mut cmd = Command::new(bin);
        cmd.arg("serve");
        if dev {
            cmd.arg("--dev");
        }
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(settings(dir, env))
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The banner runs from "listening on" to "Press Ctrl-C"; the rest is read and
            // dropped so the process never blocks on a full pipe.
            let mut banner: Option<Vec<String>> = Some(Vec::new());
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(lines) = banner.as_mut() {
                    let end = line.starts_with("Press Ctrl-C");
                    lines.push(line);
                    if end {
                        let _ = tx.send(banner.take().unwrap_or_default());
                    }
                }
            }
        });
        let banner = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("herald did not print its banner within 30 s");
        let addr: SocketAddr = banner
            .iter()
            .find_map(|l| l.split("listening on ").nth(1))
            .expect("the banner names the listening address")
            .trim()
            .parse()
            .expect("address");
        HeraldProcess {
            api: Api::new(addr),
            banner,
            child,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Sends SIGKILL and reaps the process.
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

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
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

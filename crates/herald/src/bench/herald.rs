//! The Herald under test: child processes (`serve --dev`, embedded store in a temporary
//! directory, or N nodes on a fresh PostgreSQL database), their API, and their `/metrics`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::procfs;
use super::tools::Killed;

/// The API key every Herald child is started with.
pub const KEY: &str = "bench-key";

/// One Herald child process; killed when dropped, and its directory removed unless it was
/// started in a directory the caller owns ([`Launcher::start_in`]).
pub struct HeraldProcess {
    proc: Killed,
    pub addr: SocketAddr,
    dir: PathBuf,
    owns_dir: bool,
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl HeraldProcess {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn rss_kib(&self, field: &str) -> u64 {
        procfs::status_kib(self.pid(), field)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops Herald as an operator would (SIGTERM: it finishes what is in flight and closes
    /// its store) and waits up to `grace` for it to exit; killed after that. Returns whether
    /// it exited by itself.
    pub async fn terminate(mut self, grace: std::time::Duration) -> Result<bool> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).context("pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("SIGTERM to Herald")?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.proc.0.try_wait()?.is_some() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(false)
    }
}

/// The Herald nodes of one phase (one, or several sharing a PostgreSQL database).
pub struct Cluster {
    pub nodes: Vec<HeraldProcess>,
    /// Requests the receiver gets per attempt: 1, or 2 with an operator destination on
    /// `attempt.*` pointing at the same receiver.
    pub deliveries_per_attempt: u64,
    // Dropped after the nodes (fields drop in order).
    pub db: Option<herald_store::pg::TemporaryDatabase>,
}

impl Cluster {
    /// One embedded-store node.
    pub fn single(node: HeraldProcess) -> Cluster {
        Cluster {
            nodes: vec![node],
            deliveries_per_attempt: 1,
            db: None,
        }
    }

    pub fn first(&self) -> &HeraldProcess {
        &self.nodes[0]
    }

    /// `POST /api/v1/publish` of every node.
    pub fn publish_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}/api/v1/publish", n.url()))
            .collect()
    }

    /// CPU ticks used so far by all nodes together.
    pub fn ticks(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| procfs::process_ticks(n.pid()))
            .sum()
    }

    /// Highest value of a `/proc/<pid>/status` field across nodes.
    pub fn max_kib(&self, field: &str) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.rss_kib(field))
            .max()
            .unwrap_or(0)
    }

    /// A metric summed over every node.
    pub async fn metric(&self, c: &reqwest::Client, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut sum = 0.0;
        for n in &self.nodes {
            if let Ok(text) = scrape(c, n).await {
                sum += metric_sum(&text, name, labels);
            }
        }
        sum
    }

    /// Events accepted so far (all nodes).
    pub async fn accepted(&self, c: &reqwest::Client) -> u64 {
        self.metric(
            c,
            "herald_events_published_total",
            &[("outcome", "accepted")],
        )
        .await as u64
    }

    /// Successful webhook attempts so far (all nodes).
    pub async fn successes(&self, c: &reqwest::Client) -> u64 {
        self.metric(c, "herald_attempts_total", &[("outcome", "success")])
            .await as u64
    }

    /// Store commits (group-commit batches of every writer) so far (all nodes).
    pub async fn commits(&self, c: &reqwest::Client) -> u64 {
        self.metric(c, "herald_store_commit_duration_seconds_count", &[])
            .await as u64
    }

    /// Publish commits so far (all nodes). Only PostgreSQL counts them apart: the embedded
    /// store's group commits mix publishes and results (writer `group`), so this is 0 there.
    pub async fn publish_commits(&self, c: &reqwest::Client) -> u64 {
        self.metric(
            c,
            "herald_store_commit_duration_seconds_count",
            &[("writer", "publish")],
        )
        .await as u64
    }
}

/// How to start Herald children.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The executable (`--herald-bin`, or this one).
    pub bin: PathBuf,
    /// The parent of every temporary directory.
    pub tmp: PathBuf,
}

impl Launcher {
    /// One embedded-store node, or `nodes` nodes on a fresh database of the server `pg`
    /// points at.
    pub async fn cluster(
        &self,
        tag: &str,
        pg: Option<&str>,
        nodes: usize,
        extra: &[(&str, &str)],
    ) -> Result<Cluster> {
        let Some(admin) = pg else {
            return Ok(Cluster {
                nodes: vec![self.start(tag, extra)?],
                deliveries_per_attempt: 1,
                db: None,
            });
        };
        let db = self.database(admin, tag).await?;
        self.nodes_on(db, tag, nodes, extra).await
    }

    /// A fresh database for phase `tag`, dropped when the value is.
    pub async fn database(
        &self,
        admin: &str,
        tag: &str,
    ) -> Result<herald_store::pg::TemporaryDatabase> {
        let name = format!("herald_bench_{}_{tag}", std::process::id());
        herald_store::pg::TemporaryDatabase::create(admin, &name)
            .await
            .with_context(|| {
                format!(
                    "creating database {name} on {}",
                    herald_store::pg::describe_url(admin)
                )
            })
    }

    /// Applies Herald's migrations to `url` (`herald migrate`).
    pub fn migrate(&self, url: &str) -> Result<()> {
        let out = Command::new(&self.bin)
            .arg("migrate")
            .env("HERALD_DATABASE_URL", url)
            .env("HERALD_LOG_LEVEL", "warn")
            .env_remove("HERALD_CONFIG")
            .stdin(Stdio::null())
            .output()
            .context("running herald migrate")?;
        if !out.status.success() {
            bail!(
                "herald migrate failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `nodes` Herald processes on `db`, sharing one encryption key.
    pub async fn nodes_on(
        &self,
        db: herald_store::pg::TemporaryDatabase,
        tag: &str,
        nodes: usize,
        extra: &[(&str, &str)],
    ) -> Result<Cluster> {
        let key = herald_store::seal::Keyring::generate_key();
        let mut started = Vec::new();
        for n in 0..nodes.max(1) {
            let mut env = vec![
                ("HERALD_DATABASE_URL", db.url()),
                ("HERALD_ENCRYPTION_KEY", key.expose()),
            ];
            env.extend_from_slice(extra);
            started.push(self.start(&format!("{tag}-{n}"), &env)?);
        }
        Ok(Cluster {
            nodes: started,
            deliveries_per_attempt: 1,
            db: Some(db),
        })
    }

    fn start(&self, tag: &str, extra: &[(&str, &str)]) -> Result<HeraldProcess> {
        let dir = self.tmp.join(format!("herald-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        self.spawn(dir, true, extra)
    }

    /// One embedded-store node on the data directory `dir`, which the caller owns (it is
    /// neither emptied first nor removed when the node is dropped): a second start on the
    /// same store.
    pub fn start_in(&self, dir: &Path, extra: &[(&str, &str)]) -> Result<HeraldProcess> {
        self.spawn(dir.to_path_buf(), false, extra)
    }

    fn spawn(&self, dir: PathBuf, owns_dir: bool, extra: &[(&str, &str)]) -> Result<HeraldProcess> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--dev"])
            .env("HERALD_HOST", "127.0.0.1")
            .env("HERALD_PORT", "0")
            .env("HERALD_DATA_DIR", &dir)
            .env("HERALD_API_KEY", KEY)
            .env("HERALD_LOG_LEVEL", "warn")
            .env_remove("HERALD_CONFIG")
            .env_remove("HERALD_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = Killed(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?,
        );
        let stdout = child.0.stdout.take().context("herald stdout")?;
        let mut addr = None;
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = Some(rest.trim().parse()?);
                break;
            }
        }
        let Some(addr) = addr else {
            bail!("{} exited before listening", self.bin.display())
        };
        // Keep reading the rest of its output so Herald never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(HeraldProcess {
            proc: child,
            addr,
            dir,
            owns_dir,
        })
    }
}

/// The bench's HTTP client for setup calls and scrapes (not the load generator).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// One API call; a non-2xx answer is an error.
pub async fn api(
    c: &reqwest::Client,
    h: &HeraldProcess,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Result<Value> {
    let r = c
        .request(method, format!("{}/api/v1{path}", h.url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {v}");
    }
    Ok(v)
}

/// A tenant with `destinations` webhook destinations to `url/d0`, `url/d1`, …; returns their
/// ids.
pub async fn setup(
    c: &reqwest::Client,
    h: &HeraldProcess,
    tenant: &str,
    url: &str,
    destinations: usize,
) -> Result<Vec<String>> {
    api(
        c,
        h,
        reqwest::Method::PUT,
        &format!("/tenants/{tenant}"),
        json!({}),
    )
    .await?;
    let mut ids = Vec::new();
    for i in 0..destinations {
        let d = api(
            c,
            h,
            reqwest::Method::POST,
            &format!("/tenants/{tenant}/destinations"),
            json!({"type": "webhook", "topics": "*", "config": {"url": format!("{url}/d{i}")}}),
        )
        .await?;
        ids.push(d["id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
}

async fn scrape(c: &reqwest::Client, h: &HeraldProcess) -> Result<String> {
    Ok(c.get(format!("{}/metrics", h.url()))
        .bearer_auth(KEY)
        .send()
        .await?
        .text()
        .await?)
}

/// The sum of every sample of family `name` (exact name) whose labels include `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if !all {
                return None;
            }
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// The temporary directory of a run, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_name_and_labels() {
        let text = "# HELP herald_attempts_total Delivery attempts\n\
# TYPE herald_attempts_total counter\n\
herald_attempts_total{outcome=\"success\",destination_type=\"webhook\"} 120\n\
herald_attempts_total{outcome=\"failed\",destination_type=\"webhook\"} 3\n\
herald_attempts_total{outcome=\"success\",destination_type=\"nats\"} 5\n\
herald_attempts_total_other{outcome=\"success\"} 1000\n\
herald_store_commit_duration_seconds_count{store=\"sqlite\",writer=\"group\"} 40\n\
herald_store_commit_duration_seconds_count{store=\"sqlite\",writer=\"attempts\"} 2\n\
herald_events_published_total{outcome=\"accepted\"} 7\n";
        assert_eq!(
            metric_sum(text, "herald_attempts_total", &[("outcome", "success")]),
            125.0
        );
        assert_eq!(
            metric_sum(
                text,
                "herald_attempts_total",
                &[("outcome", "success"), ("destination_type", "webhook")]
            ),
            120.0
        );
        assert_eq!(
            metric_sum(text, "herald_store_commit_duration_seconds_count", &[]),
            42.0
        );
        assert_eq!(metric_sum(text, "herald_events_published_total", &[]), 7.0);
        assert_eq!(metric_sum(text, "nothing", &[]), 0.0);
    }
}

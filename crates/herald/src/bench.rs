//! `herald bench`: measures Herald on this machine and prints figures and ratios.
//!
//! It starts a fast local HTTP receiver and a load generator in this process and Herald itself
//! as a child process (this same executable, `serve --dev`, embedded store in a temporary
//! directory), so Herald's memory is measured alone. With `--database-url` Herald runs on a
//! fresh PostgreSQL database created on that server (and dropped afterwards); with
//! `--nodes N` too, N Herald processes share it and the load generator spreads requests over
//! them round-robin, as a load balancer would. Every figure comes from one run:
//!
//! 1. baseline: a plain HTTP client posting to the receiver, no Herald;
//! 2. end-to-end delivery throughput through Herald, and its ratio to the baseline;
//! 3. sustained publish rate with 1 and with 10 destinations per event;
//! 4. publish → first attempt latency (p50/p99) at a moderate rate;
//! 5. Herald's peak RSS, and its RSS holding 1,000,000 pending deliveries (receiver down);
//! 6. fairness: tenant Y's delivery throughput alone, and beside tenant X's 50 destinations
//!    whose server accepts connections and never answers (100 events published to them), and
//!    the ratio of the two (`--fairness-only` runs just this scenario).
//!
//! This is a measurement, not a test: nothing here passes or fails except the final table's
//! comparison with the targets in SPEC §7.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::http::HeaderMap;
use parking_lot::Mutex;
use serde_json::{Value, json};

const KEY: &str = "bench-key";

/// Benchmark options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds per throughput phase.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Concurrent HTTP clients in the load generator.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Pending deliveries for the memory phase (events × 10 destinations).
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Skip the memory-with-backlog phase.
    #[arg(long)]
    pub skip_backlog: bool,
    /// Run Herald on PostgreSQL: a fresh database is created on the server this URL points
    /// at (its own database is only used to connect) and dropped at the end.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Herald processes sharing the PostgreSQL database (with `--database-url`).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Add an operator destination subscribed to `attempt.success` and `attempt.failed`
    /// (a webhook to a second local receiver), so every attempt also writes an operator event
    /// and one more delivery: compare a run with and without it to see what they cost.
    #[arg(long)]
    pub operator_attempt_events: bool,
    /// Run only the fairness scenario (tenant Y beside tenant X's 50 hung destinations).
    #[arg(long)]
    pub fairness_only: bool,
}

/// A server that accepts TCP connections and never reads or answers: a hung receiver.
/// Returns its address and the number of connections it accepted.
async fn start_black_hole() -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            // Held open, never read: the client's request waits for its timeout.
            held.push(socket);
        }
    });
    Ok((addr, accepted))
}

/// Tenant Y's end-to-end delivery rate: events published for `seconds` at full speed, counted
/// at the receiver from the first publish until all have arrived.
async fn delivery_rate(args: &BenchArgs, h: &Cluster, sink: &Sink, tenant: &str, run: &str) -> f64 {
    let before = sink.hits.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let rate = publish_phase(args, h, tenant, run).await;
    let published = (rate * args.seconds as f64).round() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.hits.load(Ordering::Relaxed) - before < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (sink.hits.load(Ordering::Relaxed) - before) as f64 / t0.elapsed().as_secs_f64()
}

/// The fairness scenario; returns (Y alone, Y beside X's hung destinations) in deliveries/s.
async fn fairness(args: &BenchArgs, sink: &Sink, sink_url: &str) -> Result<(f64, f64)> {
    print!("[6/6] fairness: tenant Y alone … ");
    flush();
    // X's failures must not disable its destinations while Y is measured.
    let h = start_cluster(
        args,
        "fair",
        &[("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "0")],
    )
    .await?;
    let c = client();
    setup(&c, h.first(), "fair-y", sink_url, 1).await?;
    if h.nodes.len() > 1 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let alone = delivery_rate(args, &h, sink, "fair-y", "fy1").await;
    println!("{alone:.0} deliveries/s");
    print!("      tenant Y beside tenant X's 50 hung destinations (100 events) … ");
    flush();
    let (hole, accepted) = start_black_hole().await?;
    setup(&c, h.first(), "fair-x", &format!("http://{hole}"), 50).await?;
    if h.nodes.len() > 1 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..100u64 {
        let body = json!({"tenant_id": "fair-x", "topic": "bench.hung", "id": format!("fx-{i}"), "data": {"i": i}});
        api(&c, h.node(i), reqwest::Method::POST, "/publish", body).await?;
    }
    // X's attempts are out before Y is measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::Relaxed) < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let beside = delivery_rate(args, &h, sink, "fair-y", "fy2").await;
    println!(
        "{beside:.0} deliveries/s ({:.0} %; the hung server accepted {} connections)",
        100.0 * beside / alone.max(f64::MIN_POSITIVE),
        accepted.load(Ordering::Relaxed)
    );
    Ok((alone, beside))
}

fn print_fairness(alone: f64, beside: f64) {
    let ratio = beside / alone.max(f64::MIN_POSITIVE);
    println!("| tenant Y alone | {alone:.0} deliveries/s | — | — |");
    println!(
        "| tenant Y beside 50 hung destinations of tenant X | {beside:.0} deliveries/s | — | — |"
    );
    println!(
        "| fairness ratio (beside / alone) | {:.0} % | ≥ 80 % | {} |",
        ratio * 100.0,
        verdict(ratio >= 0.8)
    );
}

/// The receiver: counts requests and notes when each event id first arrived.
#[derive(Clone, Default)]
struct Sink {
    hits: Arc<AtomicU64>,
    first_seen: Arc<Mutex<HashMap<String, Instant>>>,
    track: Arc<AtomicBool>,
}

async fn start_sink() -> Result<(SocketAddr, Sink)> {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let s = sink.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, _body: Bytes| {
        let s = s.clone();
        async move {
            s.hits.fetch_add(1, Ordering::Relaxed);
            if s.track.load(Ordering::Relaxed)
                && let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok())
            {
                s.first_seen
                    .lock()
                    .entry(id.to_string())
                    .or_insert_with(Instant::now);
            }
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, sink))
}

struct HeraldProcess {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl HeraldProcess {
    fn rss_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// The Herald nodes of one phase (one, or several sharing a PostgreSQL database).
struct Cluster {
    nodes: Vec<HeraldProcess>,
    // Dropped after the nodes (fields drop in order).
    _db: Option<herald_store::pg::TemporaryDatabase>,
}

impl Cluster {
    /// The node that serves request number `i`.
    fn node(&self, i: u64) -> &HeraldProcess {
        &self.nodes[(i % self.nodes.len() as u64) as usize]
    }

    fn first(&self) -> &HeraldProcess {
        &self.nodes[0]
    }

    /// Highest value of a `/proc/<pid>/status` field across nodes.
    fn max_rss_kib(&self, field: &str) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.rss_kib(field))
            .max()
            .unwrap_or(0)
    }
}

async fn start_cluster(args: &BenchArgs, tag: &str, extra: &[(&str, &str)]) -> Result<Cluster> {
    let Some(admin) = &args.database_url else {
        return Ok(Cluster {
            nodes: vec![start_herald(tag, extra)?],
            _db: None,
        });
    };
    let name = format!("herald_bench_{}_{tag}", std::process::id());
    let db = herald_store::pg::TemporaryDatabase::create(admin, &name)
        .await
        .with_context(|| {
            format!(
                "creating database {name} on {}",
                herald_store::pg::describe_url(admin)
            )
        })?;
    let mut nodes = Vec::new();
    // Every node of a shared database seals destination secrets with the same key.
    let key = herald_store::seal::Keyring::generate_key();
    for n in 0..args.nodes.max(1) {
        let mut env = vec![
            ("HERALD_DATABASE_URL", db.url()),
            ("HERALD_ENCRYPTION_KEY", key.expose()),
        ];
        env.extend_from_slice(extra);
        nodes.push(start_herald(&format!("{tag}-{n}"), &env)?);
    }
    Ok(Cluster {
        nodes,
        _db: Some(db),
    })
}

fn start_herald(tag: &str, extra: &[(&str, &str)]) -> Result<HeraldProcess> {
    let dir = std::env::temp_dir().join(format!("herald-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve", "--dev"])
        .env("HERALD_HOST", "127.0.0.1")
        .env("HERALD_PORT", "0")
        .env("HERALD_DATA_DIR", &dir)
        .env("HERALD_API_KEY", KEY)
        .env("HERALD_LOG_LEVEL", "warn")
        .env_remove("HERALD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("starting herald")?;
    let stdout = child.stdout.take().context("herald stdout")?;
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
        bail!("herald exited before listening")
    };
    // Keep reading the rest of its output so Herald never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(HeraldProcess { child, addr, dir })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client")
}

async fn api(
    c: &reqwest::Client,
    h: &HeraldProcess,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Result<Value> {
    let r = c
        .request(method, format!("http://{}/api/v1{path}", h.addr))
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

async fn setup(
    c: &reqwest::Client,
    h: &HeraldProcess,
    tenant: &str,
    url: &str,
    destinations: usize,
) -> Result<()> {
    api(
        c,
        h,
        reqwest::Method::PUT,
        &format!("/tenants/{tenant}"),
        json!({}),
    )
    .await?;
    for i in 0..destinations {
        api(
            c,
            h,
            reqwest::Method::POST,
            &format!("/tenants/{tenant}/destinations"),
            json!({"type": "webhook", "topics": "*", "config": {"url": format!("{url}/d{i}")}}),
        )
        .await?;
    }
    Ok(())
}

/// Runs `concurrency` loops of `op` for `dur`; returns completed operations.
async fn hammer<F, Fut>(concurrency: usize, dur: Duration, op: F) -> u64
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + dur;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, done, seq) = (op.clone(), done.clone(), seq.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    if op(seq.fetch_add(1, Ordering::Relaxed)).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed)
}

async fn publish_phase(args: &BenchArgs, h: &Cluster, tenant: &str, run: &str) -> f64 {
    let c = client();
    let urls: Arc<Vec<String>> = Arc::new(
        h.nodes
            .iter()
            .map(|n| format!("http://{}/api/v1/publish", n.addr))
            .collect(),
    );
    let tenant = tenant.to_string();
    let run = run.to_string();
    let dur = Duration::from_secs(args.seconds);
    let n = hammer(args.concurrency, dur, move |i| {
        let (c, tenant, run) = (c.clone(), tenant.clone(), run.clone());
        let url = urls[(i % urls.len() as u64) as usize].clone();
        async move {
            let body = json!({"tenant_id": tenant, "topic": "bench.event", "id": format!("{run}-{i}"), "data": {"i": i, "pad": "x".repeat(200)}});
            matches!(c.post(&url).bearer_auth(KEY).json(&body).send().await, Ok(r) if r.status().as_u16() == 202)
        }
    })
    .await;
    n as f64 / dur.as_secs_f64()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> Result<()> {
    if args.nodes > 1 && args.database_url.is_none() {
        bail!("--nodes needs --database-url: several nodes share one PostgreSQL database");
    }
    let store = match &args.database_url {
        None => "embedded store".to_string(),
        Some(u) => format!(
            "PostgreSQL at {}, {} node{}",
            herald_store::pg::describe_url(u),
            args.nodes.max(1),
            if args.nodes > 1 { "s" } else { "" }
        ),
    };
    println!(
        "herald bench: {} cores, {} s per phase, {} client connections, {store}",
        num_cpus(),
        args.seconds,
        args.concurrency
    );
    let (sink_addr, sink) = start_sink().await?;
    let sink_url = format!("http://{sink_addr}");
    let dur = Duration::from_secs(args.seconds);
    if args.fairness_only {
        let (alone, beside) = fairness(&args, &sink, &sink_url).await?;
        println!();
        println!("| measure | figure | target | verdict |");
        println!("|---|---|---|---|");
        print_fairness(alone, beside);
        return Ok(());
    }

    // 1. Baseline: plain client → receiver.
    print!("[1/6] baseline client → receiver … ");
    flush();
    let c = client();
    let body = serde_json::to_vec(&json!({"i": 1, "pad": "x".repeat(200)}))?;
    let (u, b) = (format!("{sink_url}/baseline"), body.clone());
    let n = hammer(args.concurrency, dur, move |_| {
        let (c, u, b) = (c.clone(), u.clone(), b.clone());
        async move {
            c.post(&u)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .is_ok()
        }
    })
    .await;
    let baseline = n as f64 / dur.as_secs_f64();
    println!("{baseline:.0} req/s");

    // 2 + 3. Herald: delivery throughput and publish rate (1 destination).
    let h = start_cluster(&args, "main", &[]).await?;
    let c = client();
    setup(&c, h.first(), "one", &sink_url, 1).await?;
    setup(&c, h.first(), "ten", &sink_url, 10).await?;
    let ops_sink = if args.operator_attempt_events {
        let (addr, ops) = start_sink().await?;
        api(
            &c,
            h.first(),
            reqwest::Method::POST,
            "/operator-events/destinations",
            json!({"type": "webhook", "topics": ["attempt.success", "attempt.failed"],
                   "config": {"url": format!("http://{addr}/ops")}}),
        )
        .await?;
        println!(
            "      operator destination on attempt.success/attempt.failed: every attempt also writes an operator event and its delivery"
        );
        Some(ops)
    } else {
        None
    };
    if h.nodes.len() > 1 {
        // Other nodes learn about the destinations from store notices; give them a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    print!("[2/6] publish rate, 1 destination per event … ");
    flush();
    let before = sink.hits.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let publish_1 = publish_phase(&args, &h, "one", "p1").await;
    println!("{publish_1:.0} events/s");

    // Delivery throughput: what the receiver got per second while Herald ran flat out,
    // measured from the start of publishing until the backlog drained.
    let published = (publish_1 * dur.as_secs_f64()).round() as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    while sink.hits.load(Ordering::Relaxed) - before < published && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = sink.hits.load(Ordering::Relaxed) - before;
    let delivery = delivered as f64 / t0.elapsed().as_secs_f64();
    println!(
        "      end-to-end deliveries: {delivered} in {:.1} s = {delivery:.0} deliveries/s",
        t0.elapsed().as_secs_f64()
    );

    print!("[3/6] publish rate, 10 destinations per event … ");
    flush();
    let before = sink.hits.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let publish_10 = publish_phase(&args, &h, "ten", "p10").await;
    println!(
        "{publish_10:.0} events/s ({:.0} deliveries/s owed)",
        publish_10 * 10.0
    );
    let owed = (publish_10 * dur.as_secs_f64()).round() as u64 * 10;
    let drain_deadline = Instant::now() + Duration::from_secs(180);
    while sink.hits.load(Ordering::Relaxed) - before < owed && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered10 = sink.hits.load(Ordering::Relaxed) - before;
    let delivery10 = delivered10 as f64 / t0.elapsed().as_secs_f64();
    println!(
        "      end-to-end deliveries: {delivered10} in {:.1} s = {delivery10:.0} deliveries/s",
        t0.elapsed().as_secs_f64()
    );
    // The ratio is taken from the better of the two phases: with one destination per event,
    // every delivery also pays for its own publish request, which the baseline does not.
    let best = delivery.max(delivery10);

    // 4. Latency at a moderate rate: 200 events/s, one at a time on a schedule.
    print!("[4/6] publish → first attempt latency at 200 events/s … ");
    flush();
    sink.track.store(true, Ordering::Relaxed);
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for i in 0..(args.seconds * 200) {
        tick.tick().await;
        let id = format!("lat-{i}");
        let start = Instant::now();
        let body =
            json!({"tenant_id": "one", "topic": "bench.latency", "id": id, "data": {"i": i}});
        let c2 = c.clone();
        let u2 = format!("http://{}/api/v1/publish", h.node(i).addr);
        tokio::spawn(async move {
            let _ = c2.post(&u2).bearer_auth(KEY).json(&body).send().await;
        });
        sent.push((id, start));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.track.store(false, Ordering::Relaxed);
    let seen = sink.first_seen.lock().clone();
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, t)| seen.get(id).map(|r| r.saturating_duration_since(*t)))
        .collect();
    lat.sort();
    let (p50, p99) = (pct(&lat, 0.50), pct(&lat, 0.99));
    println!(
        "p50 {:.2} ms, p99 {:.2} ms ({} of {} measured)",
        ms(p50),
        ms(p99),
        lat.len(),
        sent.len()
    );
    if let Some(ops) = &ops_sink {
        println!(
            "      operator attempt events delivered: {}",
            ops.hits.load(Ordering::Relaxed)
        );
    }
    let peak_main = h.max_rss_kib("VmHWM");
    drop(h);

    // 5. Memory with a large backlog: the receiver is down (connection refused), so every
    // delivery stays pending after its first failed attempt.
    let (backlog_rss, backlog_peak, pending) = if args.skip_backlog {
        (0, 0, 0)
    } else {
        let events = args.backlog / 10;
        print!(
            "[5/6] memory with {} pending deliveries ({events} events × 10 destinations, receiver down) … ",
            args.backlog
        );
        flush();
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        // Failure alerts (and with them auto-disable, which would cancel the backlog) are off,
        // and the first retry is an hour away, so the backlog stays put while it is measured.
        let h = start_cluster(
            &args,
            "backlog",
            &[
                ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "0"),
                ("HERALD_RETRY_INITIAL_SECS", "3600"),
            ],
        )
        .await?;
        setup(&c, h.first(), "down", &format!("http://{down}"), 10).await?;
        if h.nodes.len() > 1 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let urls: Arc<Vec<String>> = Arc::new(
            h.nodes
                .iter()
                .map(|n| format!("http://{}/api/v1/publish", n.addr))
                .collect(),
        );
        let next = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let (c, urls, next) = (c.clone(), urls.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= events {
                            break;
                        }
                        let url = &urls[(i % urls.len() as u64) as usize];
                        let body = json!({"tenant_id": "down", "topic": "bench.down", "id": format!("b-{i}"), "data": {"i": i}});
                        let _ = c.post(url.as_str()).bearer_auth(KEY).json(&body).send().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        // Wait for the first attempts to be made (each fails fast) so the backlog is pure retries.
        let metrics_url = format!("http://{}/metrics", h.first().addr);
        let mut pending = 0;
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let text = c
                .get(&metrics_url)
                .bearer_auth(KEY)
                .send()
                .await?
                .text()
                .await?;
            let get = |name: &str| {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().last())
                    .and_then(|v| v.parse::<f64>().ok())
            };
            pending = get("herald_pending_deliveries_total ").unwrap_or(0.0) as u64;
            let retries = get("herald_retry_backlog ").unwrap_or(0.0) as u64;
            if pending >= args.backlog && retries >= args.backlog {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let rss = h.max_rss_kib("VmRSS");
        let peak = h.max_rss_kib("VmHWM");
        println!(
            "RSS {} MiB with {pending} pending (peak {} MiB)",
            rss / 1024,
            peak / 1024
        );
        (rss, peak, pending)
    };

    let (fair_alone, fair_beside) = fairness(&args, &sink, &sink_url).await?;

    let ratio = best / baseline;
    let peak = peak_main.max(backlog_peak);
    println!();
    println!("| measure | figure | target | verdict |");
    println!("|---|---|---|---|");
    println!("| baseline client → receiver | {baseline:.0} req/s | — | — |");
    println!(
        "| Herald end-to-end deliveries, 1 destination/event | {delivery:.0} deliveries/s ({:.2} of baseline) | — | — |",
        delivery / baseline
    );
    println!(
        "| Herald end-to-end deliveries, 10 destinations/event | {delivery10:.0} deliveries/s ({:.2} of baseline) | — | — |",
        delivery10 / baseline
    );
    println!(
        "| delivery ratio to baseline (better phase) | {ratio:.2} | ≥ 0.50 | {} |",
        verdict(ratio >= 0.5)
    );
    println!(
        "| publish, 1 destination/event | {publish_1:.0} events/s | ≥ 20000 | {} |",
        verdict(publish_1 >= 20000.0)
    );
    println!("| publish, 10 destinations/event | {publish_10:.0} events/s | — | — |");
    println!(
        "| publish → first attempt p50 | {:.2} ms | — | — |",
        ms(p50)
    );
    println!(
        "| publish → first attempt p99 | {:.2} ms | < 20 ms | {} |",
        ms(p99),
        verdict(ms(p99) < 20.0)
    );
    println!("| peak RSS | {} MiB | — | — |", peak / 1024);
    if !args.skip_backlog {
        println!(
            "| RSS with {pending} pending deliveries | {} MiB | < 300 MiB | {} |",
            backlog_rss / 1024,
            verdict(pending >= args.backlog && backlog_rss < 300 * 1024)
        );
    }
    print_fairness(fair_alone, fair_beside);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Shows a progress line written with `print!` before the phase it announces runs.
fn flush() {
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

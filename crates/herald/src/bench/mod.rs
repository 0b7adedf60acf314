//! `herald bench`: measures Herald against what this machine can do, and prints figures and
//! ratios with the targets of SPEC §7 (issue 14).
//!
//! The load generator is `wrk` (one thread) and the receiver is `nginx` (one process, its own
//! worker, `return 200`, no access log), both external processes, so the bench measures
//! Herald and not itself: the bare loop wrk → nginx and a no-storage relay wrk → nginx proxy →
//! nginx are measured first with the same tools, and Herald's end-to-end delivery rate is
//! given as a ratio of that relay floor. Herald runs as a child process (`serve --dev`; the
//! executable of `--herald-bin` or this one), embedded store in a temporary directory, or N
//! nodes on a fresh PostgreSQL database. Deliveries are counted at the receiver
//! (`stub_status`) and cross-checked with Herald's own counters; CPU is utime + stime from
//! `/proc/<pid>/stat` (Herald, and every `postgres` process), not wall-clock.
//!
//! Only two measurements use in-process parts (see `probe`): the paced runs (latency at half
//! the maximum rate or at `--latency-rate`, 200 events/s light load — wrk cannot pace) and the
//! publish → first attempt timing (nginx's `$msec` has only millisecond resolution). The
//! large-store phase (`large`, `--store-events`) fills Herald through batch publish from the
//! bench's own client, and times single API requests the same way.
//!
//! This is a measurement, not a test: nothing here passes or fails except the final table's
//! comparison with the targets.

mod herald;
mod large;
mod pg;
mod probe;
mod procfs;
mod tools;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use self::herald::{Cluster, Launcher, TempDir, api, client, setup};
use self::tools::{Nginx, NginxRole, ReceiverCounter, WrkRun, WrkSummary};

/// Benchmark options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds of load per throughput phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// wrk connections (one wrk thread; split over the nodes on PostgreSQL).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// wrk connections of the overload phase.
    #[arg(long, default_value_t = 128)]
    pub overload_connections: usize,
    /// Seconds of the light-load (200 events/s) and of the idle measurement.
    #[arg(long, default_value_t = 10)]
    pub light_seconds: u64,
    /// Shorter phases (3 s of load, 5 s light and idle): a smoke run of every phase.
    #[arg(long)]
    pub quick: bool,
    /// Events per request of the batch-publish phase (1..=1000).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Publish rate (events/s) of the latency phase; default: half the end-to-end rate the
    /// embedded phase measured in this run. A fixed rate compares two builds
    /// (`--herald-bin`) at the same load.
    #[arg(long, value_name = "N")]
    pub latency_rate: Option<f64>,
    /// Fill one embedded-store Herald with this many events (batch publish, several tenants,
    /// every event delivered to a webhook on the receiver), then measure throughput, list and
    /// metrics API latencies, file size and a retention purge at that size; 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub store_events: u64,
    /// Pending deliveries for the memory phase (events × 10 destinations).
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Skip the memory-with-backlog phase.
    #[arg(long)]
    pub skip_backlog: bool,
    /// Skip the fairness phase.
    #[arg(long)]
    pub skip_fairness: bool,
    /// Run the PostgreSQL phases (1..=`--max-nodes` nodes) on this server: a fresh database
    /// is created there for each phase (its own database is only used to connect) and
    /// dropped at the end.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Run the PostgreSQL phases on postgres://postgres@127.0.0.1:5432/postgres (the same as
    /// `--database-url` with that URL).
    #[arg(long, conflicts_with = "database_url")]
    pub pg: bool,
    /// The largest number of Herald nodes sharing one PostgreSQL database.
    #[arg(long, default_value_t = 3)]
    pub max_nodes: usize,
    /// Also run this many consecutive runs on one fresh PostgreSQL database whose Herald
    /// tables have autovacuum switched off right after the migrations (needs `--pg` or
    /// `--database-url`).
    #[arg(long, default_value_t = 0)]
    pub pg_runs: usize,
    /// With `--pg-runs`: a fresh database for every run instead of one for the series.
    #[arg(long)]
    pub pg_runs_fresh: bool,
    /// Skip the embedded-store phases (with `--pg`: PostgreSQL only).
    #[arg(long)]
    pub skip_embedded: bool,
    /// Run Herald from this executable instead of this one (compare two builds with the
    /// same bench).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// Run only the fairness scenario (tenant Y beside tenant X's 50 hung destinations).
    #[arg(long)]
    pub fairness_only: bool,
    /// Add an operator destination subscribed to `attempt.success` and `attempt.failed` (a
    /// webhook to the same receiver) on the embedded store, so every attempt also writes an
    /// operator event and one more delivery: compare a run with and without it.
    #[arg(long)]
    pub operator_attempt_events: bool,
}

impl BenchArgs {
    fn pg_url(&self) -> Option<String> {
        if self.pg {
            Some(pg::DEFAULT_URL.to_string())
        } else {
            self.database_url.clone()
        }
    }

    fn load_secs(&self) -> u64 {
        if self.quick { 3 } else { self.seconds.max(1) }
    }

    fn light_secs(&self) -> u64 {
        if self.quick {
            5
        } else {
            self.light_seconds.max(1)
        }
    }
}

/// One row of the final table.
struct Row {
    measure: String,
    figure: String,
    target: String,
    verdict: String,
}

/// What one load run through Herald measured.
#[derive(Debug, Clone, Default)]
struct Drive {
    wrk: Vec<WrkSummary>,
    /// Events Herald accepted (its counter), all nodes.
    accepted: u64,
    /// Requests the receiver got.
    delivered: u64,
    /// Successful attempts Herald counted.
    successes: u64,
    /// Seconds of publishing (wrk's own duration).
    publish_secs: f64,
    /// Seconds from the first publish to the last delivery.
    e2e_secs: f64,
    /// Herald CPU (all nodes), ms.
    herald_cpu_ms: f64,
    /// PostgreSQL CPU (every postgres process), ms.
    pg_cpu_ms: f64,
    /// Store commits.
    commits: u64,
    /// Publish commits (PostgreSQL only; 0 on the embedded store).
    publish_commits: u64,
    /// Whether the receiver got everything owed before the deadline.
    complete: bool,
}

impl Drive {
    fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.publish_secs.max(1e-9)
    }
    fn deliveries_per_s(&self) -> f64 {
        self.delivered as f64 / self.e2e_secs.max(1e-9)
    }
    fn herald_ms_per_event(&self) -> f64 {
        self.herald_cpu_ms / self.accepted.max(1) as f64
    }
    fn herald_ms_per_delivery(&self) -> f64 {
        self.herald_cpu_ms / self.delivered.max(1) as f64
    }
    fn pg_ms_per_event(&self) -> f64 {
        self.pg_cpu_ms / self.accepted.max(1) as f64
    }
    fn commits_per_s(&self) -> f64 {
        self.commits as f64 / self.e2e_secs.max(1e-9)
    }
    /// Herald's and PostgreSQL's CPU per event relative to `one`'s (a single node's run).
    fn cpu_relative_to(&self, one: &Drive) -> (f64, f64) {
        (
            self.herald_ms_per_event() / one.herald_ms_per_event().max(1e-12),
            self.pg_ms_per_event() / one.pg_ms_per_event().max(1e-12),
        )
    }
    /// Accepted events per publish commit: how large the group commits were.
    fn events_per_publish_commit(&self) -> f64 {
        self.accepted as f64 / self.publish_commits.max(1) as f64
    }
    fn errors(&self) -> u64 {
        self.wrk.iter().map(|w| w.non_2xx + w.socket_errors).sum()
    }
}

/// Counters at the start of a load run.
struct Snapshot {
    mark: tools::Mark,
    accepted: u64,
    successes: u64,
    commits: u64,
    publish_commits: u64,
    ticks: u64,
    pg_ticks: u64,
    at: Instant,
}

/// A load phase's shape.
#[derive(Clone, Copy)]
struct Load<'a> {
    tenant: &'a str,
    /// Deliveries owed per accepted event.
    fanout: u64,
    connections: usize,
    secs: u64,
    /// Events per request (1 = `POST /publish`).
    batch: usize,
    /// Wait until everything accepted has been delivered.
    wait: bool,
}

/// The bench's state: tools, the receiver, Herald's launcher, and the rows so far.
struct Bench {
    args: BenchArgs,
    wrk: PathBuf,
    nginx: PathBuf,
    tmp: TempDir,
    receiver: Nginx,
    counter: ReceiverCounter,
    launcher: Launcher,
    http: reqwest::Client,
    ticks: u64,
    rows: Vec<Row>,
    scripts: u64,
}

impl Bench {
    fn row(&mut self, measure: impl Into<String>, figure: impl Into<String>) {
        self.rows.push(Row {
            measure: measure.into(),
            figure: figure.into(),
            target: "—".into(),
            verdict: "—".into(),
        });
    }

    fn judged(
        &mut self,
        measure: impl Into<String>,
        figure: impl Into<String>,
        target: &str,
        ok: bool,
    ) {
        self.rows.push(Row {
            measure: measure.into(),
            figure: figure.into(),
            target: target.into(),
            verdict: if ok { "met" } else { "MISSED" }.into(),
        });
    }

    fn ms(&self, ticks: u64) -> f64 {
        procfs::ticks_to(ticks, self.ticks).as_secs_f64() * 1000.0
    }

    fn script(&mut self, text: &str) -> Result<PathBuf> {
        self.scripts += 1;
        let p = self.tmp.path().join(format!("s{}.lua", self.scripts));
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// wrk alone against `url` (bare loop, relay): req/s.
    async fn loop_rate(&mut self, url: &str) -> Result<f64> {
        let script = self.script(&tools::receiver_script())?;
        let run = WrkRun {
            connections: self.args.connections,
            seconds: self.args.load_secs(),
            script,
            url: format!("{url}/d0"),
            script_args: vec![],
        };
        let s = tools::run_wrk(&self.wrk, &[run]).await?;
        let s = s[0];
        if s.non_2xx + s.socket_errors > 0 {
            bail!(
                "wrk → {url}: {} non-2xx answers, {} socket errors",
                s.non_2xx,
                s.socket_errors
            );
        }
        Ok(s.rate)
    }

    /// Publishes with wrk (one process per node) and, when asked, waits until the receiver
    /// has everything owed.
    async fn drive(&mut self, h: &Cluster, load: Load<'_>, run: &str) -> Result<Drive> {
        let snap = self.begin(h).await?;
        let wrk = self.publish(h, load, run).await?;
        self.settle(h, snap, wrk, load, 0).await
    }

    /// The counters a load run is measured from.
    async fn begin(&mut self, h: &Cluster) -> Result<Snapshot> {
        Ok(Snapshot {
            mark: self.counter.mark()?,
            accepted: h.accepted(&self.http).await,
            successes: h.successes(&self.http).await,
            commits: h.commits(&self.http).await,
            publish_commits: h.publish_commits(&self.http).await,
            ticks: h.ticks(),
            pg_ticks: if h.db.is_some() {
                procfs::postgres_ticks()
            } else {
                0
            },
            at: Instant::now(),
        })
    }

    /// wrk publishing to every node at once (connections split over them).
    async fn publish(&mut self, h: &Cluster, load: Load<'_>, run: &str) -> Result<Vec<WrkSummary>> {
        let script = self.script(&tools::publish_script(
            herald::KEY,
            load.tenant,
            "bench.event",
            load.batch,
        ))?;
        let runs: Vec<WrkRun> = tools::split_connections(load.connections, h.nodes.len())
            .into_iter()
            .zip(&h.nodes)
            .enumerate()
            .map(|(i, (conns, node))| WrkRun {
                connections: conns,
                seconds: load.secs,
                script: script.clone(),
                url: node.url(),
                script_args: vec![format!("{run}n{i}-")],
            })
            .collect();
        tools::run_wrk(&self.wrk, &runs).await
    }

    /// Waits (when `load.wait`) until the receiver has every delivery owed for the events
    /// accepted since `snap` — less `elsewhere` events whose deliveries go to another
    /// receiver — and measures.
    async fn settle(
        &mut self,
        h: &Cluster,
        snap: Snapshot,
        wrk: Vec<WrkSummary>,
        load: Load<'_>,
        elsewhere: u64,
    ) -> Result<Drive> {
        let publish_secs = wrk.iter().map(|w| w.seconds).fold(0.0, f64::max);
        let accepted = (h.accepted(&self.http).await - snap.accepted).saturating_sub(elsewhere);
        let owed = accepted * load.fanout * h.deliveries_per_attempt;
        let mut delivered = self.counter.since(snap.mark)?;
        let mut last = Instant::now();
        if load.wait {
            // Until everything owed arrived, or nothing arrived for 15 s.
            let mut progress = Instant::now();
            while delivered < owed && progress.elapsed() < Duration::from_secs(15) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = self.counter.since(snap.mark)?;
                if now > delivered {
                    progress = Instant::now();
                    last = progress;
                    delivered = now;
                }
            }
        }
        let complete = delivered >= owed;
        let e2e_secs = last.duration_since(snap.at).as_secs_f64();
        let herald_cpu_ms = self.ms(h.ticks() - snap.ticks);
        let pg_cpu_ms = if h.db.is_some() {
            self.ms(procfs::postgres_ticks() - snap.pg_ticks)
        } else {
            0.0
        };
        let successes = (h.successes(&self.http).await - snap.successes).saturating_sub(elsewhere);
        let commits = h.commits(&self.http).await - snap.commits;
        let publish_commits = h.publish_commits(&self.http).await - snap.publish_commits;
        Ok(Drive {
            wrk,
            accepted,
            delivered,
            successes,
            publish_secs,
            e2e_secs,
            herald_cpu_ms,
            pg_cpu_ms,
            commits,
            publish_commits,
            complete,
        })
    }

    fn describe(&self, d: &Drive, fanout: u64) -> String {
        let owed = d.accepted * fanout;
        format!(
            "accepted {} in {:.1} s ({:.0}/s), delivered {} of {owed} in {:.1} s ({:.0}/s), Herald counted {} successes{}{}",
            d.accepted,
            d.publish_secs,
            d.accepted_per_s(),
            d.delivered,
            d.e2e_secs,
            d.deliveries_per_s(),
            d.successes,
            if d.errors() > 0 {
                format!(", wrk saw {} errors", d.errors())
            } else {
                String::new()
            },
            if d.complete { "" } else { " — INCOMPLETE" },
        )
    }
}

fn progress(s: &str) {
    println!("{s}");
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> Result<()> {
    let (wrk, nginx) = tools::find_tools()?;
    let pg_url = args.pg_url();
    if args.pg_runs > 0 && pg_url.is_none() {
        bail!("--pg-runs needs --pg or --database-url");
    }
    if !(1..=1000).contains(&args.batch_size) {
        bail!("--batch-size must be 1..=1000");
    }
    if let Some(r) = args.latency_rate
        && !(r.is_finite() && r >= 1.0)
    {
        bail!("--latency-rate must be at least 1 event/s");
    }
    let bin = match &args.herald_bin {
        Some(p) => {
            std::fs::canonicalize(p).with_context(|| format!("--herald-bin {}", p.display()))?
        }
        None => std::env::current_exe()?,
    };
    let argv: Vec<String> = std::env::args().collect();
    println!("herald bench");
    println!("command: {}", argv.join(" "));
    println!("herald under test: {}", bin.display());
    println!(
        "machine: {} cores, load average {} at start",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        procfs::load_average()
    );
    println!(
        "tools: {} (1 thread × {} connections), {} (1 worker, return 200, access_log off)",
        wrk.display(),
        args.connections,
        nginx.display()
    );
    let tmp = TempDir::new()?;
    let receiver = Nginx::start(
        &nginx,
        NginxRole::Receiver {
            port: tools::free_port()?,
            status_port: tools::free_port()?,
        },
        tmp.path().join("receiver"),
    )?;
    let counter = ReceiverCounter::new(receiver.status.context("receiver status")?);
    let mut b = Bench {
        launcher: Launcher {
            bin,
            tmp: tmp.path().to_path_buf(),
        },
        args,
        wrk,
        nginx,
        tmp,
        receiver,
        counter,
        http: client(),
        ticks: procfs::clock_ticks(),
        rows: Vec::new(),
        scripts: 0,
    };
    let started = Instant::now();
    // Ctrl-C or SIGTERM ends the phases early: dropping them kills every child and removes
    // the temporary directories and databases, and the rows so far are still printed.
    let result = tokio::select! {
        r = phases(&mut b, pg_url.as_deref()) => r,
        s = interrupted() => Err(anyhow::anyhow!("stopped by {s}")),
    };
    println!();
    println!("| measure | figure | target | verdict |");
    println!("|---|---|---|---|");
    for r in &b.rows {
        println!(
            "| {} | {} | {} | {} |",
            r.measure, r.figure, r.target, r.verdict
        );
    }
    println!();
    println!(
        "load average {} at end; {:.0} s in all",
        procfs::load_average(),
        started.elapsed().as_secs_f64()
    );
    result
}

async fn phases(b: &mut Bench, pg_url: Option<&str>) -> Result<()> {
    if b.args.fairness_only {
        return fairness(b).await;
    }
    let secs = b.args.load_secs();
    progress(&format!("[bare loop] wrk → nginx, {secs} s …"));
    let url = b.receiver.url();
    let receiver_ticks0 = procfs::process_ticks(b.receiver.pid());
    let bare = b.loop_rate(&url).await?;
    let receiver_per = b.ms(procfs::process_ticks(b.receiver.pid()) - receiver_ticks0)
        / (bare * secs as f64).max(1.0);
    progress(&format!(
        "  {bare:.0} req/s (the receiver used {receiver_per:.4} ms of CPU per request)"
    ));
    b.row(
        "bare loop wrk → nginx",
        format!("{bare:.0} req/s, receiver CPU {receiver_per:.4} ms/request"),
    );

    progress(&format!(
        "[relay floor] wrk → nginx proxy → nginx, {secs} s …"
    ));
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], b.receiver.port));
    let proxy = Nginx::start(
        &b.nginx,
        NginxRole::Proxy {
            port: tools::free_port()?,
            upstream,
        },
        b.tmp.path().join("proxy"),
    )?;
    let proxy_ticks0 = procfs::process_ticks(proxy.pid());
    let floor = b.loop_rate(&proxy.url()).await?;
    let proxy_ms = b.ms(procfs::process_ticks(proxy.pid()) - proxy_ticks0);
    drop(proxy);
    let proxy_per = proxy_ms / (floor * secs as f64).max(1.0);
    progress(&format!(
        "  {floor:.0} req/s (the relay used {proxy_per:.4} ms of CPU per request)"
    ));
    b.row(
        "relay floor wrk → nginx proxy → nginx (no storage)",
        format!("{floor:.0} req/s, relay CPU {proxy_per:.4} ms/request"),
    );

    if !b.args.skip_embedded {
        embedded(b, floor).await?;
    }
    if b.args.store_events > 0 {
        large::run(b).await?;
    }
    if let Some(url) = pg_url {
        postgres(b, url, floor).await?;
        if b.args.pg_runs > 0 {
            pg_series(b, url).await?;
        }
    }
    if !b.args.skip_backlog {
        backlog(b).await?;
    }
    if !b.args.skip_fairness {
        fairness(b).await?;
    }
    Ok(())
}

/// Phases 3, 5, 6 and 8 on the embedded store.
async fn embedded(b: &mut Bench, floor: f64) -> Result<()> {
    let secs = b.args.load_secs();
    let conns = b.args.connections;
    let h = b.launcher.cluster("embedded", None, 1, &[]).await?;
    let sink_url = b.receiver.url();
    let (lat_addr, lat_sink) = probe::TimingSink::start().await?;
    let c = b.http.clone();
    setup(&c, h.first(), "one", &sink_url, 1).await?;
    setup(&c, h.first(), "ten", &sink_url, 10).await?;
    setup(&c, h.first(), "lat", &format!("http://{lat_addr}"), 1).await?;
    let mut h = h;
    if b.args.operator_attempt_events {
        api(
            &c,
            h.first(),
            reqwest::Method::POST,
            "/operator-events/destinations",
            json!({"type": "webhook", "topics": ["attempt.success", "attempt.failed"],
                   "config": {"url": format!("{sink_url}/ops")}}),
        )
        .await?;
        // Each attempt's operator event is delivered to the same receiver.
        h.deliveries_per_attempt = 2;
        progress(
            "  operator destination on attempt.success/attempt.failed: every attempt also writes an operator event and its delivery",
        );
    }
    let h = h;

    progress(&format!(
        "[embedded] wrk {conns} connections publishing for {secs} s, 1 webhook destination …"
    ));
    let rss0 = h.max_kib("VmRSS");
    let d = b
        .drive(
            &h,
            Load {
                tenant: "one",
                fanout: 1,
                connections: conns,
                secs,
                batch: 1,
                wait: true,
            },
            "e1",
        )
        .await?;
    let rss1 = h.max_kib("VmRSS");
    progress(&format!("  {}", b.describe(&d, 1)));
    let rate = d.deliveries_per_s();
    b.judged(
        "embedded: accepted events/s (1 destination)",
        format!("{:.0}", d.accepted_per_s()),
        "≥ 30,000",
        d.accepted_per_s() >= 30_000.0,
    );
    b.judged(
        "embedded: end-to-end deliveries/s (ratio to relay floor)",
        format!("{rate:.0} ({:.2})", rate / floor),
        "≥ 0.50 × floor",
        d.complete && rate >= 0.5 * floor,
    );
    b.judged(
        "embedded: Herald CPU per published + delivered event",
        format!("{:.4} ms", d.herald_ms_per_event()),
        "≤ 0.035 ms",
        d.herald_ms_per_event() <= 0.035,
    );
    b.row(
        "embedded: store commits (fsync'd group commits) per second",
        format!(
            "{:.0}/s ({:.1} events per commit)",
            d.commits_per_s(),
            d.accepted as f64 / d.commits.max(1) as f64
        ),
    );
    b.row(
        "embedded: deliveries counted at receiver / by Herald",
        format!("{} / {}", d.delivered, d.successes),
    );
    b.row(
        "embedded: RSS before / after the run",
        format!("{} / {}", mib(rss0), mib(rss1)),
    );

    progress(&format!(
        "[embedded fan-out] 1 → 10 destinations, {secs} s …"
    ));
    let f = b
        .drive(
            &h,
            Load {
                tenant: "ten",
                fanout: 10,
                connections: conns,
                secs,
                batch: 1,
                wait: true,
            },
            "e10",
        )
        .await?;
    progress(&format!("  {}", b.describe(&f, 10)));
    b.row(
        "embedded fan-out 1 → 10: accepted events/s, deliveries/s",
        format!("{:.0}, {:.0}", f.accepted_per_s(), f.deliveries_per_s()),
    );
    b.judged(
        "embedded fan-out 1 → 10: Herald CPU per delivery",
        format!("{:.4} ms", f.herald_ms_per_delivery()),
        "≤ 0.015 ms",
        f.complete && f.herald_ms_per_delivery() <= 0.015,
    );

    let (lat_rate, why) = match b.args.latency_rate {
        Some(r) => (r, "--latency-rate"),
        None => ((rate / 2.0).max(50.0), "half the end-to-end rate"),
    };
    progress(&format!(
        "[latency] publish → first attempt at {lat_rate:.0} events/s ({why}), {secs} s, paced in-process publisher and receiver …"
    ));
    let (sent, _) = probe::paced(
        h.publish_urls(),
        "lat",
        "lh",
        lat_rate,
        Duration::from_secs(secs),
    )
    .await;
    let l = probe::latencies(&lat_sink, &sent, Duration::from_secs(30)).await;
    let (p50, p99, p999) = (ms(l.pct(0.5)), ms(l.pct(0.99)), ms(l.pct(0.999)));
    progress(&format!(
        "  p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms ({} of {} arrived)",
        l.sorted.len(),
        l.sent
    ));
    b.row(
        format!("latency at {lat_rate:.0} events/s ({why}): publish → first attempt p50"),
        format!("{p50:.2} ms"),
    );
    b.judged(
        format!("latency at {lat_rate:.0} events/s ({why}): p99"),
        format!("{p99:.2} ms"),
        "< 5 ms",
        l.sorted.len() == l.sent && p99 < 5.0,
    );
    b.row(
        format!("latency at {lat_rate:.0} events/s ({why}): p99.9"),
        format!("{p999:.2} ms ({} samples)", l.sorted.len()),
    );

    let over = b.args.overload_connections;
    progress(&format!(
        "[overload] wrk {over} connections for {secs} s, with 200 events/s of timed probes beside …"
    ));
    let load = Load {
        tenant: "one",
        fanout: 1,
        connections: over,
        secs,
        batch: 1,
        wait: true,
    };
    let snap = b.begin(&h).await?;
    let probes = tokio::spawn(probe::paced(
        h.publish_urls(),
        "lat",
        "lo",
        200.0,
        Duration::from_secs(secs),
    ));
    let wrk = b.publish(&h, load, "eo").await?;
    let (sent, probes_ok) = probes.await?;
    let d_over = b.settle(&h, snap, wrk, load, probes_ok).await?;
    let lo = probe::latencies(&lat_sink, &sent, Duration::from_secs(30)).await;
    let (o99, o999) = (ms(lo.pct(0.99)), ms(lo.pct(0.999)));
    progress(&format!(
        "  {}; probes p99 {o99:.2} ms, p99.9 {o999:.2} ms; {:.1} s from the end of the load to the last delivery",
        b.describe(&d_over, 1),
        d_over.e2e_secs - d_over.publish_secs
    ));
    b.row(
        format!("overload ({over} connections): accepted events/s, deliveries/s"),
        format!(
            "{:.0}, {:.0}; last delivery {:.1} s after the load stopped",
            d_over.accepted_per_s(),
            d_over.deliveries_per_s(),
            d_over.e2e_secs - d_over.publish_secs
        ),
    );
    b.judged(
        "overload: publish → first attempt p99.9 (probes)",
        format!(
            "{o999:.2} ms (p99 {o99:.2} ms, {} samples)",
            lo.sorted.len()
        ),
        "< 50 ms",
        lo.sorted.len() == lo.sent && o999 < 50.0,
    );

    let light = b.args.light_secs();
    progress(&format!("[light load] 200 events/s for {light} s …"));
    let mark = b.counter.mark()?;
    let t0 = h.ticks();
    let (sent, ok) = probe::paced(
        h.publish_urls(),
        "one",
        "ll",
        200.0,
        Duration::from_secs(light),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.counter.since(mark)? < ok * h.deliveries_per_attempt && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let light_ms = b.ms(h.ticks() - t0) / ok.max(1) as f64;
    progress(&format!(
        "  {ok} of {} accepted; Herald {light_ms:.4} ms CPU per event",
        sent.len()
    ));
    b.judged(
        "light load 200 events/s: Herald CPU per event",
        format!("{light_ms:.4} ms"),
        "≤ 0.1 ms",
        light_ms <= 0.1,
    );

    progress(&format!("[idle] nothing published for {light} s …"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = h.ticks();
    let i0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(light)).await;
    let wall_ms = i0.elapsed().as_secs_f64() * 1000.0;
    let idle = b.ms(h.ticks() - t0) / wall_ms * 100.0;
    // One clock tick over the measured time: the smallest non-zero figure.
    let resolution = b.ms(1) / wall_ms * 100.0;
    progress(&format!(
        "  {idle:.2} % of a core (resolution {resolution:.2} %)"
    ));
    b.judged(
        "idle Herald: CPU",
        format!("{idle:.2} % of a core (± {resolution:.2} %)"),
        "< 1 %",
        idle < 1.0,
    );
    b.row(
        "embedded: RSS now / peak",
        format!("{} / {}", mib(h.max_kib("VmRSS")), mib(h.max_kib("VmHWM"))),
    );

    let n = b.args.batch_size;
    progress(&format!(
        "[batch publish] wrk {conns} connections, {n} events per request, {secs} s …"
    ));
    let probe = c
        .post(format!("{}/api/v1/publish/batch", h.first().url()))
        .bearer_auth(herald::KEY)
        .json(&json!({"events": [{"tenant_id": "one", "topic": "bench.event", "id": "batch-probe", "data": {}}]}))
        .send()
        .await?;
    if probe.status() == reqwest::StatusCode::NOT_FOUND
        || probe.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED
    {
        progress("  not available in this binary");
        b.row(
            "batch publish: accepted events/s",
            "not available in this binary",
        );
    } else if !probe.status().is_success() {
        let st = probe.status();
        let body = probe.text().await.unwrap_or_default();
        progress(&format!("  the probe request was answered {st}: {body}"));
        b.row(
            "batch publish: accepted events/s",
            format!("probe answered {st}"),
        );
    } else {
        let d = b
            .drive(
                &h,
                Load {
                    tenant: "one",
                    fanout: 1,
                    connections: conns,
                    secs,
                    batch: n,
                    wait: false,
                },
                "eb",
            )
            .await?;
        let ok: u64 = d.wrk.iter().map(|w| w.ok()).sum();
        // Herald's counter when batch publishes count there, else the 2xx requests × n.
        let events = if d.accepted > 0 {
            d.accepted
        } else {
            ok * n as u64
        };
        let per_s = events as f64 / d.publish_secs.max(1e-9);
        progress(&format!(
            "  {events} events accepted in {ok} requests over {:.1} s; Herald {:.4} ms CPU per accepted event (deliveries not awaited){}",
            d.publish_secs,
            d.herald_cpu_ms / events.max(1) as f64,
            if d.errors() > 0 {
                format!(", {} wrk errors", d.errors())
            } else {
                String::new()
            }
        ));
        b.judged(
            format!("batch publish ({n} events/request): accepted events/s"),
            format!("{per_s:.0}"),
            "≥ 150,000",
            per_s >= 150_000.0,
        );
    }
    drop(h);
    Ok(())
}

/// Phase 4: 1..=max_nodes nodes on fresh databases.
async fn postgres(b: &mut Bench, url: &str, floor: f64) -> Result<()> {
    let secs = b.args.load_secs();
    let conns = b.args.connections;
    let mut one: Option<Drive> = None;
    for n in 1..=b.args.max_nodes.max(1) {
        progress(&format!(
            "[PostgreSQL, {n} node{}] fresh database, wrk {conns} connections split over the nodes, {secs} s …",
            if n > 1 { "s" } else { "" }
        ));
        let h = b
            .launcher
            .cluster(&format!("pg{n}"), Some(url), n, &[])
            .await?;
        let c = b.http.clone();
        setup(&c, h.first(), "one", &b.receiver.url(), 1).await?;
        if n > 1 {
            // Other nodes learn about the destination from store notices.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let db_url =
            h.db.as_ref()
                .map(|d| d.url().to_string())
                .unwrap_or_default();
        let sampler = pg::LockSampler::start(&db_url).await?;
        let d = b
            .drive(
                &h,
                Load {
                    tenant: "one",
                    fanout: 1,
                    connections: conns,
                    secs,
                    batch: 1,
                    wait: true,
                },
                &format!("p{n}"),
            )
            .await?;
        let locks = sampler.finish().await;
        let dup = pg::duplicated_deliveries(&db_url).await?;
        let extra = d.delivered.saturating_sub(d.accepted);
        for (statement, n) in locks.top(3) {
            progress(&format!("  waiting on a lock in {n} samples: {statement}"));
        }
        progress(&format!(
            "  {}; PostgreSQL {:.4} ms CPU per event; lock waiters in {} of {} samples; duplicated deliveries {} (receiver got {extra} more than accepted)",
            b.describe(&d, 1),
            d.pg_ms_per_event(),
            locks.with_waiters,
            locks.samples,
            dup.map_or("unknown (schema)".to_string(), |x| x.to_string()),
        ));
        let tag = format!("PostgreSQL {n} node{}", if n > 1 { "s" } else { "" });
        let rate = d.deliveries_per_s();
        if n == 1 {
            b.judged(
                format!("{tag}: end-to-end deliveries/s (ratio to floor)"),
                format!("{rate:.0} ({:.2})", rate / floor),
                "≥ 15,000",
                d.complete && rate >= 15_000.0,
            );
        } else {
            b.row(
                format!("{tag}: end-to-end deliveries/s (ratio to floor)"),
                format!("{rate:.0} ({:.2})", rate / floor),
            );
        }
        b.judged(
            format!("{tag}: PostgreSQL CPU per event"),
            format!("{:.4} ms", d.pg_ms_per_event()),
            "≤ 0.05 ms",
            d.pg_ms_per_event() <= 0.05,
        );
        match &one {
            None => b.judged(
                format!("{tag}: Herald CPU per event"),
                format!("{:.4} ms", d.herald_ms_per_event()),
                "≤ 0.035 ms",
                d.herald_ms_per_event() <= 0.035,
            ),
            Some(o) => {
                let (hr, pr) = d.cpu_relative_to(o);
                b.judged(
                    format!("{tag}: Herald / PostgreSQL CPU per event, relative to 1 node"),
                    format!(
                        "{:.4} ms ({hr:.2}×) / {:.4} ms ({pr:.2}×)",
                        d.herald_ms_per_event(),
                        d.pg_ms_per_event()
                    ),
                    "≤ 1.15× each",
                    hr <= 1.15 && pr <= 1.15,
                );
            }
        }
        judge_duplicates(b, &tag, dup, extra);
        b.judged(
            format!("{tag}: lock-wait samples (every 100 ms)"),
            format!("{} of {}", locks.with_waiters, locks.samples),
            "0",
            locks.with_waiters == 0,
        );
        b.row(
            format!("{tag}: store commits per second (events per publish commit)"),
            format!(
                "{:.0}/s ({:.1})",
                d.commits_per_s(),
                d.events_per_publish_commit()
            ),
        );
        if let (Some(o), true) = (&one, n > 1) {
            // The split above gives each node a share of the callers, so its group commits
            // are smaller and cost more per event whatever the nodes do to coordinate. With
            // the same callers per node as the single node had, commits are as large as
            // there, and what is left of the growth is the nodes' own overhead (and two
            // cores shared by more processes).
            let all = conns * n;
            progress(&format!(
                "  again with {conns} connections per node ({all} in all), {secs} s …"
            ));
            let e = b
                .drive(
                    &h,
                    Load {
                        tenant: "one",
                        fanout: 1,
                        connections: all,
                        secs,
                        batch: 1,
                        wait: true,
                    },
                    &format!("q{n}"),
                )
                .await?;
            let dup = pg::duplicated_deliveries(&db_url).await?;
            let extra = e.delivered.saturating_sub(e.accepted);
            progress(&format!(
                "  {}; PostgreSQL {:.4} ms CPU per event; duplicated deliveries {} (receiver got {extra} more than accepted)",
                b.describe(&e, 1),
                e.pg_ms_per_event(),
                dup.map_or("unknown (schema)".to_string(), |x| x.to_string()),
            ));
            let (hr, pr) = e.cpu_relative_to(o);
            b.row(
                format!(
                    "{tag}, {conns} connections per node: Herald / PostgreSQL CPU per event, relative to 1 node (events per publish commit)"
                ),
                format!(
                    "{:.4} ms ({hr:.2}×) / {:.4} ms ({pr:.2}×) ({:.1})",
                    e.herald_ms_per_event(),
                    e.pg_ms_per_event(),
                    e.events_per_publish_commit()
                ),
            );
            judge_duplicates(
                b,
                &format!("{tag}, {conns} connections per node"),
                dup,
                extra,
            );
        }
        if n == 1 {
            one = Some(d);
        }
        drop(h);
    }
    Ok(())
}

/// The duplicated-deliveries verdict of a PostgreSQL run: `dup` events the database holds
/// more than one success for (`None` when its schema cannot tell), `extra` requests the
/// receiver got beyond the events accepted.
fn judge_duplicates(b: &mut Bench, tag: &str, dup: Option<u64>, extra: u64) {
    b.judged(
        format!("{tag}: duplicated deliveries (database; receiver excess)"),
        format!(
            "{} ; {extra}",
            dup.map_or("unknown".to_string(), |x| x.to_string())
        ),
        "0",
        dup.unwrap_or(0) == 0 && extra == 0,
    );
}

/// One Herald node on a fresh database whose tables have autovacuum off from the start.
async fn autovacuum_off_node(b: &mut Bench, url: &str, run: usize) -> Result<Cluster> {
    let tag = format!("novac{run}");
    let db = b.launcher.database(url, &tag).await?;
    b.launcher.migrate(db.url())?;
    let tables = pg::disable_autovacuum(db.url()).await?;
    progress(&format!(
        "  autovacuum_enabled = false on {tables} tables after the migrations"
    ));
    let h = b.launcher.nodes_on(db, &tag, 1, &[]).await?;
    let c = b.http.clone();
    setup(&c, h.first(), "one", &b.receiver.url(), 1).await?;
    Ok(h)
}

/// Phase 9: consecutive runs with autovacuum off on Herald's tables, on one fresh database
/// (its tables grow, never analysed) or, with `--pg-runs-fresh`, a fresh one each run.
async fn pg_series(b: &mut Bench, url: &str) -> Result<()> {
    let runs = b.args.pg_runs;
    let secs = b.args.load_secs();
    let fresh = b.args.pg_runs_fresh;
    progress(&format!(
        "[PostgreSQL, autovacuum off] {runs} consecutive runs of {secs} s on {} …",
        if fresh {
            "a fresh database each"
        } else {
            "one fresh database"
        }
    ));
    let mut h = None;
    let mut rates = Vec::new();
    for r in 1..=runs {
        let cluster = match h.take() {
            Some(c) if !fresh => c,
            previous => {
                // The previous run's node and database go first.
                drop(previous);
                autovacuum_off_node(b, url, r).await?
            }
        };
        let d = b
            .drive(
                &cluster,
                Load {
                    tenant: "one",
                    fanout: 1,
                    connections: b.args.connections,
                    secs,
                    batch: 1,
                    wait: true,
                },
                &format!("v{r}"),
            )
            .await?;
        progress(&format!(
            "  run {r}: {:.0} deliveries/s, PostgreSQL {:.4} ms CPU per event{}",
            d.deliveries_per_s(),
            d.pg_ms_per_event(),
            if d.complete { "" } else { " — INCOMPLETE" }
        ));
        rates.push(d.deliveries_per_s());
        h = Some(cluster);
    }
    drop(h);
    let first = rates.first().copied().unwrap_or(0.0);
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let list: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    b.judged(
        format!("PostgreSQL autovacuum off, {runs} runs: deliveries/s"),
        list.join(", "),
        "every run ≥ 0.85 × run 1",
        min >= 0.85 * first,
    );
    Ok(())
}

/// Phase 7: RSS holding a backlog of pending deliveries (receiver down).
async fn backlog(b: &mut Bench) -> Result<()> {
    let events = b.args.backlog / 10;
    progress(&format!(
        "[memory] {} pending deliveries ({events} events × 10 destinations, receiver down) …",
        b.args.backlog
    ));
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    // Failure alerts (and with them auto-disable, which would cancel the backlog) are off,
    // and the first retry is an hour away, so the backlog stays put while it is measured.
    let h = b
        .launcher
        .cluster(
            "backlog",
            None,
            1,
            &[
                ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "0"),
                ("HERALD_RETRY_INITIAL_SECS", "3600"),
            ],
        )
        .await?;
    let c = b.http.clone();
    setup(&c, h.first(), "down", &format!("http://{down}"), 10).await?;
    probe::publish_count(&h, "down", events, 64).await;
    // Wait for the first attempts (each fails fast) so the backlog is pure retries.
    let mut pending = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        pending = h.metric(&c, "herald_pending_deliveries_total", &[]).await as u64;
        let retries = h.metric(&c, "herald_retry_backlog", &[]).await as u64;
        if pending >= b.args.backlog && retries >= b.args.backlog {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss = h.max_kib("VmRSS");
    let peak = h.max_kib("VmHWM");
    progress(&format!(
        "  RSS {} with {pending} pending (peak {})",
        mib(rss),
        mib(peak)
    ));
    b.judged(
        format!("RSS with {pending} pending deliveries (peak)"),
        format!("{} ({})", mib(rss), mib(peak)),
        "< 64 MB",
        pending >= b.args.backlog && (rss as f64) * 1024.0 < 64e6,
    );
    Ok(())
}

/// Tenant Y's delivery rate alone and beside tenant X's 50 hung destinations.
async fn fairness(b: &mut Bench) -> Result<()> {
    let secs = b.args.load_secs();
    progress(&format!("[fairness] tenant Y alone, {secs} s …"));
    // X's failures must not disable its destinations while Y is measured.
    let h = b
        .launcher
        .cluster(
            "fair",
            None,
            1,
            &[
                ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "0"),
                // The hung destinations' timeouts are expected here: no warning per destination.
                ("HERALD_LOG_LEVEL", "error"),
            ],
        )
        .await?;
    let c = b.http.clone();
    setup(&c, h.first(), "fair-y", &b.receiver.url(), 1).await?;
    let load = Load {
        tenant: "fair-y",
        fanout: 1,
        connections: b.args.connections,
        secs,
        batch: 1,
        wait: true,
    };
    let alone = b.drive(&h, load, "fy1").await?.deliveries_per_s();
    progress(&format!("  {alone:.0} deliveries/s"));
    progress("  tenant Y beside tenant X's 50 hung destinations (100 events) …");
    let (hole, accepted) = probe::start_black_hole().await?;
    setup(&c, h.first(), "fair-x", &format!("http://{hole}"), 50).await?;
    for i in 0..100u64 {
        let body = json!({"tenant_id": "fair-x", "topic": "bench.hung", "id": format!("fx-{i}"), "data": {"i": i}});
        api(&c, h.first(), reqwest::Method::POST, "/publish", body).await?;
    }
    // X's attempts are out before Y is measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(std::sync::atomic::Ordering::Relaxed) < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let beside = b.drive(&h, load, "fy2").await?.deliveries_per_s();
    let ratio = beside / alone.max(f64::MIN_POSITIVE);
    progress(&format!(
        "  {beside:.0} deliveries/s ({:.0} %; the hung server accepted {} connections)",
        ratio * 100.0,
        accepted.load(std::sync::atomic::Ordering::Relaxed)
    ));
    b.row(
        "fairness: tenant Y alone",
        format!("{alone:.0} deliveries/s"),
    );
    b.row(
        "fairness: tenant Y beside 50 hung destinations of tenant X",
        format!("{beside:.0} deliveries/s"),
    );
    b.judged(
        "fairness ratio (beside / alone)",
        format!("{:.0} %", ratio * 100.0),
        "≥ 80 %",
        ratio >= 0.8,
    );
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, naming which.
async fn interrupted() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term => "SIGTERM",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

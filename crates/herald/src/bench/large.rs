//! The large-store phase (`--store-events N`): does a big embedded store keep the small
//! store's throughput, and do the list and metrics routes stay fast at that size?
//!
//! One Herald (embedded store, its own data directory) gets [`TENANTS`] tenants with one
//! webhook destination each on the nginx receiver, and is filled with N events through the
//! real API (`POST /api/v1/publish/batch`, `--batch-size` events per request, the tenants in
//! turn), every event delivered, so each has its delivery and its attempt; the publishers stay
//! at most [`WINDOW`] events ahead of the receiver. Then the embedded throughput drive (wrk →
//! Herald → nginx, as in the embedded phase) runs [`ROUNDS`] times on it and on a second Herald
//! with an empty store of the same shape, alternately (medians compared); the list and metrics
//! routes are timed ([`REQUESTS`] requests each, one at a time); Herald is stopped (SIGTERM: its
//! store is closed) and the database files are measured; and a second start on the same
//! directory, with a retention age that covers the oldest tenth of the fill, times one purge
//! pass.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::herald::{Cluster, KEY, TempDir, setup};
use super::probe::pct;
use super::{Bench, Drive, Load, mib, ms, progress, tools};

/// Tenants the events are spread over, one webhook destination each.
const TENANTS: usize = 10;
/// Drives on each store, alternately.
const ROUNDS: usize = 3;
/// Timed requests per route.
const REQUESTS: usize = 20;
/// Pages followed (`next`) before the deep page that is timed.
const DEEP_PAGES: usize = 10;
/// The most events published and not yet delivered during the fill.
const WINDOW: u64 = 50_000;
/// Concurrent batch-publish requests during the fill.
const PUBLISHERS: usize = 4;
/// The size the target names; its fill time is estimated from the measured rate.
const TARGET_EVENTS: u64 = 10_000_000;

/// The tenant of event `i` (and the name of tenant number `i`).
fn tenant(i: u64) -> String {
    format!("big{}", i % TENANTS as u64)
}

/// The body of one `POST /api/v1/publish/batch` with events `range` (ids `L<i>`, the 64-byte
/// `data` of every bench event, the tenants in turn).
pub fn batch_body(range: Range<u64>) -> String {
    let payload = tools::payload();
    let mut s = String::with_capacity(16 + (range.end - range.start) as usize * 140);
    s.push_str("{\"events\":[");
    let first = range.start;
    for i in range {
        if i > first {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"tenant_id\":\"{}\",\"topic\":\"bench.event\",\"id\":\"L{i}\",\"data\":{payload}}}",
            tenant(i)
        );
    }
    s.push_str("]}");
    s
}

/// Events accepted and refused in a batch-publish answer.
pub fn batch_outcome(answer: &Value) -> (u64, u64) {
    let results = answer["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let refused = results.iter().filter(|r| r.get("error").is_some()).count() as u64;
    (results.len() as u64 - refused, refused)
}

/// The median of `v` (the mean of the middle two for an even count; 0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// "1 h 05 min", "3 min 20 s", "42 s".
pub fn duration_words(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// What the fill measured.
struct Fill {
    accepted: u64,
    refused: u64,
    delivered: u64,
    /// Successful attempts Herald counted.
    successes: u64,
    /// From the first request to the last delivery.
    secs: f64,
    /// When the fill began (the metrics routes are asked about the whole fill).
    started: jiff::Timestamp,
    /// Herald's CPU over the fill, ms.
    herald_ms: f64,
    complete: bool,
}

impl Fill {
    fn rate(&self) -> f64 {
        self.delivered.min(self.accepted) as f64 / self.secs.max(1e-9)
    }
}

/// One batch-publish request: (accepted, refused) events, or an error for a non-202 answer.
async fn post_batch(c: &reqwest::Client, url: &str, body: String) -> Result<(u64, u64)> {
    let r = c
        .post(url)
        .bearer_auth(KEY)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    if status.as_u16() != 202 {
        bail!("{status}: {}", r.text().await.unwrap_or_default());
    }
    Ok(batch_outcome(&r.json::<Value>().await?))
}

/// Fills Herald with `n` events and waits until the receiver has every delivery.
async fn fill(b: &mut Bench, h: &Cluster, n: u64) -> Result<Fill> {
    let batch = b.args.batch_size as u64;
    let url = format!("{}/api/v1/publish/batch", h.first().url());
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let started = jiff::Timestamp::now();
    let successes0 = h.successes(&b.http).await;
    let mark = b.counter.mark()?;
    let ticks0 = h.ticks();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let c = b.http.clone();
            let url = url.clone();
            let (next, accepted, refused, delivered) = (
                next.clone(),
                accepted.clone(),
                refused.clone(),
                delivered.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= n {
                        break;
                    }
                    // Stay within WINDOW events of the receiver.
                    while first.saturating_sub(delivered.load(Ordering::Relaxed)) > WINDOW {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let range = first..(first + batch).min(n);
                    let count = range.end - range.start;
                    let body = batch_body(range);
                    let mut tries = 0;
                    // Ids make a second send of the same request safe.
                    loop {
                        match post_batch(&c, &url, body.clone()).await {
                            Ok((ok, bad)) => {
                                accepted.fetch_add(ok, Ordering::Relaxed);
                                refused.fetch_add(bad, Ordering::Relaxed);
                                break;
                            }
                            Err(e) if tries < 5 => {
                                tries += 1;
                                eprintln!("  batch publish failed ({e}); sending it again");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Err(e) => {
                                eprintln!("  batch publish failed ({e}); {count} events given up");
                                refused.fetch_add(count, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    let mut last_delivery = t0;
    let mut seen = 0;
    let mut printed = (Instant::now(), 0u64);
    let mut complete = true;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = b.counter.since(mark)?;
        delivered.store(now, Ordering::Relaxed);
        if now > seen {
            seen = now;
            last_delivery = Instant::now();
        }
        let published = tasks.iter().all(|t| t.is_finished());
        if published && seen >= accepted.load(Ordering::Relaxed) {
            break;
        }
        if last_delivery.elapsed() > Duration::from_secs(30) {
            complete = false;
            for t in &tasks {
                t.abort();
            }
            progress("  nothing delivered for 30 s: the fill stops here — INCOMPLETE");
            break;
        }
        if printed.0.elapsed() >= Duration::from_secs(5) {
            let el = t0.elapsed().as_secs_f64();
            let rate = seen as f64 / el.max(1e-9);
            let recent = (seen - printed.1) as f64 / printed.0.elapsed().as_secs_f64();
            let eta = n.saturating_sub(seen) as f64 / rate.max(1e-9);
            progress(&format!(
                "  fill: {} of {n} published, {seen} delivered, {rate:.0} events/s ({recent:.0}/s in the last 5 s), ETA {}",
                accepted.load(Ordering::Relaxed),
                duration_words(eta)
            ));
            printed = (Instant::now(), seen);
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let herald_ms = b.ms(h.ticks() - ticks0);
    let successes = h.successes(&b.http).await - successes0;
    Ok(Fill {
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        delivered: seen,
        secs: last_delivery.duration_since(t0).as_secs_f64(),
        started,
        herald_ms,
        successes,
        complete,
    })
}

/// `REQUESTS` GETs of `path` with `query`, one at a time, each answered 200 with its whole
/// body read: (p50, max).
async fn timed(
    c: &reqwest::Client,
    base: &str,
    path: &str,
    query: &[(&str, String)],
) -> Result<(Duration, Duration)> {
    let url = with_query(&format!("{base}{path}"), query)?;
    let mut took = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        let r = c.get(url.clone()).bearer_auth(KEY).send().await?;
        let status = r.status();
        let body = r.text().await?;
        took.push(t.elapsed());
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
    }
    took.sort();
    Ok((pct(&took, 0.5), *took.last().unwrap_or(&Duration::ZERO)))
}

/// The `next` cursor after following `pages` pages of `GET /attempts` (fewer when the list
/// ends first), and how many pages were followed.
async fn deep_cursor(c: &reqwest::Client, base: &str, pages: usize) -> Result<(String, usize)> {
    let mut cursor = String::new();
    let mut followed = 0;
    while followed < pages {
        let mut q = vec![("limit", "100".to_string())];
        if !cursor.is_empty() {
            q.push(("next", cursor.clone()));
        }
        let v: Value = c
            .get(with_query(&format!("{base}/api/v1/attempts"), &q)?)
            .bearer_auth(KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match v["pagination"]["next"].as_str() {
            Some(n) if !n.is_empty() => cursor = n.to_string(),
            _ => break,
        }
        followed += 1;
    }
    Ok((cursor, followed))
}

/// A timed request: (name, path, query).
type Route = (String, String, Vec<(&'static str, String)>);

/// `url` with `query` encoded after it.
fn with_query(url: &str, query: &[(&str, String)]) -> Result<url::Url> {
    Ok(url::Url::parse_with_params(
        url,
        query.iter().map(|(k, v)| (*k, v.as_str())),
    )?)
}

/// Size of a file, 0 when it does not exist.
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The phase.
pub async fn run(b: &mut Bench) -> Result<()> {
    let n = b.args.store_events;
    let secs = b.args.load_secs();
    let conns = b.args.connections;
    progress(&format!(
        "[large store] {n} events over {TENANTS} tenants (one webhook destination each), batch publish of {} events per request …",
        b.args.batch_size
    ));
    // The store's directory outlives the first Herald: the second start reads it.
    let dir = TempDir(b.tmp.path().join("large-store"));
    std::fs::create_dir_all(dir.path())?;
    let mut h = Cluster::single(b.launcher.start_in(dir.path(), &[])?);
    let c = b.http.clone();
    let mut destinations = Vec::new();
    for t in 0..TENANTS as u64 {
        let ids = setup(&c, h.first(), &tenant(t), &b.receiver.url(), 1).await?;
        destinations.extend(ids);
    }
    let load = Load {
        tenant: "big0",
        fanout: 1,
        connections: conns,
        secs,
        batch: 1,
        wait: true,
    };
    let f = fill(b, &h, n).await?;
    let rate = f.rate();
    progress(&format!(
        "  filled: {} events accepted ({} refused), {} requests at the receiver (Herald counted {} successful attempts) in {} ({rate:.0} events/s end to end); Herald {:.4} ms CPU per event; RSS {}",
        f.accepted,
        f.refused,
        f.delivered,
        f.successes,
        duration_words(f.secs),
        f.herald_ms / f.accepted.max(1) as f64,
        mib(h.max_kib("VmRSS"))
    ));
    let estimate = TARGET_EVENTS as f64 / rate.max(1e-9);
    progress(&format!(
        "  at this rate a {TARGET_EVENTS}-event fill would take ≈ {}",
        duration_words(estimate)
    ));
    b.row(
        format!("large store: fill of {n} events (batch publish, every event delivered)"),
        format!(
            "{rate:.0} events/s, {}, Herald {:.4} ms CPU per event{}",
            duration_words(f.secs),
            f.herald_ms / f.accepted.max(1) as f64,
            if f.complete && f.refused == 0 {
                String::new()
            } else {
                format!(" — INCOMPLETE ({} refused)", f.refused)
            }
        ),
    );
    b.row(
        "large store: fill, requests at the receiver / Herald's successful attempts / events accepted",
        format!("{} / {} / {}", f.delivered, f.successes, f.accepted),
    );
    b.row(
        format!("large store: estimated fill time of {TARGET_EVENTS} events at that rate"),
        duration_words(estimate),
    );

    // A second Herald with an empty store of the same shape; the drives alternate between
    // the two, so the shared machine's changing load weighs on both alike.
    let e = b.launcher.cluster("large-empty", None, 1, &[]).await?;
    for t in 0..TENANTS as u64 {
        setup(&c, e.first(), &tenant(t), &b.receiver.url(), 1).await?;
    }
    let size = h.accepted(&c).await;
    progress(&format!(
        "  the embedded drive (wrk {conns} connections, tenant big0, {secs} s), {ROUNDS} times on an empty store and on the {size}-event store, alternately …"
    ));
    let (mut empty, mut full) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let d = b.drive(&e, load, &format!("Le{r}")).await?;
        progress(&format!(
            "  empty store, round {}: {}",
            r + 1,
            b.describe(&d, 1)
        ));
        empty.push(d);
        let d = b.drive(&h, load, &format!("Lf{r}")).await?;
        progress(&format!(
            "  large store, round {}: {}",
            r + 1,
            b.describe(&d, 1)
        ));
        full.push(d);
    }
    drop(e);
    let rates = |ds: &[Drive]| ds.iter().map(Drive::deliveries_per_s).collect::<Vec<_>>();
    let cpus = |ds: &[Drive]| {
        ds.iter()
            .map(Drive::herald_ms_per_event)
            .collect::<Vec<_>>()
    };
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (r0, r1) = (median(&rates(&empty)), median(&rates(&full)));
    let (c0, c1) = (median(&cpus(&empty)), median(&cpus(&full)));
    let ratio = r1 / r0.max(1e-9);
    let complete = empty.iter().chain(&full).all(|d| d.complete);
    b.row(
        format!("large store: empty store, median of {ROUNDS} drives: deliveries/s (Herald CPU per event)"),
        format!("{r0:.0} ({c0:.4} ms); runs {}", list(&rates(&empty))),
    );
    b.judged(
        format!("large store: {size}-event store, median of {ROUNDS} drives: deliveries/s (Herald CPU per event); ratio to empty"),
        format!(
            "{r1:.0} ({c1:.4} ms); runs {}; ratio {ratio:.2} (CPU {:.2}×)",
            list(&rates(&full)),
            c1 / c0.max(1e-12)
        ),
        "same throughput (≥ 0.90 × empty)",
        complete && ratio >= 0.9,
    );

    let base = h.first().url();
    let dest = destinations.get(3).cloned().unwrap_or_default();
    let (cursor, followed) = deep_cursor(&c, &base, DEEP_PAGES).await?;
    let window = vec![
        ("time[start]", f.started.to_string()),
        ("time[end]", jiff::Timestamp::now().to_string()),
        ("granularity", "1m".to_string()),
        ("dimensions", "tenant_id".to_string()),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut q = window.clone();
        q.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        q
    };
    let routes: Vec<Route> = vec![
        (
            "GET /attempts (first page)".into(),
            "/api/v1/attempts".into(),
            vec![],
        ),
        (
            "GET /attempts?tenant_id=big3".into(),
            "/api/v1/attempts".into(),
            vec![("tenant_id", "big3".into())],
        ),
        (
            "GET /tenants/big3/destinations/{d}/attempts".into(),
            format!("/api/v1/tenants/big3/destinations/{dest}/attempts"),
            vec![],
        ),
        (
            format!("GET /attempts, page {} (next cursor)", followed + 1),
            "/api/v1/attempts".into(),
            if cursor.is_empty() {
                vec![]
            } else {
                vec![("next", cursor.clone())]
            },
        ),
        (
            "GET /events (first page)".into(),
            "/api/v1/events".into(),
            vec![],
        ),
        (
            "GET /metrics/events (whole fill, 1m × tenant_id, count)".into(),
            "/api/v1/metrics/events".into(),
            with(&[("measures", "count")]),
        ),
        (
            "GET /metrics/attempts (whole fill, 1m × tenant_id, count, successful_count, error_rate)"
                .into(),
            "/api/v1/metrics/attempts".into(),
            with(&[("measures", "count,successful_count,error_rate")]),
        ),
    ];
    progress(&format!(
        "  API latencies at that size, {REQUESTS} requests each, one at a time …"
    ));
    for (name, path, query) in &routes {
        let (p50, max) = timed(&c, &base, path, query).await?;
        progress(&format!(
            "  {name}: p50 {:.2} ms, max {:.2} ms",
            ms(p50),
            ms(max)
        ));
        b.row(
            format!("large store: {name} p50 / max"),
            format!("{:.2} / {:.2} ms", ms(p50), ms(max)),
        );
    }

    let events = h.accepted(&c).await;
    let t = Instant::now();
    let node = h.nodes.pop().context("the large-store node")?;
    let clean = node.terminate(Duration::from_secs(30)).await?;
    let stopped = t.elapsed();
    let db = dir.path().join("herald.db");
    let (main, wal) = (file_size(&db), file_size(&dir.path().join("herald.db-wal")));
    let per_event = (main + wal) as f64 / events.max(1) as f64;
    progress(&format!(
        "  Herald {} in {:.1} s; herald.db {:.1} MiB + WAL {:.1} MiB for {events} events (each with a delivery and an attempt): {per_event:.0} bytes per event",
        if clean {
            "stopped (SIGTERM)"
        } else {
            "did not stop on SIGTERM and was killed"
        },
        stopped.as_secs_f64(),
        main as f64 / 1048576.0,
        wal as f64 / 1048576.0,
    ));
    b.judged(
        format!("large store: database file (+ WAL) per event, {events} events"),
        format!(
            "{per_event:.0} bytes ({:.1} MiB + {:.1} MiB WAL)",
            main as f64 / 1048576.0,
            wal as f64 / 1048576.0
        ),
        "≤ 400 bytes",
        clean && per_event <= 400.0,
    );

    purge(b, dir.path(), &f).await?;
    drop(dir);
    Ok(())
}

/// Seconds from Herald's start to its first retention pass (`retention.interval_secs`).
const PURGE_INTERVAL: u64 = 5;
/// A pause of the purge counter this long ends the first pass: its batches are 5 ms apart,
/// the next pass is `PURGE_INTERVAL` later. Shorter than that, but long enough that one slow
/// batch does not pass for the end: with a 1 s gap, two 10,000,000-event runs (before and
/// after the batched purge) stopped measuring after 3,000 and 7,500 rows, when a batch that
/// reads the oldest pages of a 12 GB file (likely back from disk) took over a second.
const PASS_GAP: Duration = Duration::from_secs(4);

/// A second start on the same store with a retention age that covers the oldest tenth of the
/// fill at the first pass: the start-up time and that
/// pass, timed from `herald_retention_purged_total` read every 50 ms. Only the first pass is
/// measured: each later one purges the second of events that has just aged past the limit.
async fn purge(b: &mut Bench, dir: &Path, f: &Fill) -> Result<()> {
    let cut = f.started + jiff::SignedDuration::from_secs_f64(f.secs * 0.1);
    let age = (jiff::Timestamp::now()
        .duration_since(cut)
        .as_secs_f64()
        .ceil() as u64
        + PURGE_INTERVAL)
        .max(1);
    let (age_s, interval_s) = (age.to_string(), PURGE_INTERVAL.to_string());
    progress(&format!(
        "  restart on the same store with retention.max_age_secs = {age} (the oldest tenth of the fill at the first pass) and interval_secs = {PURGE_INTERVAL} …"
    ));
    let t = Instant::now();
    let h = Cluster::single(b.launcher.start_in(
        dir,
        &[
            ("HERALD_RETENTION_MAX_AGE_SECS", &age_s),
            ("HERALD_RETENTION_INTERVAL_SECS", &interval_s),
        ],
    )?);
    let startup = t.elapsed();
    let c = b.http.clone();
    let (mut first, mut last, mut rows) = (None::<Instant>, Instant::now(), 0.0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let wait = Duration::from_secs(PURGE_INTERVAL + 30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = h.metric(&c, "herald_retention_purged_total", &[]).await;
        if now > rows {
            rows = now;
            last = Instant::now();
            first.get_or_insert(last);
        }
        match first {
            Some(_) if last.elapsed() > PASS_GAP => break,
            None if t.elapsed() > wait => break,
            _ => {}
        }
    }
    progress(&format!(
        "  started in {:.2} s; {}",
        startup.as_secs_f64(),
        match first {
            Some(fst) => format!(
                "purged {rows:.0} rows (events, deliveries, attempts) between the first and the last batch seen: {:.2} s ({:.0} rows/s)",
                last.duration_since(fst).as_secs_f64(),
                rows / last.duration_since(fst).as_secs_f64().max(1e-3)
            ),
            None => format!("nothing purged within {} s", wait.as_secs()),
        }
    ));
    b.row(
        "large store: start-up of Herald on it (to listening)",
        format!("{:.2} s", startup.as_secs_f64()),
    );
    b.row(
        "large store: the first retention purge pass (the oldest tenth)",
        match first {
            Some(fst) => format!(
                "{rows:.0} rows in ≈ {:.2} s (50 ms polling)",
                last.duration_since(fst).as_secs_f64()
            ),
            None => format!("nothing purged within {} s", wait.as_secs()),
        },
    );
    drop(h);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_spread_the_tenants_and_carry_the_bench_payload() {
        let v: Value = serde_json::from_str(&batch_body(8..21)).unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 13);
        assert_eq!(events[0]["id"], "L8");
        assert_eq!(events[0]["tenant_id"], "big8");
        assert_eq!(events[2]["tenant_id"], "big0");
        assert_eq!(events[12]["id"], "L20");
        assert_eq!(events[12]["topic"], "bench.event");
        assert_eq!(events[12]["data"].to_string(), tools::payload());
    }

    #[test]
    fn batch_answers_count_refused_events() {
        let v = serde_json::json!({"results": [
            {"index": 0, "id": "a", "duplicate": false},
            {"index": 1, "error": {"status": 422, "message": "x"}},
            {"index": 2, "id": "a", "duplicate": true},
        ]});
        assert_eq!(batch_outcome(&v), (2, 1));
        assert_eq!(batch_outcome(&serde_json::json!({})), (0, 0));
    }

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(42.4), "42 s");
        assert_eq!(duration_words(200.0), "3 min 20 s");
        assert_eq!(duration_words(3900.0), "1 h 05 min");
        assert_eq!(duration_words(-1.0), "0 s");
    }
}

//! The API server's connection hygiene: idle, half-sent and slow-body connections are closed
//! within their deadlines while `/healthz` keeps answering; connections over the cap are
//! refused with a `503` in the error shape; oversized request lines and headers are answered in
//! the error shape; `--dev` listens on loopback; the open-files limit is raised at start.

use std::time::{Duration, Instant};

use herald_testkit::Herald;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or `limit` passes); returns what was read
/// and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

async fn healthz_answers(h: &Herald) {
    // A new connection each time: a pooled one may be the server's idle deadline closing it
    // just as it is reused (seen as `IncompleteMessage` under load), which says nothing about
    // whether the server answers.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let r = client
        .get(h.url("/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("/healthz answers while other connections are held open");
    assert!(r.status().is_success(), "/healthz: {}", r.status());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn idle_half_sent_and_slow_connections_are_closed_while_healthz_answers() {
    let h = Herald::start(&[
        ("HERALD_HTTP_HEADER_READ_TIMEOUT_MS", "600"),
        ("HERALD_HTTP_IDLE_TIMEOUT_MS", "600"),
        ("HERALD_HTTP_BODY_READ_TIMEOUT_MS", "600"),
    ])
    .await;
    let mut silent = Vec::new();
    let mut half_sent = Vec::new();
    let mut kept_alive = Vec::new();
    let mut slow_body = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(h.addr).await.unwrap());
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"POST /api/v1/publish HTTP/1.1\r\nHost: herald\r\nContent-")
            .await
            .unwrap();
        half_sent.push(s);
    }
    for _ in 0..20 {
        // One whole request, answered; then the connection stays open and says nothing.
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        kept_alive.push(s);
        // Headers complete, a tenth of the body, then nothing.
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(
            format!(
                "POST /api/v1/publish HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"topic\"",
                herald_testkit::API_KEY
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        slow_body.push(s);
    }
    // 240 connections held open: the server still answers.
    healthz_answers(&h).await;

    let started = Instant::now();
    for (kind, socks) in [
        ("silent", &mut silent),
        ("half-sent", &mut half_sent),
        ("kept-alive idle", &mut kept_alive),
        ("slow body", &mut slow_body),
    ] {
        for s in socks.iter_mut() {
            let (text, closed) = read_until_closed(s, Duration::from_secs(5)).await;
            assert!(closed, "a {kind} connection is still open after 5 s");
            if kind == "slow body" {
                // The body's deadline is answered before the connection closes.
                assert!(
                    text.starts_with("HTTP/1.1 4"),
                    "a body that never arrives is answered 4xx: {text:?}"
                );
            }
        }
    }
    // The deadlines are 600 ms; everything closed well within a few of them.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closing took {:?}",
        started.elapsed()
    );
    healthz_answers(&h).await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_with_503_until_slots_free_up() {
    let h = Herald::start(&[
        ("HERALD_HTTP_MAX_CONNECTIONS", "20"),
        ("HERALD_HTTP_HEADER_READ_TIMEOUT_MS", "1500"),
        ("HERALD_HTTP_IDLE_TIMEOUT_MS", "1500"),
    ])
    .await;
    // 25 connections at once; the readiness probe's pooled connection may hold a slot too.
    let mut socks = Vec::new();
    for _ in 0..25 {
        socks.push(TcpStream::connect(h.addr).await.unwrap());
    }
    let mut held = Vec::new();
    let mut refusals = Vec::new();
    for mut s in socks {
        // A refused connection is answered at once; an accepted one stays silent.
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => refusals.push(String::from_utf8_lossy(&buf[..n]).to_string()),
            _ => held.push(s),
        }
    }
    assert!(refusals.len() >= 5, "{} refused", refusals.len());
    let refused = refusals.pop();
    let refused = refused.expect("a connection over http.max_connections = 20 is refused");
    assert!(held.len() <= 20, "{} connections were accepted", held.len());
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains(r#""status":503"#) && refused.contains("too many open connections"),
        "the refusal has the error shape: {refused}"
    );
    // The held connections time out; then the server answers again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    healthz_answers(&h).await;
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("herald_http_connections_refused_total"),
        "the refusal is counted in /metrics"
    );
}

#[tokio::test]
async fn oversized_request_lines_and_headers_are_answered_in_the_error_shape() {
    let h = Herald::start(&[]).await;
    let long = format!("{}/api/v1/tenants?x={}", h.url(""), "a".repeat(20_000));
    let r = h.client.get(&long).send().await.unwrap();
    assert_eq!(r.status(), 414);
    let v: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(v["status"], 414);
    assert!(v["message"].as_str().unwrap().contains("request target"));

    let r = h
        .client
        .get(h.url("/tenants"))
        .header("x-big", "b".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let v: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(v["status"], 431);
}

#[test]
fn dev_mode_listens_on_loopback_unless_host_is_set() {
    // `HERALD_HOST` empty: the default, which `--dev` makes 127.0.0.1.
    let p = crate::process(&[("HERALD_HOST", "")]);
    assert!(p.addr.ip().is_loopback(), "--dev listens on {}", p.addr);
    drop(p);
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit_at_start() {
    // Start the binary under a soft limit of 256 (via a shell's `ulimit`), then read its limit.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("herald-low-nofile");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -Sn 256\nexec {} \"$@\"\n", crate::BIN),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = herald_testkit::HeraldProcess::start(wrapper.to_str().unwrap(), &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "the soft limit stayed at 256: {line}");
    assert_eq!(soft, hard, "{line}");
}

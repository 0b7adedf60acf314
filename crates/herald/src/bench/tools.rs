//! The external load generator and receiver: `wrk` (Debian `wrk`, Lua scripts) and `nginx`
//! (Debian `nginx-light`, one worker, `stub_status`). This module writes their configuration
//! and scripts, runs them as child processes and parses what they print. It knows nothing
//! about Herald beyond the JSON shapes the scripts post.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The hint printed when a tool is missing.
pub const INSTALL_HINT: &str = "apt-get install wrk nginx-light";

/// Where the Debian packages put the tools; `PATH` is searched first.
fn find_tool(name: &str, fallback: &str) -> Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let p = PathBuf::from(fallback);
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "`{name}` is not installed: the bench drives Herald with wrk and receives with nginx ({INSTALL_HINT})"
    )
}

/// Paths of `wrk` and `nginx`, or the error telling how to install them.
pub fn find_tools() -> Result<(PathBuf, PathBuf)> {
    Ok((
        find_tool("wrk", "/usr/bin/wrk")?,
        find_tool("nginx", "/usr/sbin/nginx")?,
    ))
}

/// A free loopback port (bound, read and released: nginx binds it right after).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// What one nginx process does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NginxRole {
    /// Answers every request with an empty 200, and `stub_status` on `status_port`.
    Receiver { port: u16, status_port: u16 },
    /// Forwards every request to `upstream` over kept-alive HTTP/1.1 connections.
    Proxy { port: u16, upstream: SocketAddr },
}

/// nginx's configuration for `role`, every path under `dir`: one process that is its own
/// worker (`master_process off`), no access log, keep-alive connections that are never
/// closed for their request count (nginx's default closes one every 1,000 requests).
pub fn nginx_config(role: &NginxRole, dir: &Path) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = write!(
        c,
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 keepalive_requests 100000000;\n  keepalive_timeout 300s;\n"
    );
    match role {
        NginxRole::Receiver { port, status_port } => {
            let _ = write!(
                c,
                "  server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{ return 200; }}\n  }}\n\
                 \x20 server {{\n    listen 127.0.0.1:{status_port};\n    location = /status {{ stub_status; }}\n  }}\n"
            );
        }
        NginxRole::Proxy { port, upstream } => {
            let _ = write!(
                c,
                "  upstream receiver {{\n    server {upstream};\n    keepalive 128;\n    keepalive_requests 100000000;\n  }}\n\
                 \x20 server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{\n\
                 \x20     proxy_pass http://receiver;\n      proxy_http_version 1.1;\n\
                 \x20     proxy_set_header Connection \"\";\n    }}\n  }}\n"
            );
        }
    }
    c.push_str("}\n");
    c
}

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Killed {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One running nginx process and its directory (removed when dropped).
pub struct Nginx {
    proc: Killed,
    /// The port requests go to.
    pub port: u16,
    /// `stub_status` (receiver only).
    pub status: Option<SocketAddr>,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    /// Starts nginx in `role` and waits until it accepts connections.
    pub fn start(bin: &Path, role: NginxRole, dir: PathBuf) -> Result<Nginx> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_config(&role, &dir))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} ({INSTALL_HINT})", bin.display()))?;
        let (port, status) = match role {
            NginxRole::Receiver { port, status_port } => {
                (port, Some(SocketAddr::from(([127, 0, 0, 1], status_port))))
            }
            NginxRole::Proxy { port, .. } => (port, None),
        };
        let mut n = Nginx {
            proc: Killed(child),
            port,
            status,
            dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(st)) = n.proc.0.try_wait() {
                let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({st}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(n)
    }

    /// nginx's process id (its only process: it is its own worker).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The base URL of the server.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The figures of one `stub_status` page that the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StubStatus {
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
    pub active: u64,
}

/// Parses nginx's `stub_status` page.
pub fn parse_stub_status(text: &str) -> Option<StubStatus> {
    let mut lines = text.lines();
    let active = lines
        .next()?
        .strip_prefix("Active connections:")?
        .trim()
        .parse()
        .ok()?;
    let header = lines.next()?;
    if !header.contains("requests") {
        return None;
    }
    let mut nums = lines
        .next()?
        .split_whitespace()
        .map(|n| n.parse::<u64>().ok());
    let (accepts, handled, requests) = (nums.next()??, nums.next()??, nums.next()??);
    Some(StubStatus {
        accepts,
        handled,
        requests,
        active,
    })
}

/// Counts the requests an nginx receiver answered, not counting the `stub_status` requests
/// made to read it (each read counts itself).
pub struct ReceiverCounter {
    addr: SocketAddr,
    reads: u64,
}

/// A reading of [`ReceiverCounter`]: compare two with [`ReceiverCounter::since`].
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    requests: u64,
    reads: u64,
}

impl ReceiverCounter {
    pub fn new(addr: SocketAddr) -> Self {
        ReceiverCounter { addr, reads: 0 }
    }

    /// Reads the counter now.
    pub fn mark(&mut self) -> Result<Mark> {
        let page = http_get(self.addr, "/status")?;
        let s = parse_stub_status(&page).with_context(|| format!("stub_status page: {page}"))?;
        self.reads += 1;
        Ok(Mark {
            requests: s.requests,
            reads: self.reads,
        })
    }

    /// Requests other than status reads between `then` and `now`.
    pub fn between(then: Mark, now: Mark) -> u64 {
        now.requests
            .saturating_sub(then.requests)
            .saturating_sub(now.reads - then.reads)
    }

    /// Requests other than status reads since `then`.
    pub fn since(&mut self, then: Mark) -> Result<u64> {
        let now = self.mark()?;
        Ok(Self::between(then, now))
    }
}

/// A plain HTTP/1.0 GET over a new connection; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(body)
}

/// The `data` of every event the bench publishes: 64 bytes of JSON.
pub fn payload() -> String {
    let p = format!("{{\"pad\":\"{}\"}}", "x".repeat(54));
    debug_assert_eq!(p.len(), 64);
    p
}

/// A Lua string literal for `s` (which holds no quote or backslash of its own here).
fn lua_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The script of the bare loop and the relay: a POST of the body Herald delivers, with
/// headers of the same shape as a signed Standard Webhooks request.
pub fn receiver_script() -> String {
    format!(
        "wrk.method = 'POST'\nwrk.body = {}\nwrk.headers['Content-Type'] = 'application/json'\n\
         wrk.headers['webhook-id'] = 'evt_0123456789abcdef01234567'\n\
         wrk.headers['webhook-timestamp'] = '1764600000'\n\
         wrk.headers['webhook-signature'] = 'v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4='\n",
        lua_str(&payload())
    )
}

/// The script that publishes: one `POST /api/v1/publish` (or, with `batch > 1`, one
/// `POST /api/v1/publish/batch` of `batch` events) per request, each event with a new id
/// `<prefix><n>` (the prefix is wrk's first script argument, so several wrk processes never
/// share an id).
pub fn publish_script(key: &str, tenant: &str, topic: &str, batch: usize) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "local n = 0\nlocal prefix = 'e'\nfunction init(args) if args[1] then prefix = args[1] end end\n\
         local headers = {{ ['Content-Type'] = 'application/json', ['Authorization'] = {} }}\n\
         local head = {}\nlocal tail = {}\n",
        lua_str(&format!("Bearer {key}")),
        lua_str(&format!(
            "{{\"tenant_id\":\"{tenant}\",\"topic\":\"{topic}\",\"id\":\""
        )),
        lua_str(&format!("\",\"data\":{}}}", payload())),
    );
    if batch <= 1 {
        s.push_str(
            "function request()\n  n = n + 1\n  \
             return wrk.format('POST', '/api/v1/publish', headers, head .. prefix .. n .. tail)\nend\n",
        );
    } else {
        let _ = write!(
            s,
            "local parts = {{}}\nfunction request()\n  for i = 1, {batch} do\n    n = n + 1\n    \
             parts[i] = head .. prefix .. n .. tail\n  end\n  \
             return wrk.format('POST', '/api/v1/publish/batch', headers, '{{\"events\":[' .. table.concat(parts, ',') .. ']}}')\nend\n"
        );
    }
    s
}

/// What one wrk run printed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WrkSummary {
    /// Responses received.
    pub requests: u64,
    /// Seconds the run lasted.
    pub seconds: f64,
    /// Responses whose status was not 2xx or 3xx.
    pub non_2xx: u64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    /// `Requests/sec`.
    pub rate: f64,
}

impl WrkSummary {
    /// 2xx/3xx responses.
    pub fn ok(&self) -> u64 {
        self.requests.saturating_sub(self.non_2xx)
    }
}

/// Parses wrk's report (its default output, no Lua `done`).
pub fn parse_wrk(out: &str) -> Option<WrkSummary> {
    let mut s = WrkSummary::default();
    let mut seen = false;
    for line in out.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ") {
            s.requests = n.trim().parse().ok()?;
            let secs = rest.split(',').next()?.trim();
            s.seconds = parse_wrk_duration(secs)?;
            seen = true;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            s.rate = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            s.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    seen.then_some(s)
}

/// `10.00s`, `1.00m`, `250.00ms` → seconds.
fn parse_wrk_duration(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(v) = s.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("us") {
        (v, 0.000_001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else if let Some(v) = s.strip_suffix('h') {
        (v, 3600.0)
    } else {
        return None;
    };
    Some(num.parse::<f64>().ok()? * mult)
}

/// One wrk invocation.
#[derive(Debug, Clone)]
pub struct WrkRun {
    pub connections: usize,
    pub seconds: u64,
    pub script: PathBuf,
    pub url: String,
    /// Passed to the script (`init(args)`).
    pub script_args: Vec<String>,
}

impl WrkRun {
    /// The command line (one thread).
    pub fn command(&self, wrk: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(wrk);
        c.arg("-t1")
            .arg(format!("-c{}", self.connections.max(1)))
            .arg(format!("-d{}s", self.seconds))
            .arg("--timeout")
            .arg("10s")
            .arg("-s")
            .arg(&self.script)
            .arg(&self.url);
        if !self.script_args.is_empty() {
            c.arg("--").args(&self.script_args);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

/// Runs several wrk processes at once (one per Herald node) and returns their summaries.
pub async fn run_wrk(wrk: &Path, runs: &[WrkRun]) -> Result<Vec<WrkSummary>> {
    let children = runs
        .iter()
        .map(|r| {
            r.command(wrk)
                .spawn()
                .with_context(|| format!("starting {} ({INSTALL_HINT})", wrk.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let outs =
        futures_util::future::join_all(children.into_iter().map(|c| c.wait_with_output())).await;
    let mut sums = Vec::new();
    for out in outs {
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(s) = parse_wrk(&text) else {
            bail!(
                "wrk printed no summary ({}): {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        };
        sums.push(s);
    }
    Ok(sums)
}

/// Splits `total` connections over `n` processes (the first ones get the remainder).
pub fn split_connections(total: usize, n: usize) -> Vec<usize> {
    let n = n.max(1);
    (0..n)
        .map(|i| (total / n + usize::from(i < total % n)).max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_says_how_to_install_it() {
        let e = find_tool("no-such-tool-herald-bench", "/nonexistent/no-such-tool")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`no-such-tool-herald-bench` is not installed"),
            "{e}"
        );
        assert!(e.contains("apt-get install wrk nginx-light"), "{e}");
    }

    #[test]
    fn stub_status_page_is_parsed() {
        let page = "Active connections: 3 \nserver accepts handled requests\n 36 35 198759 \nReading: 0 Writing: 1 Waiting: 2 \n";
        assert_eq!(
            parse_stub_status(page),
            Some(StubStatus {
                accepts: 36,
                handled: 35,
                requests: 198759,
                active: 3
            })
        );
        assert_eq!(parse_stub_status("<html>404</html>"), None);
        assert_eq!(
            parse_stub_status("Active connections: 1\nserver accepts handled requests\n 1 2\n"),
            None
        );
    }

    #[test]
    fn status_reads_are_not_counted_as_deliveries() {
        let then = Mark {
            requests: 100,
            reads: 1,
        };
        // 50 deliveries, then two more status reads (the one in between and this one).
        let now = Mark {
            requests: 152,
            reads: 3,
        };
        assert_eq!(ReceiverCounter::between(then, now), 50);
    }

    #[test]
    fn wrk_report_is_parsed() {
        let out = "Running 3s test @ http://127.0.0.1:18080/d0\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   555.40us    1.02ms  16.76ms   93.76%\n    Req/Sec    66.56k     6.24k   73.21k    76.67%\n  198737 requests in 3.01s, 27.86MB read\n  Socket errors: connect 0, read 2, write 1, timeout 4\n  Non-2xx or 3xx responses: 7\nRequests/sec:  66038.15\nTransfer/sec:      9.26MB\n";
        let s = parse_wrk(out).unwrap();
        assert_eq!(s.requests, 198737);
        assert!((s.seconds - 3.01).abs() < 1e-9);
        assert_eq!(s.non_2xx, 7);
        assert_eq!(s.socket_errors, 7);
        assert_eq!(s.ok(), 198730);
        assert!((s.rate - 66038.15).abs() < 1e-9);
        assert_eq!(
            parse_wrk("unable to connect to 127.0.0.1:1 Connection refused"),
            None
        );
        assert_eq!(parse_wrk_duration("1.00m"), Some(60.0));
        assert_eq!(parse_wrk_duration("250.00ms"), Some(0.25));
    }

    #[test]
    fn nginx_configs_say_what_the_bench_relies_on() {
        let dir = Path::new("/tmp/x");
        let r = nginx_config(
            &NginxRole::Receiver {
                port: 1000,
                status_port: 1001,
            },
            dir,
        );
        for needle in [
            "master_process off;",
            "worker_processes 1;",
            "access_log off;",
            "listen 127.0.0.1:1000",
            "return 200;",
            "listen 127.0.0.1:1001;",
            "stub_status;",
            "pid /tmp/x/nginx.pid;",
        ] {
            assert!(r.contains(needle), "receiver config lacks {needle}:\n{r}");
        }
        assert!(!r.contains("proxy_pass"));
        let p = nginx_config(
            &NginxRole::Proxy {
                port: 2000,
                upstream: "127.0.0.1:1000".parse().unwrap(),
            },
            dir,
        );
        for needle in [
            "server 127.0.0.1:1000;",
            "keepalive 128;",
            "proxy_pass http://receiver;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "listen 127.0.0.1:2000",
            "access_log off;",
        ] {
            assert!(p.contains(needle), "proxy config lacks {needle}:\n{p}");
        }
        assert!(!p.contains("stub_status"));
        // Braces balance (nginx refuses the file otherwise).
        for c in [&r, &p] {
            assert_eq!(c.matches('{').count(), c.matches('}').count());
        }
    }

    #[test]
    fn scripts_post_what_herald_expects() {
        assert_eq!(payload().len(), 64);
        let one = publish_script("k", "t1", "bench.event", 1);
        assert!(one.contains("'/api/v1/publish'"));
        assert!(one.contains("'Bearer k'"));
        assert!(one.contains(r#"'{"tenant_id":"t1","topic":"bench.event","id":"'"#));
        assert!(one.contains(&format!("'\",\"data\":{}}}'", payload())));
        let batch = publish_script("k", "t1", "bench.event", 100);
        assert!(batch.contains("'/api/v1/publish/batch'"));
        assert!(batch.contains("for i = 1, 100 do"));
        assert!(batch.contains(r#"'{"events":[' .. table.concat(parts, ',') .. ']}'"#));
        let r = receiver_script();
        assert!(r.contains("wrk.method = 'POST'"));
        assert!(r.contains(&payload()));
        assert_eq!(split_connections(32, 3), vec![11, 11, 10]);
        assert_eq!(split_connections(32, 1), vec![32]);
        assert_eq!(split_connections(2, 3), vec![1, 1, 1]);
    }
}

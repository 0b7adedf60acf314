//! A private PostgreSQL server for one test: a fresh cluster (`initdb`) in a temporary
//! directory, on a free port, that the test may stop, kill and start again — which it must
//! never do to the machine's shared server on 5432.
//!
//! The binaries come from `HERALD_TEST_PG_BIN` (default `/usr/lib/postgresql/15/bin`). As
//! `initdb` refuses to run as root, everything runs as the `postgres` user (through
//! `runuser -u postgres --`) when the test runs as root. Authentication is `trust` on
//! 127.0.0.1 only. The server is stopped (immediately) and its directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// Where the PostgreSQL server binaries are.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("HERALD_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn is_root() -> bool {
    // The effective uid of this process, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A running (or stopped) private PostgreSQL cluster.
pub struct PrivatePostgres {
    /// The port it listens on (127.0.0.1), the same across restarts.
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates and starts a cluster. Fails the test, saying what is missing, when the
    /// PostgreSQL binaries or the `postgres` user are not there.
    pub fn start() -> PrivatePostgres {
        let bin = pg_bin();
        assert!(
            bin.join("initdb").exists(),
            "this test needs PostgreSQL's server binaries in {} (apt-get install postgresql, or set HERALD_TEST_PG_BIN)",
            bin.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix("herald-private-pg-")
            .tempdir()
            .expect("tempdir");
        let data = tmp.path().join("data");
        let log = tmp.path().join("postgres.log");
        if is_root() {
            // The directory must belong to the user that runs the server.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(tmp.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of {} failed", tmp.path().display());
        }
        let pg = PrivatePostgres {
            port: free_port(),
            data,
            log,
            _tmp: tmp,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                path(&pg.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.start_again();
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = pg_bin().join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Starts the (stopped) server again on the same port and data; returns once it accepts
    /// connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=100",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data),
                "-l",
                path(&self.log),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private PostgreSQL did not listen on {} within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server: `fast` disconnects clients and shuts down cleanly, `immediate`
    /// aborts like a crash (recovery runs at the next start).
    pub fn stop(&self, mode: StopMode) {
        let m = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        self.run(
            "pg_ctl",
            &["-D", path(&self.data), "-m", m, "-w", "-t", "60", "stop"],
        );
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// How [`PrivatePostgres::stop`] stops the server.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    /// Clean shutdown, clients disconnected.
    Fast,
    /// Abort, as in a crash.
    Immediate,
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Best effort: it may be stopped already.
        let _ = self
            .command("pg_ctl")
            .args(["-D", path(&self.data), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

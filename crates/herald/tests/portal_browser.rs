//! Browser end-to-end test of the tenant portal: starts the real `herald` binary, then runs
//! `node tests/portal/run.mjs` (playwright-core driving Debian's Chromium, axe-core), which
//! does everything through the portal's UI and fails on the first broken check. It runs once
//! on the embedded store and once on PostgreSQL (a fresh database on
//! `HERALD_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! It fails, never skips, when Node.js, `/usr/bin/chromium` or `tests/portal/node_modules`
//! is missing: `.ci/run` installs them. Screenshots go to `PORTAL_SCREENSHOT_DIR` when set
//! (`PORTAL_SCREENSHOT_DIR=docs/portal` refreshes the committed ones), otherwise under the
//! target directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const API_KEY: &str = "portal-test-admin-key";
const JWT_SECRET: &str = "portal-test-jwt-secret";
const REFERER: &str = "https://app.example.com/settings/webhooks";

const CATALOG: &str = r#"
[[topics]]
name = "user.created"
description = "A user signed up."
sample = '{"id": "usr_1", "email": "ada@example.com", "role": "employee"}'

[[topics]]
name = "user.deleted"
description = "A user was removed."
sample = '{"id": "usr_1"}'

[[topics]]
name = "invoice.paid"
description = "An invoice was paid (no sample payload)."
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "{what} is missing: run .ci/run (it installs Debian's chromium and runs `npm ci` in tests/portal)"
    );
}

/// One browser run at a time: two Chromiums on two cores only slow each other down.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn portal_in_a_real_browser() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_portal_suite(None, std::env::var("PORTAL_SCREENSHOT_DIR").ok());
}

#[test]
fn portal_in_a_real_browser_on_postgres() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let admin = std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("herald_portal_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rt.block_on(herald_store::pg::drop_database(&admin, &name));
    let url = rt
        .block_on(herald_store::pg::create_database(&admin, &name))
        .unwrap_or_else(|e| {
            panic!(
                "this test needs PostgreSQL at {} (set HERALD_TEST_POSTGRES_URL): {e}",
                herald_store::pg::describe_url(&admin)
            )
        });
    let outcome = std::panic::catch_unwind(|| run_portal_suite(Some(&url), None));
    if let Err(e) = rt.block_on(herald_store::pg::drop_database(&admin, &name)) {
        eprintln!("could not drop test database {name}: {e}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Starts Herald (on PostgreSQL when `database_url` is given) and runs the browser suite;
/// screenshots go to `screenshots` (relative to the repository) or under the target directory.
fn run_portal_suite(database_url: Option<&str>, screenshots: Option<String>) {
    let root = repo_root();
    let suite = root.join("tests/portal");
    require(Path::new("/usr/bin/chromium").exists(), "/usr/bin/chromium");
    require(
        suite.join("node_modules/playwright-core").exists()
            && suite.join("node_modules/axe-core").exists(),
        "tests/portal/node_modules (playwright-core, axe-core)",
    );
    require(
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "Node.js (`node`)",
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("herald.toml");
    std::fs::write(&config, CATALOG).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env_clear();
    if let Some(url) = database_url {
        // PostgreSQL nodes need the encryption key secrets are sealed with (32 bytes, base64).
        cmd.env("HERALD_DATABASE_URL", url).env(
            "HERALD_ENCRYPTION_KEY",
            "cG9ydGFsLWJyb3dzZXItdGVzdC1rZXktMzItYnl0ZXM=",
        );
    }
    let mut child = cmd
        .args(["serve", "--dev"])
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD_CONFIG", &config)
        .env("HERALD_HOST", "127.0.0.1")
        .env("HERALD_PORT", "0")
        .env("HERALD_DATA_DIR", tmp.path().join("data"))
        .env("HERALD_API_KEY", API_KEY)
        .env("HERALD_JWT_SECRET", JWT_SECRET)
        .env("HERALD_LOG_LEVEL", "warn")
        .env("HERALD_DELIVERY_POLL_INTERVAL_MS", "50")
        .env("HERALD_PORTAL_ORGANIZATION_NAME", "Acme Cloud")
        .env("HERALD_PORTAL_REFERER_URL", REFERER)
        .env("HERALD_PORTAL_BRAND_COLOR", "#1f5f3f")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn herald");
    let stdout = child.stdout.take().expect("stdout");
    let herald = Killed(child);
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
    let addr: std::net::SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("herald did not print its listening address within 30 s")
        .parse()
        .expect("address");

    // A binary from another checkout (a shared CARGO_TARGET_DIR) would fail confusingly.
    let probe = std::net::TcpStream::connect(addr).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(
            b"GET /portal/assets/portal.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head)
    });
    assert!(
        probe.as_ref().is_ok_and(|h| h.ends_with(b"200")),
        "{} does not serve the portal: {probe:?}",
        env!("CARGO_BIN_EXE_herald")
    );

    let store = if database_url.is_some() {
        "postgres"
    } else {
        "embedded"
    };
    let shots = screenshots.map(|d| root.join(d)).unwrap_or_else(|| {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("portal-screenshots-{store}"))
    });
    let mut node = Command::new("node")
        .arg("run.mjs")
        .current_dir(&suite)
        // The portal link names http://localhost:<port>, the public URL Herald derives.
        .env("HERALD_URL", format!("http://localhost:{}", addr.port()))
        .env("HERALD_API_KEY", API_KEY)
        .env("HERALD_JWT_SECRET", JWT_SECRET)
        .env("HERALD_PORTAL_REFERER_URL", REFERER)
        .env("SCREENSHOT_DIR", &shots)
        .spawn()
        .expect("spawn node");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = node.try_wait().expect("wait for node") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(240) {
            let _ = node.kill();
            panic!("the browser test did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(herald);
    assert!(
        status.success(),
        "tests/portal/run.mjs failed on the {store} store: {status}"
    );
}

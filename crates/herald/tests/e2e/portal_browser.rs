//! Browser end-to-end test of the tenant portal: starts the real `herald` binary (it reads the
//! topic catalog from a configuration file, `HERALD_CONFIG`), then runs
//! `node tests/portal/run.mjs` (playwright-core driving Debian's Chromium, axe-core), which
//! does everything through the portal's UI and fails on the first broken check. It runs once
//! on the embedded store and once on PostgreSQL (a fresh [`TestDb`] on
//! `HERALD_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! It fails, never skips, when Node.js, `/usr/bin/chromium` or `tests/portal/node_modules`
//! is missing: `.ci/run` installs them. Screenshots go to `PORTAL_SCREENSHOT_DIR` when set
//! (`PORTAL_SCREENSHOT_DIR=docs/portal` refreshes the committed ones), otherwise under the
//! target directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use herald_testkit::{HeraldProcess, TestDb};

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Dropped (also when the suite fails) by a runtime of its own.
    let db = rt.block_on(TestDb::create());
    run_portal_suite(Some(&db), None);
}

/// Starts Herald (on PostgreSQL when `db` is given) and runs the browser suite;
/// screenshots go to `screenshots` (relative to the repository) or under the target directory.
fn run_portal_suite(db: Option<&TestDb>, screenshots: Option<String>) {
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
    let config = config.display().to_string();
    let mut env = vec![
        ("HERALD_CONFIG", config.as_str()),
        ("HERALD_API_KEY", API_KEY),
        ("HERALD_JWT_SECRET", JWT_SECRET),
        ("HERALD_PORTAL_ORGANIZATION_NAME", "Acme Cloud"),
        ("HERALD_PORTAL_REFERER_URL", REFERER),
        ("HERALD_PORTAL_BRAND_COLOR", "#1f5f3f"),
    ];
    if let Some(db) = db {
        env.extend(db.env());
    }
    let herald = HeraldProcess::start(crate::BIN, &env);
    let addr = herald.addr;

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
        crate::BIN
    );

    let store = if db.is_some() { "postgres" } else { "embedded" };
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

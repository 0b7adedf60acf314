//! Wire compatibility: drives Herald (in-process) with the Outpost Python SDK from PyPI.
//!
//! The SDK is installed into a virtualenv under the cargo target directory on first run
//! (`pip install outpost-sdk standardwebhooks`); the test fails — it never skips — when
//! Python or the registry is unavailable.

use std::path::Path;
use std::process::Command;

const SDK: &str = "outpost-sdk==1.7.0";
const VERIFIER: &str = "standardwebhooks==1.1.0";

/// Runs `tests/sdk/<script>` with the SDK's venv against `h`; the script prints
/// "N passed, 0 failed" when every check held.
async fn run_sdk_check(h: &herald_testkit::Herald, script: &str, what: &str) {
    let python =
        herald_testkit::python::venv_with("outpost-sdk-venv", &[SDK, VERIFIER]).join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/sdk")
        .join(script);
    let base = format!("http://{}/api/v1", h.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .arg(herald_testkit::API_KEY)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_python_sdk_works_against_herald() {
    let h = herald_testkit::Herald::start(&[]).await;
    run_sdk_check(&h, "outpost_sdk_check.py", "SDK check").await;
}

/// Every method of the SDK's `operator_events` module (destination types; destinations list,
/// create, get, update, delete, enable, disable; events list, get, attempts; attempts list,
/// get; retry), with a tenant destination whose failures raise alerts and an operator
/// receiver that refuses the first alert, which is then retried by the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_sdk_operator_events_work_against_herald() {
    let h = herald_testkit::Herald::start(&[
        ("HERALD_ALERTS_CONSECUTIVE_FAILURE_THRESHOLD", "2"),
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1"),
        ("HERALD_RETRY_JITTER", "0"),
        ("HERALD_DELIVERY_POLL_INTERVAL_MS", "100"),
    ])
    .await;
    run_sdk_check(&h, "operator_events_check.py", "operator events SDK check").await;
}

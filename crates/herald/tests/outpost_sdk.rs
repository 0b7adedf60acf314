//! Wire compatibility: drives the real binary with the Outpost Python SDK from PyPI.
//!
//! The SDK is installed into a virtualenv under the cargo target directory on first run
//! (`pip install outpost-sdk standardwebhooks`); the test fails — it never skips — when
//! Python or the registry is unavailable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const SDK: &str = "outpost-sdk==1.7.0";
const VERIFIER: &str = "standardwebhooks==1.1.0";

fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("outpost-sdk-venv");
    let python = dir.join("bin/python");
    let marker = dir.join(format!("installed-{SDK}-{VERIFIER}"));
    if !marker.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 is required for the SDK test");
        assert!(ok.success(), "python3 -m venv failed");
        let ok = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                SDK,
                VERIFIER,
            ])
            .status()
            .expect("pip");
        assert!(ok.success(), "pip install {SDK} {VERIFIER} failed");
        std::fs::write(&marker, "").unwrap();
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_python_sdk_works_against_herald() {
    let python = venv();
    let h = common::Herald::start(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/outpost_sdk_check.py");
    let base = format!("http://{}/api/v1", h.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .arg(common::API_KEY)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}

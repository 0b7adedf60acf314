//! The Python virtualenv of the independent readers (boto3, kafka-python, google-cloud-pubsub)
//! and of moto's server, created under the cargo target directory on first use, and the
//! reader script `tests/destinations/reader.py` that reads messages back with each service's
//! own client library.

use std::path::{Path, PathBuf};
use std::process::Command;

use parking_lot::Mutex;
use serde_json::Value;

/// Python packages of the independent readers (and moto's server), pinned.
pub const PACKAGES: &[&str] = &[
    "moto[server]==5.2.1",
    "boto3==1.44.5",
    "kafka-python==3.0.12",
    "google-cloud-pubsub==2.44.0",
];

static VENV_LOCK: Mutex<()> = Mutex::new(());

/// The cargo target directory's `tmp` folder (what cargo calls `CARGO_TARGET_TMPDIR` for
/// integration tests), found from the running test executable (`<target>/debug/deps/…`).
pub fn target_tmpdir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test executable is under <target>/<profile>/deps");
    let dir = target.join("tmp");
    std::fs::create_dir_all(&dir).expect("create <target>/tmp");
    dir
}

/// A virtualenv with `packages` in `<target>/tmp/<name>`, created on first use (and again when
/// the package list changes). Fails the test when python3 or pip cannot make it.
pub fn venv_with(name: &str, packages: &[&str]) -> PathBuf {
    let _guard = VENV_LOCK.lock();
    let dir = target_tmpdir().join(name);
    let marker = dir.join(format!(
        "installed-{}",
        packages.join("-").replace(['[', ']', '=', '>', '<'], "_")
    ));
    if !marker.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 is required for these tests (.ci/run installs python3-venv)");
        assert!(ok.success(), "python3 -m venv {} failed", dir.display());
        let ok = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .expect("pip");
        assert!(ok.success(), "pip install {packages:?} failed");
        std::fs::write(&marker, "").expect("write the venv marker");
    }
    dir
}

/// The readers' virtualenv with [`PACKAGES`].
pub fn venv() -> PathBuf {
    venv_with("cloud-venv", PACKAGES)
}

/// Runs one command of `tests/destinations/reader.py` with the service's own client library.
pub async fn reader(command: &str, args: Value) -> Value {
    reader_env(command, args, &[]).await
}

/// [`reader`] with extra environment (e.g. `PUBSUB_EMULATOR_HOST`).
pub async fn reader_env(command: &str, args: Value, env: &[(&str, String)]) -> Value {
    let python = venv().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/destinations/reader.py");
    let command = command.to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(&command)
            .arg(args.to_string())
            .envs(env)
            .output()
            .expect("run reader.py")
    })
    .await
    .expect("reader task");
    assert!(
        out.status.success(),
        "reader.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader.py prints JSON")
}

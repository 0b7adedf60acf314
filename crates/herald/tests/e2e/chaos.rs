//! Chaos: the store goes away or fills up under load, the process dies in a migration.
//!
//! - PostgreSQL restarted under publish load (a private server the test starts, never the
//!   shared one): publishes answer 503 while it is down, nothing acknowledged is lost, and
//!   publishing and delivery resume by themselves.
//! - The embedded store on a full disk (a small tmpfs the test mounts): publishes answer 503
//!   saying the disk is full, the database stays intact, and Herald recovers once there is room.
//! - SIGKILL in the middle of a schema migration, then a clean start, on both stores.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use herald_testkit::{
    Herald, PrivatePostgres, Receiver, StopMode, TestDb, output_within, server_env, unique,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// A fixed encryption key for the private PostgreSQL server's store (32 bytes, base64).
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Event ids the receiver got (its `webhook-id` header).
fn received_ids(r: &Receiver) -> HashSet<String> {
    r.got
        .lock()
        .iter()
        .filter_map(|x| x.header("webhook-id"))
        .collect()
}

/// Waits until the receiver got every id in `ids`; fails naming the missing ones.
async fn wait_all_received(r: &Receiver, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = received_ids(r);
        let missing: Vec<_> = ids.iter().filter(|i| !got.contains(*i)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never arrived (first: {:?})",
            missing.len(),
            ids.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One publish: status (None when no answer within the timeout) and the answer's message.
async fn publish(api: &herald_testkit::Api, body: &Value) -> (Option<u16>, String) {
    match api
        .client
        .post(api.url("/publish"))
        .bearer_auth(herald_testkit::API_KEY)
        .timeout(Duration::from_secs(10))
        .json(body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (
                Some(status),
                v["message"].as_str().unwrap_or_default().to_string(),
            )
        }
        Err(_) => (None, String::new()),
    }
}

const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;

/// A publish made while the load ran, with the phase of the database when it was sent and
/// when its answer came.
struct Outcome {
    sent: u8,
    answered: u8,
    status: Option<u16>,
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_answers_503_loses_nothing_acknowledged_and_recovers() {
    let pg = PrivatePostgres::start();
    let url = pg.url();
    let h = Herald::start(&[
        ("HERALD_DATABASE_URL", &url),
        ("HERALD_ENCRYPTION_KEY", KEY),
    ])
    .await;
    let receiver = Receiver::start().await;
    h.webhook("chaos-pg", &receiver.url("/in"), json!({})).await;

    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let mut publishers = Vec::new();
    for _ in 0..4 {
        let (api, phase, stop, acked, outcomes) = (
            (*h).clone(),
            phase.clone(),
            stop.clone(),
            acked.clone(),
            outcomes.clone(),
        );
        publishers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = unique("evt_pg_");
                let body = json!({"tenant_id": "chaos-pg", "id": id, "topic": "t", "data": {}});
                let sent = phase.load(Ordering::SeqCst);
                let (status, message) = publish(&api, &body).await;
                let answered = phase.load(Ordering::SeqCst);
                if status == Some(202) {
                    acked.lock().push(id);
                }
                outcomes.lock().push(Outcome {
                    sent,
                    answered,
                    status,
                    message,
                });
                if status != Some(202) {
                    // Not a busy loop while the database is down.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let wait_acked = |n: usize, within: Duration| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + within;
            while acked.lock().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "only {} publishes acknowledged",
                    acked.lock().len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_acked(100, Duration::from_secs(30)).await;

    phase.store(STOPPING, Ordering::SeqCst);
    tokio::task::block_in_place(|| pg.stop(StopMode::Fast));
    phase.store(DOWN, Ordering::SeqCst);
    let down_at = Instant::now();
    let acked_at_stop = acked.lock().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.store(STARTING, Ordering::SeqCst);
    tokio::task::block_in_place(|| pg.start_again());
    phase.store(UP, Ordering::SeqCst);
    let up_at = Instant::now();

    // Publishing comes back by itself: 100 more acknowledged within 30 s.
    let before_recovery = acked.lock().len();
    wait_acked(before_recovery + 100, Duration::from_secs(30)).await;
    let recovered_in = up_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    for p in publishers {
        p.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock());
    let down: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.sent == DOWN && o.answered == DOWN)
        .collect();
    assert!(
        down.len() >= 5,
        "only {} publishes were sent and answered while PostgreSQL was down",
        down.len()
    );
    for o in &down {
        assert_eq!(
            o.status,
            Some(503),
            "a publish while PostgreSQL was down answered {:?}: {}",
            o.status,
            o.message
        );
        assert!(
            o.message.contains("database"),
            "the 503 does not say what is wrong: {:?}",
            o.message
        );
    }
    let server_errors: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status.is_some_and(|s| s >= 500 && s != 503))
        .map(|o| (o.status, o.message.clone()))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    // Nothing acknowledged is lost: every 202 arrives, those from before the outage too.
    let acked = std::mem::take(&mut *acked.lock());
    eprintln!(
        "postgres restart: {} acknowledged ({acked_at_stop} before the stop), {} answered 503 during the {:.1} s outage, publishing back {:.1} s after the restart",
        acked.len(),
        down.len(),
        up_at.duration_since(down_at).as_secs_f64(),
        recovered_in.as_secs_f64()
    );
    wait_all_received(&receiver, &acked, Duration::from_secs(60)).await;
    drop(h);
    drop(pg);
}

/// A tmpfs mounted for one test, unmounted (lazily, so open files cannot keep it) on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("herald-full-disk-")
            .tempdir()
            .unwrap();
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs (it needs root or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_on_a_full_disk_answers_503_stays_intact_and_recovers() {
    let disk = Tmpfs::mount("6m");
    let dir = disk.path.join("data");
    let receiver = Receiver::start().await;
    let mut h = crate::process_in(&dir, &[], true);
    h.webhook("chaos-disk", &receiver.url("/in"), json!({}))
        .await;

    // Fill the disk with publishes of ~64 KiB each until one is refused.
    let pad = "x".repeat(64 * 1024);
    let mut acked = Vec::new();
    let mut refused = None;
    for _ in 0..2000 {
        let id = unique("evt_disk_");
        let body = json!({"tenant_id": "chaos-disk", "id": id, "topic": "t", "data": {"pad": pad}});
        match publish(&h, &body).await {
            (Some(202), _) => acked.push(id),
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    let (status, message) = refused.expect("a 6 MiB disk never filled up");
    assert_eq!(
        status,
        Some(503),
        "a publish on a full disk answered {status:?}: {message}"
    );
    assert!(
        message.contains("disk is full") || message.contains("could not write to its disk"),
        "the 503 does not say the disk is full: {message:?}"
    );
    // It stays refused (not a crash, not a 500) while the disk is full …
    for _ in 0..5 {
        let body = json!({"tenant_id": "chaos-disk", "topic": "t", "data": {"pad": pad}});
        let (status, message) = publish(&h, &body).await;
        assert_eq!(status, Some(503), "{message}");
    }
    assert!(
        h.client
            .get(format!("http://{}/healthz", h.addr))
            .send()
            .await
            .is_ok(),
        "herald stopped serving on a full disk"
    );
    // … and recovers by itself once there is room again.
    disk.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let id = unique("evt_disk_");
        let body =
            json!({"tenant_id": "chaos-disk", "id": id, "topic": "t", "data": {"small": true}});
        if publish(&h, &body).await.0 == Some(202) {
            acked.push(id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishes were still refused 30 s after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_all_received(&receiver, &acked, Duration::from_secs(60)).await;
    assert!(h.terminate(), "herald did not shut down cleanly");

    // Nothing corrupt, nothing acknowledged missing, and it starts again on the same files.
    let db = dir.join("herald.db");
    assert_eq!(integrity(&db), "ok");
    let stored: HashSet<String> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT id FROM events").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let missing: Vec<_> = acked.iter().filter(|i| !stored.contains(*i)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged events missing: {missing:?}"
    );
    eprintln!(
        "full disk: {} publishes acknowledged, refused with 503 ({message:?}) when full, recovered after resizing",
        acked.len()
    );
    let h = crate::process_in(&dir, &[], true);
    let id = h
        .publish_event("chaos-disk", "t", json!({"after": "restart"}))
        .await;
    wait_all_received(&receiver, &[id], Duration::from_secs(30)).await;
    drop(h);
}

/// The embedded store: SIGKILL while the first migration's transaction is being written (the
/// kill is injected by `strace` at the third write to the write-ahead log, so it lands inside
/// the migration every time), then a normal start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_embedded_store_migration_then_a_clean_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let wal = dir.join("herald.db-wal");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(&wal)
        .args([
            "-e",
            "trace=write,pwrite64,writev,pwritev",
            "-e",
            "inject=write,pwrite64,writev,pwritev:signal=KILL:when=3",
            crate::BIN,
            "serve",
            "--dev",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(server_env(&dir, &[("HERALD_LOG_LEVEL", "info")]));
    let (ok, out) = output_within(&mut cmd, Duration::from_secs(60));
    assert!(!ok, "herald was not killed: {out}");
    assert!(
        out.contains("applying embedded store migration"),
        "the kill did not come during a migration: {out}"
    );
    assert!(
        !out.contains("listening on"),
        "herald got past its migrations: {out}"
    );
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        wal_len > 0,
        "nothing of the migration had been written when it was killed"
    );
    // The killed migration left no trace: the schema is whole at the version before it.
    let db = dir.join("herald.db");
    assert_eq!(integrity(&db), "ok");
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(
        version < herald_store::sqlite::SCHEMA_VERSION,
        "the killed migration counts as applied (version {version})"
    );
    // A normal start migrates and serves.
    let receiver = Receiver::start().await;
    let h = crate::process_in(&dir, &[], true);
    h.webhook("chaos-migrate", &receiver.url("/in"), json!({}))
        .await;
    let id = h.publish_event("chaos-migrate", "t", json!({})).await;
    wait_all_received(&receiver, &[id], Duration::from_secs(30)).await;
    drop(h);
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, herald_store::sqlite::SCHEMA_VERSION);
    assert_eq!(integrity(&db), "ok");
}

/// A child process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PostgreSQL: the test holds a SHARE lock on the version table, so the migration transaction
/// runs its first migration's DDL and then waits to record it; Herald is killed right there,
/// then started normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_postgres_migration_then_a_clean_start() {
    let db = TestDb::create().await;
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE herald_schema_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; LOCK TABLE herald_schema_migrations IN SHARE MODE")
        .await
        .unwrap();
    let db_name = db.url.rsplit('/').next().unwrap().to_string();
    // Started without waiting for it to listen: it will not get that far.
    let data = tempfile::tempdir().unwrap();
    let mut h = Killed(
        Command::new(crate::BIN)
            .args(["serve", "--dev"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(server_env(data.path(), &db.env()))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start herald"),
    );
    // Wait until Herald's migration transaction is blocked on the lock.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // pg_stat_activity is a snapshot per transaction, and this session is in one.
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() \
                 AND wait_event_type = 'Lock' AND query ILIKE '%herald_schema_migrations%'",
                &[&db_name],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "herald's migration never reached the version table"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The migration's tables exist inside its transaction right now; kill it there.
    h.0.kill().unwrap();
    h.0.wait().unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let others: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db_name],
            )
            .await
            .unwrap()
            .get(0);
        if others == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed node's sessions did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM herald_schema_migrations), to_regclass('tenants') IS NULL",
            &[],
        )
        .await
        .unwrap();
    let (versions, no_tenants): (i64, bool) = (row.get(0), row.get(1));
    assert_eq!(versions, 0, "the killed migration was recorded");
    assert!(no_tenants, "the killed migration left its tables behind");

    let receiver = Receiver::start().await;
    let mut env = db.env().to_vec();
    env.push(("HERALD_LOG_LEVEL", "warn"));
    let h = crate::process(&env);
    h.webhook("chaos-migrate", &receiver.url("/in"), json!({}))
        .await;
    let id = h.publish_event("chaos-migrate", "t", json!({})).await;
    wait_all_received(&receiver, &[id], Duration::from_secs(30)).await;
    drop(h);
    assert_eq!(
        herald_store::pg::PgStore::schema_version(&db.url)
            .await
            .unwrap(),
        herald_store::pg::SCHEMA_VERSION
    );
}

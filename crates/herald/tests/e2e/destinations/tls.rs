//! RabbitMQ and NATS over TLS connect to the address the target policy checked, and verify
//! the broker's certificate against the configured host name (issue 15: the drivers used to
//! hand the name to the client library, which resolved it a second time after the check — a
//! rebinding window).
//!
//! The set-up makes a second resolution visible. The real binary runs with nss_wrapper
//! (Debian `libnss-wrapper`) and a hosts file of its own, in which the brokers' names resolve
//! to `::1` first and `127.0.0.1` second, and with the policy allowing `127.0.0.1/32` only.
//! The check therefore picks `127.0.0.1`, where the TLS brokers listen; on `[::1]` at the same
//! port a decoy stands for what a rebinding answer would reach, counting connections. A driver
//! that resolves the name itself reaches the decoy first. The brokers' certificate, from a test
//! CA that Herald trusts through `SSL_CERT_FILE`, names `*.herald.test` hosts and `127.0.0.1`;
//! a destination under a name the certificate does not carry must fail its TLS check (which
//! verifying against the connected address would not).

#![cfg(all(feature = "rabbitmq", feature = "nats"))]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herald_testkit::herald::succeeded;
use herald_testkit::servers::Server;
use herald_testkit::services::RABBITMQ;
use herald_testkit::{HeraldProcess, free_port, require, unique};
use serde_json::{Value, json};

use crate::endpoint_auth::TestCa;

/// The names the certificate carries, and one it does not.
const NATS_HOST: &str = "nats.herald.test";
const RABBIT_HOST: &str = "rabbit.herald.test";
const WRONG_HOST: &str = "other.herald.test";

/// Files the brokers and Herald share: the CA, the brokers' certificate and key, and the
/// hosts file Herald resolves with.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Herald TLS broker test CA");
        let (cert, key) = ca.issue("brokers", &[NATS_HOST, RABBIT_HOST, "127.0.0.1"], false);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let hosts: String = [NATS_HOST, RABBIT_HOST, WRONG_HOST]
            .iter()
            .map(|h| format!("::1 {h}\n127.0.0.1 {h}\n"))
            .collect();
        std::fs::write(dir.path().join("hosts"), hosts).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Accepts and closes connections on `[::1]:port`, counting them.
struct Decoy {
    seen: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Decoy {
    async fn start(port: u16) -> Decoy {
        let listener = tokio::net::TcpListener::bind(("::1", port))
            .await
            .expect("bind the decoy on [::1] (IPv6 loopback)");
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Decoy { seen, task }
    }

    fn connections(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The nss_wrapper library, or a failure saying how to install it.
fn nss_wrapper() -> &'static str {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";
    assert!(
        Path::new(LIB).exists(),
        "{LIB} is missing: apt-get install libnss-wrapper (.ci/run installs it)"
    );
    LIB
}

/// The real binary in production mode (no `--dev`), resolving with `pki`'s hosts file,
/// trusting its CA, and allowed to reach `127.0.0.1` only.
fn herald(pki: &Pki, dir: &Path) -> HeraldProcess {
    let (hosts, ca) = (pki.path("hosts"), pki.path("ca.pem"));
    HeraldProcess::start_in(
        crate::BIN,
        dir,
        &[
            ("LD_PRELOAD", nss_wrapper()),
            ("NSS_WRAPPER_HOSTS", &hosts),
            ("SSL_CERT_FILE", &ca),
            ("HERALD_SECURITY_ALLOWED_NETWORKS", "127.0.0.1/32"),
            ("HERALD_RETRY_SCHEDULE", "list"),
            ("HERALD_RETRY_DELAYS_SECS", "1,1,1,1,1,1,1,1,1,1"),
            ("HERALD_RETRY_JITTER", "0"),
            ("HERALD_DELIVERY_TIMEOUT_MS", "3000"),
        ],
        false,
    )
}

/// The first attempt of `event_id` once it failed, with its error text.
async fn failed_attempt(h: &HeraldProcess, event_id: &str) -> (Value, String) {
    let a = h.attempts(event_id, |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "failed", "{a:?}");
    let error = a[0]["response_data"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    (a[0].clone(), error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_connects_to_the_checked_address_and_verifies_the_name() {
    let pki = Pki::new();
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .args([
            "--tlscert",
            &pki.path("cert.pem"),
            "--tlskey",
            &pki.path("key.pem"),
        ])
        .args(["-js", "-sd"])
        .arg(store.path());
    let _nats = Server::start(cmd, port, "nats-server (TLS)", Duration::from_secs(20));
    let decoy = Decoy::start(port).await;

    // A stream on the TLS server, made over TLS by the test's own client.
    let js = tls_jetstream(&pki, port).await;
    let prefix = unique("herald-tls-");
    let stream_name = unique("HERALD_TLS_");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("create a stream on the TLS server");

    let dir = tempfile::tempdir().unwrap();
    let h = herald(&pki, dir.path());
    let dest = |host: &str| {
        json!({"type": "nats", "topics": "*", "config": {
            "server_url": format!("{host}:{port}"), "subject": format!("{prefix}.{{topic}}"), "tls": true}})
    };
    h.create("tls-ok", dest(NATS_HOST)).await;
    let id = h
        .publish_event("tls-ok", "user.created", json!({"n": 1}))
        .await;
    let a = h.attempts(&id, succeeded).await;
    assert_eq!(a[0]["status"], "success", "{a:?}");
    let mut stream = js.get_stream(&stream_name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    // Under a name the certificate does not carry (same addresses), the TLS check fails.
    h.create("tls-wrong", dest(WRONG_HOST)).await;
    let id = h
        .publish_event("tls-wrong", "user.created", json!({}))
        .await;
    let (a, error) = failed_attempt(&h, &id).await;
    assert!(error.contains("certificate"), "{a}");

    assert_eq!(
        decoy.connections(),
        0,
        "a connection went to an address the policy did not check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_tls_connects_to_the_checked_address_and_verifies_the_name() {
    require("RabbitMQ", RABBITMQ);
    let pki = Pki::new();
    let port = free_port();
    // TLS in front of the machine's RabbitMQ: socat terminates it and forwards to 5672.
    let mut cmd = Command::new("socat");
    cmd.arg(format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
        pki.path("cert.pem"),
        pki.path("key.pem")
    ))
    .arg(format!("TCP:{RABBITMQ}"));
    let _tls = Server::start(
        cmd,
        port,
        "socat (TLS to RabbitMQ)",
        Duration::from_secs(20),
    );
    let decoy = Decoy::start(port).await;
    let s = crate::contract::rabbitmq::Setup::new().await;

    let dir = tempfile::tempdir().unwrap();
    let h = herald(&pki, dir.path());
    let dest = |host: &str| {
        json!({"type": "rabbitmq", "topics": "*",
            "config": {"server_url": format!("{host}:{port}"), "exchange": s.exchange, "tls": true},
            "credentials": {"username": "guest", "password": "guest"}})
    };
    h.create("tls-ok", dest(RABBIT_HOST)).await;
    let id = h
        .publish_event("tls-ok", "user.created", json!({"n": 1}))
        .await;
    let a = h.attempts(&id, succeeded).await;
    assert_eq!(a[0]["status"], "success", "{a:?}");
    let m = s
        .get()
        .await
        .expect("the message went through TLS to the queue");
    assert_eq!(
        serde_json::from_slice::<Value>(&m.delivery.data).unwrap(),
        json!({"n": 1})
    );

    h.create("tls-wrong", dest(WRONG_HOST)).await;
    let id = h
        .publish_event("tls-wrong", "user.created", json!({}))
        .await;
    let (a, error) = failed_attempt(&h, &id).await;
    assert!(error.contains("certificate"), "{a}");
    assert!(s.get().await.is_none(), "nothing was published");

    assert_eq!(
        decoy.connections(),
        0,
        "a connection went to an address the policy did not check"
    );
    s.cleanup().await;
}

/// A JetStream context on the TLS server at `127.0.0.1:port`, trusting the test CA.
async fn tls_jetstream(pki: &Pki, port: u16) -> async_nats::jetstream::Context {
    use async_nats::rustls;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(tls)
        .connect(format!("tls://127.0.0.1:{port}"))
        .await
        .expect("connect to the TLS server");
    async_nats::jetstream::new(client)
}

//! Endpoint authentication of webhook destinations, end to end against real, independent
//! servers the tests start on free ports with their own configuration in a temporary
//! directory: nginx (`auth_basic`, a Bearer check) and Apache httpd (`mod_auth_digest`), each
//! proxying accepted requests to the test's receiver; nginx with `ssl_verify_client on` and a
//! CA made in the test with rcgen (mTLS); and an OAuth 2.0 token endpoint with a
//! protected receiver built on Python's Authlib (`e2e/endpoint_auth/token_server.py`, in a
//! virtualenv under the target directory). `.ci/run` installs nginx and Apache (Debian
//! `nginx-light`, `apache2`); a missing server fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use herald_testkit::python::venv_with;
use herald_testkit::servers::Server;
use herald_testkit::{Herald, Received, Receiver, free_port};
use serde_json::{Value, json};

/// A server's log lines, read from its access log.
fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn find(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{binary} is not installed: the endpoint authentication tests need Debian {package} (.ci/run installs it)"
    );
}

/// nginx in front of the receiver: `/basic` needs HTTP Basic (user `alice`, password
/// `s3cret-passw0rd`), `/bearer` needs `Authorization: Bearer tok-0123456789abcdef`.
struct Nginx {
    _server: Server,
    port: u16,
    dir: tempfile::TempDir,
}

const BASIC_USER: &str = "alice";
const BASIC_PASSWORD: &str = "s3cret-passw0rd";
const BEARER: &str = "tok-0123456789abcdef";

impl Nginx {
    fn start(upstream: &str) -> Nginx {
        let nginx = find("nginx", "nginx-light");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port();
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("{BASIC_USER}:{{PLAIN}}{BASIC_PASSWORD}\n"),
        )
        .unwrap();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format counted '$request_uri $status';
    access_log {d}/access.log counted;
    server {{
        listen 127.0.0.1:{port};
        location /basic {{
            auth_basic "herald-test";
            auth_basic_user_file {d}/htpasswd;
            proxy_pass {upstream};
        }}
        location /bearer {{
            if ($http_authorization != "Bearer {BEARER}") {{ return 401; }}
            proxy_pass {upstream};
        }}
    }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(nginx);
        cmd.arg("-c").arg(&path).arg("-p").arg(dir.path());
        let server = Server::start(cmd, port, "nginx", Duration::from_secs(20));
        Nginx {
            _server: server,
            port,
            dir,
        }
    }

    /// nginx on TLS with a server certificate, requiring a client certificate issued by `ca`
    /// at `/mtls` (proxied to `upstream`).
    fn start_tls(upstream: &str, ca: &str, cert: &str, key: &str) -> Nginx {
        let nginx = find("nginx", "nginx-light");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port();
        for (name, pem) in [("ca.pem", ca), ("server.pem", cert), ("server.key", key)] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format counted '$request_uri $status $ssl_client_verify';
    access_log {d}/access.log counted;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/ca.pem;
        ssl_verify_client on;
        location /mtls {{
            proxy_pass {upstream};
        }}
    }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(nginx);
        cmd.arg("-c").arg(&path).arg("-p").arg(dir.path());
        let server = Server::start(cmd, port, "nginx (TLS)", Duration::from_secs(20));
        Nginx {
            _server: server,
            port,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn access(&self) -> Vec<String> {
        log_lines(&self.dir.path().join("access.log"))
    }
}

/// A TLS server (Python's `http.server` behind `ssl` with `CERT_REQUIRED`) that refuses a
/// client certificate in the handshake, with an alert.
struct StrictTls {
    _server: Server,
    port: u16,
    _dir: tempfile::TempDir,
}

impl StrictTls {
    fn start(ca: &str, cert: &str, key: &str) -> StrictTls {
        const SCRIPT: &str = r#"
import http.server, ssl, sys
port, d = int(sys.argv[1]), sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/server.pem", d + "/server.key")
ctx.load_verify_locations(d + "/ca.pem")
ctx.verify_mode = ssl.CERT_REQUIRED
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in [("ca.pem", ca), ("server.pem", cert), ("server.key", key)] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args(["-c", SCRIPT])
            .arg(port.to_string())
            .arg(dir.path());
        let server = Server::start(cmd, port, "the Python TLS server", Duration::from_secs(20));
        StrictTls {
            _server: server,
            port,
            _dir: dir,
        }
    }
}

/// A test CA made with rcgen.
pub(crate) struct TestCa {
    pub(crate) pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A certificate and its key (PEM) for `names`, for a server or a client.
    pub(crate) fn issue(&self, cn: &str, names: &[&str], client: bool) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Apache httpd with `mod_auth_digest` (MD5, qop=auth) in front of the receiver at `/digest`.
struct Apache {
    _server: Server,
    port: u16,
    dir: tempfile::TempDir,
}

const DIGEST_USER: &str = "bob";
const DIGEST_PASSWORD: &str = "digest-pa55word";
const DIGEST_REALM: &str = "herald-digest";

impl Apache {
    fn start(upstream: &str) -> Apache {
        Self::start_with(upstream, 300)
    }

    /// With nonces that go stale after `nonce_lifetime` seconds.
    fn start_with(upstream: &str, nonce_lifetime: u32) -> Apache {
        let httpd = find("apache2", "apache2");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port();
        // htdigest's format: user:realm:MD5(user:realm:password), hashed by Python's hashlib
        // (independent of Herald's code).
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import hashlib;print(hashlib.md5(b'{DIGEST_USER}:{DIGEST_REALM}:{DIGEST_PASSWORD}').hexdigest())"
            ))
            .output()
            .expect("python3");
        let ha1 = String::from_utf8(out.stdout).unwrap();
        std::fs::write(
            dir.path().join("htdigest"),
            format!("{DIGEST_USER}:{DIGEST_REALM}:{}\n", ha1.trim()),
        )
        .unwrap();
        let m = "/usr/lib/apache2/modules";
        let conf = format!(
            r#"ServerRoot {d}
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}
Mutex file:{d}
ErrorLog {d}/error.log
LogLevel warn
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authn_core_module {m}/mod_authn_core.so
LoadModule authn_file_module {m}/mod_authn_file.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule authz_user_module {m}/mod_authz_user.so
LoadModule auth_digest_module {m}/mod_auth_digest.so
LoadModule proxy_module {m}/mod_proxy.so
LoadModule proxy_http_module {m}/mod_proxy_http.so
User www-data
Group www-data
LogFormat "%U %>s" counted
CustomLog {d}/access.log counted
<Location /digest>
    AuthType Digest
    AuthName "{DIGEST_REALM}"
    AuthDigestProvider file
    AuthUserFile {d}/htdigest
    AuthDigestAlgorithm MD5
    AuthDigestQop auth
    AuthDigestNonceLifetime {nonce_lifetime}
    Require valid-user
    ProxyPass {upstream}
</Location>
"#
        );
        let path = dir.path().join("httpd.conf");
        std::fs::write(&path, conf).unwrap();
        // Workers run as www-data: let them read the password file.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.path())
            .status();
        let mut cmd = Command::new(httpd);
        cmd.arg("-X").arg("-f").arg(&path);
        let server = Server::start(cmd, port, "apache2", Duration::from_secs(20));
        Apache {
            _server: server,
            port,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn access(&self) -> Vec<String> {
        log_lines(&self.dir.path().join("access.log"))
    }
}

async fn create(h: &Herald, tenant: &str, body: Value) -> (u16, Value) {
    h.ok("PUT", &format!("/tenants/{tenant}"), None).await;
    h.call(
        "POST",
        &format!("/tenants/{tenant}/destinations"),
        Some(body),
    )
    .await
}

fn problems(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn publish_n(h: &Herald, tenant: &str, n: usize) {
    for i in 0..n {
        h.publish(json!({"tenant_id": tenant, "topic": "t", "data": {"i": i}}))
            .await;
    }
}

/// Waits until the destination's attempts satisfy `pred`.
async fn attempts_of(h: &Herald, dest: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    h.wait_attempts(
        &format!("destination_id={dest}&include=response_data&limit=1000"),
        pred,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_bearer_against_nginx() {
    let rx = Receiver::start().await;
    let nginx = Nginx::start(&rx.url(""));
    let h = Herald::start(&[
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ])
    .await;

    // Basic, right password: accepted by nginx, which passes the request on.
    let (s, dest) = create(
        &h,
        "acme",
        json!({"type": "webhook", "topics": "*", "config": {"url": nginx.url("/basic/hook")},
               "credentials": {"auth_type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD}}),
    )
    .await;
    assert_eq!(s, 201, "{dest}");
    let id = dest["id"].as_str().unwrap().to_string();
    // Sensitive on read: the password is masked, the username shown.
    assert_eq!(dest["credentials"]["username"], BASIC_USER);
    assert_eq!(dest["credentials"]["auth_type"], "basic");
    assert!(!dest.to_string().contains(BASIC_PASSWORD), "{dest}");
    publish_n(&h, "acme", 2).await;
    let got = rx.wait_for(2).await;
    for r in &got {
        assert_eq!(r.path, "/basic/hook");
        assert!(r.header("authorization").unwrap().starts_with("Basic "));
    }
    // Idempotency-Key: the delivery id, one per delivery.
    let keys: Vec<String> = got
        .iter()
        .map(|r| r.header("idempotency-key").expect("Idempotency-Key"))
        .collect();
    assert!(keys.iter().all(|k| k.starts_with("dlv_")), "{keys:?}");
    assert_ne!(keys[0], keys[1]);
    let attempts = attempts_of(&h, &id, |a| a.len() == 2).await;
    for a in &attempts {
        assert_eq!(a["status"], "success", "{a}");
        assert_eq!(
            a["response_data"]["auth"],
            json!({"type": "basic", "username": BASIC_USER})
        );
    }

    // Sent back as shown (masked), the password is kept: deliveries still pass.
    let shown = h
        .ok("GET", &format!("/tenants/acme/destinations/{id}"), None)
        .await;
    let patched = h
        .ok(
            "PATCH",
            &format!("/tenants/acme/destinations/{id}"),
            Some(json!({"credentials": shown["credentials"], "topics": ["kept"]})),
        )
        .await;
    assert!(!patched.to_string().contains(BASIC_PASSWORD));
    h.publish(json!({"tenant_id": "acme", "topic": "kept", "data": {}}))
        .await;
    rx.wait_for(3).await;
    attempts_of(&h, &id, |a| {
        a.len() == 3 && a.iter().all(|x| x["status"] == "success")
    })
    .await;

    // A manual retry authenticates the same way.
    let kept = attempts_of(&h, &id, |a| a.len() == 3).await;
    let event_id = kept
        .iter()
        .find(|x| x["topic"] == "kept")
        .expect("the attempt of the kept topic")["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    h.ok(
        "POST",
        "/retry",
        Some(json!({"event_id": event_id, "destination_id": id})),
    )
    .await;
    let got = rx.wait_for(4).await;
    assert!(
        got[3]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    let a = attempts_of(&h, &id, |a| a.len() == 4).await;
    let manual = a
        .iter()
        .find(|x| x["manual"] == true)
        .expect("the manual attempt");
    assert_eq!(manual["status"], "success", "{manual}");
    assert_eq!(manual["response_data"]["auth"]["type"], "basic");

    // Sealed at rest: no file of the data directory holds the password.
    for entry in std::fs::read_dir(&h.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(BASIC_PASSWORD.len())
                    .any(|w| w == BASIC_PASSWORD.as_bytes()),
                "{} holds the password in clear",
                path.display()
            );
        }
    }

    // Wrong password: nginx refuses; a permanent failure that says so, without the secret.
    let (s, bad) = create(
        &h,
        "wrong",
        json!({"type": "webhook", "topics": "*", "config": {"url": nginx.url("/basic/hook")},
               "credentials": {"auth_type": "basic", "username": BASIC_USER, "password": "not-the-password"}}),
    )
    .await;
    assert_eq!(s, 201, "{bad}");
    let bad_id = bad["id"].as_str().unwrap().to_string();
    publish_n(&h, "wrong", 1).await;
    let a = attempts_of(&h, &bad_id, |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "failed");
    assert_eq!(a[0]["code"], "401");
    assert!(
        a[0]["response_data"]["error"]
            .as_str()
            .unwrap()
            .contains("refused the basic credentials"),
        "{}",
        a[0]
    );
    assert!(!a[0].to_string().contains("not-the-password"));
    assert_eq!(rx.count(), 4, "nginx must not pass a refused request on");
    let refused = nginx
        .access()
        .iter()
        .filter(|l| l.ends_with(" 401"))
        .count();
    assert_eq!(refused, 1, "{:?}", nginx.access());

    // Bearer: checked by nginx; a retry of one delivery keeps its Idempotency-Key.
    rx.script.lock().extend([503]);
    let (s, b) = create(
        &h,
        "bearer",
        json!({"type": "webhook", "topics": "*", "config": {"url": nginx.url("/bearer/hook")},
               "credentials": {"auth_type": "bearer", "token": BEARER}}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert!(!b.to_string().contains(BEARER), "{b}");
    let bid = b["id"].as_str().unwrap().to_string();
    publish_n(&h, "bearer", 1).await;
    // The first attempt got 503 from the receiver; the retry (1 s later) has the same key.
    let got = rx.wait_for(6).await;
    for r in &got[4..6] {
        assert_eq!(
            r.header("authorization").as_deref(),
            Some(format!("Bearer {BEARER}").as_str())
        );
    }
    assert_eq!(
        got[4].header("idempotency-key"),
        got[5].header("idempotency-key"),
        "a retry keeps the delivery's Idempotency-Key"
    );
    let a = attempts_of(&h, &bid, |a| a.len() == 2).await;
    for x in &a {
        assert_eq!(x["response_data"]["auth"], json!({"type": "bearer"}));
        assert!(!x.to_string().contains(BEARER));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_fields_are_validated_and_nothing_is_half_created() {
    let h = Herald::start(&[]).await;
    let url = "http://127.0.0.1:9/hook";
    let cases = [
        (
            json!({"auth_type": "basic", "username": "u"}),
            "credentials.password: is required when auth_type is basic",
        ),
        (
            json!({"auth_type": "digest", "password": "p"}),
            "credentials.username: is required when auth_type is digest",
        ),
        (
            json!({"auth_type": "bearer"}),
            "credentials.token: is required when auth_type is bearer",
        ),
        (
            json!({"token": "abc"}),
            "credentials.token: is only used with auth_type bearer",
        ),
        (json!({"auth_type": "kerberos"}), "credentials.auth_type"),
        (
            json!({"auth_type": "basic", "username": "a:b", "password": "p"}),
            "credentials.username: must not contain ':'",
        ),
        (
            json!({"auth_type": "bearer", "token": "has space"}),
            "credentials.token: must be printable ASCII",
        ),
    ];
    for (creds, expected) in cases {
        let (s, v) = create(
            &h,
            "acme",
            json!({"type": "webhook", "topics": "*", "config": {"url": url}, "credentials": creds}),
        )
        .await;
        assert_eq!(s, 422, "{creds} -> {v}");
        assert!(
            problems(&v).iter().any(|p| p.starts_with(expected)),
            "{creds}: expected {expected:?} in {v}"
        );
    }
    // auth_type and a password in the URL, or an Authorization custom header, conflict.
    let (s, v) = create(
        &h,
        "acme",
        json!({"type": "webhook", "topics": "*",
               "config": {"url": "http://u:pw@127.0.0.1:9/", "custom_headers": {"Authorization": "x"}},
               "credentials": {"auth_type": "bearer", "token": "t"}}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let p = problems(&v);
    assert!(p.iter().any(|p| p.starts_with("config.url:")), "{p:?}");
    assert!(
        p.iter().any(|p| p.starts_with("config.custom_headers:")),
        "{p:?}"
    );
    let list = h.ok("GET", "/tenants/acme/destinations", None).await;
    assert_eq!(
        list,
        json!([]),
        "nothing may be created by a refused request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_against_apache_costs_one_request_per_delivery() {
    let rx = Receiver::start().await;
    let apache = Apache::start(&rx.url("/digest"));
    let h = Herald::start(&[]).await;
    let (s, dest) = create(
        &h,
        "acme",
        json!({"type": "webhook", "topics": "*", "config": {"url": apache.url("/digest/hook")},
               "credentials": {"auth_type": "digest", "username": DIGEST_USER, "password": DIGEST_PASSWORD}}),
    )
    .await;
    assert_eq!(s, 201, "{dest}");
    assert!(!dest.to_string().contains(DIGEST_PASSWORD));
    let id = dest["id"].as_str().unwrap().to_string();
    const N: usize = 100;
    publish_n(&h, "acme", N).await;
    let attempts = attempts_of(&h, &id, |a| {
        a.len() >= N && a.iter().all(|x| x["status"] == "success")
    })
    .await;
    assert_eq!(attempts.len(), N, "one attempt per delivery");
    assert_eq!(rx.count(), N);
    let lines = apache.access();
    let requests = lines.len();
    let challenges = lines.iter().filter(|l| l.ends_with(" 401")).count();
    println!("digest: {N} deliveries, {requests} requests at Apache, {challenges} of them 401");
    assert!(requests < 110, "{requests} requests for {N} deliveries");
    let a = attempts
        .iter()
        .find(|a| a["response_data"]["auth"]["challenged"] == true)
        .expect("one attempt fetched the challenge");
    assert_eq!(a["response_data"]["auth"]["type"], "digest");
    assert_eq!(a["response_data"]["auth"]["username"], DIGEST_USER);
    assert_eq!(a["response_data"]["auth"]["algorithm"], "MD5");
    let max_nc = attempts
        .iter()
        .filter_map(|a| a["response_data"]["auth"]["nc"].as_u64())
        .max()
        .unwrap();
    assert!(
        max_nc as usize >= N - challenges,
        "nc counted up to {max_nc}"
    );

    // Wrong password: a permanent failure with code auth_failed, the secret nowhere.
    let (_, bad) = create(
        &h,
        "wrong",
        json!({"type": "webhook", "topics": "*", "config": {"url": apache.url("/digest/hook")},
               "credentials": {"auth_type": "digest", "username": DIGEST_USER, "password": "wrong-password-1"}}),
    )
    .await;
    let bad_id = bad["id"].as_str().unwrap().to_string();
    let before = apache.access().len();
    publish_n(&h, "wrong", 1).await;
    let a = attempts_of(&h, &bad_id, |a| !a.is_empty()).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["status"], "failed");
    assert_eq!(a[0]["code"], "auth_failed", "{}", a[0]);
    assert!(
        a[0]["response_data"]["error"]
            .as_str()
            .unwrap()
            .contains("refused the digest credentials"),
        "{}",
        a[0]
    );
    assert!(!a[0].to_string().contains("wrong-password-1"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while apache.access().len() < before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spent = apache.access().len() - before;
    assert!(
        (2..=3).contains(&spent),
        "a refused digest attempt costs 2 or 3 requests, not {spent}"
    );
    assert_eq!(rx.count(), N);
}

/// Python packages of the independent servers and verifiers, pinned.
const AUTH_PACKAGES: &[&str] = &["Authlib==1.9.10", "Flask==3.1.3", "PyNaCl==1.6.2"];

/// Authlib's client credentials grant at `/token`, a receiver at `/hook` that checks its
/// tokens, `/revoke-all` and `/stats` (see the script).
struct TokenServer {
    _server: Server,
    port: u16,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl TokenServer {
    fn start(expires_in: u64) -> TokenServer {
        let python = venv_with("auth-venv", AUTH_PACKAGES).join("bin/python");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("token_server.py");
        std::fs::write(&script, include_str!("endpoint_auth/token_server.py")).unwrap();
        let port = free_port();
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(port.to_string())
            .arg(expires_in.to_string());
        let server = Server::start(
            cmd,
            port,
            "the Authlib token server",
            Duration::from_secs(30),
        );
        TokenServer {
            _server: server,
            port,
            _dir: dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn stats(&self) -> Value {
        self.http
            .get(self.url("/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn revoke_all(&self) {
        let r = self
            .http
            .post(self.url("/revoke-all"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

fn oauth2(ts: &TokenServer, client: &str, secret: &str, extra: Value) -> Value {
    let mut creds = json!({
        "auth_type": "oauth2_client_credentials",
        "oauth2_token_url": ts.url("/token"),
        "client_id": client,
        "client_secret": secret,
        "oauth2_scope": "webhook.send",
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut creds, extra) {
        c.extend(e);
    }
    json!({"type": "webhook", "topics": "*", "config": {"url": ts.url("/hook")}, "credentials": creds})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_credentials_against_authlib() {
    const LIFETIME: u64 = 3;
    let ts = TokenServer::start(LIFETIME);
    let h = Herald::start(&[
        ("HERALD_RETRY_SCHEDULE", "list"),
        ("HERALD_RETRY_DELAYS_SECS", "1,1,1"),
        ("HERALD_RETRY_JITTER", "0"),
    ])
    .await;
    let (s, dest) = create(
        &h,
        "acme",
        oauth2(&ts, "herald-basic", "basic-client-secret", json!({})),
    )
    .await;
    assert_eq!(s, 201, "{dest}");
    assert!(!dest.to_string().contains("basic-client-secret"), "{dest}");
    assert_eq!(dest["credentials"]["client_id"], "herald-basic");
    let id = dest["id"].as_str().unwrap().to_string();

    // A burst shares one token request.
    publish_n(&h, "acme", 5).await;
    let a = attempts_of(&h, &id, |a| {
        a.len() == 5 && a.iter().all(|x| x["status"] == "success")
    })
    .await;
    let st = ts.stats().await;
    assert_eq!(st["token_requests"], 1, "{st}");
    assert_eq!(st["hook_ok"], 5, "{st}");
    let fetched = a
        .iter()
        .filter(|x| x["response_data"]["auth"]["token"] == "fetched")
        .count();
    assert_eq!(fetched, 1, "{a:?}");
    assert_eq!(
        a[0]["response_data"]["auth"]["type"],
        "oauth2_client_credentials"
    );
    assert_eq!(a[0]["response_data"]["auth"]["client_id"], "herald-basic");

    // The receiver forgets the token: one 401, one new token, the same attempt succeeds.
    ts.revoke_all().await;
    publish_n(&h, "acme", 1).await;
    let a = attempts_of(&h, &id, |a| a.len() == 6).await;
    let refreshed: Vec<_> = a
        .iter()
        .filter(|x| x["response_data"]["auth"]["refreshed"] == true)
        .collect();
    assert_eq!(refreshed.len(), 1, "{a:?}");
    assert_eq!(refreshed[0]["status"], "success");
    let st = ts.stats().await;
    assert_eq!(
        (st["token_requests"].as_u64(), st["hook_refused"].as_u64()),
        (Some(2), Some(1)),
        "{st}"
    );

    // Past its lifetime the token is renewed before use: no 401 at the receiver.
    tokio::time::sleep(Duration::from_secs(LIFETIME)).await;
    publish_n(&h, "acme", 1).await;
    attempts_of(&h, &id, |a| {
        a.len() == 7 && a.iter().all(|x| x["status"] == "success")
    })
    .await;
    let st = ts.stats().await;
    assert_eq!(
        (st["token_requests"].as_u64(), st["hook_refused"].as_u64()),
        (Some(3), Some(1)),
        "{st}"
    );

    // client_secret_post works too.
    let (s, post) = create(
        &h,
        "post",
        oauth2(
            &ts,
            "herald-post",
            "post-client-secret",
            json!({"oauth2_auth_method": "client_secret_post"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{post}");
    publish_n(&h, "post", 1).await;
    attempts_of(&h, post["id"].as_str().unwrap(), |a| {
        a.len() == 1 && a[0]["status"] == "success"
    })
    .await;

    // invalid_client and invalid_scope are permanent, with the server's description.
    for (tenant, body, error) in [
        (
            "badclient",
            oauth2(&ts, "herald-basic", "wrong-client-secret", json!({})),
            "invalid_client",
        ),
        (
            "badscope",
            oauth2(
                &ts,
                "herald-basic",
                "basic-client-secret",
                json!({"oauth2_scope": "admin"}),
            ),
            "invalid_scope",
        ),
    ] {
        let (s, d) = create(&h, tenant, body).await;
        assert_eq!(s, 201, "{d}");
        publish_n(&h, tenant, 1).await;
        let a = attempts_of(&h, d["id"].as_str().unwrap(), |a| !a.is_empty()).await;
        assert_eq!(a[0]["status"], "failed");
        assert_eq!(a[0]["code"], "auth_failed", "{}", a[0]);
        let msg = a[0]["response_data"]["error"].as_str().unwrap();
        assert!(msg.contains(error), "{msg}");
        assert!(!a[0].to_string().contains("wrong-client-secret"));
    }

    // A token endpoint that does not answer is retried.
    let dead = format!("http://127.0.0.1:{}/token", free_port());
    let (s, d) = create(
        &h,
        "down",
        oauth2(
            &ts,
            "herald-basic",
            "basic-client-secret",
            json!({"oauth2_token_url": dead}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    publish_n(&h, "down", 1).await;
    let a = attempts_of(&h, d["id"].as_str().unwrap(), |a| a.len() >= 2).await;
    for x in &a {
        assert_eq!(x["code"], "auth_unavailable", "{x}");
        assert!(
            x["response_data"]["error"]
                .as_str()
                .unwrap()
                .contains("OAuth2 token endpoint"),
            "{x}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_against_nginx_with_ssl_verify_client() {
    let rx = Receiver::start().await;
    let ca = TestCa::new("Herald Test CA");
    let rogue = TestCa::new("Rogue CA");
    let (server_cert, server_key) = ca.issue("receiver", &["127.0.0.1", "localhost"], false);
    let (client_cert, client_key) = ca.issue("herald-client", &[], true);
    let (rogue_cert, rogue_key) = rogue.issue("herald-client", &[], true);
    let nginx = Nginx::start_tls(&rx.url(""), &ca.pem, &server_cert, &server_key);
    let url = format!("https://127.0.0.1:{}/mtls/hook", nginx.port);
    let h = Herald::start(&[]).await;
    let dest = |tls_ca: Option<&str>, cert: Option<&str>, key: Option<&str>| {
        let mut config = json!({"url": url});
        if let Some(ca) = tls_ca {
            config["tls_ca"] = json!(ca);
        }
        let mut creds = json!({"auth_type": "bearer", "token": BEARER});
        if let (Some(c), Some(k)) = (cert, key) {
            creds["client_cert"] = json!(c);
            creds["client_key"] = json!(k);
        }
        json!({"type": "webhook", "topics": "*", "config": config, "credentials": creds})
    };

    // The right certificate, a trusted CA, and bearer on top.
    let (s, good) = create(
        &h,
        "good",
        dest(Some(&ca.pem), Some(&client_cert), Some(&client_key)),
    )
    .await;
    assert_eq!(s, 201, "{good}");
    assert!(
        !good.to_string().contains(client_key.trim()),
        "the client key must be masked"
    );
    publish_n(&h, "good", 1).await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some(format!("Bearer {BEARER}").as_str())
    );
    let a = attempts_of(&h, good["id"].as_str().unwrap(), |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "success", "{}", a[0]);
    assert_eq!(a[0]["response_data"]["auth"]["client_certificate"], true);
    assert!(
        nginx.access().iter().any(|l| l.ends_with(" 200 SUCCESS")),
        "{:?}",
        nginx.access()
    );

    // A certificate from another CA: nginx refuses it; permanent, and the message says so.
    let (_, bad) = create(
        &h,
        "rogue",
        dest(Some(&ca.pem), Some(&rogue_cert), Some(&rogue_key)),
    )
    .await;
    publish_n(&h, "rogue", 1).await;
    let a = attempts_of(&h, bad["id"].as_str().unwrap(), |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "failed");
    assert_eq!(a[0]["code"], "client_certificate_refused", "{}", a[0]);
    assert!(
        a[0]["response_data"]["error"]
            .as_str()
            .unwrap()
            .contains("refused the TLS client certificate"),
        "{}",
        a[0]
    );

    // No certificate at all.
    let (_, none) = create(&h, "nocert", dest(Some(&ca.pem), None, None)).await;
    publish_n(&h, "nocert", 1).await;
    let a = attempts_of(&h, none["id"].as_str().unwrap(), |a| !a.is_empty()).await;
    assert_eq!(a[0]["code"], "client_certificate_refused", "{}", a[0]);
    assert!(
        a[0]["response_data"]["error"]
            .as_str()
            .unwrap()
            .contains("requires a TLS client certificate"),
        "{}",
        a[0]
    );

    // The receiver's certificate is from a CA this destination does not trust.
    let (_, untrusted) = create(
        &h,
        "untrusted",
        dest(None, Some(&client_cert), Some(&client_key)),
    )
    .await;
    publish_n(&h, "untrusted", 1).await;
    let a = attempts_of(&h, untrusted["id"].as_str().unwrap(), |a| !a.is_empty()).await;
    assert_eq!(a[0]["code"], "untrusted_certificate", "{}", a[0]);
    assert!(
        a[0]["response_data"]["error"]
            .as_str()
            .unwrap()
            .contains("not trusted"),
        "{}",
        a[0]
    );
    assert_eq!(
        rx.count(),
        1,
        "nothing but the good destination got through"
    );

    // Bad input: 422s naming the field.
    let cases = [
        (
            dest(Some(&ca.pem), Some(&client_cert), Some(&rogue_key)),
            "credentials.client_key: does not belong to client_cert",
        ),
        (
            dest(Some(&ca.pem), Some("not a certificate"), Some(&client_key)),
            "credentials.client_cert: contains no PEM certificate",
        ),
        (
            dest(
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                None,
                None,
            ),
            "config.tls_ca:",
        ),
    ];
    for (body, expected) in cases {
        let (s, v) = create(&h, "invalid", body).await;
        assert_eq!(s, 422, "{v}");
        assert!(
            problems(&v).iter().any(|p| p.starts_with(expected)),
            "expected {expected:?} in {v}"
        );
    }
    let mut only_cert = dest(None, None, None);
    only_cert["credentials"]["client_cert"] = json!(client_cert);
    let (s, v) = create(&h, "invalid", only_cert).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        problems(&v)
            .iter()
            .any(|p| p.starts_with("credentials.client_key: is required with client_cert")),
        "{v}"
    );
    assert_eq!(
        h.ok("GET", "/tenants/invalid/destinations", None).await,
        json!([])
    );

    // A server that breaks the handshake off (Python's ssl with CERT_REQUIRED sends a TLS
    // alert instead of nginx's 400 page).
    let strict = StrictTls::start(&ca.pem, &server_cert, &server_key);
    let strict_url = format!("https://127.0.0.1:{}/hook", strict.port);
    let strict_dest = |cert: &str, key: &str| {
        json!({"type": "webhook", "topics": "*", "config": {"url": strict_url, "tls_ca": ca.pem},
               "credentials": {"client_cert": cert, "client_key": key}})
    };
    let (_, ok) = create(&h, "strict-ok", strict_dest(&client_cert, &client_key)).await;
    publish_n(&h, "strict-ok", 1).await;
    let a = attempts_of(&h, ok["id"].as_str().unwrap(), |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "success", "{}", a[0]);
    let (_, refused) = create(&h, "strict-rogue", strict_dest(&rogue_cert, &rogue_key)).await;
    publish_n(&h, "strict-rogue", 1).await;
    let a = attempts_of(&h, refused["id"].as_str().unwrap(), |a| !a.is_empty()).await;
    assert_eq!(a[0]["code"], "client_certificate_refused", "{}", a[0]);
    let msg = a[0]["response_data"]["error"].as_str().unwrap();
    assert!(
        msg.contains("refused the TLS client certificate (alert"),
        "{msg}"
    );

    // The server-wide CA file does what config.tls_ca does, for every destination.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let h2 = Herald::start(&[("HERALD_DELIVERY_TLS_CA_FILE", ca_file.to_str().unwrap())]).await;
    let (s, d) = create(
        &h2,
        "acme",
        dest(None, Some(&client_cert), Some(&client_key)),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    publish_n(&h2, "acme", 1).await;
    let a = attempts_of(&h2, d["id"].as_str().unwrap(), |a| !a.is_empty()).await;
    assert_eq!(a[0]["status"], "success", "{}", a[0]);
    assert_eq!(rx.count(), 2);
}

/// Verifies the `v1a` signatures of a received request with PyNaCl (libsodium), following the
/// Standard Webhooks spec: ed25519 over `{webhook-id}.{webhook-timestamp}.{body}`. Returns one
/// verdict per `v1a` signature in the header, in order.
fn pynacl_verify(public_key: &str, r: &Received, body: &[u8]) -> Vec<bool> {
    use base64::Engine as _;
    const SCRIPT: &str = r#"
import base64, json, sys
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
d = json.load(sys.stdin)
assert d["public_key"].startswith("whpk_")
key = VerifyKey(base64.b64decode(d["public_key"][5:]))
signed = (d["id"] + "." + d["timestamp"] + ".").encode() + base64.b64decode(d["body"])
out = []
for part in d["signature"].split(" "):
    version, sig = part.split(",", 1)
    if version != "v1a":
        continue
    try:
        key.verify(signed, base64.b64decode(sig))
        out.append(True)
    except BadSignatureError:
        out.append(False)
print(json.dumps(out))
"#;
    let python = venv_with("auth-venv", AUTH_PACKAGES).join("bin/python");
    let input = json!({
        "public_key": public_key,
        "id": r.header("webhook-id").unwrap(),
        "timestamp": r.header("webhook-timestamp").unwrap(),
        "signature": r.header("webhook-signature").unwrap(),
        "body": base64::engine::general_purpose::STANDARD.encode(body),
    });
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the PyNaCl verifier failed");
    serde_json::from_slice(&out.stdout).expect("verdicts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_v1a_signatures_verify_with_pynacl_and_rotate() {
    let rx = Receiver::start().await;
    let h = Herald::start(&[]).await;
    let (s, d) = create(
        &h,
        "acme",
        json!({"type": "webhook", "topics": "*",
               "config": {"url": rx.url("/hook"), "signing_mode": "standard_ed25519"}}),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let secret = d["credentials"]["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsk") && secret.contains('*'),
        "sealed and masked: {secret}"
    );
    let pk1 = d["credentials"]["public_key"]
        .as_str()
        .expect("public key")
        .to_string();
    assert!(pk1.starts_with("whpk_"), "{pk1}");

    publish_n(&h, "acme", 1).await;
    let got = rx.wait_for(1).await;
    let sig = got[0].header("webhook-signature").unwrap();
    assert!(sig.starts_with("v1a,") && !sig.contains(' '), "{sig}");
    assert_eq!(pynacl_verify(&pk1, &got[0], &got[0].body), [true]);
    assert_eq!(
        pynacl_verify(&pk1, &got[0], b"{\"i\":1}"),
        [false],
        "a changed body must not verify"
    );

    // Rotation: a new key pair; the old one keeps signing during the overlap.
    let rotated = h
        .ok(
            "PATCH",
            &format!("/tenants/acme/destinations/{id}"),
            Some(json!({"credentials": {"rotate_secret": true}})),
        )
        .await;
    let pk2 = rotated["credentials"]["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pk2.starts_with("whpk_") && pk2 != pk1, "{rotated}");
    assert_eq!(rotated["credentials"]["previous_public_key"], pk1.as_str());
    // Public keys sent back are ignored, not stored.
    let again = h
        .ok(
            "PATCH",
            &format!("/tenants/acme/destinations/{id}"),
            Some(json!({"credentials": rotated["credentials"]})),
        )
        .await;
    assert_eq!(again["credentials"]["public_key"], pk2.as_str());
    publish_n(&h, "acme", 1).await;
    let got = rx.wait_for(2).await;
    assert_eq!(pynacl_verify(&pk2, &got[1], &got[1].body), [true, false]);
    assert_eq!(pynacl_verify(&pk1, &got[1], &got[1].body), [false, true]);

    // A shared secret cannot sign standard_ed25519; switching needs a new key pair.
    let (s, v) = create(
        &h,
        "other",
        json!({"type": "webhook", "topics": "*",
               "config": {"url": rx.url("/hook"), "signing_mode": "standard_ed25519"},
               "credentials": {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        problems(&v)
            .iter()
            .any(|p| p.starts_with("credentials.secret: must be a whsk_")),
        "{v}"
    );
    let (_, hmac) = create(
        &h,
        "switch",
        json!({"type": "webhook", "topics": "*", "config": {"url": rx.url("/hook")}}),
    )
    .await;
    let path = format!(
        "/tenants/switch/destinations/{}",
        hmac["id"].as_str().unwrap()
    );
    let (s, v) = h
        .call(
            "PATCH",
            &path,
            Some(json!({"config": {"signing_mode": "standard_ed25519"}})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let switched = h
        .ok(
            "PATCH",
            &path,
            Some(json!({"config": {"signing_mode": "standard_ed25519"}, "credentials": {"rotate_secret": true}})),
        )
        .await;
    assert!(
        switched["credentials"]["public_key"]
            .as_str()
            .unwrap()
            .starts_with("whpk_")
    );
    assert!(
        switched["credentials"].get("previous_public_key").is_none(),
        "the previous whsec_ secret has no public key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_signature_templates_sign_body_timestamp_and_idempotency_key() {
    use hmac::{Hmac, Mac};
    let rx = Receiver::start().await;
    let h = Herald::start(&[]).await;
    // The seed's scheme: HMAC-SHA256 over body + timestamp + idempotency key.
    let (s, d) = create(
        &h,
        "acme",
        json!({"type": "webhook", "topics": "*",
               "config": {"url": rx.url("/templated"),
                          "signature_content_template": "{body}{timestamp}{idempotency_key}",
                          "signature_header_template": "t={timestamp},v0={signatures}"}}),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    let secret = d["credentials"]["secret"].as_str().unwrap().to_string();
    // Another destination on the same server keeps the server's (standard) scheme.
    let (_, plain) = create(
        &h,
        "plain",
        json!({"type": "webhook", "topics": "*", "config": {"url": rx.url("/plain")}}),
    )
    .await;
    assert_eq!(plain["config"].get("signature_content_template"), None);
    publish_n(&h, "acme", 1).await;
    publish_n(&h, "plain", 1).await;
    let got = rx.wait_for(2).await;
    let r = got.iter().find(|r| r.path == "/templated").unwrap();
    let ts = r
        .header("x-outpost-timestamp")
        .expect("outpost-mode headers");
    let key = r.header("idempotency-key").unwrap();
    assert!(key.starts_with("dlv_"));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.update(ts.as_bytes());
    mac.update(key.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        r.header("x-outpost-signature").unwrap(),
        format!("t={ts},v0={expected}")
    );
    let p = got.iter().find(|r| r.path == "/plain").unwrap();
    assert!(p.header("webhook-signature").unwrap().starts_with("v1,"));
    assert!(p.header("x-outpost-signature").is_none());

    // Base64 encoding, and the templates are validated at create.
    let (s, b) = create(
        &h,
        "b64",
        json!({"type": "webhook", "topics": "*",
               "config": {"url": rx.url("/b64"), "signature_content_template": "{idempotency_key}.{body}",
                          "signature_encoding": "base64"}}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let cases = [
        (
            json!({"signature_content_template": "{body}{nonce}"}),
            "config.signature_content_template: unknown placeholder `{nonce}`",
        ),
        (
            json!({"signature_content_template": "{timestamp}"}),
            "config.signature_content_template: must contain {body}",
        ),
        (
            json!({"signature_header_template": "sig={body}"}),
            "config.signature_header_template:",
        ),
        (
            json!({"signature_encoding": "base32"}),
            "config.signature_encoding",
        ),
        (
            json!({"signing_mode": "standard", "signature_content_template": "{body}"}),
            "config.signing_mode: must be outpost or empty",
        ),
    ];
    for (extra, expected) in cases {
        let mut config = json!({"url": rx.url("/x")});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (s, v) = create(
            &h,
            "invalid",
            json!({"type": "webhook", "topics": "*", "config": config}),
        )
        .await;
        assert_eq!(s, 422, "{extra} -> {v}");
        assert!(
            problems(&v).iter().any(|p| p.starts_with(expected)),
            "{extra}: expected {expected:?} in {v}"
        );
    }
    assert_eq!(
        h.ok("GET", "/tenants/invalid/destinations", None).await,
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_stale_nonce_is_answered_within_the_attempt() {
    let rx = Receiver::start().await;
    let apache = Apache::start_with(&rx.url("/digest"), 1);
    let h = Herald::start(&[]).await;
    let (s, dest) = create(
        &h,
        "acme",
        json!({"type": "webhook", "topics": "*", "config": {"url": apache.url("/digest/hook")},
               "credentials": {"auth_type": "digest", "username": DIGEST_USER, "password": DIGEST_PASSWORD}}),
    )
    .await;
    assert_eq!(s, 201, "{dest}");
    let id = dest["id"].as_str().unwrap().to_string();
    publish_n(&h, "acme", 1).await;
    attempts_of(&h, &id, |a| a.len() == 1 && a[0]["status"] == "success").await;
    // Apache's clock moves on: the cached nonce is now stale.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish_n(&h, "acme", 1).await;
    let a = attempts_of(&h, &id, |a| {
        a.len() == 2 && a.iter().all(|x| x["status"] == "success")
    })
    .await;
    assert!(
        a.iter()
            .all(|x| x["response_data"]["auth"]["challenged"] == true),
        "both attempts took a challenge (the first, then the stale one): {a:?}"
    );
    let lines = apache.access();
    let refused = lines.iter().filter(|l| l.ends_with(" 401")).count();
    assert_eq!((lines.len(), refused), (4, 2), "{lines:?}");
    assert_eq!(rx.count(), 2);
}

//! Access control and bulk work end to end: scoped API keys across PostgreSQL nodes, the
//! bootstrap admin key rotated without a restart (API and `herald api-key rotate-admin`),
//! and CSV webhook templates through pre-signed URLs (`herald import` / `herald export`).

use std::process::Command;
use std::time::{Duration, Instant};

use herald_testkit::{API_KEY, Api, Herald, TestDb};
use serde_json::{Value, json};

/// Polls `check` until it is true, failing after `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn status(api: &Api, token: &str, path: &str) -> u16 {
    api.call_as(token, "GET", path, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_admin_rotation_reach_every_postgres_node_within_a_second() {
    let db = TestDb::create().await;
    let a = Herald::start(&db.env()).await;
    let b = Herald::start(&db.env()).await;
    a.ok("PUT", "/tenants/acme", None).await;
    let key = a
        .ok(
            "POST",
            "/api-keys",
            Some(json!({"name": "ci", "scopes": ["read"]})),
        )
        .await;
    let secret = key["secret"].as_str().unwrap().to_string();
    let id = key["id"].as_str().unwrap().to_string();
    // Node B knows the key (and caches it).
    assert_eq!(status(&b, &secret, "/tenants/acme").await, 200);
    assert_eq!(status(&b, &secret, "/tenants/acme").await, 200);

    a.ok("DELETE", &format!("/api-keys/{id}"), None).await;
    let took = within(
        Duration::from_secs(1),
        "node B refusing the revoked key",
        || async { status(&b, &secret, "/tenants/acme").await == 401 },
    )
    .await;
    println!("revoked key refused by the second node after {took:?}");
    assert_eq!(status(&a, &secret, "/tenants/acme").await, 401);

    // The bootstrap admin key, rotated on B, stops on A; the new one works on A.
    assert_eq!(status(&a, API_KEY, "/tenants").await, 200);
    let (code, rotated) = b.call("POST", "/api-keys/rotate-admin", None).await;
    assert_eq!(code, 201, "{rotated}");
    let new_admin = rotated["secret"].as_str().unwrap().to_string();
    let took = within(
        Duration::from_secs(1),
        "node A refusing the old admin key",
        || async { status(&a, API_KEY, "/tenants").await == 401 },
    )
    .await;
    println!("old admin key refused by the other node after {took:?}");
    assert_eq!(status(&a, &new_admin, "/tenants").await, 200);
    assert_eq!(status(&b, &new_admin, "/tenants").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rotates_the_admin_key_of_a_running_server() {
    let h = Herald::start(&[]).await;
    let out = Command::new(crate::BIN)
        .args([
            "api-key",
            "rotate-admin",
            "--url",
            &format!("http://{}", h.addr),
            "--api-key",
            API_KEY,
        ])
        .env_clear()
        .output()
        .expect("run herald api-key rotate-admin");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = stdout
        .split_whitespace()
        .find(|w| w.starts_with("hrld_"))
        .unwrap_or_else(|| panic!("no key in {stdout}"))
        .to_string();
    assert_eq!(status(&h, API_KEY, "/tenants").await, 401);
    assert_eq!(status(&h, &new, "/tenants").await, 200);
}

// ----- CSV webhook templates -----

/// The seed's header and sample row (BalkanID's documentation), with its empty fields.
pub const SEED_HEADER: &str = "ID,Name,Description,Value,Metadata,EntityType,CreatedBy,CreatedAt,UpdatedBy,UpdatedAt,Active,Status,Type,Scope,Server Url,Auth Token,Integration";
pub const SEED_ROW: &str = r#"01HREEYGKJ70X3MVAG9ZWR192D,Template 2,This is template A,"{""x2"": ""some""}",,some entity,,2024-03-08 10:00:00,,2024-03-08 12:30:00,true,,finding,integration,https://webhook.site/x124,someAuthToken,aws/234"#;

/// A pre-signed URL rebased onto the server's address (the server names itself
/// `localhost`).
fn rebase(api: &Api, url: &str) -> String {
    let path = &url[url.find("/api/v1/").expect("api path")..];
    format!("http://{}{path}", api.addr)
}

async fn url(api: &Api, token: &str, tenant: &str, which: &str) -> String {
    let (code, v) = api
        .call_as(
            token,
            "POST",
            &format!("/tenants/{tenant}/webhook-templates/{which}-url"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    rebase(api, v["url"].as_str().expect("url"))
}

async fn put_csv(api: &Api, url: &str, body: &str) -> (u16, Value) {
    let resp = api
        .client
        .put(url)
        .header("content-type", "text/csv")
        .body(body.to_string())
        .send()
        .await
        .expect("PUT");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn upload(api: &Api, tenant: &str, body: &str) -> (u16, Value) {
    let u = url(api, API_KEY, tenant, "upload").await;
    put_csv(api, &u, body).await
}

async fn download(api: &Api, token: &str, tenant: &str) -> String {
    let u = url(api, token, tenant, "download").await;
    let resp = api.client.get(&u).send().await.expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_row_goes_in_through_a_presigned_url_and_comes_back_out() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/acme", None).await;
    let csv = format!("{SEED_HEADER}\r\n{SEED_ROW}\r\n");
    let (code, report) = upload(&h, "acme", &csv).await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(
        report,
        json!({"created": 1, "updated": 0, "unchanged": 0, "errors": []})
    );

    // The destination, as the mapping in docs/csv.md says.
    let d = h
        .ok(
            "GET",
            "/tenants/acme/destinations/01HREEYGKJ70X3MVAG9ZWR192D",
            None,
        )
        .await;
    assert_eq!(d["type"], "webhook");
    assert_eq!(d["topics"], json!(["finding"]));
    assert_eq!(d["config"]["url"], "https://webhook.site/x124");
    assert_eq!(d["credentials"]["auth_type"], "bearer");
    assert_eq!(d["filter"], json!({"metadata": {"integration": "aws/234"}}));
    assert!(d["disabled_at"].is_null());
    assert_eq!(d["metadata"]["template.name"], "Template 2");
    assert_eq!(d["metadata"]["template.value"], r#"{"x2": "some"}"#);
    assert_eq!(d["metadata"]["template.entity_type"], "some entity");
    assert!(d["metadata"].get("template.metadata").is_none(), "{d}");
    assert_eq!(d["metadata"]["template.created_at"], "2024-03-08 10:00:00");

    // Read back: the admin sees the token, a tenant token sees it masked.
    let admin_csv = download(&h, API_KEY, "acme").await;
    let mut lines = admin_csv.split("\r\n");
    assert_eq!(lines.next(), Some(SEED_HEADER));
    let row = lines.next().unwrap();
    assert!(row.contains("someAuthToken"), "{row}");
    assert!(
        row.starts_with("01HREEYGKJ70X3MVAG9ZWR192D,Template 2,"),
        "{row}"
    );
    let token = h.ok("GET", "/tenants/acme/token", None).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let tenant_csv = download(&h, &token, "acme").await;
    assert!(!tenant_csv.contains("someAuthToken"), "{tenant_csv}");

    // Import → export → import changes nothing, with either export.
    for again in [&admin_csv, &tenant_csv] {
        let (code, report) = upload(&h, "acme", again).await;
        assert_eq!(code, 200, "{report}");
        assert_eq!(
            report,
            json!({"created": 0, "updated": 0, "unchanged": 1, "errors": []})
        );
    }
    assert_eq!(download(&h, API_KEY, "acme").await, admin_csv);

    // Credentials follow their target: the masked token with another Server Url is refused
    // (line and column named) and nothing changes.
    let retargeted = tenant_csv.replace("https://webhook.site/x124", "https://elsewhere.example/x");
    assert_ne!(retargeted, tenant_csv);
    let (code, report) = upload(&h, "acme", &retargeted).await;
    assert_eq!(code, 422, "{report}");
    assert_eq!(report["errors"][0]["line"], 2, "{report}");
    assert_eq!(report["errors"][0]["column"], "Auth Token", "{report}");
    assert_eq!(download(&h, API_KEY, "acme").await, admin_csv);

    // A URL works once, and only for what it was made for.
    let u = url(&h, API_KEY, "acme", "upload").await;
    assert_eq!(put_csv(&h, &u, &csv).await.0, 200);
    let (code, v) = put_csv(&h, &u, &csv).await;
    assert_eq!(code, 410, "{v}");
    let tampered = u.replace("tenant_id=acme", "tenant_id=other");
    assert_eq!(put_csv(&h, &tampered, &csv).await.0, 403);
    let d = url(&h, API_KEY, "acme", "download").await;
    assert_eq!(
        put_csv(&h, &d.replace("/download?", "/upload?"), &csv)
            .await
            .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_name_line_and_column_and_change_nothing() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/acme", None).await;
    let good =
        |id: &str| format!("{id},n,,v,,e,,,,,true,,finding,global,https://example.com/{id},,");
    let cases: Vec<(&str, String, u64, &str, &str)> = vec![
        (
            "bad quoting",
            format!(
                "{SEED_HEADER}\n{}\nq2,\"unterminated,v,,e,,,,,true,,review,global,https://example.com/q,,\n",
                good("q1")
            ),
            3,
            "Description",
            "check the quoting",
        ),
        (
            "missing required column",
            "ID,Name,Value,EntityType,Type,Scope\nm1,n,v,e,finding,global\n".to_string(),
            1,
            "Server Url",
            "required column is missing",
        ),
        (
            "wrong enum value",
            format!(
                "{SEED_HEADER}\n{}\nw2,n,,v,,e,,,,,true,,alert,global,https://example.com/w,,\n",
                good("w1")
            ),
            3,
            "Type",
            "\"alert\" is not a type",
        ),
        (
            "duplicate IDs",
            format!("{SEED_HEADER}\n{}\n{}\n", good("dup"), good("dup")),
            3,
            "ID",
            "duplicate ID \"dup\" (first on line 2)",
        ),
        (
            "unknown column",
            format!("{SEED_HEADER},Colour\n{},red\n", good("u1")),
            1,
            "Colour",
            "unknown column",
        ),
        (
            "integration scope without an integration",
            format!(
                "{SEED_HEADER}\ni1,n,,v,,e,,,,,true,,finding,integration,https://example.com/i,,\n"
            ),
            2,
            "Integration",
            "required when Scope is integration",
        ),
    ];
    for (what, body, line, column, message) in cases {
        let (code, report) = upload(&h, "acme", &body).await;
        assert_eq!(code, 422, "{what}: {report}");
        let errors = report["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["line"] == json!(line)
                && e["column"] == json!(column)
                && e["message"].as_str().unwrap().contains(message)),
            "{what}: want line {line} column {column:?} {message:?} in {report}"
        );
        assert_eq!(
            (&report["created"], &report["updated"], &report["unchanged"]),
            (&json!(0), &json!(0), &json!(0)),
            "{what}"
        );
        let all = h.ok("GET", "/tenants/acme/destinations", None).await;
        assert_eq!(all, json!([]), "{what}: something was applied");
    }

    // Quoting, CRLF, a BOM and header case are fine.
    let body = format!(
        "\u{feff}{}\r\nok1,\"Name, with comma\",\"line\nbreak and \"\"quotes\"\"\",v,,e,,,,,TRUE,,review,global,https://example.com/ok,,\r\n",
        SEED_HEADER.to_lowercase()
    );
    let (code, report) = upload(&h, "acme", &body).await;
    assert_eq!(code, 200, "{report}");
    let d = h.ok("GET", "/tenants/acme/destinations/ok1", None).await;
    assert_eq!(d["metadata"]["template.name"], "Name, with comma");
    assert_eq!(
        d["metadata"]["template.description"],
        "line\nbreak and \"quotes\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_url_is_single_use_across_postgres_nodes() {
    let db = TestDb::create().await;
    let a = Herald::start(&db.env()).await;
    let b = Herald::start(&db.env()).await;
    a.ok("PUT", "/tenants/acme", None).await;
    let on_a = url(&a, API_KEY, "acme", "download").await;
    let on_b = on_a.replace(&a.addr.to_string(), &b.addr.to_string());
    let first = a.client.get(&on_a).send().await.unwrap().status().as_u16();
    let second = a.client.get(&on_b).send().await.unwrap().status().as_u16();
    assert_eq!((first, second), (200, 410));
}

/// Runs the binary with `args` against `api`; returns (success, stdout).
fn cli(api: &Api, args: &[&str]) -> (bool, String) {
    let url = format!("http://{}", api.addr);
    let out = Command::new(crate::BIN)
        .args(args)
        .args(["--url", &url, "--api-key", API_KEY])
        .env_clear()
        .output()
        .expect("run herald");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_import_and_export_round_trip_through_a_running_server() {
    let h = Herald::start(&[]).await;
    h.ok("PUT", "/tenants/acme", None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("templates.csv");
    std::fs::write(&file, format!("{SEED_HEADER}\n{SEED_ROW}\n")).unwrap();
    let (ok, out) = cli(&h, &["import", file.to_str().unwrap(), "--tenant", "acme"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("created: 1, updated: 0, unchanged: 0"),
        "{out}"
    );
    let exported = dir.path().join("out.csv");
    let (ok, out) = cli(
        &h,
        &[
            "export",
            "--tenant",
            "acme",
            "-o",
            exported.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(
        &h,
        &["import", exported.to_str().unwrap(), "--tenant", "acme"],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("created: 0, updated: 0, unchanged: 1"),
        "{out}"
    );
    // A refused file: the report, a failure, nothing applied.
    std::fs::write(
        &file,
        format!("{SEED_HEADER}\nx,,,,,,,,,,maybe,,finding,global,https://e.com,,\n"),
    )
    .unwrap();
    let (ok, out) = cli(&h, &["import", file.to_str().unwrap(), "--tenant", "acme"]);
    assert!(!ok, "{out}");
    assert!(out.contains("line 2, column Active"), "{out}");
    assert!(out.contains("nothing was applied"), "{out}");
    let all = h.ok("GET", "/tenants/acme/destinations", None).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
}

/// Peak resident memory of a process, from `/proc/<pid>/status` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_rows_import_well_under_a_minute_in_bounded_memory() {
    const ROWS: usize = 100_000;
    // Info logs: the server reports how long each phase of the import took.
    let h = crate::process(&[("HERALD_LOG_LEVEL", "info,herald_engine=warn")]);
    h.ok("PUT", "/tenants/bulk", None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bulk.csv");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        writeln!(w, "{SEED_HEADER}").unwrap();
        for i in 0..ROWS {
            let (kind, scope, integration) = match i % 3 {
                0 => ("finding", "integration", "aws/234"),
                1 => ("request", "global", ""),
                _ => ("review", "global", ""),
            };
            writeln!(
                w,
                "tpl-{i:06},Template {i},\"Row {i}, bulk\",value-{i},\"{{\"\"n\"\": {i}}}\",entity,ops,2024-03-08 10:00:00,,,true,,{kind},{scope},https://hooks.example.com/{i},token-{i},{integration}"
            )
            .unwrap();
        }
    }
    let size = std::fs::metadata(&file).unwrap().len();
    let before = peak_rss_kib(h.child.id());
    let url = format!("http://{}", h.addr);
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(crate::BIN)
        .args(["import", file.to_str().unwrap(), "--tenant", "bulk"])
        .args(["--url", &url, "--api-key", API_KEY])
        .env_clear()
        .output()
        .expect("run /usr/bin/time -v herald import");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("created: {ROWS}, updated: 0")),
        "{stdout}"
    );
    let cli_rss = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .map(str::trim)
        .unwrap_or("?")
        .to_string();
    let server_peak = peak_rss_kib(h.child.id());
    println!(
        "imported {ROWS} rows ({:.1} MiB) in {:.2?}; server peak RSS {} MiB (before the import {} MiB); herald import peak RSS {cli_rss} KiB",
        size as f64 / (1 << 20) as f64,
        took,
        server_peak / 1024,
        before / 1024
    );
    // "Well under a minute" is for an optimised build (docs/benchmarks.md has the figures);
    // the unoptimised test build on a shared machine gets five.
    let bound = Duration::from_secs(if cfg!(debug_assertions) { 300 } else { 60 });
    assert!(took < bound, "took {took:?}");
    let all = h.ok("GET", "/tenants/bulk", None).await;
    assert_eq!(all["destinations_count"], json!(ROWS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_max_lifetime_from_the_configuration_fills_expires_at_and_renews_by_it() {
    let h = Herald::start(&[("HERALD_DESTINATIONS_MAX_LIFETIME", "90d")]).await;
    let d = h
        .create(
            "acme",
            json!({"type": "webhook", "topics": "*", "config": {"url": "https://example.com/x"}}),
        )
        .await;
    let expires: jiff::Timestamp = d["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .unwrap();
    let in_90_days = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(90 * 24);
    assert!(
        in_90_days.duration_since(expires).abs() < jiff::SignedDuration::from_mins(5),
        "{d}"
    );
    assert_eq!(d["expired"], false);
    let id = d["id"].as_str().unwrap();
    let renewed = h
        .ok(
            "POST",
            &format!("/tenants/acme/destinations/{id}/renew"),
            None,
        )
        .await;
    assert!(renewed["expires_at"].as_str().unwrap() >= d["expires_at"].as_str().unwrap());
}

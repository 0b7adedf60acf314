//! Commands that talk to a running server over its API: `herald api-key rotate-admin`,
//! `herald import` and `herald export` (CSV webhook templates, docs/csv.md).
//!
//! They take the server's base URL and an API key from flags or the environment
//! (`--url` / `HERALD_URL`, default `http://localhost:<port>`; `--api-key` / `HERALD_API_KEY`),
//! and never open the database themselves: the embedded store belongs to the server process,
//! and going through the API keeps every check (scopes, validation, all-or-nothing) in one place.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use futures_util::stream;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::config::Config;

/// Where the server is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Base URL of the running server, e.g. `http://localhost:3333`.
    #[arg(long, env = "HERALD_URL")]
    url: Option<String>,
    /// API key: the admin key or a scoped key (`hk_…`) with the scopes the command needs.
    /// Defaults to the configured `api_key` (`HERALD_API_KEY`).
    #[arg(long = "api-key")]
    api_key: Option<String>,
}

/// `herald api-key …`.
#[derive(clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Replace the bootstrap admin key without a restart; the old one stops working on every
    /// node. Prints the new key once.
    RotateAdmin(ServerArgs),
}

/// Options of `herald import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The CSV file (BalkanID webhook-templates format).
    file: PathBuf,
    /// The tenant whose destinations the file describes.
    #[arg(long)]
    tenant: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Options of `herald export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The tenant to export.
    #[arg(long)]
    tenant: String,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(cfg: &Config, args: &ServerArgs) -> Result<Client> {
        let base = args
            .url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{}", cfg.port));
        let key = match &args.api_key {
            Some(k) => k.clone(),
            None if !cfg.api_key.is_empty() => cfg.api_key.expose().to_string(),
            None => bail!("no API key: pass --api-key or set HERALD_API_KEY"),
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .context("building the HTTP client")?,
            base: base.trim_end_matches('/').to_string(),
            key,
        })
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// A pre-signed URL sent to the server this client talks to: its path and query on
    /// `--url` (the server names itself by its public URL, which may not be the address the
    /// command reaches it at).
    fn presigned(&self, answer: &Value) -> Result<String> {
        let url = answer
            .get("url")
            .and_then(Value::as_str)
            .context("the server's answer has no url")?;
        let at = url
            .find("/api/v1/")
            .with_context(|| format!("unexpected pre-signed URL {url:?}"))?;
        Ok(format!("{}{}", self.base, &url[at..]))
    }

    /// POSTs `path` and returns the JSON answer, or the server's error message.
    async fn post(&self, path: &str) -> Result<Value> {
        let resp = self
            .http
            .post(self.api(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        json_or_error(resp).await
    }
}

async fn json_or_error(resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() && status.as_u16() != 422 {
        let msg = body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        bail!("the server answered {status}: {msg}");
    }
    Ok(body)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `herald api-key …`.
pub fn api_key(cfg: &Config, cmd: ApiKeyCommand) -> Result<()> {
    match cmd {
        ApiKeyCommand::RotateAdmin(args) => {
            let client = Client::new(cfg, &args)?;
            let out = runtime()?.block_on(client.post("/api-keys/rotate-admin"))?;
            let secret = out
                .get("secret")
                .and_then(Value::as_str)
                .context("the server's answer has no secret")?;
            println!("New admin API key (shown once; the previous one no longer works):");
            println!("  {secret}");
            Ok(())
        }
    }
}

/// Runs `herald import FILE --tenant T`: asks for a pre-signed upload URL and PUTs the file
/// there, with a progress bar over the bytes sent. Prints the report; fails when the file
/// was refused (nothing was applied then).
pub fn import(cfg: &Config, args: ImportArgs) -> Result<()> {
    let client = Client::new(cfg, &args.server)?;
    runtime()?.block_on(async move {
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        let size = file.metadata().await?.len();
        let tenant = url_path_segment(&args.tenant);
        let answer = client
            .post(&format!("/tenants/{tenant}/webhook-templates/upload-url"))
            .await?;
        let url = client.presigned(&answer)?;
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} uploading [{bar:40}] {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let counted = bar.clone();
        let body = stream::unfold(file, move |mut f| {
            let bar = counted.clone();
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                match f.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        bar.inc(n as u64);
                        Some((Ok::<_, std::io::Error>(buf), f))
                    }
                    Err(e) => Some((Err(e), f)),
                }
            }
        });
        bar.set_message("uploading");
        let resp = client
            .http
            .put(&url)
            .header("content-type", "text/csv")
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .with_context(|| format!("cannot upload to {}", client.base))?;
        bar.finish_and_clear();
        let status = resp.status();
        let report = json_or_error(resp).await?;
        print_report(&report);
        if status.as_u16() == 422 {
            bail!("the file was refused; nothing was applied");
        }
        Ok(())
    })
}

fn print_report(report: &Value) {
    let n = |k: &str| report.get(k).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "created: {}, updated: {}, unchanged: {}",
        n("created"),
        n("updated"),
        n("unchanged")
    );
    if let Some(errors) = report.get("errors").and_then(Value::as_array) {
        for e in errors {
            println!(
                "  line {}, column {}: {}",
                e.get("line").map(Value::to_string).unwrap_or_default(),
                e.get("column")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.get("column").map(Value::to_string).unwrap_or_default()),
                e.get("message").and_then(Value::as_str).unwrap_or("")
            );
        }
    }
}

/// Runs `herald export --tenant T`: asks for a pre-signed download URL and writes the CSV.
pub fn export(cfg: &Config, args: ExportArgs) -> Result<()> {
    let client = Client::new(cfg, &args.server)?;
    runtime()?.block_on(async move {
        let tenant = url_path_segment(&args.tenant);
        let answer = client
            .post(&format!("/tenants/{tenant}/webhook-templates/download-url"))
            .await?;
        let url = client.presigned(&answer)?;
        let mut resp = client
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot download from {}", client.base))?;
        if !resp.status().is_success() {
            json_or_error(resp).await?;
            bail!("the download failed");
        }
        let mut out: Box<dyn std::io::Write> = match &args.output {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot write {}", p.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        while let Some(chunk) = resp.chunk().await? {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(())
    })
}

/// A tenant id as one URL path segment.
fn url_path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

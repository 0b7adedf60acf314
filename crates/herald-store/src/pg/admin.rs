//! Connection strings and whole-database housekeeping: describing a URL without its password,
//! and creating / dropping a database (used by `herald bench` and the test suites, which run
//! each on a fresh database and drop it afterwards).

use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, SslMode};

use crate::{Result, StoreError};

/// Parses a `postgres://` URL (or key-value connection string) and checks that this build
/// can honour it. Errors are one readable sentence.
pub fn parse_url(url: &str) -> std::result::Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must start with postgres:// or postgresql://".into());
    }
    let cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a valid PostgreSQL URL: {e}"))?;
    match cfg.get_ssl_mode() {
        SslMode::Disable | SslMode::Prefer => {}
        _ => {
            return Err(
                "sslmode requires TLS, which this build does not support for PostgreSQL yet; \
                 use sslmode=disable or prefer (or reach the server over a private network)"
                    .into(),
            );
        }
    }
    if cfg.get_hosts().is_empty() {
        return Err("names no host".into());
    }
    Ok(cfg)
}

/// `user@host:port/dbname`, never the password: safe for banners and logs.
pub fn describe_url(url: &str) -> String {
    let Ok(cfg) = url.parse::<tokio_postgres::Config>() else {
        return "(invalid PostgreSQL URL)".into();
    };
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        cfg.get_user().unwrap_or("(default user)"),
        cfg.get_dbname().unwrap_or("(default database)")
    )
}

/// The same URL pointing at database `name` (query parameters kept).
pub fn url_with_database(url: &str, name: &str) -> Result<String> {
    let mut u = url::Url::parse(url).map_err(|e| StoreError::Open {
        path: describe_url(url),
        detail: e.to_string(),
    })?;
    u.set_path(&format!("/{name}"));
    Ok(u.to_string())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Open {
            path: name.into(),
            detail: "database names must be 1-63 characters of a-z, 0-9 and _".into(),
        })
    }
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client> {
    let cfg = parse_url(url).map_err(|detail| StoreError::Open {
        path: describe_url(url),
        detail,
    })?;
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // "database does not exist, skipping" and the like are not worth a log line.
    client
        .batch_execute("SET client_min_messages TO warning")
        .await?;
    Ok(client)
}

/// Creates database `name` on the server `admin_url` points at (connecting to the database
/// named there) and returns the URL of the new database.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String> {
    check_name(name)?;
    let client = admin_client(admin_url).await?;
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    url_with_database(admin_url, name)
}

/// Drops database `name`, disconnecting anyone still using it. Dropping a database that does
/// not exist is not an error.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    check_name(name)?;
    let client = admin_client(admin_url).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    Ok(())
}

/// A database that exists while this value lives: created (after dropping any leftover of the
/// same name) by [`TemporaryDatabase::create`] and dropped, with anyone still connected, when
/// the value is dropped — also while unwinding from a panic. `herald bench` runs each phase on
/// one; the test suites run each test on one.
pub struct TemporaryDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TemporaryDatabase {
    /// Creates database `name` on the server `admin_url` points at.
    pub async fn create(admin_url: &str, name: &str) -> Result<TemporaryDatabase> {
        drop_database(admin_url, name).await?;
        let url = create_database(admin_url, name).await?;
        Ok(TemporaryDatabase {
            admin_url: admin_url.to_string(),
            name: name.to_string(),
            url,
        })
    }

    /// The URL of the database (with the admin URL's credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TemporaryDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run on a runtime thread or while unwinding: use a runtime of our own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                && let Err(e) = rt.block_on(drop_database(&admin, &name))
            {
                eprintln!("could not drop temporary database {name}: {e}");
            }
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_described_without_password() {
        assert!(parse_url("postgres://u:secret@db.example:6543/herald").is_ok());
        assert!(parse_url("mysql://x").is_err());
        assert!(parse_url("postgres://u@h/db?sslmode=require").is_err());
        let d = describe_url("postgres://u:secret@db.example:6543/herald");
        assert_eq!(d, "u@db.example:6543/herald");
        assert!(!d.contains("secret"));
        assert_eq!(
            url_with_database("postgres://u:p@h:5432/test?application_name=x", "other").unwrap(),
            "postgres://u:p@h:5432/other?application_name=x"
        );
        assert!(check_name("herald_test_1").is_ok());
        assert!(check_name("bad\"name").is_err());
    }
}

//! PostgreSQL connections and the schema migrations (`reporter/migrations/NNNN_*.sql`, embedded
//! at build time) applied at start, each once, in order, in its own transaction, under an
//! advisory lock so that several reporters starting together apply each exactly once.
//!
//! TLS is asked for in the URL, as with libpq: `sslmode=require`, `verify-ca` or `verify-full`
//! connect over TLS only (rustls, ring provider) and **always** verify the server's certificate
//! chain and host name — rustls has no "encrypt but trust anyone" mode, so `require` and
//! `verify-ca` are as strict as `verify-full`. `sslrootcert=FILE` names the CA (PEM) that
//! verifies the server; absent or `system`, the system's trust store. `sslmode=disable`,
//! `prefer` or none: plain text, no TLS attempt (as before TLS support). A failed verification
//! is a connection error; there is never a fall-back to plain text.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Migrations in version order. Append only: never edit one that has shipped.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "events_rollups",
        include_str!("../migrations/0001_events_rollups.sql"),
    ),
    (
        2,
        "rollups_campaign_index",
        include_str!("../migrations/0002_rollups_campaign_index.sql"),
    ),
    (
        3,
        "campaign_control",
        include_str!("../migrations/0003_campaign_control.sql"),
    ),
    (
        4,
        "rollups_series_index",
        include_str!("../migrations/0004_rollups_series_index.sql"),
    ),
    (
        5,
        "rollups_minute_site_index",
        include_str!("../migrations/0005_rollups_minute_site_index.sql"),
    ),
    (
        6,
        "rollup_pending",
        include_str!("../migrations/0006_rollup_pending.sql"),
    ),
    (
        7,
        "drop_rollups_sites",
        include_str!("../migrations/0007_drop_rollups_sites.sql"),
    ),
    (
        8,
        "rollup_keys_collate_c",
        include_str!("../migrations/0008_rollup_keys_collate_c.sql"),
    ),
    (
        9,
        "rollups_split_by_dim",
        include_str!("../migrations/0009_rollups_split_by_dim.sql"),
    ),
    (
        10,
        "fold_sum_bigint",
        include_str!("../migrations/0010_fold_sum_bigint.sql"),
    ),
];

/// Arbitrary constant naming the reporter's migration lock.
const MIGRATION_LOCK: i64 = 0x4845_4c49_4f53_0001;

/// Longest wait for PostgreSQL to accept a connection (an unreachable host must not hang the
/// writer's reconnection loop or an API request).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects (over TLS when the URL's `sslmode` asks for it, see the module doc) and spawns the
/// connection task. Sessions run in UTC so `date_trunc` buckets are UTC, and without JIT: the
/// reporter's statements are run once per batch or request, and PostgreSQL planned JIT
/// compilation for the larger ones (seen in `EXPLAIN`), a compile cost paid on every execution
/// that such short statements cannot win back.
pub async fn connect(url: &str) -> Result<Client> {
    let mut target =
        Target::parse(url).with_context(|| format!("PostgreSQL URL {}", redact(url)))?;
    if target.config.get_connect_timeout().is_none() {
        target.config.connect_timeout(CONNECT_TIMEOUT);
    }
    let context = || format!("connecting to PostgreSQL at {}", redact(url));
    let client = match target.tls {
        Some(tls) => {
            let (client, conn) = target.config.connect(tls).await.with_context(context)?;
            spawn_connection(conn);
            client
        }
        None => {
            let (client, conn) = target.config.connect(NoTls).await.with_context(context)?;
            spawn_connection(conn);
            client
        }
    };
    client
        .batch_execute("SET TIME ZONE 'UTC'; SET jit = off")
        .await
        .context("setting the session up")?;
    Ok(client)
}

fn spawn_connection<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
}

/// A parsed connection URL: the driver's configuration and, when TLS is asked for, the
/// connector that verifies the server.
struct Target {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

/// Whether and how the URL asks for TLS.
#[derive(Debug, PartialEq, Eq)]
enum TlsAsk {
    /// Plain text (`sslmode` absent, `disable` or `prefer`).
    Plain,
    /// TLS only, verified against this CA file (`None`: the system's trust store).
    Verified(Option<String>),
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let (rest, ask) = split_tls_params(url)?;
        let mut config: tokio_postgres::Config = rest.parse()?;
        let tls = match ask {
            TlsAsk::Plain => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            TlsAsk::Verified(ca) => {
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(ca.as_deref())?))
            }
        };
        Ok(Target { config, tls })
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?k=v&…`) or a key=value string
/// (the driver knows neither `verify-*` nor `sslrootcert`); returns the rest and what they ask.
fn split_tls_params(url: &str) -> Result<(String, TlsAsk)> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (head, params, sep): (&str, Vec<&str>, &str) = if is_url {
        match url.split_once('?') {
            Some((h, q)) => (h, q.split('&').collect(), "&"),
            None => (url, Vec::new(), "&"),
        }
    } else {
        ("", url.split_whitespace().collect(), " ")
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::with_capacity(params.len());
    for p in params {
        match p.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v),
            Some(("sslrootcert", v)) => root = Some(v),
            _ => kept.push(p),
        }
    }
    let ask = match mode {
        None | Some("disable" | "prefer") => {
            if root.is_some() {
                bail!("sslrootcert is set but sslmode is not require, verify-ca or verify-full");
            }
            TlsAsk::Plain
        }
        Some("require" | "verify-ca" | "verify-full") => {
            TlsAsk::Verified(root.filter(|r| *r != "system").map(str::to_owned))
        }
        Some(other) => bail!(
            "sslmode={other} is not supported: use disable, prefer (both plain text), require, \
             verify-ca or verify-full (all three TLS with a verified certificate)"
        ),
    };
    let rest = kept.join(sep);
    let rest = match (is_url, rest.is_empty()) {
        (true, false) => format!("{head}?{rest}"),
        (true, true) => head.to_owned(),
        (false, _) => rest,
    };
    Ok((rest, ask))
}

/// A rustls client configuration (ring provider) trusting `ca_file` (PEM) or, without it, the
/// system's trust store.
fn client_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("sslrootcert {path}"))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("sslrootcert {path}: bad PEM"))?;
                roots
                    .add(cert)
                    .with_context(|| format!("sslrootcert {path}: not a CA certificate"))?;
            }
            if roots.is_empty() {
                bail!("sslrootcert {path} holds no PEM certificate");
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!("no CA in the system trust store: name one with sslrootcert=FILE");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Applies the migrations not yet applied; returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("taking the migration lock")?;
    let result = apply(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .context("releasing the migration lock")?;
    result
}

async fn apply(client: &mut Client) -> Result<Vec<i32>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context("creating schema_migrations")?;
    let done: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {version:04}_{name}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "migration applied");
        applied.push(version);
    }
    Ok(applied)
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing() {
        for w in MIGRATIONS.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
    }

    #[test]
    fn tls_params_are_taken_out_of_urls_and_key_values() {
        let split = |u: &str| split_tls_params(u).expect("parses");
        assert_eq!(
            split("postgres://h@x:1/db"),
            ("postgres://h@x:1/db".into(), TlsAsk::Plain)
        );
        assert_eq!(
            split("postgres://h@x:1/db?sslmode=prefer&application_name=r"),
            (
                "postgres://h@x:1/db?application_name=r".into(),
                TlsAsk::Plain
            )
        );
        assert_eq!(
            split(
                "postgres://h@x:1/db?sslmode=verify-full&sslrootcert=/c/ca.crt&connect_timeout=5"
            ),
            (
                "postgres://h@x:1/db?connect_timeout=5".into(),
                TlsAsk::Verified(Some("/c/ca.crt".into()))
            )
        );
        assert_eq!(
            split("postgresql://x/db?sslmode=require&sslrootcert=system"),
            ("postgresql://x/db".into(), TlsAsk::Verified(None))
        );
        assert_eq!(
            split("host=x user=h sslmode=verify-ca sslrootcert=/ca.pem"),
            (
                "host=x user=h".into(),
                TlsAsk::Verified(Some("/ca.pem".into()))
            )
        );
        let err = |u: &str| format!("{:#}", split_tls_params(u).expect_err("refused"));
        assert!(err("postgres://x/db?sslmode=allow").contains("sslmode=allow"));
        assert!(err("postgres://x/db?sslrootcert=/ca.pem").contains("sslrootcert"));
    }

    #[test]
    fn tls_targets_need_a_readable_ca_with_a_certificate() {
        let msg = |u: &str| match Target::parse(u) {
            Ok(_) => String::from("accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            msg("postgres://x/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem")
                .contains("/no/such/ca.pem")
        );
        let dir = std::env::temp_dir().join(format!("helios-db-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let u = format!(
            "postgres://x/db?sslmode=require&sslrootcert={}",
            empty.display()
        );
        assert!(msg(&u).contains("no PEM certificate"), "{}", msg(&u));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(msg("postgres://x/db?sslmode=disable"), "accepted");
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("postgres://helios:secret@127.0.0.1:5440/helios"),
            "postgres://helios:***@127.0.0.1:5440/helios"
        );
        assert_eq!(redact("host=x"), "host=x");
    }
}

//! PostgreSQL connections and the schema migrations (`reporter/migrations/NNNN_*.sql`, embedded
//! at build time) applied at start, each once, in order, in its own transaction, under an
//! advisory lock so that several reporters starting together apply each exactly once.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

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
];

/// Arbitrary constant naming the reporter's migration lock.
const MIGRATION_LOCK: i64 = 0x4845_4c49_4f53_0001;

/// Longest wait for PostgreSQL to accept a connection (an unreachable host must not hang the
/// writer's reconnection loop or an API request).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects and spawns the connection task. Sessions run in UTC so `date_trunc` buckets are UTC,
/// and without JIT: the reporter's statements are run once per batch or request, and PostgreSQL
/// planned JIT compilation for the larger ones (seen in `EXPLAIN`), a compile cost paid on every
/// execution that such short statements cannot win back.
pub async fn connect(url: &str) -> Result<Client> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .with_context(|| format!("parsing the PostgreSQL URL {}", redact(url)))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    client
        .batch_execute("SET TIME ZONE 'UTC'; SET jit = off")
        .await
        .context("setting the session up")?;
    Ok(client)
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
    fn redacts_password() {
        assert_eq!(
            redact("postgres://helios:secret@127.0.0.1:5440/helios"),
            "postgres://helios:***@127.0.0.1:5440/helios"
        );
        assert_eq!(redact("host=x"), "host=x");
    }
}

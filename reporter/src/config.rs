//! Command line and environment (`clap`): every option has a flag, most an environment
//! variable; `helios-reporter --help` explains them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::api::auth::{Role, parse_ttl};
use crate::ingest::consumer::IngestConfig;

#[derive(Debug, Parser)]
#[command(
    name = "helios-reporter",
    version,
    about = "Helios reporter: consumes the bid and outcome events from Kafka into PostgreSQL \
             (exactly once, by event id), serves the REST API (/api/v1, JWT bearer auth) and the \
             advertiser dashboard.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ingest and the API (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Mint a JWT for local use and print it on stdout.
    Token(TokenArgs),
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct DbArgs {
    /// PostgreSQL connection URL. Its password is a secret: prefer the environment variable
    /// (its value is never shown by --help) to the flag (visible in the process list).
    /// TLS: add `?sslmode=verify-full&sslrootcert=/path/ca.crt` (also `require` or
    /// `verify-ca`: all three use TLS only and always verify the server's certificate chain and
    /// host name, against the CA file or, without `sslrootcert`, the system's trust store).
    /// `sslmode=disable`/`prefer` or none: plain text.
    #[arg(
        long,
        env = "HELIOS_PG_URL",
        hide_env_values = true,
        default_value = "postgres://helios:helios@127.0.0.1:5440/helios"
    )]
    pub pg_url: String,
}

#[derive(Debug, Args, Clone)]
pub struct SecretArgs {
    /// File holding the HS256 secret that signs and checks tokens (at least 32 bytes; a
    /// trailing newline is ignored). Preferred over --jwt-secret.
    #[arg(long, env = "HELIOS_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The HS256 secret itself (at least 32 bytes). Visible in the process list: prefer the
    /// environment variable or --jwt-secret-file.
    #[arg(long, env = "HELIOS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

impl SecretArgs {
    pub fn load(&self) -> Result<Vec<u8>> {
        match (&self.jwt_secret_file, &self.jwt_secret) {
            (Some(f), _) => {
                let mut s = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    s.pop();
                }
                Ok(s)
            }
            (None, Some(s)) => Ok(s.as_bytes().to_vec()),
            (None, None) => bail!("a JWT secret is needed: --jwt-secret-file or HELIOS_JWT_SECRET"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Ingest and API in one process.
    All,
    /// Only the Kafka → PostgreSQL ingest.
    Ingest,
    /// Only the API and dashboard.
    Api,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// What this process runs.
    #[arg(long, value_enum, env = "HELIOS_REPORTER_MODE", default_value = "all")]
    pub mode: Mode,
    /// Kafka bootstrap servers (host:port[,host:port]).
    #[arg(long, env = "HELIOS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Kafka consumer group; reporters in the same group share the partitions.
    #[arg(long, env = "HELIOS_REPORTER_GROUP", default_value = "helios-reporter")]
    pub group_id: String,
    /// Topics to consume (comma-separated).
    #[arg(
        long,
        env = "HELIOS_REPORTER_TOPICS",
        value_delimiter = ',',
        default_value = "helios.bids,helios.outcomes"
    )]
    pub topics: Vec<String>,
    /// Extra librdkafka consumer settings, `key=value` (repeatable; e.g. `debug=cgrp`).
    #[arg(
        long = "kafka-option",
        env = "HELIOS_REPORTER_KAFKA_OPTIONS",
        value_delimiter = ','
    )]
    pub kafka_options: Vec<String>,
    /// Partitions of a topic the reporter creates when it is missing (0: never create topics).
    #[arg(long, env = "HELIOS_REPORTER_CREATE_PARTITIONS", default_value_t = 4)]
    pub create_partitions: i32,
    /// Largest batch written in one transaction, in events (1..=1000000).
    #[arg(long, env = "HELIOS_REPORTER_BATCH_MAX", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_max: u32,
    /// PostgreSQL connections each batch is written on in parallel (1..=8): the batch is split
    /// by campaign into disjoint parts, one transaction each; Kafka offsets are committed once
    /// every part has committed. More than 1 helps where PostgreSQL has idle cores: with one,
    /// a single backend writes every batch and the others wait for it (2 on the 2-core dev
    /// machine: +15 to +27 % events/s with skewed sites, nothing with uniform ones, whose
    /// ingest kept both cores busy already; bench/RESULTS.md "Reporter", session 8).
    #[arg(long, env = "HELIOS_REPORTER_PG_WRITERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub pg_writers: u32,
    /// Commit each batch transaction asynchronously (`synchronous_commit = off`; `true` or
    /// `false`): PostgreSQL answers before the commit is on its disk — the next batch is written
    /// while the WAL of the last one is flushed — and the batch's Kafka offsets are committed
    /// only once it is on disk (the WAL flush position has passed the commit), so a PostgreSQL
    /// crash loses whole batches that are then read again: exactly once holds. With
    /// --pg-writers > 1 the parts commit asynchronously and the offsets statement after them
    /// synchronously.
    #[arg(long, env = "HELIOS_REPORTER_PG_ASYNC_COMMIT", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pg_async_commit: bool,
    /// Prepare the next batch (sort, binary `COPY` encoding, in-memory rollup fold) on another
    /// thread while the current one is written to PostgreSQL (`true` or `false`): the
    /// reporter's own work per event then overlaps PostgreSQL's instead of adding to it. One
    /// batch ahead at most; batches are still written, and their offsets committed, in the
    /// order read.
    #[arg(long, env = "HELIOS_REPORTER_PG_PREPARE_AHEAD", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pg_prepare_ahead: bool,
    /// Insert win/billing/loss/click notices with a binary `COPY` straight into the raw table
    /// after probing their ids in its key (`true`): the probe answers the ones stored already
    /// (an exchange's repeats), which are left out of the `COPY` and of the rollups. With
    /// `false` they go through a staging table and `INSERT … ON CONFLICT DO NOTHING`, which
    /// skips the stored ones. Either way a repeated notice is stored and counted once.
    #[arg(long, env = "HELIOS_REPORTER_PG_COPY_NOTICES", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pg_copy_notices: bool,
    /// Append the deltas of the fine-grained rollups (hour per creative, site/app, country,
    /// device type) to an unindexed table in the batch transaction instead of upserting them
    /// there (`true` or `false`); a folder task on a connection of its own moves them into the
    /// rollups every --rollup-fold-ms, one upsert per distinct key. The API reads folded and
    /// not-yet-folded rows together, so figures are as fresh either way. Campaign totals are
    /// always upserted in the batch.
    #[arg(long, env = "HELIOS_REPORTER_DEFER_ROLLUPS", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub defer_rollups: bool,
    /// Longest time between two folds of the pending rollup deltas into the rollups,
    /// milliseconds (100..=60000). Longer folds more batches per key (fewer upserts) and leaves
    /// more pending rows for the API to add up (see --rollup-fold-rows).
    #[arg(long, env = "HELIOS_REPORTER_ROLLUP_FOLD_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub rollup_fold_ms: u64,
    /// Fold sooner, once this reporter has appended this many pending rollup deltas since the
    /// last fold (1000..=5000000): bounds the unindexed rows each per-site (creative, country,
    /// device) API query adds up — ~45 ms more at p95 for 400,000 of them, measured.
    #[arg(long, env = "HELIOS_REPORTER_ROLLUP_FOLD_ROWS", default_value_t = 250_000,
          value_parser = clap::value_parser!(u64).range(1000..=5_000_000))]
    pub rollup_fold_rows: u64,
    /// Longest time a batch waits for more events after its first one, milliseconds.
    #[arg(long, env = "HELIOS_REPORTER_BATCH_WAIT_MS", default_value_t = 250)]
    pub batch_wait_ms: u64,
    /// Days of raw events kept (older day partitions are dropped; rollups are kept).
    #[arg(long, env = "HELIOS_REPORTER_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention_days: u32,
    /// Address of the API and dashboard.
    #[arg(long, env = "HELIOS_REPORTER_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// PostgreSQL connections of the API (1..=64).
    #[arg(long, env = "HELIOS_REPORTER_API_CONNECTIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub api_connections: u32,
    /// Directory of the built dashboard (index.html and assets), served at /. Not served when
    /// absent.
    #[arg(long, env = "HELIOS_DASHBOARD_DIR")]
    pub dashboard_dir: Option<PathBuf>,
    /// Redis of the appliances' campaign feed (`redis://host:port`). When given, the campaign
    /// management routes are on and every accepted change is published there; when absent they
    /// answer 503.
    /// `rediss://host:port` is TLS: the server's certificate chain and host name are verified
    /// (see --campaigns-redis-ca-file).
    #[arg(long, env = "HELIOS_CAMPAIGNS_REDIS_URL", hide_env_values = true)]
    pub campaigns_redis_url: Option<String>,
    /// PEM file of the CA(s) that verify a `rediss://` campaign Redis (default: the system's
    /// trust store). Ignored for `redis://`.
    #[arg(long, env = "HELIOS_CAMPAIGNS_REDIS_CA_FILE", value_name = "FILE")]
    pub campaigns_redis_ca_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax, e.g. `info,reporter=debug`). Logs are JSON on stderr.
    #[arg(long, env = "HELIOS_LOG", default_value = "info")]
    pub log: String,
    /// TESTING ONLY: pause this many milliseconds before each PostgreSQL commit and again before
    /// each Kafka offset commit, so a test can kill the process inside those windows.
    #[arg(long, env = "HELIOS_REPORTER_FAULT_DELAY_MS", default_value_t = 0)]
    pub fault_delay_ms: u64,
}

impl ServeArgs {
    pub fn ingest(&self) -> IngestConfig {
        IngestConfig {
            brokers: self.kafka_brokers.clone(),
            group_id: self.group_id.clone(),
            topics: self.topics.clone(),
            batch_max: self.batch_max as usize,
            pg_writers: self.pg_writers as usize,
            batch_wait: Duration::from_millis(self.batch_wait_ms.clamp(1, 60_000)),
            retention_days: self.retention_days,
            create_partitions: self.create_partitions,
            fault_delay: Duration::from_millis(self.fault_delay_ms),
            async_commit: self.pg_async_commit,
            prepare_ahead: self.pg_prepare_ahead,
            copy_notices: self.pg_copy_notices,
            defer_rollups: self.defer_rollups,
            rollup_fold_every: Duration::from_millis(self.rollup_fold_ms),
            rollup_fold_rows: self.rollup_fold_rows,
            kafka_options: self
                .kafka_options
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct TokenArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Role carried by the token.
    #[arg(long, value_enum, default_value = "advertiser")]
    pub role: Role,
    /// Advertiser id (required for --role advertiser).
    #[arg(long)]
    pub advertiser: Option<u32>,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 24h, 7d (at most 366 days).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Subject (who the token is for; shown in logs).
    #[arg(long, default_value = "local")]
    pub sub: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_documented() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for opt in [
            "--pg-url",
            "--kafka-brokers",
            "--jwt-secret-file",
            "--retention-days",
            "--listen",
            "--batch-max",
        ] {
            assert!(help.contains(opt), "{opt} missing from --help");
        }
    }

    #[test]
    fn token_command_parses() {
        let cli = Cli::try_parse_from([
            "helios-reporter",
            "token",
            "--advertiser",
            "7",
            "--role",
            "advertiser",
            "--ttl",
            "1h",
            "--jwt-secret",
            "x",
        ])
        .expect("parses");
        match cli.command {
            Some(Command::Token(t)) => {
                assert_eq!(
                    (t.advertiser, t.role, t.ttl),
                    (Some(7), Role::Advertiser, 3600)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

//! Writes one batch of events in one transaction, and keeps the writer's PostgreSQL connection
//! alive across outages. Owned by the writer task (one connection, one batch at a time).
//!
//! Per batch, before the transaction: rows outside the retention window are left out (counted),
//! the rest sorted by `(day, event_id)` with in-batch repeats dropped (the first copy is kept).
//! Then, in one transaction:
//!
//! 1. `COPY … FROM STDIN (FORMAT binary)` into a temporary staging table (emptied on commit);
//! 2. `INSERT INTO events SELECT * FROM staging ON CONFLICT DO NOTHING`, answering only the
//!    rows it skipped (already stored: redeliveries, repeats from an earlier batch) — usually
//!    none;
//! 3. the rows actually inserted are folded in memory ([`super::fold`]: one delta per rollup
//!    key), the deltas sent with binary `COPY` into a second staging table and applied with one
//!    `INSERT … ON CONFLICT DO UPDATE` per rollup table, in key order (so two writers lock rollup
//!    rows in the same order);
//! 4. the next offsets per partition into `ingest_offsets`;
//! 5. `COMMIT`. Only then may the caller commit the Kafka offsets.
//!
//! A batch replayed after a crash inserts nothing and so adds nothing (exactly once rests on the
//! event id; see [`super`]). When the connection is lost (PostgreSQL restarted, network), the
//! batch's transaction is gone with it; the writer reconnects with a bounded exponential backoff
//! ([`BACKOFF_MIN`]..[`BACKOFF_MAX`]) for as long as PostgreSQL stays away, then writes the same
//! batch again — meanwhile the consumer stops reading (the channel to the writer is bounded) and
//! no Kafka offset is committed. Deadlocks and serialization failures are
//! retried at most [`MAX_ATTEMPTS`] times. Must never: add to a rollup a row the raw insert
//! skipped; give up on a batch because PostgreSQL is restarting.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::pin_mut;
use tokio::sync::watch;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::fold::Fold;
use super::partitions::{Partitions, Window};
use super::row::Row;
use super::stats::IngestStats;

/// Flags bit of test requests (never charged): kept raw, left out of the rollups.
pub const TEST_FLAG: i16 = codec::event::flags::TEST as i16;

/// Per-session setup of the writer's connection: memory for the temporary tables (set before
/// their first use; a 50,000-event batch stages ~15 MB, over the default 8 MB, which spilled to
/// disk), the two staging tables, enough sort memory, and no JIT (see [`crate::db::connect`]).
const SESSION: &str = "SET temp_buffers = '128MB'; SET work_mem = '64MB'; SET jit = off; \
    CREATE TEMP TABLE IF NOT EXISTS staging (LIKE events) ON COMMIT DELETE ROWS; \
    CREATE TEMP TABLE IF NOT EXISTS rollup_delta (LIKE rollups) ON COMMIT DELETE ROWS";

const COPY: &str = "COPY staging (day, event_id, kind, flags, reason, core, ts, bid_ts, trace_id, node, \
    exchange, request_id, imp_id, advertiser_id, campaign_id, creative_id, bid_price_micros, \
    clear_price_micros, currency, country, device_type, site_or_app) FROM STDIN (FORMAT binary)";

const COPY_TYPES: &[Type] = &[
    Type::INT4,
    Type::BYTEA,
    Type::INT2,
    Type::INT2,
    Type::INT4,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::BYTEA,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
];

/// Inserts the staged rows; answers the ones skipped because they were already stored.
const INSERT_RAW: &str = "
WITH ins AS (
    INSERT INTO events SELECT * FROM staging ON CONFLICT DO NOTHING RETURNING day, event_id
)
SELECT s.day, s.event_id FROM staging s
WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.day = s.day AND ins.event_id = s.event_id)";

const COPY_DELTA: &str = "COPY rollup_delta (gran, advertiser_id, campaign_id, dim, bucket, val, bids, \
    nobids, wins, losses, impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, \
    last_ts) FROM STDIN (FORMAT binary)";

const DELTA_TYPES: &[Type] = &[
    Type::INT2,
    Type::INT8,
    Type::INT8,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TIMESTAMPTZ,
];

/// Applies the deltas (copied in key order; a sequential scan of a fresh temporary table keeps
/// that order).
const UPSERT_ROLLUPS: &str = "
INSERT INTO rollups AS r SELECT * FROM rollup_delta
ON CONFLICT (gran, advertiser_id, campaign_id, dim, bucket, val) DO UPDATE SET
    bids = r.bids + excluded.bids, nobids = r.nobids + excluded.nobids,
    wins = r.wins + excluded.wins, losses = r.losses + excluded.losses,
    impressions = r.impressions + excluded.impressions, clicks = r.clicks + excluded.clicks,
    bid_cpm_micros = r.bid_cpm_micros + excluded.bid_cpm_micros,
    win_cpm_micros = r.win_cpm_micros + excluded.win_cpm_micros,
    spend_cpm_micros = r.spend_cpm_micros + excluded.spend_cpm_micros,
    last_ts = greatest(r.last_ts, excluded.last_ts)";

const UPSERT_NOBIDS: &str = "
INSERT INTO nobid_rollups AS n (gran, bucket, exchange, reason, nobids)
SELECT * FROM unnest($1::smallint[], $2::timestamptz[], $3::text[], $4::int[], $5::bigint[])
ON CONFLICT (gran, bucket, exchange, reason) DO UPDATE SET nobids = n.nobids + excluded.nobids";

const OFFSETS: &str = "
INSERT INTO ingest_offsets (group_id, topic, partition, next_offset, updated_at)
SELECT $1, t, p, o, now() FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x (t, p, o)
ON CONFLICT (group_id, topic, partition) DO UPDATE
SET next_offset = greatest(ingest_offsets.next_offset, excluded.next_offset), updated_at = now()";

/// How many times a batch is tried after a deadlock or serialization failure before the writer gives up (and the process exits, to be restarted: the offsets were not
/// committed, so nothing is lost). Lost connections are not counted here: see [`BACKOFF_MAX`].
pub const MAX_ATTEMPTS: u32 = 5;

/// First wait before reconnecting to PostgreSQL; doubled per failed attempt up to
/// [`BACKOFF_MAX`], which is then kept for as long as PostgreSQL is unreachable.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub rows: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub out_of_range: u64,
    pub rollup_rows: u64,
    pub elapsed: Duration,
}

/// Next offsets (last offset + 1) per (topic, partition) covered by a batch.
pub type Offsets = Vec<(String, i32, i64)>;

/// Testing hook: a pause inside the transaction, before `COMMIT`, so that a test can kill the
/// process while a batch is written but not committed. Zero in production.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultDelay(pub Duration);

/// The writer stopped because shutdown was asked while PostgreSQL was unreachable; the batch in
/// hand was not committed (nor its Kafka offsets): it is read again by the next reporter.
#[derive(Debug, thiserror::Error)]
#[error("shutdown while PostgreSQL was unreachable; the batch in hand was not committed")]
pub struct Stopped;

#[derive(Debug)]
pub struct Writer {
    url: String,
    client: Option<Client>,
    group_id: String,
    retention_days: u32,
    partitions: Partitions,
    fault: FaultDelay,
    stats: Arc<IngestStats>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl Writer {
    /// A writer for `url`; it connects on first use (see [`Writer::connect`]).
    pub fn new(
        url: &str,
        group_id: &str,
        retention_days: u32,
        fault: FaultDelay,
        stats: Arc<IngestStats>,
    ) -> Writer {
        Writer {
            url: url.to_owned(),
            client: None,
            group_id: group_id.to_owned(),
            retention_days,
            partitions: Partitions::default(),
            fault,
            stats,
            shutdown: None,
        }
    }

    /// Makes reconnection waits end (with [`Stopped`]) when `rx` turns true.
    pub fn with_shutdown(mut self, rx: watch::Receiver<bool>) -> Writer {
        self.shutdown = Some(rx);
        self
    }

    /// The backend's process id (for benchmarks that read its CPU time).
    pub async fn backend_pid(&mut self) -> Result<i32> {
        let c = self.connect().await?;
        Ok(c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
    }

    /// Connects (and sets the session up) unless connected, waiting out an unreachable
    /// PostgreSQL with the bounded backoff; ends early only with [`Stopped`].
    pub async fn connect(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.lost("connection closed");
        }
        if self.client.is_none() {
            let mut delay = BACKOFF_MIN;
            let mut failures = 0u64;
            let client = loop {
                match open(&self.url).await {
                    Ok(c) => break c,
                    Err(e) => {
                        failures += 1;
                        self.stats.pg_connected.store(0, Relaxed);
                        tracing::warn!(error = %format!("{e:#}"), attempt = failures,
                            retry_in_ms = delay.as_millis() as u64,
                            "PostgreSQL unreachable; ingest paused (no Kafka offset committed)");
                        self.sleep_or_stop(delay).await?;
                        delay = (delay * 2).min(BACKOFF_MAX);
                    }
                }
            };
            if self.stats.pg_lost.load(Relaxed) > 0 || failures > 0 {
                self.stats.pg_reconnects.fetch_add(1, Relaxed);
                tracing::info!(
                    failed_attempts = failures,
                    "PostgreSQL reconnected; ingest resumes"
                );
            }
            self.stats.pg_connected.store(1, Relaxed);
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    fn lost(&mut self, why: &str) {
        self.client = None;
        self.stats.pg_connected.store(0, Relaxed);
        self.stats.pg_lost.fetch_add(1, Relaxed);
        tracing::warn!(error = why, "PostgreSQL connection lost; reconnecting");
    }

    async fn sleep_or_stop(&mut self, d: Duration) -> Result<()> {
        match &mut self.shutdown {
            None => tokio::time::sleep(d).await,
            Some(rx) => {
                if *rx.borrow() {
                    return Err(Stopped.into());
                }
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = rx.wait_for(|v| *v) => return Err(Stopped.into()),
                }
            }
        }
        Ok(())
    }

    pub fn window(&self) -> Window {
        Window::new(crate::day::today(), self.retention_days)
    }

    /// Drops the partitions older than the retention.
    pub async fn apply_retention(&mut self) -> Result<Vec<String>> {
        let w = self.window();
        self.connect().await?;
        let client = self.client.as_mut().expect("connected just above");
        let r = self.partitions.drop_expired(client, w).await;
        if r.is_err() && self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.lost("connection closed during retention");
        }
        r
    }

    /// Writes `rows` and records `offsets`. Rows outside the retention window are left out and
    /// counted. Waits out PostgreSQL outages (see the module doc); fails only on errors that a
    /// retry cannot fix, after [`MAX_ATTEMPTS`] retryable ones, or with [`Stopped`].
    pub async fn write(&mut self, rows: &[Row], offsets: &Offsets) -> Result<BatchOutcome> {
        let window = self.window();
        let mut keep: Vec<&Row> = rows.iter().filter(|r| window.contains(r.day)).collect();
        let out_of_range = (rows.len() - keep.len()) as u64;
        // Stable: among copies of one event id the first one read is kept.
        keep.sort_by_key(|r| (r.day, r.event_id));
        keep.dedup_by(|b, a| a.day == b.day && a.event_id == b.event_id);
        let mut days: Vec<i32> = keep.iter().map(|r| r.day).collect();
        days.dedup();

        let mut attempt = 0;
        loop {
            self.connect().await?;
            let client = self.client.as_mut().expect("connected just above");
            let result = match self.partitions.ensure(client, &days).await {
                Ok(()) => write_once(client, &self.group_id, self.fault, &keep, offsets)
                    .await
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(mut o) => {
                    o.rows = rows.len() as u64;
                    o.out_of_range = out_of_range;
                    o.duplicates = o.rows - out_of_range - o.inserted;
                    return Ok(o);
                }
                Err(e) if connection_lost(&e, self.client.as_ref()) => {
                    self.stats.retries.fetch_add(1, Relaxed);
                    self.lost(&format!("{e:#}"));
                }
                Err(e) if attempt + 1 < MAX_ATTEMPTS && retryable(&e) => {
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Relaxed);
                    tracing::warn!(attempt, error = %format!("{e:#}"), "batch retried");
                    self.sleep_or_stop(Duration::from_millis(20 << attempt))
                        .await?;
                }
                Err(e) => return Err(e).context("writing a batch"),
            }
        }
    }
}

/// Opens a connection and sets the writer's session up.
async fn open(url: &str) -> Result<Client> {
    let c = crate::db::connect(url).await?;
    c.batch_execute(SESSION)
        .await
        .context("setting up the writer session")?;
    Ok(c)
}

fn ts(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn secs(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)
}

async fn write_once(
    client: &mut Client,
    group_id: &str,
    fault: FaultDelay,
    rows: &[&Row],
    offsets: &Offsets,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let started = Instant::now();
    let tx = client.transaction().await?;
    let sink = tx.copy_in(COPY).await?;
    let w = BinaryCopyInWriter::new(sink, COPY_TYPES);
    pin_mut!(w);
    for r in rows {
        w.as_mut()
            .write(&[
                &r.day,
                &r.event_id.as_slice(),
                &r.kind,
                &r.flags,
                &r.reason,
                &r.core,
                &r.ts,
                &r.bid_ts,
                &r.trace_id.as_slice(),
                &r.node,
                &r.exchange,
                &r.request_id,
                &r.imp_id,
                &r.advertiser_id,
                &r.campaign_id,
                &r.creative_id,
                &r.bid_price_micros,
                &r.clear_price_micros,
                &r.currency,
                &r.country,
                &r.device_type,
                &r.site_or_app,
            ])
            .await?;
    }
    w.finish().await?;

    // Rows already stored (usually none): everything else was inserted now and is folded.
    let skipped: HashSet<(i32, [u8; 16])> = tx
        .query(INSERT_RAW, &[])
        .await?
        .iter()
        .map(|r| {
            let id: &[u8] = r.get(1);
            // Staged from `Row::event_id`: always 16 bytes.
            (r.get(0), id.try_into().unwrap_or([0; 16]))
        })
        .collect();
    let mut fold = Fold::with_capacity(rows.len());
    for r in rows {
        if skipped.is_empty() || !skipped.contains(&(r.day, r.event_id)) {
            fold.add(r);
        }
    }
    let inserted = rows.len() - skipped.len();

    let deltas = fold.rollups();
    if !deltas.is_empty() {
        let sink = tx.copy_in(COPY_DELTA).await?;
        let w = BinaryCopyInWriter::new(sink, DELTA_TYPES);
        pin_mut!(w);
        for (k, c) in &deltas {
            let bucket = secs(k.bucket);
            let val = k.val.render();
            let last = ts(c.last_ts_ns);
            let row: [&(dyn ToSql + Sync); 16] = [
                &k.gran,
                &k.advertiser_id,
                &k.campaign_id,
                &k.dim,
                &bucket,
                &val,
                &c.bids,
                &c.nobids,
                &c.wins,
                &c.losses,
                &c.impressions,
                &c.clicks,
                &c.bid_cpm_micros,
                &c.win_cpm_micros,
                &c.spend_cpm_micros,
                &last,
            ];
            w.as_mut().write(&row).await?;
        }
        w.finish().await?;
        tx.execute(UPSERT_ROLLUPS, &[]).await?;
    }
    let nb = fold.nobids();
    if !nb.is_empty() {
        let grans: Vec<i16> = nb.iter().map(|(k, _)| k.gran).collect();
        let buckets: Vec<SystemTime> = nb.iter().map(|(k, _)| secs(k.bucket)).collect();
        let exchanges: Vec<&str> = nb.iter().map(|(k, _)| k.exchange.as_str()).collect();
        let reasons: Vec<i32> = nb.iter().map(|(k, _)| k.reason).collect();
        let counts: Vec<i64> = nb.iter().map(|(_, n)| *n).collect();
        tx.execute(
            UPSERT_NOBIDS,
            &[&grans, &buckets, &exchanges, &reasons, &counts],
        )
        .await?;
    }
    if !offsets.is_empty() {
        let topics: Vec<&str> = offsets.iter().map(|o| o.0.as_str()).collect();
        let parts: Vec<i32> = offsets.iter().map(|o| o.1).collect();
        let next: Vec<i64> = offsets.iter().map(|o| o.2).collect();
        tx.execute(OFFSETS, &[&group_id, &topics, &parts, &next])
            .await?;
    }
    if !fault.0.is_zero() {
        tokio::time::sleep(fault.0).await;
    }
    tx.commit().await?;
    Ok(BatchOutcome {
        rows: 0,
        inserted: inserted as u64,
        duplicates: 0,
        out_of_range: 0,
        rollup_rows: (deltas.len() + nb.len()) as u64,
        elapsed: started.elapsed(),
    })
}

/// The error means the connection is gone (or PostgreSQL is shutting down / starting up): the
/// batch is written again on a new connection, however long that takes.
fn connection_lost(e: &anyhow::Error, client: Option<&Client>) -> bool {
    if client.is_some_and(|c| c.is_closed()) {
        return true;
    }
    e.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            pg.is_closed()
                || pg.code().is_some_and(|c| {
                    c.code().starts_with("08")
                        || *c == SqlState::ADMIN_SHUTDOWN
                        || *c == SqlState::CRASH_SHUTDOWN
                        || *c == SqlState::CANNOT_CONNECT_NOW
                })
        } else {
            cause.is::<std::io::Error>()
        }
    })
}

fn retryable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|pg| pg.code())
            .is_some_and(|c| {
                *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
            })
    })
}

//! Writes one batch of events, and keeps the writer's PostgreSQL connections alive across
//! outages. Owned by the writer task (one batch at a time, on 1..=[`MAX_CONNECTIONS`]
//! connections).
//!
//! Per batch, before any transaction ([`super::prepare`], since session 6 done for the next
//! batch while this one is written): rows outside the retention window are left out (counted),
//! the rest sorted by `(day, event_id)` with in-batch repeats dropped (the first copy is kept).
//! With several connections the batch is then split into disjoint parts by [`route`] (the
//! campaign, else the exchange, so two parts seldom touch the same rollup row); each part's
//! `COPY` bodies and rollup deltas are encoded. The parts are written in parallel, each in its
//! own transaction:
//!
//! 1. bids and no-bids (ids minted once by the appliance: only a replay repeats them) go with a
//!    binary `COPY … FROM STDIN (FORMAT binary)` straight into the raw table: the primary key
//!    still guards them, without `ON CONFLICT`'s speculative insertion, a staging copy or an
//!    `INSERT … SELECT`;
//! 2. notices (wins, billing, losses, clicks: the exchange may repeat one, across batches):
//!    with [`InsertPlan::CopyAll`] (the default since session 6) their ids are probed in the
//!    raw key first ([`STORED_NOTICES`], ~1.3 µs per notice), and those not stored (all, in
//!    the usual case) go with a `COPY` straight into the raw table, the stored ones left out;
//!    with [`InsertPlan::CopyBids`], session 4's default, they are copied into a temporary staging
//!    table (emptied on commit) and inserted with `INSERT … ON CONFLICT DO NOTHING`, answering
//!    only the rows it skipped (already stored). When a `COPY` into the raw table meets a
//!    stored id (a replayed batch: a crash, a rebalance, a producer retry; or a notice another
//!    writer stored after the probe) it fails with `unique_violation`; the transaction is
//!    rolled back and the same part is written again with `ON CONFLICT` for every row
//!    ([`InsertPlan::AllOnConflict`]). (Session 3's [`InsertPlan::PlainBids`] staged every row
//!    and inserted the bids with a plain `INSERT … SELECT`; kept for the benchmark.) Every
//!    `COPY` is encoded by hand ([`super::copy_bin`]);
//! 3. the rows actually inserted are folded in memory ([`super::fold`]: one delta per rollup
//!    key; prepared for every row, folded again without the skipped ones when some were), the
//!    deltas sent with binary `COPY` into a second staging table and applied with one
//!    `INSERT … ON CONFLICT DO UPDATE` per rollup table, in key order (so two writers lock rollup
//!    rows in the same order). With [`Writer::with_deferred_rollups`] (the ingest's default
//!    since session 5) only the campaign totals (dim = 0) are upserted here; the deltas of the
//!    hour rows per creative, site, country and device (dim > 0, most of the rollup rows a
//!    batch touches) are appended with one `COPY` to the unindexed `rollup_pending`, in the
//!    same transaction, and folded later by [`super::rollup_fold`];
//! 4. the next offsets per partition into `ingest_offsets` — in the batch's transaction with one
//!    connection; with several, in a synchronous statement of its own once every part has
//!    committed (it flushes the parts' commits with it); and a batch on several connections
//!    that lost any of them meanwhile is written again, every part, before that statement may
//!    count (an asynchronously committed part can be lost with PostgreSQL after it answered);
//! 5. `COMMIT` — asynchronous with [`Writer::with_async_commit`]. Only when every part has
//!    committed (and, asynchronously committed, is on disk: [`super::durable`]) may the caller
//!    commit the Kafka offsets.
//!
//! A batch (or a part) replayed after a crash inserts nothing and so adds nothing (exactly once
//! rests on the event id; see [`super`]): a part that committed before the crash is skipped
//! whole when the batch comes again, a part that did not is written then. When a connection is
//! lost (PostgreSQL restarted, network), its part's transaction is gone with it; that
//! connection reconnects with a bounded exponential backoff ([`BACKOFF_MIN`]..[`BACKOFF_MAX`])
//! for as long as PostgreSQL stays away, then writes the same part again — meanwhile the
//! consumer stops reading (the channel to the writer is bounded) and no Kafka offset is
//! committed. Deadlocks and serialization failures are retried at most
//! [`MAX_ATTEMPTS`] times. Must never: add to a rollup a row the raw insert skipped; give up on a
//! batch because PostgreSQL is restarting; report a batch written before all of its parts are.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, pin_mut};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::partitions::{Partitions, Window};
use super::prepare::{Deltas, Encoded, Part, Plan, PrepareCfg, Prepared, is_bid_or_nobid};
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

/// The raw table's columns in the order [`super::prepare`] encodes them.
macro_rules! raw_columns {
    () => {
        "(day, event_id, kind, flags, reason, core, ts, bid_ts, trace_id, node, exchange, \
         request_id, imp_id, advertiser_id, campaign_id, creative_id, bid_price_micros, \
         clear_price_micros, currency, country, device_type, site_or_app)"
    };
}

/// Rows into the staging table (then into the raw table with an `INSERT … SELECT`).
const COPY: &str = concat!(
    "COPY staging ",
    raw_columns!(),
    " FROM STDIN (FORMAT binary)"
);

/// Bids and no-bids straight into the raw table ([`InsertPlan::CopyBids`]): a stored id fails
/// the `COPY` (`unique_violation`) like the plain insert does.
const COPY_RAW: &str = concat!(
    "COPY events ",
    raw_columns!(),
    " FROM STDIN (FORMAT binary)"
);

/// Inserts the staged rows of the kinds an [`InsertPlan`] sends through `ON CONFLICT` (`$1`:
/// every kind, or notices only); answers the ones skipped because they were already stored.
const INSERT_RAW: &str = "
WITH ins AS (
    INSERT INTO events SELECT * FROM staging WHERE $1 OR kind NOT IN (1, 2)
    ON CONFLICT DO NOTHING RETURNING day, event_id
)
SELECT s.day, s.event_id FROM staging s
WHERE ($1 OR s.kind NOT IN (1, 2))
  AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.day = s.day AND ins.event_id = s.event_id)";

/// Inserts the staged bids and no-bids without `ON CONFLICT`: a stored id fails the statement
/// (`unique_violation`), and the part is written again with [`InsertPlan::AllOnConflict`].
const INSERT_PLAIN: &str = "INSERT INTO events SELECT * FROM staging WHERE kind IN (1, 2)";

/// Which of the ids `$2` are stored on day `$1` ([`InsertPlan::CopyAll`]): one probe of the
/// raw key per id, in the one partition of that day, under [`PROBE_PLAN`] ([`stored_notices`];
/// [`probe_stored`] for the tests).
/// (Not `event_id = ANY($2)`: planning that with a 20,000-element array estimated each
/// element's selectivity, ~30 ms per batch, measured; and a generic plan of it may take the
/// array as a filter on a scan of the whole day.)
///
/// The lookup is a correlated scalar subquery (session 10), not a join: the planner never turns
/// it into one, so it is planned for one id at a time — a lookup in the unique `(day,
/// event_id)` key, cheaper than any read of the partition at any estimate of its size. As a
/// join (sessions 6 to 9) it was planned for all the ids at once, and a partition autovacuum
/// had not analyzed yet (a new day's) was taken to hold 0.5 % of its real rows for the day: the
/// planner then read the partition once into memory (`Materialize`) and compared every id with
/// every row (`Join Filter`), cheaper on paper than a probe per id. Measured: 58 s for 3,000
/// ids on a 300,000-row partition (10 ms as a subquery); probes of 21 s in one writer's
/// connection of a benchmark run with 3 writers (bench/RESULTS.md, "Reporter", session 10).
/// [`PROBE_PLAN`]'s settings leave no plan but the index for the lookup of a tiny partition.
///
/// No `LIMIT 1` (session 8): with it the planner expects a match within the first rows of any
/// plan and may choose one that walks the whole partition; when nothing matches (the usual
/// case) that costs what the partition costs. Every lookup is costed for all of its input.
const STORED_NOTICES: &str = "SELECT u.id FROM unnest($2::bytea[]) AS u (id) \
    WHERE (SELECT true FROM events e WHERE e.day = $1 AND e.event_id = u.id)";

/// Planner settings, for the rest of the transaction (or savepoint), that leave index probes
/// as the only way into a table, in this backend (no sequential or bitmap scan, no hash or
/// merge join, no parallel workers). For the statements whose planner may know nothing of
/// their tables (a fresh partition, a temporary table) and whose cost must follow their input,
/// not the table's size: the notice probe ([`PROBE_PLAN`]) and the fold's merge
/// ([`super::rollup_fold::MERGE_PLAN`]). They do not stop a nested loop from reading a whole
/// table once into memory (`Materialize`), which is why the notice probe is a subquery.
macro_rules! index_probes_only {
    () => {
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
         SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
         SET LOCAL max_parallel_workers_per_gather = 0"
    };
}
pub(super) use index_probes_only;

/// The probe's plan, whatever the statistics say ([`STORED_NOTICES`]): index probes only, in
/// this backend (no parallel workers). Set inside a savepoint that is rolled back after the
/// probe ([`under_probe_plan`]), which restores every setting exactly as it was. Without it, a
/// fresh partition of 300,000 rows that autovacuum had not analyzed yet was estimated at 577
/// rows, and the probe (then a join) planned as a hash join over a scan of the whole partition
/// (measured, bench/RESULTS.md "Reporter", session 8).
const PROBE_PLAN: &str = concat!("SAVEPOINT notice_probe; ", index_probes_only!());

/// Ends [`PROBE_PLAN`]: the planner's settings back to what they were before it.
const PROBE_PLAN_END: &str = "ROLLBACK TO SAVEPOINT notice_probe; RELEASE SAVEPOINT notice_probe";

/// The rollup columns in the order [`super::prepare`] encodes them (and the fold's sums are
/// written in).
macro_rules! delta_columns {
    () => {
        "(gran, advertiser_id, campaign_id, dim, bucket, val, bids, nobids, wins, losses, \
         impressions, clicks, bid_cpm_micros, win_cpm_micros, spend_cpm_micros, last_ts)"
    };
}
pub(super) use delta_columns;

const COPY_DELTA: &str = concat!(
    "COPY rollup_delta ",
    delta_columns!(),
    " FROM STDIN (FORMAT binary)"
);

/// Deltas of the deferred families (dim > 0) appended, unaggregated across batches, to the
/// unindexed `rollup_pending` (folded into `rollups` later by [`super::rollup_fold`]).
const COPY_PENDING: &str = concat!(
    "COPY rollup_pending ",
    delta_columns!(),
    " FROM STDIN (FORMAT binary)"
);

/// How a delta row is added to the `rollups` row `r` of its key, the delta's columns read from
/// `$src`: the counters and sums added, the latest event time kept. One source for the batch's
/// upsert ([`UPSERT_ROLLUPS`], `excluded`) and the fold's merge ([`super::rollup_fold`]).
macro_rules! add_deltas {
    ($src:ident) => {
        concat!(
            "bids = r.bids + ",
            stringify!($src),
            ".bids, ",
            "nobids = r.nobids + ",
            stringify!($src),
            ".nobids, ",
            "wins = r.wins + ",
            stringify!($src),
            ".wins, ",
            "losses = r.losses + ",
            stringify!($src),
            ".losses, ",
            "impressions = r.impressions + ",
            stringify!($src),
            ".impressions, ",
            "clicks = r.clicks + ",
            stringify!($src),
            ".clicks, ",
            "bid_cpm_micros = r.bid_cpm_micros + ",
            stringify!($src),
            ".bid_cpm_micros, ",
            "win_cpm_micros = r.win_cpm_micros + ",
            stringify!($src),
            ".win_cpm_micros, ",
            "spend_cpm_micros = r.spend_cpm_micros + ",
            stringify!($src),
            ".spend_cpm_micros, ",
            "last_ts = greatest(r.last_ts, ",
            stringify!($src),
            ".last_ts)"
        )
    };
}
pub(super) use add_deltas;

/// `INSERT INTO rollups AS r ...` followed by this adds each row to the row of its key.
macro_rules! add_to_rollups {
    () => {
        concat!(
            "ON CONFLICT (gran, advertiser_id, campaign_id, dim, bucket, val) DO UPDATE SET ",
            add_deltas!(excluded)
        )
    };
}
pub(super) use add_to_rollups;

/// Applies the deltas (copied in key order; a sequential scan of a fresh temporary table keeps
/// that order).
const UPSERT_ROLLUPS: &str = concat!(
    "
INSERT INTO rollups AS r SELECT * FROM rollup_delta
",
    add_to_rollups!()
);

const UPSERT_NOBIDS: &str = "
INSERT INTO nobid_rollups AS n (gran, bucket, exchange, reason, nobids)
SELECT * FROM unnest($1::smallint[], $2::timestamptz[], $3::text[], $4::int[], $5::bigint[])
ON CONFLICT (gran, bucket, exchange, reason) DO UPDATE SET nobids = n.nobids + excluded.nobids";

/// The batch transaction's commit returns before its WAL record is on disk (see
/// [`super::durable`] for why exactly once still holds).
const ASYNC_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// The WAL insert (`$1` false) or flush (`$1` true) position and the server's start time
/// (microseconds since the Unix epoch).
const POSITION: &str = "SELECT (CASE WHEN $1 THEN pg_current_wal_flush_lsn() \
    ELSE pg_current_wal_insert_lsn() END)::text, \
    (extract(epoch FROM pg_postmaster_start_time()) * 1e6)::bigint";

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
    /// Parts whose plain insert met a stored id and were written again with `ON CONFLICT`.
    pub fallbacks: u64,
    /// Rows copied into the staging table and inserted from it (notices with
    /// [`InsertPlan::CopyBids`], with `ON CONFLICT`; every row with [`InsertPlan::PlainBids`] —
    /// bids by a plain insert — and with [`InsertPlan::AllOnConflict`], as after a fallback), in
    /// the attempt that committed. 0 with [`InsertPlan::CopyAll`] unless it fell back.
    pub staged: u64,
    /// Of `rollup_rows`, the deltas appended to `rollup_pending` (deferred families).
    pub pending_rows: u64,
    pub elapsed: Duration,
    /// With asynchronous commit: the WAL position the batch's commit needs flushed before its
    /// Kafka offsets may be committed, and the server's start time then (see
    /// [`super::durable`]). `None`: the batch is on disk already (synchronous commit).
    pub commit_lsn: Option<(u64, i64)>,
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

/// How a part's rows go into the raw table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertPlan {
    /// Every row staged; bids and no-bids inserted with a plain `INSERT … SELECT`, notices with
    /// `ON CONFLICT DO NOTHING` (session 3's default; falls back to
    /// [`InsertPlan::AllOnConflict`] for a part whose plain insert meets a stored id).
    PlainBids,
    /// Every row with `ON CONFLICT DO NOTHING` (session 2's writer; kept as the fallback and so
    /// that benchmarks can compare).
    AllOnConflict,
    /// Bids and no-bids with a binary `COPY` straight into the raw table (no staging copy, no
    /// `INSERT … SELECT`; the server batches the heap inserts), notices staged and inserted
    /// with `ON CONFLICT DO NOTHING` (the default of sessions 4–5; falls back like
    /// [`InsertPlan::PlainBids`]).
    CopyBids,
    /// Bids and no-bids as with [`InsertPlan::CopyBids`]; the notices' ids are first looked up
    /// in the raw key (one index probe each, [`STORED_NOTICES`], which answers the stored
    /// ones), and the notices not stored go with a binary `COPY` straight into the raw table
    /// (no staging copy, no `INSERT … SELECT … ON CONFLICT`); the stored ones (an exchange's
    /// repeat of a notice of an earlier batch) are left out of the `COPY` and of the rollups.
    /// (Until session 10 one stored notice sent all of the part's notices through staging and
    /// `ON CONFLICT`.) A notice stored between the probe and the `COPY` (another writer) fails
    /// the `COPY` and the part is written again with [`InsertPlan::AllOnConflict`], like a
    /// replay.
    CopyAll,
}

/// Most PostgreSQL connections one writer uses in parallel.
pub const MAX_CONNECTIONS: usize = 8;

/// Which part of a batch a row goes to with `n` connections: by campaign (every rollup row of a
/// campaign is then written by one part, so parallel parts do not wait on each other's rollup
/// row locks), by exchange for events without a campaign (their no-bid rollups are keyed by
/// exchange). Deterministic, so a replayed batch splits the same way.
pub fn route(r: &Row, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let h = if r.campaign_id != 0 {
        (r.campaign_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    } else {
        // FNV-1a over the exchange name.
        r.exchange().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
        })
    };
    ((h >> 32) % n as u64) as usize
}

/// One PostgreSQL connection of the writer (reconnected on loss) and the partitions it has
/// seen. Owned by the writer task; each part of a batch borrows one.
#[derive(Debug)]
struct Conn {
    url: String,
    client: Option<Client>,
    partitions: Partitions,
    stats: Arc<IngestStats>,
    shutdown: Option<watch::Receiver<bool>>,
    /// Connections lost so far ([`Conn::lost`]): a batch on several connections that saw one
    /// is written again ([`Writer::write_plan`]).
    losses: u64,
}

/// What a part needs besides its connection and rows.
#[derive(Debug, Clone, Copy)]
struct PartCtx<'a> {
    group_id: &'a str,
    fault: FaultDelay,
    plan: InsertPlan,
    async_commit: bool,
    defer_fine: bool,
    direct_partition: bool,
}

#[derive(Debug)]
pub struct Writer {
    conns: Vec<Conn>,
    group_id: String,
    retention_days: u32,
    fault: FaultDelay,
    plan: InsertPlan,
    async_commit: bool,
    defer_fine: bool,
    direct_partition: bool,
}

impl Writer {
    /// A writer for `url` with one connection, [`InsertPlan::CopyAll`] and synchronous commit;
    /// it connects on first use (see [`Writer::connect`]).
    pub fn new(
        url: &str,
        group_id: &str,
        retention_days: u32,
        fault: FaultDelay,
        stats: Arc<IngestStats>,
    ) -> Writer {
        Writer {
            conns: vec![Conn::new(url, stats)],
            group_id: group_id.to_owned(),
            retention_days,
            fault,
            plan: InsertPlan::CopyAll,
            async_commit: false,
            defer_fine: false,
            direct_partition: false,
        }
    }

    /// Appends the deltas of the fine-grained families (hour per creative, site, country,
    /// device: dim > 0) to `rollup_pending` instead of upserting them in the batch transaction;
    /// [`super::rollup_fold`] folds them into `rollups` later. Campaign totals (dim = 0) are
    /// upserted in the batch either way.
    pub fn with_deferred_rollups(mut self, on: bool) -> Writer {
        self.defer_fine = on;
        self
    }

    /// `COPY`s the raw rows of a part whose rows all fall on one day straight into that day's
    /// partition (`events_YYYYMMDD`) instead of through the partitioned table (no tuple
    /// routing); a part spanning days goes through `events` as before.
    pub fn with_direct_partition(mut self, on: bool) -> Writer {
        self.direct_partition = on;
        self
    }

    /// Writes each batch on `n` connections in parallel (clamped to 1..=[`MAX_CONNECTIONS`]).
    pub fn with_connections(mut self, n: usize) -> Writer {
        let n = n.clamp(1, MAX_CONNECTIONS);
        let first = &self.conns[0];
        let (url, stats, shutdown) = (
            first.url.clone(),
            first.stats.clone(),
            first.shutdown.clone(),
        );
        self.conns.truncate(1);
        while self.conns.len() < n {
            let mut c = Conn::new(&url, stats.clone());
            c.shutdown = shutdown.clone();
            self.conns.push(c);
        }
        self
    }

    /// How rows go into the raw table (see [`InsertPlan`]).
    pub fn with_plan(mut self, plan: InsertPlan) -> Writer {
        self.plan = plan;
        self
    }

    /// Commits batch transactions asynchronously (`synchronous_commit = off`); each outcome then
    /// carries the position its commit needs flushed ([`BatchOutcome::commit_lsn`]) and the
    /// caller must hold the Kafka offsets until [`Writer::flushed_position`] passes it (see
    /// [`super::durable`]). With several connections the parts commit asynchronously and the
    /// offsets statement after them synchronously, which flushes every part with it.
    pub fn with_async_commit(mut self, on: bool) -> Writer {
        self.async_commit = on;
        self
    }

    /// The WAL position flushed to disk now, and the server's start time (first connection).
    pub async fn flushed_position(&mut self) -> Result<(u64, i64)> {
        let c = self.connect().await?;
        let r = c.query_one(POSITION, &[&true]).await?;
        let lsn = super::durable::parse_lsn(r.get(0)).context("unreadable WAL position")?;
        Ok((lsn, r.get(1)))
    }

    /// Flushes the WAL to disk now, past every commit so far: records `offsets` (already
    /// recorded by their batch; `greatest` keeps them) in a statement of its own, committed
    /// synchronously (the session's default). It must write WAL: a commit that wrote none is
    /// never waited for, whatever `synchronous_commit` says.
    pub async fn force_flush(&mut self, offsets: &Offsets) -> Result<()> {
        let group_id = self.group_id.clone();
        self.conns[0].record_offsets(&group_id, offsets).await
    }

    /// Makes reconnection waits end (with [`Stopped`]) when `rx` turns true.
    pub fn with_shutdown(mut self, rx: watch::Receiver<bool>) -> Writer {
        for c in &mut self.conns {
            c.shutdown = Some(rx.clone());
        }
        self
    }

    /// How many connections a batch is written on.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The backends' process ids, one per connection (for benchmarks that read their CPU time).
    pub async fn backend_pids(&mut self) -> Result<Vec<i32>> {
        let mut pids = Vec::with_capacity(self.conns.len());
        for c in &mut self.conns {
            let client = c.connect().await?;
            pids.push(
                client
                    .query_one("SELECT pg_backend_pid()", &[])
                    .await?
                    .get(0),
            );
        }
        Ok(pids)
    }

    /// The first connection's backend process id.
    pub async fn backend_pid(&mut self) -> Result<i32> {
        Ok(self.backend_pids().await?[0])
    }

    /// Connects every connection (and sets the sessions up) unless connected, waiting out an
    /// unreachable PostgreSQL with the bounded backoff; ends early only with [`Stopped`].
    /// Answers the first connection.
    pub async fn connect(&mut self) -> Result<&mut Client> {
        for c in self.conns.iter_mut().skip(1) {
            c.connect().await?;
        }
        self.conns[0].connect().await
    }

    pub fn window(&self) -> Window {
        Window::new(crate::day::today(), self.retention_days)
    }

    /// Drops the partitions older than the retention (on the first connection; the others
    /// forget what they knew of partitions).
    pub async fn apply_retention(&mut self) -> Result<Vec<String>> {
        let w = self.window();
        for c in self.conns.iter_mut().skip(1) {
            c.partitions = Partitions::default();
        }
        let c = &mut self.conns[0];
        c.connect().await?;
        let client = c.client.as_mut().expect("connected just above");
        let r = c.partitions.drop_expired(client, w).await;
        if r.is_err() && c.client.as_ref().is_some_and(|c| c.is_closed()) {
            c.lost("connection closed during retention");
        }
        r
    }

    /// What preparing a batch for this writer needs (see [`super::prepare`]).
    pub fn prepare_cfg(&self) -> PrepareCfg {
        PrepareCfg {
            window: self.window(),
            parts: self.conns.len(),
            defer_fine: self.defer_fine,
        }
    }

    /// Writes `rows` and records `offsets`. Rows outside the retention window are left out and
    /// counted. Waits out PostgreSQL outages (see the module doc); fails only on errors that a
    /// retry cannot fix, after [`MAX_ATTEMPTS`] retryable ones, or with [`Stopped`] — and then
    /// some parts may have committed: the batch must be read again (its Kafka offsets are not
    /// committed), which stores the rest and skips what is stored. Prepares the batch here, on
    /// the caller's task ([`Writer::write_prepared`] takes one prepared ahead).
    pub async fn write(&mut self, rows: &[Row], offsets: &Offsets) -> Result<BatchOutcome> {
        let started = Instant::now();
        let plan = Plan::of(rows, self.prepare_cfg());
        let mut o = self.write_plan(rows, &plan, offsets).await?;
        o.elapsed = started.elapsed();
        Ok(o)
    }

    /// Writes a batch prepared by [`super::prepare::Ahead`] (or [`Prepared::new`]) with its
    /// offsets, as [`Writer::write`] does. A batch prepared for another window (the day
    /// changed since) or another number of connections is prepared again here.
    pub async fn write_prepared(&mut self, p: &Prepared) -> Result<BatchOutcome> {
        let started = Instant::now();
        let cfg = self.prepare_cfg();
        let mut o = if p.plan.cfg == Some(cfg) {
            self.write_plan(&p.rows, &p.plan, &p.offsets).await?
        } else {
            let plan = Plan::of(&p.rows, cfg);
            self.write_plan(&p.rows, &plan, &p.offsets).await?
        };
        o.elapsed = started.elapsed();
        Ok(o)
    }

    async fn write_plan(
        &mut self,
        rows: &[Row],
        plan: &Plan,
        offsets: &Offsets,
    ) -> Result<BatchOutcome> {
        debug_assert_eq!(plan.parts.len(), self.conns.len());
        let ctx = PartCtx {
            group_id: &self.group_id,
            fault: self.fault,
            plan: self.plan,
            async_commit: self.async_commit,
            defer_fine: self.defer_fine,
            direct_partition: self.direct_partition,
        };
        let mut o = if self.conns.len() == 1 {
            self.conns[0]
                .write_part(ctx, rows, &plan.parts[0], offsets)
                .await?
        } else {
            // `commit_lsn` stays `None`: the synchronous offsets statement flushes the WAL past
            // every part's commit record. A part committed asynchronously is acknowledged before
            // that, though, and lost if PostgreSQL crashes before the flush — which the writer
            // sees only as a lost connection, on any part or on the offsets statement (every
            // connection to a restarted server is lost). So with asynchronous commit, a batch
            // that lost a connection is written again, every part (what survived is skipped
            // whole by the event-id key, what was lost is stored), until a round loses none;
            // only then may its Kafka offsets be committed. Its counts are the last round's.
            let losses = |conns: &[Conn]| conns.iter().map(|c| c.losses).sum::<u64>();
            let mut round = 0u32;
            loop {
                let before = losses(&self.conns);
                let sum = write_parts(&mut self.conns, ctx, rows, plan, offsets).await?;
                if !self.async_commit || losses(&self.conns) == before {
                    break sum;
                }
                round += 1;
                tracing::warn!(
                    round,
                    "a connection was lost while a batch was written on several: parts committed \
                     asynchronously before it may be gone with PostgreSQL; writing the batch again"
                );
            }
        };
        o.rows = rows.len() as u64;
        o.out_of_range = plan.out_of_range;
        o.duplicates = o.rows - plan.out_of_range - o.inserted;
        Ok(o)
    }
}

/// One round of [`Writer::write_plan`] on several connections: the parts in parallel, then the
/// offsets in a synchronous statement of their own on the first connection.
async fn write_parts(
    conns: &mut [Conn],
    ctx: PartCtx<'_>,
    rows: &[Row],
    plan: &Plan,
    offsets: &Offsets,
) -> Result<BatchOutcome> {
    let none = Offsets::new();
    let results = futures_util::future::join_all(
        conns
            .iter_mut()
            .zip(&plan.parts)
            .map(|(c, part)| c.write_part(ctx, rows, part, &none)),
    )
    .await;
    let mut sum = BatchOutcome::default();
    for r in results {
        let p = r?;
        sum.inserted += p.inserted;
        sum.rollup_rows += p.rollup_rows;
        sum.pending_rows += p.pending_rows;
        sum.fallbacks += p.fallbacks;
        sum.staged += p.staged;
    }
    if !offsets.is_empty() {
        conns[0].record_offsets(ctx.group_id, offsets).await?;
    }
    Ok(sum)
}

impl Conn {
    fn new(url: &str, stats: Arc<IngestStats>) -> Conn {
        Conn {
            url: url.to_owned(),
            client: None,
            partitions: Partitions::default(),
            stats,
            shutdown: None,
            losses: 0,
        }
    }

    /// Connects (and sets the session up) unless connected, waiting out an unreachable
    /// PostgreSQL with the bounded backoff; ends early only with [`Stopped`].
    async fn connect(&mut self) -> Result<&mut Client> {
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
        self.losses += 1;
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

    /// Writes one part (sorted, without repeats) in one transaction, with `offsets` in it,
    /// retrying as the module doc says.
    async fn write_part(
        &mut self,
        ctx: PartCtx<'_>,
        rows: &[Row],
        part: &Part,
        offsets: &Offsets,
    ) -> Result<BatchOutcome> {
        let days = &part.days;
        let mut plan = ctx.plan;
        let mut fallbacks = 0;
        let mut attempt = 0;
        loop {
            self.connect().await?;
            let client = self.client.as_mut().expect("connected just above");
            let result = match self.partitions.ensure(client, days).await {
                Ok(()) => write_once(client, ctx, plan, rows, part, offsets)
                    .await
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(mut o) => {
                    o.fallbacks = fallbacks;
                    return Ok(o);
                }
                Err(e) if connection_lost(&e, self.client.as_ref()) => {
                    self.stats.retries.fetch_add(1, Relaxed);
                    self.lost(&format!("{e:#}"));
                }
                Err(e) if plan != InsertPlan::AllOnConflict && stored_already(&e) => {
                    // A replay (or a producer retry): some bid or no-bid is stored already.
                    plan = InsertPlan::AllOnConflict;
                    fallbacks += 1;
                    tracing::debug!("plain insert met a stored id; part written with ON CONFLICT");
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

    /// Records `offsets` in a transaction of its own (several connections: after every part
    /// has committed), waiting out outages like a part.
    async fn record_offsets(&mut self, group_id: &str, offsets: &Offsets) -> Result<()> {
        let mut attempt = 0;
        loop {
            let client = self.connect().await?;
            let result = write_offsets(client, group_id, offsets)
                .await
                .map_err(anyhow::Error::from);
            match result {
                Ok(()) => return Ok(()),
                Err(e) if connection_lost(&e, self.client.as_ref()) => {
                    self.stats.retries.fetch_add(1, Relaxed);
                    self.lost(&format!("{e:#}"));
                }
                Err(e) if attempt + 1 < MAX_ATTEMPTS && retryable(&e) => {
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Relaxed);
                    self.sleep_or_stop(Duration::from_millis(20 << attempt))
                        .await?;
                }
                Err(e) => return Err(e).context("recording the offsets"),
            }
        }
    }
}

async fn write_offsets(
    client: &impl GenericClient,
    group_id: &str,
    offsets: &Offsets,
) -> Result<(), tokio_postgres::Error> {
    let topics: Vec<&str> = offsets.iter().map(|o| o.0.as_str()).collect();
    let parts: Vec<i32> = offsets.iter().map(|o| o.1).collect();
    let next: Vec<i64> = offsets.iter().map(|o| o.2).collect();
    client
        .execute(OFFSETS, &[&group_id, &topics, &parts, &next])
        .await?;
    Ok(())
}

/// Opens a connection and sets the writer's session up.
async fn open(url: &str) -> Result<Client> {
    let c = crate::db::connect(url).await?;
    c.batch_execute(SESSION)
        .await
        .context("setting up the writer session")?;
    Ok(c)
}

/// Sends an encoded `COPY` body with the `COPY` of `sql` (chunks are reference-counted: a
/// retried part sends the same bytes again without copying them).
async fn send_copy(
    tx: &Transaction<'_>,
    sql: &str,
    body: &Encoded,
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, bytes::Bytes>(sql).await?;
    pin_mut!(sink);
    for c in &body.chunks {
        sink.as_mut().send(c.clone()).await?;
    }
    sink.finish().await
}

/// The `(day, event_id)` rows [`INSERT_RAW`] answered (already stored).
fn skipped_of(rows: Vec<tokio_postgres::Row>) -> HashSet<(i32, [u8; 16])> {
    rows.iter()
        .map(|r| (r.get(0), event_id(r.get(1))))
        .collect()
}

/// An event id PostgreSQL answered: one the writer sent (staged or probed from a
/// `Row::event_id`), so always 16 bytes.
fn event_id(id: &[u8]) -> [u8; 16] {
    debug_assert_eq!(id.len(), 16);
    id.try_into().unwrap_or([0; 16])
}

async fn write_once(
    client: &mut Client,
    ctx: PartCtx<'_>,
    plan: InsertPlan,
    rows: &[Row],
    part: &Part,
    offsets: &Offsets,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let (group_id, fault) = (ctx.group_id, ctx.fault);
    let started = Instant::now();
    if part.idx.is_empty() && offsets.is_empty() {
        // A part that got no rows (several connections, few campaigns).
        return Ok(BatchOutcome::default());
    }
    let tx = client.transaction().await?;
    if ctx.async_commit {
        tx.batch_execute(ASYNC_COMMIT).await?;
    }
    if part.idx.is_empty() {
        if !offsets.is_empty() {
            write_offsets(&tx, group_id, offsets).await?;
        }
        tx.commit().await?;
        return Ok(BatchOutcome::default());
    }
    let all_on_conflict = plan == InsertPlan::AllOnConflict;
    let (bids, notices) = (&part.bids, &part.notices);
    let copy_direct;
    let copy_raw = match part.days.as_slice() {
        [day] if ctx.direct_partition => {
            copy_direct = format!(
                concat!("COPY {} ", raw_columns!(), " FROM STDIN (FORMAT binary)"),
                crate::day::partition_name(*day)
            );
            copy_direct.as_str()
        }
        _ => COPY_RAW,
    };
    let mut staged = 0;
    let skipped: HashSet<(i32, [u8; 16])> =
        if plan == InsertPlan::CopyBids || plan == InsertPlan::CopyAll {
            // Bids and no-bids straight into the raw table; notices staged, then `ON CONFLICT` —
            // or, with `CopyAll`, those not stored yet straight in as well.
            if bids.rows > 0 {
                send_copy(&tx, copy_raw, bids).await?;
            }
            if notices.rows == 0 {
                HashSet::new()
            } else if plan == InsertPlan::CopyAll {
                // The stored ones (an exchange's repeats) left out, the rest straight in.
                let stored = stored_notices(&tx, rows, part).await?;
                if stored.is_empty() {
                    send_copy(&tx, copy_raw, notices).await?;
                } else {
                    let fresh =
                        Encoded::raw(part.idx.iter().map(|&i| &rows[i as usize]).filter(|r| {
                            !is_bid_or_nobid(r) && !stored.contains(&(r.day, r.event_id))
                        }));
                    if fresh.rows > 0 {
                        send_copy(&tx, copy_raw, &fresh).await?;
                    }
                }
                stored
            } else {
                send_copy(&tx, COPY, notices).await?;
                staged = notices.rows;
                skipped_of(tx.query(INSERT_RAW, &[&true]).await?)
            }
        } else {
            // Every row staged (two `COPY`s of the same columns).
            if bids.rows > 0 {
                send_copy(&tx, COPY, bids).await?;
            }
            if notices.rows > 0 {
                send_copy(&tx, COPY, notices).await?;
            }
            staged = bids.rows + notices.rows;
            let mut bids_plain = false;
            if !all_on_conflict && bids.rows > 0 {
                tx.execute(INSERT_PLAIN, &[]).await?;
                bids_plain = true;
            }
            // Rows already stored (usually none): everything else was inserted now and is folded.
            if all_on_conflict || !bids_plain || notices.rows > 0 {
                skipped_of(tx.query(INSERT_RAW, &[&all_on_conflict]).await?)
            } else {
                HashSet::new()
            }
        };
    // The prepared deltas fold every row of the part; when some were stored already, fold the
    // part again without them.
    let refolded;
    let deltas = if skipped.is_empty() {
        &part.deltas
    } else {
        refolded = Deltas::of(
            part.idx
                .iter()
                .map(|&i| &rows[i as usize])
                .filter(|r| !skipped.contains(&(r.day, r.event_id))),
            part.idx.len(),
            ctx.defer_fine,
        );
        &refolded
    };
    let inserted = part.idx.len() - skipped.len();

    if deltas.now.rows > 0 {
        send_copy(&tx, COPY_DELTA, &deltas.now).await?;
        tx.execute(UPSERT_ROLLUPS, &[]).await?;
    }
    if deltas.later.rows > 0 {
        send_copy(&tx, COPY_PENDING, &deltas.later).await?;
    }
    let nb = &deltas.nobids;
    if !nb.counts.is_empty() {
        tx.execute(
            UPSERT_NOBIDS,
            &[
                &nb.grans,
                &nb.buckets,
                &nb.exchanges,
                &nb.reasons,
                &nb.counts,
            ],
        )
        .await?;
    }
    if !offsets.is_empty() {
        write_offsets(&tx, group_id, offsets).await?;
    }
    if !fault.0.is_zero() {
        tokio::time::sleep(fault.0).await;
    }
    tx.commit().await?;
    let commit_lsn = if ctx.async_commit {
        Some(commit_position(client).await?)
    } else {
        None
    };
    Ok(BatchOutcome {
        commit_lsn,
        rows: 0,
        inserted: inserted as u64,
        duplicates: 0,
        out_of_range: 0,
        rollup_rows: deltas.rows() as u64,
        pending_rows: deltas.later.rows as u64,
        fallbacks: 0,
        staged: staged as u64,
        elapsed: started.elapsed(),
    })
}

/// The notices of `part` that are stored already, as `(day, event_id)` ([`InsertPlan::CopyAll`]):
/// one [`STORED_NOTICES`] per day the part's notices fall on (its rows are sorted by day).
async fn stored_notices(
    tx: &Transaction<'_>,
    rows: &[Row],
    part: &Part,
) -> Result<HashSet<(i32, [u8; 16])>, tokio_postgres::Error> {
    let notices = part
        .idx
        .iter()
        .map(|&i| &rows[i as usize])
        .filter(|r| !is_bid_or_nobid(r));
    let mut stored = HashSet::new();
    let mut day = None;
    let mut ids: Vec<&[u8]> = Vec::with_capacity(part.notices.rows);
    for r in notices {
        if let Some(d) = day.filter(|&d| d != r.day) {
            stored_of(tx, d, &ids, &mut stored).await?;
            ids.clear();
        }
        day = Some(r.day);
        ids.push(&r.event_id);
    }
    if let Some(d) = day {
        stored_of(tx, d, &ids, &mut stored).await?;
    }
    Ok(stored)
}

/// Adds to `stored` those of `ids` that are stored on `day` ([`STORED_NOTICES`]).
async fn stored_of(
    tx: &Transaction<'_>,
    day: i32,
    ids: &[&[u8]],
    stored: &mut HashSet<(i32, [u8; 16])>,
) -> Result<(), tokio_postgres::Error> {
    for r in under_probe_plan(tx, STORED_NOTICES, day, ids).await? {
        stored.insert((day, event_id(r.get(0))));
    }
    Ok(())
}

/// How many of `ids` are stored on `day`: [`STORED_NOTICES`] under [`PROBE_PLAN`].
pub async fn probe_stored(
    tx: &Transaction<'_>,
    day: i32,
    ids: &[&[u8]],
) -> Result<i64, tokio_postgres::Error> {
    let rows = under_probe_plan(tx, STORED_NOTICES, day, ids).await?;
    Ok(rows.len() as i64)
}

/// The plan [`probe_stored`] runs for `ids` on `day`, one line per row of `EXPLAIN` (for the
/// tests: the same settings, the same binding).
pub async fn probe_plan(
    tx: &Transaction<'_>,
    day: i32,
    ids: &[&[u8]],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let sql = format!("EXPLAIN {STORED_NOTICES}");
    let rows = under_probe_plan(tx, &sql, day, ids).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Runs `sql` (`$1` the day, `$2` the ids) between [`PROBE_PLAN`] and [`PROBE_PLAN_END`]. On
/// an error the transaction is aborted and the caller rolls it back, settings included.
async fn under_probe_plan(
    tx: &Transaction<'_>,
    sql: &str,
    day: i32,
    ids: &[&[u8]],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    tx.batch_execute(PROBE_PLAN).await?;
    let rows = tx.query(sql, &[&day, &ids]).await?;
    tx.batch_execute(PROBE_PLAN_END).await?;
    Ok(rows)
}

/// The WAL insert position right after a commit (at or past its commit record) and the
/// server's start time (a crash restart changes it; see [`super::durable`]).
async fn commit_position(client: &Client) -> Result<(u64, i64), tokio_postgres::Error> {
    let r = client.query_one(POSITION, &[&false]).await?;
    Ok((
        super::durable::parse_lsn(r.get(0)).unwrap_or(u64::MAX),
        r.get(1),
    ))
}

/// The plain insert met an id already stored.
fn stored_already(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|pg| pg.code())
            .is_some_and(|c| *c == SqlState::UNIQUE_VIOLATION)
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

//! Folds the deferred rollup deltas into the rollups: the hour rows per creative, site/app,
//! country and device type (dim > 0), which the batch transaction appends to the unindexed
//! `rollup_pending` ([`super::writer::Writer::with_deferred_rollups`]) instead of upserting them.
//! Owned by the folder task ([`run`]), on a PostgreSQL connection of its own, so the fold runs
//! beside the batch writer (on another backend, another core) instead of inside its
//! transaction.
//!
//! One fold is one `REPEATABLE READ` transaction (one snapshot for all of its statements),
//! under a session advisory lock taken before it (one fold at a time across all reporters):
//!
//! 1. `INSERT INTO fold_src` (a temporary table, emptied at commit) the pending deltas — at
//!    most [`MAX_FOLD_BLOCKS`] pages of them: a backlog is folded a window of pages at a time —
//!    summed per rollup key (`GROUP BY`, with `helios_sum_bigint`: migration 0010) in key order;
//! 2. `DELETE` the same pending deltas — the same snapshot, so exactly the rows summed: a delta
//!    a batch appends meanwhile is in neither;
//! 3. `MERGE` the sums into `rollups_detail` (the partition of every dim ≠ 0): a key already
//!    there is updated, a new one inserted — under a pinned plan, a nested loop of primary-key
//!    probes in key order ([`MERGE_PLAN`]), whatever the statistics say.
//!
//! A key that many batches touched since the last fold (a busy site in a busy hour) costs one
//! probe and one write instead of one per batch. Until session 8 the fold was one statement,
//! `DELETE … RETURNING` → `sum()` → `INSERT … ON CONFLICT DO UPDATE`; this one costs ~30 % less
//! CPU per delta (the numeric sums, the returned rows' materialization, and the speculative
//! insertion and row lock of `ON CONFLICT`, each a WAL record: bench/RESULTS.md, session 9).
//! `MERGE` is not safe against a concurrent write of the same key, and seldom needs to be: only
//! the folder writes dim ≠ 0 rows (the batch writer upserts dim = 0 only), and only one folder
//! runs. A reporter run with `--defer-rollups=false` does upsert them in its batches; when one
//! of those commits a key after the fold's snapshot, the `MERGE` fails (a unique violation or a
//! serialization failure), the transaction is rolled back whole, and the same deltas are folded
//! at once by session 8's statement ([`FOLD_CONTENDED`], `ON CONFLICT` under `READ
//! COMMITTED`, which waits for such a writer instead of failing).
//!
//! Exactly once: a delta is in `rollup_pending` or in `rollups`, never both and never neither —
//! the delete and the merge commit together or not at all; readers ([`crate::api`]) sum
//! `rollups_all` (the two tables, read in one snapshot), so a fold never shows a figure twice
//! or hides it. The fold commits asynchronously: a PostgreSQL crash may lose the last fold
//! transaction, and with it both the delete and the merge — its deltas are still pending and
//! folded again later. The lock is taken before the transaction's snapshot: a fold that began
//! its snapshot before another's commit and took the lock after it would see deltas already
//! folded (its delete would then fail on them, `REPEATABLE READ`, rather than fold them twice).
//!
//! Several reporters: one fold at a time across all of them (`pg_try_advisory_lock`, released
//! after the transaction, or with the connection if it is lost; a reporter that finds the lock
//! taken skips its turn). Rows a batch appends while a fold runs are not in its snapshot and
//! stay for the next fold. The batch writer upserts only dim = 0 rows and the folder only
//! dim > 0 rows, so they never wait on each other's row locks.
//!
//! Must never: delete a pending delta without adding it to `rollups` in the same transaction;
//! fold more than [`MAX_FOLD_BLOCKS`] pages of deltas in one transaction (bounded memory and
//! transaction time).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel};

use super::stats::IngestStats;
use super::writer::{add_deltas, add_to_rollups, delta_columns, index_probes_only};

/// Most pages of `rollup_pending` one fold transaction moves (8,192 pages, 64 MiB, ~400,000
/// deltas): a larger table (a backlog) is folded a window of pages at a time, the window
/// moving on by this much per fold. The window is a TID range scan (`ctid >= … AND ctid < …`),
/// as cheap as the plain delete and ~40 % cheaper than a `LIMIT` through `ctid = ANY (…)`
/// (measured).
pub const MAX_FOLD_BLOCKS: i64 = 8192;

/// Most fold transactions in a row per turn of [`run`] (then it sleeps its interval).
pub const MAX_FOLDS_PER_TURN: u32 = 8;

/// Arbitrary constant naming the fold lock (one fold at a time over every reporter).
pub const FOLD_LOCK: i64 = 0x4845_4c49_4f53_0002;

/// Per-session setup of the folder's connection: sort and hash memory for the `GROUP BY`,
/// temporary buffers for the sums (set before the temporary table's first use; ~400,000 sums
/// are ~50 MB, over the default 8 MB, which would spill them to disk) and the table for them.
const SESSION: &str = "SET work_mem = '128MB'; SET temp_buffers = '128MB'; \
    CREATE TEMP TABLE IF NOT EXISTS fold_src (LIKE rollups) ON COMMIT DELETE ROWS";

/// Pages of `rollup_pending` now.
const BLOCKS: &str =
    "SELECT pg_relation_size('rollup_pending') / current_setting('block_size')::bigint";

/// The fold's page window, when the pending table is larger than one: `$1` and `$2` are its
/// first and past-the-end page as `tid` text (a TID range scan, for the sums and the delete
/// alike).
const WINDOW: &str = "WHERE ctid >= $1::text::tid AND ctid < $2::text::tid";

/// Which pending deltas one fold takes: every one, or the pages of a [`WINDOW`] (its first and
/// past-the-end page as `tid` text).
#[derive(Debug)]
struct Pages(Option<(String, String)>);

impl Pages {
    /// `sql` with its `{WHERE}` filled for these pages.
    fn sql(&self, sql: &str) -> String {
        sql.replace("{WHERE}", if self.0.is_some() { WINDOW } else { "" })
    }

    /// The parameters of [`Pages::sql`]'s statement.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match &self.0 {
            None => Vec::new(),
            Some((lo, hi)) => vec![lo, hi],
        }
    }
}

/// The deltas of `$from` summed per rollup key (`helios_sum_bigint`: migration 0010), in key
/// order — for [`SUM`] and [`FOLD_CONTENDED`] alike.
macro_rules! sums_by_key {
    ($from:literal) => {
        concat!(
            "
SELECT gran, advertiser_id, campaign_id, dim, bucket, val,
       helios_sum_bigint(bids), helios_sum_bigint(nobids), helios_sum_bigint(wins),
       helios_sum_bigint(losses), helios_sum_bigint(impressions), helios_sum_bigint(clicks),
       helios_sum_bigint(bid_cpm_micros), helios_sum_bigint(win_cpm_micros),
       helios_sum_bigint(spend_cpm_micros), max(last_ts)
FROM ",
            $from,
            "
GROUP BY gran, advertiser_id, campaign_id, dim, bucket, val
ORDER BY gran, advertiser_id, campaign_id, dim, bucket, val"
        )
    };
}

/// Step 1: the pending deltas (`{WHERE}`: all, or [`WINDOW`]) summed per key, in key order.
const SUM: &str = concat!(
    "INSERT INTO fold_src ",
    delta_columns!(),
    sums_by_key!("rollup_pending {WHERE}")
);

/// Step 2: the same deltas (same snapshot, same `{WHERE}`) deleted.
const DELETE: &str = "DELETE FROM rollup_pending {WHERE}";

/// The plan [`MERGE`] must run under: a nested loop probing the primary key once per sum, in
/// the sums' (key) order. Without it the planner, which knows nothing of `fold_src` (a fresh
/// temporary table) and may know little of a grown `rollups_detail`, can choose a hash or merge
/// join that reads the whole detail partition at every fold — a cost that grows with the
/// retained days instead of with the deltas. `SET LOCAL`: it ends with the transaction.
pub const MERGE_PLAN: &str = index_probes_only!();

/// Step 3: the sums into the detail rollups. `rollups_detail` by name, not `rollups`: every
/// pending delta is dim ≠ 0 (a `CHECK` of `rollup_pending`), the default partition's rows, and
/// probing the partition spares the parent's per-row partition routing. (Were a dim ever given
/// a partition of its own, inserting its row here would fail the default partition's
/// constraint: loudly, the deltas staying pending.)
pub const MERGE: &str = concat!(
    "
MERGE INTO rollups_detail AS r
USING fold_src AS s
ON r.gran = s.gran AND r.advertiser_id = s.advertiser_id AND r.campaign_id = s.campaign_id
   AND r.dim = s.dim AND r.bucket = s.bucket AND r.val = s.val
WHEN MATCHED THEN UPDATE SET ",
    add_deltas!(s),
    "
WHEN NOT MATCHED THEN INSERT ",
    delta_columns!(),
    " VALUES (
    s.gran, s.advertiser_id, s.campaign_id, s.dim, s.bucket, s.val, s.bids, s.nobids, s.wins,
    s.losses, s.impressions, s.clicks, s.bid_cpm_micros, s.win_cpm_micros, s.spend_cpm_micros,
    s.last_ts)"
);

/// The fold when [`MERGE`] met a concurrent writer of the same keys (`unique_violation` or
/// `serialization_failure`: a reporter run with `--defer-rollups=false` upserts dim ≠ 0 rows
/// in its batches): session 8's single statement under `READ COMMITTED`, whose `ON CONFLICT`
/// waits for such a writer instead of failing — the same deltas, more CPU per delta. Under
/// steady load beside such a reporter the fast path would fail on nearly every turn; this
/// one cannot, so the deltas never pile up.
const FOLD_CONTENDED: &str = concat!(
    "
WITH moved AS (
    DELETE FROM rollup_pending {WHERE}
    RETURNING *
), folded AS (
    INSERT INTO rollups AS r",
    sums_by_key!("moved"),
    "
    ",
    add_to_rollups!(),
    "
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM folded)"
);

/// What one fold transaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FoldOutcome {
    /// Pending deltas moved.
    pub moved: u64,
    /// Rollup rows inserted or updated (distinct keys among them).
    pub upserted: u64,
    /// Another reporter held the fold lock: nothing was done.
    pub skipped: bool,
    /// [`MERGE`] met a concurrent writer of the same keys, and [`FOLD_CONTENDED`] folded the
    /// deltas instead.
    pub contended: bool,
    /// The fold moved a window of pages that ended before the table's end: more deltas may be
    /// pending past it. (Not merely "the table is larger than one window": a table a backlog
    /// made large stays large once emptied, until a vacuum truncates it, and a caller looping
    /// on that would sweep empty pages forever.)
    pub more: bool,
}

/// The folder's connection (opened on first use, dropped on error and opened again at the
/// next attempt).
#[derive(Debug)]
pub struct RollupFolder {
    url: String,
    client: Option<Client>,
    max_blocks: i64,
    /// First page of the next window (when the table is larger than one window).
    cursor: i64,
}

impl RollupFolder {
    pub fn new(url: &str) -> RollupFolder {
        RollupFolder {
            url: url.to_owned(),
            client: None,
            max_blocks: MAX_FOLD_BLOCKS,
            cursor: 0,
        }
    }

    /// Moves at most `n` pages of deltas per transaction (clamped to
    /// 1..=[`MAX_FOLD_BLOCKS`]; tests).
    pub fn with_max_blocks(mut self, n: i64) -> RollupFolder {
        self.max_blocks = n.clamp(1, MAX_FOLD_BLOCKS);
        self
    }

    async fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let c = crate::db::connect(&self.url).await?;
            c.batch_execute(SESSION)
                .await
                .context("setting up the folder session")?;
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    /// Deltas pending now (all reporters'), as this connection sees them.
    pub async fn pending_rows(&mut self) -> Result<i64> {
        let c = self.client().await?;
        Ok(c.query_one("SELECT count(*) FROM rollup_pending", &[])
            .await?
            .get(0))
    }

    /// The backend's process id (for benchmarks that read its CPU time).
    pub async fn backend_pid(&mut self) -> Result<i32> {
        let c = self.client().await?;
        Ok(c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
    }

    /// One fold transaction (see the module doc). On error the connection is dropped (the
    /// transaction with it: nothing moved; the session lock with it) and opened again by the
    /// next call. The connection is out of `self` while the lock may be held, so a caller
    /// that drops this future midway drops the connection, and the lock with it, too.
    pub async fn fold_once(&mut self) -> Result<FoldOutcome> {
        let (max_blocks, cursor) = (self.max_blocks, self.cursor);
        self.client().await?;
        let mut c = self.client.take().expect("connected just above");
        // The lock before the snapshot (module doc): a session lock, taken outside the
        // transaction whose first statement fixes its snapshot.
        let r = async {
            let locked: bool = c
                .query_one("SELECT pg_try_advisory_lock($1)", &[&FOLD_LOCK])
                .await?
                .get(0);
            if !locked {
                let skipped = FoldOutcome {
                    skipped: true,
                    ..FoldOutcome::default()
                };
                return Ok((skipped, cursor));
            }
            let blocks: i64 = c.query_one(BLOCKS, &[]).await?.get(0);
            let (pages, next) = if blocks <= max_blocks {
                (Pages(None), 0)
            } else {
                let lo = if cursor < blocks { cursor } else { 0 };
                let hi = lo + max_blocks;
                (
                    Pages(Some((format!("({lo},0)"), format!("({hi},0)")))),
                    if hi < blocks { hi } else { 0 },
                )
            };
            let outcome = match fold_merge(&mut c, &pages).await {
                Err(e) if is_contention(&e) => {
                    tracing::debug!(error = %e, "fold met a concurrent writer of its keys; folding with ON CONFLICT");
                    fold_contended(&mut c, &pages).await?
                }
                r => r?,
            };
            Ok::<_, anyhow::Error>((
                FoldOutcome {
                    more: next != 0,
                    ..outcome
                },
                next,
            ))
        }
        .await;
        match r {
            Ok((o, next)) => {
                self.cursor = next;
                if o.skipped {
                    self.client = Some(c);
                    return Ok(o);
                }
                // Committed: a failed unlock is not a failed fold. Dropping the connection
                // releases the lock.
                match c
                    .query_one("SELECT pg_advisory_unlock($1)", &[&FOLD_LOCK])
                    .await
                {
                    Ok(_) => self.client = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "releasing the fold lock failed; reconnecting")
                    }
                }
                Ok(o)
            }
            Err(e) => Err(e.context("folding the pending rollup deltas")),
        }
    }

    /// Folds until the pending table is empty (as seen by each fold), a window reached the end
    /// of the table, or [`MAX_FOLDS_PER_TURN`] transactions ran; answers the sum. (A window
    /// sweep that started past the first page leaves the pages before it to the next call.)
    pub async fn fold(&mut self) -> Result<FoldOutcome> {
        let mut sum = FoldOutcome::default();
        for _ in 0..MAX_FOLDS_PER_TURN {
            let o = self.fold_once().await?;
            sum.moved += o.moved;
            sum.upserted += o.upserted;
            sum.skipped |= o.skipped;
            sum.more = o.more;
            if o.skipped || !o.more {
                break;
            }
        }
        Ok(sum)
    }
}

/// The fold proper (module doc, steps 1–3): one `REPEATABLE READ` transaction, committed
/// asynchronously.
async fn fold_merge(c: &mut Client, pages: &Pages) -> Result<FoldOutcome> {
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let upserted = tx.execute(&pages.sql(SUM), &pages.params()).await?;
    let moved = tx.execute(&pages.sql(DELETE), &pages.params()).await?;
    anyhow::ensure!(
        moved >= upserted && (moved == 0) == (upserted == 0),
        "{moved} deltas summed into {upserted} keys"
    );
    if upserted > 0 {
        tx.batch_execute(MERGE_PLAN).await?;
        let merged = tx.execute(MERGE, &[]).await?;
        anyhow::ensure!(
            merged == upserted,
            "{merged} rows merged for {upserted} summed keys"
        );
    }
    tx.commit().await?;
    Ok(FoldOutcome {
        moved,
        upserted,
        ..FoldOutcome::default()
    })
}

/// [`FOLD_CONTENDED`] in a `READ COMMITTED` transaction, committed asynchronously.
async fn fold_contended(c: &mut Client, pages: &Pages) -> Result<FoldOutcome> {
    let tx = c.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    let row = tx
        .query_one(&pages.sql(FOLD_CONTENDED), &pages.params())
        .await?;
    let (moved, upserted): (i64, i64) = (row.get(0), row.get(1));
    tx.commit().await?;
    Ok(FoldOutcome {
        moved: moved as u64,
        upserted: upserted as u64,
        contended: true,
        ..FoldOutcome::default()
    })
}

/// A fold that failed because another transaction wrote one of its keys after its snapshot.
fn is_contention(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| {
            *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// When the folder task folds: every `every` at the latest, sooner once this reporter has
/// appended `rows` deltas since the last fold (counted in [`IngestStats::rollup_deferred`]).
/// A longer wait merges more batches per key (fewer upserts: measured in bench/RESULTS.md);
/// fewer pending rows keep the API's scan of them short.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub every: Duration,
    pub rows: u64,
}

/// How often the folder task looks at the appended count.
pub const POLL: Duration = Duration::from_millis(100);

/// The folder task: folds as [`Schedule`] says until `shutdown` turns true. Failures
/// (PostgreSQL away, a deadlock with an older reporter that still upserts these rows) are
/// logged and counted; the deltas stay pending (still read by the API) and the next turn tries
/// again. Answers the folder (its connection still open) once `shutdown` turned true.
pub async fn run(
    mut folder: RollupFolder,
    schedule: Schedule,
    stats: Arc<IngestStats>,
    mut shutdown: watch::Receiver<bool>,
) -> RollupFolder {
    let mut tick = tokio::time::interval(POLL.min(schedule.every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    let mut appended_then = stats.rollup_deferred.load(Relaxed);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|v| *v) => return folder,
        }
        let appended = stats.rollup_deferred.load(Relaxed);
        if last.elapsed() < schedule.every && appended - appended_then < schedule.rows {
            continue;
        }
        last = tokio::time::Instant::now();
        appended_then = appended;
        match folder.fold().await {
            Ok(o) => {
                if o.moved > 0 {
                    stats.rollup_folds.fetch_add(1, Relaxed);
                    stats.rollup_folded.fetch_add(o.moved, Relaxed);
                    tracing::debug!(
                        moved = o.moved,
                        upserted = o.upserted,
                        "rollup deltas folded"
                    );
                }
            }
            Err(e) => {
                stats.rollup_fold_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %format!("{e:#}"), "rollup fold failed; deltas stay pending");
            }
        }
    }
}

//! Folds the deferred rollup deltas into the rollups: the hour rows per creative, site/app,
//! country and device type (dim > 0), which the batch transaction appends to the unindexed
//! `rollup_pending` ([`super::writer::Writer::with_deferred_rollups`]) instead of upserting them.
//! Owned by the folder task ([`run`]), on a PostgreSQL connection of its own, so the fold runs
//! beside the batch writer (on another backend, another core) instead of inside its
//! transaction.
//!
//! One fold is one transaction and one statement: `DELETE` the pending deltas (at most
//! [`MAX_FOLD_BLOCKS`] pages of them: a backlog is folded a window of pages at a time)
//! `RETURNING` them, `GROUP BY` their key, and upsert one row per distinct key into
//! `rollups` in key order. A key that many batches touched since the last fold (a busy site in
//! a busy hour) costs one upsert instead of one per batch. Exactly once: a delta is in
//! `rollup_pending` or in `rollups`, never both and never neither — the delete and the upsert
//! commit together or not at all; readers ([`crate::api`]) sum `rollups_all` (the two tables,
//! read in one snapshot), so a fold never shows a figure twice or hides it. The fold commits
//! asynchronously: a PostgreSQL crash may lose the last fold transaction, and with it both the
//! delete and the upsert — its deltas are still pending and folded again later.
//!
//! Several reporters: one fold at a time across all of them (`pg_try_advisory_xact_lock`; a
//! reporter that finds the lock taken skips its turn). Rows a batch appends while a fold runs
//! are not in its snapshot and stay for the next fold. The batch writer upserts only dim = 0
//! rows and the folder only dim > 0 rows, so they never wait on each other's row locks.
//!
//! Must never: delete a pending delta without adding it to `rollups` in the same transaction;
//! fold more than [`MAX_FOLD_BLOCKS`] pages of deltas in one transaction (bounded memory and
//! transaction time).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio_postgres::Client;

use super::stats::IngestStats;
use super::writer::add_to_rollups;

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

const SESSION: &str = "SET work_mem = '128MB'";

/// Pages of `rollup_pending` now.
const BLOCKS: &str =
    "SELECT pg_relation_size('rollup_pending') / current_setting('block_size')::bigint";

/// The fold: `{WHERE}` is empty (every pending delta) or a window of pages, `$1` and `$2` its
/// first and past-the-end page as `tid` text.
const FOLD: &str = concat!(
    "
WITH moved AS (
    DELETE FROM rollup_pending {WHERE}
    RETURNING *
), folded AS (
    INSERT INTO rollups AS r
    SELECT gran, advertiser_id, campaign_id, dim, bucket, val,
           sum(bids)::bigint, sum(nobids)::bigint, sum(wins)::bigint, sum(losses)::bigint,
           sum(impressions)::bigint, sum(clicks)::bigint, sum(bid_cpm_micros)::bigint,
           sum(win_cpm_micros)::bigint, sum(spend_cpm_micros)::bigint, max(last_ts)
    FROM moved
    GROUP BY gran, advertiser_id, campaign_id, dim, bucket, val
    ORDER BY gran, advertiser_id, campaign_id, dim, bucket, val
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
    /// transaction with it: nothing moved) and opened again by the next call.
    pub async fn fold_once(&mut self) -> Result<FoldOutcome> {
        let (max_blocks, cursor) = (self.max_blocks, self.cursor);
        let r = async {
            let c = self.client().await?;
            let tx = c.transaction().await?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            let locked: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
                .await?
                .get(0);
            if !locked {
                tx.rollback().await?;
                let skipped = FoldOutcome {
                    skipped: true,
                    ..FoldOutcome::default()
                };
                return Ok((skipped, cursor));
            }
            let blocks: i64 = tx.query_one(BLOCKS, &[]).await?.get(0);
            let (row, next) = if blocks <= max_blocks {
                (tx.query_one(&FOLD.replace("{WHERE}", ""), &[]).await?, 0)
            } else {
                let lo = if cursor < blocks { cursor } else { 0 };
                let hi = lo + max_blocks;
                let sql = FOLD.replace(
                    "{WHERE}",
                    "WHERE ctid >= $1::text::tid AND ctid < $2::text::tid",
                );
                let row = tx
                    .query_one(&sql, &[&format!("({lo},0)"), &format!("({hi},0)")])
                    .await?;
                (row, if hi < blocks { hi } else { 0 })
            };
            let (moved, upserted): (i64, i64) = (row.get(0), row.get(1));
            tx.commit().await?;
            Ok::<_, anyhow::Error>((
                FoldOutcome {
                    moved: moved as u64,
                    upserted: upserted as u64,
                    skipped: false,
                    more: next != 0,
                },
                next,
            ))
        }
        .await;
        match r {
            Ok((o, next)) => {
                self.cursor = next;
                Ok(o)
            }
            Err(e) => {
                self.client = None;
                Err(e.context("folding the pending rollup deltas"))
            }
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

//! Ingest counters, shared by the consumer task, the writer task and the API (read only).
//! Relaxed atomics: they are statistics, written once per message or per batch, never on a
//! bidding core.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct IngestStats {
    /// Messages read from Kafka.
    pub received: AtomicU64,
    /// Messages that were not an event this build reads (bad bytes, unknown schema version).
    pub rejected: AtomicU64,
    /// Events older than the retention horizon or too far in the future (not stored).
    pub out_of_range: AtomicU64,
    /// Rows inserted into the raw table (and folded into the rollups).
    pub inserted: AtomicU64,
    /// Events already stored (same event id): repeats and redeliveries, not counted again.
    pub duplicates: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Batch attempts retried after a deadlock, serialization failure or lost connection.
    pub retries: AtomicU64,
    /// Duration of the last committed batch's transaction, microseconds.
    pub last_batch_us: AtomicU64,
    /// 1 while the writer holds a live PostgreSQL connection, 0 while it waits for one.
    pub pg_connected: AtomicU64,
    /// Writer connections lost (PostgreSQL restarted or unreachable mid-batch).
    pub pg_lost: AtomicU64,
    /// Writer reconnections after a loss (or after PostgreSQL was down at start).
    pub pg_reconnects: AtomicU64,
    /// Deferred rollup deltas this reporter appended to `rollup_pending` (the folder task folds
    /// early once enough were appended since its last fold).
    pub rollup_deferred: AtomicU64,
    /// Fold transactions committed (deferred rollup deltas moved into `rollups`).
    pub rollup_folds: AtomicU64,
    /// Deferred rollup deltas folded into `rollups`.
    pub rollup_folded: AtomicU64,
    /// Fold attempts that failed (the deltas stay pending and are folded by a later attempt).
    pub rollup_fold_errors: AtomicU64,
    /// Per (topic, partition): next offset committed by this reporter, and the partition's high
    /// watermark when last fetched (every [`LAG_INTERVAL_SECS`]). Locked briefly, once per batch
    /// and once per fetch; at most one entry per assigned partition.
    pub partitions: Mutex<BTreeMap<(String, i32), PartitionPosition>>,
}

/// How often the high watermarks are fetched for the lag metric.
pub const LAG_INTERVAL_SECS: u64 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionPosition {
    pub committed: i64,
    pub high: i64,
}

impl IngestStats {
    pub fn note_committed(&self, topic: &str, partition: i32, next: i64) {
        if let Ok(mut m) = self.partitions.lock() {
            let e = m.entry((topic.to_owned(), partition)).or_default();
            e.committed = e.committed.max(next);
        }
    }
    pub fn note_high(&self, topic: &str, partition: i32, high: i64) {
        if let Ok(mut m) = self.partitions.lock() {
            m.entry((topic.to_owned(), partition)).or_default().high = high;
        }
    }
    /// (topic, partition, lag) for every known partition.
    pub fn lags(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .lock()
            .map(|m| {
                m.iter()
                    .map(|((t, p), v)| (t.clone(), *p, (v.high - v.committed).max(0)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A copy of the counters for the API.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct IngestSnapshot {
    pub received: u64,
    pub rejected: u64,
    pub out_of_range: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub batches: u64,
    pub retries: u64,
    pub last_batch_us: u64,
    pub pg_connected: u64,
    pub pg_lost: u64,
    pub pg_reconnects: u64,
    pub rollup_folds: u64,
    pub rollup_folded: u64,
    pub rollup_fold_errors: u64,
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            received: self.received.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            out_of_range: self.out_of_range.load(Relaxed),
            inserted: self.inserted.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            batches: self.batches.load(Relaxed),
            retries: self.retries.load(Relaxed),
            last_batch_us: self.last_batch_us.load(Relaxed),
            pg_connected: self.pg_connected.load(Relaxed),
            pg_lost: self.pg_lost.load(Relaxed),
            pg_reconnects: self.pg_reconnects.load(Relaxed),
            rollup_folds: self.rollup_folds.load(Relaxed),
            rollup_folded: self.rollup_folded.load(Relaxed),
            rollup_fold_errors: self.rollup_fold_errors.load(Relaxed),
        }
    }
}

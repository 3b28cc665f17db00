//! Ingest counters, shared by the consumer task, the writer task and the API (read only).
//! Relaxed atomics: they are statistics, written once per message or per batch, never on a
//! bidding core.

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
    /// Batches retried after a deadlock, serialization failure or lost connection.
    pub retries: AtomicU64,
    /// Duration of the last committed batch's transaction, microseconds.
    pub last_batch_us: AtomicU64,
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
        }
    }
}

//! `metrics`: the pipeline's counters and their snapshot.
//!
//! Owns [`Counters`]: relaxed atomics written by the producer thread (per batch or per
//! delivery report), by the frequency worker, and by a core only on its rare overflow path —
//! never per emitted event. Readers (the admin port) take a [`MetricsSnapshot`]. Must never be
//! written on a core's normal `emit` path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters shared between the pipeline's threads (see the module doc for who writes which).
#[derive(Debug, Default)]
pub struct Counters {
    /// Events taken from the cores' queues by the producer thread.
    pub drained: AtomicU64,
    /// Events acknowledged by the broker (live and replayed).
    pub produced: AtomicU64,
    /// Of `produced`, events that came from the spool.
    pub replayed: AtomicU64,
    /// Events written to the spool (by the producer thread and by cores on overflow), counted
    /// from the frames' headers.
    pub spooled: AtomicU64,
    /// Events a core could not queue (queue full) and wrote to its overflow spool instead.
    pub overflowed: AtomicU64,
    /// Events dropped because the spool was at its byte bound (logged).
    pub dropped_spool_full: AtomicU64,
    /// Events dropped because writing the spool failed (I/O error; logged).
    pub dropped_io: AtomicU64,
    /// Delivery reports with an error (the record was spooled, not lost).
    pub delivery_errors: AtomicU64,
    /// Client-level Kafka errors reported by librdkafka (broker down, fatal, …).
    pub kafka_errors: AtomicU64,
    /// Spool records whose checksum or framing was wrong on replay (skipped, logged).
    pub spool_corrupt: AtomicU64,
    /// Frequency increments applied in Redis.
    pub freq_applied: AtomicU64,
    /// Frequency increments skipped because the event id was already counted.
    pub freq_duplicate: AtomicU64,
    /// Frequency increments given up after the bounded retries.
    pub freq_failed: AtomicU64,
    /// Frequency increments dropped because the worker's queue was full.
    pub freq_dropped: AtomicU64,
    /// Events found unacknowledged in the cores' journals at start and replayed (through the
    /// spool) — the events a killed process had not delivered.
    pub journal_replayed: AtomicU64,
    /// Events a core could not journal because its journal was full (the producer had not
    /// settled enough); each went to the core's overflow spool segment instead.
    pub journal_full: AtomicU64,
    /// Bytes in the spool now.
    pub spool_bytes: AtomicU64,
    /// Whether the producer thread believes the broker is reachable.
    pub broker_up: AtomicBool,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Relaxed);
        }
    }
}

/// A point-in-time copy of the pipeline's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Events waiting in the cores' queues (sum).
    pub queue_depth: u64,
    pub queue_capacity: u64,
    pub drained: u64,
    pub produced: u64,
    pub replayed: u64,
    pub spooled: u64,
    pub overflowed: u64,
    pub dropped_spool_full: u64,
    pub dropped_io: u64,
    pub delivery_errors: u64,
    pub kafka_errors: u64,
    pub spool_corrupt: u64,
    pub spool_bytes: u64,
    pub journal_replayed: u64,
    pub journal_full: u64,
    /// Journal bytes drained and not yet acknowledged, summed over cores.
    pub journal_bytes: u64,
    pub freq_applied: u64,
    pub freq_duplicate: u64,
    pub freq_failed: u64,
    pub freq_dropped: u64,
    pub broker_up: bool,
}

impl MetricsSnapshot {
    pub(crate) fn read(c: &Counters, queue_depth: u64, queue_capacity: u64) -> Self {
        MetricsSnapshot {
            queue_depth,
            queue_capacity,
            drained: c.drained.load(Relaxed),
            produced: c.produced.load(Relaxed),
            replayed: c.replayed.load(Relaxed),
            spooled: c.spooled.load(Relaxed),
            overflowed: c.overflowed.load(Relaxed),
            dropped_spool_full: c.dropped_spool_full.load(Relaxed),
            dropped_io: c.dropped_io.load(Relaxed),
            delivery_errors: c.delivery_errors.load(Relaxed),
            kafka_errors: c.kafka_errors.load(Relaxed),
            spool_corrupt: c.spool_corrupt.load(Relaxed),
            spool_bytes: c.spool_bytes.load(Relaxed),
            journal_replayed: c.journal_replayed.load(Relaxed),
            journal_full: c.journal_full.load(Relaxed),
            journal_bytes: 0,
            freq_applied: c.freq_applied.load(Relaxed),
            freq_duplicate: c.freq_duplicate.load(Relaxed),
            freq_failed: c.freq_failed.load(Relaxed),
            freq_dropped: c.freq_dropped.load(Relaxed),
            broker_up: c.broker_up.load(Relaxed),
        }
    }

    /// Events lost for good (always logged when they happen).
    pub fn dropped(&self) -> u64 {
        self.dropped_spool_full + self.dropped_io
    }
}

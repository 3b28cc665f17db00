//! Ingest: the Kafka consumer group → PostgreSQL, exactly once.
//!
//! - [`row`]: an [`codec::event::Event`] as the row the raw table stores.
//! - [`partitions`]: the raw table's day partitions (created on demand, dropped by retention).
//! - [`writer`]: one batch in one transaction per connection: bids, no-bids and the notices not
//!   stored yet (their ids probed first; an exchange's repeats left out) by binary `COPY`
//!   straight into the raw table; only the rows actually inserted are folded into the rollups;
//!   reconnects with a bounded backoff when PostgreSQL goes away.
//! - [`prepare`]: a batch made ready before its transaction (sorted, split into parts, `COPY`
//!   streams and rollup deltas encoded), one batch ahead of the writer on the blocking pool.
//! - [`copy_bin`]: PostgreSQL's binary `COPY` format, encoded by hand.
//! - [`durable`]: with asynchronous commit, Kafka offsets held until their batch is on disk.
//! - [`fold`]: a batch's rollup deltas, aggregated in memory (one per rollup key).
//! - [`rollup_fold`]: the folder task, which moves the deferred (dim > 0) deltas from
//!   `rollup_pending` into `rollups` in transactions of its own.
//! - [`consumer`]: the consumer task (batches messages) and the writer task (writes, then commits
//!   the Kafka offsets).
//!
//! Exactly once: Tansu has no Kafka transactions, so it rests on the event id. Offsets are
//! committed to Kafka only after the batch's transaction commits (nothing is lost); a batch seen
//! again after a crash or a rebalance inserts nothing new and so adds nothing to the rollups
//! (nothing is counted twice).

pub mod consumer;
pub mod copy_bin;
pub mod durable;
pub mod fold;
pub mod partitions;
pub mod prepare;
pub mod rollup_fold;
pub mod row;
pub mod stats;
pub mod writer;

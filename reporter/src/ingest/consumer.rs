//! The ingest tasks: a consumer task reads both topics (consumer group, auto-commit off) and cuts
//! batches of at most `batch_max` messages or `batch_wait` after the first message; a writer
//! task prepares the next batch on the blocking pool ([`super::prepare::Ahead`], one batch
//! ahead) while it writes the current one ([`super::writer`]), in the order read, and only
//! after a batch is written commits its offsets to Kafka — with
//! `--pg-async-commit`, only once the batch's commit is on PostgreSQL's disk
//! ([`super::durable`]). A bounded channel of [`CHANNEL_BATCHES`] batches between them gives
//! back-pressure: when PostgreSQL is slow the consumer stops reading.
//!
//! Must never: commit an offset before the rows it covers are committed in PostgreSQL (and, with
//! asynchronous commit, flushed to its disk).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};
use codec::event::{TOPIC_BIDS, TOPIC_OUTCOMES};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::durable::{Pending, Restarted};
use super::prepare::{Ahead, Prepared};
use super::rollup_fold::{self, RollupFolder};
use super::row::Row;
use super::stats::IngestStats;
use super::writer::{FaultDelay, InsertPlan, Offsets, Stopped, Writer};

/// Batches in flight between the consumer task and the writer task.
pub const CHANNEL_BATCHES: usize = 2;

/// With asynchronous commit: how often the writer task asks PostgreSQL how far its WAL is on
/// disk while batches wait for it.
pub const DURABLE_POLL: Duration = Duration::from_millis(100);

/// On shutdown with asynchronous commit, how long the writer task waits for the last batches to
/// reach the disk before it exits without committing their offsets (they are read again).
pub const DURABLE_DRAIN: Duration = Duration::from_secs(5);

/// What the ingest needs to know.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    pub batch_max: usize,
    /// PostgreSQL connections a batch is written on (see [`Writer::with_connections`]).
    pub pg_writers: usize,
    pub batch_wait: Duration,
    pub retention_days: u32,
    /// Partitions for topics the reporter creates when they are missing (0: do not create).
    pub create_partitions: i32,
    pub fault_delay: Duration,
    /// Commit batch transactions asynchronously (see [`super::durable`]).
    pub async_commit: bool,
    /// Prepare the next batch while the current one is written ([`Ahead`]); `false`: each
    /// batch is prepared only once the previous one is written (sessions 1–5).
    pub prepare_ahead: bool,
    /// Notices by `COPY` into the raw table after a probe ([`InsertPlan::CopyAll`]) rather
    /// than staged and inserted `ON CONFLICT` ([`InsertPlan::CopyBids`]).
    pub copy_notices: bool,
    /// Append the fine-grained rollup deltas (dim > 0) to `rollup_pending` instead of upserting
    /// them in the batch (see [`super::rollup_fold`]).
    pub defer_rollups: bool,
    /// Longest time between two folds of the pending deltas into `rollups` (the folder task
    /// runs whether or not this reporter defers: pending deltas of an earlier run are folded
    /// too).
    pub rollup_fold_every: Duration,
    /// Fold sooner, once this reporter has appended this many deltas since the last fold (bounds
    /// what the API adds up from the unindexed pending table).
    pub rollup_fold_rows: u64,
    /// Extra librdkafka consumer settings.
    pub kafka_options: Vec<(String, String)>,
}

impl IngestConfig {
    pub fn default_topics() -> Vec<String> {
        vec![TOPIC_BIDS.to_owned(), TOPIC_OUTCOMES.to_owned()]
    }
}

/// One batch cut by the consumer task.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Row>,
    /// Next offset per (topic, partition); a handful of entries, searched linearly.
    pub offsets: Offsets,
}

impl Batch {
    fn note_offset(&mut self, topic: &str, partition: i32, next: i64) {
        match self
            .offsets
            .iter_mut()
            .find(|o| o.1 == partition && o.0 == topic)
        {
            Some(o) => o.2 = o.2.max(next),
            None => self.offsets.push((topic.to_owned(), partition, next)),
        }
    }
}

/// Creates the topics that do not exist yet (an existing topic is not an error).
pub async fn ensure_topics(cfg: &IngestConfig) -> Result<()> {
    if cfg.create_partitions <= 0 {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let topics: Vec<NewTopic<'_>> = cfg
        .topics
        .iter()
        .map(|t| NewTopic::new(t, cfg.create_partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&topics, &opts).await? {
        match r {
            Ok(t) => tracing::info!(topic = %t, "topic created"),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %t, "topic exists")
            }
            Err((t, e)) => tracing::warn!(topic = %t, error = %e, "topic not created"),
        }
    }
    Ok(())
}

/// The consumer, with [`GroupContext`] reporting its group membership.
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Logs every assignment and revocation of partitions with the time since the consumer was
/// created, so that how long a (re)started reporter took to join its group shows in the log.
/// Runs on librdkafka's callback thread; only logs.
#[derive(Debug)]
pub struct GroupContext {
    created: std::time::Instant,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let after_ms = self.created.elapsed().as_millis() as u64;
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(
                    partitions = tpl.count(),
                    after_ms,
                    "consumer group: partitions assigned"
                )
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(
                    partitions = tpl.count(),
                    after_ms,
                    "consumer group: partitions revoked"
                )
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, after_ms, "consumer group: rebalance error")
            }
        }
    }
}

pub fn consumer(cfg: &IngestConfig) -> Result<GroupConsumer> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        // A JoinGroup waits up to this long for members that died without leaving; Tansu
        // ends that wait only at this bound, so keep it short (a batch takes < 1 s).
        .set("max.poll.interval.ms", "15000")
        .set("queued.max.messages.kbytes", "65536");
    for (k, v) in &cfg.kafka_options {
        cc.set(k, v);
    }
    let c: GroupConsumer = cc
        .create_with_context(GroupContext {
            created: std::time::Instant::now(),
        })
        .context("creating the Kafka consumer")?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    c.subscribe(&topics).context("subscribing")?;
    Ok(c)
}

/// Runs the consumer and writer tasks until `shutdown` turns true (then the batch in hand is
/// written and committed) or the writer fails for good (the error is returned).
///
/// PostgreSQL going away does not end it: the writer reconnects with a bounded backoff and
/// writes the batch in hand again, while the consumer task, blocked on the full channel,
/// stops reading (see [`super::writer`]). With asynchronous commit, a PostgreSQL restart while
/// batches wait for the disk ([`Restarted`]) starts the consumer over from the offsets committed
/// to Kafka, which re-reads those batches.
pub async fn run(
    cfg: IngestConfig,
    pg_url: String,
    stats: Arc<IngestStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    ensure_topics(&cfg).await?;
    let mut writer = Writer::new(
        &pg_url,
        &cfg.group_id,
        cfg.retention_days,
        FaultDelay(cfg.fault_delay),
        stats.clone(),
    )
    .with_shutdown(shutdown.clone())
    .with_connections(cfg.pg_writers)
    .with_async_commit(cfg.async_commit)
    .with_deferred_rollups(cfg.defer_rollups)
    .with_plan(if cfg.copy_notices {
        InsertPlan::CopyAll
    } else {
        InsertPlan::CopyBids
    });
    let folder = tokio::spawn(rollup_fold::run(
        RollupFolder::new(&pg_url),
        rollup_fold::Schedule {
            every: cfg.rollup_fold_every,
            rows: cfg.rollup_fold_rows,
        },
        stats.clone(),
        shutdown.clone(),
    ));
    let r = ingest(&cfg, &mut writer, &stats, shutdown).await;
    folder.abort();
    r
}

/// [`run`]'s batch writing, beside the folder task.
async fn ingest(
    cfg: &IngestConfig,
    writer: &mut Writer,
    stats: &Arc<IngestStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    match writer.apply_retention().await {
        Ok(d) if !d.is_empty() => tracing::info!(dropped = ?d, "retention applied"),
        Ok(_) => {}
        Err(e) if e.is::<Stopped>() => return Ok(()),
        Err(e) => tracing::warn!(error = %e, "retention failed"),
    }
    loop {
        match session(cfg, writer, stats, shutdown.clone()).await {
            Err(e) if e.is::<Restarted>() => {
                tracing::warn!(error = %e, "ingest starts over from the offsets committed to Kafka");
            }
            Err(e) if e.is::<Stopped>() => {
                tracing::warn!("{e}");
                return Ok(());
            }
            r => return r,
        }
    }
}

/// One consumer's life: from joining the group to shutdown, a fatal error, or [`Restarted`].
async fn session(
    cfg: &IngestConfig,
    writer: &mut Writer,
    stats: &Arc<IngestStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let consumer = Arc::new(consumer(cfg)?);
    let (tx, mut rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);

    let reader = {
        let consumer = consumer.clone();
        let stats = stats.clone();
        let cfg = cfg.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    b = cut_batch(&consumer, &cfg, &stats) => b,
                    _ = shutdown.changed() => break,
                };
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        })
    };

    let lag = tokio::spawn(watch_lag(consumer.clone(), stats.clone()));
    let mut retention_tick = tokio::time::interval(Duration::from_secs(3600));
    retention_tick.tick().await;
    let mut durable_tick = tokio::time::interval(DURABLE_POLL);
    durable_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = Pending::default();
    // The next batch is prepared (sorted, encoded, folded) on the blocking pool while the one in
    // hand is written: one batch ahead at most, written in the order read.
    let mut ahead = Ahead::default();
    let result = loop {
        tokio::select! {
            b = rx.recv(), if !ahead.is_busy() && !pending.full() => match b {
                Some(b) => ahead.start(b.rows, b.offsets, writer.prepare_cfg()),
                None => break Ok(()),
            },
            p = ahead.ready(), if ahead.is_busy() && !pending.full() => {
                let p = match p {
                    Ok(p) => p,
                    Err(e) => break Err(e),
                };
                // Start preparing the next batch before this one goes to PostgreSQL.
                if cfg.prepare_ahead && let Ok(b) = rx.try_recv() {
                    ahead.start(b.rows, b.offsets, writer.prepare_cfg());
                }
                if let Err(e) = write_and_commit(writer, &consumer, &p, stats, cfg, &mut pending).await {
                    break Err(e);
                }
            }
            _ = durable_tick.tick(), if !pending.is_empty() => {
                if let Err(e) = release_durable(writer, &consumer, &mut pending, stats).await {
                    break Err(e);
                }
            }
            _ = retention_tick.tick() => {
                match writer.apply_retention().await {
                    Ok(d) if !d.is_empty() => tracing::info!(dropped = ?d, "retention applied"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
            }
            _ = shutdown.changed() => {
                // Write what is already cut (the batch in preparation first), then stop.
                rx.close();
                let mut drained = Ok(());
                if ahead.is_busy() {
                    drained = match ahead.ready().await {
                        Ok(p) => write_and_commit(writer, &consumer, &p, stats, cfg, &mut pending).await,
                        Err(e) => Err(e),
                    };
                }
                while drained.is_ok() && let Some(b) = rx.recv().await {
                    let p = Prepared::new(b.rows, b.offsets, writer.prepare_cfg());
                    drained = write_and_commit(writer, &consumer, &p, stats, cfg, &mut pending).await;
                }
                if drained.is_ok() {
                    drained = drain_durable(writer, &consumer, &mut pending, stats).await;
                }
                break drained;
            }
        }
    };
    reader.abort();
    lag.abort();
    // The session's consumer is dropped off the runtime: dropping an rdkafka consumer closes it,
    // which waits on the group and has been seen to block for good (rust-rdkafka issue #509) —
    // on a runtime worker, or in the ingest loop before the next session starts. Its other
    // holders are waited for first, so this is the last reference; nothing waits for the drop
    // (the group evicts a member that never leaves after `max.poll.interval.ms`).
    let _ = reader.await;
    let _ = lag.await;
    tokio::task::spawn_blocking(move || drop(consumer));
    result
}

/// Commits to Kafka the offsets of the waiting batches PostgreSQL has flushed to disk; when the
/// oldest has waited too long ([`super::durable::FORCE_FLUSH_AFTER`]), forces a flush first.
async fn release_durable(
    writer: &mut Writer,
    consumer: &GroupConsumer,
    pending: &mut Pending,
    stats: &IngestStats,
) -> Result<()> {
    let mut forced = false;
    while !pending.is_empty() {
        let (flushed, started) = match writer.flushed_position().await {
            Ok(p) => p,
            Err(e) if e.is::<Stopped>() => return Err(e),
            Err(e) => {
                // Asked again at the next tick (a lost connection reconnects then).
                tracing::warn!(error = %format!("{e:#}"), "WAL flush position not read");
                return Ok(());
            }
        };
        for offsets in pending.release(flushed, started)? {
            commit_offsets(consumer, &offsets, stats)?;
        }
        if pending.is_empty() || forced || !pending.overdue() {
            break;
        }
        let newest = pending.newest().cloned().unwrap_or_default();
        match writer.force_flush(&newest).await {
            Ok(()) => forced = true,
            Err(e) if e.is::<Stopped>() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "WAL flush not forced");
                break;
            }
        }
    }
    Ok(())
}

/// On shutdown: waits (at most [`DURABLE_DRAIN`]) for the waiting batches to reach the disk and
/// commits their offsets; what is still waiting then is read again by the next reporter.
async fn drain_durable(
    writer: &mut Writer,
    consumer: &GroupConsumer,
    pending: &mut Pending,
    stats: &IngestStats,
) -> Result<()> {
    let until = tokio::time::Instant::now() + DURABLE_DRAIN;
    while !pending.is_empty() && tokio::time::Instant::now() < until {
        match release_durable(writer, consumer, pending, stats).await {
            Err(e) if e.is::<Restarted>() => return Ok(()),
            Err(e) => return Err(e),
            Ok(()) if pending.is_empty() => break,
            Ok(()) => tokio::time::sleep(DURABLE_POLL / 2).await,
        }
    }
    if !pending.is_empty() {
        tracing::warn!(
            batches = pending.len(),
            "shutdown before the last batches were known to be on disk; they will be read again"
        );
    }
    Ok(())
}

/// Every [`super::stats::LAG_INTERVAL_SECS`], fetches the high watermark of each assigned
/// partition (a blocking librdkafka call, so on the blocking pool) for the lag metric.
async fn watch_lag(consumer: Arc<GroupConsumer>, stats: Arc<IngestStats>) {
    let mut tick = tokio::time::interval(Duration::from_secs(super::stats::LAG_INTERVAL_SECS));
    loop {
        tick.tick().await;
        let c = consumer.clone();
        let marks = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            if let Ok(a) = c.assignment() {
                for e in a.elements() {
                    if let Ok((_, high)) =
                        c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                    {
                        out.push((e.topic().to_owned(), e.partition(), high));
                    }
                }
            }
            out
        })
        .await
        .unwrap_or_default();
        for (t, p, h) in marks {
            stats.note_high(&t, p, h);
        }
    }
}

async fn write_and_commit(
    writer: &mut Writer,
    consumer: &GroupConsumer,
    batch: &Prepared,
    stats: &IngestStats,
    cfg: &IngestConfig,
    pending: &mut Pending,
) -> Result<()> {
    let offsets = batch.offsets();
    let o = writer.write_prepared(batch).await?;
    stats.inserted.fetch_add(o.inserted, Relaxed);
    stats.rollup_deferred.fetch_add(o.pending_rows, Relaxed);
    stats.duplicates.fetch_add(o.duplicates, Relaxed);
    stats.out_of_range.fetch_add(o.out_of_range, Relaxed);
    stats.batches.fetch_add(1, Relaxed);
    stats
        .last_batch_us
        .store(o.elapsed.as_micros() as u64, Relaxed);
    tracing::debug!(
        rows = o.rows,
        inserted = o.inserted,
        duplicates = o.duplicates,
        rollup_rows = o.rollup_rows,
        ms = o.elapsed.as_millis() as u64,
        prepare_ms = batch.prepare_time.as_millis() as u64,
        "batch committed"
    );
    if !cfg.fault_delay.is_zero() {
        // Testing hook: a window between the PostgreSQL commit and the Kafka commit.
        tokio::time::sleep(cfg.fault_delay).await;
    }
    match o.commit_lsn {
        // Asynchronous commit: the offsets wait until the commit is on disk.
        Some((lsn, started)) if !offsets.is_empty() => {
            pending.push(lsn, started, offsets.clone());
            Ok(())
        }
        _ => commit_offsets(consumer, offsets, stats),
    }
}

/// Commits `offsets` to Kafka (asynchronously; a failed commit is not fatal: the batch is
/// redelivered later and inserts nothing).
fn commit_offsets(consumer: &GroupConsumer, offsets: &Offsets, stats: &IngestStats) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, next) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*next))
            .context("building the offset list")?;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(error = %e, "offset commit failed");
    }
    for (t, p, next) in offsets {
        stats.note_committed(t, *p, *next);
    }
    Ok(())
}

/// Reads until `batch_max` messages or `batch_wait` after the first one.
async fn cut_batch(consumer: &GroupConsumer, cfg: &IngestConfig, stats: &IngestStats) -> Batch {
    let mut batch = Batch {
        rows: Vec::with_capacity(cfg.batch_max),
        offsets: Vec::new(),
    };
    let mut deadline: Option<tokio::time::Instant> = None;
    while batch.rows.len() < cfg.batch_max {
        let next = match deadline {
            None => Ok(consumer.recv().await),
            Some(d) => tokio::time::timeout_at(d, consumer.recv()).await,
        };
        let msg = match next {
            Err(_) => break,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Ok(m)) => m,
        };
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + cfg.batch_wait);
        stats.received.fetch_add(1, Relaxed);
        batch.note_offset(msg.topic(), msg.partition(), msg.offset() + 1);
        let rejected = decode_into(msg.payload().unwrap_or(&[]), &mut batch.rows, |e| {
            tracing::warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                error = %e,
                "message holds an unreadable event; skipped"
            );
        });
        stats.rejected.fetch_add(rejected, Relaxed);
    }
    batch
}

/// Decodes one Kafka message — a frame of events (schema v2) or one legacy rkyv event (v1) —
/// into rows appended to `rows`; returns how many events (or whole messages, when even the
/// header is unreadable) were rejected, each reported to `on_error`. A batch may exceed
/// `batch_max` by at most one message's events (a frame holds ≤ 65,535).
pub fn decode_into(
    payload: &[u8],
    rows: &mut Vec<Row>,
    mut on_error: impl FnMut(&codec::event::EventDecodeError),
) -> u64 {
    match codec::event::frame::decode_record(payload) {
        Ok(events) => {
            let mut rejected = 0;
            for e in events {
                match e {
                    Ok(e) => rows.push(Row::from_event(&e)),
                    Err(e) => {
                        rejected += 1;
                        on_error(&e);
                    }
                }
            }
            rejected
        }
        Err(e) => {
            on_error(&e);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::event::frame::FrameBuf;
    use codec::event::{Event, EventKind, InlineStr};

    fn ev(i: u8) -> Event {
        let mut e = Event::new(EventKind::Billing);
        e.event_id = [i; 16];
        e.campaign_id = 10 + i as u32;
        e.clear_price_micros = 1_000_000;
        e.ts_unix_ns = 1_700_000_000_000_000_000;
        e.site_or_app = InlineStr::new("news.example");
        e
    }

    #[test]
    fn a_frame_becomes_one_row_per_event_in_order() {
        let mut f = FrameBuf::with_max_bytes(8192);
        for i in 0..20 {
            assert!(f.push(&ev(i)));
        }
        let mut rows = Vec::new();
        let mut errors = 0;
        assert_eq!(decode_into(f.as_bytes(), &mut rows, |_| errors += 1), 0);
        assert_eq!(errors, 0);
        assert_eq!(rows.len(), 20);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r, &Row::from_event(&ev(i as u8)));
        }
    }

    #[test]
    fn legacy_single_event_messages_are_still_read() {
        let mut rows = Vec::new();
        let n = decode_into(&ev(3).to_legacy_bytes(), &mut rows, |_| {});
        assert_eq!(n, 0);
        assert_eq!(rows, vec![Row::from_event(&ev(3))]);
    }

    #[test]
    fn garbage_and_torn_frames_are_counted_not_stored() {
        let mut rows = Vec::new();
        assert_eq!(decode_into(b"junk", &mut rows, |_| {}), 1);
        assert!(rows.is_empty());
        let mut f = FrameBuf::with_max_bytes(8192);
        for i in 0..3 {
            assert!(f.push(&ev(i)));
        }
        let b = f.as_bytes();
        // Cut inside the third event: two rows, one rejected.
        let mut errors = Vec::new();
        let n = decode_into(&b[..b.len() - 5], &mut rows, |e| errors.push(e.to_string()));
        assert_eq!((n, rows.len(), errors.len()), (1, 2, 1));
    }
}

//! `pipeline`: how events leave the bidding cores and reach Kafka, losing nothing.
//!
//! Owns: one bounded lock-free queue per core ([`CoreSink`], owned by its core), the producer
//! thread that drains them into Kafka ([`producer`]), the disk spool used when the broker is
//! away ([`spool`]), the frequency-counter worker that applies billing side effects in Redis
//! ([`frequency`]), each core's write-ahead journal that makes an event survive the process
//! being killed ([`journal`]), and the signing and checking of our notice URLs ([`notice`]).
//! Must never: make a bidding core wait for Kafka, or drop an event without counting it.
//!
//! Threads: each core owns its `CoreSink`; the producer thread (`helios-producer`) owns the
//! Kafka client and the spool's replay; the frequency worker (`helios-freq`) owns its Redis
//! connection. They share only the queues, the relaxed counters in [`metrics`] and the
//! producer's [`wake::Doorbell`] (rung by a core whose queue passes its fill mark).

pub mod config;
pub mod framing;
pub mod frequency;
pub mod journal;
pub mod metrics;
pub mod notice;
pub mod producer;
pub mod sink;
pub mod spool;
pub mod topics;
pub mod wake;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codec::event::Event;
use crossbeam_queue::ArrayQueue;

pub use config::{PipelineConfig, ProducerConfig};
pub use metrics::MetricsSnapshot;
pub use producer::ShutdownReport;
pub use sink::CoreSink;

use metrics::Counters;
use producer::{ProducerThread, Shared};
use spool::Spool;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline config: {0}")]
    Config(String),
    #[error("spool directory {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },
    #[error("journal {path}: {source}")]
    Journal {
        path: String,
        source: std::io::Error,
    },
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("frequency worker (redis): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("spawning the producer thread: {0}")]
    Thread(std::io::Error),
}

/// The running pipeline: the producer thread and (optionally) the frequency worker.
#[derive(Debug)]
pub struct Pipeline {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<ShutdownReport>>,
    capacity: u64,
}

impl Pipeline {
    /// Opens the spool (replaying at once what a previous run left), makes sure the topics
    /// exist (bounded by `startup_timeout_ms`; if the broker is away the pipeline starts in
    /// spool mode), starts the frequency worker when `redis_url` is set, spawns the producer
    /// thread and returns one [`CoreSink`] per core.
    pub fn start(
        cfg: &PipelineConfig,
        cores: usize,
    ) -> Result<(Pipeline, Vec<CoreSink>), PipelineError> {
        if cores == 0 || cores > u16::MAX as usize {
            return Err(PipelineError::Config(format!(
                "cores must be 1..=65535, got {cores}"
            )));
        }
        if cfg.queue_capacity_per_core == 0 {
            return Err(PipelineError::Config(
                "queue_capacity_per_core must be > 0".into(),
            ));
        }
        if cfg.brokers.trim().is_empty() {
            return Err(PipelineError::Config("brokers must not be empty".into()));
        }
        if cfg.topic_bids.is_empty() || cfg.topic_outcomes.is_empty() {
            return Err(PipelineError::Config(
                "topic names must not be empty".into(),
            ));
        }
        if !(1024..=60 * 1024).contains(&cfg.frame_max_bytes) {
            return Err(PipelineError::Config(format!(
                "frame_max_bytes must be 1024..=61440, got {}",
                cfg.frame_max_bytes
            )));
        }
        if cfg.key_buckets == 0 || cfg.idle_sleep_max_us == 0 || cfg.idle_sleep_max_us > 1_000_000 {
            return Err(PipelineError::Config(
                "key_buckets must be > 0 and idle_sleep_max_us 1..=1000000".into(),
            ));
        }
        if cfg.replay_window == 0 || cfg.drain_batch == 0 {
            return Err(PipelineError::Config(
                "replay_window and drain_batch must be > 0".into(),
            ));
        }
        let jb = cfg.journal_bytes_per_core;
        if jb != 0
            && (!(journal::MIN_CAPACITY..=journal::MAX_CAPACITY).contains(&jb)
                || !jb.is_multiple_of(4096))
        {
            return Err(PipelineError::Config(format!(
                "journal_bytes_per_core must be 0 or a multiple of 4096 in {}..={}, got {jb}",
                journal::MIN_CAPACITY,
                journal::MAX_CAPACITY
            )));
        }
        producer::validate(cfg)?;
        let counters = Arc::new(Counters::default());
        let (spool, recovered) = Spool::open(
            &cfg.spool_dir,
            cfg.spool_max_bytes,
            cfg.spool_segment_bytes,
            counters.clone(),
        )
        .map_err(|source| PipelineError::Spool {
            dir: cfg.spool_dir.display().to_string(),
            source,
        })?;
        if recovered.segments > 0 {
            tracing::info!(
                segments = recovered.segments,
                bytes = recovered.bytes,
                "pipeline: spool left by a previous run; replaying it"
            );
        }
        // Before any core runs: what a killed predecessor left in its journals goes to the
        // spool (sealed and synced), then each core gets a fresh journal.
        let journal_err = |path: &std::path::Path, source| PipelineError::Journal {
            path: path.display().to_string(),
            source,
        };
        let replayed = journal::recover(
            &cfg.spool_dir,
            &spool,
            &counters,
            cfg.key_buckets,
            cfg.frame_max_bytes,
        )
        .map_err(|e| journal_err(&cfg.spool_dir, e))?;
        if replayed.journals > 0 {
            tracing::info!(
                journals = replayed.journals,
                events = replayed.events,
                torn = replayed.torn,
                "pipeline: journals of a previous run replayed into the spool"
            );
        }
        let mut journals = Vec::new();
        if jb != 0 {
            for core in 0..cores as u16 {
                let path = journal::journal_path(&cfg.spool_dir, core);
                journals.push(
                    journal::JournalMap::create(&path, core, jb)
                        .map_err(|e| journal_err(&path, e))?,
                );
            }
        }
        let topics_ready = if cfg.create_topics {
            match topics::ensure_topics(
                &cfg.brokers,
                &[&cfg.topic_bids, &cfg.topic_outcomes],
                cfg.topic_partitions,
                cfg.topic_replication,
                Duration::from_millis(cfg.startup_timeout_ms),
            ) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "pipeline: broker not ready at start; spooling until it is");
                    false
                }
            }
        } else {
            true
        };
        let freq = match &cfg.redis_url {
            Some(url) => Some(frequency::FreqWorker::start(
                url,
                cfg.redis_ca_pem.as_deref(),
                cfg.freq_queue_capacity,
                cfg.freq_max_attempts,
                cfg.freq_dedupe_ttl_s,
                counters.clone(),
            )?),
            None => None,
        };
        let queues: Vec<Arc<ArrayQueue<Event>>> = (0..cores)
            .map(|_| Arc::new(ArrayQueue::new(cfg.queue_capacity_per_core)))
            .collect();
        let shared = Arc::new(Shared {
            queues: queues.clone(),
            journals: journals.clone(),
            counters: counters.clone(),
            stop: std::sync::atomic::AtomicBool::new(false),
            deadline: std::sync::Mutex::new(None),
            doorbell: Arc::new(wake::Doorbell::default()),
        });
        let sinks = queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                CoreSink::new(
                    i as u16,
                    q,
                    journals.get(i).cloned().map(journal::JournalWriter::new),
                    counters.clone(),
                    spool.clone(),
                    cfg.key_buckets,
                    shared.doorbell.clone(),
                )
            })
            .collect();
        let thread = ProducerThread::new(cfg.clone(), shared.clone(), spool, freq, topics_ready)?;
        let handle = std::thread::Builder::new()
            .name("helios-producer".into())
            .spawn(move || thread.run())
            .map_err(PipelineError::Thread)?;
        Ok((
            Pipeline {
                shared,
                handle: Some(handle),
                capacity: (cfg.queue_capacity_per_core * cores) as u64,
            },
            sinks,
        ))
    }

    /// A snapshot of the counters and the queues' depth.
    pub fn metrics(&self) -> MetricsSnapshot {
        let depth = self.shared.queues.iter().map(|q| q.len() as u64).sum();
        let mut m = MetricsSnapshot::read(&self.shared.counters, depth, self.capacity);
        m.journal_bytes = self.shared.journals.iter().map(|j| j.bytes_in_use()).sum();
        m
    }

    /// Per core: `(core, journal bytes drained and not yet acknowledged, journal capacity)`;
    /// empty when the journal is off.
    pub fn journal_usage(&self) -> Vec<(u16, u64, u64)> {
        self.shared
            .journals
            .iter()
            .map(|j| (j.core(), j.bytes_in_use(), j.capacity()))
            .collect()
    }

    /// Stops the producer thread: drains the queues into Kafka (or the spool), waits up to
    /// `timeout` for the broker's acknowledgements, spools the rest, seals the spool. Drop
    /// the cores' sinks first (a sink's overflow segment is sealed when it is dropped).
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> ShutdownReport {
        if let Ok(mut d) = self.shared.deadline.lock() {
            *d = Some(Instant::now() + timeout);
        }
        self.shared.stop.store(true, Ordering::Release);
        // The producer may be parked until its next frame falls due: wake it now.
        self.shared.doorbell.ring();
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                tracing::error!("pipeline: producer thread panicked");
                ShutdownReport::default()
            }),
            None => ShutdownReport::default(),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.stop(Duration::from_secs(2));
        }
    }
}

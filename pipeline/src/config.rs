//! `config`: every setting of the pipeline, with defaults (TOML/serde in, read once at start-up).
//!
//! Owned by whoever calls [`crate::Pipeline::start`]; copied into the producer and frequency
//! threads at start. Must never be read on the hot path (everything a core needs is resolved
//! into its [`crate::CoreSink`] at start).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Producer tuning (librdkafka settings). Defaults were chosen by measurement, see
/// `bench/RESULTS.md` "Outcome pipeline".
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// `linger.ms`: how long librdkafka waits to fill a batch.
    pub linger_ms: u32,
    /// `batch.size` in bytes (per partition batch).
    pub batch_bytes: u32,
    /// `batch.num.messages`.
    pub batch_messages: u32,
    /// `compression.type`: `lz4`, `zstd`, `snappy`, `gzip` or `none`.
    pub compression: String,
    /// `queue.buffering.max.messages`: the bound of librdkafka's in-memory queue, in Kafka
    /// records (each a frame of up to `frame_max_bytes`). At 90% of it the producer thread
    /// leaves events in the cores' queues (back-pressure); a refused record is spooled.
    pub max_in_flight_messages: u32,
    /// `queue.buffering.max.kbytes`: the same bound in KiB (kept above
    /// `max_in_flight_messages × frame_max_bytes` so that the record count binds first).
    pub max_in_flight_kbytes: u32,
    /// `message.timeout.ms`: a message not acknowledged by then is spooled (and the broker is
    /// considered down until a probe succeeds). Kept long: with Tansu 0.6, a timeout of an
    /// in-flight message on a live broker makes librdkafka bump the producer epoch, which Tansu
    /// does not implement (see docs/EVENTS.md). Broker loss is detected by transport errors,
    /// not by this timeout.
    pub message_timeout_ms: u32,
    /// `socket.timeout.ms` / `request.timeout.ms` (librdkafka requires it below the message timeout).
    pub request_timeout_ms: u32,
    /// `reconnect.backoff.max.ms`: how fast we notice the broker is back.
    pub reconnect_backoff_max_ms: u32,
    /// `enable.idempotence` (on by default). Off: librdkafka's retries may duplicate, which
    /// the reporter removes by event id anyway; never epoch bumps.
    pub idempotence: bool,
    /// Extra librdkafka settings (`key = value`), applied last.
    pub extra: BTreeMap<String, String>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger_ms: 5,
            batch_bytes: 1_000_000,
            batch_messages: 10_000,
            compression: "lz4".into(),
            max_in_flight_messages: 4_096,
            max_in_flight_kbytes: 262_144,
            message_timeout_ms: 30_000,
            request_timeout_ms: 5_000,
            reconnect_backoff_max_ms: 500,
            idempotence: true,
            extra: BTreeMap::new(),
        }
    }
}

/// The whole pipeline configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Kafka bootstrap servers (`host:port,host:port`). Empty: no broker, everything is spooled.
    pub brokers: String,
    /// This node's name (Kafka `client.id` suffix, notice param, event field).
    pub node: String,
    /// Capacity of each core's event queue (events). Full → the event goes to that core's
    /// overflow spool segment.
    pub queue_capacity_per_core: usize,
    /// Directory of the disk spool (created if missing).
    pub spool_dir: PathBuf,
    /// Bound on the spool's total bytes on disk. At the bound new events are dropped, counted
    /// (`dropped_spool_full`) and logged; events already spooled are kept.
    pub spool_max_bytes: u64,
    /// A spool segment is sealed (and becomes replayable) at this size.
    pub spool_segment_bytes: u64,
    /// `fdatasync` the producer's spool segment at most this often (ms); 0 = on seal only.
    pub spool_sync_interval_ms: u64,
    /// Bytes of each core's write-ahead journal (`<spool_dir>/journal-c<N>.wal`, memory-mapped,
    /// allocated and pre-faulted at start; a multiple of 4096, 64 KiB–4 GiB), or 0 for none.
    /// Every event is in it before `emit` returns, until the producer has it acknowledged by
    /// Kafka or written to the spool, so a killed process loses no emitted event (the page cache
    /// outlives the process; a power loss is not covered). When it is full (the broker
    /// acknowledges slower than the cores emit) events go to the core's overflow spool segment,
    /// counted in `journal_full`. Size it for the unacknowledged window: events/s per core ×
    /// ≈ 170 bytes × acknowledgement latency (frame linger + broker).
    pub journal_bytes_per_core: u64,
    /// Topic of bid and no-bid events.
    pub topic_bids: String,
    /// Topic of win, billing, loss and click events.
    pub topic_outcomes: String,
    /// Partitions of each topic when the pipeline creates it (existing topics are left alone).
    pub topic_partitions: i32,
    /// Replication factor for created topics.
    pub topic_replication: i32,
    /// Create missing topics at start-up (admin client).
    pub create_topics: bool,
    /// How long start-up waits for the broker (topic creation) before starting in spool mode.
    pub startup_timeout_ms: u64,
    /// While the broker is up, at most this many spooled records are in flight at once.
    pub replay_window: usize,
    /// While the broker is down, probe it every this many ms by replaying one spooled record.
    pub probe_interval_ms: u64,
    /// Largest number of events the producer thread takes from one core's queue per turn
    /// (fairness between cores).
    pub drain_batch: usize,
    /// Largest Kafka record (a frame of compact events, see `docs/EVENTS.md`), in bytes:
    /// 1 KiB–60 KiB. A frame is sent when the next event would not fit.
    pub frame_max_bytes: usize,
    /// Most events in one frame (1 = one event per Kafka record, as schema 1 had; for
    /// comparison — the byte bound is what normally closes a frame).
    pub frame_max_events: u16,
    /// A frame that is not full is sent at the latest this long after its first event (ms).
    /// Bounds how long an event waits on the producer thread before librdkafka has it.
    pub frame_linger_ms: u64,
    /// Events are framed per topic and per key bucket (`fnv1a(campaign id or request id) %
    /// key_buckets`); the bucket is the record's key (`b0`…), so one campaign's events always
    /// land on one partition. More buckets spread better over partitions, fewer make fuller
    /// frames at low rates.
    pub key_buckets: u16,
    /// Longest park of the producer thread between turns (µs). It parks until its next frame
    /// falls due and at most this long; a core whose queue passes a quarter of its capacity
    /// wakes it early. 5 ms by default: with 100 ms (one wake-up per frame linger) the producer
    /// throughput bench fell from ≈ 530k to ≈ 55k events/s (the fill-mark wake-up did not keep
    /// it draining; not understood yet, bench/RESULTS.md "Outcome pipeline" session 3).
    pub idle_sleep_max_us: u64,
    /// Redis URL for the frequency-counter worker; `None` disables it.
    pub redis_url: Option<String>,
    /// PEM of the CA(s) that verify a `rediss://` frequency Redis; `None` = the system's trust
    /// store. Ignored for `redis://`.
    #[serde(skip)]
    pub redis_ca_pem: Option<Vec<u8>>,
    /// Bound of the frequency worker's queue (increments). Full → counted `freq_dropped`.
    pub freq_queue_capacity: usize,
    /// Attempts per Redis batch before its increments are counted `freq_failed`.
    pub freq_max_attempts: u32,
    /// Seconds a billing event id is remembered in Redis so a repeated billing notice counts
    /// once towards frequency caps.
    pub freq_dedupe_ttl_s: u64,
    /// librdkafka producer settings.
    pub producer: ProducerConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            brokers: "127.0.0.1:9092".into(),
            node: "node-1".into(),
            queue_capacity_per_core: 16_384,
            spool_dir: PathBuf::from("/var/cache/helios/spool"),
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 8 << 20,
            spool_sync_interval_ms: 1_000,
            journal_bytes_per_core: 16 << 20,
            topic_bids: codec::event::TOPIC_BIDS.into(),
            topic_outcomes: codec::event::TOPIC_OUTCOMES.into(),
            topic_partitions: 6,
            topic_replication: 1,
            create_topics: true,
            startup_timeout_ms: 5_000,
            replay_window: 50_000,
            probe_interval_ms: 1_000,
            drain_batch: 4_096,
            frame_max_bytes: 32 * 1024,
            frame_max_events: u16::MAX,
            frame_linger_ms: 100,
            key_buckets: 6,
            idle_sleep_max_us: 5_000,
            redis_url: None,
            redis_ca_pem: None,
            freq_queue_capacity: 65_536,
            freq_max_attempts: 5,
            freq_dedupe_ttl_s: 7 * 24 * 3600,
            producer: ProducerConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_toml() {
        let c: PipelineConfig = toml::from_str(
            r#"
            brokers = "10.0.0.1:9092"
            spool_max_bytes = 1000
            [producer]
            compression = "zstd"
            "#,
        )
        .unwrap();
        assert_eq!(c.brokers, "10.0.0.1:9092");
        assert_eq!(c.spool_max_bytes, 1000);
        assert_eq!(c.producer.compression, "zstd");
        assert_eq!(c.producer.linger_ms, ProducerConfig::default().linger_ms);
        assert_eq!(c.queue_capacity_per_core, 16_384);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<PipelineConfig>("brokerz = \"x\"").is_err());
    }
}

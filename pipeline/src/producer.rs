//! `producer`: the producer thread — drains every core's queue into Kafka, spools what cannot
//! reach the broker, and replays the spool when it can.
//!
//! Owns (on its own thread, nothing shared but the queues and the counters): the rdkafka
//! `BaseProducer` (idempotent, `acks=all`, compressed, batched), the producer's spool writer,
//! the replay state of sealed spool segments, and the feed of the frequency worker.
//!
//! States: *up* — live events go to Kafka, sealed segments are replayed (at most
//! `replay_window` records in flight; order is kept within the spool, not between spool and live
//! events); *down* (entered on any failed delivery or librdkafka's "all brokers down") — live
//! events go straight to the spool, and every `probe_interval_ms` one spooled record is sent as
//! a probe; its acknowledgement brings the state back to up. A record leaves the spool only when
//! the broker acknowledged it or it was written again to a newer segment, so a crash at any
//! point can duplicate (counted once downstream by event id) but never lose a spooled event.
//!
//! Records: live events are packed into frames ([`crate::framing`]: per topic and key bucket,
//! up to `frame_max_bytes`, sent when full or `frame_linger_ms` after their first event), so
//! librdkafka's per-message cost is paid per frame, not per event. A frame is one Kafka record
//! and, when it cannot reach the broker, one spool record; counters count events.
//!
//! Idle: when a turn drains less than a full batch, the thread parks until the next frame falls
//! due (open frames share the oldest one's deadline, see [`crate::framing`]), at most
//! `idle_sleep_max_us` (default 5 ms); a core whose queue passes its fill mark
//! rings the [`crate::wake::Doorbell`] and ends the wait. A frame's clock starts at the
//! producer's previous look at the queues — when its first event may have been queued at the
//! earliest — so `frame_linger_ms` bounds an event's whole wait (queue and frame) before
//! librdkafka has it. With `idle_sleep_max_us` at the linger the thread would wake about once
//! per linger at a steady rate (not the default: it cut peak throughput tenfold, see
//! bench/RESULTS.md "Outcome pipeline"); each wake-up of a helper thread costs the event loop
//! sharing its CPU more than the helper's own work.
//!
//! Must never: make a core wait (the queues are the only contact), block for long on the broker
//! (every rdkafka call here is non-blocking except the bounded flush at shutdown), or delete a
//! segment with unsettled records.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codec::event::Event;
use crossbeam_queue::ArrayQueue;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::config::PipelineConfig;
use crate::framing::Frames;
use crate::frequency::{FreqIncrement, FreqWorker};
use crate::journal::{self, Acks, JournalMap};
use crate::metrics::Counters;
use crate::spool::{
    MAGIC, Next, Spool, SpoolError, SpoolWriter, TOPIC_BIDS, TOPIC_OUTCOMES, next_record,
    read_segment, topic_index,
};

/// Delivery opaque: `segment id << OPAQUE_SHIFT | events in the record`; spool records carry
/// their segment's id (≥ 1), live frames [`journal::live_segment`] (a tag and their journal
/// token).
const OPAQUE_SHIFT: u32 = 20;
const OPAQUE_EVENTS: usize = (1 << OPAQUE_SHIFT) - 1;

fn opaque(segment: usize, events: usize) -> usize {
    debug_assert!(events <= OPAQUE_EVENTS);
    (segment << OPAQUE_SHIFT) | events.min(OPAQUE_EVENTS)
}
/// Segments held in memory for replay at once (each ≤ `spool_segment_bytes`).
const MAX_LOADED_SEGMENTS: usize = 4;

/// State shared between the pipeline handle, the cores' sinks and the producer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub queues: Vec<Arc<ArrayQueue<Event>>>,
    /// Each core's journal (empty when `journal_bytes_per_core` is 0).
    pub journals: Vec<Arc<JournalMap>>,
    pub counters: Arc<Counters>,
    pub stop: AtomicBool,
    /// Deadline of the shutdown, set before `stop`.
    pub deadline: Mutex<Option<Instant>>,
    /// Wakes the producer thread from its park (a core's fill mark, the shutdown).
    pub doorbell: Arc<crate::wake::Doorbell>,
}

/// What [`crate::Pipeline::shutdown`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events acknowledged by the broker during the whole run.
    pub produced: u64,
    /// Records written to the spool during the whole run.
    pub spooled: u64,
    /// Bytes left in the spool for the next start to replay.
    pub spool_bytes_left: u64,
    /// Events lost (spool full or I/O error), all logged.
    pub dropped: u64,
    /// Events still in a core's queue when the deadline passed (a core kept emitting).
    pub left_in_queues: u64,
    /// Whether everything drained reached the broker or the spool before the deadline.
    pub clean: bool,
}

/// Topic index, key, payload and error of a failed delivery (to spool again).
type Failed = (u8, Vec<u8>, Vec<u8>, KafkaError);

struct Report {
    /// Segment id (0: live).
    segment: usize,
    /// Events in the record.
    events: u64,
    failed: Option<Failed>,
}

struct Ctx {
    counters: Arc<Counters>,
    /// Configured topic names, by spool topic index.
    topics: [String; 2],
    reports: Mutex<Vec<Report>>,
    /// Set on transport failures / "all brokers down"; the producer thread then checks
    /// whether the broker still listens.
    all_down: AtomicBool,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        Counters::add(&self.counters.kafka_errors, 1);
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.all_down.store(true, Ordering::Relaxed);
        }
        tracing::warn!(error = %error, reason, "pipeline: kafka client error");
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let failed = match result {
            Ok(_) => None,
            Err((e, m)) => Some((
                if m.topic() == self.topics[TOPIC_BIDS as usize] {
                    TOPIC_BIDS
                } else {
                    TOPIC_OUTCOMES
                },
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                e.clone(),
            )),
        };
        // Only the producer thread polls, so this lock is never contended.
        if let Ok(mut r) = self.reports.lock() {
            r.push(Report {
                segment: opaque >> OPAQUE_SHIFT,
                events: (opaque & OPAQUE_EVENTS) as u64,
                failed,
            });
        }
    }
}

fn client_config(cfg: &PipelineConfig) -> ClientConfig {
    let p = &cfg.producer;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", format!("helios-{}", cfg.node))
        .set("enable.idempotence", p.idempotence.to_string())
        .set("acks", "all")
        .set("compression.type", &p.compression)
        .set("linger.ms", p.linger_ms.to_string())
        .set("batch.size", p.batch_bytes.to_string())
        .set("batch.num.messages", p.batch_messages.to_string())
        .set(
            "queue.buffering.max.messages",
            p.max_in_flight_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            p.max_in_flight_kbytes.to_string(),
        )
        .set("message.timeout.ms", p.message_timeout_ms.to_string())
        .set("request.timeout.ms", p.request_timeout_ms.to_string())
        .set("socket.timeout.ms", p.request_timeout_ms.to_string())
        .set("reconnect.backoff.ms", "50")
        .set(
            "reconnect.backoff.max.ms",
            p.reconnect_backoff_max_ms.to_string(),
        );
    for (k, v) in &p.extra {
        c.set(k, v);
    }
    c
}

fn new_producer(
    cfg: &PipelineConfig,
    counters: &Arc<Counters>,
) -> Result<BaseProducer<Ctx>, KafkaError> {
    client_config(cfg).create_with_context(Ctx {
        counters: counters.clone(),
        topics: [cfg.topic_bids.clone(), cfg.topic_outcomes.clone()],
        reports: Mutex::new(Vec::with_capacity(1024)),
        all_down: AtomicBool::new(false),
    })
}

/// Checks the producer settings by building a client (no connection is made).
pub(crate) fn validate(cfg: &PipelineConfig) -> Result<(), KafkaError> {
    let counters = Arc::new(Counters::default());
    new_producer(cfg, &counters).map(drop)
}

/// Appends one record (topic, key, payload) of `events` events to `writer`, counting a refusal
/// as `events` dropped (and logging it).
fn spool_into(writer: &mut SpoolWriter, counters: &Counters, rec: (u8, &[u8], &[u8]), events: u64) {
    let (topic, key, payload) = rec;
    match writer.append(topic, key, payload) {
        Ok(()) => {}
        Err(SpoolError::Full { max }) => {
            let n = counters
                .dropped_spool_full
                .fetch_add(events, Ordering::Relaxed)
                + events;
            // Log when the count crosses a power of two: visible without flooding the log.
            let prev = n - events;
            if prev == 0 || prev.ilog2() != n.ilog2() {
                tracing::error!(
                    dropped = n,
                    spool_max_bytes = max,
                    "pipeline: spool at its bound; new events dropped (counted), spooled events kept"
                );
            }
        }
        Err(e) => {
            Counters::add(&counters.dropped_io, events);
            tracing::error!(error = %e, events, "pipeline: spool write failed; events dropped");
        }
    }
}

struct ReplaySegment {
    id: usize,
    path: PathBuf,
    bytes: u64,
    data: Vec<u8>,
    pos: usize,
    done_reading: bool,
    sent: u64,
    settled: u64,
}

pub(crate) struct ProducerThread {
    cfg: PipelineConfig,
    producer: BaseProducer<Ctx>,
    shared: Arc<Shared>,
    spool: Arc<Spool>,
    writer: SpoolWriter,
    freq: Option<FreqWorker>,
    up: bool,
    topics_ready: bool,
    next_probe: Instant,
    last_sync: Instant,
    last_scan: Instant,
    last_fatal_check: Instant,
    scan_needed: bool,
    pending: VecDeque<PathBuf>,
    loaded: VecDeque<ReplaySegment>,
    loaded_names: HashSet<OsString>,
    next_seg_id: usize,
    replay_inflight: usize,
    frames: Frames,
    /// Which journal records are settled; publishes each core's acknowledged position.
    acks: Acks,
    /// When the previous turn looked at the queues: the clock of frames opened in this turn
    /// (their first event may have been queued any time since).
    looked_at: Instant,
    /// Increments were pushed to the frequency worker this turn (wake it once at the end).
    freq_pushed: bool,
    reports: Vec<Report>,
    respooled_since_sync: bool,
    /// Set at the shutdown deadline: what is still in the queues goes to the spool.
    spool_only: bool,
}

impl ProducerThread {
    pub(crate) fn new(
        cfg: PipelineConfig,
        shared: Arc<Shared>,
        spool: Arc<Spool>,
        freq: Option<FreqWorker>,
        topics_ready: bool,
    ) -> Result<ProducerThread, KafkaError> {
        let producer = new_producer(&cfg, &shared.counters)?;
        let writer = SpoolWriter::new(spool.clone(), "p");
        let frames = Frames::new(
            cfg.key_buckets,
            cfg.frame_max_bytes,
            cfg.frame_max_events,
            Duration::from_millis(cfg.frame_linger_ms),
        );
        let acks = Acks::new(shared.journals.clone(), frames.open.len());
        let now = Instant::now();
        shared
            .counters
            .broker_up
            .store(topics_ready, Ordering::Relaxed);
        Ok(ProducerThread {
            cfg,
            producer,
            shared,
            spool,
            writer,
            freq,
            up: topics_ready,
            topics_ready,
            next_probe: now,
            last_sync: now,
            last_scan: now,
            last_fatal_check: now,
            scan_needed: true,
            pending: VecDeque::new(),
            loaded: VecDeque::new(),
            loaded_names: HashSet::new(),
            next_seg_id: 1,
            replay_inflight: 0,
            frames,
            acks,
            looked_at: now,
            freq_pushed: false,
            reports: Vec::with_capacity(1024),
            respooled_since_sync: false,
            spool_only: false,
        })
    }

    pub(crate) fn run(mut self) -> ShutdownReport {
        self.shared.doorbell.register_current();
        let max_sleep = Duration::from_micros(self.cfg.idle_sleep_max_us);
        let min_sleep = (max_sleep / 20).clamp(Duration::from_micros(50), Duration::from_millis(1));
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            let (drained, saturated, held_back) = self.drain_queues();
            self.flush_frames(Instant::now(), stopping);
            self.producer.poll(Duration::ZERO);
            self.process_reports();
            self.check_health();
            if !stopping {
                self.replay_step();
            }
            self.housekeeping();
            if stopping
                && ((drained == 0 && self.queues_empty() && self.frames.events() == 0)
                    || self.past_deadline())
            {
                break;
            }
            if saturated {
                // A queue had more than a batch: go round again at once.
                continue;
            }
            // Light turn: park until the next frame falls due, at most `max_sleep`, or until a
            // core rings the doorbell (its queue passed the fill mark). Look again soon while
            // held back by librdkafka's full queue (its delivery reports, served by `poll`, are
            // what frees it), while replaying the spool (acknowledgements refill the replay
            // window) and while stopping. (Not `poll(timeout)`: rdkafka hands librdkafka whole
            // milliseconds, so a sub-millisecond wait there is a busy loop.)
            let replaying = self.up && !(self.loaded.is_empty() && self.pending.is_empty());
            let mut d = if held_back || replaying || stopping {
                min_sleep
            } else {
                max_sleep
            };
            if let Some(due) = self.frames.next_due() {
                d = d.min(due.saturating_duration_since(Instant::now()));
            }
            if !d.is_zero() {
                self.shared.doorbell.wait(d);
            }
        }
        self.finish()
    }

    /// Waits `d` (sleeping, see the idle note in `run`) and serves delivery reports.
    fn wait_reports(&self, d: Duration) {
        std::thread::sleep(d);
        self.producer.poll(Duration::ZERO);
    }

    fn queues_empty(&self) -> bool {
        self.shared.queues.iter().all(|q| q.is_empty())
    }

    fn past_deadline(&self) -> bool {
        match self.shared.deadline.lock().ok().and_then(|d| *d) {
            Some(d) => Instant::now() >= d,
            None => false,
        }
    }

    fn deadline(&self) -> Instant {
        self.shared
            .deadline
            .lock()
            .ok()
            .and_then(|d| *d)
            .unwrap_or_else(Instant::now)
    }

    /// Takes up to `drain_batch` events from each core's queue, round robin.
    ///
    /// Backpressure: while librdkafka's queue is 90% full (the broker is slower than the
    /// cores), events stay in the cores' queues, which are the buffer; only when a core's queue
    /// is full does that core spill to its spool segment. So a slow broker costs disk writes
    /// only at saturation.
    /// Returns the events taken, whether some queue still had more than a batch, and whether
    /// draining stopped at librdkafka's high-water mark.
    fn drain_queues(&mut self) -> (usize, bool, bool) {
        // Frames opened by this turn's events start their clock at the previous look.
        let now = Instant::now();
        let look = std::mem::replace(&mut self.looked_at, now);
        let mut total = 0;
        let mut saturated = false;
        let mut held_back = false;
        let high_water = (self.cfg.producer.max_in_flight_messages as u64 * 9 / 10).max(1);
        for qi in 0..self.shared.queues.len() {
            let q = self.shared.queues[qi].clone();
            let mut n = 0;
            while n < self.cfg.drain_batch {
                if self.up
                    && !self.spool_only
                    && n % 64 == 0
                    && self.producer.in_flight_count().max(0) as u64 >= high_water
                {
                    held_back = true;
                    break;
                }
                let Some(ev) = q.pop() else { break };
                self.handle_live(qi, &ev, look);
                n += 1;
            }
            saturated |= n == self.cfg.drain_batch;
            total += n;
        }
        Counters::add(&self.shared.counters.drained, total as u64);
        if self.freq_pushed {
            self.freq_pushed = false;
            if let Some(f) = &self.freq {
                f.wake();
            }
        }
        (total, saturated, held_back)
    }

    /// Puts one drained event into its frame (sending the frame first when it is full); a frame
    /// it opens starts its linger at `since`.
    fn handle_live(&mut self, core: usize, ev: &Event, since: Instant) {
        if let (Some(f), Some(inc)) = (&self.freq, FreqIncrement::from_event(ev)) {
            f.push(inc);
            self.freq_pushed = true;
        }
        let i = self.frames.index(topic_index(ev.kind), ev);
        let mut before = self.frames.open[i].buf.len();
        if !self.frames.open[i].buf.push(ev) {
            self.flush_frame(i);
            before = self.frames.open[i].buf.len();
            let pushed = self.frames.open[i].buf.push(ev);
            // An empty frame holds any event (FrameBuf sizes itself for the largest).
            debug_assert!(pushed);
        }
        // The event's compact size is what the frame grew by (its journal record's size).
        let body = self.frames.open[i].buf.len() - before - codec::event::frame::ENTRY_HEADER;
        self.acks.event(i, core, body);
        let f = &mut self.frames.open[i];
        if f.since.is_none() {
            f.since = Some(since);
        }
    }

    /// Sends the frames that are due (or every open frame when `all`).
    fn flush_frames(&mut self, now: Instant, all: bool) {
        let all = all || self.spool_only;
        let mut due = [0usize; 64];
        loop {
            let mut n = 0;
            for i in self.frames.due(now, all) {
                due[n] = i;
                n += 1;
                if n == due.len() {
                    break;
                }
            }
            for &i in &due[..n] {
                self.flush_frame(i);
            }
            if n < due.len() {
                break;
            }
        }
    }

    /// Sends frame `i` to Kafka (or to the spool when the broker is away or refuses it) and
    /// empties it.
    fn flush_frame(&mut self, i: usize) {
        let f = &self.frames.open[i];
        if f.buf.is_empty() {
            return;
        }
        let events = f.buf.count();
        let (ti, key) = (f.topic, f.key);
        let token = self.acks.take(i);
        if self.up && !self.spool_only {
            let topic = if ti == TOPIC_BIDS {
                &self.cfg.topic_bids
            } else {
                &self.cfg.topic_outcomes
            };
            let rec =
                BaseRecord::with_opaque_to(topic, opaque(journal::live_segment(token), events))
                    .key(key.as_bytes())
                    .payload(f.buf.as_bytes());
            if let Err((e, _)) = self.producer.send(rec) {
                if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                    Counters::add(&self.shared.counters.delivery_errors, 1);
                    tracing::warn!(error = %e, "pipeline: produce refused; spooling");
                }
                spool_into(
                    &mut self.writer,
                    &self.shared.counters,
                    (ti, key.as_bytes(), self.frames.open[i].buf.as_bytes()),
                    events as u64,
                );
                self.acks.spooled(token);
            }
        } else {
            spool_into(
                &mut self.writer,
                &self.shared.counters,
                (ti, key.as_bytes(), self.frames.open[i].buf.as_bytes()),
                events as u64,
            );
            self.acks.spooled(token);
        }
        let f = &mut self.frames.open[i];
        f.buf.clear();
        f.since = None;
    }

    /// Appends one record (`events` events) to the producer's spool segment.
    fn spool_record(&mut self, topic: u8, key: &[u8], payload: &[u8], events: u64) {
        spool_into(
            &mut self.writer,
            &self.shared.counters,
            (topic, key, payload),
            events,
        );
    }

    /// Enters the down state: everything librdkafka holds is purged (and spooled by its
    /// delivery reports) and the producer is replaced by a fresh one. A producer that lived
    /// through an outage would bump its epoch (KIP-360) when the broker returns, which Tansu
    /// 0.6 does not implement (its storage task panics and the broker stops accepting
    /// produce requests): a fresh producer asks for a new producer id instead.
    fn set_down(&mut self, why: &str) {
        if self.up {
            self.up = false;
            self.shared
                .counters
                .broker_up
                .store(false, Ordering::Relaxed);
            self.next_probe = Instant::now() + Duration::from_millis(self.cfg.probe_interval_ms);
            tracing::warn!(why, "pipeline: broker unreachable; spooling events to disk");
            self.recreate_producer();
        }
    }

    fn set_up(&mut self) {
        if !self.up {
            self.up = true;
            self.shared
                .counters
                .broker_up
                .store(true, Ordering::Relaxed);
            if let Err(e) = self.writer.seal() {
                tracing::error!(error = %e, "pipeline: sealing the spool segment failed");
            }
            self.scan_needed = true;
            tracing::info!(
                spool_bytes = self.shared.counters.spool_bytes.load(Ordering::Relaxed),
                "pipeline: broker reachable; replaying the spool"
            );
        }
    }

    fn process_reports(&mut self) {
        {
            let Ok(mut r) = self.producer.context().reports.lock() else {
                return;
            };
            std::mem::swap(&mut *r, &mut self.reports);
        }
        if self.reports.is_empty() {
            return;
        }
        let mut reports = std::mem::take(&mut self.reports);
        let c = self.shared.counters.clone();
        let mut ok_live = 0;
        let mut ok_replayed = 0;
        for r in reports.drain(..) {
            let live = journal::live_token(r.segment);
            if live.is_none() {
                self.replay_inflight = self.replay_inflight.saturating_sub(1);
                if let Some(seg) = self.loaded.iter_mut().find(|s| s.id == r.segment) {
                    seg.settled += 1;
                }
            }
            match r.failed {
                None => match live {
                    Some(token) => {
                        ok_live += r.events;
                        self.acks.settle(token);
                    }
                    None => ok_replayed += r.events,
                },
                Some((topic, key, payload, err)) => {
                    Counters::add(&c.delivery_errors, 1);
                    if live.is_none() {
                        self.respooled_since_sync = true;
                    }
                    self.spool_record(topic, &key, &payload, r.events);
                    if let Some(token) = live {
                        self.acks.spooled(token);
                    }
                    self.set_down(&err.to_string());
                }
            }
        }
        self.reports = reports;
        Counters::add(&c.produced, ok_live + ok_replayed);
        Counters::add(&c.replayed, ok_replayed);
        self.retire_segments();
    }

    /// Deletes loaded segments whose every record is settled.
    fn retire_segments(&mut self) {
        if !self
            .loaded
            .iter()
            .any(|s| s.done_reading && s.settled >= s.sent)
        {
            return;
        }
        // Records written again must be on disk before the segment holding them goes.
        let flushed = if self.respooled_since_sync {
            self.writer.sync()
        } else {
            self.writer.flush()
        };
        if let Err(e) = flushed {
            tracing::error!(error = %e, "pipeline: spool flush failed; keeping replayed segments");
            return;
        }
        self.respooled_since_sync = false;
        let mut i = 0;
        while i < self.loaded.len() {
            let s = &self.loaded[i];
            if s.done_reading && s.settled >= s.sent {
                let s = self.loaded.remove(i).expect("index checked above");
                if let Err(e) = self.spool.delete_segment(&s.path, s.bytes) {
                    tracing::error!(segment = %s.path.display(), error = %e, "pipeline: could not delete a replayed segment");
                }
                if let Some(name) = s.path.file_name() {
                    self.loaded_names.remove(name);
                }
            } else {
                i += 1;
            }
        }
    }

    fn check_health(&mut self) {
        if self.up
            && self
                .producer
                .context()
                .all_down
                .swap(false, Ordering::Relaxed)
            && !self.broker_listening()
        {
            // A dropped connection to a listening broker is librdkafka's to retry; a broker
            // that refuses connections is an outage.
            self.set_down("broker not listening");
        }
        let now = Instant::now();
        if now.duration_since(self.last_fatal_check) >= Duration::from_millis(100) {
            self.last_fatal_check = now;
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                tracing::error!(
                    ?code,
                    reason,
                    "pipeline: producer fatal error; recreating the producer"
                );
                self.recreate_producer();
            }
        }
        if !self.up && now >= self.next_probe {
            self.next_probe = now + Duration::from_millis(self.cfg.probe_interval_ms);
            if !self.broker_listening() {
                return;
            }
            if !self.topics_ready {
                let t = Duration::from_millis(self.cfg.probe_interval_ms.clamp(100, 1000));
                match crate::topics::ensure_topics(
                    &self.cfg.brokers,
                    &[&self.cfg.topic_bids, &self.cfg.topic_outcomes],
                    self.cfg.topic_partitions,
                    self.cfg.topic_replication,
                    t,
                ) {
                    Ok(()) => self.topics_ready = true,
                    Err(e) => {
                        tracing::debug!(error = %e, "pipeline: topics not ready yet");
                        return;
                    }
                }
            }
            self.set_up();
        }
    }

    /// The probe of the down state: can a TCP connection be opened to a bootstrap broker?
    /// (Bounded: 200 ms per address; nothing is sent, so no producer state is involved.)
    fn broker_listening(&self) -> bool {
        use std::net::{TcpStream, ToSocketAddrs};
        self.cfg
            .brokers
            .split(',')
            .filter_map(|b| b.trim().to_socket_addrs().ok())
            .flatten()
            .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
    }

    /// Purges what librdkafka holds (its delivery reports spool it), then replaces the
    /// producer. Replayed records the old producer never reported on stay in their segment,
    /// which is read again (duplicates collapse downstream by event id).
    fn recreate_producer(&mut self) {
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            self.wait_reports(Duration::from_millis(10));
            self.process_reports();
            if self.producer.in_flight_count() == 0 || Instant::now() >= deadline {
                break;
            }
        }
        match new_producer(&self.cfg, &self.shared.counters) {
            Ok(p) => {
                let left = self.producer.in_flight_count();
                if left > 0 {
                    tracing::warn!(
                        left,
                        "pipeline: old producer still held messages after purge"
                    );
                }
                self.producer = p;
                self.replay_inflight = 0;
                let loaded = std::mem::take(&mut self.loaded);
                for s in loaded {
                    if s.settled < s.sent {
                        if let Some(n) = s.path.file_name() {
                            self.loaded_names.remove(n);
                        }
                    } else {
                        self.loaded.push_back(s);
                    }
                }
                self.scan_needed = true;
            }
            Err(e) => tracing::error!(error = %e, "pipeline: could not recreate the producer"),
        }
    }

    fn scan_segments(&mut self) {
        let now = Instant::now();
        if !self.scan_needed && now.duration_since(self.last_scan) < Duration::from_secs(1) {
            return;
        }
        self.scan_needed = false;
        self.last_scan = now;
        match self.spool.sealed_segments() {
            Ok(segs) => {
                self.pending = segs
                    .into_iter()
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| !self.loaded_names.contains(n))
                    })
                    .collect();
            }
            Err(e) => tracing::error!(error = %e, "pipeline: cannot list the spool"),
        }
    }

    fn load_next_segment(&mut self) -> bool {
        while let Some(path) = self.pending.pop_front() {
            match read_segment(&path) {
                Ok(data) => {
                    let id = self.next_seg_id;
                    self.next_seg_id += 1;
                    if let Some(n) = path.file_name() {
                        self.loaded_names.insert(n.to_owned());
                    }
                    tracing::info!(segment = %path.display(), bytes = data.len(), "pipeline: replaying spool segment");
                    self.loaded.push_back(ReplaySegment {
                        id,
                        path,
                        bytes: data.len() as u64,
                        data,
                        pos: MAGIC.len(),
                        done_reading: false,
                        sent: 0,
                        settled: 0,
                    });
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    Counters::add(&self.shared.counters.spool_corrupt, 1);
                    tracing::error!(segment = %path.display(), error = %e, "pipeline: unreadable spool segment; moved aside as .bad");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        false
    }

    fn replay_step(&mut self) {
        if !self.up {
            return;
        }
        let room = self.cfg.replay_window.saturating_sub(self.replay_inflight);
        if room > 0 {
            self.replay_records(room);
        }
    }

    /// Sends up to `n` spooled records, oldest segment first.
    fn replay_records(&mut self, mut n: usize) {
        while n > 0 {
            // The segment being read: the last loaded one, if not fully read.
            let reading = self.loaded.back().is_some_and(|s| !s.done_reading);
            if !reading {
                if self.loaded.len() >= MAX_LOADED_SEGMENTS {
                    return;
                }
                if self.pending.is_empty() {
                    self.scan_segments();
                }
                if !self.load_next_segment() {
                    return;
                }
            }
            let seg = self.loaded.back_mut().expect("a segment is loaded here");
            let mut pos = seg.pos;
            match next_record(&seg.data, &mut pos) {
                Next::Record(r) => {
                    let topic = if r.topic == TOPIC_BIDS {
                        &self.cfg.topic_bids
                    } else {
                        &self.cfg.topic_outcomes
                    };
                    let events = codec::event::frame::record_event_count(r.payload).unwrap_or(1);
                    let rec = BaseRecord::with_opaque_to(topic, opaque(seg.id, events))
                        .key(r.key)
                        .payload(r.payload);
                    match self.producer.send(rec) {
                        Ok(()) => {
                            seg.pos = pos;
                            seg.sent += 1;
                            self.replay_inflight += 1;
                            n -= 1;
                        }
                        Err(_) => return, // librdkafka's queue is full: next turn.
                    }
                }
                Next::End => seg.done_reading = true,
                Next::Corrupt { offset } => {
                    seg.done_reading = true;
                    Counters::add(&self.shared.counters.spool_corrupt, 1);
                    tracing::error!(segment = %seg.path.display(), offset, "pipeline: torn or corrupt spool record; rest of the segment skipped");
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        match self.writer.flush() {
            // Spooled frames are in the page cache now: their journal records are settled.
            Ok(()) => self.acks.spool_flushed(),
            Err(e) => tracing::error!(error = %e, "pipeline: spool flush failed"),
        }
        let iv = match self.cfg.spool_sync_interval_ms {
            0 => 1_000,
            v => v,
        };
        if self.last_sync.elapsed() >= Duration::from_millis(iv) {
            self.last_sync = Instant::now();
            let res = if self.up && self.writer.pending_records() > 0 {
                // Records spooled while up (librdkafka's queue was full, or a delivery failed
                // and the broker came back): seal them so the replay picks them up now.
                self.scan_needed = true;
                self.writer.seal()
            } else if self.cfg.spool_sync_interval_ms > 0 {
                self.writer.sync()
            } else {
                Ok(())
            };
            if let Err(e) = res {
                tracing::error!(error = %e, "pipeline: spool sync failed");
            }
        }
        self.retire_segments();
        self.acks.publish();
    }

    fn finish(mut self) -> ShutdownReport {
        let deadline = self.deadline();
        // Past the deadline with events still queued (a slow broker): spool them. Bounded by
        // the queues' capacity so a core that keeps emitting cannot hold the shutdown.
        self.spool_only = true;
        let bound: usize = self.shared.queues.iter().map(|q| q.capacity()).sum();
        let mut spooled = 0;
        while spooled < bound {
            let (n, _, _) = self.drain_queues();
            if n == 0 {
                break;
            }
            spooled += n;
        }
        self.flush_frames(Instant::now(), true);
        // Deliver what is in librdkafka's queue, bounded by the deadline.
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline && self.up {
            self.wait_reports(Duration::from_millis(10));
            self.process_reports();
            self.check_health();
        }
        let in_flight = self.producer.in_flight_count();
        if in_flight > 0 {
            tracing::warn!(
                in_flight,
                "pipeline: shutdown deadline; spooling what the broker did not acknowledge"
            );
            self.producer
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        }
        let settle = Instant::now() + Duration::from_secs(2);
        while self.producer.in_flight_count() > 0 && Instant::now() < settle {
            self.wait_reports(Duration::from_millis(10));
            self.process_reports();
        }
        self.producer.poll(Duration::ZERO);
        self.process_reports();
        match self.writer.seal() {
            Ok(()) => self.acks.spool_flushed(),
            Err(e) => {
                tracing::error!(error = %e, "pipeline: sealing the spool at shutdown failed")
            }
        }
        self.acks.publish();
        if let Some(mut f) = self.freq.take() {
            f.shutdown(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(200)),
            );
        }
        let left_in_queues: u64 = self.shared.queues.iter().map(|q| q.len() as u64).sum();
        let c = &self.shared.counters;
        let report = ShutdownReport {
            produced: c.produced.load(Ordering::Relaxed),
            spooled: c.spooled.load(Ordering::Relaxed),
            spool_bytes_left: c.spool_bytes.load(Ordering::Relaxed),
            dropped: c.dropped_spool_full.load(Ordering::Relaxed)
                + c.dropped_io.load(Ordering::Relaxed),
            left_in_queues,
            clean: in_flight == 0 && left_in_queues == 0,
        };
        tracing::info!(?report, "pipeline: producer stopped");
        report
    }
}

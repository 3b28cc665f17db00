//! `sink`: a bidding core's end of the pipeline.
//!
//! Owns [`CoreSink`], one per core, moved to and owned by that core's thread. The core pushes
//! events into its own bounded lock-free queue (`crossbeam_queue::ArrayQueue`, single producer:
//! this core; single consumer: the producer thread). Must never block on Kafka, allocate, or
//! drop an event uncounted: when the queue is full the event is written to this core's own
//! overflow spool segment (a buffered `write` into the page cache, on the rare overflow path
//! only), and if the spool is at its bound it is counted in `dropped_spool_full` and logged.
//! Before the push, the event is appended to the core's write-ahead journal
//! ([`crate::journal`], a memory-mapped file: plain stores, no syscall), which is what makes an
//! emitted event survive the process being killed.
//! Once every [`crate::wake::CHECK_EVERY`] pushes it looks at its queue's fill and rings the
//! producer's [`Doorbell`] above the fill mark (and on overflow), never per event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codec::event::Event;
use codec::event::frame::FrameBuf;
use crossbeam_queue::ArrayQueue;

use crate::framing::{BucketKey, bucket_of};
use crate::journal::JournalWriter;
use crate::metrics::Counters;
use crate::spool::{Spool, SpoolError, SpoolWriter, topic_index};
use crate::wake::{CHECK_EVERY, Doorbell, fill_mark};

/// Smallest age of an overflow segment before a core seals it.
pub const SEAL_AFTER: Duration = Duration::from_millis(100);

/// A core's handle to the pipeline. `Send`, not `Sync`: owned by one core.
pub struct CoreSink {
    core: u16,
    queue: Arc<ArrayQueue<Event>>,
    /// This core's write-ahead journal (`None` when `journal_bytes_per_core` is 0).
    journal: Option<JournalWriter>,
    counters: Arc<Counters>,
    overflow: SpoolWriter,
    /// The overflow path's frame of one event (allocated here, at start).
    scratch: FrameBuf,
    key_buckets: u16,
    /// Overflow records written and not sealed yet; the segment is sealed (made replayable) on
    /// a successful push at least [`SEAL_AFTER`] after the segment was opened (so a queue
    /// flapping at its bound does not make a file per event).
    overflow_pending: bool,
    overflow_since: Option<Instant>,
    /// Local log throttle for drops (no shared state).
    drops_logged: u64,
    /// Local log throttle for a full journal.
    journal_full_logged: u64,
    /// Wakes the producer thread when this queue passes `wake_mark` events.
    doorbell: Arc<Doorbell>,
    wake_mark: usize,
    /// Pushes since start (wrapping; only its low bits pace the fill checks).
    pushes: u32,
}

impl std::fmt::Debug for CoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreSink")
            .field("core", &self.core)
            .field("queue_len", &self.queue.len())
            .field("queue_capacity", &self.queue.capacity())
            .finish()
    }
}

impl CoreSink {
    pub(crate) fn new(
        core: u16,
        queue: Arc<ArrayQueue<Event>>,
        journal: Option<JournalWriter>,
        counters: Arc<Counters>,
        spool: Arc<Spool>,
        key_buckets: u16,
        doorbell: Arc<Doorbell>,
    ) -> CoreSink {
        let mut tag = [0u8; 8];
        tag[0] = b'c';
        let mut b = itoa::Buffer::new();
        let digits = b.format(core).as_bytes();
        tag[1..1 + digits.len()].copy_from_slice(digits);
        let tag = std::str::from_utf8(&tag[..1 + digits.len()]).unwrap_or("c");
        CoreSink {
            core,
            journal,
            counters,
            overflow: SpoolWriter::new(spool, tag).silent(),
            // Sized at start for the largest event; never grown.
            scratch: FrameBuf::with_max_bytes(0),
            key_buckets,
            overflow_pending: false,
            overflow_since: None,
            drops_logged: 0,
            journal_full_logged: 0,
            wake_mark: fill_mark(queue.capacity()),
            queue,
            doorbell,
            pushes: 0,
        }
    }

    /// The core this sink belongs to.
    pub fn core(&self) -> u16 {
        self.core
    }

    /// Hands one event to the pipeline; when this returns the event survives the process
    /// being killed. Never blocks on the network, never allocates, makes no syscall on the
    /// normal path: a record in this core's journal (memory-mapped) and a push into this
    /// core's queue. If the queue is full (counted `overflowed`) or the journal is full
    /// (counted `journal_full`), the event goes to this core's overflow spool segment instead.
    #[inline]
    pub fn emit(&mut self, event: &Event) {
        debug_assert_eq!(event.schema_version, codec::event::EVENT_SCHEMA_VERSION);
        // Room first, push second, write third: the producer derives the record's position
        // from the queue order, so only an event that is in the queue may have a record.
        let slot = match &mut self.journal {
            Some(j) => match j.prepare(event) {
                Some(s) => Some(s),
                None => return self.journal_full(event),
            },
            None => None,
        };
        match self.queue.push(*event) {
            Ok(()) => {
                if let (Some(j), Some(s)) = (&mut self.journal, slot) {
                    j.commit(s);
                }
                self.pushes = self.pushes.wrapping_add(1);
                if self.pushes.is_multiple_of(CHECK_EVERY) && self.queue.len() >= self.wake_mark {
                    self.doorbell.ring();
                }
                if self.overflow_pending {
                    self.seal_overflow();
                }
            }
            Err(ev) => {
                Counters::add(&self.counters.overflowed, 1);
                self.doorbell.ring();
                self.overflow(&ev);
            }
        }
    }

    /// Journals and pushes one event as [`emit`](Self::emit) does, or returns `false`
    /// (nothing written, nothing counted; the producer thread is woken) when the queue or the
    /// journal is full: for callers that prefer to retry or shed load themselves. Never blocks,
    /// never allocates.
    #[inline]
    pub fn try_emit(&mut self, event: &Event) -> bool {
        let slot = match &mut self.journal {
            Some(j) => match j.prepare(event) {
                Some(s) => Some(s),
                None => {
                    self.doorbell.ring();
                    return false;
                }
            },
            None => None,
        };
        if self.queue.push(*event).is_err() {
            self.doorbell.ring();
            return false;
        }
        if let (Some(j), Some(s)) = (&mut self.journal, slot) {
            j.commit(s);
        }
        self.pushes = self.pushes.wrapping_add(1);
        if self.pushes.is_multiple_of(CHECK_EVERY) && self.queue.len() >= self.wake_mark {
            self.doorbell.ring();
        }
        true
    }

    /// Events waiting in this core's queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    #[cold]
    fn seal_overflow(&mut self) {
        let since = *self.overflow_since.get_or_insert_with(Instant::now);
        if since.elapsed() < SEAL_AFTER {
            return;
        }
        self.overflow_since = None;
        self.overflow_pending = false;
        if let Err(e) = self.overflow.seal() {
            tracing::error!(core = self.core, error = %e, "pipeline: sealing the overflow spool segment failed; it is replayed at next start");
        }
    }

    /// The journal is full: the producer has not settled this core's oldest records (a broker
    /// slower than the cores). The event goes to the overflow spool segment — durable against
    /// a kill as well, at the cost of a `write` — counted and logged (1st, 2nd, 4th… time).
    #[cold]
    #[inline(never)]
    fn journal_full(&mut self, event: &Event) {
        Counters::add(&self.counters.journal_full, 1);
        self.journal_full_logged += 1;
        if self.journal_full_logged.is_power_of_two() {
            tracing::warn!(
                core = self.core,
                times_on_this_core = self.journal_full_logged,
                "pipeline: journal full (the broker acknowledges slower than this core emits); event spooled instead"
            );
        }
        self.overflow(event);
    }

    #[cold]
    #[inline(never)]
    fn overflow(&mut self, event: &Event) {
        self.scratch.clear();
        let pushed = self.scratch.push(event);
        // An empty frame sized for the largest event always takes one.
        debug_assert!(pushed);
        let key = BucketKey::new(bucket_of(event, self.key_buckets));
        let res = self.overflow.append(
            topic_index(event.kind),
            key.as_bytes(),
            self.scratch.as_bytes(),
        );
        // Flush now so a killed process keeps what it overflowed.
        let res = res.and_then(|()| self.overflow.flush().map_err(SpoolError::from));
        match res {
            Ok(()) => {
                if !self.overflow_pending {
                    self.overflow_since = Some(Instant::now());
                }
                self.overflow_pending = true;
            }
            Err(SpoolError::Full { max }) => {
                Counters::add(&self.counters.dropped_spool_full, 1);
                self.log_drop(max, "spool full");
            }
            Err(e) => {
                Counters::add(&self.counters.dropped_io, 1);
                tracing::error!(core = self.core, error = %e, "pipeline: queue full and the overflow spool failed; event dropped");
            }
        }
    }

    fn log_drop(&mut self, max: u64, why: &'static str) {
        // Log the 1st, 2nd, 4th, 8th… drop: visible without flooding the log.
        self.drops_logged += 1;
        if self.drops_logged.is_power_of_two() {
            tracing::error!(
                core = self.core,
                drops_on_this_core = self.drops_logged,
                spool_max_bytes = max,
                why,
                "pipeline: queue full and spool at its bound; event dropped (counted)"
            );
        }
    }
}

impl Drop for CoreSink {
    fn drop(&mut self) {
        // The writer's own Drop seals the segment; nothing else to do.
        self.overflow_pending = false;
    }
}

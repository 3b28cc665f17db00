//! [`EventSink`]: where a core puts the events its decisions and notices make.
//!
//! Each core owns one sink: the pipeline's `CoreSink` (its bounded lock-free queue to the
//! Kafka producer thread) when `events.enabled`, else a [`CountingSink`] that counts events by
//! kind and sends them nowhere (benchmarks of the bidding path alone, tests). Must never:
//! block, allocate, or lock.

use codec::event::{Event, EventKind};

pub trait EventSink: Send {
    /// Hands over one event. Must not block or allocate.
    fn emit(&mut self, e: &Event);
    /// Flushes whatever the sink buffers (called at shutdown, off the hot path).
    fn flush(&mut self) {}
}

/// Counts events by kind; keeps the last one (tests read it).
#[derive(Debug, Default)]
pub struct CountingSink {
    pub by_kind: [u64; 6],
    pub last: Option<Event>,
}

impl EventSink for CountingSink {
    fn emit(&mut self, e: &Event) {
        let i = EventKind::ALL
            .iter()
            .position(|k| *k == e.kind)
            .unwrap_or(0);
        self.by_kind[i] += 1;
        self.last = Some(*e);
    }
}

impl EventSink for pipeline::CoreSink {
    #[inline]
    fn emit(&mut self, e: &Event) {
        pipeline::CoreSink::emit(self, e);
    }
}

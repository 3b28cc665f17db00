//! [`EventSink`]: where a core puts the events its decisions and notices make.
//!
//! Each core owns one sink. The pipeline's per-core `CoreSink` (bounded lock-free queue to the
//! Kafka producer) plugs in here once merged — INTEGRATION(pipeline): adapt
//! `pipeline::CoreSink::emit` to this trait in `server.rs`. Until then the binary uses
//! [`CountingSink`], which counts events by kind and sends them nowhere (stated in `/metrics`
//! as `helios_events_total`). Must never: block, allocate, or lock.

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

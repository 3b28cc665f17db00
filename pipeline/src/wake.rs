//! `wake`: how a core wakes the producer thread early — the [`Doorbell`].
//!
//! Owns the doorbell, shared by the cores' sinks and the producer thread. Between turns the
//! producer thread parks until its next frame falls due (at most `idle_sleep_max_us`), so at a
//! steady rate it wakes about once per `frame_linger_ms` instead of once per few events; a core
//! rings the doorbell when its queue passes the fill mark ([`fill_mark`]) or overflows, so a
//! burst is drained before the queue spills to disk however long the producer meant to sleep.
//!
//! Must never: be rung per event (a core looks at its queue's fill once every [`CHECK_EVERY`]
//! pushes and rings only above the mark), or block the ringing core (a ring is an atomic swap on
//! the producer's parker and, only if it is parked, one futex wake; no allocation, no lock).

use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// A core checks its queue's fill once every this many pushes (a read of the consumer's index,
/// a cache line the producer writes once per drain).
pub const CHECK_EVERY: u32 = 64;

/// The fill (events) past which a core rings: a quarter of its queue, so the producer has three
/// quarters of the queue's time to wake up and drain.
pub fn fill_mark(capacity: usize) -> usize {
    (capacity / 4).max(1)
}

/// Wakes the producer thread. Shared (`Arc`) by the cores' sinks and the pipeline.
#[derive(Debug, Default)]
pub struct Doorbell {
    producer: OnceLock<Thread>,
}

impl Doorbell {
    /// Registers the calling thread as the one the doorbell wakes (the producer thread, once,
    /// at its start). Rings before that are lost, harmlessly: the producer looks at the queues
    /// right after registering.
    pub(crate) fn register_current(&self) {
        let _ = self.producer.set(std::thread::current());
    }

    /// Wakes the producer thread if it is parked; otherwise its next park returns at once.
    #[inline]
    pub fn ring(&self) {
        if let Some(t) = self.producer.get() {
            t.unpark();
        }
    }

    /// Parks the calling (producer) thread for at most `d`, or until rung. May return early
    /// (a ring from before, or spuriously): the caller just takes another turn.
    pub(crate) fn wait(&self, d: Duration) {
        std::thread::park_timeout(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_ring_ends_the_wait() {
        let bell = Arc::new(Doorbell::default());
        let b = bell.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            b.register_current();
            tx.send(()).unwrap();
            let t = Instant::now();
            // A long wait, ended by the ring below (a ring that comes before the park makes the
            // park return at once, so the order of the two threads does not matter).
            b.wait(Duration::from_secs(10));
            t.elapsed()
        });
        rx.recv().unwrap();
        bell.ring();
        let waited = h.join().unwrap();
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    }

    #[test]
    fn the_fill_mark_is_a_quarter_of_the_queue() {
        assert_eq!(fill_mark(16_384), 4_096);
        assert_eq!(fill_mark(1), 1);
    }
}

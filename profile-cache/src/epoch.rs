//! Epoch-based reclamation: when memory a reader might still be reading may be freed.
//!
//! Owns the global epoch, one announcement slot per reader, and the writer's list of retired
//! memory. Each reader writes only its own cache-padded slot (never a line another reader writes);
//! the single writer (the replicator thread) advances the epoch and frees what no reader can still
//! see. Readers never free, allocate or lock here; the mutex guards the slot list only, taken on
//! reader clone/drop and by the writer.
//!
//! Protocol. A reader *pins* before its first pointer load: it loads the global epoch (Acquire),
//! stores it in its slot and issues a SeqCst fence; nested pins reuse the announcement; the last
//! unpin stores 0 (quiescent). The writer unlinks memory from the table first, then retires it
//! tagged with the current epoch `r`; `collect` bumps the epoch (SeqCst), fences, reads every slot,
//! and frees what was retired before the oldest announced epoch. A reader that announced `e > r`
//! loaded the epoch after the bump that followed the unlink, so it cannot reach the memory; a
//! reader with `e <= r` is seen by the writer (store-fence / store-fence: one side always sees the
//! other) and holds the memory back. A reader pinned forever holds every later retirement back:
//! pins last one lookup, dropped with the [`crate::ProfileRef`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};

/// One reader's announcement, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ReaderSlot {
    /// Epoch announced while pinned; 0 when quiescent.
    active: AtomicU64,
    /// Cleared when the reader is dropped; the writer prunes dead slots.
    alive: AtomicBool,
}

/// The global epoch and the registry of reader slots.
#[derive(Debug)]
pub(crate) struct Epochs {
    global: Padded,
    slots: Mutex<Vec<Arc<ReaderSlot>>>,
}

#[derive(Debug)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Epochs {
    pub(crate) fn new() -> Self {
        Self {
            global: Padded(AtomicU64::new(1)),
            slots: Mutex::new(Vec::new()),
        }
    }

    /// Registers a new reader slot (reader creation only; takes the registry lock).
    pub(crate) fn register(&self) -> Arc<ReaderSlot> {
        let slot = Arc::new(ReaderSlot {
            active: AtomicU64::new(0),
            alive: AtomicBool::new(true),
        });
        self.lock().push(Arc::clone(&slot));
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ReaderSlot>>> {
        // A panic while holding this lock leaves a plain Vec in a valid state: recover it.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces the reader (first pin). Writes only the reader's own slot.
    #[inline]
    pub(crate) fn pin(&self, slot: &ReaderSlot) {
        let e = self.global.0.load(Ordering::Acquire);
        slot.active.store(e, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Marks the reader quiescent (last unpin).
    #[inline]
    pub(crate) fn unpin(&self, slot: &ReaderSlot) {
        slot.active.store(0, Ordering::Release);
    }

    /// Marks a reader gone; its slot is pruned at the next collection.
    pub(crate) fn retire_reader(&self, slot: &ReaderSlot) {
        slot.active.store(0, Ordering::Release);
        slot.alive.store(false, Ordering::Release);
    }

    /// The epoch to tag memory retired now (after it was unlinked).
    pub(crate) fn current(&self) -> u64 {
        self.global.0.load(Ordering::SeqCst)
    }

    /// Advances the epoch and returns the oldest epoch any reader may still be reading in:
    /// memory retired at an epoch strictly below it is free to reclaim. Writer only.
    pub(crate) fn advance(&self) -> u64 {
        let next = self.global.0.fetch_add(1, Ordering::SeqCst) + 1;
        fence(Ordering::SeqCst);
        let mut slots = self.lock();
        slots.retain(|s| s.alive.load(Ordering::Acquire));
        slots
            .iter()
            .map(|s| s.active.load(Ordering::SeqCst))
            .filter(|&e| e != 0)
            .min()
            .unwrap_or(next)
    }

    /// Number of live reader slots (metrics, tests).
    pub(crate) fn readers(&self) -> usize {
        self.lock()
            .iter()
            .filter(|s| s.alive.load(Ordering::Acquire))
            .count()
    }
}

/// Memory retired at `epoch`, waiting for readers to move past it.
#[derive(Debug)]
pub(crate) struct Retired<T> {
    pub(crate) epoch: u64,
    pub(crate) item: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_reader_holds_back_its_epoch_and_a_quiescent_one_does_not() {
        let e = Epochs::new();
        let a = e.register();
        let b = e.register();
        let r = e.current();
        e.pin(&a);
        // a announced r: anything retired at r must wait.
        assert_eq!(e.advance(), r);
        e.pin(&b);
        assert_eq!(e.advance(), r, "oldest announcement wins");
        e.unpin(&a);
        assert_eq!(e.advance(), r + 1, "b announced after the first bump");
        e.unpin(&b);
        let next = e.advance();
        assert_eq!(
            next,
            e.current(),
            "no reader pinned: everything retired before now is free"
        );
        e.retire_reader(&a);
        e.advance();
        assert_eq!(e.readers(), 1);
    }
}

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
//!
//! Reader fence. The reader's "store-fence" above is where a pin's cost goes: a `SeqCst` fence is
//! a full barrier (`mfence`/locked instruction, tens of cycles) on every lookup. With
//! [`ReaderFence::Asymmetric`] (the default where the kernel offers it) the reader's fence is only
//! a compiler barrier and the writer pays instead: `advance` calls
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every thread of the process that is
//! running execute a full barrier (an IPI) before it returns, and a thread not running passed one
//! when it was switched out. So for every reader either its announcement is visible to the
//! writer's slot scan, or its later loads of the table happen after the barrier and see the
//! unlink — the same two cases as with the reader's own fence (the technique of liburcu's
//! membarrier flavour and folly's `asymmetricHeavyBarrier`). The writer's cost is one syscall and
//! an IPI per CPU running a reader, once per `collect` with garbage — never per lookup. Where
//! `membarrier` is not available (old kernel, seccomp), the epochs fall back to the reader fence
//! and say so ([`Epochs::reader_fence`]). If the writer's barrier ever fails after registration,
//! `advance` frees nothing that round.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, compiler_fence, fence};
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

/// How readers order their announcement before their first pointer load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaderFence {
    /// A compiler barrier on the reader, `membarrier` on the writer (falls back to
    /// [`ReaderFence::Full`] where the kernel refuses it).
    #[default]
    Asymmetric,
    /// A `SeqCst` fence on every pin (before session 3; kept for side-by-side benchmarks).
    Full,
}

/// The global epoch and the registry of reader slots.
#[derive(Debug)]
pub(crate) struct Epochs {
    global: Padded,
    /// Whether readers skip their fence (the writer's `membarrier` is registered).
    asymmetric: bool,
    slots: Mutex<Vec<Arc<ReaderSlot>>>,
}

#[cfg(target_os = "linux")]
mod membarrier {
    const CMD_QUERY: libc::c_long = 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn call(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches no user memory.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        }
    }

    /// Registers this process for private expedited barriers; false if unsupported or refused.
    /// Idempotent (the registration is per process).
    pub(super) fn register() -> bool {
        let q = call(CMD_QUERY);
        q >= 0 && q & CMD_PRIVATE_EXPEDITED != 0 && call(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    }

    /// A full barrier on every running thread of this process; false if the kernel failed it.
    pub(super) fn barrier() -> bool {
        call(CMD_PRIVATE_EXPEDITED) == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod membarrier {
    pub(super) fn register() -> bool {
        false
    }
    pub(super) fn barrier() -> bool {
        false
    }
}

#[derive(Debug)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Epochs {
    /// Epochs whose readers fence as `fence` asks (if the kernel allows it; see
    /// [`Epochs::reader_fence`]).
    pub(crate) fn new(fence: ReaderFence) -> Self {
        Self {
            global: Padded(AtomicU64::new(1)),
            asymmetric: fence == ReaderFence::Asymmetric && membarrier::register(),
            slots: Mutex::new(Vec::new()),
        }
    }

    /// The fence readers actually use.
    pub(crate) fn reader_fence(&self) -> ReaderFence {
        if self.asymmetric {
            ReaderFence::Asymmetric
        } else {
            ReaderFence::Full
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
        if self.asymmetric {
            // The writer's membarrier stands in for the hardware fence (module docs); the
            // compiler must still not move the caller's table loads above the store.
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
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
        if self.asymmetric && !membarrier::barrier() {
            // Without the barrier a reader's announcement may not be visible yet: free nothing.
            return 0;
        }
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
    fn both_fences_hold_back_the_same_epochs() {
        for f in [ReaderFence::Asymmetric, ReaderFence::Full] {
            pinned_and_quiescent(f);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_grants_the_asymmetric_fence_here() {
        // Linux ≥ 4.14 without a seccomp filter against membarrier: the product's default holds.
        assert_eq!(
            Epochs::new(ReaderFence::Asymmetric).reader_fence(),
            ReaderFence::Asymmetric
        );
        assert_eq!(
            Epochs::new(ReaderFence::Full).reader_fence(),
            ReaderFence::Full
        );
    }

    fn pinned_and_quiescent(f: ReaderFence) {
        let e = Epochs::new(f);
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

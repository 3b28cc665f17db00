//! A global allocator that counts heap allocations per thread, so each core can report how many
//! allocations its event-loop thread made (`helios_core_allocations_total`) and tests can prove
//! the warm request path allocates nothing.
//!
//! Installed by the `helios` binary and by every crate's zero-allocation test binary
//! (`#[global_allocator] static A: alloc_count::CountingAlloc = alloc_count::CountingAlloc;`).
//! The count lives in a thread-local `Cell` (const-initialised: reading or bumping it never
//! allocates); only the owning thread writes it, so no atomic is touched and other threads'
//! allocations (a test harness, a producer thread) are never counted against the caller.
//! Must never: allocate itself, or lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator with a per-thread allocation counter.
#[derive(Debug, Default)]
pub struct CountingAlloc;

#[inline]
fn bump() {
    // `try_with`: during thread teardown the slot may be gone; then the count is simply skipped.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` unchanged; counting touches only a thread-local
// `Cell`, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations (including reallocations) made so far on the calling thread. Zero when the
/// counting allocator is not installed.
pub fn thread_allocs() -> u64 {
    ALLOCS.try_with(Cell::get).unwrap_or(0)
}

/// Runs `f` and returns how many allocations it made on the calling thread, with its result.
/// Zero when the counting allocator is not installed, so tests must first check
/// [`installed`].
pub fn count<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = thread_allocs();
    let r = f();
    (thread_allocs() - before, r)
}

/// Whether [`CountingAlloc`] is the global allocator of this process: a boxed value is
/// allocated and the counter must move. Tests assert it first, so that a zero count can
/// never come from a counter that is not wired in.
pub fn installed() -> bool {
    let (n, b) = count(|| Box::new(std::hint::black_box(7u64)));
    drop(std::hint::black_box(b));
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: CountingAlloc = CountingAlloc;

    #[test]
    fn counts_this_threads_allocations_only() {
        assert!(installed());
        let (n, v) = count(|| vec![1u8; 64]);
        assert_eq!(n, 1);
        assert_eq!(v.len(), 64);
        // Another thread allocates 100 times while this one waits for it: spawning and joining
        // allocate a few times on this thread, but none of the other thread's 100 are counted.
        let (n, ()) = count(|| {
            std::thread::spawn(|| {
                for _ in 0..100 {
                    drop(std::hint::black_box(vec![0u8; 1024]));
                }
            })
            .join()
            .expect("the spawned thread only allocates and returns");
        });
        assert!(n < 100, "{n}");
        let (n, ()) = count(|| ());
        assert_eq!(n, 0);
    }
}

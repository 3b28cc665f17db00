//! A global allocator that counts heap allocations per thread, so each core can report how many
//! allocations its event-loop thread made (`helios_core_allocations_total`) and tests can prove
//! the warm request path allocates nothing.
//!
//! Installed by the `helios` binary (`#[global_allocator]`). The count lives in a thread-local
//! `Cell` (const-initialised: reading or bumping it never allocates); only the owning thread
//! writes it, so no atomic is touched. Must never: allocate itself, or lock.

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

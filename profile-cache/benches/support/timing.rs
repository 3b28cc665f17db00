//! What the tail-latency benches share: the fenced TSC timer, its calibration, a histogram of
//! ticks, pinning to a core, `SCHED_FIFO`, and the environment knobs. One source for
//! `benches/lookup_tail.rs` of this crate and `appliance/benches/profile_order.rs`, which include
//! this file with `#[path = ...] mod timing;` so that both time a lookup the same way.
//!
//! Runs on the bench's own thread; it owns no state. It must never be used on the product's
//! path: pinning and scheduling change the calling thread.

use hdrhistogram::Histogram;

/// An integer from the environment variable `name`, `default` when absent or not a number.
pub fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Pins the calling thread to `cpu` (negative: leaves it where it is).
pub fn pin(cpu: i64) {
    if cpu < 0 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Switches this thread to SCHED_FIFO at `prio` (0 = back to SCHED_OTHER). Returns success.
pub fn fifo(prio: i64) -> bool {
    let policy = if prio > 0 {
        libc::SCHED_FIFO
    } else {
        libc::SCHED_OTHER
    };
    let p = libc::sched_param {
        sched_priority: prio.clamp(0, 99) as i32,
    };
    // SAFETY: plain syscall on the calling thread with a valid parameter struct.
    unsafe { libc::sched_setscheduler(0, policy, &p) == 0 }
}

/// The TSC, read after every earlier instruction has completed (`lfence; rdtsc; lfence`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn tsc_start() -> u64 {
    use std::arch::x86_64::{_mm_lfence, _rdtsc};
    // SAFETY: lfence and rdtsc have no memory effects; every x86-64 CPU has both (SSE2, TSC).
    unsafe {
        _mm_lfence();
        let t = _rdtsc();
        _mm_lfence();
        t
    }
}

/// The TSC once the timed work has completed (`rdtscp; lfence`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn tsc_end() -> u64 {
    use std::arch::x86_64::{__rdtscp, _mm_lfence};
    let mut aux = 0u32;
    // SAFETY: rdtscp writes `aux` only; lfence has no memory effects.
    unsafe {
        let t = __rdtscp(&mut aux);
        _mm_lfence();
        t
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn tsc_start() -> u64 {
    quanta::Clock::new().raw()
}
#[cfg(not(target_arch = "x86_64"))]
pub fn tsc_end() -> u64 {
    tsc_start()
}

/// TSC ticks per nanosecond, measured against the monotonic clock over `ms` milliseconds.
pub fn ticks_per_ns(ms: u64) -> f64 {
    let t = std::time::Instant::now();
    let a = tsc_start();
    while t.elapsed() < std::time::Duration::from_millis(ms) {}
    let b = tsc_end();
    (b - a) as f64 / t.elapsed().as_nanos() as f64
}

/// A histogram of TSC ticks (1 to 10⁹, 3 significant digits).
pub fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("static bounds")
}

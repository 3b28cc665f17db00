//! Drivers: the event loops that move bytes between sockets and a core's [`crate::core::Core`].
//! One driver instance per core thread; both carry the same sans-IO core.
//!
//! - [`uring`]: the default; an io_uring completion loop (multishot accept, multishot recv
//!   into a provided buffer ring, one `submit_and_wait` per turn, timers in the ring).
//! - [`epoll`]: a tokio `current_thread` runtime, for where io_uring is missing or blocked.

use std::time::Duration;

pub mod epoll;
pub mod uring;

/// Timeouts and bounds every driver honours.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Keep-alive connection with no request in progress: closed after this.
    pub idle: Duration,
    /// A request must be complete within this from its first byte (else 408).
    pub slow: Duration,
    /// After a closing answer, read and discard for at most this long before closing.
    pub linger: Duration,
    /// Metrics publication period.
    pub publish: Duration,
    /// Graceful shutdown: longest wait for in-flight requests.
    pub drain: Duration,
    /// Loop timer period.
    pub tick: Duration,
    pub max_conns: usize,
    /// io_uring sizes.
    pub ring_entries: u32,
    pub buffers: u16,
    pub buffer_bytes: u32,
    /// Stamp received bytes in the kernel (`SO_TIMESTAMPNS`) and receive with `recvmsg`, so
    /// requests count their age from arrival ([`crate::rxtime`]).
    pub rx_timestamps: bool,
}

//! The io_uring driver: one completion loop per pinned core thread, carrying that core's
//! [`Core`].
//!
//! Per turn: one `submit_and_wait(1)` submits everything queued in the previous turn (the turn's
//! responses together) and waits; then every completion is handled — multishot accept, multishot
//! receive into a provided buffer ring (`register_buf_ring_with_flags`), sends, the loop timer
//! (a multishot timeout in the same ring) — and every connection that received bytes is handed
//! to the core once. The receive is a `RECVMSG` multishot on sockets with `SO_TIMESTAMPNS`
//! (`bidding.rx_timestamps`, the default): each buffer then starts with an
//! `io_uring_recvmsg_out` header and the kernel's receive stamp as a control message
//! ([`crate::rxtime`]), which the connection carries to the core so a request's age counts its
//! wait in the socket buffer; otherwise (or when the socket option fails) a plain `RECV`
//! multishot, and requests count from their read. A read without a stamp is counted
//! (`helios_rx_unstamped_total`) and logged once. Setup: `SINGLE_ISSUER | DEFER_TASKRUN`, else `COOP_TASKRUN | TASKRUN_FLAG`;
//! never SQPOLL (12–15 µs per round trip on 2 vCPUs). If no ring can be set up, [`Ring::new`]
//! fails and the caller falls back to epoll.
//!
//! Memory: received bytes are copied from the provided buffer into the connection's input and
//! the buffer is recycled in the same turn; each connection has an output buffer the core
//! appends to and a wire buffer the kernel reads from while a send is in flight (swapped when it
//! completes). Slots and their buffers are reused, so a warm keep-alive connection allocates
//! nothing. Registered memory is one page of buffer-ring entries (the 8 MiB locked-memory limit
//! is far away). Must never: touch a wire buffer while its send is in flight, free a slot with
//! an operation still pending on it, or share anything with another core.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, TimeoutFlags, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use quanta::{Clock, Instant};

use super::LoopConfig;
use crate::core::{Conn, Core};
use crate::metrics::CloseReason;

const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const TICK: u64 = 4;
const CLOSE: u64 = 5;
const CANCEL: u64 = 6;
const BGID: u16 = 0;

fn ud(kind: u64, slot: u32, generation: u32) -> u64 {
    (kind << 56) | (u64::from(generation & 0x00ff_ffff) << 32) | u64::from(slot)
}

fn ud_parts(u: u64) -> (u64, u32, u32) {
    (u >> 56, u as u32, ((u >> 32) & 0x00ff_ffff) as u32)
}

/// The provided-buffer ring: entries in one mmap'd page range, buffers in one heap block.
struct BufRing {
    entries: *mut BufRingEntry,
    map_len: usize,
    count: u16,
    tail: u16,
    data: Box<[u8]>,
    size: u32,
}

impl BufRing {
    fn new(count: u16, size: u32) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two());
        let map_len = (usize::from(count) * std::mem::size_of::<BufRingEntry>()).max(4096);
        // SAFETY: anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = BufRing {
            entries: p.cast(),
            map_len,
            count,
            tail: 0,
            data: vec![0u8; usize::from(count) * size as usize].into_boxed_slice(),
            size,
        };
        for bid in 0..count {
            r.recycle(bid);
        }
        r.publish();
        Ok(r)
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.size as usize;
        &self.data[start..start + len.min(self.size as usize)]
    }

    /// Gives buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    fn recycle(&mut self, bid: u16) {
        let i = usize::from(self.tail & (self.count - 1));
        // SAFETY: `i` < count, within the mapping; the kernel only reads entries past the
        // published tail, and this entry is not yet published.
        let e = unsafe { &mut *self.entries.add(i) };
        // SAFETY: `bid` < count, so the address is inside `data`, which lives as long as self.
        e.set_addr(unsafe {
            self.data
                .as_ptr()
                .add(usize::from(bid) * self.size as usize)
        } as u64);
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `entries` is the ring base; the tail is the `resv` field of entry 0, a
        // naturally aligned u16 the kernel reads atomically.
        let tail = unsafe { BufRingEntry::tail(self.entries) } as *mut u16;
        // SAFETY: the pointer is valid and aligned for the mapping's lifetime, and only this
        // thread writes it.
        unsafe { AtomicU16::from_ptr(tail) }.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and is unregistered from the ring before this drop.
        unsafe { libc::munmap(self.entries.cast(), self.map_len) };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Open,
    /// Our last answer is sent and FIN is out: read and discard until EOF or the deadline.
    Lingering(Instant),
    /// Shut down both ways; waiting for the recv to end and then for `close`.
    Closing,
}

struct Slot {
    fd: i32,
    generation: u32,
    state: State,
    conn: Conn,
    wire: Vec<u8>,
    sent: usize,
    sending: bool,
    recv_armed: bool,
    close_submitted: bool,
    dirty: bool,
    last: Instant,
    pending_since: Option<Instant>,
    reason: CloseReason,
    /// Receives with `RECVMSG` and carries the kernel's receive stamps.
    stamped: bool,
}

/// A set-up ring, ready to run a core. Created on the core's thread.
pub struct Ring {
    ring: IoUring,
    bufs: BufRing,
    /// Which setup flags took ("single_issuer|defer_taskrun" or "coop_taskrun|taskrun_flag").
    pub flags: &'static str,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("flags", &self.flags).finish()
    }
}

impl Ring {
    /// Sets up the ring and registers the buffer ring; an error means "use epoll".
    pub fn new(lc: &LoopConfig) -> io::Result<Ring> {
        let (ring, flags) = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(lc.ring_entries)
        {
            Ok(r) => (r, "single_issuer|defer_taskrun"),
            Err(_) => (
                IoUring::builder()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .build(lc.ring_entries)?,
                "coop_taskrun|taskrun_flag",
            ),
        };
        let bufs = BufRing::new(lc.buffers, lc.buffer_bytes)?;
        // SAFETY: the entries mapping stays valid until `Ring` drops, where it is unregistered
        // before `bufs` is unmapped.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                bufs.count,
                BGID,
                0,
            )?;
        }
        Ok(Ring { ring, bufs, flags })
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

struct Loop {
    r: Ring,
    core: Core,
    lc: LoopConfig,
    clock: Clock,
    slots: Vec<Slot>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    rearm: Vec<u32>,
    cqes: Vec<(u64, i32, u32)>,
    open: usize,
    listen_fd: i32,
    /// Closed as soon as the accept is cancelled at shutdown, so new connections are refused.
    listener: Option<TcpListener>,
    accepting: bool,
    draining: bool,
    tick_ts: Box<Timespec>,
    /// The `RECVMSG` multishot template: no name, room for one `SCM_TIMESTAMPNS` (read by the
    /// kernel when a receive is armed; boxed so its address stays put).
    msghdr: Box<libc::msghdr>,
    /// Said once: the kernel refused the option, or a read carried no stamp.
    warned_unstamped: bool,
}

/// Runs `core` on `ring` until shutdown is requested and connections are drained.
pub fn run(
    ring: Ring,
    core: Core,
    listener: TcpListener,
    lc: LoopConfig,
    shutdown: Arc<AtomicBool>,
) -> io::Result<()> {
    let cq_cap = ring.ring.params().cq_entries() as usize;
    let tick = lc.tick;
    let mut l = Loop {
        r: ring,
        core,
        clock: Clock::new(),
        slots: Vec::with_capacity(lc.max_conns),
        free: Vec::with_capacity(lc.max_conns),
        dirty: Vec::with_capacity(lc.max_conns),
        rearm: Vec::with_capacity(lc.max_conns),
        cqes: Vec::with_capacity(cq_cap),
        open: 0,
        listen_fd: listener.as_raw_fd(),
        listener: Some(listener),
        accepting: true,
        draining: false,
        tick_ts: Box::new(
            Timespec::new()
                .sec(tick.as_secs())
                .nsec(tick.subsec_nanos()),
        ),
        msghdr: Box::new(recvmsg_template()),
        warned_unstamped: false,
        lc,
    };
    if l.lc.rx_timestamps {
        // Set on the listener too: accepted sockets inherit it, so even the bytes that arrive
        // before the accept completes are stamped.
        if let Err(e) = crate::rxtime::enable(l.listen_fd) {
            tracing::warn!(core = l.core.id(), error = %e,
                "SO_TIMESTAMPNS refused on the listener: requests count their age from the read");
            l.warned_unstamped = true;
            l.lc.rx_timestamps = false;
        }
    }
    l.arm_accept()?;
    l.arm_tick()?;
    let mut next_publish = l.clock.now();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        match l.r.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::ETIME)
                ) => {}
            Err(e) => return Err(e),
        }
        l.core.begin_turn();
        let now = l.clock.now();
        l.cqes.clear();
        {
            let cap = l.cqes.capacity();
            let mut cq = l.r.ring.completion();
            // Past `cap` the rest stay in the queue for the next turn.
            while l.cqes.len() < cap {
                let Some(c) = cq.next() else { break };
                l.cqes.push((c.user_data(), c.result(), c.flags()));
            }
        }
        let mut ticked = false;
        for i in 0..l.cqes.len() {
            let (u, res, flags) = l.cqes[i];
            let (kind, slot, generation) = ud_parts(u);
            match kind {
                ACCEPT => l.on_accept(res, flags, now)?,
                RECV => l.on_recv(slot, generation, res, flags, now)?,
                SEND => l.on_send(slot, generation, res)?,
                CLOSE => l.on_close(slot, generation),
                // The accept was not pending (any more): nothing left to cancel.
                CANCEL if res == -libc::ENOENT => l.stop_accepting(),
                TICK => {
                    ticked = true;
                    if !cqueue::more(flags) {
                        l.arm_tick()?;
                    }
                }
                _ => {}
            }
        }
        l.process_dirty()?;
        for k in 0..l.rearm.len() {
            let i = l.rearm[k];
            l.arm_recv(i)?;
        }
        l.rearm.clear();
        l.r.bufs.publish();
        if ticked {
            if now >= next_publish {
                l.core.publish();
                next_publish = now + l.lc.publish;
            }
            if !l.draining && shutdown.load(Ordering::Relaxed) {
                l.begin_drain()?;
                drain_deadline = Some(now + l.lc.drain);
            }
            l.sweep(now)?;
            if l.draining && l.open == 0 && !l.accepting {
                break;
            }
            if drain_deadline.is_some_and(|d| now >= d) {
                tracing::warn!(
                    core = l.core.id(),
                    open = l.open,
                    "drain timeout: closing connections"
                );
                break;
            }
        }
    }
    for s in &l.slots {
        if s.state != State::Free && !s.close_submitted {
            // SAFETY: the fd is ours and no longer used after the loop.
            unsafe { libc::close(s.fd) };
        }
    }
    l.core.publish();
    l.core.flush_events();
    Ok(())
}

/// The `msghdr` a `RECVMSG` multishot reads its layout from: no address, room for one stamp.
fn recvmsg_template() -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_controllen = crate::rxtime::CONTROL_LEN as _;
    m
}

impl Loop {
    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points at (wire buffers, the timespec, the buffer
            // ring) outlives the operation: they are only released once its completion is seen.
            if unsafe { self.r.ring.submission().push(&e) }.is_ok() {
                return Ok(());
            }
            self.r.ring.submit()?;
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let e = opcode::AcceptMulti::new(Fd(self.listen_fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(ACCEPT, 0, 0));
        self.push(e)
    }

    fn arm_tick(&mut self) -> io::Result<()> {
        let e = opcode::Timeout::new(&*self.tick_ts as *const Timespec)
            .count(0)
            .flags(TimeoutFlags::MULTISHOT)
            .build()
            .user_data(ud(TICK, 0, 0));
        self.push(e)
    }

    fn arm_recv(&mut self, i: u32) -> io::Result<()> {
        let s = &mut self.slots[i as usize];
        if s.state == State::Free || s.state == State::Closing || s.recv_armed {
            return Ok(());
        }
        s.recv_armed = true;
        let e = if s.stamped {
            opcode::RecvMsgMulti::new(Fd(s.fd), &*self.msghdr as *const libc::msghdr, BGID).build()
        } else {
            opcode::RecvMulti::new(Fd(s.fd), BGID).build()
        };
        let e = e.user_data(ud(RECV, i, s.generation));
        self.push(e)
    }

    fn on_accept(&mut self, res: i32, flags: u32, now: Instant) -> io::Result<()> {
        if !cqueue::more(flags) {
            // The multishot accept ended (cancelled, or an error).
            if self.draining {
                self.stop_accepting();
            } else {
                self.arm_accept()?;
            }
        }
        if res < 0 {
            if res != -libc::ECANCELED {
                tracing::warn!(core = self.core.id(), errno = -res, "accept failed");
            }
            return Ok(());
        }
        let fd = res;
        let m = self.core.metrics_mut();
        m.connections_accepted += 1;
        m.connections_open += 1;
        if self.open >= self.lc.max_conns || self.draining {
            let why = if self.draining {
                CloseReason::Shutdown
            } else {
                CloseReason::TooManyConnections
            };
            m.closed(why);
            // SAFETY: a connection we just accepted and will not use.
            unsafe { libc::close(fd) };
            return Ok(());
        }
        crate::sys::set_nodelay(fd);
        // SO_TIMESTAMPNS is inherited from the listener (set in `run`).
        let stamped = self.lc.rx_timestamps;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let conn = self.core.new_conn();
                let cap = conn.out.capacity();
                self.slots.push(Slot {
                    fd: -1,
                    generation: 0,
                    state: State::Free,
                    conn,
                    wire: Vec::with_capacity(cap),
                    sent: 0,
                    sending: false,
                    recv_armed: false,
                    close_submitted: false,
                    dirty: false,
                    last: now,
                    pending_since: None,
                    reason: CloseReason::Client,
                    stamped: false,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[i as usize];
        s.fd = fd;
        s.state = State::Open;
        s.last = now;
        s.pending_since = None;
        s.reason = CloseReason::Client;
        s.stamped = stamped;
        self.open += 1;
        self.arm_recv(i)
    }

    fn valid(&self, i: u32, generation: u32) -> bool {
        self.slots
            .get(i as usize)
            .is_some_and(|s| s.state != State::Free && (s.generation & 0x00ff_ffff) == generation)
    }

    fn on_recv(
        &mut self,
        i: u32,
        generation: u32,
        res: i32,
        flags: u32,
        now: Instant,
    ) -> io::Result<()> {
        let more = cqueue::more(flags);
        let mut res = res;
        if let Some(bid) = cqueue::buffer_select(flags) {
            if res > 0 && self.valid(i, generation) {
                let raw = self.r.bufs.buf(bid, res as usize);
                let stamped = self.slots[i as usize].stamped;
                // RECVMSG: header, (no name), control, payload. An empty payload is EOF.
                let (data, rx, bad) = if stamped {
                    match RecvMsgOut::parse(raw, &self.msghdr) {
                        Ok(m) => {
                            // The payload as a range of `raw` (the parsed view borrows `m`).
                            let p = m.payload_data();
                            let at = p.as_ptr() as usize - raw.as_ptr() as usize;
                            let len = p.len();
                            let rx = crate::rxtime::parse(m.control_data());
                            (&raw[at..at + len], rx, false)
                        }
                        // Shorter than the header the kernel writes: never seen; close.
                        Err(()) => (&raw[..0], None, true),
                    }
                } else {
                    (raw, None, false)
                };
                res = if bad { -libc::EIO } else { data.len() as i32 };
                if stamped && !data.is_empty() && rx.is_none() {
                    self.core.metrics_mut().rx_unstamped += 1;
                    if !self.warned_unstamped {
                        self.warned_unstamped = true;
                        tracing::warn!(
                            core = self.core.id(),
                            "a read carried no kernel receive stamp: such requests count their age from the read"
                        );
                    }
                }
                let s = &mut self.slots[i as usize];
                if s.state == State::Open && res > 0 && !s.conn.wants_close() {
                    s.last = now;
                    s.conn.set_rx_stamp(rx.unwrap_or(0));
                    // A multishot recv can hand over more than the input bound in one turn,
                    // before the core has looked at any of it: let the core see what is there
                    // first, so that a head past its limit gets its 431 (and a complete request
                    // its answer) rather than a bare close.
                    let pushed = s.conn.push(data) || {
                        self.core.on_input(&mut s.conn);
                        s.conn.wants_close() || s.conn.push(data)
                    };
                    if pushed {
                        if !s.dirty {
                            s.dirty = true;
                            self.dirty.push(i);
                        }
                    } else {
                        // Still full: requests held back by backpressure fill it (pipelining
                        // past the output high-water mark), the decided bound.
                        self.abort(i, CloseReason::InputOverflow);
                    }
                }
                // Bytes after an answer that closes the connection are read and dropped.
                if res > 0 {
                    self.core.metrics_mut().bytes_in += res as u64;
                }
            }
            self.r.bufs.recycle(bid);
        }
        if !self.valid(i, generation) {
            return Ok(());
        }
        if !more {
            self.slots[i as usize].recv_armed = false;
        }
        if res > 0 {
            if !more {
                self.rearm.push(i);
            }
            return Ok(());
        }
        if res == -libc::ENOBUFS && self.slots[i as usize].state != State::Closing {
            // Every buffer was in use this turn: they are recycled by now; ask again.
            self.rearm.push(i);
            return Ok(());
        }
        // EOF or an error: the client is gone (or we shut the socket down).
        let s = &mut self.slots[i as usize];
        match s.state {
            State::Open => {
                let why = if res == 0 {
                    CloseReason::Client
                } else {
                    CloseReason::IoError
                };
                self.abort(i, why);
            }
            State::Lingering(_) => {
                s.state = State::Closing;
            }
            _ => {}
        }
        self.maybe_close(i)
    }

    fn on_send(&mut self, i: u32, generation: u32, res: i32) -> io::Result<()> {
        if !self.valid(i, generation) {
            return Ok(());
        }
        let s = &mut self.slots[i as usize];
        s.sending = false;
        if res < 0 {
            s.wire.clear();
            s.sent = 0;
            self.abort(i, CloseReason::IoError);
            return self.maybe_close(i);
        }
        s.sent += res as usize;
        self.core.metrics_mut().bytes_out += res as u64;
        let s = &mut self.slots[i as usize];
        if s.state == State::Closing {
            s.wire.clear();
            s.sent = 0;
            return self.maybe_close(i);
        }
        if s.sent < s.wire.len() {
            return self.submit_send(i);
        }
        s.wire.clear();
        s.sent = 0;
        if s.state == State::Open {
            if s.conn.has_pending_input() && !s.dirty {
                // Requests held back by backpressure can go on now.
                s.dirty = true;
                self.dirty.push(i);
            }
            self.flush(i)?;
        }
        self.maybe_close(i)
    }

    fn on_close(&mut self, i: u32, generation: u32) {
        if !self.valid(i, generation) {
            return;
        }
        let s = &mut self.slots[i as usize];
        s.state = State::Free;
        s.generation = s.generation.wrapping_add(1);
        s.fd = -1;
        s.conn.reset();
        s.wire.clear();
        s.sent = 0;
        s.sending = false;
        s.recv_armed = false;
        s.close_submitted = false;
        s.dirty = false;
        let why = s.reason;
        self.free.push(i);
        self.open -= 1;
        self.core.metrics_mut().closed(why);
    }

    /// Hands every connection that got bytes this turn to the core, then queues the answers.
    /// While a queue stands ([`Core::shedding`]): first the shed pass — every request admission
    /// sheds is answered 204 and its send submitted at once, before any decision — then the
    /// rest freshest first (by the kernel's receive stamp), so that the requests decided before
    /// the turn budget runs out are the ones with the most time left.
    fn process_dirty(&mut self) -> io::Result<()> {
        let now = self.clock.now();
        if self.core.shedding() && !self.dirty.is_empty() {
            let (mut shed, mut left) = (false, false);
            for k in 0..self.dirty.len() {
                let i = self.dirty[k];
                let s = &mut self.slots[i as usize];
                if s.state != State::Open {
                    continue;
                }
                self.core.shed_input(&mut s.conn);
                shed |= !s.conn.out.is_empty();
                left |= s.conn.has_pending_input();
                self.flush(i)?;
            }
            // The shed answers leave now, not after the turn's decisions — when there are
            // decisions to wait for (a full queue or a busy ring leaves them for the turn's end).
            if shed && left {
                match self.r.ring.submit() {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EINTR)) => {
                    }
                    Err(e) => return Err(e),
                }
            }
            freshest_first(&mut self.dirty, |i| self.slots[i as usize].conn.rx_stamp());
        }
        for k in 0..self.dirty.len() {
            let i = self.dirty[k];
            let s = &mut self.slots[i as usize];
            s.dirty = false;
            if s.state != State::Open {
                continue;
            }
            self.core.on_input(&mut s.conn);
            if s.conn.has_pending_input() {
                s.pending_since.get_or_insert(now);
            } else {
                s.pending_since = None;
            }
            self.flush(i)?;
            self.maybe_close(i)?;
        }
        self.dirty.clear();
        Ok(())
    }

    /// Starts sending the connection's output if no send is in flight.
    fn flush(&mut self, i: u32) -> io::Result<()> {
        let s = &mut self.slots[i as usize];
        if s.sending || s.conn.out.is_empty() {
            return Ok(());
        }
        debug_assert!(s.wire.is_empty());
        std::mem::swap(&mut s.wire, &mut s.conn.out);
        s.sent = 0;
        self.submit_send(i)
    }

    fn submit_send(&mut self, i: u32) -> io::Result<()> {
        let s = &mut self.slots[i as usize];
        let rest = &s.wire[s.sent..];
        s.sending = true;
        let e = opcode::Send::new(Fd(s.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(SEND, i, s.generation));
        self.push(e)
    }

    /// Moves a connection towards closing when its answer is fully sent.
    fn maybe_close(&mut self, i: u32) -> io::Result<()> {
        let linger = self.lc.linger;
        let now = self.clock.now();
        let s = &mut self.slots[i as usize];
        if s.sending || !s.conn.out.is_empty() {
            return Ok(());
        }
        if s.state == State::Open && s.conn.wants_close() {
            let why = s.conn.close_reason();
            if linger.is_zero() || !s.recv_armed {
                self.abort(i, why);
            } else {
                s.reason = why;
                // SAFETY: plain shutdown(2) of our socket; half-close, we keep reading.
                unsafe { libc::shutdown(s.fd, libc::SHUT_WR) };
                s.state = State::Lingering(now + linger);
                return Ok(());
            }
        }
        let s = &mut self.slots[i as usize];
        if s.state == State::Closing && !s.recv_armed && !s.close_submitted {
            s.close_submitted = true;
            let e = opcode::Close::new(Fd(s.fd))
                .build()
                .user_data(ud(CLOSE, i, s.generation));
            self.push(e)?;
        }
        Ok(())
    }

    /// Shuts the socket both ways: the pending recv ends, then `maybe_close` closes it.
    fn abort(&mut self, i: u32, why: CloseReason) {
        let s = &mut self.slots[i as usize];
        if matches!(s.state, State::Open) {
            s.reason = why;
        }
        // Output not yet handed to the kernel is dropped: the connection is going away.
        s.conn.out.clear();
        if s.state != State::Closing {
            s.state = State::Closing;
            // SAFETY: plain shutdown(2) of our socket.
            unsafe { libc::shutdown(s.fd, libc::SHUT_RDWR) };
        }
    }

    /// No accept is pending any more: close the listening socket, refusing new connections.
    fn stop_accepting(&mut self) {
        self.accepting = false;
        self.listener = None;
    }

    fn begin_drain(&mut self) -> io::Result<()> {
        self.draining = true;
        self.core.set_draining();
        tracing::info!(core = self.core.id(), open = self.open, "draining");
        let e = opcode::AsyncCancel::new(ud(ACCEPT, 0, 0))
            .build()
            .user_data(ud(CANCEL, 0, 0));
        self.push(e)
    }

    /// Timeouts (idle, slow client, linger) and, when draining, closing idle connections.
    fn sweep(&mut self, now: Instant) -> io::Result<()> {
        for i in 0..self.slots.len() as u32 {
            let s = &mut self.slots[i as usize];
            match s.state {
                State::Free | State::Closing => {}
                State::Lingering(until) => {
                    if now >= until {
                        self.abort(i, CloseReason::Client);
                    }
                }
                State::Open => {
                    if s.sending || !s.conn.out.is_empty() {
                        continue;
                    }
                    if let Some(t) = s.pending_since {
                        if now.duration_since(t) >= self.lc.slow {
                            self.core.timeout(&mut s.conn);
                            s.pending_since = None;
                            self.flush(i)?;
                        }
                    } else if self.draining {
                        self.abort(i, CloseReason::Shutdown);
                    } else if now.duration_since(s.last) >= self.lc.idle {
                        self.abort(i, CloseReason::IdleTimeout);
                    }
                }
            }
            self.maybe_close(i)?;
        }
        Ok(())
    }
}

/// Orders connection slots by their receive stamp, newest first (no stamp, 0, last). In place,
/// no allocation.
fn freshest_first(slots: &mut [u32], stamp: impl Fn(u32) -> u64) {
    slots.sort_unstable_by_key(|&i| std::cmp::Reverse(stamp(i)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn freshest_first_orders_by_stamp_newest_first_unstamped_last() {
        let stamps = [300u64, 0, 900, 100, 500];
        let mut slots = vec![0u32, 1, 2, 3, 4];
        freshest_first(&mut slots, |i| stamps[i as usize]);
        assert_eq!(slots, [2, 4, 0, 3, 1]);
    }
    use std::net::TcpStream;
    use std::time::Duration;

    fn lc() -> LoopConfig {
        let ms = Duration::from_millis;
        LoopConfig {
            idle: ms(1000),
            slow: ms(1000),
            linger: ms(0),
            publish: ms(100),
            drain: ms(100),
            tick: ms(10),
            max_conns: 4,
            ring_entries: 8,
            buffers: 4,
            buffer_bytes: 4096,
            rx_timestamps: true,
        }
    }

    fn unix_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    /// This kernel returns TCP's receive stamp through an io_uring `RECVMSG` multishot with
    /// provided buffers: bytes that sat 30 ms in the socket buffer before the ring read them
    /// are seen 30 ms old, and EOF is an empty payload.
    #[test]
    fn recvmsg_multishot_carries_the_tcp_receive_stamp() {
        let Ok(mut ring) = Ring::new(&lc()) else {
            eprintln!("skipped: no io_uring here");
            return;
        };
        // Stamping is turned on in the kernel asynchronously the first time a socket asks.
        assert!(crate::rxtime::probe(Duration::from_secs(2)));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        crate::rxtime::enable(s.as_raw_fd()).unwrap();
        let msghdr = recvmsg_template();
        let e = opcode::RecvMsgMulti::new(Fd(s.as_raw_fd()), &msghdr, BGID)
            .build()
            .user_data(7);
        // SAFETY: `msghdr` and the buffer ring outlive the operation (the ring is dropped, and
        // the operation with it, before them at the end of the test).
        unsafe { ring.ring.submission().push(&e).unwrap() };
        ring.ring.submit().unwrap();
        let sent = unix_ns();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        ring.ring.submit_and_wait(1).unwrap();
        let read_at = unix_ns();
        let cqe = ring.ring.completion().next().expect("a completion");
        assert!(cqe.result() > 0, "recvmsg: {}", cqe.result());
        assert!(cqueue::more(cqe.flags()), "the multishot goes on");
        let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
        let raw = ring.bufs.buf(bid, cqe.result() as usize);
        let m = RecvMsgOut::parse(raw, &msghdr).unwrap();
        assert_eq!(m.payload_data(), b"GET / HTTP/1.1\r\n\r\n");
        let rx = crate::rxtime::parse(m.control_data()).expect("the stamp came through io_uring");
        assert!(sent <= rx && rx <= read_at, "{sent} ≤ {rx} ≤ {read_at}");
        let age = crate::rxtime::age_ns(rx, read_at);
        assert!(age >= 29_000_000, "waited {age} ns in the socket buffer");
        ring.bufs.recycle(bid);
        ring.bufs.publish();
        // EOF: a completion whose payload is empty, ending the multishot.
        drop(c);
        ring.ring.submit_and_wait(1).unwrap();
        let cqe = ring.ring.completion().next().expect("a completion");
        assert!(!cqueue::more(cqe.flags()));
        if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
            let raw = ring.bufs.buf(bid, cqe.result().max(0) as usize);
            assert!(
                RecvMsgOut::parse(raw, &msghdr)
                    .unwrap()
                    .payload_data()
                    .is_empty()
            );
        } else {
            assert_eq!(cqe.result(), 0);
        }
    }
}

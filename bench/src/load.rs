//! The load engine: N keep-alive HTTP/1.1 connections driven by one thread over `epoll`.
//!
//! Open loop: request `i` is due at `start + i / rate` ([`Schedule`]); due requests wait in a
//! bounded backlog until a connection is idle, and their latency counts from the due time
//! (coordinated-omission correct). Closed loop: every connection sends its next request as soon
//! as the previous answer arrives (max throughput; latency from the actual send). One request per
//! connection at a time, no pipelining. Requests are rendered once before the run; the run
//! itself allocates nothing per request. Everything is owned by the one thread that calls
//! [`run`]. Must never: block on a socket during the run (connects aside) or record a latency
//! measured from anything but the intended send time.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::http::{self, ParseError};
use crate::latency::{LatencySummary, Recorder, Schedule};
use crate::sys::{self, Clock};

/// Receive buffer per connection; a larger response is an error (`malformed`).
pub const RECV_BUF: usize = 64 * 1024;
/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    /// Fixed offered rate, requests per second.
    Open { rate: u64 },
    /// Each connection sends again as soon as it is answered.
    Closed,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub connections: usize,
    pub mode: Mode,
    /// Time at the start whose requests are not measured.
    pub warmup: Duration,
    /// Measured time after the warm-up (scheduling stops at its end).
    pub duration: Duration,
    /// At most this many measured requests (`None`: as many as `duration` allows).
    pub max_requests: Option<u64>,
    /// A request unanswered after this long is an error (`timeout`) and its connection is
    /// replaced.
    pub timeout: Duration,
    /// Due requests waiting for an idle connection, at most; past it they are dropped and
    /// counted (`backlog_overflow`): the run then no longer measures the target rate.
    pub max_backlog: usize,
    /// Reconnects allowed over the whole run (connections that failed or were closed).
    pub max_reconnects: u64,
    /// Process whose CPU time over the measured window is reported (the server).
    pub server_pid: Option<u32>,
}

/// Failures by kind. A failed request is counted here and not in the latency histogram.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Errors {
    /// Could not (re)connect.
    pub connect: u64,
    /// Writing the request failed.
    pub write: u64,
    /// Reading failed (reset, …).
    pub read: u64,
    /// The server closed the connection with a request outstanding.
    pub closed: u64,
    /// No answer within the timeout.
    pub timeout: u64,
    /// The answer was not HTTP we understand, too large, or unsolicited.
    pub malformed: u64,
    /// Due requests dropped because the backlog was full (open loop).
    pub backlog_overflow: u64,
    /// Due requests still waiting for a connection when the run's hard end came (open loop:
    /// the server could not keep up with the offered rate).
    pub unsent: u64,
    /// Status 5xx answers (also in `statuses`, and in the latency histogram).
    pub http_5xx: u64,
    /// Status 4xx answers (also in `statuses`, and in the latency histogram).
    pub http_4xx: u64,
}

impl Errors {
    /// Failed requests (HTTP error statuses are answers and not counted here).
    pub fn failed(&self) -> u64 {
        self.connect
            + self.write
            + self.read
            + self.closed
            + self.timeout
            + self.malformed
            + self.backlog_overflow
            + self.unsent
    }
}

/// What one run measured. Everything but `warmup_*` is about the measured window only.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub mode: Mode,
    pub connections: usize,
    /// Offered rate (open loop), else `null`.
    pub offered_rps: Option<u64>,
    /// Measured requests completed (any status) per second of the measured window.
    pub achieved_rps: f64,
    /// Measured window, s: from the end of warm-up to the last measured answer (open loop) or to
    /// when sending stopped (closed loop).
    pub window_s: f64,
    pub sent: u64,
    pub completed: u64,
    pub warmup_completed: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: Errors,
    pub reconnects: u64,
    pub latency: LatencySummary,
    /// Latency of the `200` answers alone (the requests the server decided and bid on; under
    /// overload, the ones it accepted rather than shed with a quick `204`).
    pub latency_200: LatencySummary,
    /// This generator's CPU time per completed request, µs (its own thread).
    pub generator_cpu_us_per_req: f64,
    /// This generator's CPU use over the window (1.0 = one full core).
    pub generator_cpu_util: f64,
    /// The server's CPU time (utime + stime) per completed request, µs.
    pub server_cpu_us_per_req: Option<f64>,
    /// The server's CPU use over the window (1.0 = one full core).
    pub server_cpu_util: Option<f64>,
    /// The server's CPU time per completed request, µs, by thread name (`/proc/<pid>/task`):
    /// where `server_cpu_us_per_req` goes (event loops, Kafka producer, replicator, …).
    pub server_threads_cpu_us_per_req: BTreeMap<String, f64>,
    /// The server's CPU use over the window by thread name (1.0 = one full core): the share of
    /// a CPU each thread got.
    pub server_threads_cpu_util: BTreeMap<String, f64>,
    /// Share of the window the generator's thread was runnable but waiting for its CPU (run
    /// delay, `/proc/thread-self/schedstat`): > a few % means another task took its CPU and
    /// the latencies include the generator's own lateness. `None`: the kernel keeps no schedstat.
    pub generator_wait_util: Option<f64>,
    /// The same for each server thread (by name, `/proc/<pid>/task/*/schedstat`): a server core
    /// thread that waited runnable was starved by another task, not idle.
    pub server_threads_wait_util: BTreeMap<String, f64>,
    /// The generator thread's scheduling policy ("SCHED_OTHER", "SCHED_FIFO 50", …).
    pub generator_policy: String,
}

/// The pre-rendered requests of a run, sent round-robin.
#[derive(Debug)]
pub struct Requests {
    bufs: Vec<Vec<u8>>,
}

impl Requests {
    /// Renders `POST path` with each body, `Host` set to `host`.
    pub fn post_json<'a>(
        host: &str,
        path: &str,
        bodies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Requests {
        Requests {
            bufs: bodies
                .into_iter()
                .map(|b| http::render_request("POST", host, path, Some("application/json"), b))
                .collect(),
        }
    }
    pub fn len(&self) -> usize {
        self.bufs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }
}

#[derive(Debug)]
struct Conn {
    stream: Option<TcpStream>,
    /// Index into `Requests` of the request being written or awaited.
    req: usize,
    /// Bytes of it written so far.
    written: usize,
    busy: bool,
    intended_ns: u64,
    sent_ns: u64,
    measured: bool,
    rbuf: Box<[u8]>,
    filled: usize,
}

/// Runs one load run to completion and reports it.
pub fn run(cfg: &LoadConfig, reqs: &Requests) -> anyhow::Result<LoadReport> {
    if reqs.is_empty() {
        bail!("no requests to send");
    }
    if cfg.connections == 0 || cfg.connections > MAX_CONNECTIONS {
        bail!("connections must be 1..={MAX_CONNECTIONS}");
    }
    sys::tight_timer_slack();
    let ep = Epoll::new()?;
    let mut conns: Vec<Conn> = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        let s = connect(cfg.addr).with_context(|| format!("connecting to {}", cfg.addr))?;
        ep.add(s.as_raw_fd(), i as u64)?;
        conns.push(Conn {
            stream: Some(s),
            req: 0,
            written: 0,
            busy: false,
            intended_ns: 0,
            sent_ns: 0,
            measured: false,
            rbuf: vec![0u8; RECV_BUF].into_boxed_slice(),
            filled: 0,
        });
    }
    let mut e = Engine {
        cfg,
        reqs,
        ep,
        clock: Clock::new(),
        conns,
        idle: (0..cfg.connections).rev().collect(),
        backlog: VecDeque::with_capacity(cfg.max_backlog),
        next_req: 0,
        rec: Recorder::new(),
        rec_200: Recorder::new(),
        statuses: BTreeMap::new(),
        errors: Errors::default(),
        reconnects: 0,
        sent: 0,
        completed: 0,
        warmup_completed: 0,
        inflight: 0,
        last_done_ns: 0,
        finishing: false,
    };
    e.run()
}

struct Engine<'a> {
    cfg: &'a LoadConfig,
    reqs: &'a Requests,
    ep: Epoll,
    clock: Clock,
    conns: Vec<Conn>,
    idle: Vec<usize>,
    backlog: VecDeque<u64>,
    next_req: usize,
    rec: Recorder,
    rec_200: Recorder,
    statuses: BTreeMap<u16, u64>,
    errors: Errors,
    reconnects: u64,
    sent: u64,
    completed: u64,
    warmup_completed: u64,
    inflight: usize,
    last_done_ns: u64,
    /// Set at the hard end: failed connections are not replaced any more.
    finishing: bool,
}

#[derive(Debug, Clone, Copy)]
enum Fail {
    Write,
    Read,
    Closed,
    Timeout,
    Malformed,
}

impl Engine<'_> {
    fn run(&mut self) -> anyhow::Result<LoadReport> {
        let start = self.clock.now_ns();
        let warm_end = start + self.cfg.warmup.as_nanos() as u64;
        let end = warm_end + self.cfg.duration.as_nanos() as u64;
        let hard_end = end + self.cfg.timeout.as_nanos() as u64 + 1_000_000_000;
        let limit = self.cfg.max_requests.unwrap_or(u64::MAX);
        let sched = match self.cfg.mode {
            Mode::Open { rate } => Some(Schedule::new(start, rate)),
            Mode::Closed => None,
        };
        let mut next_i = 0u64; // next scheduled request (open loop)
        let mut measured_scheduled = 0u64;
        let mut scheduling = true;
        let mut stopped_ns = end; // when sending stopped (end of the window or the request bound)
        let mut window_open: Option<(u64, u64, Option<u64>)> = None; // (gen cpu, wall, server cpu)
        let mut threads0: Option<BTreeMap<String, u64>> = None; // server CPU by thread name
        let mut waits0: Option<BTreeMap<String, u64>> = None; // server run delay by thread name
        let mut gen_sched0: Option<sys::SchedStat> = None;
        let mut next_scan = start + 1_000_000;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];

        loop {
            let now = self.clock.now_ns();
            if window_open.is_none() && now >= warm_end {
                let server = self
                    .cfg
                    .server_pid
                    .and_then(|p| sys::process_cpu_ns(p).ok());
                threads0 = self
                    .cfg
                    .server_pid
                    .and_then(|p| sys::process_threads_cpu_ns(p).ok());
                waits0 = self
                    .cfg
                    .server_pid
                    .and_then(|p| sys::process_threads_wait_ns(p).ok());
                gen_sched0 = sys::thread_schedstat();
                window_open = Some((sys::thread_cpu_ns(), now, server));
            }
            // Decide what is due.
            if scheduling {
                // Open loop: everything due by now, in order — the loop may have slept past
                // several due times (even past the end) while no connection was idle.
                if let Some(s) = &sched {
                    let due = s.due_by(now);
                    while next_i < due {
                        let t = s.due(next_i);
                        if t >= end || measured_scheduled >= limit {
                            scheduling = false;
                            stopped_ns = t.min(end);
                            break;
                        }
                        if t >= warm_end {
                            measured_scheduled += 1;
                        }
                        if self.backlog.len() >= self.cfg.max_backlog {
                            if t >= warm_end {
                                self.errors.backlog_overflow += 1;
                            }
                        } else {
                            self.backlog.push_back(t);
                        }
                        next_i += 1;
                    }
                }
                if scheduling && (now >= end || measured_scheduled >= limit) {
                    scheduling = false;
                    stopped_ns = now.min(end);
                }
            }
            // Hand due work to idle connections.
            match sched {
                Some(_) => {
                    while !self.backlog.is_empty() {
                        let Some(c) = self.idle.pop() else { break };
                        let t = self.backlog.pop_front().unwrap_or(now);
                        self.send(c, t, t >= warm_end, now);
                    }
                }
                None => {
                    while scheduling && measured_scheduled < limit {
                        let Some(c) = self.idle.pop() else { break };
                        let measured = now >= warm_end;
                        measured_scheduled += u64::from(measured);
                        self.send(c, now, measured, now);
                    }
                }
            }
            if !scheduling && self.backlog.is_empty() && self.inflight == 0 {
                break;
            }
            if now >= hard_end {
                break;
            }
            if now >= next_scan {
                self.scan_timeouts(now);
                self.revive_dead();
                next_scan = now + 1_000_000;
                if self.conns.iter().all(|c| c.stream.is_none())
                    && self.reconnects >= self.cfg.max_reconnects
                {
                    bail!("every connection failed and the reconnect budget is spent");
                }
            }
            // Sleep until the next due request, the next scan, or I/O.
            let mut wake = next_scan.min(hard_end);
            if scheduling {
                // Wake for the next due request only if a connection could take it: with none
                // idle it can only join the backlog (or overflow it), which the catch-up at the
                // next I/O wake-up does the same way — only I/O frees a connection. Under
                // overload this saves a timer wake-up per offered request (at 3× capacity, most
                // of the generator's core).
                if let (Some(s), false) = (&sched, self.idle.is_empty()) {
                    wake = wake.min(s.due(next_i));
                }
                if window_open.is_none() {
                    wake = wake.min(warm_end);
                }
            }
            let timeout_ns = wake.saturating_sub(self.clock.now_ns());
            let n = self.ep.wait(&mut events, timeout_ns)?;
            for ev in &events[..n] {
                let c = ev.u64 as usize;
                let flags = ev.events;
                if flags & (libc::EPOLLOUT as u32) != 0 {
                    self.on_writable(c);
                }
                if flags
                    & ((libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32)
                    != 0
                {
                    self.on_readable(c);
                }
            }
        }
        // Anything still outstanding at the hard end is a timeout; what never left, unsent.
        self.finishing = true;
        self.errors.unsent += self.backlog.iter().filter(|&&t| t >= warm_end).count() as u64;
        self.backlog.clear();
        for c in 0..self.conns.len() {
            if self.conns[c].busy {
                self.fail(c, Fail::Timeout);
            }
        }
        let (gen0, wall0, server0) = window_open.unwrap_or((sys::thread_cpu_ns(), warm_end, None));
        let gen_cpu = sys::thread_cpu_ns().saturating_sub(gen0);
        let server_cpu = match (self.cfg.server_pid, server0) {
            (Some(p), Some(s0)) => sys::process_cpu_ns(p).ok().map(|s1| s1.saturating_sub(s0)),
            _ => None,
        };
        let gen_wait = match (gen_sched0, sys::thread_schedstat()) {
            (Some(a), Some(b)) => Some(b.wait_ns.saturating_sub(a.wait_ns)),
            _ => None,
        };
        let waits: BTreeMap<String, u64> = match (self.cfg.server_pid, waits0) {
            (Some(p), Some(w0)) => sys::process_threads_wait_ns(p)
                .map(|w1| {
                    w1.into_iter()
                        .map(|(k, v)| {
                            let d = v.saturating_sub(w0.get(&k).copied().unwrap_or(0));
                            (k, d)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        let threads_cpu: BTreeMap<String, u64> = match (self.cfg.server_pid, threads0) {
            (Some(p), Some(t0)) => sys::process_threads_cpu_ns(p)
                .map(|t1| {
                    t1.into_iter()
                        .map(|(k, v)| {
                            let d = v.saturating_sub(t0.get(&k).copied().unwrap_or(0));
                            (k, d)
                        })
                        .filter(|(_, d)| *d > 0)
                        .collect()
                })
                .unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        // The measured window: open loop, until the last answer (a backlog that drains after
        // the schedule ended lowers the achieved rate, as it should); closed loop, until sending
        // stopped (a straggler answered later must not stretch it).
        let until = match self.cfg.mode {
            Mode::Open { .. } => self.last_done_ns,
            Mode::Closed => stopped_ns,
        };
        let wall = until.max(wall0 + 1).saturating_sub(wall0);
        let per_req = |ns: u64| {
            if self.completed == 0 {
                0.0
            } else {
                ns as f64 / 1000.0 / self.completed as f64
            }
        };
        let window_s = wall as f64 / 1e9;
        Ok(LoadReport {
            mode: self.cfg.mode,
            connections: self.cfg.connections,
            offered_rps: match self.cfg.mode {
                Mode::Open { rate } => Some(rate),
                Mode::Closed => None,
            },
            achieved_rps: self.completed as f64 / window_s,
            window_s,
            sent: self.sent,
            completed: self.completed,
            warmup_completed: self.warmup_completed,
            statuses: self.statuses.clone(),
            errors: self.errors,
            reconnects: self.reconnects,
            latency: self.rec.summary(),
            latency_200: self.rec_200.summary(),
            generator_cpu_us_per_req: per_req(gen_cpu),
            generator_cpu_util: gen_cpu as f64 / wall as f64,
            server_cpu_us_per_req: server_cpu.map(per_req),
            server_cpu_util: server_cpu.map(|s| s as f64 / wall as f64),
            server_threads_cpu_us_per_req: threads_cpu
                .iter()
                .map(|(k, &v)| (k.clone(), per_req(v)))
                .collect(),
            server_threads_cpu_util: threads_cpu
                .into_iter()
                .map(|(k, v)| (k, v as f64 / wall as f64))
                .collect(),
            generator_wait_util: gen_wait.map(|w| w as f64 / wall as f64),
            server_threads_wait_util: waits
                .into_iter()
                .map(|(k, v)| (k, v as f64 / wall as f64))
                .collect(),
            generator_policy: sys::thread_policy(),
        })
    }

    fn send(&mut self, c: usize, intended_ns: u64, measured: bool, now: u64) {
        let req = self.next_req;
        self.next_req = (self.next_req + 1) % self.reqs.len();
        let conn = &mut self.conns[c];
        debug_assert!(!conn.busy && conn.stream.is_some());
        conn.req = req;
        conn.written = 0;
        conn.busy = true;
        conn.intended_ns = intended_ns;
        conn.sent_ns = now;
        conn.measured = measured;
        self.inflight += 1;
        if measured {
            self.sent += 1;
        }
        self.on_writable(c);
    }

    fn on_writable(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if !conn.busy {
            return;
        }
        let buf = &self.reqs.bufs[conn.req];
        let Some(s) = conn.stream.as_mut() else {
            return;
        };
        while conn.written < buf.len() {
            match s.write(&buf[conn.written..]) {
                Ok(0) => return self.fail(c, Fail::Write),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(c, Fail::Write),
            }
        }
    }

    fn on_readable(&mut self, c: usize) {
        loop {
            let conn = &mut self.conns[c];
            let Some(s) = conn.stream.as_mut() else {
                return;
            };
            if conn.filled == conn.rbuf.len() {
                return self.fail(c, Fail::Malformed);
            }
            let room = conn.rbuf.len() - conn.filled;
            match s.read(&mut conn.rbuf[conn.filled..]) {
                Ok(0) => {
                    if conn.busy {
                        return self.fail(c, Fail::Closed);
                    }
                    return self.replace(c);
                }
                Ok(n) => {
                    conn.filled += n;
                    if !self.parse(c) {
                        return;
                    }
                    // A short read drained the socket: the next data brings a new edge.
                    if n < room {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    if self.conns[c].busy {
                        return self.fail(c, Fail::Read);
                    }
                    return self.replace(c);
                }
            }
        }
    }

    /// Consumes a complete response if there is one. Returns false when the connection was
    /// failed or replaced (stop reading it).
    fn parse(&mut self, c: usize) -> bool {
        let conn = &mut self.conns[c];
        let parsed = http::parse_response(&conn.rbuf[..conn.filled]);
        let r = match parsed {
            Ok(None) => return true,
            Ok(Some(r)) => r,
            Err(ParseError::Malformed | ParseError::TooLarge | ParseError::NoFraming) => {
                self.fail(c, Fail::Malformed);
                return false;
            }
        };
        if !conn.busy || r.consumed != conn.filled || conn.written < self.reqs.bufs[conn.req].len()
        {
            // Unsolicited bytes, or an answer before the request was fully written.
            self.fail(c, Fail::Malformed);
            return false;
        }
        let now = self.clock.now_ns();
        conn.filled = 0;
        conn.busy = false;
        self.inflight -= 1;
        if conn.measured {
            self.completed += 1;
            self.rec.record(conn.intended_ns, now);
            if r.status == 200 {
                self.rec_200.record(conn.intended_ns, now);
            }
            self.last_done_ns = now;
            *self.statuses.entry(r.status).or_insert(0) += 1;
            match r.status {
                500..=599 => self.errors.http_5xx += 1,
                400..=499 => self.errors.http_4xx += 1,
                _ => {}
            }
        } else {
            self.warmup_completed += 1;
        }
        if r.close {
            self.replace(c);
            return false;
        }
        self.idle.push(c);
        true
    }

    fn fail(&mut self, c: usize, why: Fail) {
        let conn = &mut self.conns[c];
        if conn.busy {
            conn.busy = false;
            self.inflight -= 1;
            if conn.measured {
                let e = &mut self.errors;
                match why {
                    Fail::Write => e.write += 1,
                    Fail::Read => e.read += 1,
                    Fail::Closed => e.closed += 1,
                    Fail::Timeout => e.timeout += 1,
                    Fail::Malformed => e.malformed += 1,
                }
            }
        }
        self.replace(c);
    }

    /// Drops connection `c` and opens a new one in its place (within the reconnect budget).
    fn replace(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        debug_assert!(!conn.busy);
        if let Some(s) = conn.stream.take() {
            self.ep.del(s.as_raw_fd());
        }
        conn.filled = 0;
        self.idle.retain(|&i| i != c);
        self.reconnect(c);
    }

    fn reconnect(&mut self, c: usize) {
        if self.finishing || self.reconnects >= self.cfg.max_reconnects {
            return;
        }
        self.reconnects += 1;
        match connect(self.cfg.addr) {
            Ok(s) if self.ep.add(s.as_raw_fd(), c as u64).is_ok() => {
                self.conns[c].stream = Some(s);
                self.idle.push(c);
            }
            _ => self.errors.connect += 1,
        }
    }

    fn revive_dead(&mut self) {
        for c in 0..self.conns.len() {
            if self.conns[c].stream.is_none() {
                self.reconnect(c);
            }
        }
    }

    fn scan_timeouts(&mut self, now: u64) {
        let limit = self.cfg.timeout.as_nanos() as u64;
        for c in 0..self.conns.len() {
            let conn = &self.conns[c];
            if conn.busy && now.saturating_sub(conn.sent_ns) > limit {
                self.fail(c, Fail::Timeout);
            }
        }
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The few `epoll` calls the engine makes.
#[derive(Debug)]
struct Epoll {
    fd: RawFd,
}

impl Epoll {
    fn new() -> anyhow::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        Ok(Epoll { fd })
    }

    fn add(&self, fd: RawFd, token: u64) -> anyhow::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both fds are open and owned by us; ev lives across the call.
        let rc = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl add");
        }
        Ok(())
    }

    fn del(&self, fd: RawFd) {
        // SAFETY: deleting an fd from our epoll set; a null event is allowed for DEL.
        unsafe {
            libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
        }
    }

    /// Waits up to `timeout_ns` (nanosecond precision, `epoll_pwait2`).
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ns: u64) -> anyhow::Result<usize> {
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `events` is a valid writable slice of its length; `ts` lives across the call;
        // a null sigmask means no mask change.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e).context("epoll_pwait2");
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this fd and close it once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

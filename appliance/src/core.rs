//! [`Core`]: one core's sans-IO server — bytes in from a connection, bytes out to it.
//!
//! A `Core` is owned by exactly one event-loop thread (the one pinned to that CPU) and holds
//! everything a request touches: the [`Shard`], the response encoder, the gzip inflater, the
//! decision buffer, the event sink and the per-core metrics. A [`Conn`] holds one connection's
//! input and output bytes; drivers (io_uring, epoll) move bytes between sockets and `Conn`s and
//! call [`Core::on_input`]. No runtime types appear here, so everything is testable bytes in →
//! bytes out.
//!
//! Deadlines: a bid request's budget is `tmax` (or the configured default) minus the network
//! margin, counted from the kernel's receive stamp of its bytes ([`Conn::set_rx_stamp`],
//! [`crate::rxtime`]; without a stamp, from the start of the loop turn that read them,
//! [`Core::begin_turn`]); past it the answer is a 204 (reason `deadline`), never a late bid.
//! Overload: before decoding, [`crate::admission`] sheds a request already past its deadline
//! (`deadline`) or, while a queue stands, older than a share of it (`overloaded`), at the cost
//! of a parse and a 204; and once a turn has run for `turn_budget`, its further requests are
//! answered 204 `overloaded` at once, so a turn stays short. Every shed is also counted by why
//! ([`crate::metrics::ShedReason`]).
//!
//! Profiles: with consent (the shard's privacy verdict, first) and a replica, the user's index
//! slot is prefetched as soon as the verdict is in ([`profile_cache::Reader::prefetch`]), the
//! record's lines once the decision has hashed the request's keys, and the lookup itself happens
//! inside the decision after its request-level pre-filters ([`shards::ProfileSource`]), so the memory arrives while
//! that work runs ([`ProfileOrder`]; the decision is the same in every order).
//!
//! Must never: allocate on the warm path, lock, block, panic on input, or touch another core's
//! state.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arrayvec::{ArrayString, ArrayVec};
use codec::event::{Event, EventKind, InlineStr, NoBidReason};
use codec::request::MAX_IMPS;
use codec::{Bid, BidResponse, Currency, ResponseEncoder, SeatBid};
use quanta::{Clock, Instant};
use shards::campaign::Format;
use shards::{CompiledSet, Decision, Shard};

use crate::admission::{Admission, AdmissionConfig, Verdict};
use crate::events::EventSink;
use crate::gzip::{InflateError, Inflater};
use crate::http::{self, HttpError, Limits, Method, Parsed};
use crate::metrics::{CloseReason, CoreMetrics, Published, ShedReason};
use crate::route::{self, NoticeKind, Route};
use pipeline::notice::{BidParams, NoticeKind as PNoticeKind, NoticeSigner};
use profile_cache::{Prefetch, ProfileRef, Reader};
use shards::{ProfileSource, ProfileView};

/// Most `adomain` entries copied into one bid.
const MAX_ADOMAIN: usize = 8;

/// Most bytes of a bid's encoded notice parameters (request and imp ids, site domain or app
/// bundle, exchange, node, user id — percent-encoded — plus the numbers). A request whose
/// parameters could pass it is refused (400, counted `invalid_request`) before the decision, so
/// the notice buffers sized from it at start never grow.
pub const MAX_NOTICE_PARAMS: usize = 2048;
/// Bytes a notice URL adds to its route and parameters: `?`, `&k=K&s=` + 32 hex, the macros.
const NOTICE_URL_EXTRA: usize = 160;

/// When a bid request's profile is looked up in the replica, relative to the rest of its work.
/// The decision is the same in every order (tested); only where the lookup's memory latency
/// falls differs. Benchmarks compare them in one process (`Core::set_profile_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProfileOrder {
    /// Before the decision, right after the privacy verdict (sessions 1–4).
    Eager,
    /// Inside the decision, after its request-level pre-filters, without a prefetch.
    Late,
    /// The index slot prefetched right after the privacy verdict, the record's lines once the
    /// decision has hashed the request's keys, the lookup after the pre-filters (the default).
    #[default]
    Prefetch,
    /// As `Prefetch`, but only the slot is prefetched (the record's lines are fetched by the
    /// lookup itself).
    PrefetchSlot,
}

/// The decision's [`ProfileSource`] in the late orders: the replica and the user's id, or the
/// lookup begun early by [`Reader::prefetch`].
struct LateProfile<'r> {
    reader: &'r Reader,
    user: &'r str,
    early: Option<Prefetch<'r>>,
    /// Advance the early lookup to the record's lines when the decision calls `prepare`.
    record_too: bool,
}

impl<'r> ProfileSource for LateProfile<'r> {
    type Profile<'s>
        = ProfileRef<'r>
    where
        Self: 's;

    #[inline]
    fn prepare(&self) {
        if let (Some(p), true) = (&self.early, self.record_too) {
            self.reader.prefetch_record(p);
        }
    }

    #[inline]
    fn fetch(&self) -> Option<ProfileRef<'r>> {
        match self.early {
            Some(p) => self.reader.get_prefetched(p),
            None => self.reader.get(self.user),
        }
    }
}

/// Everything a core needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub core_id: u16,
    /// Node name carried in events (≤ 32 bytes kept).
    pub node: String,
    pub limits: Limits,
    /// Largest body after gzip inflation.
    pub max_inflated_body: usize,
    /// Answer every bid request 204 without decoding it (the HTTP stack's ceiling).
    pub null_mode: bool,
    /// `tmax` assumed when a request carries none, ms.
    pub default_tmax_ms: u32,
    /// Subtracted from `tmax` for the network on both sides, ms.
    pub margin_ms: u32,
    /// Standing-queue shedding: share of a request's budget (percent) it may have waited while
    /// a queue stands (0: off), see [`crate::admission`].
    pub shed_queue_pct: u32,
    /// Interval over which a standing queue is judged.
    pub shed_interval: Duration,
    /// Queueing target of the standing-queue rule (zero: `shed_queue_pct` alone), see
    /// [`crate::admission`].
    pub queue_target: Duration,
    /// Time since the turn began past which its further bid requests are answered 204
    /// `overloaded` (zero: no time bound). At least one request per turn is always decided.
    pub turn_budget: Duration,
    /// A connection's pending output past which its further pipelined requests wait.
    pub out_high_water: usize,
    /// Seat name in bid responses (and the seat checked against `wseat`).
    pub seat: String,
    /// Our IAB Global Vendor List id (TCF vendor consent is checked for it).
    pub vendor_id: u16,
    /// Initial capacity of a connection's input and output buffers.
    pub conn_in_capacity: usize,
    pub conn_out_capacity: usize,
    /// HMAC key of the notice URLs.
    pub notice_key: Vec<u8>,
    /// `scheme://host[:port]` the notice routes are reached at.
    pub notice_base: String,
    /// Notices later than this after the bid are flagged late.
    pub notice_late_window: Duration,
    /// Exchanges allowed to ask for the decision trace (`*` = any; empty = none), see
    /// [`crate::trace`].
    pub trace_exchanges: Vec<String>,
}

impl CoreConfig {
    /// Input a connection may hold unprocessed (one whole request plus pipelined slack).
    pub fn max_conn_input(&self) -> usize {
        self.limits.max_header + self.limits.max_body + 64 * 1024
    }
}

/// One connection's bytes. Owned by the core's driver, handed to [`Core::on_input`].
#[derive(Debug)]
pub struct Conn {
    buf: Vec<u8>,
    /// First unconsumed byte of `buf`.
    start: usize,
    max_in: usize,
    /// Bytes to send, in order. The driver sends and clears them.
    pub out: Vec<u8>,
    continue_sent: bool,
    close: bool,
    close_reason: CloseReason,
    /// Kernel receive stamp of the last bytes pushed, Unix ns (0: none, count from the read).
    rx_unix_ns: u64,
}

impl Conn {
    pub fn new(cfg: &CoreConfig) -> Conn {
        Conn {
            buf: Vec::with_capacity(cfg.conn_in_capacity),
            start: 0,
            max_in: cfg.max_conn_input(),
            out: Vec::with_capacity(cfg.conn_out_capacity),
            continue_sent: false,
            close: false,
            close_reason: CloseReason::Client,
            rx_unix_ns: 0,
        }
    }

    /// Makes a closed connection's buffers ready for a new one (keeps their memory).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.out.clear();
        self.continue_sent = false;
        self.close = false;
        self.close_reason = CloseReason::Client;
        self.rx_unix_ns = 0;
    }

    /// The kernel's receive stamp of the last bytes pushed (Unix ns; 0: none): drivers order
    /// connections freshest first by it while a queue stands.
    pub fn rx_stamp(&self) -> u64 {
        self.rx_unix_ns
    }

    /// The kernel's receive stamp (Unix ns, [`crate::rxtime`]) of the bytes just pushed; 0 when
    /// the read carried none. The requests handled next count their age from it.
    pub fn set_rx_stamp(&mut self, unix_ns: u64) {
        self.rx_unix_ns = unix_ns;
    }

    /// Appends received bytes. `false` (nothing appended) when that would pass the input bound:
    /// the driver closes the connection (`input_overflow`).
    pub fn push(&mut self, data: &[u8]) -> bool {
        if self.buf.len() - self.start + data.len() > self.max_in {
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    /// The input buffer, for drivers that read straight into it (`read_buf`). Callers keep it
    /// under [`Conn::input_room`] more bytes.
    pub fn input_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// How many more bytes the input may take.
    pub fn input_room(&self) -> usize {
        self.max_in.saturating_sub(self.buf.len() - self.start)
    }

    /// Unprocessed input is waiting (a partial request, or requests held back by backpressure).
    pub fn has_pending_input(&self) -> bool {
        self.start < self.buf.len()
    }

    /// The connection is to be closed once `out` is sent.
    pub fn wants_close(&self) -> bool {
        self.close
    }

    /// Marks the connection to close after `out` is sent (shutdown, timeouts).
    pub fn set_close(&mut self, why: CloseReason) {
        if !self.close {
            self.close = true;
            self.close_reason = why;
        }
    }

    /// Why the connection is to close (meaningful once [`Conn::wants_close`]).
    pub fn close_reason(&self) -> CloseReason {
        self.close_reason
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
        }
        self.start = 0;
    }
}

/// Unique 16-byte ids made on one core with no coordination: start time, core, counter.
#[derive(Debug)]
struct IdGen {
    prefix: [u8; 8],
    core: u16,
    n: u64,
}

impl IdGen {
    fn next(&mut self) -> [u8; 16] {
        self.n += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.prefix);
        id[8..10].copy_from_slice(&self.core.to_be_bytes());
        id[10..].copy_from_slice(&self.n.to_be_bytes()[2..]);
        id
    }
}

/// The bidding half of a core (split from the inflater so a body borrowed from the inflater's
/// buffer can be decided on).
struct Bidder {
    cfg: CoreConfig,
    signer: NoticeSigner,
    /// Full notice routes: win, billing, loss, click.
    notice_routes: [String; 4],
    /// Notice URLs of the response being built (reused; sized at start for the most bids a
    /// response holds, never grows: `MAX_NOTICE_PARAMS`).
    urls: Vec<u8>,
    /// One bid's encoded notice parameters (reused, `MAX_NOTICE_PARAMS`).
    notice_params: Vec<u8>,
    /// Markup of the response's bids whose creative has a click macro, expanded (reused).
    adms: Vec<u8>,
    /// Body of a traced answer (grows only when a trace is asked for: not the normal path).
    trace_body: Vec<u8>,
    profiles: Option<Reader>,
    /// Where in a request the profile is looked up.
    profile_order: ProfileOrder,
    shard: Shard,
    enc: ResponseEncoder,
    decision: Decision,
    sink: Box<dyn EventSink>,
    metrics: CoreMetrics,
    ids: IdGen,
    clock: Clock,
    turn_start: Instant,
    turn_unix_ns: u64,
    /// Bid requests decided this turn (the turn budget always lets the first one through).
    admitted: u32,
    /// Receive stamp of the connection being handled (from [`Conn::set_rx_stamp`]).
    rx_unix_ns: u64,
    /// When the request being handled arrived, on the loop's clock.
    req_start: Instant,
    admission: Admission,
    ready: bool,
    /// Budget enforcement: notice settlement (None = budgets not enforced).
    budget: Option<crate::budget::CoreBudget>,
}

/// One core's server state. See the module documentation.
pub struct Core {
    b: Bidder,
    inflater: Inflater,
    published: Arc<Published>,
    draining: bool,
    /// Live campaign sets from Redis and budget leases, polled on the loop timer.
    feed: Option<crate::campaign_feed::CoreFeed>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("core", &self.b.cfg.core_id)
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Core {
    pub fn new(
        cfg: CoreConfig,
        campaigns: Arc<CompiledSet>,
        sink: Box<dyn EventSink>,
        clock: Clock,
        published: Arc<Published>,
        profiles: Option<Reader>,
    ) -> Core {
        let start = unix_ns();
        let turn_start = clock.now();
        let route = |k: &str| format!("{}/notice/{k}", cfg.notice_base);
        Core {
            inflater: Inflater::new(cfg.max_inflated_body),
            published,
            draining: false,
            feed: None,
            b: Bidder {
                signer: NoticeSigner::new(&cfg.notice_key).with_late_window(cfg.notice_late_window),
                notice_routes: [
                    route("win"),
                    route("billing"),
                    route("loss"),
                    route("click"),
                ],
                // Four URLs per bid (the click URL only until it is expanded), for the most bids
                // a response holds, each at most its route + the parameters' bound + the rest.
                urls: Vec::with_capacity(
                    4 * MAX_IMPS
                        * (cfg.notice_base.len() + 16 + MAX_NOTICE_PARAMS + NOTICE_URL_EXTRA),
                ),
                notice_params: Vec::with_capacity(MAX_NOTICE_PARAMS + 64),
                // Expanded markup: grows (once) only past 16 KiB of markup per response.
                adms: Vec::with_capacity(16 * 1024),
                trace_body: Vec::new(),
                profiles,
                profile_order: ProfileOrder::default(),
                shard: Shard::with_config(
                    cfg.core_id,
                    campaigns,
                    shards::ShardConfig {
                        seat: cfg.seat.clone(),
                        privacy: shards::PrivacyConfig {
                            vendor_id: cfg.vendor_id,
                        },
                        ..shards::ShardConfig::default()
                    },
                ),
                enc: ResponseEncoder::with_capacity(16 * 1024),
                decision: Decision::default(),
                sink,
                metrics: CoreMetrics::new(),
                ids: IdGen {
                    prefix: start.to_be_bytes(),
                    core: cfg.core_id,
                    n: 0,
                },
                clock,
                turn_start,
                turn_unix_ns: start,
                admitted: 0,
                rx_unix_ns: 0,
                req_start: turn_start,
                admission: Admission::new(AdmissionConfig {
                    queue_pct: cfg.shed_queue_pct,
                    target: cfg.queue_target,
                    interval: cfg.shed_interval,
                }),
                ready: true,
                budget: None,
                cfg,
            },
        }
    }

    pub fn id(&self) -> u16 {
        self.b.cfg.core_id
    }

    pub fn config(&self) -> &CoreConfig {
        &self.b.cfg
    }

    pub fn new_conn(&self) -> Conn {
        Conn::new(&self.b.cfg)
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.b.metrics
    }

    pub fn metrics_mut(&mut self) -> &mut CoreMetrics {
        &mut self.b.metrics
    }

    /// Bidding is allowed (campaigns — and, once merged, the profile cache — loaded). When not,
    /// bid requests are answered 204 `not_ready`.
    pub fn set_ready(&mut self, ready: bool) {
        self.b.ready = ready;
    }

    /// Where in a bid request the profile is looked up from now on (benchmarks and tests
    /// compare the orders; the default is [`ProfileOrder::Prefetch`]).
    pub fn set_profile_order(&mut self, order: ProfileOrder) {
        self.b.profile_order = order;
    }

    /// Takes live campaign sets from Redis from now on (polled in [`Core::publish`]).
    pub fn attach_feed(&mut self, feed: crate::campaign_feed::CoreFeed) {
        self.feed = Some(feed);
    }

    /// Enforces budgets from now on (before the first request): the shard bids only within its
    /// leases, and billing/loss notices settle them (`crate::budget`).
    pub fn attach_budget(&mut self, b: crate::budget::CoreBudget) {
        self.b
            .shard
            .enforce_budget(b.lease_ttl_ms, b.idle_return_ms, b.daily_share_ppm);
        self.b.budget = Some(b);
    }

    /// Swaps in a new campaign set between requests.
    pub fn install(&mut self, set: Arc<CompiledSet>) {
        self.b.shard.install(set);
    }

    /// From now on every response closes its connection (graceful shutdown).
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Starts a loop turn: the arrival time of every request handled until the next call that
    /// has no kernel receive stamp, and the pair of clocks (loop clock, realtime) that converts
    /// the stamps to the loop's clock, once per turn.
    pub fn begin_turn(&mut self) {
        self.b.turn_start = self.b.clock.now();
        self.b.turn_unix_ns = unix_ns();
        self.b.admitted = 0;
        self.b.metrics.turns += 1;
        self.b.admission.begin_turn(self.b.turn_start);
    }

    /// Copies the metrics into the published slot for the admin thread (never waits).
    /// The loop timer's periodic step (every `admin.publish_ms`): the shard's pacing control
    /// step, then the metrics copy for the admin thread (never waits).
    pub fn publish(&mut self) {
        // Budgets: first what other cores forwarded, then the tick and lease exchange.
        if let Some(b) = &mut self.b.budget {
            b.drain(&mut self.b.shard);
        }
        // With a live feed, its poll runs the shard's pacing tick (and the lease exchange).
        match &mut self.feed {
            Some(f) => f.poll(&mut self.b.shard),
            None => self.b.shard.tick(unix_ns()),
        }
        if let Some(b) = &mut self.b.budget {
            b.publish(&self.b.shard);
        }
        self.b.metrics.allocations = crate::alloc_count::thread_allocs();
        let st = self.b.signer.stats();
        self.b.metrics.notices_rejected = st.rejected;
        self.b.metrics.notices_late = st.late;
        if let Some(r) = &self.b.profiles {
            self.b.metrics.profile_lag_ms = r
                .lag_ms_at(self.b.turn_unix_ns / 1_000_000)
                .unwrap_or(u64::MAX);
        }
        self.published.publish(&self.b.metrics);
    }

    /// Shutdown, after the last request and the last [`Core::publish`]: flushes the event sink
    /// and queues the final settlement of the budget leases (spend reported, all but what
    /// outstanding bids reserved given back; the control thread sends it before it stops).
    pub fn flush_events(&mut self) {
        self.b.sink.flush();
        if self.b.budget.is_some()
            && let Some(f) = &mut self.feed
        {
            let left = f.close(&mut self.b.shard);
            if left > 0 {
                tracing::warn!(
                    core = self.b.cfg.core_id,
                    ops = left,
                    "budget: final settlements not queued (their leases will be forfeited)"
                );
            }
        }
    }

    /// A standing queue was seen over the last whole interval ([`crate::admission`]): the
    /// drivers then answer what is shed first ([`Core::shed_input`]) and decide the freshest
    /// requests first.
    pub fn shedding(&self) -> bool {
        self.b.admission.shedding()
    }

    /// The shed pass of a turn while a queue stands: answers at once the complete bid requests
    /// at the front of `conn`'s input that admission sheds (expired, or older than their
    /// target), without decoding them, and stops at the first request it would not shed (or
    /// that is not a plain bid request), which [`Core::on_input`] handles as usual. The driver
    /// sends these 204s before the turn's decisions start, so a shed answer does not wait for
    /// them. Counted exactly as when [`Core::on_input`] sheds.
    pub fn shed_input(&mut self, conn: &mut Conn) {
        self.b.rx_unix_ns = conn.rx_unix_ns;
        while !conn.close && conn.out.len() < self.b.cfg.out_high_water {
            let input = &conn.buf[conn.start..];
            if input.is_empty() {
                break;
            }
            let Parsed::Complete(req) = http::parse(input, self.b.cfg.limits) else {
                break;
            };
            let close = !req.keep_alive || self.draining;
            if !self.try_shed(&req, &mut conn.out, close) {
                break;
            }
            let len = req.len;
            self.answered(conn, len, close);
        }
        conn.compact();
    }

    /// Moves `conn` past a request of `len` bytes that has been answered, and marks the
    /// connection to close after its output when `close` (the client's wish, or draining).
    fn answered(&self, conn: &mut Conn, len: usize, close: bool) {
        conn.start += len;
        conn.continue_sent = false;
        if close {
            conn.set_close(if self.draining {
                CloseReason::Shutdown
            } else {
                CloseReason::Client
            });
        }
    }

    /// Answers `req` 204 if it is a bid request admission sheds; `false` (nothing written) for
    /// anything else.
    fn try_shed(&mut self, req: &http::Request<'_>, out: &mut Vec<u8>, close: bool) -> bool {
        if req.method != Method::Post
            || req.gzip
            || self.b.cfg.null_mode
            || !self.b.ready
            || !matches!(route::route(req.path), Route::Bid { .. })
        {
            return false;
        }
        let v = self.b.admission_verdict(req.body);
        if v == Verdict::Admit {
            return false;
        }
        self.b.metrics.bid_requests += 1;
        self.b.shed(v, out, close);
        true
    }

    /// Handles every complete request in `conn`'s input, appending the answers to `conn.out`.
    /// Stops early when the connection is to close or its output passed the high-water mark
    /// (the driver calls again once it has sent).
    pub fn on_input(&mut self, conn: &mut Conn) {
        self.b.rx_unix_ns = conn.rx_unix_ns;
        while !conn.close && conn.out.len() < self.b.cfg.out_high_water {
            let input = &conn.buf[conn.start..];
            if input.is_empty() {
                break;
            }
            match http::parse(input, self.b.cfg.limits) {
                Parsed::Partial { expect_continue } => {
                    if expect_continue && !conn.continue_sent {
                        conn.out.extend_from_slice(http::CONTINUE);
                        self.b.metrics.response(100);
                        conn.continue_sent = true;
                    }
                    break;
                }
                Parsed::Error(e) => {
                    self.refuse(conn, e);
                    break;
                }
                Parsed::Complete(req) => {
                    let close = !req.keep_alive || self.draining;
                    self.handle(&req, &mut conn.out, close);
                    let len = req.len;
                    self.answered(conn, len, close);
                }
            }
        }
        conn.compact();
    }

    /// Answers an HTTP-level refusal and marks the connection to close, dropping its input.
    fn refuse(&mut self, conn: &mut Conn, e: HttpError) {
        http::write_text(&mut conn.out, e.status(), &e, true);
        self.b.metrics.response(e.status());
        conn.set_close(CloseReason::HttpError);
        conn.start = conn.buf.len();
    }

    /// Answers a slow client (partial request past its time) with 408 and closes.
    pub fn timeout(&mut self, conn: &mut Conn) {
        http::write_text(&mut conn.out, 408, &"request timeout", true);
        self.b.metrics.response(408);
        conn.set_close(CloseReason::SlowClient);
        conn.start = conn.buf.len();
    }

    fn handle(&mut self, req: &http::Request<'_>, out: &mut Vec<u8>, close: bool) {
        let m = &mut self.b.metrics;
        match route::route(req.path) {
            Route::Bid { exchange } => {
                if req.method != Method::Post {
                    http::write_response(out, 405, "", b"Allow: POST\r\n", b"", close);
                    m.response(405);
                    return;
                }
                m.bid_requests += 1;
                if self.b.cfg.null_mode {
                    http::write_response(out, 204, "", b"", b"", close);
                    m.response(204);
                    return;
                }
                let body = if req.gzip {
                    m.gzip_bodies += 1;
                    match self.inflater.inflate(req.body) {
                        Ok(b) => b,
                        Err(e) => {
                            let status = if e == InflateError::TooLarge {
                                413
                            } else {
                                400
                            };
                            http::write_text(out, status, &e, close);
                            m.response(status);
                            m.no_bid(NoBidReason::InvalidRequest);
                            return;
                        }
                    }
                } else {
                    req.body
                };
                let ask = TraceAsk {
                    header: req.trace,
                    exchange_header: req.exchange_header,
                };
                self.b.bid(body, exchange, ask, out, close);
            }
            Route::Notice(kind) => {
                if !matches!(req.method, Method::Get | Method::Post) {
                    http::write_response(out, 405, "", b"Allow: GET, POST\r\n", b"", close);
                    m.response(405);
                    return;
                }
                let query = if req.method == Method::Post && req.query.is_empty() {
                    // A POSTed notice may carry its parameters as a form body.
                    req.body
                } else {
                    req.query.as_bytes()
                };
                self.b.notice(kind, query, out, close);
            }
            Route::Unknown => {
                http::write_text(out, 404, &"not found", close);
                m.response(404);
            }
        }
    }
}

impl Bidder {
    /// Time since the turn began.
    fn elapsed(&self) -> Duration {
        self.clock.now().duration_since(self.turn_start)
    }

    /// Age of the request being handled: since the kernel received it (or since the turn
    /// began when there is no stamp).
    fn age(&self) -> Duration {
        self.clock.now().duration_since(self.req_start)
    }

    /// A request's time budget: `tmax` minus the network margin.
    fn budget(&self, tmax_ms: u32) -> Duration {
        Duration::from_millis(u64::from(tmax_ms.saturating_sub(self.cfg.margin_ms)))
    }

    fn no_bid(&mut self, out: &mut Vec<u8>, close: bool, reason: NoBidReason, request_id: &str) {
        http::write_response(out, 204, "", b"", b"", close);
        self.metrics.response(204);
        self.metrics.no_bid(reason);
        let mut e = Event::new(EventKind::NoBid);
        e.reason = reason.code();
        e.request_id = InlineStr::new(request_id);
        self.emit(&mut e);
    }

    fn emit(&mut self, e: &mut Event) {
        e.core = self.cfg.core_id;
        e.event_id = self.ids.next();
        e.ts_unix_ns = self.turn_unix_ns;
        e.node = InlineStr::new(&self.cfg.node);
        self.sink.emit(e);
        self.metrics.events += 1;
    }

    fn notice(&mut self, kind: NoticeKind, query: &[u8], out: &mut Vec<u8>, close: bool) {
        let pk = match kind {
            NoticeKind::Win => PNoticeKind::Win,
            NoticeKind::Billing => PNoticeKind::Billing,
            NoticeKind::Loss => PNoticeKind::Loss,
            NoticeKind::Click => PNoticeKind::Click,
        };
        match self.signer.verify(pk, query, self.turn_unix_ns) {
            Ok(v) => {
                self.metrics.notices[kind as usize] += 1;
                if kind == NoticeKind::Billing && !v.user_id.as_str().is_empty() {
                    // Frequency caps on this core see the impression before the replica does.
                    self.shard.record_impression(
                        shards::user_hash(v.user_id.as_str()),
                        v.campaign_id,
                        self.turn_unix_ns,
                    );
                }
                // Budgets: billing spends and loss releases the bid's reservation, on the
                // core that made the bid (crate::budget).
                if let Some(b) = &mut self.budget {
                    b.on_notice(&mut self.shard, &v);
                }
                let e = v.to_event(self.cfg.core_id, self.turn_unix_ns);
                self.sink.emit(&e);
                self.metrics.events += 1;
                http::write_response(out, 204, "", b"", b"", close);
                self.metrics.response(204);
            }
            Err(e) => {
                http::write_text(out, 400, &e, close);
                self.metrics.response(400);
            }
        }
    }

    /// Admission by age for the bid request `body` about to be handled (sets its arrival time
    /// from the connection's receive stamp): only `tmax` is looked for, nothing is decoded.
    fn admission_verdict(&mut self, body: &[u8]) -> Verdict {
        let age = Duration::from_nanos(crate::rxtime::age_ns(self.rx_unix_ns, self.turn_unix_ns));
        self.req_start = self.turn_start.checked_sub(age).unwrap_or(self.turn_start);
        let tmax = crate::admission::scan_tmax(body).unwrap_or(self.cfg.default_tmax_ms);
        self.admission.admit(self.age(), self.budget(tmax))
    }

    /// The 204 of a request admission sheds (`v` is not [`Verdict::Admit`]).
    fn shed(&mut self, v: Verdict, out: &mut Vec<u8>, close: bool) {
        debug_assert!(v != Verdict::Admit);
        if v == Verdict::Expired {
            self.metrics.shed(ShedReason::Expired);
            self.no_bid(out, close, NoBidReason::Deadline, "");
        } else {
            self.metrics.shed(ShedReason::Queue);
            self.no_bid(out, close, NoBidReason::Overloaded, "");
        }
    }

    fn bid(
        &mut self,
        body: &[u8],
        exchange: &str,
        ask: TraceAsk<'_>,
        out: &mut Vec<u8>,
        close: bool,
    ) {
        if !self.ready {
            return self.no_bid(out, close, NoBidReason::NotReady, "");
        }
        // Admission by age, before decoding (only `tmax` is looked for): crate::admission.
        let v = self.admission_verdict(body);
        if v != Verdict::Admit {
            return self.shed(v, out, close);
        }
        if self.admitted > 0
            && !self.cfg.turn_budget.is_zero()
            && self.elapsed() >= self.cfg.turn_budget
        {
            self.metrics.shed(ShedReason::TurnBudget);
            return self.no_bid(out, close, NoBidReason::Overloaded, "");
        }
        self.admitted += 1;
        // Decoded where it lives and borrowed, never moved (`codec::with_valid`).
        codec::with_valid(body, |r| match r {
            Ok(req) => self.bid_valid(req, exchange, ask, out, close),
            Err(e) => {
                http::write_text(out, 400, &e, close);
                self.metrics.response(400);
                self.metrics.no_bid(NoBidReason::InvalidRequest);
            }
        })
    }

    /// [`Bidder::bid`] once the request decoded and validated.
    fn bid_valid(
        &mut self,
        req: &codec::ValidRequest<'_>,
        exchange: &str,
        ask: TraceAsk<'_>,
        out: &mut Vec<u8>,
        close: bool,
    ) {
        let budget = self.budget(req.req().tmax.unwrap_or(self.cfg.default_tmax_ms));
        if self.age() >= budget {
            self.metrics.shed(ShedReason::Late);
            return self.no_bid(out, close, NoBidReason::Deadline, req.id());
        }
        // The decision trace: only for an allowed exchange that asked (header or test request).
        let traced = (ask.header || req.is_test())
            && crate::trace::allowed(&self.cfg.trace_exchanges, exchange, ask.exchange_header);
        let trace_id = self.ids.next();
        // The shard's privacy verdict (COPPA, TCF v2, US privacy, GPP) comes first: without
        // consent the profile is not even looked up.
        let personal = self.shard.privacy(req).personalized();
        let user = if personal {
            shards::user_key(req.req()).filter(|k| k.len() <= 64)
        } else {
            None
        };
        // Start the profile's memory on its way now: hash the id and prefetch its index slot
        // (a hint that reads no profile data, issued only with consent). The lookup comes after
        // the decision's pre-filters; by then the slot — and, once the decision has hashed the
        // request's keys and read the slot, the record's lines — are cached (`ProfileOrder`).
        let order = self.profile_order;
        let early = match (&self.profiles, user) {
            (Some(r), Some(k))
                if matches!(order, ProfileOrder::Prefetch | ProfileOrder::PrefetchSlot) =>
            {
                Some(r.prefetch(k))
            }
            _ => None,
        };
        let ctx = Context::of(req, if personal { user } else { None });
        // The notice URLs of a bid must fit the buffers sized at start: refuse, before any
        // budget is reserved, a request whose ids could make them longer.
        if notice_params_bound(req, &ctx, exchange, &self.cfg.node) > MAX_NOTICE_PARAMS {
            http::write_text(out, 400, &NOTICE_TOO_LONG, close);
            self.metrics.response(400);
            self.metrics.no_bid(NoBidReason::InvalidRequest);
            return;
        }
        let fresh = self
            .profiles
            .as_ref()
            .is_some_and(|r| r.is_fresh_at(self.turn_unix_ns / 1_000_000));
        let late = match (&self.profiles, user) {
            (Some(reader), Some(user)) if fresh && order != ProfileOrder::Eager && !traced => {
                Some(LateProfile {
                    reader,
                    user,
                    early,
                    record_too: order == ProfileOrder::Prefetch,
                })
            }
            _ => None,
        };
        let trace = if let Some(source) = &late {
            // The lookup inside the decision, after its pre-filters.
            self.shard
                .decide_from(req, source, self.turn_unix_ns, &mut self.decision);
            None
        } else {
            // Looked up first (the eager order, or the opt-in trace, which reports the lookup).
            let profile = match (&self.profiles, user) {
                (Some(r), Some(k)) if fresh => match early {
                    Some(p) => r.get_prefetched(p),
                    None => r.get(k),
                },
                _ => None,
            };
            let view = profile.as_ref().map(|p| p as &dyn ProfileView);
            if traced {
                let t = self
                    .shard
                    .decide_traced(req, view, self.turn_unix_ns, &mut self.decision);
                let used = match (&self.profiles, user) {
                    (None, _) => crate::trace::ProfileUse::NoReplica,
                    (_, None) => crate::trace::ProfileUse::NotAllowed,
                    _ if !fresh => crate::trace::ProfileUse::Stale,
                    _ if profile.is_none() => crate::trace::ProfileUse::Absent,
                    _ => crate::trace::ProfileUse::Found,
                };
                Some(crate::trace::render(
                    req,
                    exchange,
                    &t,
                    &self.decision,
                    self.shard.set().campaigns.len(),
                    used,
                ))
            } else {
                self.shard
                    .decide(req, view, self.turn_unix_ns, &mut self.decision);
                None
            }
        };
        let contextual = !personal || (self.profiles.is_some() && !fresh);
        if let Some(reason) = self.decision.no_bid {
            if let Some(t) = &trace {
                // Traced: a 200 with an empty seatbid and the trace, so the no-bid is explained.
                crate::trace::no_bid_body(req.id(), t, &mut self.trace_body);
                http::write_response(out, 200, "application/json", b"", &self.trace_body, close);
                self.metrics.response(200);
                self.metrics.no_bid(reason);
                let mut e = Event::new(EventKind::NoBid);
                e.reason = reason.code();
                e.request_id = InlineStr::new(req.id());
                return self.emit(&mut e);
            }
            return self.no_bid(out, close, reason, req.id());
        }
        // The notice URLs of every bid, written one after the other into `urls`: the bid's
        // parameters are encoded and hashed once, each kind's URL derived from that
        // (`NoticeSigner::prepare`). A creative whose markup has a click macro also gets its
        // signed click URL, expanded into `adms` (the markup as escaped for JSON at load).
        self.urls.clear();
        self.adms.clear();
        let mut url_at: ArrayVec<[(usize, usize); 3], MAX_IMPS> = ArrayVec::new();
        let mut adm_at: ArrayVec<Option<(usize, usize)>, MAX_IMPS> = ArrayVec::new();
        let set = self.shard.set();
        for d in self.decision.bids.iter() {
            let params = BidParams {
                request_id: req.id(),
                imp_id: req.req().imp[d.imp_index as usize]
                    .id
                    .as_deref()
                    .unwrap_or_default(),
                campaign_id: d.campaign_id,
                creative_id: d.creative_id,
                advertiser_id: d.advertiser_id,
                bid_price: d.price,
                currency: d.currency.code(),
                bid_ts_unix_ns: self.turn_unix_ns,
                node: &self.cfg.node,
                exchange,
                trace_id,
                country: ctx.country,
                device_type: ctx.device_type,
                site_or_app: ctx.site_or_app,
                user_id: ctx.user,
                reserved: d.reserved,
                core: self.cfg.core_id,
            };
            let signed = self.signer.prepare(&params, &mut self.notice_params);
            debug_assert!(signed.params_len() <= MAX_NOTICE_PARAMS);
            let mut r = [(0, 0); 3];
            for (k, kind) in [PNoticeKind::Win, PNoticeKind::Billing, PNoticeKind::Loss]
                .into_iter()
                .enumerate()
            {
                let start = self.urls.len();
                signed.write_url(kind, &self.notice_routes[k], &mut self.urls);
                r[k] = (start, self.urls.len());
            }
            url_at.push(r);
            let cc = &set.compiled[d.campaign_index as usize].creatives[d.creative_index as usize];
            if cc.click_macro {
                let start = self.urls.len();
                signed.write_url(PNoticeKind::Click, &self.notice_routes[3], &mut self.urls);
                let a = self.adms.len();
                pipeline::notice::expand_click_macros_bytes(
                    &cc.adm_json,
                    &self.urls[start..],
                    &mut self.adms,
                );
                self.urls.truncate(start);
                adm_at.push(Some((a, self.adms.len())));
            } else {
                adm_at.push(None);
            }
            debug_assert!(self.urls.len() <= self.urls.capacity());
        }
        // Build and encode inside a block: the borrows of the campaign set end with it.
        let late = {
            let urls = &self.urls;
            let adms = &self.adms;
            let url = |r: (usize, usize)| std::str::from_utf8(&urls[r.0..r.1]).ok();
            let mut nums: ArrayVec<[ArrayString<10>; 3], MAX_IMPS> = ArrayVec::new();
            let mut domains: ArrayVec<ArrayVec<&str, MAX_ADOMAIN>, MAX_IMPS> = ArrayVec::new();
            for (i, d) in self.decision.bids.iter().enumerate() {
                let mut n = [ArrayString::new(), ArrayString::new(), ArrayString::new()];
                // u32 values always fit 10 digits.
                let _ = write!(n[0], "{}", i + 1);
                let _ = write!(n[1], "{}", d.creative_id);
                let _ = write!(n[2], "{}", d.campaign_id);
                nums.push(n);
                let cr =
                    &set.campaigns[d.campaign_index as usize].creatives[d.creative_index as usize];
                domains.push(
                    cr.adomain
                        .iter()
                        .take(MAX_ADOMAIN)
                        .map(String::as_str)
                        .collect(),
                );
            }
            let mut bids: ArrayVec<Bid<'_>, MAX_IMPS> = ArrayVec::new();
            for (i, d) in self.decision.bids.iter().enumerate() {
                let c = &set.campaigns[d.campaign_index as usize];
                let cr = &c.creatives[d.creative_index as usize];
                let imp = &req.req().imp[d.imp_index as usize];
                let (w, h) = match cr.format {
                    Format::Banner { w, h } => (Some(w), Some(h)),
                    _ => (None, None),
                };
                bids.push(Bid {
                    id: &nums[i][0],
                    impid: imp.id.as_deref().unwrap_or_default(),
                    price: d.price,
                    adid: Some(&nums[i][1]),
                    crid: &nums[i][1],
                    cid: &nums[i][2],
                    adomain: &domains[i],
                    dealid: None,
                    w,
                    h,
                    nurl: url(url_at[i][0]),
                    burl: url(url_at[i][1]),
                    lurl: url(url_at[i][2]),
                    adm: None,
                    adm_json: Some(match adm_at[i] {
                        Some((a, b)) => &adms[a..b],
                        None => {
                            &set.compiled[d.campaign_index as usize].creatives
                                [d.creative_index as usize]
                                .adm_json
                        }
                    }),
                });
            }
            let seat = [SeatBid {
                seat: Some(&self.cfg.seat),
                bid: &bids,
            }];
            let resp = BidResponse {
                id: req.id(),
                bidid: None,
                cur: Currency::USD,
                seatbid: &seat,
            };
            let mut json = self.enc.encode(&resp);
            if let Some(t) = &trace {
                crate::trace::splice(json, t, &mut self.trace_body);
                json = &self.trace_body;
            }
            let elapsed = self.clock.now().duration_since(self.req_start);
            if elapsed < budget {
                http::write_response(
                    out,
                    200,
                    "application/json",
                    b"X-Openrtb-Version: 2.6\r\n",
                    json,
                    close,
                );
                self.metrics.response(200);
                self.metrics.bids += 1;
                self.metrics.imp_bids += self.decision.bids.len() as u64;
                self.metrics
                    .latency_ns
                    .saturating_record(elapsed.as_nanos() as u64);
            }
            elapsed >= budget
        };
        if late {
            // Too late to be useful: say no rather than answer after the exchange gave up.
            self.metrics.shed(ShedReason::Late);
            return self.no_bid(out, close, NoBidReason::Deadline, req.id());
        }
        for d in self.decision.bids.iter() {
            let mut e = Event::new(EventKind::Bid);
            e.exchange = InlineStr::new(exchange);
            e.request_id = InlineStr::new(req.id());
            e.imp_id = InlineStr::new(
                req.req().imp[d.imp_index as usize]
                    .id
                    .as_deref()
                    .unwrap_or_default(),
            );
            e.advertiser_id = d.advertiser_id;
            e.campaign_id = d.campaign_id;
            e.creative_id = d.creative_id;
            e.bid_price_micros = d.price.0;
            e.currency = d.currency.code();
            e.country = ctx.country;
            e.device_type = ctx.device_type;
            e.site_or_app = InlineStr::new(ctx.site_or_app);
            e.user_id = InlineStr::new(ctx.user.unwrap_or(""));
            e.trace_id = trace_id;
            if req.is_test() {
                e.flags |= codec::event::flags::TEST;
            }
            if contextual {
                e.flags |= codec::event::flags::CONTEXTUAL_ONLY;
            }
            e.core = self.cfg.core_id;
            e.event_id = self.ids.next();
            e.ts_unix_ns = self.turn_unix_ns;
            e.node = InlineStr::new(&self.cfg.node);
            self.sink.emit(&e);
            self.metrics.events += 1;
        }
    }
}

/// What the HTTP layer says about a decision trace for one bid request.
#[derive(Debug, Clone, Copy)]
struct TraceAsk<'a> {
    /// `X-Helios-Trace: 1`.
    header: bool,
    /// `X-Helios-Exchange` (the gateway's name for the exchange).
    exchange_header: &'a str,
}

/// What a bid's events and notice URLs say about the request.
struct Context<'r> {
    country: [u8; 3],
    device_type: u8,
    site_or_app: &'r str,
    user: Option<&'r str>,
}

impl<'r> Context<'r> {
    fn of(req: &'r codec::ValidRequest<'_>, user: Option<&'r str>) -> Context<'r> {
        let r = req.req();
        let device = r.device.as_ref();
        let country = device
            .and_then(|d| d.geo.as_ref())
            .and_then(|g| g.country.as_deref())
            .and_then(|c| <[u8; 3]>::try_from(c.as_bytes()).ok())
            .unwrap_or([0; 3]);
        let site_or_app = r
            .site
            .as_ref()
            .and_then(|s| s.domain.as_deref())
            .or_else(|| r.app.as_ref().and_then(|a| a.bundle.as_deref()))
            .unwrap_or("");
        Context {
            country,
            device_type: device.and_then(|d| d.devicetype).unwrap_or(0),
            site_or_app,
            user,
        }
    }
}

/// The 400 answer to a request whose notice parameters could pass [`MAX_NOTICE_PARAMS`].
const NOTICE_TOO_LONG: &str = "request: id, imp.id, site.domain or app.bundle, and the exchange \
     name are too long for a notice URL (over 2 KiB encoded)";

/// An upper bound of the encoded notice parameters of any bid on `req` (each string byte may
/// take 3 when percent-encoded; numbers and keys take at most 200 bytes).
fn notice_params_bound(
    req: &codec::ValidRequest<'_>,
    ctx: &Context<'_>,
    exchange: &str,
    node: &str,
) -> usize {
    let imp = req
        .req()
        .imp
        .iter()
        .map(|i| i.id.as_deref().map_or(0, str::len))
        .max()
        .unwrap_or(0);
    let strings = req.id().len()
        + imp
        + ctx.site_or_app.len()
        + exchange.len()
        + node.len()
        + ctx.user.map_or(0, str::len);
    200 + 3 * strings
}

#[cfg(test)]
mod tests;

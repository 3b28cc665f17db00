//! Per-core metrics: plain counters and an HdrHistogram, written only by the core that owns
//! them, and how the admin thread gets to see them.
//!
//! Hot path: [`CoreMetrics`] is a plain struct inside the core (no atomics, no locks). Every
//! `publish_ms` the core copies it into its [`Published`] slot with `try_lock` (never waits: if
//! the admin thread is reading at that instant, the core skips this period) — so the hot path
//! writes no shared memory, and the admin thread reads a copy at most `publish_ms` old. The copy
//! reuses the slot's memory (counters assigned, histogram `set_to`): publishing allocates nothing.
//! [`render`] builds the Prometheus text at scrape time on the admin thread.

use std::fmt::{Display, Write as _};
use std::sync::Mutex;

use codec::event::NoBidReason;
use hdrhistogram::Histogram;

use crate::route::NoticeKind;
use pipeline::notice::NoticeError;

/// Statuses counted one by one; anything else goes to the last bucket ("other").
pub const STATUSES: [u16; 14] = [
    200, 204, 400, 404, 405, 408, 413, 415, 417, 431, 501, 503, 100, 0,
];

fn status_index(s: u16) -> usize {
    STATUSES
        .iter()
        .position(|&x| x == s)
        .unwrap_or(STATUSES.len() - 1)
}

/// Why a connection was closed by us (beyond the client closing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Client = 0,
    HttpError = 1,
    IdleTimeout = 2,
    SlowClient = 3,
    TooManyConnections = 4,
    InputOverflow = 5,
    Shutdown = 6,
    IoError = 7,
}

/// Why a bid request was answered 204 without a (complete) decision: the shed path
/// ([`crate::admission`], the turn budget) and the late check after deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// Already past its deadline when read (kernel stamp), before decoding.
    Expired = 0,
    /// Older than the target share of its budget while a queue stands, before decoding.
    Queue = 1,
    /// The loop turn had run past `bidding.turn_budget_us`, before decoding.
    TurnBudget = 2,
    /// Decoded (and maybe decided), but past its deadline by then.
    Late = 3,
}

pub const SHED_REASONS: [&str; 4] = ["expired", "queue", "turn_budget", "late"];

pub const CLOSE_REASONS: [&str; 8] = [
    "client",
    "http_error",
    "idle_timeout",
    "slow_client",
    "too_many_connections",
    "input_overflow",
    "shutdown",
    "io_error",
];

/// One core's counters. Written by that core only.
#[derive(Debug)]
pub struct CoreMetrics {
    /// Responses by status ([`STATUSES`] order).
    pub responses: [u64; STATUSES.len()],
    pub bid_requests: u64,
    /// Requests answered with at least one bid.
    pub bids: u64,
    /// Imps bid on.
    pub imp_bids: u64,
    /// No-bids by [`NoBidReason`] code (index = code).
    pub no_bids: [u64; 13],
    /// Accepted notices by kind (win, billing, loss, click).
    pub notices: [u64; 4],
    /// Rejected notices by `pipeline::notice::NoticeError::index` (copied at publish).
    pub notices_rejected: [u64; NoticeError::COUNT],
    /// Accepted notices flagged late (copied at publish).
    pub notices_late: u64,
    /// Profile replica staleness seen by this core at publish, ms (`u64::MAX`: not loaded;
    /// 0 and unused when there is no profile cache).
    pub profile_lag_ms: u64,
    pub gzip_bodies: u64,
    pub connections_accepted: u64,
    /// Closed connections by [`CloseReason`].
    pub connections_closed: [u64; CLOSE_REASONS.len()],
    pub connections_open: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub events: u64,
    /// Heap allocations made on this core's thread (from [`crate::alloc_count`]), at publish.
    pub allocations: u64,
    /// Event-loop turns.
    pub turns: u64,
    /// Bid requests shed by [`ShedReason`].
    pub shed: [u64; SHED_REASONS.len()],
    /// Reads that carried no kernel receive stamp although one was asked for (their requests
    /// count from the read).
    pub rx_unstamped: u64,
    /// Bid request service time (arrival of the bytes to response ready), nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl CoreMetrics {
    pub fn new() -> CoreMetrics {
        CoreMetrics {
            responses: [0; STATUSES.len()],
            bid_requests: 0,
            bids: 0,
            imp_bids: 0,
            no_bids: [0; 13],
            notices: [0; 4],
            notices_rejected: [0; NoticeError::COUNT],
            notices_late: 0,
            profile_lag_ms: 0,
            gzip_bodies: 0,
            connections_accepted: 0,
            connections_closed: [0; CLOSE_REASONS.len()],
            connections_open: 0,
            bytes_in: 0,
            bytes_out: 0,
            events: 0,
            allocations: 0,
            turns: 0,
            shed: [0; SHED_REASONS.len()],
            rx_unstamped: 0,
            // 1 µs .. 60 s at 3 significant digits: fixed bounds, allocated once.
            latency_ns: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    #[inline]
    pub fn response(&mut self, status: u16) {
        self.responses[status_index(status)] += 1;
    }

    #[inline]
    pub fn no_bid(&mut self, r: NoBidReason) {
        self.no_bids[r.code() as usize] += 1;
    }

    #[inline]
    pub fn shed(&mut self, r: ShedReason) {
        self.shed[r as usize] += 1;
    }

    #[inline]
    pub fn closed(&mut self, r: CloseReason) {
        self.connections_closed[r as usize] += 1;
        self.connections_open = self.connections_open.saturating_sub(1);
    }

    pub fn status_count(&self, status: u16) -> u64 {
        self.responses[status_index(status)]
    }

    /// Copies `src` into `self` reusing `self`'s memory (no allocation: same histogram bounds).
    pub fn copy_from(&mut self, src: &CoreMetrics) {
        let CoreMetrics {
            responses,
            bid_requests,
            bids,
            imp_bids,
            no_bids,
            notices,
            notices_rejected,
            notices_late,
            profile_lag_ms,
            gzip_bodies,
            connections_accepted,
            connections_closed,
            connections_open,
            bytes_in,
            bytes_out,
            events,
            allocations,
            turns,
            shed,
            rx_unstamped,
            latency_ns,
        } = self;
        *responses = src.responses;
        *bid_requests = src.bid_requests;
        *bids = src.bids;
        *imp_bids = src.imp_bids;
        *no_bids = src.no_bids;
        *notices = src.notices;
        *notices_rejected = src.notices_rejected;
        *notices_late = src.notices_late;
        *profile_lag_ms = src.profile_lag_ms;
        *gzip_bodies = src.gzip_bodies;
        *connections_accepted = src.connections_accepted;
        *connections_closed = src.connections_closed;
        *connections_open = src.connections_open;
        *bytes_in = src.bytes_in;
        *bytes_out = src.bytes_out;
        *events = src.events;
        *allocations = src.allocations;
        *turns = src.turns;
        *shed = src.shed;
        *rx_unstamped = src.rx_unstamped;
        // Same bounds on both sides, so this cannot fail nor resize.
        let _ = latency_ns.set_to(&src.latency_ns);
    }
}

impl Default for CoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A core's published copy; the admin thread reads it.
#[derive(Debug)]
pub struct Published {
    pub core: u16,
    pub snapshot: Mutex<CoreMetrics>,
}

impl Published {
    pub fn new(core: u16) -> Published {
        Published {
            core,
            snapshot: Mutex::new(CoreMetrics::new()),
        }
    }

    /// Called by the owning core every `publish_ms`; never waits.
    pub fn publish(&self, m: &CoreMetrics) -> bool {
        match self.snapshot.try_lock() {
            Ok(mut s) => {
                s.copy_from(m);
                true
            }
            Err(_) => false,
        }
    }
}

/// A single-valued series: name, help, type, and how to read it.
type Simple = (
    &'static str,
    &'static str,
    &'static str,
    fn(&CoreMetrics) -> u64,
);

fn series(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One per-core series: its `# HELP` / `# TYPE` lines, then `name{core="c"} value` for each
/// `(c, value)`. The one renderer of the per-core series without other labels (these below, the
/// budget's, the campaign feed's, the journal's); admin thread only.
pub fn per_core_series<C: Display, V: Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    values: impl IntoIterator<Item = (C, V)>,
) {
    series(out, name, help, kind);
    for (c, v) in values {
        let _ = writeln!(out, "{name}{{core=\"{c}\"}} {v}");
    }
}

/// Prometheus text for every core's latest published snapshot. Runs on the admin thread.
pub fn render(out: &mut String, cores: &[std::sync::Arc<Published>]) {
    // Copy each snapshot out first so no lock is held while formatting.
    let snaps: Vec<(u16, CoreMetrics)> = cores
        .iter()
        .map(|p| {
            let mut m = CoreMetrics::new();
            if let Ok(s) = p.snapshot.lock() {
                m.copy_from(&s);
            }
            (p.core, m)
        })
        .collect();
    let simple: [Simple; 12] = [
        (
            "helios_bid_requests_total",
            "Bid requests received.",
            "counter",
            |m| m.bid_requests,
        ),
        (
            "helios_bids_total",
            "Bid requests answered with at least one bid.",
            "counter",
            |m| m.bids,
        ),
        ("helios_imp_bids_total", "Imps bid on.", "counter", |m| {
            m.imp_bids
        }),
        (
            "helios_gzip_bodies_total",
            "Gzip request bodies inflated.",
            "counter",
            |m| m.gzip_bodies,
        ),
        (
            "helios_connections_accepted_total",
            "Connections accepted.",
            "counter",
            |m| m.connections_accepted,
        ),
        (
            "helios_connections_open",
            "Connections open.",
            "gauge",
            |m| m.connections_open,
        ),
        (
            "helios_received_bytes_total",
            "Bytes received on the bid port.",
            "counter",
            |m| m.bytes_in,
        ),
        (
            "helios_sent_bytes_total",
            "Bytes sent on the bid port.",
            "counter",
            |m| m.bytes_out,
        ),
        (
            "helios_events_total",
            "Events emitted by the core.",
            "counter",
            |m| m.events,
        ),
        (
            "helios_core_allocations_total",
            "Heap allocations made on the core's event-loop thread.",
            "counter",
            |m| m.allocations,
        ),
        (
            "helios_loop_turns_total",
            "Event-loop turns.",
            "counter",
            |m| m.turns,
        ),
        (
            "helios_rx_unstamped_total",
            "Reads without a kernel receive stamp (their requests count from the read).",
            "counter",
            |m| m.rx_unstamped,
        ),
    ];
    for (name, help, kind, f) in simple {
        per_core_series(out, name, help, kind, snaps.iter().map(|(c, m)| (c, f(m))));
    }
    series(
        out,
        "helios_responses_total",
        "Responses by HTTP status.",
        "counter",
    );
    for (c, m) in &snaps {
        for (i, s) in STATUSES.iter().enumerate() {
            let label = if *s == 0 {
                "other".to_owned()
            } else {
                s.to_string()
            };
            let _ = writeln!(
                out,
                "helios_responses_total{{core=\"{c}\",status=\"{label}\"}} {}",
                m.responses[i]
            );
        }
    }
    series(out, "helios_no_bids_total", "No-bids by reason.", "counter");
    for (c, m) in &snaps {
        for r in NoBidReason::ALL {
            let _ = writeln!(
                out,
                "helios_no_bids_total{{core=\"{c}\",reason=\"{}\"}} {}",
                r.as_str(),
                m.no_bids[r.code() as usize]
            );
        }
    }
    series(
        out,
        "helios_shed_total",
        "Bid requests answered 204 without a complete decision, by why (expired, queue, turn_budget: before decoding; late: after).",
        "counter",
    );
    for (c, m) in &snaps {
        for (i, r) in SHED_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "helios_shed_total{{core=\"{c}\",reason=\"{r}\"}} {}",
                m.shed[i]
            );
        }
    }
    series(
        out,
        "helios_notices_total",
        "Notices received by kind.",
        "counter",
    );
    for (c, m) in &snaps {
        for k in NoticeKind::ALL {
            let _ = writeln!(
                out,
                "helios_notices_total{{core=\"{c}\",kind=\"{}\"}} {}",
                k.as_str(),
                m.notices[k as usize]
            );
        }
    }
    series(
        out,
        "helios_notices_rejected_total",
        "Notices rejected by reason.",
        "counter",
    );
    for (c, m) in &snaps {
        for e in NoticeError::ALL {
            let _ = writeln!(
                out,
                "helios_notices_rejected_total{{core=\"{c}\",reason=\"{}\"}} {}",
                e.reason(),
                m.notices_rejected[e.index()]
            );
        }
    }
    per_core_series(
        out,
        "helios_notices_late_total",
        "Accepted notices flagged late.",
        "counter",
        snaps.iter().map(|(c, m)| (c, m.notices_late)),
    );
    per_core_series(
        out,
        "helios_profile_replica_lag_seconds",
        "Staleness of the profile replica as this core saw it (+Inf before the first load).",
        "gauge",
        snaps.iter().map(|(c, m)| {
            let v = if m.profile_lag_ms == u64::MAX {
                "+Inf".to_owned()
            } else {
                (m.profile_lag_ms as f64 / 1000.0).to_string()
            };
            (c, v)
        }),
    );
    series(
        out,
        "helios_connections_closed_total",
        "Connections closed by reason.",
        "counter",
    );
    for (c, m) in &snaps {
        for (i, r) in CLOSE_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "helios_connections_closed_total{{core=\"{c}\",reason=\"{r}\"}} {}",
                m.connections_closed[i]
            );
        }
    }
    series(
        out,
        "helios_request_duration_seconds",
        "Service time of bid requests answered with a bid, from the loop turn their bytes arrived in \
         to the response ready (from the core's HdrHistogram: values within 512 ns).",
        "histogram",
    );
    for (c, m) in &snaps {
        let h = DurationHistogram::of(&m.latency_ns);
        for (le, n) in LATENCY_BUCKETS_NS.iter().zip(h.cumulative) {
            let le = *le as f64 / 1e9;
            let _ = writeln!(
                out,
                "helios_request_duration_seconds_bucket{{core=\"{c}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "helios_request_duration_seconds_bucket{{core=\"{c}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "helios_request_duration_seconds_sum{{core=\"{c}\"}} {}",
            h.sum_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "helios_request_duration_seconds_count{{core=\"{c}\"}} {}",
            h.count
        );
    }
}

/// Upper bounds (`le`) of the Prometheus histogram's buckets, nanoseconds: 10 µs .. 1 s, dense
/// where the bid path lives (tens of µs) and around the 10 ms alert threshold. `+Inf` is implied.
pub const LATENCY_BUCKETS_NS: [u64; 15] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// A Prometheus histogram read off an HdrHistogram at scrape time (admin thread only).
///
/// Each recorded HdrHistogram bucket counts under every `le` at or above its median equivalent
/// value (HdrHistogram's own estimate of the values it holds), and adds median × count to the
/// sum. The source only ever grows, so every bucket, the sum and the count are monotonic
/// counters, as Prometheus requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Observations at or below each [`LATENCY_BUCKETS_NS`] bound.
    pub cumulative: [u64; LATENCY_BUCKETS_NS.len()],
    pub count: u64,
    pub sum_ns: u128,
}

impl DurationHistogram {
    pub fn of(h: &Histogram<u64>) -> DurationHistogram {
        let mut per_bucket = [0u64; LATENCY_BUCKETS_NS.len()];
        let mut count = 0u64;
        let mut sum_ns = 0u128;
        for v in h.iter_recorded() {
            let n = v.count_at_value();
            let value = h.median_equivalent(v.value_iterated_to());
            count += n;
            sum_ns += u128::from(value) * u128::from(n);
            if let Some(i) = LATENCY_BUCKETS_NS.iter().position(|&le| value <= le) {
                per_bucket[i] += n;
            }
        }
        let mut cumulative = [0u64; LATENCY_BUCKETS_NS.len()];
        let mut running = 0;
        for (c, n) in cumulative.iter_mut().zip(per_bucket) {
            running += n;
            *c = running;
        }
        debug_assert_eq!(count, h.len());
        DurationHistogram {
            cumulative,
            count,
            sum_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn publish_copies_and_render_labels_every_core() {
        let mut m = CoreMetrics::new();
        m.response(200);
        m.response(204);
        m.response(299);
        m.no_bid(NoBidReason::Deadline);
        m.latency_ns.saturating_record(50_000);
        m.bid_requests = 2;
        let p0 = Arc::new(Published::new(0));
        let p1 = Arc::new(Published::new(1));
        assert!(p0.publish(&m));
        let mut s = String::new();
        render(&mut s, &[p0.clone(), p1]);
        assert!(s.contains("helios_bid_requests_total{core=\"0\"} 2"));
        assert!(s.contains("helios_bid_requests_total{core=\"1\"} 0"));
        assert!(s.contains("helios_responses_total{core=\"0\",status=\"200\"} 1"));
        assert!(s.contains("helios_responses_total{core=\"0\",status=\"other\"} 1"));
        assert!(s.contains("helios_no_bids_total{core=\"0\",reason=\"deadline\"} 1"));
        assert!(s.contains("helios_request_duration_seconds_count{core=\"0\"} 1"));
        assert!(s.contains("helios_request_duration_seconds_bucket{core=\"0\",le=\"0.000025\"} 0"));
        assert!(s.contains("helios_request_duration_seconds_bucket{core=\"0\",le=\"0.00005\"} 1"));
        assert!(s.contains("helios_request_duration_seconds_bucket{core=\"0\",le=\"+Inf\"} 1"));
        assert!(s.contains("helios_request_duration_seconds_bucket{core=\"1\",le=\"+Inf\"} 0"));
        assert!(s.contains("# TYPE helios_request_duration_seconds histogram"));
        // Every sample line carries a core label.
        for line in s.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("core=\""), "{line}");
        }
        // A held lock makes publish skip, not wait.
        let _g = p0.snapshot.lock().unwrap();
        assert!(!p0.publish(&m));
    }

    #[test]
    fn a_per_core_series_is_its_header_then_one_line_per_core() {
        let mut s = String::new();
        per_core_series(&mut s, "x_total", "Xs.", "counter", [(0, 5u64), (1, 7)]);
        assert_eq!(
            s,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{core=\"0\"} 5\nx_total{core=\"1\"} 7\n"
        );
    }

    #[test]
    fn duration_histogram_buckets_are_cumulative_and_exact_enough() {
        let mut m = CoreMetrics::new();
        let empty = DurationHistogram::of(&m.latency_ns);
        assert_eq!(empty.count, 0);
        assert_eq!(empty.cumulative, [0; LATENCY_BUCKETS_NS.len()]);
        // 5 µs, 2 × 20 µs, 40 ms, 2 s (beyond the last finite bound: only in +Inf).
        for ns in [5_000, 20_000, 20_000, 40_000_000, 2_000_000_000] {
            m.latency_ns.saturating_record(ns);
        }
        let h = DurationHistogram::of(&m.latency_ns);
        assert_eq!(h.count, 5);
        let at = |le: u64| {
            let i = LATENCY_BUCKETS_NS.iter().position(|&b| b == le).unwrap();
            h.cumulative[i]
        };
        assert_eq!(at(10_000), 1);
        assert_eq!(at(25_000), 3);
        assert_eq!(at(25_000_000), 3);
        assert_eq!(at(50_000_000), 4);
        assert_eq!(at(1_000_000_000), 4);
        // Cumulative: never decreasing along the bounds.
        assert!(h.cumulative.windows(2).all(|w| w[0] <= w[1]));
        // The sum is the recorded values' within HdrHistogram's precision (0.1%).
        let exact: u128 = 5_000 + 20_000 + 20_000 + 40_000_000 + 2_000_000_000;
        assert!(
            h.sum_ns.abs_diff(exact) * 1000 <= exact,
            "{} vs {exact}",
            h.sum_ns
        );
        // More observations only ever raise every series (Prometheus counters).
        m.latency_ns.saturating_record(7_000);
        let h2 = DurationHistogram::of(&m.latency_ns);
        assert!(h2.cumulative.iter().zip(h.cumulative).all(|(a, b)| *a >= b));
        assert!(h2.sum_ns > h.sum_ns && h2.count == 6);
    }

    #[test]
    fn bucket_bounds_render_as_plain_decimals() {
        // Prometheus reads `le` as a float; keep them free of exponents so they sort and match
        // the rules' and tests' strings.
        let les: Vec<String> = LATENCY_BUCKETS_NS
            .iter()
            .map(|le| (*le as f64 / 1e9).to_string())
            .collect();
        assert_eq!(les[0], "0.00001");
        assert_eq!(les[9], "0.01");
        assert_eq!(les[14], "1");
        assert!(LATENCY_BUCKETS_NS.windows(2).all(|w| w[0] < w[1]));
    }
}

//! Latency recording that is correct under coordinated omission, and the open-loop schedule.
//!
//! A request's latency is `completion − intended send time`, where the intended time comes from
//! the fixed-rate [`Schedule`], not from when the generator got round to sending. If the server
//! stalls, requests that were due during the stall queue up in the generator and each one is
//! charged the time it waited — exactly what a real exchange sending at a fixed rate would see.
//! Latencies go into an `hdrhistogram` (1 ns … 60 s, 3 significant digits), allocated once.
//! Owned by the generator's thread. Must never: allocate per record.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histogram holds; larger values are clamped to it (and counted).
pub const MAX_TRACKABLE_NS: u64 = 60_000_000_000;

/// The intended send times of a fixed-rate run: request `i` is due at `start + i / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_ns: u64,
    rate_per_s: u64,
}

impl Schedule {
    /// `rate_per_s >= 1`.
    pub fn new(start_ns: u64, rate_per_s: u64) -> Schedule {
        Schedule {
            start_ns,
            rate_per_s: rate_per_s.max(1),
        }
    }
    /// Intended send time of request `i` (integer arithmetic: no drift over long runs).
    pub fn due(&self, i: u64) -> u64 {
        self.start_ns + (u128::from(i) * 1_000_000_000 / u128::from(self.rate_per_s)) as u64
    }
    /// How many requests are due at or before `now_ns`.
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        // Count of i with floor(i·1e9/rate) <= d, i.e. i < (d + 1)·rate / 1e9: a ceiling.
        let d = u128::from(now_ns - self.start_ns);
        ((d + 1) * u128::from(self.rate_per_s)).div_ceil(1_000_000_000) as u64
    }
}

/// Latency histogram plus the count of values that had to be clamped.
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    clamped: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            hist: Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3)
                .expect("constant bounds 1..60 s with 3 digits are valid"),
            clamped: 0,
        }
    }

    /// Records one response that completed at `done_ns` and was due at `intended_ns`.
    pub fn record(&mut self, intended_ns: u64, done_ns: u64) {
        let v = done_ns.saturating_sub(intended_ns).max(1);
        if v > MAX_TRACKABLE_NS {
            self.clamped += 1;
        }
        self.hist.saturating_record(v);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.clamped += other.clamped;
    }

    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |p: f64| {
            if self.hist.is_empty() {
                0.0
            } else {
                us(self.hist.value_at_quantile(p))
            }
        };
        LatencySummary {
            count: self.hist.len(),
            min_us: if self.hist.is_empty() {
                0.0
            } else {
                us(self.hist.min())
            },
            mean_us: self.hist.mean() / 1000.0,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if self.hist.is_empty() {
                0.0
            } else {
                us(self.hist.max())
            },
            clamped: self.clamped,
        }
    }
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Latencies above 60 s, recorded as 60 s.
    pub clamped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_has_no_drift_and_counts_due_requests() {
        let s = Schedule::new(1_000, 3);
        assert_eq!(s.due(0), 1_000);
        assert_eq!(s.due(1), 1_000 + 333_333_333);
        assert_eq!(s.due(3_000_000), 1_000 + 1_000_000 * 1_000_000_000);
        assert_eq!(s.due_by(999), 0);
        assert_eq!(s.due_by(1_000), 1);
        assert_eq!(s.due_by(1_000 + 333_333_332), 1);
        assert_eq!(s.due_by(1_000 + 333_333_334), 2);
        for rate in [3, 7, 1000, 123_457] {
            let s = Schedule::new(5, rate);
            for i in 0..1000 {
                assert_eq!(s.due_by(s.due(i)), i + 1, "rate {rate} i {i}");
                assert_eq!(s.due_by(s.due(i + 1) - 1), i + 1, "rate {rate} i {i}");
            }
        }
    }

    /// Simulates a server that answers in 250 µs but stalls once for 1 s, at 1,000 req/s with
    /// one connection. Measured from the actual send time (the coordinated-omission mistake)
    /// only one request looks slow; measured from the intended time, every request that was due
    /// during the stall carries its wait (about a third of the run), as a real exchange sees it.
    #[test]
    fn stalls_are_charged_to_every_request_that_waited() {
        let sched = Schedule::new(0, 1000);
        let (mut correct, mut naive) = (Recorder::new(), Recorder::new());
        let mut free_at = 0u64; // when the single connection is next idle
        let mut waited = 0;
        for i in 0..4000u64 {
            let intended = sched.due(i);
            let sent = intended.max(free_at);
            let service = if i == 500 { 1_000_000_000 } else { 250_000 };
            let done = sent + service;
            free_at = done;
            waited += usize::from(sent > intended);
            correct.record(intended, done);
            naive.record(sent, done);
        }
        let (c, n) = (correct.summary(), naive.summary());
        assert_eq!(c.count, 4000);
        assert!(waited > 1200, "{waited}");
        assert!(n.p99_us < 300.0, "naive p99 {}", n.p99_us);
        assert!(n.max_us > 990_000.0);
        assert!(c.p90_us > 300_000.0, "corrected p90 {}", c.p90_us);
        assert!(c.p99_us > 900_000.0, "corrected p99 {}", c.p99_us);
        assert!(c.p50_us < 1_000.0, "corrected p50 {}", c.p50_us);
    }

    #[test]
    fn percentiles_are_in_microseconds_and_merge_adds_up() {
        let mut a = Recorder::new();
        for v in 1..=1000u64 {
            a.record(0, v * 1000);
        }
        let s = a.summary();
        assert!((s.p50_us - 500.0).abs() <= 1.0, "{}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{}", s.p99_us);
        assert!((s.max_us - 1000.0).abs() <= 1.0);
        let mut b = Recorder::new();
        b.record(10, 5);
        b.record(0, MAX_TRACKABLE_NS * 2);
        a.merge(&b);
        assert_eq!(a.count(), 1002);
        assert_eq!(a.summary().clamped, 1);
        assert!(a.summary().min_us <= 0.001);
    }
}

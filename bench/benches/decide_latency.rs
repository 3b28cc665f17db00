//! p50 / p99 / p99.9 of single decisions from our own timing loop (each decision timed alone,
//! [`bench::decide`]), for 10 / 1,000 / 10,000 campaigns.
//! `cargo bench -p helios-bench --bench decide_latency`

use bench::decide::{REQUESTS, StdClock, time_decisions};

fn main() {
    for n in [10usize, 1_000, 10_000] {
        let rounds = 50;
        let mut t = Vec::with_capacity(REQUESTS * rounds);
        let mut bids = 0usize;
        time_decisions(n, rounds, &StdClock, |ns, b| {
            t.push(ns);
            bids += b;
        })
        .expect("synthetic requests and campaigns are valid");
        t.sort_unstable();
        let q = |p: f64| t[((t.len() as f64 * p) as usize).min(t.len() - 1)];
        println!(
            "campaigns={n:>6} decisions={} bid_rate={:.2} p50={}ns p90={}ns p99={}ns p99.9={}ns max={}ns",
            t.len(),
            bids as f64 / t.len() as f64,
            q(0.50),
            q(0.90),
            q(0.99),
            q(0.999),
            t[t.len() - 1]
        );
    }
}

//! The reporter's own CPU per event, without PostgreSQL: decoding a Kafka message into a
//! [`Row`] (what the consumer task does per message) and preparing a batch
//! ([`Prepared::new`]: retention window, sort by the raw key, dedup, `COPY` encoding, the
//! in-memory fold and its encoded deltas — what the writer's blocking-pool thread does per
//! batch). The stream is `ingest_pg`'s: 200 campaigns, 2,000 sites, uniform or Zipf sites.
//!
//! `cargo bench -p helios-reporter --bench prepare` (BENCH_EVENTS, default 1,000,000;
//! BENCH_BATCH, default 50,000; BENCH_SITES_ZIPF, comma-separated exponents, default `0,1.1`;
//! BENCH_ROUNDS, default 3). Run under `valgrind --tool=callgrind` with a small BENCH_EVENTS
//! and BENCH_ROUNDS=1 for instruction counts (stable on a shared machine, unlike times).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use codec::event::Event;
use reporter::ingest::partitions::Window;
use reporter::ingest::prepare::{PrepareCfg, Prepared};
use reporter::ingest::row::Row;
use reporter::synth::{RunConfig, generate};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let target: u64 = env_or("BENCH_EVENTS", 1_000_000);
    let batch: usize = env_or("BENCH_BATCH", 50_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64;
    let span = 5_000_000_000u64;
    let zipfs = std::env::var("BENCH_SITES_ZIPF").unwrap_or_else(|_| "0,1.1".to_owned());
    for zipf in zipfs.split(',').filter(|s| !s.is_empty()) {
        let zipf: f64 = zipf
            .parse()
            .expect("BENCH_SITES_ZIPF: exponents (0: uniform)");
        // ~1.9 events per request with the default mix (as in ingest_pg).
        let mut cfg = RunConfig::small(11, target * 10 / 19, now - span, span);
        cfg.advertisers = 20;
        cfg.campaigns_per_advertiser = 10;
        cfg.sites = 2000;
        cfg.site_zipf = zipf;
        let bytes: Vec<Vec<u8>> = generate(&cfg)
            .iter()
            .map(|e| e.to_bytes().to_vec())
            .collect();
        let today = (now / 86_400_000_000_000) as i32;
        let prep = PrepareCfg {
            window: Window::new(today, 30),
            parts: 1,
            defer_fine: true,
        };
        for round in 1..=rounds {
            let t = Instant::now();
            let mut rows: Vec<Row> = Vec::with_capacity(bytes.len());
            for b in &bytes {
                match Event::from_bytes(b) {
                    Ok(e) => rows.push(Row::from_event(&e)),
                    Err(e) => panic!("the generator's event does not decode: {e}"),
                }
            }
            let decode = t.elapsed();
            let n = rows.len();
            // Cut into batches as the consumer does (each row moved once), outside the clock.
            let mut cut: Vec<Vec<Row>> = Vec::with_capacity(n / batch + 1);
            let mut it = rows.into_iter();
            loop {
                let b: Vec<Row> = it.by_ref().take(batch).collect();
                if b.is_empty() {
                    break;
                }
                cut.push(b);
            }
            let t = Instant::now();
            let mut deltas = 0usize;
            let mut batches = Vec::with_capacity(cut.len());
            for b in cut {
                let p = Prepared::new(b, Vec::new(), prep);
                deltas += p.delta_rows();
                batches.push(p);
            }
            let prepare = t.elapsed();
            drop(batches);
            println!(
                "zipf {zipf} round {round}: {n} events; decode+row {:.0} ns/event, prepare {:.0} \
                 ns/event ({} batches of {batch}, {:.3} deltas/event)",
                decode.as_nanos() as f64 / n as f64,
                prepare.as_nanos() as f64 / n as f64,
                n.div_ceil(batch),
                deltas as f64 / n as f64,
            );
        }
    }
}

//! Cost of `CoreSink::emit` on a bidding core, with the producer thread running and draining
//! the queue concurrently (as in production). The broker is unreachable and the spool bounded,
//! so the producer drains fast (serialise, refuse at the bound, count) and the queue stays
//! short: this measures the core's side only. Also the overflow path (queue full → the core's
//! own spool segment) and building the event itself, for scale.
//! Run: `cargo bench -p helios-pipeline --bench emit`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pipeline::{Pipeline, PipelineConfig};

mod common;
use common::sample_event;

fn config(tag: &str, capacity: usize, spool_max: u64) -> PipelineConfig {
    let dir = std::env::temp_dir().join(format!("helios-emit-bench-{tag}-{}", std::process::id()));
    common::unreachable_broker(dir, capacity, spool_max)
}

fn bench_emit(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("build_event", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(sample_event(black_box(i)))
        })
    });

    // Queue path: emit in chunks no larger than the queue, letting the producer drain in
    // between (outside the timed region), so no event overflows.
    let cfg = config("queue", 65_536, 1 << 20);
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().expect("one sink");
    let ev = sample_event(1);
    g.bench_function("emit_queue", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(16_384);
                while s.queue_len() > 1_024 {
                    std::thread::yield_now();
                }
                let t = Instant::now();
                for _ in 0..chunk {
                    s.emit(black_box(&ev));
                }
                total += t.elapsed();
                left -= chunk;
            }
            total
        })
    });
    let m = p.metrics();
    println!(
        "queue path: overflowed {} (must be 0), drained {}",
        m.overflowed, m.drained
    );
    drop(s);
    p.shutdown(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&cfg.spool_dir);

    // Overflow path: a 1-slot queue, so nearly every emit writes the core's spool segment.
    let cfg = config("overflow", 1, 4 << 30);
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().expect("one sink");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(1));
    g.sample_size(10);
    g.bench_function("emit_overflow_to_spool", |b| {
        b.iter(|| s.emit(black_box(&ev)))
    });
    let m = p.metrics();
    println!(
        "overflow path: overflowed {}, dropped {} (must be 0), spool {} B",
        m.overflowed,
        m.dropped(),
        m.spool_bytes
    );
    drop(s);
    p.shutdown(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&cfg.spool_dir);
    g.finish();
}

criterion_group!(benches, bench_emit);
criterion_main!(benches);

//! Lookup cost of the replica without Redis: an in-memory store of synthetic profiles (20
//! segments, 36-byte ids), looked up from a hot set that stays cached, uniformly over the whole
//! store (DRAM-bound), and for absent ids; plus the same lookups made while the reader is already
//! pinned (isolates the cost of the epoch announcement and its fence).

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use profile_cache::{ProfileData, Store};
use shards::ProfileView;

#[path = "support/ids.rs"]
mod ids;

use ids::{ID_LEN, id};

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("PROFILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (mut store, reader) = Store::new(n as usize, 1000);
    let mut p = ProfileData::default();
    for i in 0..n {
        p.clear();
        p.user_id.push_str(&id(i));
        p.segments
            .extend((0..20u32).map(|s| ((i as u32).wrapping_mul(31) % 10_000 + s * 7, 500)));
        store.upsert(&mut p).expect("valid profile");
    }
    let mut rnd = ids::draws(0x1234_5678);
    // Query ids laid out one after another and read in order, as a request's id would be in a
    // hot receive buffer: the cache and TLB misses measured are the replica's, not the bench's.
    const QUERIES: usize = 1 << 20;
    let flat = |f: &mut dyn FnMut(usize) -> String| -> String { (0..QUERIES).map(f).collect() };
    let hot = flat(&mut |_| id(rnd(10_000)));
    let uni = flat(&mut |_| id(rnd(n)));
    let absent = flat(&mut |i| format!("absent-{i:029}"));
    let slices = |s: &'_ String| -> Vec<(usize, usize)> {
        debug_assert_eq!(s.len(), QUERIES * ID_LEN);
        (0..QUERIES)
            .map(|k| (k * ID_LEN, k * ID_LEN + ID_LEN))
            .collect()
    };
    let spans = slices(&hot);

    let mut g = c.benchmark_group("lookup");
    for (name, buf) in [("hot_set_10k", &hot), ("uniform", &uni)] {
        g.bench_function(BenchmarkId::new("get+segment_weight", name), |b| {
            let mut k = 0usize;
            b.iter(|| {
                k = (k + 1) & (QUERIES - 1);
                let (s, e) = spans[k];
                let p = reader.get(&buf[s..e]);
                black_box(p.map(|p| p.segment_weight(7)))
            })
        });
        g.bench_function(BenchmarkId::new("already_pinned", name), |b| {
            let pin = reader.get(&id(0)).expect("present");
            let mut k = 0usize;
            b.iter(|| {
                k = (k + 1) & (QUERIES - 1);
                let (s, e) = spans[k];
                let p = reader.get(&buf[s..e]);
                black_box(p.map(|p| p.segment_weight(7)))
            });
            drop(pin);
        });
    }
    g.bench_function("miss", |b| {
        let mut k = 0usize;
        b.iter(|| {
            k = (k + 1) & (QUERIES - 1);
            let (s, e) = spans[k];
            black_box(reader.get(&absent[s..e]).is_some())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

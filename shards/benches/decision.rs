//! Decision time per request for 10 / 1,000 / 10,000 campaigns (criterion), and the cost of
//! budget enforcement: the same decisions with `enforce_budget` on and off side by side, and
//! the settlement of one notice (`Shard::settle`).
//! `cargo bench -p helios-shards --bench decision`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shards::{Decision, Shard};

const NOW: u64 = 1_795_435_200_000_000_000;

fn shard(n: usize) -> Shard {
    shard_with(n, true)
}

fn shard_with(n: usize, enforce_budget: bool) -> Shard {
    shards::synth::leased_shard(n, enforce_budget, 1 << 50, NOW).expect("synthetic set is valid")
}

fn bench(c: &mut Criterion) {
    let bodies = shards::synth::requests(1024, 11);
    let reqs: Vec<_> = bodies
        .iter()
        .map(|b| codec::decode_valid(b.as_bytes()).expect("synthetic request is valid"))
        .collect();
    let mut g = c.benchmark_group("decide");
    for n in [10usize, 1_000, 10_000] {
        let mut s = shard(n);
        let mut d = Decision::default();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                s.decide(&reqs[i & 1023], None, NOW, &mut d);
                i += 1;
                d.bids.len()
            })
        });
    }
    g.finish();
}

/// Enforcement on vs off on the same requests (synthetic campaigns are asap with ample
/// leases, so both make the same bids), and one settlement.
fn budget(c: &mut Criterion) {
    let bodies = shards::synth::requests(1024, 11);
    let reqs: Vec<_> = bodies
        .iter()
        .map(|b| codec::decode_valid(b.as_bytes()).expect("synthetic request is valid"))
        .collect();
    let mut g = c.benchmark_group("budget");
    for n in [10usize, 1_000] {
        for (name, on) in [("off", false), ("on", true)] {
            let mut s = shard_with(n, on);
            let mut d = Decision::default();
            let mut i = 0;
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    s.decide(&reqs[i & 1023], None, NOW, &mut d);
                    i += 1;
                    d.bids.len()
                })
            });
        }
    }
    let mut s = shard(1_000);
    let ids: Vec<u32> = s.set().compiled.iter().map(|c| c.id).collect();
    let mut i = 0;
    g.bench_function("settle/1000", |b| {
        b.iter(|| {
            let id = ids[i % ids.len()];
            i += 1;
            s.settle(id, NOW, codec::Micros(2_500), codec::Micros(2_000));
        })
    });
    g.finish();
}

criterion_group!(benches, bench, budget);
criterion_main!(benches);

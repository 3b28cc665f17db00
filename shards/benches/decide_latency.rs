//! p50 / p99 / p99.9 of single decisions from our own timing loop (each decision timed alone),
//! for 10 / 1,000 / 10,000 campaigns. `cargo bench -p helios-shards --bench decide_latency`

use std::time::Instant;

use shards::pacing::LeaseGrant;
use shards::{CompiledSet, Decision, Shard, ShardConfig};

const NOW: u64 = 1_795_435_200_000_000_000;

fn main() {
    let bodies = shards::synth::requests(4096, 11);
    let reqs: Vec<_> = bodies
        .iter()
        .map(|b| codec::decode_valid(b.as_bytes()).expect("synthetic request is valid"))
        .collect();
    for n in [10usize, 1_000, 10_000] {
        let set = CompiledSet::parse(shards::synth::campaigns_json(n, 7).as_bytes())
            .expect("synthetic set is valid");
        let mut s = Shard::with_config(
            0,
            set,
            ShardConfig {
                enforce_budget: true,
                ..ShardConfig::default()
            },
        );
        s.tick(NOW);
        let ids: Vec<u32> = s.set().compiled.iter().map(|c| c.id).collect();
        for id in ids {
            s.lease_granted(&LeaseGrant {
                campaign_id: id,
                granted: 1 << 50,
                balance: 1 << 50,
                remote_spent: 0,
            });
        }
        let mut d = Decision::default();
        for r in &reqs {
            s.decide(r, None, NOW, &mut d);
        }
        let rounds = 50;
        let mut t = Vec::with_capacity(reqs.len() * rounds);
        let mut bids = 0usize;
        for _ in 0..rounds {
            for r in &reqs {
                let t0 = Instant::now();
                s.decide(r, None, NOW, &mut d);
                t.push(t0.elapsed().as_nanos() as u64);
                bids += d.bids.len();
            }
        }
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

//! Zero allocations per decision once warm: a counting global allocator around `decide` over a
//! mixed request stream (site/app, multi-imp, deals, blocks, TCF, US privacy, GPP, profiles,
//! budgets enforced). The only test in this binary, so no other test allocates meanwhile.

#![allow(clippy::unwrap_used)] // fixed test data

use shards::pacing::LeaseGrant;
use shards::{CompiledSet, Decision, ProfileView, Shard, ShardConfig};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

struct P;
impl ProfileView for P {
    fn segment_weight(&self, s: u32) -> Option<u16> {
        s.is_multiple_of(3).then_some(700)
    }
    fn impressions_since(&self, c: u32, _: u64) -> u32 {
        c % 4
    }
}

#[test]
fn zero_allocations_per_decision_once_warm() {
    assert!(
        alloc_count::installed(),
        "the counting allocator must be installed"
    );
    let set = CompiledSet::parse(shards::synth::campaigns_json(1000, 7).as_bytes()).unwrap();
    let cfg = ShardConfig {
        enforce_budget: true,
        ..ShardConfig::default()
    };
    let mut shard = Shard::with_config(0, set, cfg);
    let now = 1_795_435_200_000_000_000u64;
    shard.tick(now);
    let ids: Vec<u32> = shard.set().compiled.iter().map(|c| c.id).collect();
    for id in ids {
        shard.lease_granted(&LeaseGrant {
            campaign_id: id,
            granted: 1 << 40,
            balance: 1 << 40,
        });
    }
    let bodies = shards::synth::requests(2000, 11);
    let reqs: Vec<_> = bodies
        .iter()
        .map(|b| codec::decode_valid(b.as_bytes()).unwrap())
        .collect();
    let mut d = Decision::default();
    let profile = P;
    // Warm-up: every request once (fills the GPP verdict cache).
    for (i, r) in reqs.iter().enumerate() {
        let p: Option<&dyn ProfileView> = if i % 2 == 0 { Some(&profile) } else { None };
        shard.decide(r, p, now, &mut d);
    }
    let before = alloc_count::thread_allocs();
    let mut bids = 0;
    for round in 0..5 {
        for (i, r) in reqs.iter().enumerate() {
            let p: Option<&dyn ProfileView> = if (i + round) % 2 == 0 {
                Some(&profile)
            } else {
                None
            };
            shard.decide(r, p, now, &mut d);
            bids += d.bids.len();
        }
    }
    let after = alloc_count::thread_allocs();
    assert!(
        bids > 1000,
        "the stream must exercise bidding, got {bids} bids"
    );
    assert_eq!(
        after - before,
        0,
        "allocations during 10,000 warm decisions"
    );
}

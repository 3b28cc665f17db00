//! The decision-latency harness: one `Shard::decide` at a time, each timed alone, over 4,096
//! synthetic requests (`shards::synth::requests`, seed 11) and a synthetic campaign set with
//! budgets enforced and every lease granted (`shards::synth::leased_shard`), after one untimed
//! pass. Shared by `helios-owntime` (TSC clock, HdrHistogram: the `decision` object of its JSON)
//! and the `decide_latency` bench (`std::time::Instant`, exact percentiles), each with its own
//! clock so their figures stay comparable with their earlier ones. Single-threaded; allocates
//! only while setting up, never between a decision's two clock reads.

use std::time::Instant;

use anyhow::Context;
use shards::Decision;

/// The synthetic requests a pass goes through.
pub const REQUESTS: usize = 4096;

/// The instant the synthetic shard lives at (fixed, so that runs compare).
pub const NOW: u64 = 1_795_435_200_000_000_000;

/// A clock for timing one decision: a mark before it, the nanoseconds since that mark after it.
pub trait Stopwatch {
    type Mark: Copy;
    fn mark(&self) -> Self::Mark;
    fn nanos_since(&self, mark: Self::Mark) -> u64;
}

/// `std::time::Instant` (the monotonic clock through the vDSO).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdClock;

impl Stopwatch for StdClock {
    type Mark = Instant;
    fn mark(&self) -> Instant {
        Instant::now()
    }
    fn nanos_since(&self, mark: Instant) -> u64 {
        mark.elapsed().as_nanos() as u64
    }
}

/// The TSC through `quanta`: raw reads, scaled to nanoseconds after the second one.
impl Stopwatch for quanta::Clock {
    type Mark = u64;
    fn mark(&self) -> u64 {
        self.raw()
    }
    fn nanos_since(&self, mark: u64) -> u64 {
        self.delta_as_nanos(mark, self.raw())
    }
}

/// Times `rounds` passes over the [`REQUESTS`] synthetic requests through a shard over
/// `campaigns` synthetic campaigns, after one untimed pass; `record(nanos, imp_bids)` gets each
/// decision's time on `clock` and the bids it made.
pub fn time_decisions<C: Stopwatch>(
    campaigns: usize,
    rounds: usize,
    clock: &C,
    mut record: impl FnMut(u64, usize),
) -> anyhow::Result<()> {
    let bodies = shards::synth::requests(REQUESTS, 11);
    let mut reqs = Vec::with_capacity(bodies.len());
    for b in &bodies {
        reqs.push(
            codec::decode_valid(b.as_bytes())
                .map_err(|e| anyhow::anyhow!("synthetic request: {e}"))?,
        );
    }
    let mut s = shards::synth::leased_shard(campaigns, true, 1 << 50, NOW)
        .context("synthetic campaign set")?;
    let mut d = Decision::default();
    for r in &reqs {
        s.decide(r, None, NOW, &mut d);
    }
    for _ in 0..rounds {
        for r in &reqs {
            let t0 = clock.mark();
            s.decide(r, None, NOW, &mut d);
            let ns = clock.nanos_since(t0);
            record(ns, d.bids.len());
        }
    }
    Ok(())
}

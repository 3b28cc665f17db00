//! [`LocalWins`]: the impressions this node has won but the profile replica may not show yet.
//!
//! Owns: a fixed-size table (allocated once) of recent wins keyed by user × campaign, in buckets
//! of [`WAYS`] slots; a full bucket evicts its oldest entry (counted). A frequency check adds the
//! entries newer than the replica's replication point to the replica's count, so a cap holds
//! within ±1 under replication lag. Owned by one shard's core. Must never: allocate or grow after
//! construction.

/// Slots per bucket: the most unreplicated wins remembered for one user × campaign.
pub const WAYS: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    ts_s: u64,
}

#[derive(Debug)]
pub struct LocalWins {
    buckets: Box<[[Slot; WAYS]]>,
    /// Entries overwritten while still possibly unreplicated (a full bucket).
    pub evicted: u64,
}

fn key(user: u64, campaign: u32) -> u64 {
    (user ^ u64::from(campaign).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(7) | 1
}

impl LocalWins {
    /// `buckets` is rounded up to a power of two.
    pub fn new(buckets: usize) -> LocalWins {
        let n = buckets.max(1).next_power_of_two();
        LocalWins {
            buckets: vec![[Slot::default(); WAYS]; n].into_boxed_slice(),
            evicted: 0,
        }
    }

    fn bucket(&self, k: u64) -> usize {
        (k.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 32) as usize & (self.buckets.len() - 1)
    }

    /// Records a win of `campaign` shown to `user` (a hash of the profile key) at `ts_s`.
    pub fn record(&mut self, user: u64, campaign: u32, ts_s: u64) {
        let k = key(user, campaign);
        let b = self.bucket(k);
        let bucket = &mut self.buckets[b];
        let mut victim = 0;
        for (i, s) in bucket.iter().enumerate() {
            if s.key == 0 {
                victim = i;
                break;
            }
            if s.ts_s < bucket[victim].ts_s {
                victim = i;
            }
        }
        if bucket[victim].key != 0 {
            self.evicted += 1;
        }
        bucket[victim] = Slot { key: k, ts_s };
    }

    /// Wins of `campaign` by `user` at or after `since_s` and after `replicated_until_s` (those
    /// the replica has not counted yet).
    pub fn count(&self, user: u64, campaign: u32, since_s: u64, replicated_until_s: u64) -> u32 {
        let k = key(user, campaign);
        let from = since_s.max(replicated_until_s.saturating_add(1));
        self.buckets[self.bucket(k)]
            .iter()
            .filter(|s| s.key == k && s.ts_s >= from)
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_unreplicated_wins_in_the_window() {
        let mut w = LocalWins::new(16);
        w.record(42, 7, 100);
        w.record(42, 7, 200);
        w.record(42, 8, 200);
        w.record(43, 7, 200);
        assert_eq!(w.count(42, 7, 0, 0), 2);
        assert_eq!(w.count(42, 7, 150, 0), 1);
        // The replica has everything up to 150: only the win at 200 is extra.
        assert_eq!(w.count(42, 7, 0, 150), 1);
        assert_eq!(w.count(42, 7, 0, 200), 0);
        assert_eq!(w.count(44, 7, 0, 0), 0);
    }

    #[test]
    fn a_full_bucket_evicts_the_oldest_and_counts_it() {
        let mut w = LocalWins::new(1);
        for t in 0..(WAYS as u64 + 2) {
            w.record(1, 1, 10 + t);
        }
        assert_eq!(w.evicted, 2);
        assert_eq!(w.count(1, 1, 0, 0), WAYS as u32);
        assert_eq!(w.count(1, 1, 12, 0), WAYS as u32);
    }
}

//! First-price bid shading: a per (publisher, size) estimate of the price needed to win, learned
//! from outcomes, and the shaded bid `min(strategy price, estimate + margin)`.
//!
//! Owns: a fixed, direct-mapped table of estimates ([`Shader`], allocated once; a new key evicts
//! the slot's old one). Learning is deterministic: a loss that reports the minimum price to win
//! (`${AUCTION_MIN_TO_WIN}`) pulls the estimate towards it; a loss without it raises the estimate
//! above the losing bid; a win lowers the estimate towards 10% below the winning bid (probing for a
//! cheaper price). Estimates are used only after [`MIN_SAMPLES`] outcomes and only for campaigns
//! with `shading: true` in first-price auctions (`at = 1`). Owned by one shard's core; never
//! allocates after construction.

use codec::Micros;
use codec::bounded::fnv1a_lower;

/// Outcomes seen before an estimate is trusted.
pub const MIN_SAMPLES: u32 = 8;
/// Margin over the estimate, in basis points (5%).
pub const MARGIN_BP: i64 = 500;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    est: i64,
    n: u32,
}

/// What an exchange told us about one of our first-price bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Win {
        bid: Micros,
    },
    Loss {
        bid: Micros,
        min_to_win: Option<Micros>,
    },
}

#[derive(Debug)]
pub struct Shader {
    slots: Box<[Slot]>,
}

/// Key of a publisher (id, else domain/bundle) and slot size (0×0 for video/native).
pub fn key(publisher: &str, w: u32, h: u32) -> u64 {
    key_hashed(fnv1a_lower(publisher), w, h)
}

/// [`key`] from the publisher's `fnv1a_lower` hash.
pub fn key_hashed(publisher: u64, w: u32, h: u32) -> u64 {
    (publisher ^ ((u64::from(w) << 32) | u64::from(h)).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

impl Shader {
    /// `slots` rounded up to a power of two.
    pub fn new(slots: usize) -> Shader {
        Shader {
            slots: vec![Slot::default(); slots.max(1).next_power_of_two()].into_boxed_slice(),
        }
    }

    fn slot(&self, k: u64) -> usize {
        (k.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 32) as usize & (self.slots.len() - 1)
    }

    /// Learns from one outcome.
    pub fn observe(&mut self, k: u64, o: Outcome) {
        let i = self.slot(k);
        let s = &mut self.slots[i];
        if s.key != k {
            let start = match o {
                Outcome::Win { bid } | Outcome::Loss { bid, .. } => bid.0,
            };
            *s = Slot {
                key: k,
                est: start,
                n: 0,
            };
        }
        s.n = s.n.saturating_add(1);
        s.est = match o {
            // Pull a quarter of the way towards the reported price needed.
            Outcome::Loss {
                min_to_win: Some(m),
                ..
            } => s.est + (m.0 - s.est) / 4,
            // Lost without a hint: at least our bid plus 10% was needed.
            Outcome::Loss { bid, .. } => s.est.max(bid.0 + bid.0 / 10),
            // Won: try lower next time (10% below the winning bid — more than the margin —
            // decayed in).
            Outcome::Win { bid } => s.est + (bid.0 - bid.0 / 10 - s.est) / 4,
        }
        .max(1);
    }

    /// The shaded price: `min(price, estimate + margin)` once the estimate is trusted.
    pub fn shade(&self, k: u64, price: Micros) -> Micros {
        let s = &self.slots[self.slot(k)];
        if s.key != k || s.n < MIN_SAMPLES {
            return price;
        }
        let target = s.est + s.est * MARGIN_BP / 10_000;
        Micros(price.0.min(target.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first-price exchange: the best other bid per auction is uniform in 1.00–2.00 USD CPM;
    /// our strategy price is 3.00. Shading must cut the price per impression and keep winning.
    #[test]
    fn shading_reduces_spend_per_impression_against_a_simulated_exchange() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let k = key("pub-1", 300, 250);
        let strategy = Micros(3_000_000);
        let run = |shade: bool, next: &mut dyn FnMut() -> u64| {
            let mut s = Shader::new(64);
            let (mut wins, mut spend) = (0u64, 0i64);
            for _ in 0..20_000 {
                let other = 1_000_000 + (next() % 1_000_001) as i64;
                let bid = if shade {
                    s.shade(k, strategy)
                } else {
                    strategy
                };
                if bid.0 >= other {
                    wins += 1;
                    spend += bid.0;
                    s.observe(k, Outcome::Win { bid });
                } else {
                    s.observe(
                        k,
                        Outcome::Loss {
                            bid,
                            min_to_win: Some(Micros(other + 10_000)),
                        },
                    );
                }
            }
            (wins, spend / wins.max(1) as i64)
        };
        let (w0, cpm0) = run(false, &mut next);
        let (w1, cpm1) = run(true, &mut next);
        println!("unshaded: {w0} wins at {cpm0} micros CPM; shaded: {w1} wins at {cpm1}");
        assert_eq!(w0, 20_000);
        assert!(cpm1 < cpm0 * 3 / 4, "shaded {cpm1} vs {cpm0}");
        assert!(w1 > 20_000 / 2, "still wins most auctions: {w1}");
        assert!(cpm1 <= 2_200_000, "close to what winning costs: {cpm1}");
    }

    #[test]
    fn untrusted_or_other_keys_are_not_shaded() {
        let mut s = Shader::new(64);
        let k = key("p", 1, 1);
        for _ in 0..(MIN_SAMPLES - 1) {
            s.observe(
                k,
                Outcome::Win {
                    bid: Micros(1_000_000),
                },
            );
        }
        assert_eq!(s.shade(k, Micros(3_000_000)), Micros(3_000_000));
        s.observe(
            k,
            Outcome::Win {
                bid: Micros(1_000_000),
            },
        );
        assert!(s.shade(k, Micros(3_000_000)) < Micros(1_100_000));
        assert_eq!(
            s.shade(key("q", 1, 1), Micros(3_000_000)),
            Micros(3_000_000)
        );
    }
}

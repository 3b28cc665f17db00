//! [`Rng`]: a tiny, fully specified pseudo-random generator (SplitMix64) and the Zipf-like
//! sampler built on it.
//!
//! The corpus must be the same bytes for the same seed on every machine and every version of
//! every dependency, so the generator is written out here rather than taken from `rand` (whose
//! `StdRng` algorithm may change between releases). Owned by whichever thread generates; no
//! shared state. Must never: be used for anything that needs unpredictability.

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, trivially seedable.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// A generator for item `index` of stream `seed`: independent of every other index, so
    /// item `i` is the same whether it is generated alone or after items `0..i`.
    pub fn for_item(seed: u64, index: u64) -> Rng {
        let mut mix = Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng::new(mix.next_u64() ^ index)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        let span = hi - lo + 1;
        if span == 0 {
            return self.next_u64();
        }
        lo + self.next_u64() % span
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        debug_assert!(!items.is_empty());
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }

    /// Lower-case hex of `n` random bytes (ids, consent-like strings).
    pub fn hex(&mut self, n: usize, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for _ in 0..n {
            let b = self.next_u64() as u8;
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }

    /// A UUID-shaped string (version 4 layout).
    pub fn uuid(&mut self) -> String {
        let mut s = String::with_capacity(36);
        for (i, n) in [4usize, 2, 2, 2, 6].iter().enumerate() {
            if i > 0 {
                s.push('-');
            }
            self.hex(*n, &mut s);
        }
        s
    }
}

/// Draws ranks `0..n` with probability roughly proportional to `1 / (rank + 1)^s` (Zipf-like).
///
/// Inverse-transform sampling of the continuous power law on `[1, n + 1)`, floored: O(1) per
/// draw and no table, so an id space of 100 million costs nothing. Rank 0 is the most popular.
#[derive(Debug, Clone, Copy)]
pub struct Zipf {
    n: u64,
    s: f64,
    /// `(n + 1)^(1 - s) - 1`, precomputed (unused when `s == 1`).
    span: f64,
}

impl Zipf {
    /// `n >= 1` ids, exponent `s >= 0` (0 = uniform; web traffic is usually 0.8–1.2).
    pub fn new(n: u64, s: f64) -> Zipf {
        let n = n.max(1);
        let s = if s.is_finite() { s.max(0.0) } else { 1.0 };
        Zipf {
            n,
            s,
            span: ((n + 1) as f64).powf(1.0 - s) - 1.0,
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let x = if (self.s - 1.0).abs() < 1e-9 {
            ((self.n + 1) as f64).powf(u)
        } else {
            (self.span * u + 1.0).powf(1.0 / (1.0 - self.s))
        };
        // x is in [1, n + 1); rounding can touch n + 1, hence the clamp.
        (x as u64).saturating_sub(1).min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_items_are_independent_of_order() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = Rng::new(7);
        assert_ne!(r.next_u64(), r.next_u64());
        assert_eq!(
            Rng::for_item(1, 99).next_u64(),
            Rng::for_item(1, 99).next_u64()
        );
        assert_ne!(
            Rng::for_item(1, 99).next_u64(),
            Rng::for_item(1, 98).next_u64()
        );
        assert_ne!(
            Rng::for_item(1, 99).next_u64(),
            Rng::for_item(2, 99).next_u64()
        );
    }

    #[test]
    fn zipf_stays_in_range_and_favours_low_ranks() {
        let z = Zipf::new(1000, 1.0);
        let mut r = Rng::new(3);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            let k = z.sample(&mut r);
            assert!(k < 1000);
            counts[k as usize] += 1;
        }
        // Rank 0 is far more popular than rank 100, which beats rank 900.
        let band = |a: usize, b: usize| counts[a..b].iter().sum::<u32>();
        assert!(counts[0] > 5 * counts[100]);
        assert!(band(0, 10) > band(10, 100) / 2);
        assert!(band(100, 200) > band(800, 900));
        // Uniform when s = 0: the two halves are within 5% of each other.
        let u = Zipf::new(1000, 0.0);
        let lo = (0..100_000).filter(|_| u.sample(&mut r) < 500).count() as f64;
        assert!((lo / 50_000.0 - 1.0).abs() < 0.05, "{lo}");
    }

    #[test]
    fn zipf_of_one_id_is_always_zero() {
        let z = Zipf::new(1, 1.2);
        let mut r = Rng::new(1);
        assert!((0..100).all(|_| z.sample(&mut r) == 0));
    }
}

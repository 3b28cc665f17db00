//! Synthetic user profiles for `helios-profiles` and the profile-cache figures: deterministic ids
//! and contents from a seed, segment popularity following a Zipf law.
//!
//! Owns only generation (pure functions of `(seed, index)`, so any batch or thread split gives the
//! same data set); no I/O.

/// SplitMix64: a tiny, fast, deterministic generator (good enough for synthetic data).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for item `index` of the data set `seed`.
    pub fn new(seed: u64, index: u64) -> Self {
        let mut g = SplitMix64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        g.next_u64();
        g
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The user id of profile `index` in data set `seed`: a UUID-shaped 36-character string, like a
/// device IFA.
pub fn user_id(seed: u64, index: u64) -> String {
    let mut g = SplitMix64::new(seed ^ 0x05EE_D1D5, index);
    let a = g.next_u64();
    let b = g.next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// Zipf law over ranks `1..=n`: `P(k) ∝ 1 / k^s`, sampled by binary search of the CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A Zipf law over `n ≥ 1` ranks with exponent `s ≥ 0`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n.max(1) {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, g: &mut SplitMix64) -> u32 {
        let u = g.next_f64();
        (self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) + 1) as u32
    }
}

/// Shape of a synthetic data set.
#[derive(Debug, Clone)]
pub struct ProfileShape {
    /// Segments per profile.
    pub segments: usize,
    /// Distinct segment ids (Zipf ranks; the id is the rank).
    pub segment_space: usize,
    /// Zipf exponent of segment popularity.
    pub zipf_s: f64,
    /// Most frequency buckets per profile (uniform 0..=max, campaigns 1–100, last 24 h).
    pub freq_max: u32,
}

/// One synthetic profile, as the Redis fields of `docs/PROFILES.md`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyntheticProfile {
    /// `seg`.
    pub seg: String,
    /// `yob`.
    pub yob: u16,
    /// `gender`.
    pub gender: &'static str,
    /// `ls`.
    pub last_seen: u64,
    /// `(f:{campaign}:{hour} field name, count)`.
    pub freq: Vec<(String, u32)>,
}

/// Profile `index` of data set `seed` (deterministic), at wall-clock `now_s`.
pub fn profile(
    seed: u64,
    index: u64,
    shape: &ProfileShape,
    zipf: &Zipf,
    now_s: u64,
) -> SyntheticProfile {
    let mut g = SplitMix64::new(seed, index);
    let mut ids: Vec<u32> = Vec::with_capacity(shape.segments);
    let want = shape.segments.min(shape.segment_space);
    let mut attempts = 0;
    while ids.len() < want && attempts < want * 50 {
        attempts += 1;
        let id = zipf.sample(&mut g);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut seg = String::with_capacity(ids.len() * 9);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            seg.push(',');
        }
        let w = 1 + g.below(1000);
        seg.push_str(&format!("{id}:{w}"));
    }
    let hour = now_s / 3600;
    let nf = if shape.freq_max == 0 {
        0
    } else {
        g.below(u64::from(shape.freq_max) + 1)
    };
    let freq = (0..nf)
        .map(|_| {
            let c = 1 + g.below(100);
            let h = hour - g.below(24);
            (format!("f:{c}:{h}"), 1 + g.below(5) as u32)
        })
        .collect();
    SyntheticProfile {
        seg,
        yob: 1950 + g.below(58) as u16,
        gender: ["M", "F", "O"][g.below(3) as usize],
        last_seen: now_s - g.below(30 * 86_400),
        freq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_distinct_and_uuid_shaped() {
        assert_eq!(user_id(1, 5), user_id(1, 5));
        assert_ne!(user_id(1, 5), user_id(1, 6));
        assert_ne!(user_id(1, 5), user_id(2, 5));
        let id = user_id(7, 123);
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn zipf_puts_the_head_first() {
        let z = Zipf::new(1000, 1.0);
        let mut g = SplitMix64::new(1, 1);
        let mut counts = vec![0u32; 1001];
        for _ in 0..100_000 {
            counts[z.sample(&mut g) as usize] += 1;
        }
        // P(1)/P(2) = 2 for s = 1; rank 1 ≈ 13% of draws over 1000 ranks.
        let ratio = f64::from(counts[1]) / f64::from(counts[2]);
        assert!((1.8..2.2).contains(&ratio), "ratio {ratio}");
        assert!(counts[1] > counts[10] && counts[10] > counts[500]);
        assert_eq!(counts[0], 0);
    }

    #[test]
    fn profiles_have_distinct_segments_within_bounds() {
        let shape = ProfileShape {
            segments: 20,
            segment_space: 10_000,
            zipf_s: 1.0,
            freq_max: 2,
        };
        let z = Zipf::new(shape.segment_space, shape.zipf_s);
        let p = profile(3, 9, &shape, &z, 1_764_000_000);
        assert_eq!(p, profile(3, 9, &shape, &z, 1_764_000_000));
        let ids: Vec<&str> = p
            .seg
            .split(',')
            .map(|s| s.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(ids.len(), 20);
        let mut d = ids.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 20);
        assert!(p.freq.len() <= 2);
    }
}

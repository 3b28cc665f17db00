//! The index's hash of user ids: a seeded mix of 8-byte loads, built for the ids exchanges send
//! (UUIDs and other short opaque strings, 1–255 bytes).
//!
//! Owns only the hash function and its per-replica random seed. Immutable after creation: the
//! writer and every reader hash with the same [`IdHasher`] (read-only, shared). Must never:
//! allocate, branch on anything but the id's length, or produce values an id set chosen without
//! knowing the seed can predict (the index's probe lengths depend on it).
//!
//! The mix: the id is read as 16-byte chunks of two little-endian `u64` loads (the last chunk
//! overlaps the one before it; ids of 16 bytes or fewer use two overlapping 8-, 4- or 1-byte
//! reads), and each chunk is folded into the state by a 64×64→128-bit multiply whose halves are
//! XORed ("folded multiply", as in `foldhash` and `wyhash`). Both operands of every multiply are
//! XORed with secret seed words, so which ids collide depends on the seed: 4 multiplies for a
//! 36-byte UUID. It is `foldhash`'s construction without the `Hasher` trait's length-prefix
//! and sponge bookkeeping, which cost more than the mixing for ids this short (callgrind: ≈ 91
//! instructions per 36-byte id through `foldhash::fast::RandomState::hash_one`, see
//! `bench/RESULTS.md`). Not a cryptographic hash: a hostile id set cannot aim at collisions
//! without the seed, and the index additionally bounds every probe (`store.rs`).

use std::hash::BuildHasher;

/// Which hash function the index uses. [`IdHash::Seeded`] is the product's; [`IdHash::Foldhash`]
/// is the earlier one, kept so benchmarks can compare both in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdHash {
    /// The seeded fixed-width mix of this module.
    #[default]
    Seeded,
    /// `foldhash::fast::RandomState::hash_one(&[u8])` (before session 3).
    Foldhash,
    /// Tests only: every id hashes to the same value (every id collides with every other).
    #[cfg(test)]
    Constant,
}

/// A hash function of ids with its per-replica random seed.
#[derive(Debug, Clone)]
pub(crate) struct IdHasher {
    kind: IdHash,
    seeds: [u64; 4],
    fold: foldhash::fast::RandomState,
}

/// `a × b` as 128 bits, halves XORed.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn r8(k: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&k[i..i + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn r4(k: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&k[i..i + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Four random 64-bit words from the kernel (`getrandom`), or — if it fails — from the standard
/// library's randomly keyed SipHash state (itself seeded from the OS).
fn random_seeds() -> [u64; 4] {
    let mut s = [0u64; 4];
    #[cfg(target_os = "linux")]
    {
        let mut b = [0u8; 32];
        // SAFETY: the kernel writes at most `b.len()` bytes into `b`, which we own.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == b.len() as isize {
            for (i, w) in s.iter_mut().enumerate() {
                *w = r8(&b, i * 8);
            }
        }
    }
    if s.iter().all(|&w| w == 0) {
        let rs = std::collections::hash_map::RandomState::new();
        for (i, w) in s.iter_mut().enumerate() {
            *w = rs.hash_one(i as u64);
        }
    }
    // Odd multipliers never lose the other operand's low bit; also rules out an all-zero seed.
    for w in &mut s {
        *w |= 1;
    }
    s
}

impl IdHasher {
    /// A hasher of `kind` with fresh random seeds.
    pub(crate) fn new(kind: IdHash) -> Self {
        Self::with_seeds(kind, random_seeds())
    }

    /// A hasher with given seeds (tests: the same ids under two seeds).
    pub(crate) fn with_seeds(kind: IdHash, seeds: [u64; 4]) -> Self {
        Self {
            kind,
            seeds,
            fold: foldhash::fast::RandomState::default(),
        }
    }

    /// The hash of `key` (any length; ids are 1–255 bytes).
    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        match self.kind {
            IdHash::Seeded => self.seeded(key),
            IdHash::Foldhash => self.fold.hash_one(key),
            #[cfg(test)]
            IdHash::Constant => 0xC011_1DE5_0000_0040,
        }
    }

    #[inline]
    fn seeded(&self, k: &[u8]) -> u64 {
        let [s0, s1, s2, s3] = self.seeds;
        let len = k.len();
        let h = if len <= 16 {
            let (a, b) = if len >= 8 {
                (r8(k, 0), r8(k, len - 8))
            } else if len >= 4 {
                (r4(k, 0), r4(k, len - 4))
            } else if len > 0 {
                (
                    u64::from(k[0]) << 16 | u64::from(k[len / 2]) << 8 | u64::from(k[len - 1]),
                    0,
                )
            } else {
                (0, 0)
            };
            fold(a ^ s1, b ^ s2)
        } else if len <= 48 {
            // The loop below unrolled for ids of 17–48 bytes (UUIDs are 36), where the bounds
            // are known and the checks fold away: same values as the loop.
            let mut h = fold(r8(k, 0) ^ s1, r8(k, 8) ^ s0);
            if len > 32 {
                h = fold(r8(k, 16) ^ s1, r8(k, 24) ^ h);
            }
            fold(r8(k, len - 16) ^ s2, r8(k, len - 8) ^ h)
        } else {
            let mut h = s0;
            let mut i = 0;
            while len - i > 16 {
                h = fold(r8(k, i) ^ s1, r8(k, i + 8) ^ h);
                i += 16;
            }
            fold(r8(k, len - 16) ^ s2, r8(k, len - 8) ^ h)
        };
        // The length goes into the multiplier (overlapping reads give "aaaa" and "aaaaa" the same
        // words), and the multiply spreads every input bit to both ends: the index uses the low
        // bits for the home slot and the top 16 as the slot's tag.
        fold(h ^ s3, s0 ^ len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const A: [u64; 4] = [
        0x243F_6A88_85A3_08D3,
        0x1319_8A2E_0370_7345,
        0xA409_3822_299F_31D1,
        0x082E_FA98_EC4E_6C89,
    ];
    const B: [u64; 4] = [
        0x4528_21E6_38D0_1377,
        0xBE54_66CF_34E9_0C6D,
        0xC0AC_29B7_C97C_50DD,
        0x3F84_D5B5_B547_0917,
    ];

    fn uuid(i: u64) -> String {
        let a = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            i & 0xfff,
            i
        )
    }

    #[test]
    fn every_length_and_every_byte_position_changes_the_hash() {
        let h = IdHasher::with_seeds(IdHash::Seeded, A);
        let mut seen = HashSet::new();
        let base = [b'x'; 255];
        for len in 0..=255usize {
            assert!(seen.insert(h.hash(&base[..len])), "length {len}");
            // Flipping any one bit of any byte gives a new value.
            for pos in 0..len {
                for bit in [0u8, 3, 7] {
                    let mut k = base;
                    k[pos] ^= 1 << bit;
                    assert!(
                        seen.insert(h.hash(&k[..len])),
                        "len {len} pos {pos} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn structured_ids_spread_over_home_slots_and_tags() {
        // Sequential and UUID-like ids into 2^16 buckets: no bucket far above the mean, and the
        // top 16 bits (the slot tag) as spread as the low ones.
        for make in [
            (|i: u64| format!("user-{i:08}")) as fn(u64) -> String,
            uuid,
            |i| format!("{i}"),
        ] {
            let h = IdHasher::with_seeds(IdHash::Seeded, A);
            let n = 1u64 << 18;
            let mut low = vec![0u32; 1 << 16];
            let mut top = vec![0u32; 1 << 16];
            for i in 0..n {
                let v = h.hash(make(i).as_bytes());
                low[(v & 0xffff) as usize] += 1;
                top[(v >> 48) as usize] += 1;
            }
            // Mean 4 per bucket; a Poisson(4) bucket above 20 is a 1e-8 event.
            assert!(low.iter().all(|&c| c <= 20), "{}", make(0));
            assert!(top.iter().all(|&c| c <= 20), "{}", make(0));
            assert!(
                low.iter().filter(|&&c| c == 0).count() < 3000,
                "{}",
                make(0)
            );
        }
    }

    #[test]
    fn collisions_found_under_one_seed_do_not_carry_to_another() {
        // An attacker who learnt seed A finds 200 ids sharing one home slot of a 4096-slot table;
        // under seed B they spread like any ids.
        let a = IdHasher::with_seeds(IdHash::Seeded, A);
        let b = IdHasher::with_seeds(IdHash::Seeded, B);
        let mask = 4095u64;
        let hostile: Vec<String> = (0u64..)
            .map(uuid)
            .filter(|id| a.hash(id.as_bytes()) & mask == 0)
            .take(200)
            .collect();
        let mut buckets = vec![0u32; 4096];
        for id in &hostile {
            buckets[(b.hash(id.as_bytes()) & mask) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&c| c <= 3),
            "{:?}",
            buckets.iter().max()
        );
        // And two fresh hashers (random seeds) differ.
        let (x, y) = (IdHasher::new(IdHash::Seeded), IdHasher::new(IdHash::Seeded));
        assert_ne!(x.hash(b"same id"), y.hash(b"same id"));
    }

    #[test]
    fn the_unrolled_lengths_hash_like_the_loop() {
        let h = IdHasher::with_seeds(IdHash::Seeded, A);
        let [s0, s1, s2, s3] = A;
        let k: Vec<u8> = (0..48u8).map(|b| b.wrapping_mul(37)).collect();
        for len in 17..=48 {
            let k = &k[..len];
            let (mut x, mut i) = (s0, 0);
            while len - i > 16 {
                x = fold(r8(k, i) ^ s1, r8(k, i + 8) ^ x);
                i += 16;
            }
            let x = fold(r8(k, len - 16) ^ s2, r8(k, len - 8) ^ x);
            assert_eq!(h.hash(k), fold(x ^ s3, s0 ^ len as u64), "len {len}");
        }
    }

    #[test]
    fn both_kinds_are_deterministic_for_one_hasher() {
        for kind in [IdHash::Seeded, IdHash::Foldhash] {
            let h = IdHasher::new(kind);
            let id = uuid(7);
            assert_eq!(h.hash(id.as_bytes()), h.hash(id.clone().as_bytes()));
            assert_ne!(h.hash(id.as_bytes()), h.hash(uuid(8).as_bytes()));
        }
    }
}

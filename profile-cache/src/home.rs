//! Home blocks: record blocks whose address follows from the id's hash, so that a lookup can
//! start loading a record before it has read the index slot that points to it.
//!
//! Why: a lookup through the index is two dependent memory round trips — the slot's line, then
//! the record's lines. When both come from a shared L3 or DRAM, the second waits for the first;
//! that wait is most of the bare lookup's tail (`bench/RESULTS.md`, "Profile cache", session 6).
//! Here every profile has one *home block* of [`HOME_BLOCK`] bytes (two cache lines) at
//! `base + home_index(hash) × 128`. The writer puts a record of up to 128 bytes in its home block
//! when that block is free; a reader prefetches the home block's two lines together with the
//! slot's line, then follows the slot as before. When the record is at home, the slot and the
//! record arrive in one round trip.
//!
//! The slot stays the only way a reader reaches a record: the home prefetch is a hint that never
//! faults and has no architectural effect, so it reads nothing it could misinterpret. A home
//! block holding another profile's record, a freed block or a record being written costs at most
//! a wasted prefetch. Records in home blocks are as immutable as any other and are freed by the
//! same epoch protocol (`crate::epoch`): an update cannot overwrite the live record in place, so
//! it goes to an ordinary arena block (the home block is busy with the old version), and once the
//! old version is reclaimed the writer moves the profile back home (`Store::collect`).
//!
//! Sizing: one home block per expected profile (`Store::new`'s `expected`). Ids hash to blocks
//! at random, so about 1 − 1/e ≈ 63% of the profiles find their block free at a full replica
//! (the rest share a block with an earlier profile and live in the arena, reached through the
//! slot as before). That costs the unused blocks' memory: ≈ 37% of 128 bytes per profile.
//!
//! Owns the home region and its occupancy bitmap. Writer only (the replicator thread), except
//! that readers read records inside it and compute home addresses; never freed before the last
//! reader (it lives in the [`crate::arena::Arena`]). Must never: hand a block out twice.

use std::ptr::NonNull;

use crate::arena::Region;

/// Bytes of a home block: two cache lines, the lookup part of a profile of 20 segments and a
/// 36-byte id (`crate::record::TWO_LINES`).
pub(crate) const HOME_BLOCK: usize = 128;

/// Most home blocks a replica maps: 2^27 (16 GiB of address space, touched only as records move
/// in). Sized for any replica a node can hold; past it the extra profiles live in the arena,
/// reached through the slot as usual. Without the bound a configured `expected_profiles` near its
/// 2^32 limit would ask for a 512 GiB mapping at start-up, which the kernel's overcommit check
/// refuses on an ordinary node.
pub(crate) const MAX_HOME_BLOCKS: usize = 1 << 27;

/// Home blocks for a replica expecting `expected` profiles: one each, at most [`MAX_HOME_BLOCKS`].
pub(crate) fn blocks_for(expected: usize) -> usize {
    expected.min(MAX_HOME_BLOCKS)
}

/// Index of `hash`'s home block among `blocks` (a multiply-shift of 32 bits of the hash that the
/// index's slot number and tag use least: bits 16–47).
#[inline(always)]
pub(crate) fn home_index(hash: u64, blocks: u64) -> u64 {
    ((hash >> 16) & 0xffff_ffff).wrapping_mul(blocks) >> 32
}

/// The home blocks of one replica.
#[derive(Debug)]
pub(crate) struct Homes {
    region: Option<Region>,
    blocks: u64,
    /// One bit per block: a record lives there.
    used: Vec<u64>,
    in_use: usize,
}

impl Homes {
    /// `blocks` home blocks (0: none — every record goes to the arena), mapped at once.
    pub(crate) fn new(blocks: usize) -> Homes {
        // At most MAX_HOME_BLOCKS (below the 2^32 that `home_index`'s 32 bits of hash can reach).
        let blocks = blocks_for(blocks);
        Homes {
            region: (blocks > 0).then(|| Region::new(blocks * HOME_BLOCK)),
            blocks: blocks as u64,
            used: vec![0; blocks.div_ceil(64)],
            in_use: 0,
        }
    }

    /// Address of the first block (0 if there is none) and the number of blocks: what a reader
    /// needs to find a home block.
    pub(crate) fn layout(&self) -> (usize, u64) {
        (
            self.region.as_ref().map_or(0, |r| r.as_ptr() as usize),
            self.blocks,
        )
    }

    /// The home block of `hash` if a record of `len` bytes fits it and it is free (now taken).
    pub(crate) fn take(&mut self, hash: u64, len: usize) -> Option<NonNull<u8>> {
        if self.blocks == 0 || len > HOME_BLOCK {
            return None;
        }
        let i = home_index(hash, self.blocks) as usize;
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.used[w] & b != 0 {
            return None;
        }
        self.used[w] |= b;
        self.in_use += 1;
        let base = self.region.as_ref()?.as_ptr();
        NonNull::new(base.wrapping_add(i * HOME_BLOCK))
    }

    /// The index of the home block at `p`, if `p` is one.
    pub(crate) fn index_of(&self, p: NonNull<u8>) -> Option<usize> {
        let r = self.region.as_ref()?;
        let off = (p.as_ptr() as usize).checked_sub(r.as_ptr() as usize)?;
        (off < self.blocks as usize * HOME_BLOCK).then(|| {
            debug_assert_eq!(off % HOME_BLOCK, 0, "home blocks start on their grain");
            off / HOME_BLOCK
        })
    }

    /// Marks home block `i` free again (its record was unlinked and reclaimed). Its bytes are
    /// left as they were, so the writer can still read which profile it held.
    pub(crate) fn release(&mut self, i: usize) {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        debug_assert!(self.used[w] & b != 0, "home block {i} released twice");
        if self.used[w] & b != 0 {
            self.used[w] &= !b;
            self.in_use -= 1;
        }
    }

    /// Blocks taken (by linked records, and by unlinked ones until they are reclaimed).
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Bytes mapped for home blocks.
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.region.as_ref().map_or(0, Region::len)
    }

    /// Bytes of home blocks on reserved huge pages.
    pub(crate) fn hugetlb_bytes(&self) -> usize {
        self.region
            .as_ref()
            .filter(|r| r.is_hugetlb())
            .map_or(0, Region::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_blocks_are_bounded_whatever_the_expected_count() {
        assert_eq!(blocks_for(0), 0);
        assert_eq!(blocks_for(1_000_000), 1_000_000);
        assert_eq!(blocks_for(MAX_HOME_BLOCKS + 1), MAX_HOME_BLOCKS);
        assert_eq!(blocks_for(1 << 32), MAX_HOME_BLOCKS);
        const { assert!(MAX_HOME_BLOCKS <= 1 << 32) };
    }

    #[test]
    fn home_indexes_spread_over_every_block() {
        let blocks = 1000u64;
        let mut seen = vec![0u32; blocks as usize];
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = home_index(x, blocks);
            assert!(i < blocks);
            seen[i as usize] += 1;
        }
        // 100 per block expected; a uniform spread keeps every block within 40–200.
        assert!(seen.iter().all(|&n| (40..=200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn a_block_is_taken_once_until_released_and_only_for_records_that_fit() {
        let mut h = Homes::new(64);
        let hash = 5u64 << 16;
        let p = h.take(hash, 100).expect("free home");
        assert_eq!(
            p.as_ptr() as usize % HOME_BLOCK,
            0,
            "blocks start on 128 bytes"
        );
        assert!(h.take(hash, 100).is_none(), "taken");
        assert_eq!(h.in_use(), 1);
        let i = h.index_of(p).expect("a home block");
        assert_eq!(i as u64, home_index(hash, 64));
        assert!(
            h.take(hash ^ (1 << 40), HOME_BLOCK + 1).is_none(),
            "too long"
        );
        h.release(i);
        assert_eq!(h.in_use(), 0);
        assert_eq!(h.take(hash, HOME_BLOCK), Some(p), "free again");
        let other = NonNull::new(Box::into_raw(Box::new([0u8; 8])).cast::<u8>()).expect("box");
        assert_eq!(h.index_of(other), None, "not a home block");
        // SAFETY: `other` came from Box::into_raw just above and is freed once.
        drop(unsafe { Box::from_raw(other.as_ptr().cast::<[u8; 8]>()) });
        assert!(Homes::new(0).take(hash, 10).is_none(), "no home blocks");
    }
}

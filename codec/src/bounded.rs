//! Bounded collections decoded without heap allocation.
//!
//! Every list in a bid request has a limit. What happens at the limit is decided per list:
//! - [`Capped`]: informational lists (formats, segments, deals…) keep the first `N` items and
//!   remember that more were sent ([`Capped::overflowed`]); validation decides if that matters.
//! - [`BlockList`]: lists the bidder must honour (`bcat`, `badv`, `bapp`) keep a 32-bit hash of
//!   every entry up to `N`; past `N` the list is flagged and validation refuses the request,
//!   because a block we could not store is a block we could not honour. A hash collision can
//!   only make the bidder avoid an ad it could have shown (about N / 2^32 per lookup), never
//!   show a blocked one; 32 bits halve the request's size against 64.

use std::fmt;

use arrayvec::ArrayVec;
use serde::de::{Deserialize, DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};

use crate::str::Str;

/// Up to `N` items kept inline; the rest skipped and counted.
#[derive(Clone, PartialEq)]
pub struct Capped<T, const N: usize> {
    items: ArrayVec<T, N>,
    dropped: u32,
}

impl<T, const N: usize> Capped<T, N> {
    pub const CAPACITY: usize = N;
    pub const fn new() -> Self {
        Capped {
            items: ArrayVec::new_const(),
            dropped: 0,
        }
    }
    pub fn as_slice(&self) -> &[T] {
        &self.items
    }
    /// How many items the input had beyond the capacity.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
    pub fn overflowed(&self) -> bool {
        self.dropped > 0
    }
    /// Appends, or counts the item as dropped when full.
    pub fn push(&mut self, item: T) {
        if self.items.try_push(item).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

impl<T, const N: usize> Default for Capped<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> std::ops::Deref for Capped<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for Capped<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()?;
        if self.dropped > 0 {
            write!(f, " (+{} dropped)", self.dropped)?;
        }
        Ok(())
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Capped::new();
        FillCapped(&mut out).deserialize(d)?;
        Ok(out)
    }
}

/// Deserializes a JSON array into an existing [`Capped`] (appending), so a list of large items
/// is written where it lives instead of being built on the stack and moved (see `request`).
pub(crate) struct FillCapped<'c, T, const N: usize>(pub &'c mut Capped<T, N>);

impl<'de, T: Deserialize<'de>, const N: usize> DeserializeSeed<'de> for FillCapped<'_, T, N> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for FillCapped<'_, T, N> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        while !out.items.is_full() {
            match seq.next_element::<T>()? {
                Some(item) => out.items.push(item),
                None => return Ok(()),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {
            out.dropped = out.dropped.saturating_add(1);
        }
        Ok(())
    }
}

/// 64-bit FNV-1a: stable across runs and machines, so block-list hashes can be precomputed.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Case-insensitive hash for domains and bundles (`Example.com` blocks `example.com`).
pub fn fnv1a_lower(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Folds a 64-bit [`fnv1a_lower`] hash to the 32 bits a [`BlockList`] stores.
pub const fn fold32(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// A set of strings the bid must avoid, kept as case-insensitive 32-bit hashes (no copies).
#[derive(Clone, PartialEq)]
pub struct BlockList<const N: usize> {
    hashes: ArrayVec<u32, N>,
    overflowed: bool,
}

impl<const N: usize> BlockList<N> {
    pub const fn new() -> Self {
        BlockList {
            hashes: ArrayVec::new_const(),
            overflowed: false,
        }
    }
    pub fn from_strs<'s>(items: impl IntoIterator<Item = &'s str>) -> Self {
        let mut b = Self::new();
        for s in items {
            b.insert(s);
        }
        b
    }
    pub fn insert(&mut self, s: &str) {
        if self.hashes.try_push(fold32(fnv1a_lower(s))).is_err() {
            self.overflowed = true;
        }
    }
    pub fn contains(&self, s: &str) -> bool {
        self.contains_hash(fnv1a_lower(s))
    }
    /// `h` is a 64-bit [`fnv1a_lower`] hash (precomputed by the caller).
    pub fn contains_hash(&self, h: u64) -> bool {
        self.hashes.contains(&fold32(h))
    }
    pub fn len(&self) -> usize {
        self.hashes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
    /// True when the input listed more than `N` entries: the list is incomplete.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

impl<const N: usize> Default for BlockList<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for BlockList<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BlockList({} entries{})",
            self.hashes.len(),
            if self.overflowed { ", overflowed" } else { "" }
        )
    }
}

impl<'de, const N: usize> Deserialize<'de> for BlockList<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = BlockList::new();
        FillBlockList(&mut out).deserialize(d)?;
        Ok(out)
    }
}

/// Deserializes a JSON array of strings into an existing [`BlockList`] (appending).
pub(crate) struct FillBlockList<'b, const N: usize>(pub &'b mut BlockList<N>);

impl<'de, const N: usize> DeserializeSeed<'de> for FillBlockList<'_, N> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for FillBlockList<'_, N> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(s) = seq.next_element::<Str<'de>>()? {
            self.0.insert(&s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_first_n_and_counts_the_rest() {
        let c: Capped<u32, 2> = serde_json::from_str("[1,2,3,4]").unwrap();
        assert_eq!(c.as_slice(), &[1, 2]);
        assert_eq!(c.dropped(), 2);
        let c: Capped<u32, 4> = serde_json::from_str("[1,2]").unwrap();
        assert!(!c.overflowed());
    }

    #[test]
    fn blocklist_is_case_insensitive_and_flags_overflow() {
        let b: BlockList<2> = serde_json::from_str(r#"["Example.com","b.com"]"#).unwrap();
        assert!(b.contains("example.com"));
        assert!(!b.contains("c.com"));
        assert!(!b.overflowed());
        let b: BlockList<2> = serde_json::from_str(r#"["a","b","c"]"#).unwrap();
        assert!(b.overflowed());
    }
}

//! The packed profile record: how one user's profile is laid out in the replica's memory, how the
//! replicator encodes it ([`ProfileData::encode_into`]) and how bidding reads it ([`RecordView`]).
//!
//! Owns only the byte layout. Records are written once by the replicator thread and never mutated
//! afterwards (an update is a new record); readers on any core read them through shared
//! references. Reading must never allocate, lock or panic on a record this module encoded.
//!
//! Layout version 2 (session 4; little-endian, no padding — multi-byte fields are read with
//! unaligned loads; the record starts on a 64-byte cache line in the replica's arena, see
//! `arena.rs`; these bytes are all a snapshot stores):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | key length `k` (1–255) |
//! | 1 | 1 | segment count `s` (0–255) |
//! | 2 | 1 | frequency bucket count `f` (0–255) |
//! | 3 | 1 | flags: bits 0–1 gender (0 unknown, 1 male, 2 female, 3 other); bit 2 wide segment ids |
//! | 4 | 1 | birth year − 1899 (0 unknown) |
//! | 5 | 1 | bootstrap generation (replicator bookkeeping) |
//! | 6 | 4 | last seen, unix seconds (0 unknown) |
//! | 10 | k | user id bytes (UTF-8) |
//! | | 4 + 2·(s−1) | *narrow* segment ids (the ids span ≤ 65,535): the first (smallest) id as u32, then each further id as a u16 offset from it, ascending (nothing when `s` = 0) |
//! | | 4·s | *wide* segment ids (flag bit 2; ids spread wider): u32 each, ascending |
//! | | 2·s | segment weights (0–1000), same order |
//! | | 12·f | buckets `(campaign u32, unix hour u32, count u32)`, ascending by (campaign, hour) |
//!
//! The total length is not stored: it follows from `k`, `s`, `f` and the flag
//! ([`encoded_len`]). A profile of 20 segments (narrow) and a 36-byte id takes exactly 128 bytes:
//! two cache lines, so a lookup that hits reads the index slot's line and at most these two
//! (version 1 took 168 bytes, three lines). Everything a segment lookup reads — header, id,
//! segment ids, weights — comes first; frequency buckets follow and are read only by frequency
//! caps. Larger profiles (more segments, longer ids, segment ids spread wider than 65,535, i.e.
//! the wide form) are stored whole and simply span more lines ([`RecordView::lookup_len`] is the
//! part a segment lookup reads; the replica counts records whose part exceeds two lines).

use shards::ProfileView;

/// Header size in bytes.
pub const HEADER_LEN: usize = 10;
/// Offset of the flags byte (gender, segment id form).
const FLAGS_BYTE: usize = 3;
/// Flag: segment ids stored as u32 each (their spread exceeds a u16 offset).
const WIDE_IDS: u8 = 1 << 2;
/// Offset of the bootstrap generation byte in the header.
pub(crate) const GENERATION_BYTE: usize = 5;
/// Most bytes a user id may have; longer ids are rejected as malformed.
pub const MAX_KEY_LEN: usize = 255;
/// Most segments one record keeps; the replicator keeps the heaviest and counts the truncation.
pub const MAX_SEGMENTS: usize = 255;
/// Most frequency buckets one record keeps; the replicator keeps the most recent hours.
pub const MAX_FREQ_BUCKETS: usize = 255;
/// Highest segment weight.
pub const MAX_WEIGHT: u16 = 1000;
/// Birth years representable in the record.
pub const BIRTH_YEARS: std::ops::RangeInclusive<u16> = 1900..=2154;
/// Largest possible record (all counts at their maximum, wide ids), so callers can size buffers.
pub const MAX_RECORD_LEN: usize =
    HEADER_LEN + MAX_KEY_LEN + MAX_SEGMENTS * 6 + MAX_FREQ_BUCKETS * 12;
/// Bytes of the lookup part (header, id, segments) that fit the two cache lines a record is
/// meant to span.
pub const TWO_LINES: usize = 128;

/// Gender as the profile states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gender {
    /// Not stated.
    #[default]
    Unknown,
    /// `M`.
    Male,
    /// `F`.
    Female,
    /// `O`.
    Other,
}

impl Gender {
    fn to_byte(self) -> u8 {
        match self {
            Gender::Unknown => 0,
            Gender::Male => 1,
            Gender::Female => 2,
            Gender::Other => 3,
        }
    }
    fn from_byte(b: u8) -> Self {
        match b {
            1 => Gender::Male,
            2 => Gender::Female,
            3 => Gender::Other,
            _ => Gender::Unknown,
        }
    }
}

/// Impressions of one campaign seen by the user in one clock hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FreqBucket {
    /// Campaign id.
    pub campaign: u32,
    /// Unix hour (`unix_seconds / 3600`) the impressions fall in.
    pub hour: u32,
    /// Impressions counted in that hour.
    pub count: u32,
}

/// A profile in owned, writer-side form: what the replicator parses out of Redis before encoding
/// it. Reused between profiles so the replicator does not allocate per update once warm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileData {
    /// The user id (the part of the Redis key after the profile prefix).
    pub user_id: String,
    /// `(segment id, weight 0–1000)`, any order, possibly with duplicates (the highest weight wins).
    pub segments: Vec<(u32, u16)>,
    /// Year of birth, if known and within [`BIRTH_YEARS`].
    pub birth_year: Option<u16>,
    /// Gender.
    pub gender: Gender,
    /// Last time the user was seen, unix seconds.
    pub last_seen: Option<u32>,
    /// Frequency buckets, any order.
    pub freq: Vec<FreqBucket>,
}

/// Why a [`ProfileData`] could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The user id is empty or longer than [`MAX_KEY_LEN`] bytes.
    #[error("user id must be 1 to {MAX_KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
}

/// What [`ProfileData::encode_into`] had to drop to fit the record's bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncation {
    /// Segments dropped (the lightest beyond [`MAX_SEGMENTS`]).
    pub segments: usize,
    /// Frequency buckets dropped (the oldest beyond [`MAX_FREQ_BUCKETS`]).
    pub buckets: usize,
}

impl ProfileData {
    /// Empties the profile, keeping its buffers.
    pub fn clear(&mut self) {
        self.user_id.clear();
        self.segments.clear();
        self.birth_year = None;
        self.gender = Gender::Unknown;
        self.last_seen = None;
        self.freq.clear();
    }

    /// Encodes the profile into `out` (cleared first) in the record layout. Sorts and deduplicates
    /// the segment and bucket lists in place; keeps the [`MAX_SEGMENTS`] heaviest segments and the
    /// [`MAX_FREQ_BUCKETS`] most recent buckets and reports what it dropped.
    pub fn encode_into(
        &mut self,
        generation: u8,
        out: &mut Vec<u8>,
    ) -> Result<Truncation, EncodeError> {
        let key = self.user_id.as_bytes();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(EncodeError::KeyLength(key.len()));
        }
        let mut trunc = Truncation::default();

        // Segments: one entry per id (highest weight), at most MAX_SEGMENTS (heaviest), by id.
        self.segments
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        self.segments.dedup_by_key(|s| s.0);
        if self.segments.len() > MAX_SEGMENTS {
            trunc.segments = self.segments.len() - MAX_SEGMENTS;
            self.segments
                .sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            self.segments.truncate(MAX_SEGMENTS);
            self.segments.sort_unstable_by_key(|s| s.0);
        }

        // Buckets: merge duplicates, keep the most recent MAX_FREQ_BUCKETS, by (campaign, hour).
        self.freq.sort_unstable();
        self.freq.dedup_by(|later, first| {
            if later.campaign == first.campaign && later.hour == first.hour {
                first.count = first.count.saturating_add(later.count);
                true
            } else {
                false
            }
        });
        if self.freq.len() > MAX_FREQ_BUCKETS {
            trunc.buckets = self.freq.len() - MAX_FREQ_BUCKETS;
            self.freq
                .sort_unstable_by(|a, b| b.hour.cmp(&a.hour).then(a.campaign.cmp(&b.campaign)));
            self.freq.truncate(MAX_FREQ_BUCKETS);
            self.freq.sort_unstable();
        }

        let s = self.segments.len();
        let f = self.freq.len();
        let wide = s > 0 && self.segments[s - 1].0 - self.segments[0].0 > u32::from(u16::MAX);
        let seg_off = HEADER_LEN + key.len();
        let w_off = seg_off + seg_ids_len(s, wide);
        let freq_off = w_off + 2 * s;
        let total = freq_off + 12 * f;
        debug_assert!(total <= MAX_RECORD_LEN);

        out.clear();
        out.resize(total, 0);
        out[0] = key.len() as u8;
        out[1] = s as u8;
        out[2] = f as u8;
        out[FLAGS_BYTE] = self.gender.to_byte() | if wide { WIDE_IDS } else { 0 };
        out[4] = match self.birth_year {
            Some(y) if BIRTH_YEARS.contains(&y) => (y - 1899) as u8,
            _ => 0,
        };
        out[GENERATION_BYTE] = generation;
        out[6..10].copy_from_slice(&self.last_seen.unwrap_or(0).to_le_bytes());
        out[HEADER_LEN..seg_off].copy_from_slice(key);
        if let Some(&(base, _)) = self.segments.first() {
            if wide {
                for (i, &(id, _)) in self.segments.iter().enumerate() {
                    let o = seg_off + 4 * i;
                    out[o..o + 4].copy_from_slice(&id.to_le_bytes());
                }
            } else {
                out[seg_off..seg_off + 4].copy_from_slice(&base.to_le_bytes());
                for (i, &(id, _)) in self.segments.iter().enumerate().skip(1) {
                    let o = seg_off + 4 + 2 * (i - 1);
                    out[o..o + 2].copy_from_slice(&((id - base) as u16).to_le_bytes());
                }
            }
        }
        for (i, &(_, w)) in self.segments.iter().enumerate() {
            let o = w_off + 2 * i;
            out[o..o + 2].copy_from_slice(&w.min(MAX_WEIGHT).to_le_bytes());
        }
        for (i, b) in self.freq.iter().enumerate() {
            let o = freq_off + 12 * i;
            out[o..o + 4].copy_from_slice(&b.campaign.to_le_bytes());
            out[o + 4..o + 8].copy_from_slice(&b.hour.to_le_bytes());
            out[o + 8..o + 12].copy_from_slice(&b.count.to_le_bytes());
        }
        Ok(trunc)
    }
}

/// Bytes of `s` segment ids in the narrow (`wide` false) or wide form.
#[inline]
const fn seg_ids_len(s: usize, wide: bool) -> usize {
    if wide {
        4 * s
    } else if s == 0 {
        0
    } else {
        4 + 2 * (s - 1)
    }
}

/// A record's total length from its header (the first [`HEADER_LEN`] bytes), as
/// [`ProfileData::encode_into`] wrote it.
#[inline]
pub fn encoded_len(header: &[u8; HEADER_LEN]) -> usize {
    let (k, s, f) = (header[0] as usize, header[1] as usize, header[2] as usize);
    HEADER_LEN + k + seg_ids_len(s, header[FLAGS_BYTE] & WIDE_IDS != 0) + 2 * s + 12 * f
}

/// A borrowed view of one packed record. Cheap to copy; every accessor is allocation-free.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
}

impl std::fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordView")
            .field("user_id", &self.user_id())
            .field("segments", &self.segment_count())
            .field("buckets", &self.bucket_count())
            .finish()
    }
}

#[inline]
fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(w)
}

#[inline]
fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

#[inline]
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

impl<'a> RecordView<'a> {
    /// Wraps bytes produced by [`ProfileData::encode_into`]. Returns `None` if the lengths in the
    /// header do not match the slice (so a view never reads out of bounds).
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        (encoded_len(header) == bytes.len()).then_some(Self { bytes })
    }

    /// Wraps a record already known to be well-formed (it came from `encode_into`).
    #[inline]
    pub(crate) fn trusted(bytes: &'a [u8]) -> Self {
        debug_assert!(Self::new(bytes).is_some(), "record layout");
        Self { bytes }
    }

    #[inline]
    fn key_len(&self) -> usize {
        self.bytes[0] as usize
    }
    #[inline]
    fn wide(&self) -> bool {
        self.bytes[FLAGS_BYTE] & WIDE_IDS != 0
    }
    #[inline]
    fn seg_off(&self) -> usize {
        HEADER_LEN + self.key_len()
    }
    #[inline]
    fn weights_off(&self) -> usize {
        self.seg_off() + seg_ids_len(self.segment_count(), self.wide())
    }
    #[inline]
    fn freq_off(&self) -> usize {
        self.weights_off() + 2 * self.segment_count()
    }

    /// Bytes a segment lookup reads: header, id, segment ids and weights (the frequency buckets
    /// follow). At most [`TWO_LINES`] for a profile of 20 segments and a 36-byte id.
    #[inline]
    pub fn lookup_len(&self) -> usize {
        self.freq_off()
    }

    /// The user id bytes.
    #[inline]
    pub fn user_id_bytes(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + self.key_len()]
    }

    /// Whether this record's user id is `key`: length first, then 8-byte words (overlapping at
    /// the end) instead of a call to `memcmp`; equal to `self.user_id_bytes() == key`.
    #[inline]
    pub fn has_id(&self, key: &[u8]) -> bool {
        self.key_len() == key.len() && same_bytes(self.user_id_bytes(), key)
    }

    /// The user id (lossy only if a writer stored invalid UTF-8, which the replicator rejects).
    pub fn user_id(&self) -> &'a str {
        std::str::from_utf8(self.user_id_bytes()).unwrap_or("")
    }

    /// Number of segments.
    #[inline]
    pub fn segment_count(&self) -> usize {
        self.bytes[1] as usize
    }

    /// Number of frequency buckets.
    #[inline]
    pub fn bucket_count(&self) -> usize {
        self.bytes[2] as usize
    }

    /// Gender.
    pub fn gender(&self) -> Gender {
        Gender::from_byte(self.bytes[FLAGS_BYTE] & 3)
    }

    /// Year of birth, if known.
    pub fn birth_year(&self) -> Option<u16> {
        match self.bytes[4] {
            0 => None,
            y => Some(1899 + y as u16),
        }
    }

    /// Bootstrap generation the record was written in.
    pub(crate) fn generation(&self) -> u8 {
        self.bytes[GENERATION_BYTE]
    }

    /// Last time the user was seen (unix seconds), if known.
    pub fn last_seen(&self) -> Option<u32> {
        match u32_at(self.bytes, 6) {
            0 => None,
            t => Some(t),
        }
    }

    /// The id of the `i`-th segment (`i` < [`RecordView::segment_count`]).
    #[inline]
    fn segment_id(&self, i: usize) -> u32 {
        let o = self.seg_off();
        if self.wide() {
            u32_at(self.bytes, o + 4 * i)
        } else if i == 0 {
            u32_at(self.bytes, o)
        } else {
            u32_at(self.bytes, o) + u32::from(u16_at(self.bytes, o + 4 + 2 * (i - 1)))
        }
    }

    /// The `i`-th segment `(id, weight)` in ascending id order.
    #[inline]
    pub fn segment(&self, i: usize) -> (u32, u16) {
        (
            self.segment_id(i),
            u16_at(self.bytes, self.weights_off() + 2 * i),
        )
    }

    /// The segments `(id, weight)` in ascending id order.
    pub fn segments(&self) -> impl Iterator<Item = (u32, u16)> + 'a {
        let me = *self;
        (0..me.segment_count()).map(move |i| me.segment(i))
    }

    /// The `i`-th frequency bucket in ascending (campaign, hour) order.
    #[inline]
    pub fn bucket(&self, i: usize) -> FreqBucket {
        let o = self.freq_off() + 12 * i;
        FreqBucket {
            campaign: u32_at(self.bytes, o),
            hour: u32_at(self.bytes, o + 4),
            count: u32_at(self.bytes, o + 8),
        }
    }

    /// The frequency buckets in ascending (campaign, hour) order.
    pub fn buckets(&self) -> impl Iterator<Item = FreqBucket> + 'a {
        let me = *self;
        (0..me.bucket_count()).map(move |i| me.bucket(i))
    }

    /// The record's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Index of `segment` among the segment ids, if present (binary search; a branch-free
    /// search with conditional moves measured slower here: 115 against 76 ns per dependent
    /// lookup, `bench/RESULTS.md`).
    #[inline]
    fn find_segment(&self, segment: u32) -> Option<usize> {
        let s = self.segment_count();
        if s == 0 {
            return None;
        }
        let o = self.seg_off();
        if self.wide() {
            let (mut lo, mut hi) = (0usize, s);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match u32_at(self.bytes, o + 4 * mid).cmp(&segment) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return Some(mid),
                }
            }
            return None;
        }
        // Narrow: the first id, then s − 1 ascending u16 offsets from it (all > 0).
        let d = segment.checked_sub(u32_at(self.bytes, o))?;
        if d == 0 {
            return Some(0);
        }
        let d = u16::try_from(d).ok()?;
        let offs = o + 4;
        let (mut lo, mut hi) = (0usize, s - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match u16_at(self.bytes, offs + 2 * mid).cmp(&d) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid + 1),
            }
        }
        None
    }
}

/// `a == b` for slices of equal length, by 8-byte words (the last ones overlapping), unrolled
/// for ids of up to 48 bytes (UUIDs are 36), 4-byte words and single bytes below 8: no call, no
/// per-byte loop.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    debug_assert_eq!(n, b.len());
    if n != b.len() {
        return false;
    }
    let w = |i: usize| u64_at(a, i) ^ u64_at(b, i);
    if n > 48 {
        let mut diff = 0u64;
        let mut i = 0;
        while i + 8 < n {
            diff |= w(i);
            i += 8;
        }
        diff | w(n - 8) == 0
    } else if n > 32 {
        w(0) | w(8) | w(16) | w(24) | w(n - 16) | w(n - 8) == 0
    } else if n > 16 {
        w(0) | w(8) | w(n - 16) | w(n - 8) == 0
    } else if n >= 8 {
        w(0) | w(n - 8) == 0
    } else if n >= 4 {
        (u32_at(a, 0) ^ u32_at(b, 0)) | (u32_at(a, n - 4) ^ u32_at(b, n - 4)) == 0
    } else {
        a == b
    }
}

impl ProfileView for RecordView<'_> {
    /// Binary search over the ascending segment ids.
    #[inline]
    fn segment_weight(&self, segment: u32) -> Option<u16> {
        let i = self.find_segment(segment)?;
        Some(u16_at(self.bytes, self.weights_off() + 2 * i))
    }

    /// Sums the buckets of `campaign` whose hour overlaps `[since_unix_s, ∞)`: a bucket counts if
    /// its hour ends after `since_unix_s`. At a window's edge this counts up to one hour more than
    /// the exact window, which errs toward capping, never toward overdelivery.
    #[inline]
    fn impressions_since(&self, campaign: u32, since_unix_s: u64) -> u32 {
        let first_hour = since_unix_s / 3600;
        let mut total = 0u32;
        for i in 0..self.bucket_count() {
            let b = self.bucket(i);
            if b.campaign > campaign {
                break;
            }
            if b.campaign == campaign && u64::from(b.hour) >= first_hour {
                total = total.saturating_add(b.count);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProfileData {
        ProfileData {
            user_id: "0b8f2c1e-7d9a-4c61-9a53-2f1e0c9b7a10".into(),
            segments: (0..20).map(|i| (1000 - i * 37, (i * 50) as u16)).collect(),
            birth_year: Some(1985),
            gender: Gender::Female,
            last_seen: Some(1_764_000_000),
            freq: vec![
                FreqBucket {
                    campaign: 7,
                    hour: 490_000,
                    count: 2,
                },
                FreqBucket {
                    campaign: 3,
                    hour: 490_001,
                    count: 1,
                },
                FreqBucket {
                    campaign: 7,
                    hour: 490_002,
                    count: 3,
                },
            ],
        }
    }

    #[test]
    fn round_trip_reads_every_field() {
        let mut p = sample();
        let mut buf = Vec::new();
        let t = p.encode_into(5, &mut buf).expect("valid profile");
        assert_eq!(t, Truncation::default());
        let v = RecordView::new(&buf).expect("layout");
        assert_eq!(v.user_id(), "0b8f2c1e-7d9a-4c61-9a53-2f1e0c9b7a10");
        assert_eq!(v.birth_year(), Some(1985));
        assert_eq!(v.gender(), Gender::Female);
        assert_eq!(v.last_seen(), Some(1_764_000_000));
        assert_eq!(v.generation(), 5);
        assert_eq!(v.segment_count(), 20);
        for i in 0..20u32 {
            assert_eq!(v.segment_weight(1000 - i * 37), Some((i * 50) as u16));
        }
        assert_eq!(v.segment_weight(1), None);
        assert_eq!(v.segment_weight(u32::MAX), None);
        let ids: Vec<u32> = v.segments().map(|s| s.0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // 20 segments (spread 703: narrow) and a 36-byte id: 10 + 36 + (4 + 2·19) + 2·20 = 128,
        // two cache lines; plus three buckets of 12 after them.
        assert_eq!(v.lookup_len(), TWO_LINES);
        assert_eq!(buf.len(), 128 + 36);
    }

    #[test]
    fn impressions_count_overlapping_hours_of_one_campaign() {
        let mut p = sample();
        let mut buf = Vec::new();
        p.encode_into(0, &mut buf).expect("valid profile");
        let v = RecordView::new(&buf).expect("layout");
        assert_eq!(v.impressions_since(7, 0), 5);
        assert_eq!(v.impressions_since(7, 490_001 * 3600), 3);
        // Mid-hour start still counts the whole overlapping hour.
        assert_eq!(v.impressions_since(7, 490_000 * 3600 + 1800), 5);
        assert_eq!(v.impressions_since(7, 490_003 * 3600), 0);
        assert_eq!(v.impressions_since(3, 0), 1);
        assert_eq!(v.impressions_since(9, 0), 0);
    }

    #[test]
    fn duplicates_merge_and_bounds_truncate() {
        let mut p = ProfileData {
            user_id: "u".into(),
            segments: (0..300u32)
                .map(|i| (i, (i % 1000) as u16))
                .chain([(5, 999)])
                .collect(),
            freq: (0..300u32)
                .map(|h| FreqBucket {
                    campaign: 1,
                    hour: h,
                    count: 1,
                })
                .chain([FreqBucket {
                    campaign: 1,
                    hour: 299,
                    count: 4,
                }])
                .collect(),
            ..Default::default()
        };
        let mut buf = Vec::new();
        let t = p.encode_into(0, &mut buf).expect("valid profile");
        assert_eq!(
            t,
            Truncation {
                segments: 45,
                buckets: 45
            }
        );
        let v = RecordView::new(&buf).expect("layout");
        assert_eq!(v.segment_count(), MAX_SEGMENTS);
        // The heaviest survive; id 5 kept its highest weight.
        assert_eq!(v.segment_weight(5), Some(999));
        assert_eq!(v.segment_weight(299), Some(299));
        assert_eq!(v.segment_weight(10), None);
        // The most recent hours survive; the duplicate hour merged.
        assert_eq!(v.impressions_since(1, 299 * 3600), 5);
        assert_eq!(v.impressions_since(1, 0), 255 + 4);
    }

    fn with_segments(id_len: usize, segs: Vec<(u32, u16)>) -> Vec<u8> {
        let mut p = ProfileData {
            user_id: "i".repeat(id_len),
            segments: segs,
            ..Default::default()
        };
        let mut buf = Vec::new();
        p.encode_into(0, &mut buf).expect("valid profile");
        buf
    }

    #[test]
    fn twenty_segments_and_a_uuid_fill_exactly_two_lines_and_one_more_does_not() {
        let segs = |n: u32| (0..n).map(|i| (5000 + i * 3000, (i * 40) as u16)).collect();
        let at = with_segments(36, segs(20));
        let v = RecordView::new(&at).expect("layout");
        assert_eq!(at.len(), TWO_LINES, "the 2-line bound, no byte to spare");
        assert_eq!(v.lookup_len(), TWO_LINES);
        for i in 0..20u32 {
            assert_eq!(v.segment_weight(5000 + i * 3000), Some((i * 40) as u16));
            assert_eq!(v.segment(i as usize), (5000 + i * 3000, (i * 40) as u16));
        }
        // One more segment, or one more id byte: past two lines (stored whole all the same).
        let over = with_segments(36, segs(21));
        assert_eq!(over.len(), TWO_LINES + 4);
        assert_eq!(with_segments(37, segs(20)).len(), TWO_LINES + 1);
        let v = RecordView::new(&over).expect("layout");
        assert_eq!(v.segment_weight(5000 + 20 * 3000), Some(800));
        // Short ids leave room for more segments: 10 + 8 + 4 + 2·(s − 1) + 2·s ≤ 128 → s ≤ 27.
        let close = |n: u32| (0..n).map(|i| (i * 7, 1)).collect();
        assert_eq!(with_segments(8, close(27)).len(), TWO_LINES);
        assert_eq!(with_segments(8, close(28)).len(), TWO_LINES + 4);
    }

    #[test]
    fn segment_ids_spread_beyond_a_u16_switch_to_the_wide_form_and_read_the_same() {
        for (spread, wide) in [(65_535u32, false), (65_536, true), (u32::MAX - 7, true)] {
            let ids = [7, 8, 1000, 7 + spread / 2, 7 + spread];
            let buf = with_segments(36, ids.iter().map(|&i| (i, (i % 1000) as u16)).collect());
            let v = RecordView::new(&buf).expect("layout");
            assert_eq!(v.wide(), wide, "spread {spread}");
            let expect_len = 10 + 36 + if wide { 4 * 5 } else { 4 + 2 * 4 } + 2 * 5;
            assert_eq!(buf.len(), expect_len, "spread {spread}");
            for &i in &ids {
                assert_eq!(v.segment_weight(i), Some((i % 1000) as u16), "id {i}");
            }
            let got: Vec<u32> = v.segments().map(|s| s.0).collect();
            assert_eq!(got, ids);
            // Absent: below the first id, between, above the last, and an offset that would
            // wrap a u16 (first id + 65,536 + 8).
            for absent in [
                0,
                6,
                9,
                999,
                1001,
                spread.saturating_add(8),
                7 + 65_536 + 8,
                u32::MAX,
            ] {
                if !ids.contains(&absent) {
                    assert_eq!(v.segment_weight(absent), None, "absent {absent}");
                }
            }
        }
        // No segments: nothing stored, nothing found.
        let none = with_segments(5, Vec::new());
        assert_eq!(none.len(), 15);
        let v = RecordView::new(&none).expect("layout");
        assert_eq!(v.segment_weight(0), None);
        assert_eq!(v.segments().count(), 0);
    }

    #[test]
    fn the_largest_record_round_trips_at_max_record_len() {
        let mut p = ProfileData {
            user_id: "z".repeat(MAX_KEY_LEN),
            segments: (0..MAX_SEGMENTS as u32).map(|i| (i << 20, 1000)).collect(),
            birth_year: Some(2154),
            gender: Gender::Other,
            last_seen: Some(u32::MAX),
            freq: (0..MAX_FREQ_BUCKETS as u32)
                .map(|h| FreqBucket {
                    campaign: u32::MAX,
                    hour: h,
                    count: u32::MAX,
                })
                .collect(),
        };
        let mut buf = Vec::new();
        assert_eq!(p.encode_into(255, &mut buf), Ok(Truncation::default()));
        assert_eq!(buf.len(), MAX_RECORD_LEN);
        let v = RecordView::new(&buf).expect("layout");
        assert!(v.wide());
        assert_eq!(v.segment_weight(254 << 20), Some(1000));
        assert_eq!(v.birth_year(), Some(2154));
        assert_eq!(v.gender(), Gender::Other);
        assert_eq!(v.generation(), 255);
        assert_eq!(v.last_seen(), Some(u32::MAX));
        assert_eq!(
            v.impressions_since(u32::MAX, 0),
            u32::MAX,
            "the count saturates"
        );
        assert!(v.has_id("z".repeat(MAX_KEY_LEN).as_bytes()));
    }

    #[test]
    fn the_word_compare_of_ids_agrees_with_slice_equality() {
        let base: Vec<u8> = (0..=255u8).map(|b| b.wrapping_mul(71) | 1).collect();
        for len in 1..=MAX_KEY_LEN {
            let id = &base[..len];
            let mut p = ProfileData {
                user_id: String::from_utf8(id.iter().map(|b| b % 94 + 33).collect())
                    .expect("ascii"),
                ..Default::default()
            };
            let mut rec = Vec::new();
            p.encode_into(0, &mut rec).expect("valid");
            let v = RecordView::new(&rec).expect("layout");
            let key = p.user_id.as_bytes();
            assert!(v.has_id(key), "len {len}");
            assert!(!v.has_id(&key[..len - 1]), "shorter, len {len}");
            let mut longer = key.to_vec();
            longer.push(b'x');
            assert!(!v.has_id(&longer), "longer, len {len}");
            for pos in 0..len {
                let mut k = key.to_vec();
                k[pos] ^= 0x20;
                assert!(!v.has_id(&k), "len {len}, byte {pos} differs");
            }
        }
    }

    #[test]
    fn every_segment_is_found_and_every_gap_is_not_for_every_count() {
        for wide in [false, true] {
            for n in 1..=64u32 {
                let step = if wide { 70_000 } else { 3 };
                let ids: Vec<u32> = (0..n).map(|i| 100 + i * step).collect();
                let buf = with_segments(36, ids.iter().map(|&i| (i, (i % 997) as u16)).collect());
                let v = RecordView::new(&buf).expect("layout");
                assert_eq!(v.wide(), wide && n > 1);
                for &i in &ids {
                    assert_eq!(v.segment_weight(i), Some((i % 997) as u16), "n {n} id {i}");
                    assert_eq!(v.segment_weight(i + 1), None, "n {n} gap after {i}");
                    assert_eq!(v.segment_weight(i - 1), None, "n {n} gap before {i}");
                }
            }
        }
    }

    #[test]
    fn bad_keys_are_rejected_and_short_slices_never_view() {
        let mut buf = Vec::new();
        let mut p = ProfileData::default();
        assert_eq!(p.encode_into(0, &mut buf), Err(EncodeError::KeyLength(0)));
        p.user_id = "x".repeat(256);
        assert_eq!(p.encode_into(0, &mut buf), Err(EncodeError::KeyLength(256)));
        assert!(RecordView::new(&[]).is_none());
        assert!(RecordView::new(&[12, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
    }
}

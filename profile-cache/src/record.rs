//! The packed profile record: how one user's profile is laid out in the replica's memory, how the
//! replicator encodes it ([`ProfileData::encode_into`]) and how bidding reads it ([`ProfileRef`]).
//!
//! Owns only the byte layout. Records are written once by the replicator thread and never mutated
//! afterwards (an update is a new record); readers on any core read them through shared
//! references. Reading must never allocate, lock or panic on a record this module encoded.
//!
//! Layout (little-endian, record start aligned to 8 — to a 64-byte cache line in the replica's
//! arena, see `arena.rs` — and the bytes below are all a snapshot stores):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | total length in bytes (before rounding to 8) |
//! | 2 | 1 | key length `k` (1–255) |
//! | 3 | 1 | segment count `s` (0–255) |
//! | 4 | 1 | frequency bucket count `f` (0–255) |
//! | 5 | 1 | gender (0 unknown, 1 male, 2 female, 3 other) |
//! | 6 | 1 | birth year − 1899 (0 unknown) |
//! | 7 | 1 | bootstrap generation (replicator bookkeeping) |
//! | 8 | 4 | last seen, unix seconds (0 unknown) |
//! | 12 | k | user id bytes (UTF-8) |
//! | pad to 4 | 4·s | segment ids, ascending |
//! | | 2·s | segment weights (0–1000), same order |
//! | pad to 4 | 12·f | buckets `(campaign u32, unix hour u32, count u32)`, ascending by (campaign, hour) |
//!
//! A profile of 20 segments and a 36-byte id takes 168 bytes. The user id sits in the first cache
//! line so a lookup's key comparison and the segment ids usually share the lines it touches.

use shards::ProfileView;

/// Header size in bytes.
pub const HEADER_LEN: usize = 12;
/// Offset of the bootstrap generation byte in the header.
pub(crate) const GENERATION_BYTE: usize = 7;
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
/// Largest possible record (all counts at their maximum), so callers can size buffers.
pub const MAX_RECORD_LEN: usize =
    HEADER_LEN + MAX_KEY_LEN + 3 + MAX_SEGMENTS * 6 + 3 + MAX_FREQ_BUCKETS * 12;

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
        let seg_off = align4(HEADER_LEN + key.len());
        let freq_off = align4(seg_off + 6 * s);
        let total = freq_off + 12 * f;
        debug_assert!(total <= MAX_RECORD_LEN);

        out.clear();
        out.resize(total, 0);
        out[0..2].copy_from_slice(&(total as u16).to_le_bytes());
        out[2] = key.len() as u8;
        out[3] = s as u8;
        out[4] = f as u8;
        out[5] = self.gender.to_byte();
        out[6] = match self.birth_year {
            Some(y) if BIRTH_YEARS.contains(&y) => (y - 1899) as u8,
            _ => 0,
        };
        out[GENERATION_BYTE] = generation;
        out[8..12].copy_from_slice(&self.last_seen.unwrap_or(0).to_le_bytes());
        out[HEADER_LEN..HEADER_LEN + key.len()].copy_from_slice(key);
        for (i, &(id, w)) in self.segments.iter().enumerate() {
            let o = seg_off + 4 * i;
            out[o..o + 4].copy_from_slice(&id.to_le_bytes());
            let o = seg_off + 4 * s + 2 * i;
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

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads a record's total length from its first two bytes.
pub(crate) fn record_len(header: [u8; 2]) -> usize {
    u16::from_le_bytes(header) as usize
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

impl<'a> RecordView<'a> {
    /// Wraps bytes produced by [`ProfileData::encode_into`]. Returns `None` if the lengths in the
    /// header do not match the slice (so a view never reads out of bounds).
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < HEADER_LEN || record_len([bytes[0], bytes[1]]) != bytes.len() {
            return None;
        }
        let k = bytes[2] as usize;
        let s = bytes[3] as usize;
        let f = bytes[4] as usize;
        let seg_off = align4(HEADER_LEN + k);
        let freq_off = align4(seg_off + 6 * s);
        (freq_off + 12 * f == bytes.len()).then_some(Self { bytes })
    }

    /// Wraps a record already known to be well-formed (it came from `encode_into`).
    #[inline]
    pub(crate) fn trusted(bytes: &'a [u8]) -> Self {
        debug_assert!(Self::new(bytes).is_some(), "record layout");
        Self { bytes }
    }

    #[inline]
    fn key_len(&self) -> usize {
        self.bytes[2] as usize
    }
    #[inline]
    fn seg_off(&self) -> usize {
        align4(HEADER_LEN + self.key_len())
    }
    #[inline]
    fn freq_off(&self) -> usize {
        align4(self.seg_off() + 6 * self.segment_count())
    }

    /// The user id bytes.
    #[inline]
    pub fn user_id_bytes(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + self.key_len()]
    }

    /// The user id (lossy only if a writer stored invalid UTF-8, which the replicator rejects).
    pub fn user_id(&self) -> &'a str {
        std::str::from_utf8(self.user_id_bytes()).unwrap_or("")
    }

    /// Number of segments.
    #[inline]
    pub fn segment_count(&self) -> usize {
        self.bytes[3] as usize
    }

    /// Number of frequency buckets.
    #[inline]
    pub fn bucket_count(&self) -> usize {
        self.bytes[4] as usize
    }

    /// Gender.
    pub fn gender(&self) -> Gender {
        Gender::from_byte(self.bytes[5])
    }

    /// Year of birth, if known.
    pub fn birth_year(&self) -> Option<u16> {
        match self.bytes[6] {
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
        match u32_at(self.bytes, 8) {
            0 => None,
            t => Some(t),
        }
    }

    /// The `i`-th segment `(id, weight)` in ascending id order.
    #[inline]
    pub fn segment(&self, i: usize) -> (u32, u16) {
        let s = self.segment_count();
        let o = self.seg_off();
        (
            u32_at(self.bytes, o + 4 * i),
            u16_at(self.bytes, o + 4 * s + 2 * i),
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
}

impl ProfileView for RecordView<'_> {
    /// Binary search over the ascending segment ids.
    #[inline]
    fn segment_weight(&self, segment: u32) -> Option<u16> {
        let s = self.segment_count();
        let o = self.seg_off();
        let (mut lo, mut hi) = (0usize, s);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let id = u32_at(self.bytes, o + 4 * mid);
            match id.cmp(&segment) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(u16_at(self.bytes, o + 4 * s + 2 * mid)),
            }
        }
        None
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
        // 20 segments and a 36-byte id: 12 + 36 + 120; plus three buckets of 12.
        assert_eq!(buf.len(), 168 + 36);
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

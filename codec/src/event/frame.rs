//! `event::frame`: the wire form of events — compact event encoding (schema v2) and the framed
//! batch that carries many events in one Kafka record or spool record.
//!
//! Owns the byte layout (documented in `docs/EVENTS.md`) and its reader. Writing happens on the
//! producer thread (and on a core's rare overflow path) into a buffer allocated at start
//! ([`FrameBuf`]); reading happens in the reporter. Must never: allocate while encoding into a
//! buffer that has the room, trust a length or a count read from the wire, or panic on input.
//!
//! A *record* (a Kafka message value, or a spool record's payload) is either
//! - a **frame** (schema v2): `magic "HEv2" | version: u16 LE (2) | count: u16 LE` followed by
//!   `count` entries `len: u16 LE | event (len bytes, compact layout below)`; or
//! - a **legacy** record (schema v1): one rkyv-archived [`Event`] (what Helios wrote before
//!   frames; spool segments and topics may still hold them). Its first two bytes are the v1
//!   schema version (`01 00`), never the frame magic.
//!
//! Compact event layout (little-endian): `kind u8 | flags u8 | reason u16 | core u16 |
//! event_id [16] | trace_id [16] | ts_unix_ns u64 | bid_ts_unix_ns u64 | advertiser_id u32 |
//! campaign_id u32 | creative_id u32 | bid_price_micros i64 | clear_price_micros i64 |
//! currency [3] | country [3] | device_type u8` (89 bytes), then six strings `node, exchange,
//! request_id, imp_id, site_or_app, user_id`, each `len u8 (bit 7: truncated) | UTF-8 bytes`.
//! A typical bid event is ~140 bytes against 400 for the rkyv archive.

use super::{EVENT_SCHEMA_VERSION, Event, EventDecodeError, EventKind, InlineStr};

/// First bytes of a frame.
pub const FRAME_MAGIC: [u8; 4] = *b"HEv2";
/// Bytes of a frame header (magic, version, count).
pub const FRAME_HEADER: usize = 8;
/// Bytes of an entry's length prefix.
pub const ENTRY_HEADER: usize = 2;
/// Bytes of the fixed part of a compact event.
pub const FIXED_BYTES: usize = 89;
/// Largest compact event (every string at its bound).
pub const MAX_EVENT_BYTES: usize = FIXED_BYTES + 6 + 32 + 32 + 64 + 32 + 64 + 64;
/// Most events one frame may hold.
pub const MAX_FRAME_EVENTS: usize = u16::MAX as usize;
/// Schema version of a legacy (rkyv, one event per record) record.
pub const LEGACY_SCHEMA_VERSION: u16 = 1;

const TRUNCATED: u8 = 0x80;

fn put_str<const N: usize>(out: &mut Vec<u8>, s: &InlineStr<N>) {
    let b = s.as_str().as_bytes();
    // N ≤ 64 for every field, so the length fits in the low 7 bits.
    debug_assert!(b.len() < TRUNCATED as usize);
    out.push(b.len() as u8 | if s.truncated() { TRUNCATED } else { 0 });
    out.extend_from_slice(b);
}

impl Event {
    /// Bytes of this event in the compact layout.
    pub fn encoded_len(&self) -> usize {
        FIXED_BYTES
            + 6
            + self.node.as_str().len()
            + self.exchange.as_str().len()
            + self.request_id.as_str().len()
            + self.imp_id.as_str().len()
            + self.site_or_app.as_str().len()
            + self.user_id.as_str().len()
    }

    /// Appends the compact layout of this event to `out` (no allocation when `out` has
    /// [`MAX_EVENT_BYTES`] of spare capacity).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.kind as u8);
        out.push(self.flags);
        out.extend_from_slice(&self.reason.to_le_bytes());
        out.extend_from_slice(&self.core.to_le_bytes());
        out.extend_from_slice(&self.event_id);
        out.extend_from_slice(&self.trace_id);
        out.extend_from_slice(&self.ts_unix_ns.to_le_bytes());
        out.extend_from_slice(&self.bid_ts_unix_ns.to_le_bytes());
        out.extend_from_slice(&self.advertiser_id.to_le_bytes());
        out.extend_from_slice(&self.campaign_id.to_le_bytes());
        out.extend_from_slice(&self.creative_id.to_le_bytes());
        out.extend_from_slice(&self.bid_price_micros.to_le_bytes());
        out.extend_from_slice(&self.clear_price_micros.to_le_bytes());
        out.extend_from_slice(&self.currency);
        out.extend_from_slice(&self.country);
        out.push(self.device_type);
        debug_assert_eq!(out.len() - start, FIXED_BYTES);
        put_str(out, &self.node);
        put_str(out, &self.exchange);
        put_str(out, &self.request_id);
        put_str(out, &self.imp_id);
        put_str(out, &self.site_or_app);
        put_str(out, &self.user_id);
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// Reads one event in the compact layout (exactly `b`, nothing left over).
    pub fn decode_compact(b: &[u8]) -> Result<Event, EventDecodeError> {
        let mut r = Reader { b, pos: 0 };
        let kind = match r.u8()? {
            1 => EventKind::Bid,
            2 => EventKind::NoBid,
            3 => EventKind::Win,
            4 => EventKind::Billing,
            5 => EventKind::Loss,
            6 => EventKind::Click,
            k => return Err(invalid(format!("unknown event kind {k}"))),
        };
        let mut e = Event::new(kind);
        e.flags = r.u8()?;
        e.reason = u16::from_le_bytes(r.arr()?);
        e.core = u16::from_le_bytes(r.arr()?);
        e.event_id = r.arr()?;
        e.trace_id = r.arr()?;
        e.ts_unix_ns = u64::from_le_bytes(r.arr()?);
        e.bid_ts_unix_ns = u64::from_le_bytes(r.arr()?);
        e.advertiser_id = u32::from_le_bytes(r.arr()?);
        e.campaign_id = u32::from_le_bytes(r.arr()?);
        e.creative_id = u32::from_le_bytes(r.arr()?);
        e.bid_price_micros = i64::from_le_bytes(r.arr()?);
        e.clear_price_micros = i64::from_le_bytes(r.arr()?);
        e.currency = r.arr()?;
        e.country = r.arr()?;
        e.device_type = r.u8()?;
        e.node = r.str()?;
        e.exchange = r.str()?;
        e.request_id = r.str()?;
        e.imp_id = r.str()?;
        e.site_or_app = r.str()?;
        e.user_id = r.str()?;
        if r.pos != b.len() {
            return Err(invalid(format!(
                "{} bytes after the event",
                b.len() - r.pos
            )));
        }
        Ok(e)
    }
}

fn invalid(s: String) -> EventDecodeError {
    EventDecodeError::Invalid(s)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventDecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| invalid(format!("event cut short at byte {}", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, EventDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], EventDecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn str<const N: usize>(&mut self) -> Result<InlineStr<N>, EventDecodeError> {
        let l = self.u8()?;
        let len = (l & !TRUNCATED) as usize;
        if len > N {
            return Err(invalid(format!("string of {len} bytes, bound {N}")));
        }
        let s = std::str::from_utf8(self.take(len)?)
            .map_err(|_| invalid("string is not UTF-8".into()))?;
        let mut v = InlineStr::new(s);
        v.truncated = l & TRUNCATED != 0;
        Ok(v)
    }
}

/// A frame being filled: a buffer allocated once (at start) and reused.
#[derive(Debug)]
pub struct FrameBuf {
    buf: Vec<u8>,
    count: u16,
    max_bytes: usize,
    max_events: u16,
}

impl FrameBuf {
    /// A frame of at most `max_bytes` (at least one largest event fits, whatever is asked).
    pub fn with_max_bytes(max_bytes: usize) -> FrameBuf {
        FrameBuf::with_limits(max_bytes, u16::MAX)
    }

    /// A frame of at most `max_bytes` and at most `max_events` events (at least one).
    pub fn with_limits(max_bytes: usize, max_events: u16) -> FrameBuf {
        let max_bytes = max_bytes.max(FRAME_HEADER + ENTRY_HEADER + MAX_EVENT_BYTES);
        let mut f = FrameBuf {
            buf: Vec::with_capacity(max_bytes),
            count: 0,
            max_bytes,
            max_events: max_events.max(1),
        };
        f.clear();
        f
    }

    /// Empties the frame (keeps the buffer).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&FRAME_MAGIC);
        self.buf
            .extend_from_slice(&EVENT_SCHEMA_VERSION.to_le_bytes());
        self.buf.extend_from_slice(&0u16.to_le_bytes());
        self.count = 0;
    }

    /// Adds `e` if it fits (bytes and count); `false` leaves the frame unchanged. Never
    /// allocates: the buffer was sized to `max_bytes` at start.
    pub fn push(&mut self, e: &Event) -> bool {
        let n = e.encoded_len();
        if self.count >= self.max_events || self.buf.len() + ENTRY_HEADER + n > self.max_bytes {
            return false;
        }
        self.buf.extend_from_slice(&(n as u16).to_le_bytes());
        e.encode_into(&mut self.buf);
        self.count += 1;
        self.buf[6..8].copy_from_slice(&self.count.to_le_bytes());
        true
    }

    /// Whether one more event of the largest size would still fit.
    pub fn has_room_for_any(&self) -> bool {
        self.count < self.max_events
            && self.buf.len() + ENTRY_HEADER + MAX_EVENT_BYTES <= self.max_bytes
    }

    pub fn count(&self) -> usize {
        self.count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The frame's bytes (a complete frame at any time).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
}

/// The events of one record (frame or legacy), read lazily.
#[derive(Debug)]
pub struct RecordEvents<'a> {
    body: &'a [u8],
    pos: usize,
    left: usize,
    legacy: Option<&'a [u8]>,
}

/// Events in a record, from its header alone (a legacy record holds one). `None` when the
/// bytes are neither a frame nor long enough to be a legacy record.
pub fn record_event_count(bytes: &[u8]) -> Option<usize> {
    if bytes.starts_with(&FRAME_MAGIC) {
        bytes
            .get(6..8)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize)
    } else if bytes.len() >= 2 {
        Some(1)
    } else {
        None
    }
}

/// Reads a record: a frame (its header is checked here, each event as it is iterated), or a
/// legacy single rkyv event. Errors on a frame of an unknown version or a truncated header.
pub fn decode_record(bytes: &[u8]) -> Result<RecordEvents<'_>, EventDecodeError> {
    if bytes.starts_with(&FRAME_MAGIC) {
        if bytes.len() < FRAME_HEADER {
            return Err(invalid("frame header cut short".into()));
        }
        let v = u16::from_le_bytes([bytes[4], bytes[5]]);
        if v != EVENT_SCHEMA_VERSION {
            return Err(EventDecodeError::Version(v));
        }
        let count = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
        Ok(RecordEvents {
            body: bytes,
            pos: FRAME_HEADER,
            left: count,
            legacy: None,
        })
    } else {
        Ok(RecordEvents {
            body: bytes,
            pos: bytes.len(),
            left: 1,
            legacy: Some(bytes),
        })
    }
}

impl RecordEvents<'_> {
    /// Events still to come (as the header says).
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl Iterator for RecordEvents<'_> {
    type Item = Result<Event, EventDecodeError>;

    /// The next event; after an error in a frame's framing (a length past the end) the rest of
    /// the frame is not read (it cannot be trusted), so iteration ends.
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if let Some(b) = self.legacy.take() {
            return Some(Event::from_bytes(b));
        }
        let b = self.body;
        let Some(lb) = b.get(self.pos..self.pos + ENTRY_HEADER) else {
            self.left = 0;
            return Some(Err(invalid("frame cut short (entry length)".into())));
        };
        let len = u16::from_le_bytes([lb[0], lb[1]]) as usize;
        let start = self.pos + ENTRY_HEADER;
        let Some(ev) = b.get(start..start + len) else {
            self.left = 0;
            return Some(Err(invalid("frame cut short (entry body)".into())));
        };
        self.pos = start + len;
        if self.left == 0 && self.pos != b.len() {
            return Some(Err(invalid(format!(
                "{} bytes after the frame's last event",
                b.len() - self.pos
            ))));
        }
        Some(Event::decode_compact(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    fn full() -> Event {
        let mut e = sample();
        e.node = InlineStr::new(&"n".repeat(40));
        e.exchange = InlineStr::new(&"x".repeat(32));
        e.request_id = InlineStr::new(&"r".repeat(64));
        e.imp_id = InlineStr::new(&"i".repeat(32));
        e.site_or_app = InlineStr::new(&"é".repeat(40));
        e.user_id = InlineStr::new(&"u".repeat(64));
        e.flags = 7;
        e.reason = 513;
        e.device_type = 4;
        e.creative_id = u32::MAX;
        e.advertiser_id = 3;
        e.bid_price_micros = i64::MAX;
        e.clear_price_micros = -1;
        e
    }

    #[test]
    fn compact_round_trips_and_is_smaller() {
        for e in [sample(), full(), Event::new(EventKind::NoBid)] {
            let mut b = Vec::new();
            e.encode_into(&mut b);
            assert_eq!(b.len(), e.encoded_len());
            assert!(b.len() <= MAX_EVENT_BYTES);
            assert!(b.len() < e.to_bytes().len());
            assert_eq!(Event::decode_compact(&b).unwrap(), e);
        }
        let f = full();
        let mut b = Vec::new();
        f.encode_into(&mut b);
        assert!(Event::decode_compact(&b).unwrap().node.truncated());
        assert_eq!(b.len(), MAX_EVENT_BYTES, "every string at its bound");
    }

    #[test]
    fn frame_round_trips_many_events_in_order() {
        let mut f = FrameBuf::with_max_bytes(16 * 1024);
        let mut sent = Vec::new();
        for i in 0..1000u32 {
            let mut e = sample();
            e.campaign_id = i;
            e.event_id[..4].copy_from_slice(&i.to_le_bytes());
            if !f.push(&e) {
                break;
            }
            sent.push(e);
        }
        assert!(sent.len() > 50, "{} events fit", sent.len());
        assert!(f.len() <= 16 * 1024);
        assert!(!f.push(&full()) || f.len() <= 16 * 1024);
        let got: Vec<Event> = decode_record(f.as_bytes())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got[..sent.len()], sent[..]);
        assert_eq!(record_event_count(f.as_bytes()), Some(f.count()));
        f.clear();
        assert!(f.is_empty());
        assert_eq!(decode_record(f.as_bytes()).unwrap().count(), 0);
    }

    #[test]
    fn legacy_rkyv_records_are_still_read() {
        let e = sample();
        let b = e.to_legacy_bytes();
        assert_eq!(&b[..2], &LEGACY_SCHEMA_VERSION.to_le_bytes());
        assert_eq!(record_event_count(&b), Some(1));
        let got: Vec<_> = decode_record(&b).unwrap().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap(), &e);
    }

    #[test]
    fn hostile_frames_are_refused_not_trusted() {
        let mut f = FrameBuf::with_max_bytes(4096);
        assert!(f.push(&sample()));
        assert!(f.push(&sample()));
        let good = f.as_bytes().to_vec();
        // Every truncation: an error somewhere, never a panic, never more events than sent.
        for cut in 0..good.len() {
            let b = &good[..cut];
            if let Ok(it) = decode_record(b) {
                let r: Vec<_> = it.collect();
                assert!(r.len() <= 2);
                assert!(r.iter().any(|x| x.is_err()) || cut < 2, "cut {cut}");
            }
        }
        // A count larger than the body: the missing events are errors, iteration ends.
        let mut big = good.clone();
        big[6..8].copy_from_slice(&60000u16.to_le_bytes());
        let r: Vec<_> = decode_record(&big).unwrap().collect();
        assert_eq!(r.iter().filter(|x| x.is_ok()).count(), 2);
        assert_eq!(r.len(), 3);
        // Unknown version.
        let mut v = good.clone();
        v[4] = 9;
        assert!(matches!(
            decode_record(&v),
            Err(EventDecodeError::Version(9))
        ));
        // Every single-byte corruption decodes or errors, never panics.
        for i in 0..good.len() {
            for x in [0u8, 0x7f, 0x80, 0xff] {
                let mut c = good.clone();
                c[i] = x;
                if let Ok(it) = decode_record(&c) {
                    for r in it.take(10) {
                        let _ = r;
                    }
                }
            }
        }
        // A string length past its bound.
        let mut s = Vec::new();
        sample().encode_into(&mut s);
        s[FIXED_BYTES] = 60; // node: bound 32
        assert!(Event::decode_compact(&s).is_err());
    }

    #[test]
    fn event_limit_is_kept() {
        let mut f = FrameBuf::with_limits(64 * 1024, 3);
        assert!(f.push(&sample()) && f.push(&sample()) && f.push(&sample()));
        assert!(!f.push(&sample()));
        assert_eq!(f.count(), 3);
    }

    #[test]
    fn frame_never_reallocates() {
        let mut f = FrameBuf::with_max_bytes(8192);
        let cap = f.buf.capacity();
        while f.push(&full()) {}
        assert_eq!(f.buf.capacity(), cap);
        assert!(f.len() <= 8192);
    }
}

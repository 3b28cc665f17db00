//! `framing`: how the producer thread packs events into Kafka records.
//!
//! Owns [`Frames`]: one open [`FrameBuf`] per (topic, key bucket), allocated at start and reused,
//! owned by the producer thread; and [`bucket_of`] / [`BucketKey`], the record key, also used by
//! a core's overflow path. Must never allocate per event, and never hold an event longer than
//! `frame_linger_ms` past the producer's previous look at the queues (a frame's clock starts
//! then, since its first event may have waited in a core's queue since; the producer thread
//! flushes due frames every turn).
//!
//! Why frames: librdkafka costs ≈ 2 µs of CPU per message whatever its size (bench/RESULTS.md,
//! "Outcome pipeline"), so one event per message capped a producer thread below 500k events/s.
//! A frame carries up to `frame_max_bytes` of compact events in one message.

use std::time::{Duration, Instant};

use codec::event::Event;
use codec::event::frame::FrameBuf;

/// The key bucket of an event: FNV-1a of its natural key (the campaign id in decimal, or the
/// request id for events without a campaign) modulo `buckets`. Stable across nodes and runs.
pub fn bucket_of(e: &Event, buckets: u16) -> u16 {
    let mut kb = itoa::Buffer::new();
    let key = e.key(&mut kb);
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % buckets.max(1) as u32) as u16
}

/// The record key of a bucket: `b<n>` (no allocation).
#[derive(Clone, Copy, Debug)]
pub struct BucketKey {
    bytes: [u8; 6],
    len: u8,
}

impl BucketKey {
    pub fn new(bucket: u16) -> BucketKey {
        let mut bytes = [0u8; 6];
        bytes[0] = b'b';
        let mut b = itoa::Buffer::new();
        let d = b.format(bucket).as_bytes();
        // u16 has at most 5 digits.
        bytes[1..1 + d.len()].copy_from_slice(d);
        BucketKey {
            bytes,
            len: 1 + d.len() as u8,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One open frame and when its first event came.
#[derive(Debug)]
pub(crate) struct OpenFrame {
    pub buf: FrameBuf,
    pub since: Option<Instant>,
    pub topic: u8,
    pub key: BucketKey,
}

/// The producer thread's open frames: `2 × buckets`, indexed by `topic × buckets + bucket`.
#[derive(Debug)]
pub(crate) struct Frames {
    pub open: Vec<OpenFrame>,
    buckets: u16,
    linger: Duration,
}

impl Frames {
    pub fn new(buckets: u16, max_bytes: usize, max_events: u16, linger: Duration) -> Frames {
        let open = (0..2u8)
            .flat_map(|t| {
                (0..buckets).map(move |b| OpenFrame {
                    buf: FrameBuf::with_limits(max_bytes, max_events),
                    since: None,
                    topic: t,
                    key: BucketKey::new(b),
                })
            })
            .collect();
        Frames {
            open,
            buckets,
            linger,
        }
    }

    /// The frame an event of `topic` goes to.
    pub fn index(&self, topic: u8, e: &Event) -> usize {
        topic as usize * self.buckets as usize + bucket_of(e, self.buckets) as usize
    }

    /// Frames that must be sent now: when the oldest open frame's first event is older than
    /// the linger (or when `all`), every non-empty frame. Open frames share one deadline, the
    /// oldest's: frames opened at different times would otherwise each cost the producer thread
    /// (and librdkafka's broker thread) a wake-up of their own; sent together they leave in one
    /// produce request, and the next ones open together on the next drain.
    pub fn due(&self, now: Instant, all: bool) -> impl Iterator<Item = usize> + '_ {
        let any_due = all || self.next_due().is_some_and(|d| now >= d);
        self.open
            .iter()
            .enumerate()
            .filter_map(move |(i, f)| (any_due && f.since.is_some()).then_some(i))
    }

    /// The earliest time a frame falls due, if any is open.
    pub fn next_due(&self) -> Option<Instant> {
        self.open
            .iter()
            .filter_map(|f| f.since)
            .min()
            .map(|s| s + self.linger)
    }

    /// Events held in open frames.
    pub fn events(&self) -> usize {
        self.open.iter().map(|f| f.buf.count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::event::{EventKind, InlineStr};

    #[test]
    fn one_campaign_one_bucket_and_keys_are_short() {
        let mut a = Event::new(EventKind::Bid);
        a.campaign_id = 42;
        let mut b = Event::new(EventKind::Win);
        b.campaign_id = 42;
        b.request_id = InlineStr::new("other");
        assert_eq!(bucket_of(&a, 6), bucket_of(&b, 6));
        let spread: std::collections::HashSet<u16> = (1..200u32)
            .map(|c| {
                let mut e = Event::new(EventKind::Bid);
                e.campaign_id = c;
                bucket_of(&e, 6)
            })
            .collect();
        assert_eq!(spread.len(), 6, "campaigns spread over every bucket");
        assert_eq!(BucketKey::new(0).as_bytes(), b"b0");
        assert_eq!(BucketKey::new(65535).as_bytes(), b"b65535");
    }

    #[test]
    fn frames_fall_due_after_the_linger() {
        let mut f = Frames::new(2, 4096, u16::MAX, Duration::from_millis(20));
        let t0 = Instant::now();
        let mut e = Event::new(EventKind::Bid);
        e.campaign_id = 7;
        let i = f.index(0, &e);
        assert!(f.open[i].buf.push(&e));
        f.open[i].since = Some(t0);
        assert_eq!(f.due(t0, false).count(), 0);
        assert_eq!(f.due(t0, true).collect::<Vec<_>>(), vec![i]);
        assert_eq!(
            f.due(t0 + Duration::from_millis(20), false)
                .collect::<Vec<_>>(),
            vec![i]
        );
        assert_eq!(f.next_due(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(f.events(), 1);
        assert_eq!(f.index(1, &e), 2 + i);
    }

    #[test]
    fn open_frames_fall_due_together_with_the_oldest() {
        let mut f = Frames::new(2, 4096, u16::MAX, Duration::from_millis(20));
        let t0 = Instant::now();
        let mut a = Event::new(EventKind::Bid);
        a.campaign_id = 7;
        let mut b = Event::new(EventKind::Win);
        b.campaign_id = 8;
        let (ia, ib) = (f.index(0, &a), f.index(1, &b));
        assert_ne!(ia, ib);
        assert!(f.open[ia].buf.push(&a));
        f.open[ia].since = Some(t0);
        assert!(f.open[ib].buf.push(&b));
        f.open[ib].since = Some(t0 + Duration::from_millis(15));
        assert_eq!(f.due(t0 + Duration::from_millis(19), false).count(), 0);
        let mut due: Vec<usize> = f.due(t0 + Duration::from_millis(20), false).collect();
        due.sort_unstable();
        let mut want = vec![ia, ib];
        want.sort_unstable();
        assert_eq!(due, want, "the younger frame leaves with the older one");
    }
}

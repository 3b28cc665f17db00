//! Event records: what leaves the hot path for Kafka (documented in `docs/EVENTS.md`).
//!
//! An [`Event`] is a fixed-size `Copy` value (strings are inline and bounded), so a bidding core
//! can build one on its stack and push it into a lock-free queue with no allocation. On the wire
//! (Kafka, the spool) events travel in frames of many compact events ([`frame`], schema v2); the
//! reporter reads a record with [`frame::decode_record`], which checks the bytes and the schema
//! version before trusting them and still reads the rkyv records of schema v1.

pub mod frame;

use std::fmt;

use rkyv::rancor;

/// Bumped whenever the wire layout of events changes; readers refuse versions they do not know.
/// 2: compact events in frames ([`frame`]); 1: one rkyv archive per record (still read).
pub const EVENT_SCHEMA_VERSION: u16 = 2;

/// Topic for bid and no-bid events.
pub const TOPIC_BIDS: &str = "helios.bids";
/// Topic for win, billing (impression), loss and click events.
pub const TOPIC_OUTCOMES: &str = "helios.outcomes";

/// A string of at most `N` bytes stored inline. Longer input is cut at a char boundary and
/// flagged, so an event never fails to build and never allocates.
#[derive(Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct InlineStr<const N: usize> {
    len: u8,
    truncated: bool,
    bytes: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    const _FITS: () = assert!(N <= u8::MAX as usize, "InlineStr length is stored in a u8");

    pub const fn empty() -> Self {
        InlineStr {
            len: 0,
            truncated: false,
            bytes: [0; N],
        }
    }
    pub fn new(s: &str) -> Self {
        let () = Self::_FITS;
        let mut cut = s.len().min(N);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut bytes = [0u8; N];
        bytes[..cut].copy_from_slice(&s.as_bytes()[..cut]);
        InlineStr {
            len: cut as u8,
            truncated: cut < s.len(),
            bytes,
        }
    }
    pub fn as_str(&self) -> &str {
        // Built from a &str cut at a char boundary. A value deserialised from a hostile legacy
        // archive may claim a length past N (bytecheck checks the layout, not this invariant):
        // capped, as the archived form does, so it reads at most N bytes and never panics.
        let len = (self.len as usize).min(N);
        std::str::from_utf8(&self.bytes[..len]).unwrap_or("")
    }
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl<const N: usize> ArchivedInlineStr<N> {
    pub fn as_str(&self) -> &str {
        let len = (self.len as usize).min(N);
        std::str::from_utf8(&self.bytes[..len]).unwrap_or("")
    }
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<const N: usize> fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What happened.
#[derive(Clone, Copy, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq), compare(PartialEq))]
#[repr(u8)]
pub enum EventKind {
    Bid = 1,
    NoBid = 2,
    Win = 3,
    Billing = 4,
    Loss = 5,
    Click = 6,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Bid,
        EventKind::NoBid,
        EventKind::Win,
        EventKind::Billing,
        EventKind::Loss,
        EventKind::Click,
    ];
    pub fn topic(self) -> &'static str {
        match self {
            EventKind::Bid | EventKind::NoBid => TOPIC_BIDS,
            _ => TOPIC_OUTCOMES,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Bid => "bid",
            EventKind::NoBid => "nobid",
            EventKind::Win => "win",
            EventKind::Billing => "billing",
            EventKind::Loss => "loss",
            EventKind::Click => "click",
        }
    }
}

impl ArchivedEventKind {
    pub fn to_native(&self) -> EventKind {
        match self {
            ArchivedEventKind::Bid => EventKind::Bid,
            ArchivedEventKind::NoBid => EventKind::NoBid,
            ArchivedEventKind::Win => EventKind::Win,
            ArchivedEventKind::Billing => EventKind::Billing,
            ArchivedEventKind::Loss => EventKind::Loss,
            ArchivedEventKind::Click => EventKind::Click,
        }
    }
}

/// Why no bid was made. Codes are stable: they are stored in events and reported.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u16)]
pub enum NoBidReason {
    NoEligibleCampaign = 1,
    BelowFloor = 2,
    BudgetExhausted = 3,
    FrequencyCapped = 4,
    Deadline = 5,
    Blocked = 6,
    NoConsent = 7,
    Overloaded = 8,
    InvalidRequest = 9,
    Paced = 10,
    UnsupportedCurrency = 11,
    NotReady = 12,
}

impl NoBidReason {
    pub const ALL: [NoBidReason; 12] = [
        NoBidReason::NoEligibleCampaign,
        NoBidReason::BelowFloor,
        NoBidReason::BudgetExhausted,
        NoBidReason::FrequencyCapped,
        NoBidReason::Deadline,
        NoBidReason::Blocked,
        NoBidReason::NoConsent,
        NoBidReason::Overloaded,
        NoBidReason::InvalidRequest,
        NoBidReason::Paced,
        NoBidReason::UnsupportedCurrency,
        NoBidReason::NotReady,
    ];
    pub fn code(self) -> u16 {
        self as u16
    }
    pub fn from_code(c: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.code() == c)
    }
    /// Label used in metrics and the reporter (`no_eligible_campaign`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            NoBidReason::NoEligibleCampaign => "no_eligible_campaign",
            NoBidReason::BelowFloor => "below_floor",
            NoBidReason::BudgetExhausted => "budget_exhausted",
            NoBidReason::FrequencyCapped => "frequency_capped",
            NoBidReason::Deadline => "deadline",
            NoBidReason::Blocked => "blocked",
            NoBidReason::NoConsent => "no_consent",
            NoBidReason::Overloaded => "overloaded",
            NoBidReason::InvalidRequest => "invalid_request",
            NoBidReason::Paced => "paced",
            NoBidReason::UnsupportedCurrency => "unsupported_currency",
            NoBidReason::NotReady => "not_ready",
        }
    }
    /// OpenRTB 2.6 `nbr` (no-bid reason codes list): 1 technical error, 2 invalid request,
    /// 7 blocked publisher or site, 0 unknown for the buyer-side reasons the list lacks.
    pub fn openrtb_nbr(self) -> u32 {
        match self {
            NoBidReason::Deadline | NoBidReason::Overloaded | NoBidReason::NotReady => 1,
            NoBidReason::InvalidRequest => 2,
            NoBidReason::Blocked => 7,
            _ => 0,
        }
    }
}

/// Bits of [`Event::flags`].
pub mod flags {
    /// The request had `test=1`: answered, never charged.
    pub const TEST: u8 = 1;
    /// The notice came after the configured window.
    pub const LATE: u8 = 2;
    /// Bid used contextual targeting only (no consent, or stale profile data).
    pub const CONTEXTUAL_ONLY: u8 = 4;
}

/// One event. Fixed size; every field has a meaning for every kind (0 / "" when not applicable).
#[derive(Clone, Copy, PartialEq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Event {
    pub schema_version: u16,
    pub kind: EventKind,
    /// [`flags`] bits.
    pub flags: u8,
    /// No-bid reason code ([`NoBidReason`]) or OpenRTB loss reason code; 0 when none.
    pub reason: u16,
    /// The core that made the event.
    pub core: u16,
    /// Unique per event; for notices derived from the notice itself, so a repeated notice has
    /// the same id and is counted once downstream.
    pub event_id: [u8; 16],
    /// Carried from the bid request into every event it causes, and into the logs.
    pub trace_id: [u8; 16],
    /// When the event happened, Unix nanoseconds.
    pub ts_unix_ns: u64,
    /// For outcomes: when the bid was made (from the signed notice), Unix nanoseconds.
    pub bid_ts_unix_ns: u64,
    pub node: InlineStr<32>,
    pub exchange: InlineStr<32>,
    pub request_id: InlineStr<64>,
    pub imp_id: InlineStr<32>,
    pub advertiser_id: u32,
    pub campaign_id: u32,
    pub creative_id: u32,
    /// Our bid, micros of `currency` (CPM).
    pub bid_price_micros: i64,
    /// Clearing price from the exchange (win/billing), micros of `currency` (CPM).
    pub clear_price_micros: i64,
    pub currency: [u8; 3],
    /// ISO-3166-1 alpha-3 country from `device.geo`.
    pub country: [u8; 3],
    /// OpenRTB device type (0 unknown).
    pub device_type: u8,
    /// Site domain or app bundle.
    pub site_or_app: InlineStr<64>,
    /// The user's profile key, only with consent for personalised advertising ("" otherwise);
    /// billing events use it to count frequency caps.
    pub user_id: InlineStr<64>,
}

/// Why bytes could not be read as an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("event bytes failed validation: {0}")]
    Invalid(String),
    #[error("event schema version {0} is not known (this build reads {EVENT_SCHEMA_VERSION})")]
    Version(u16),
}

impl Event {
    /// An event of `kind` with every other field empty.
    pub fn new(kind: EventKind) -> Event {
        Event {
            schema_version: EVENT_SCHEMA_VERSION,
            kind,
            flags: 0,
            reason: 0,
            core: 0,
            event_id: [0; 16],
            trace_id: [0; 16],
            ts_unix_ns: 0,
            bid_ts_unix_ns: 0,
            node: InlineStr::empty(),
            exchange: InlineStr::empty(),
            request_id: InlineStr::empty(),
            imp_id: InlineStr::empty(),
            advertiser_id: 0,
            campaign_id: 0,
            creative_id: 0,
            bid_price_micros: 0,
            clear_price_micros: 0,
            currency: *b"USD",
            country: [0; 3],
            device_type: 0,
            site_or_app: InlineStr::empty(),
            user_id: InlineStr::empty(),
        }
    }

    /// A record holding this one event: a frame of one (schema v2). For tests and tools; the
    /// producer fills frames of many events in a reused buffer ([`frame::FrameBuf`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut f = frame::FrameBuf::with_max_bytes(0);
        let pushed = f.push(self);
        debug_assert!(pushed, "an empty frame always has room for one event");
        f.as_bytes().to_vec()
    }

    /// The schema v1 record of this event: one rkyv archive (what Helios wrote before frames).
    /// Kept so that readers of old spool segments and topics stay tested.
    pub fn to_legacy_bytes(&self) -> rkyv::util::AlignedVec {
        let mut e = *self;
        e.schema_version = frame::LEGACY_SCHEMA_VERSION;
        // Serialising a fixed-layout value cannot fail: there are no fallible fields.
        rkyv::to_bytes::<rancor::Error>(&e).expect("a fixed-layout Event always serialises")
    }

    /// Reads a record that holds exactly one event: a frame of one ([`Event::to_bytes`]) or a
    /// schema v1 rkyv record. Records of many events are read with [`frame::decode_record`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Event, EventDecodeError> {
        if bytes.starts_with(&frame::FRAME_MAGIC) {
            let mut it = frame::decode_record(bytes)?;
            if it.remaining() != 1 {
                return Err(EventDecodeError::Invalid(format!(
                    "record holds {} events, not one",
                    it.remaining()
                )));
            }
            return it
                .next()
                .unwrap_or_else(|| Err(EventDecodeError::Invalid("empty record".into())));
        }
        Self::from_legacy_bytes(bytes)
    }

    /// Checks and reads a schema v1 record (one rkyv archive). Copies into aligned memory
    /// first, since Kafka payloads carry no alignment guarantee. The event read is given the
    /// current in-memory `schema_version`.
    pub fn from_legacy_bytes(bytes: &[u8]) -> Result<Event, EventDecodeError> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let archived = rkyv::access::<ArchivedEvent, rancor::Error>(&aligned)
            .map_err(|e| EventDecodeError::Invalid(e.to_string()))?;
        let v = archived.schema_version.to_native();
        if v != frame::LEGACY_SCHEMA_VERSION {
            return Err(EventDecodeError::Version(v));
        }
        let mut e = rkyv::deserialize::<Event, rancor::Error>(archived)
            .map_err(|e| EventDecodeError::Invalid(e.to_string()))?;
        e.schema_version = EVENT_SCHEMA_VERSION;
        Ok(e)
    }

    /// The Kafka message key: the campaign id (decimal) for campaign events, so one
    /// campaign's events stay in order on one partition; the request id for no-bids.
    pub fn key<'e>(&'e self, scratch: &'e mut itoa::Buffer) -> &'e [u8] {
        if self.campaign_id != 0 {
            scratch.format(self.campaign_id).as_bytes()
        } else {
            self.request_id.as_str().as_bytes()
        }
    }

    pub fn event_id_hex(&self) -> String {
        hex(&self.event_id)
    }
}

/// Lower-case hex of a byte string (ids in logs and the reporter).
pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> Event {
        let mut e = Event::new(EventKind::Billing);
        e.core = 1;
        e.event_id = [7; 16];
        e.trace_id = [9; 16];
        e.ts_unix_ns = 1_700_000_000_000_000_000;
        e.node = InlineStr::new("node-a");
        e.request_id = InlineStr::new("req-1");
        e.imp_id = InlineStr::new("1");
        e.campaign_id = 42;
        e.clear_price_micros = 1_100_000;
        e.bid_price_micros = 1_250_000;
        e.country = *b"USA";
        e.site_or_app = InlineStr::new("news.example");
        e
    }

    #[test]
    fn round_trips_through_bytes() {
        let e = sample();
        let b = e.to_bytes();
        // Unaligned input is accepted too.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&b);
        assert_eq!(Event::from_bytes(&shifted[1..]).unwrap(), e);
    }

    #[test]
    fn legacy_round_trips_through_bytes() {
        let e = sample();
        let b = e.to_legacy_bytes();
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&b);
        assert_eq!(Event::from_bytes(&shifted[1..]).unwrap(), e);
    }

    #[test]
    fn refuses_garbage_and_unknown_versions() {
        assert!(Event::from_bytes(b"not an event").is_err());
        let mut e = sample();
        e.schema_version = 99;
        let mut b = rkyv::to_bytes::<rancor::Error>(&e).unwrap().to_vec();
        assert!(matches!(
            Event::from_bytes(&b),
            Err(EventDecodeError::Version(99))
        ));
        b = sample().to_bytes();
        b[4] = 99;
        assert!(matches!(
            Event::from_bytes(&b),
            Err(EventDecodeError::Version(99))
        ));
    }

    #[test]
    fn a_legacy_archive_claiming_a_string_past_its_capacity_is_read_without_panic() {
        let mut e = sample();
        e.node = InlineStr::new("ABCDEFGHIJ");
        let mut b = e.to_legacy_bytes().to_vec();
        // The node's archived form: len 10, not truncated, then its bytes.
        let at = b
            .windows(4)
            .position(|w| w == [10, 0, b'A', b'B'])
            .expect("the node's inline string is in the archive");
        b[at] = 200; // past the 32-byte capacity
        let read = Event::from_bytes(&b).expect("the layout is valid; only the length lies");
        let node = read.node.as_str();
        assert!(
            node.len() <= 32 && node.starts_with("ABCDEFGHIJ"),
            "{node:?}"
        );
    }

    #[test]
    fn inline_str_cuts_at_char_boundary() {
        let s = InlineStr::<4>::new("aéé");
        assert_eq!(s.as_str(), "aé");
        assert!(s.truncated());
    }

    #[test]
    fn key_is_campaign_or_request() {
        let mut b = itoa::Buffer::new();
        assert_eq!(sample().key(&mut b), b"42");
        let mut e = Event::new(EventKind::NoBid);
        e.request_id = InlineStr::new("r9");
        let mut b = itoa::Buffer::new();
        assert_eq!(e.key(&mut b), b"r9");
    }
}

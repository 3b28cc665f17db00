//! `notice`: signed win / billing / loss / click notice URLs, and their verification.
//!
//! Owns [`NoticeSigner`]: a keyed HMAC-SHA256 state plus this owner's counters. Each core owns
//! its own clone (counters are per owner, never shared). Building a URL writes into the
//! caller's reused buffer (no allocation once the buffer has grown); verifying reads the query
//! in place. Must never trust an unsigned byte of a notice except the exchange's macro values,
//! which are range-checked (price ≤ our bid, currency ours), and must never panic on input.
//!
//! URL: `{base}?r=…&i=…&c=…&cr=…&a=…&p=…&cu=USD&t=…&n=…&x=…&tr=…[&g=…&d=…&st=…][&u=…][&rv=…]&co=…&k=w&s=SIG`
//! followed by the exchange's macros (`&ap=${AUCTION_PRICE}&cur=${AUCTION_CURRENCY}`,
//! `&aid=${AUCTION_ID}&aiid=${AUCTION_IMP_ID}`, for loss `&al=${AUCTION_LOSS}&amw=${AUCTION_MIN_TO_WIN}`).
//! `SIG` is the first 16 bytes (128 bits, 32 hex chars) of HMAC-SHA256(key, bytes after `?` up
//! to `&s=`), so the kind is signed too (a win URL cannot be replayed as a billing URL). The kind
//! comes last so that one bid's URLs share their signed prefix: it is encoded and hashed once
//! (from the keyed inner/outer SHA-256 states `Hmac` holds), and each kind adds only `&k=K`, the
//! padding block and the outer hash ([`NoticeSigner::prepare`]). Verification hashes whatever
//! bytes precede `&s=` and reads the parameters in any order, so URLs of the earlier layout
//! (`k=` first) still verify. Values
//! are percent-encoded (RFC 3986 unreserved bytes pass through). `rv` (the budget the bid
//! reserved, micros of USD; absent = none) and `co` (the core holding the reservation on node
//! `n`) are signed like the rest: budget settlement trusts them (docs/CAMPAIGNS.md, "Budgets").
//!
//! Event id (since session 5, [`notice_event_id`]): the bid time (`t`, 8 bytes, big-endian
//! nanoseconds) followed by the first 8 bytes of SHA-256(`helios-notice-v2` ‖ signed bytes). The
//! same notice received twice has the same id (counted once downstream); the price the exchange
//! fills in does not change it; notices of different bids or kinds differ in the hash (the kind
//! is signed). The time prefix makes the reporter's raw key insert near-sequential (notices
//! arrive roughly in bid-time order) instead of at a random B-tree leaf per notice, as the
//! 16-byte hash of session 1–4 (`helios-notice-v1`) did. The reporter reads ids as opaque 16
//! bytes, so events with either kind of id ingest alike.

use std::time::Duration;

use codec::Micros;
use codec::event::{Event, EventKind, InlineStr, flags};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the HMAC kept in the URL (128 bits).
pub const SIGNATURE_BYTES: usize = 16;
/// Default window after the bid within which a notice is on time.
pub const DEFAULT_LATE_WINDOW: Duration = Duration::from_secs(3600);

/// Which notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    Win,
    Billing,
    Loss,
    Click,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 4] = [
        NoticeKind::Win,
        NoticeKind::Billing,
        NoticeKind::Loss,
        NoticeKind::Click,
    ];
    /// The kind served by a notice route: `/notice/win`, `/notice/billing`, `/notice/loss`,
    /// `/notice/click` (the last path segment decides).
    pub fn from_route(path: &str) -> Option<NoticeKind> {
        match path.rsplit('/').next()? {
            "win" => Some(NoticeKind::Win),
            "billing" => Some(NoticeKind::Billing),
            "loss" => Some(NoticeKind::Loss),
            "click" => Some(NoticeKind::Click),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        match self {
            NoticeKind::Win => b'w',
            NoticeKind::Billing => b'b',
            NoticeKind::Loss => b'l',
            NoticeKind::Click => b'c',
        }
    }
    fn index(self) -> usize {
        self as usize
    }
    /// The event kind this notice becomes.
    pub fn event_kind(self) -> EventKind {
        match self {
            NoticeKind::Win => EventKind::Win,
            NoticeKind::Billing => EventKind::Billing,
            NoticeKind::Loss => EventKind::Loss,
            NoticeKind::Click => EventKind::Click,
        }
    }
    /// The exchange macros appended after the signature.
    fn macros(self) -> &'static [u8] {
        match self {
            NoticeKind::Win | NoticeKind::Billing => {
                b"&ap=${AUCTION_PRICE}&cur=${AUCTION_CURRENCY}&aid=${AUCTION_ID}&aiid=${AUCTION_IMP_ID}"
            }
            NoticeKind::Loss => {
                b"&al=${AUCTION_LOSS}&amw=${AUCTION_MIN_TO_WIN}&aid=${AUCTION_ID}&aiid=${AUCTION_IMP_ID}"
            }
            NoticeKind::Click => b"&aid=${AUCTION_ID}",
        }
    }
}

/// What we put in a notice URL about one bid.
#[derive(Clone, Copy, Debug)]
pub struct BidParams<'a> {
    pub request_id: &'a str,
    pub imp_id: &'a str,
    pub campaign_id: u32,
    pub creative_id: u32,
    pub advertiser_id: u32,
    pub bid_price: Micros,
    /// ISO 4217 code of the bid.
    pub currency: [u8; 3],
    pub bid_ts_unix_ns: u64,
    pub node: &'a str,
    pub exchange: &'a str,
    pub trace_id: [u8; 16],
    /// ISO-3166-1 alpha-3, or zeros.
    pub country: [u8; 3],
    pub device_type: u8,
    pub site_or_app: &'a str,
    /// The profile key, only with consent (None otherwise).
    pub user_id: Option<&'a str>,
    /// Budget reserved for this bid (micros of USD, `shards::ImpBid::reserved`); 0 = the bid
    /// holds no reservation (test request, budgets not enforced) and its notices settle nothing.
    pub reserved: Micros,
    /// The core (on `node`) whose lease holds the reservation: settlement is routed to it.
    pub core: u16,
}

/// Why a notice was rejected. Each has a stable label ([`NoticeError::reason`]) and is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("notice has no signature")]
    Unsigned,
    #[error("notice signature is malformed")]
    MalformedSignature,
    #[error("notice signature does not match (forged or altered)")]
    BadSignature,
    #[error("notice is malformed: {0}")]
    Malformed(&'static str),
    #[error("notice kind does not match its route")]
    KindMismatch,
    #[error("clearing price missing (macro not substituted)")]
    MissingPrice,
    #[error("clearing price unreadable")]
    BadPrice,
    #[error("clearing price above our bid")]
    PriceAboveBid,
    #[error("currency differs from the bid's")]
    CurrencyMismatch,
}

impl NoticeError {
    pub const COUNT: usize = 9;
    pub const ALL: [NoticeError; Self::COUNT] = [
        NoticeError::Unsigned,
        NoticeError::MalformedSignature,
        NoticeError::BadSignature,
        NoticeError::Malformed(""),
        NoticeError::KindMismatch,
        NoticeError::MissingPrice,
        NoticeError::BadPrice,
        NoticeError::PriceAboveBid,
        NoticeError::CurrencyMismatch,
    ];
    pub fn index(&self) -> usize {
        match self {
            NoticeError::Unsigned => 0,
            NoticeError::MalformedSignature => 1,
            NoticeError::BadSignature => 2,
            NoticeError::Malformed(_) => 3,
            NoticeError::KindMismatch => 4,
            NoticeError::MissingPrice => 5,
            NoticeError::BadPrice => 6,
            NoticeError::PriceAboveBid => 7,
            NoticeError::CurrencyMismatch => 8,
        }
    }
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            NoticeError::Unsigned => "unsigned",
            NoticeError::MalformedSignature => "malformed_signature",
            NoticeError::BadSignature => "bad_signature",
            NoticeError::Malformed(_) => "malformed",
            NoticeError::KindMismatch => "kind_mismatch",
            NoticeError::MissingPrice => "missing_price",
            NoticeError::BadPrice => "bad_price",
            NoticeError::PriceAboveBid => "price_above_bid",
            NoticeError::CurrencyMismatch => "currency_mismatch",
        }
    }
}

/// Counters of one signer's owner (one core).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoticeStats {
    /// Accepted notices by kind (index: win, billing, loss, click).
    pub accepted: [u64; 4],
    /// Of the accepted, those flagged late.
    pub late: u64,
    /// Rejected notices by [`NoticeError::index`].
    pub rejected: [u64; NoticeError::COUNT],
}

impl NoticeStats {
    pub fn rejected_for(&self, e: NoticeError) -> u64 {
        self.rejected[e.index()]
    }
    pub fn accepted_for(&self, k: NoticeKind) -> u64 {
        self.accepted[k.index()]
    }
}

/// A notice whose signed parameters checked out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerifiedNotice {
    pub kind: NoticeKind,
    /// Deterministic: the same notice always yields the same id.
    pub event_id: [u8; 16],
    pub trace_id: [u8; 16],
    pub request_id: InlineStr<64>,
    pub imp_id: InlineStr<32>,
    pub campaign_id: u32,
    pub creative_id: u32,
    pub advertiser_id: u32,
    pub bid_price: Micros,
    pub currency: [u8; 3],
    pub bid_ts_unix_ns: u64,
    /// The node that made the bid.
    pub node: InlineStr<32>,
    pub exchange: InlineStr<32>,
    pub country: [u8; 3],
    pub device_type: u8,
    pub site_or_app: InlineStr<64>,
    pub user_id: InlineStr<64>,
    /// Win/billing: the clearing price. Loss: `${AUCTION_MIN_TO_WIN}` when the exchange sent it.
    pub price: Option<Micros>,
    /// Loss: the OpenRTB loss reason code (`${AUCTION_LOSS}`), 0 if absent.
    pub loss_reason: u16,
    /// Received after the late window.
    pub late: bool,
    /// Budget the bid reserved (micros of USD; 0 = none): what settlement releases.
    pub reserved: Micros,
    /// The core on `node` that made the bid and holds its reservation.
    pub core: u16,
}

impl VerifiedNotice {
    /// The event this notice becomes (made on `core` at `now_unix_ns`). `node` is the bidding
    /// node from the signed notice.
    pub fn to_event(&self, core: u16, now_unix_ns: u64) -> Event {
        let mut e = Event::new(self.kind.event_kind());
        e.core = core;
        e.event_id = self.event_id;
        e.trace_id = self.trace_id;
        e.ts_unix_ns = now_unix_ns;
        e.bid_ts_unix_ns = self.bid_ts_unix_ns;
        e.node = self.node;
        e.exchange = self.exchange;
        e.request_id = self.request_id;
        e.imp_id = self.imp_id;
        e.advertiser_id = self.advertiser_id;
        e.campaign_id = self.campaign_id;
        e.creative_id = self.creative_id;
        e.bid_price_micros = self.bid_price.0;
        e.clear_price_micros = self.price.map_or(0, |p| p.0);
        e.currency = self.currency;
        e.country = self.country;
        e.device_type = self.device_type;
        e.site_or_app = self.site_or_app;
        e.user_id = self.user_id;
        e.reason = self.loss_reason;
        if self.late {
            e.flags |= flags::LATE;
        }
        e
    }
}

/// Creative-markup macro replaced by the impression's signed click URL as it is (for JavaScript,
/// VAST `<ClickTracking>` in CDATA, native JSON).
pub const CLICK_URL_MACRO: &str = "${HELIOS_CLICK_URL}";
/// The same URL escaped for an HTML attribute (`&` → `&amp;`), e.g. `<a href=… ping="…">`.
pub const CLICK_URL_HTML_MACRO: &str = "${HELIOS_CLICK_URL_HTML}";
/// The same URL percent-encoded, to pass as a parameter to another click redirector.
pub const CLICK_URL_ENC_MACRO: &str = "${HELIOS_CLICK_URL_ENC}";

/// Whether creative markup asks for a click URL (any of the click macros).
pub fn has_click_macro(adm: &str) -> bool {
    adm.contains("${HELIOS_CLICK_URL")
}

/// Appends `adm` to `out` with every click macro replaced by `click_url` in the macro's form
/// (see [`CLICK_URL_MACRO`]); other text, including the exchange's `${…}` macros, is copied as
/// it is. No allocation once `out` has the room.
pub fn expand_click_macros(adm: &str, click_url: &[u8], out: &mut Vec<u8>) {
    expand_click_macros_bytes(adm.as_bytes(), click_url, out);
}

/// [`expand_click_macros`] over bytes: also for markup already escaped for a JSON string (the
/// macros hold no character JSON escapes, and the expansion of a JSON-safe URL is JSON-safe in
/// every form).
pub fn expand_click_macros_bytes(adm: &[u8], click_url: &[u8], out: &mut Vec<u8>) {
    const PREFIX: &[u8] = b"${HELIOS_CLICK_URL";
    let mut rest = adm;
    while let Some(at) = find(rest, PREFIX) {
        out.extend_from_slice(&rest[..at]);
        let tail = &rest[at..];
        if let Some(t) = tail.strip_prefix(CLICK_URL_MACRO.as_bytes()) {
            out.extend_from_slice(click_url);
            rest = t;
        } else if let Some(t) = tail.strip_prefix(CLICK_URL_HTML_MACRO.as_bytes()) {
            for &b in click_url {
                if b == b'&' {
                    out.extend_from_slice(b"&amp;");
                } else {
                    out.push(b);
                }
            }
            rest = t;
        } else if let Some(t) = tail.strip_prefix(CLICK_URL_ENC_MACRO.as_bytes()) {
            push_pct(out, click_url);
            rest = t;
        } else {
            // An unknown `${HELIOS_CLICK_URL…}`: copied as it is.
            out.push(b'$');
            rest = &tail[1..];
        }
    }
    out.extend_from_slice(rest);
}

/// First position of `needle` (non-empty) in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(p) = hay[from..].iter().position(|&b| b == first) {
        let at = from + p;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Signs notice URLs and verifies notices. Clone one per core.
#[derive(Clone)]
pub struct NoticeSigner {
    mac: HmacSha256,
    late_window_ns: u64,
    stats: NoticeStats,
}

impl std::fmt::Debug for NoticeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeSigner")
            .field("late_window_ns", &self.late_window_ns)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, b: &[u8]) {
    for &x in b {
        out.push(HEX[(x >> 4) as usize]);
        out.push(HEX[(x & 0xf) as usize]);
    }
}

fn push_pct(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(HEX[(b >> 4) as usize].to_ascii_uppercase());
            out.push(HEX[(b & 0xf) as usize].to_ascii_uppercase());
        }
    }
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// The signed parameters of a bid, all but the kind: `r=…&i=…&…&co=N` (see the module doc).
fn write_params(bid: &BidParams<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"r=");
    push_pct(out, bid.request_id.as_bytes());
    out.extend_from_slice(b"&i=");
    push_pct(out, bid.imp_id.as_bytes());
    out.extend_from_slice(b"&c=");
    push_u64(out, bid.campaign_id as u64);
    out.extend_from_slice(b"&cr=");
    push_u64(out, bid.creative_id as u64);
    out.extend_from_slice(b"&a=");
    push_u64(out, bid.advertiser_id as u64);
    out.extend_from_slice(b"&p=");
    push_u64(out, bid.bid_price.0.max(0) as u64);
    out.extend_from_slice(b"&cu=");
    push_pct(out, &bid.currency);
    out.extend_from_slice(b"&t=");
    push_u64(out, bid.bid_ts_unix_ns);
    out.extend_from_slice(b"&n=");
    push_pct(out, bid.node.as_bytes());
    out.extend_from_slice(b"&x=");
    push_pct(out, bid.exchange.as_bytes());
    out.extend_from_slice(b"&tr=");
    push_hex(out, &bid.trace_id);
    if bid.country != [0; 3] {
        out.extend_from_slice(b"&g=");
        push_pct(out, &bid.country);
    }
    if bid.device_type != 0 {
        out.extend_from_slice(b"&d=");
        push_u64(out, bid.device_type as u64);
    }
    if !bid.site_or_app.is_empty() {
        out.extend_from_slice(b"&st=");
        push_pct(out, bid.site_or_app.as_bytes());
    }
    if let Some(u) = bid.user_id.filter(|u| !u.is_empty()) {
        out.extend_from_slice(b"&u=");
        push_pct(out, u.as_bytes());
    }
    if bid.reserved.0 > 0 {
        out.extend_from_slice(b"&rv=");
        push_u64(out, bid.reserved.0 as u64);
    }
    out.extend_from_slice(b"&co=");
    push_u64(out, u64::from(bid.core));
}

/// Ends a URL whose parameters `mac` has absorbed: `&k=K` (signed), `&s=SIG`, the macros.
fn finish_url(mut mac: HmacSha256, kind: NoticeKind, out: &mut Vec<u8>) {
    let k = [b'&', b'k', b'=', kind.code()];
    out.extend_from_slice(&k);
    mac.update(&k);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(b"&s=");
    push_hex(out, &tag[..SIGNATURE_BYTES]);
    out.extend_from_slice(kind.macros());
}

/// One bid's notice parameters, encoded and absorbed into the keyed HMAC state once
/// ([`NoticeSigner::prepare`]); [`PreparedBid::write_url`] derives each kind's URL from it.
#[derive(Clone)]
pub struct PreparedBid<'s> {
    mac: HmacSha256,
    params: &'s [u8],
}

impl std::fmt::Debug for PreparedBid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedBid")
            .field("params_len", &self.params.len())
            .finish_non_exhaustive()
    }
}

impl PreparedBid<'_> {
    /// Appends the notice URL of `kind` to `out`: the same bytes, signature included, as
    /// [`NoticeSigner::write_url`] gives for the same bid.
    pub fn write_url(&self, kind: NoticeKind, base: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(base.as_bytes());
        out.push(if base.contains('?') { b'&' } else { b'?' });
        out.extend_from_slice(self.params);
        finish_url(self.mac.clone(), kind, out);
    }

    /// Bytes of the encoded parameters (the URL of a kind adds its base and ~100 bytes).
    pub fn params_len(&self) -> usize {
        self.params.len()
    }
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes into `buf`, returning the used prefix; `None` if malformed or too long.
fn pct_decode<'b>(s: &[u8], buf: &'b mut [u8]) -> Option<&'b str> {
    let mut n = 0;
    let mut i = 0;
    while i < s.len() {
        let b = match s[i] {
            b'%' => {
                let hi = unhex(*s.get(i + 1)?)?;
                let lo = unhex(*s.get(i + 2)?)?;
                i += 3;
                (hi << 4) | lo
            }
            b'+' => {
                i += 1;
                b' '
            }
            b => {
                i += 1;
                b
            }
        };
        *buf.get_mut(n)? = b;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// Parses a decimal CPM (`1.25`, `3`, `0.000001`) into micros without floats; digits past the
/// sixth decimal are cut. Refuses signs, exponents, and values above `codec::money::MAX_CPM_MICROS`.
pub fn parse_price(s: &[u8]) -> Option<Micros> {
    let (int, frac) = match s.iter().position(|&c| c == b'.') {
        Some(p) => (&s[..p], &s[p + 1..]),
        None => (s, &b""[..]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let units = if int.is_empty() { 0 } else { parse_u64(int)? };
    if !frac.iter().all(u8::is_ascii_digit) || frac.len() > 18 {
        return None;
    }
    let mut f: i64 = 0;
    for i in 0..6 {
        f = f * 10 + frac.get(i).map_or(0, |c| (c - b'0') as i64);
    }
    let m = i64::try_from(units)
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(f)?;
    (m <= codec::money::MAX_CPM_MICROS).then_some(Micros(m))
}

fn is_unsubstituted(v: &[u8]) -> bool {
    v.is_empty() || v.starts_with(b"${") || v.starts_with(b"%24%7B") || v.starts_with(b"%24%7b")
}

impl NoticeSigner {
    /// A signer with the given secret key (any length; 32 random bytes recommended).
    pub fn new(key: &[u8]) -> NoticeSigner {
        NoticeSigner {
            // HMAC accepts keys of any length, so this cannot fail.
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
            late_window_ns: DEFAULT_LATE_WINDOW.as_nanos() as u64,
            stats: NoticeStats::default(),
        }
    }

    /// Notices received more than `window` after the bid are accepted but flagged late.
    pub fn with_late_window(mut self, window: Duration) -> NoticeSigner {
        self.late_window_ns = window.as_nanos().min(u64::MAX as u128) as u64;
        self
    }

    /// This owner's counters.
    pub fn stats(&self) -> &NoticeStats {
        &self.stats
    }

    /// Appends the notice URL of `kind` for `bid` to `out` (the caller clears and reuses it;
    /// no allocation once it has the capacity). `base` is the notice route, e.g.
    /// `https://bid.example/notice/win`. For several kinds of one bid, [`NoticeSigner::prepare`]
    /// once and [`PreparedBid::write_url`] per kind costs less (the parameters are encoded and
    /// hashed once).
    pub fn write_url(&self, kind: NoticeKind, base: &str, bid: &BidParams<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(base.as_bytes());
        out.push(if base.contains('?') { b'&' } else { b'?' });
        let start = out.len();
        write_params(bid, out);
        let mut mac = self.mac.clone();
        mac.update(&out[start..]);
        finish_url(mac, kind, out);
    }

    /// Encodes `bid`'s signed parameters (all but the kind) into `scratch` (cleared; no
    /// allocation once it has the capacity) and absorbs them into a copy of the keyed HMAC
    /// state, so each kind's URL then costs a copy of the parameters and the last block or two
    /// of SHA-256 (the kind and the padding) plus the outer hash.
    pub fn prepare<'s>(&self, bid: &BidParams<'_>, scratch: &'s mut Vec<u8>) -> PreparedBid<'s> {
        scratch.clear();
        write_params(bid, scratch);
        let mut mac = self.mac.clone();
        mac.update(scratch);
        PreparedBid {
            mac,
            params: scratch,
        }
    }

    /// Checks a notice's query string (the bytes after `?`) received now (wall clock) on the
    /// `kind` route, and counts the outcome. See [`verify`](Self::verify).
    pub fn verify_now(
        &mut self,
        kind: NoticeKind,
        query: &[u8],
    ) -> Result<VerifiedNotice, NoticeError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.verify(kind, query, now)
    }

    /// Checks a notice's query string (the bytes after `?`) received on the `kind` route at
    /// `now_unix_ns`, and counts the outcome.
    pub fn verify(
        &mut self,
        kind: NoticeKind,
        query: &[u8],
        now_unix_ns: u64,
    ) -> Result<VerifiedNotice, NoticeError> {
        let r = self.check(kind, query, now_unix_ns);
        match &r {
            Ok(v) => {
                self.stats.accepted[kind.index()] += 1;
                if v.late {
                    self.stats.late += 1;
                }
            }
            Err(e) => self.stats.rejected[e.index()] += 1,
        }
        r
    }

    fn check(
        &self,
        kind: NoticeKind,
        query: &[u8],
        now_unix_ns: u64,
    ) -> Result<VerifiedNotice, NoticeError> {
        let query = query.strip_prefix(b"?").unwrap_or(query);
        if query.len() > 4096 {
            return Err(NoticeError::Malformed("query longer than 4 KiB"));
        }
        let sig_at = query
            .windows(3)
            .position(|w| w == b"&s=")
            .ok_or(NoticeError::Unsigned)?;
        let signed = &query[..sig_at];
        let rest = &query[sig_at + 3..];
        let sig_end = rest.iter().position(|&c| c == b'&').unwrap_or(rest.len());
        let sig_hex = &rest[..sig_end];
        let unsigned = &rest[sig_end..];
        if sig_hex.len() != SIGNATURE_BYTES * 2 {
            return Err(NoticeError::MalformedSignature);
        }
        let mut sig = [0u8; SIGNATURE_BYTES];
        for (i, pair) in sig_hex.chunks_exact(2).enumerate() {
            let hi = unhex(pair[0]).ok_or(NoticeError::MalformedSignature)?;
            let lo = unhex(pair[1]).ok_or(NoticeError::MalformedSignature)?;
            sig[i] = (hi << 4) | lo;
        }
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_truncated_left(&sig)
            .map_err(|_| NoticeError::BadSignature)?;

        // Signed, so ours: parse strictly.
        let mut v = VerifiedNotice {
            kind,
            event_id: [0; 16],
            trace_id: [0; 16],
            request_id: InlineStr::empty(),
            imp_id: InlineStr::empty(),
            campaign_id: 0,
            creative_id: 0,
            advertiser_id: 0,
            bid_price: Micros(0),
            currency: [0; 3],
            bid_ts_unix_ns: 0,
            node: InlineStr::empty(),
            exchange: InlineStr::empty(),
            country: [0; 3],
            device_type: 0,
            site_or_app: InlineStr::empty(),
            user_id: InlineStr::empty(),
            price: None,
            loss_reason: 0,
            late: false,
            reserved: Micros(0),
            core: 0,
        };
        let mut seen_kind = None;
        let mut buf = [0u8; 256];
        let bad = NoticeError::Malformed;
        for pair in signed.split(|&c| c == b'&') {
            let eq = pair
                .iter()
                .position(|&c| c == b'=')
                .ok_or(bad("param without ="))?;
            let (k, val) = (&pair[..eq], &pair[eq + 1..]);
            let u32v = |s: &[u8]| {
                parse_u64(s)
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or(bad("number"))
            };
            match k {
                b"k" => seen_kind = val.first().copied(),
                b"r" => v.request_id = InlineStr::new(pct_decode(val, &mut buf).ok_or(bad("r"))?),
                b"i" => v.imp_id = InlineStr::new(pct_decode(val, &mut buf).ok_or(bad("i"))?),
                b"c" => v.campaign_id = u32v(val)?,
                b"cr" => v.creative_id = u32v(val)?,
                b"a" => v.advertiser_id = u32v(val)?,
                b"p" => {
                    let p = parse_u64(val).ok_or(bad("p"))?;
                    v.bid_price = Micros(i64::try_from(p).map_err(|_| bad("p"))?);
                }
                b"cu" | b"g" => {
                    let s = pct_decode(val, &mut buf).ok_or(bad("code"))?.as_bytes();
                    let code: [u8; 3] = s.try_into().map_err(|_| bad("3-letter code"))?;
                    if k == b"cu" {
                        v.currency = code;
                    } else {
                        v.country = code;
                    }
                }
                b"t" => v.bid_ts_unix_ns = parse_u64(val).ok_or(bad("t"))?,
                b"n" => v.node = InlineStr::new(pct_decode(val, &mut buf).ok_or(bad("n"))?),
                b"x" => v.exchange = InlineStr::new(pct_decode(val, &mut buf).ok_or(bad("x"))?),
                b"tr" => {
                    if val.len() != 32 {
                        return Err(bad("tr"));
                    }
                    for (i, pair) in val.chunks_exact(2).enumerate() {
                        let hi = unhex(pair[0]).ok_or(bad("tr"))?;
                        let lo = unhex(pair[1]).ok_or(bad("tr"))?;
                        v.trace_id[i] = (hi << 4) | lo;
                    }
                }
                b"d" => {
                    v.device_type = parse_u64(val)
                        .and_then(|x| u8::try_from(x).ok())
                        .ok_or(bad("d"))?
                }
                b"st" => {
                    v.site_or_app = InlineStr::new(pct_decode(val, &mut buf).ok_or(bad("st"))?)
                }
                b"u" => v.user_id = InlineStr::new(pct_decode(val, &mut buf).ok_or(bad("u"))?),
                b"rv" => {
                    let r = parse_u64(val).ok_or(bad("rv"))?;
                    v.reserved = Micros(i64::try_from(r).map_err(|_| bad("rv"))?);
                }
                b"co" => {
                    v.core = parse_u64(val)
                        .and_then(|x| u16::try_from(x).ok())
                        .ok_or(bad("co"))?
                }
                _ => return Err(bad("unknown signed param")),
            }
        }
        if seen_kind != Some(kind.code()) {
            return Err(NoticeError::KindMismatch);
        }
        if v.campaign_id == 0 || v.currency == [0; 3] {
            return Err(bad("campaign or currency missing"));
        }

        // The exchange's macros: untrusted, checked.
        let (mut ap, mut cur, mut al, mut amw) = (None, None, None, None);
        for pair in unsigned.split(|&c| c == b'&').filter(|p| !p.is_empty()) {
            let eq = pair.iter().position(|&c| c == b'=').unwrap_or(pair.len());
            let (k, val) = (&pair[..eq], pair.get(eq + 1..).unwrap_or_default());
            match k {
                b"ap" => ap = Some(val),
                b"cur" => cur = Some(val),
                b"al" => al = Some(val),
                b"amw" => amw = Some(val),
                _ => {} // aid, aiid and anything an exchange adds: informational.
            }
        }
        match kind {
            NoticeKind::Win | NoticeKind::Billing => {
                let ap = ap
                    .filter(|a| !is_unsubstituted(a))
                    .ok_or(NoticeError::MissingPrice)?;
                let price = parse_price(ap).ok_or(NoticeError::BadPrice)?;
                if price > v.bid_price {
                    return Err(NoticeError::PriceAboveBid);
                }
                v.price = Some(price);
                if let Some(c) = cur.filter(|c| !is_unsubstituted(c))
                    && !c.eq_ignore_ascii_case(&v.currency)
                {
                    return Err(NoticeError::CurrencyMismatch);
                }
            }
            NoticeKind::Loss => {
                v.loss_reason = al
                    .filter(|a| !is_unsubstituted(a))
                    .and_then(parse_u64)
                    .and_then(|x| u16::try_from(x).ok())
                    .unwrap_or(0);
                v.price = amw.filter(|a| !is_unsubstituted(a)).and_then(parse_price);
            }
            NoticeKind::Click => {}
        }
        v.late = now_unix_ns.saturating_sub(v.bid_ts_unix_ns) > self.late_window_ns;
        v.event_id = notice_event_id(v.bid_ts_unix_ns, signed);
        Ok(v)
    }
}

/// A notice's event id: `bid_ts_unix_ns` big-endian (8 bytes), then the first 8 bytes of
/// SHA-256(`helios-notice-v2` ‖ `signed`) — see the module doc. Deterministic: the same signed
/// notice always has the same id.
pub fn notice_event_id(bid_ts_unix_ns: u64, signed: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"helios-notice-v2");
    h.update(signed);
    let d = h.finalize();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&bid_ts_unix_ns.to_be_bytes());
    id[8..].copy_from_slice(&d[..8]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_150_000_000_000_000;

    fn bid() -> BidParams<'static> {
        BidParams {
            request_id: "req 1/α",
            imp_id: "1",
            campaign_id: 42,
            creative_id: 7,
            advertiser_id: 3,
            bid_price: Micros(2_500_000),
            currency: *b"USD",
            bid_ts_unix_ns: NOW - 1_000_000_000,
            node: "node-a",
            exchange: "adx",
            trace_id: [0xab; 16],
            country: *b"USA",
            device_type: 2,
            site_or_app: "news.example",
            user_id: Some("user-9"),
            reserved: Micros(2_600),
            core: 3,
        }
    }

    fn url(s: &NoticeSigner, kind: NoticeKind) -> String {
        let mut out = Vec::new();
        s.write_url(kind, "http://127.0.0.1:8080/notice/win", &bid(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn query(url: &str) -> String {
        url.split_once('?').unwrap().1.to_string()
    }

    /// What an exchange does: replace the macros.
    fn fill(q: &str, price: &str) -> String {
        q.replace("${AUCTION_PRICE}", price)
            .replace("${AUCTION_CURRENCY}", "USD")
            .replace("${AUCTION_ID}", "auc-1")
            .replace("${AUCTION_IMP_ID}", "1")
            .replace("${AUCTION_LOSS}", "102")
            .replace("${AUCTION_MIN_TO_WIN}", "2.61")
    }

    #[test]
    fn reservation_and_core_are_signed_and_read_back() {
        let mut s = NoticeSigner::new(b"secret");
        let q = fill(&query(&url(&s, NoticeKind::Billing)), "2.1");
        let v = s.verify(NoticeKind::Billing, q.as_bytes(), NOW).unwrap();
        assert_eq!((v.reserved, v.core), (Micros(2_600), 3));
        // Raising the reservation (or moving it to another core) breaks the signature.
        for forged in [
            q.replace("&rv=2600", "&rv=9999"),
            q.replace("&co=3", "&co=1"),
        ] {
            assert_eq!(
                s.verify(NoticeKind::Billing, forged.as_bytes(), NOW),
                Err(NoticeError::BadSignature)
            );
        }
        // A bid without a reservation carries no `rv` and reads back as 0.
        let mut b = bid();
        b.reserved = Micros(0);
        let mut out = Vec::new();
        s.write_url(NoticeKind::Loss, "http://h/notice/loss", &b, &mut out);
        let u = String::from_utf8(out).unwrap();
        assert!(!u.contains("&rv="));
        let v = s
            .verify(NoticeKind::Loss, fill(&query(&u), "2").as_bytes(), NOW)
            .unwrap();
        assert_eq!((v.reserved, v.core), (Micros(0), 3));
    }

    #[test]
    fn url_has_our_params_signature_and_macros() {
        let s = NoticeSigner::new(b"secret");
        let u = url(&s, NoticeKind::Win);
        assert!(u.starts_with("http://127.0.0.1:8080/notice/win?r=req%201%2F%CE%B1&i=1&c=42"));
        assert!(u.contains("&co=3&k=w&s="), "{u}");
        assert!(u.contains("&p=2500000&cu=USD&"));
        assert!(u.contains("&u=user-9&rv=2600&co=3&k=w&s="));
        assert!(u.contains("${AUCTION_PRICE}") && u.contains("${AUCTION_ID}"));
        assert!(url(&s, NoticeKind::Loss).contains("${AUCTION_LOSS}"));
        assert!(url(&s, NoticeKind::Loss).contains("${AUCTION_MIN_TO_WIN}"));
        let sig = u.split("&s=").nth(1).unwrap().split('&').next().unwrap();
        assert_eq!(sig.len(), 32);
    }

    #[test]
    fn a_genuine_win_verifies_and_becomes_an_event() {
        let mut s = NoticeSigner::new(b"secret");
        let q = fill(&query(&url(&s, NoticeKind::Win)), "1.75");
        let v = s.verify(NoticeKind::Win, q.as_bytes(), NOW).unwrap();
        assert_eq!(v.request_id.as_str(), "req 1/α");
        assert_eq!(v.campaign_id, 42);
        assert_eq!(v.price, Some(Micros(1_750_000)));
        assert_eq!(v.user_id.as_str(), "user-9");
        assert!(!v.late);
        let e = v.to_event(3, NOW);
        assert_eq!(e.kind, EventKind::Win);
        assert_eq!(e.clear_price_micros, 1_750_000);
        assert_eq!(e.bid_price_micros, 2_500_000);
        assert_eq!(e.trace_id, [0xab; 16]);
        assert_eq!(e.country, *b"USA");
        assert_eq!(e.site_or_app.as_str(), "news.example");
        assert_eq!(e.core, 3);
        assert_eq!(e.flags & flags::LATE, 0);
        assert_eq!(s.stats().accepted_for(NoticeKind::Win), 1);
    }

    #[test]
    fn forged_notices_are_rejected_and_counted() {
        let genuine = NoticeSigner::new(b"secret");
        let mut s = NoticeSigner::new(b"secret");
        let q = fill(&query(&url(&genuine, NoticeKind::Win)), "1");
        // Signed with another key.
        let other = NoticeSigner::new(b"not-the-key");
        let forged = fill(&query(&url(&other, NoticeKind::Win)), "1");
        assert_eq!(
            s.verify(NoticeKind::Win, forged.as_bytes(), NOW),
            Err(NoticeError::BadSignature)
        );
        // No signature at all.
        let unsigned = q.split("&s=").next().unwrap().to_string() + "&ap=1";
        assert_eq!(
            s.verify(NoticeKind::Win, unsigned.as_bytes(), NOW),
            Err(NoticeError::Unsigned)
        );
        // A signature of the wrong shape.
        let short = q.replacen("&s=", "&s=zz", 1);
        assert_eq!(
            s.verify(NoticeKind::Win, short.as_bytes(), NOW),
            Err(NoticeError::MalformedSignature)
        );
        assert_eq!(s.stats().rejected_for(NoticeError::BadSignature), 1);
        assert_eq!(s.stats().rejected_for(NoticeError::Unsigned), 1);
        assert_eq!(s.stats().rejected_for(NoticeError::MalformedSignature), 1);
        assert_eq!(s.stats().accepted_for(NoticeKind::Win), 0);
    }

    /// A bid's URLs derived from one prepared state are byte for byte the URLs signed one by
    /// one, each verifies on its own route only, and a signature moved from one kind's URL to
    /// another's (or to another bid's) is refused.
    #[test]
    fn prepared_urls_equal_single_urls_and_stay_bound_to_their_kind() {
        let mut s = NoticeSigner::new(b"secret");
        let mut scratch = Vec::new();
        let p = s.prepare(&bid(), &mut scratch);
        let mut sigs = Vec::new();
        for kind in NoticeKind::ALL {
            let base = "http://127.0.0.1:8080/notice/win";
            let mut one = Vec::new();
            s.write_url(kind, base, &bid(), &mut one);
            let mut derived = Vec::new();
            p.write_url(kind, base, &mut derived);
            assert_eq!(one, derived, "{kind:?}");
            let u = String::from_utf8(derived).unwrap();
            sigs.push(u.split("&s=").nth(1).unwrap()[..32].to_string());
        }
        // Four kinds, four different signatures.
        let mut uniq = sigs.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 4);
        let win = fill(&query(&url(&s, NoticeKind::Win)), "1");
        assert!(s.verify(NoticeKind::Win, win.as_bytes(), NOW).is_ok());
        for other in [NoticeKind::Billing, NoticeKind::Loss, NoticeKind::Click] {
            // The win URL on another route: its signed kind says win.
            assert_eq!(
                s.verify(other, win.as_bytes(), NOW),
                Err(NoticeError::KindMismatch)
            );
            // The win URL relabelled as another kind, keeping the win signature.
            let code = match other {
                NoticeKind::Billing => "&k=b",
                NoticeKind::Loss => "&k=l",
                _ => "&k=c",
            };
            let relabelled = win.replacen("&k=w", code, 1);
            assert_eq!(
                s.verify(other, relabelled.as_bytes(), NOW),
                Err(NoticeError::BadSignature)
            );
        }
        // Another bid's signature on this bid's parameters.
        let mut b2 = bid();
        b2.bid_price = Micros(9_000_000);
        let mut out = Vec::new();
        s.write_url(NoticeKind::Win, "http://h/notice/win", &b2, &mut out);
        let other_sig =
            String::from_utf8(out).unwrap().split("&s=").nth(1).unwrap()[..32].to_string();
        let spliced = win.replacen(&sigs[0], &other_sig, 1);
        assert_eq!(
            s.verify(NoticeKind::Win, spliced.as_bytes(), NOW),
            Err(NoticeError::BadSignature)
        );
    }

    /// URLs signed in the earlier layout (`k=` first) still verify: verification hashes the
    /// bytes before `&s=` whatever their order.
    #[test]
    fn urls_of_the_earlier_layout_still_verify() {
        let mut s = NoticeSigner::new(b"secret");
        let u = url(&s, NoticeKind::Billing);
        let q = query(&u);
        let signed = q.split("&s=").next().unwrap();
        let params = signed.strip_suffix("&k=b").unwrap();
        let old_signed = format!("k=b&{params}");
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(old_signed.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut hex = Vec::new();
        push_hex(&mut hex, &tag[..SIGNATURE_BYTES]);
        let old = format!(
            "{old_signed}&s={}{}",
            String::from_utf8(hex).unwrap(),
            String::from_utf8_lossy(NoticeKind::Billing.macros())
        );
        let v = s
            .verify(NoticeKind::Billing, fill(&old, "2").as_bytes(), NOW)
            .unwrap();
        assert_eq!((v.campaign_id, v.reserved), (42, Micros(2_600)));
    }

    #[test]
    fn altered_params_are_rejected() {
        let mut s = NoticeSigner::new(b"secret");
        let q = fill(&query(&url(&s, NoticeKind::Billing)), "1");
        for (from, to) in [
            ("&p=2500000", "&p=9500000"),
            ("&c=42", "&c=43"),
            ("&u=user-9", "&u=user-8"),
            ("k=b", "k=w"),
        ] {
            assert!(q.contains(from), "{from}");
            let altered = q.replacen(from, to, 1);
            let kind = if to == "k=w" {
                NoticeKind::Win
            } else {
                NoticeKind::Billing
            };
            assert_eq!(
                s.verify(kind, altered.as_bytes(), NOW),
                Err(NoticeError::BadSignature),
                "{from} → {to}"
            );
        }
        // A genuine billing URL presented on the win route.
        assert_eq!(
            s.verify(NoticeKind::Win, q.as_bytes(), NOW),
            Err(NoticeError::KindMismatch)
        );
        assert_eq!(s.stats().rejected_for(NoticeError::BadSignature), 4);
        assert_eq!(s.stats().rejected_for(NoticeError::KindMismatch), 1);
    }

    #[test]
    fn price_above_bid_missing_or_unreadable_and_currency_are_checked() {
        let mut s = NoticeSigner::new(b"secret");
        let q = query(&url(&s, NoticeKind::Win));
        let above = fill(&q, "2.500001");
        assert_eq!(
            s.verify(NoticeKind::Win, above.as_bytes(), NOW),
            Err(NoticeError::PriceAboveBid)
        );
        let equal = fill(&q, "2.5");
        assert!(s.verify(NoticeKind::Win, equal.as_bytes(), NOW).is_ok());
        let unfilled = q.clone();
        assert_eq!(
            s.verify(NoticeKind::Win, unfilled.as_bytes(), NOW),
            Err(NoticeError::MissingPrice)
        );
        let garbage = fill(&q, "AAABBBencrypted==");
        assert_eq!(
            s.verify(NoticeKind::Win, garbage.as_bytes(), NOW),
            Err(NoticeError::BadPrice)
        );
        let eur = fill(&q, "1").replace("cur=USD", "cur=EUR");
        assert_eq!(
            s.verify(NoticeKind::Win, eur.as_bytes(), NOW),
            Err(NoticeError::CurrencyMismatch)
        );
        assert_eq!(s.stats().rejected_for(NoticeError::PriceAboveBid), 1);
        assert_eq!(s.stats().rejected_for(NoticeError::MissingPrice), 1);
        assert_eq!(s.stats().rejected_for(NoticeError::BadPrice), 1);
        assert_eq!(s.stats().rejected_for(NoticeError::CurrencyMismatch), 1);
    }

    #[test]
    fn late_notices_are_accepted_but_flagged() {
        let mut s = NoticeSigner::new(b"secret").with_late_window(Duration::from_secs(60));
        let q = fill(&query(&url(&s, NoticeKind::Billing)), "1");
        let on_time = s.verify(NoticeKind::Billing, q.as_bytes(), NOW).unwrap();
        assert!(!on_time.late);
        let late = s
            .verify(NoticeKind::Billing, q.as_bytes(), NOW + 61_000_000_000)
            .unwrap();
        assert!(late.late);
        assert_ne!(late.to_event(0, NOW).flags & flags::LATE, 0);
        assert_eq!(s.stats().late, 1);
        assert_eq!(s.stats().accepted_for(NoticeKind::Billing), 2);
    }

    #[test]
    fn replayed_notices_have_the_same_event_id() {
        let mut s = NoticeSigner::new(b"secret");
        let wq = query(&url(&s, NoticeKind::Win));
        let bq = query(&url(&s, NoticeKind::Billing));
        let w1 = s
            .verify(NoticeKind::Win, fill(&wq, "1").as_bytes(), NOW)
            .unwrap();
        // The same win notice again, even with another price filled in: same id.
        let w2 = s
            .verify(NoticeKind::Win, fill(&wq, "1.2").as_bytes(), NOW + 5)
            .unwrap();
        assert_eq!(w1.event_id, w2.event_id);
        // The billing notice of the same bid is another event.
        let b = s
            .verify(NoticeKind::Billing, fill(&bq, "1").as_bytes(), NOW)
            .unwrap();
        assert_ne!(b.event_id, w1.event_id);
        // Another bid is another event.
        let mut other = Vec::new();
        let mut p = bid();
        p.request_id = "req-2";
        s.write_url(NoticeKind::Win, "http://h/notice/win", &p, &mut other);
        let o = String::from_utf8(other).unwrap();
        let o = s
            .verify(NoticeKind::Win, fill(&query(&o), "1").as_bytes(), NOW)
            .unwrap();
        assert_ne!(o.event_id, w1.event_id);
    }

    #[test]
    fn notice_ids_lead_with_the_bid_time_so_they_sort_by_it() {
        let mut s = NoticeSigner::new(b"secret");
        let mut ids = Vec::new();
        for (i, t) in [
            1_764_000_000_000_000_000u64,
            1_764_000_000_000_000_001,
            1_764_000_100_000_000_000,
        ]
        .into_iter()
        .enumerate()
        {
            let mut p = bid();
            p.bid_ts_unix_ns = t;
            p.request_id = ["req-0", "req-1", "req-2"][i];
            for kind in [NoticeKind::Win, NoticeKind::Billing] {
                let mut out = Vec::new();
                s.write_url(kind, "http://h/notice/x", &p, &mut out);
                let q = query(&String::from_utf8(out).unwrap());
                let v = s.verify(kind, fill(&q, "1").as_bytes(), NOW).unwrap();
                assert_eq!(v.event_id[..8], t.to_be_bytes(), "bid time first");
                ids.push(v.event_id);
            }
        }
        // Later bids' notices sort after earlier ones'; no two are equal.
        assert!(ids[1] != ids[0] && ids[3] != ids[2] && ids[5] != ids[4]);
        assert!(ids[0].max(ids[1]) < ids[2].min(ids[3]));
        assert!(ids[2].max(ids[3]) < ids[4].min(ids[5]));
        // The documented layout, recomputed.
        assert_eq!(notice_event_id(7, b"a=1"), notice_event_id(7, b"a=1"));
        assert_ne!(
            notice_event_id(7, b"a=1")[8..],
            notice_event_id(7, b"a=2")[8..]
        );
    }

    #[test]
    fn loss_notices_carry_reason_and_min_to_win() {
        let mut s = NoticeSigner::new(b"secret");
        let q = fill(&query(&url(&s, NoticeKind::Loss)), "");
        let v = s.verify(NoticeKind::Loss, q.as_bytes(), NOW).unwrap();
        assert_eq!(v.loss_reason, 102);
        assert_eq!(v.price, Some(Micros(2_610_000)));
        let e = v.to_event(0, NOW);
        assert_eq!(e.kind, EventKind::Loss);
        assert_eq!(e.reason, 102);
    }

    #[test]
    fn no_user_without_consent() {
        let mut s = NoticeSigner::new(b"secret");
        let mut p = bid();
        p.user_id = None;
        let mut out = Vec::new();
        s.write_url(NoticeKind::Billing, "http://h/n", &p, &mut out);
        let u = String::from_utf8(out).unwrap();
        assert!(!u.contains("&u="));
        let v = s
            .verify(NoticeKind::Billing, fill(&query(&u), "1").as_bytes(), NOW)
            .unwrap();
        assert_eq!(v.user_id.as_str(), "");
    }

    #[test]
    fn routes_name_their_kind() {
        assert_eq!(NoticeKind::from_route("/notice/win"), Some(NoticeKind::Win));
        assert_eq!(
            NoticeKind::from_route("/notice/billing"),
            Some(NoticeKind::Billing)
        );
        assert_eq!(
            NoticeKind::from_route("/notice/loss"),
            Some(NoticeKind::Loss)
        );
        assert_eq!(
            NoticeKind::from_route("/notice/click"),
            Some(NoticeKind::Click)
        );
        assert_eq!(NoticeKind::from_route("/notice/other"), None);
    }

    #[test]
    fn verify_uses_the_wall_clock() {
        let mut s = NoticeSigner::new(b"secret").with_late_window(Duration::from_secs(60));
        let mut p = bid();
        p.bid_ts_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let mut out = Vec::new();
        s.write_url(NoticeKind::Win, "http://h/notice/win", &p, &mut out);
        let q = fill(&query(&String::from_utf8(out).unwrap()), "1");
        assert!(!s.verify_now(NoticeKind::Win, q.as_bytes()).unwrap().late);
    }

    #[test]
    fn prices_parse_without_floats() {
        assert_eq!(parse_price(b"1.25"), Some(Micros(1_250_000)));
        assert_eq!(parse_price(b"3"), Some(Micros(3_000_000)));
        assert_eq!(parse_price(b"0.000001"), Some(Micros(1)));
        assert_eq!(parse_price(b".5"), Some(Micros(500_000)));
        assert_eq!(parse_price(b"1.2345678"), Some(Micros(1_234_567)));
        for bad in [
            &b""[..],
            b".",
            b"-1",
            b"1e3",
            b"1.2.3",
            b"abc",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_price(bad), None, "{:?}", std::str::from_utf8(bad));
        }
    }

    #[test]
    fn hostile_queries_never_panic() {
        let mut s = NoticeSigner::new(b"secret");
        let q = fill(&query(&url(&s, NoticeKind::Win)), "1");
        let bytes = q.as_bytes();
        // Every prefix, and every single-byte corruption of the genuine query.
        for i in 0..bytes.len() {
            let _ = s.verify(NoticeKind::Win, &bytes[..i], NOW);
            let mut b = bytes.to_vec();
            b[i] ^= 0x5a;
            let _ = s.verify(NoticeKind::Win, &b, NOW);
        }
        let total: u64 =
            s.stats().rejected.iter().sum::<u64>() + s.stats().accepted.iter().sum::<u64>();
        assert_eq!(total, 2 * bytes.len() as u64);
    }

    #[test]
    fn building_a_url_does_not_allocate_into_a_warm_buffer() {
        let s = NoticeSigner::new(b"secret");
        let mut out = Vec::with_capacity(1024);
        s.write_url(NoticeKind::Win, "http://h/notice/win", &bid(), &mut out);
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        for _ in 0..100 {
            out.clear();
            s.write_url(
                NoticeKind::Billing,
                "http://h/notice/billing",
                &bid(),
                &mut out,
            );
        }
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
    }

    #[test]
    fn click_macros_expand_in_each_form_and_the_url_verifies() {
        let mut s = NoticeSigner::new(b"k");
        let mut click = Vec::new();
        s.write_url(
            NoticeKind::Click,
            "http://h:1/notice/click",
            &bid(),
            &mut click,
        );
        let adm = "<a href=\"https://shop.example/\" ping=\"${HELIOS_CLICK_URL_HTML}\">\
                   <img src=\"x\"></a><script>t('${HELIOS_CLICK_URL}')</script>\
                   r?u=${HELIOS_CLICK_URL_ENC}&p=${AUCTION_PRICE} ${HELIOS_CLICK_URL_X}";
        assert!(has_click_macro(adm));
        assert!(!has_click_macro("<img src=\"x\">"));
        let mut out = Vec::new();
        expand_click_macros(adm, &click, &mut out);
        let out = String::from_utf8(out).unwrap();
        let raw = std::str::from_utf8(&click).unwrap();
        assert!(out.contains(&format!("t('{raw}')")));
        assert!(out.contains(&format!("ping=\"{}\"", raw.replace('&', "&amp;"))));
        assert!(out.contains("r?u=http%3A%2F%2Fh%3A1%2Fnotice%2Fclick%3Fr%3Dreq%25201"));
        assert!(out.contains("%26co%3D3%26k%3Dc%26s%3D"), "{out}");
        assert!(
            out.contains("&p=${AUCTION_PRICE} ${HELIOS_CLICK_URL_X}"),
            "{out}"
        );
        // The HTML form, unescaped the way a browser does, is the signed click URL.
        let html = out
            .split("ping=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let back = html.replace("&amp;", "&");
        let q = back.split_once('?').unwrap().1;
        let v = s.verify(NoticeKind::Click, q.as_bytes(), NOW).unwrap();
        assert_eq!(v.campaign_id, 42);
        // Idempotent: the same click twice has the same event id.
        let v2 = s.verify(NoticeKind::Click, q.as_bytes(), NOW + 5).unwrap();
        assert_eq!(v.event_id, v2.event_id);
        assert_eq!(v.to_event(0, NOW).kind, EventKind::Click);
        // A billing URL is not a click URL.
        let b = url(&s, NoticeKind::Billing);
        let bq = b.split_once('?').unwrap().1;
        assert_eq!(
            s.verify(NoticeKind::Click, bq.as_bytes(), NOW),
            Err(NoticeError::KindMismatch)
        );
    }
}

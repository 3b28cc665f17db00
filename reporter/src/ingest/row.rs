//! One raw-event row, built from a decoded [`Event`]. Owned by the consumer task until the batch
//! is handed to the writer task. Never trusts the event: every field is bounded by the codec's
//! inline strings and fixed-size ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use codec::event::{Event, EventKind};

use crate::day;

/// Bytes of text a row holds inline: the event's inline strings at their capacities (node 32,
/// exchange 32, request id 64, impression id 32, site/app 64) and the two 3-letter codes.
/// `a_maximal_event_fits` fails if the codec's capacities grow past it.
const TEXT: usize = 32 + 32 + 64 + 32 + 64 + 3 + 3;
const _ENDS_FIT: () = assert!(TEXT <= u8::MAX as usize, "column ends are kept in a u8");

/// The text columns, in [`Row::text`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Node,
    Exchange,
    RequestId,
    ImpId,
    Currency,
    Country,
    SiteOrApp,
}

/// A raw event as stored in the `events` table (column order of the table). The seven text
/// columns live in one inline buffer (no allocation per row: they were seven `String`s, a third
/// of the decode's instructions) and are read through their accessors.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub day: i32,
    pub event_id: [u8; 16],
    pub kind: i16,
    pub flags: i16,
    pub reason: i32,
    pub core: i32,
    pub ts: SystemTime,
    pub bid_ts: Option<SystemTime>,
    pub trace_id: [u8; 16],
    pub advertiser_id: i64,
    pub campaign_id: i64,
    pub creative_id: i64,
    pub bid_price_micros: i64,
    pub clear_price_micros: i64,
    pub device_type: i16,
    /// The text columns back to back, `ends[c]` the end of column `c` ([`Col`] order).
    text: arrayvec::ArrayString<TEXT>,
    ends: [u8; 7],
}

fn time_of(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Three ASCII letters upper-cased, or "" (codes are letters; anything else is not a code).
fn code3<'o>(b: &[u8; 3], out: &'o mut [u8; 3]) -> &'o str {
    if b.iter().all(|c| c.is_ascii_alphabetic()) {
        for (o, c) in out.iter_mut().zip(b) {
            *o = c.to_ascii_uppercase();
        }
        // ASCII letters only, checked above.
        std::str::from_utf8(out).unwrap_or("")
    } else {
        ""
    }
}

impl Row {
    /// The partition day: the bid time when the event has one (a repeated notice carries the
    /// same bid time, so it meets its first copy in the same partition), else the event time.
    pub fn partition_day(e: &Event) -> i32 {
        let t = if e.bid_ts_unix_ns != 0 {
            e.bid_ts_unix_ns
        } else {
            e.ts_unix_ns
        };
        day::of_unix_ns(t)
    }

    pub fn from_event(e: &Event) -> Row {
        let (mut cur, mut cty) = ([0u8; 3], [0u8; 3]);
        let cols = [
            e.node.as_str(),
            e.exchange.as_str(),
            e.request_id.as_str(),
            e.imp_id.as_str(),
            code3(&e.currency, &mut cur),
            code3(&e.country, &mut cty),
            e.site_or_app.as_str(),
        ];
        let mut text = arrayvec::ArrayString::new();
        let mut ends = [0u8; 7];
        for (end, col) in ends.iter_mut().zip(cols) {
            // Cannot fail: every column is bounded by its inline string's capacity and TEXT is
            // their sum (`a_maximal_event_fits`); a column that did not fit would be left empty.
            let pushed = text.try_push_str(col);
            debug_assert!(pushed.is_ok(), "TEXT holds every column at its capacity");
            *end = text.len() as u8;
        }
        Row {
            day: Self::partition_day(e),
            event_id: e.event_id,
            kind: e.kind as u8 as i16,
            flags: e.flags as i16,
            reason: e.reason as i32,
            core: e.core as i32,
            ts: time_of(e.ts_unix_ns),
            bid_ts: (e.bid_ts_unix_ns != 0).then(|| time_of(e.bid_ts_unix_ns)),
            trace_id: e.trace_id,
            advertiser_id: e.advertiser_id as i64,
            campaign_id: e.campaign_id as i64,
            creative_id: e.creative_id as i64,
            bid_price_micros: e.bid_price_micros,
            clear_price_micros: e.clear_price_micros,
            device_type: e.device_type as i16,
            text,
            ends,
        }
    }

    fn text(&self, c: Col) -> &str {
        let i = c as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        // Ends were recorded after whole `&str` pushes: always char boundaries, in order.
        self.text.get(start..self.ends[i] as usize).unwrap_or("")
    }

    pub fn node(&self) -> &str {
        self.text(Col::Node)
    }

    pub fn exchange(&self) -> &str {
        self.text(Col::Exchange)
    }

    pub fn request_id(&self) -> &str {
        self.text(Col::RequestId)
    }

    pub fn imp_id(&self) -> &str {
        self.text(Col::ImpId)
    }

    /// ISO 4217 code upper-cased, or "".
    pub fn currency(&self) -> &str {
        self.text(Col::Currency)
    }

    /// ISO 3166-1 alpha-3 code upper-cased, or "".
    pub fn country(&self) -> &str {
        self.text(Col::Country)
    }

    pub fn site_or_app(&self) -> &str {
        self.text(Col::SiteOrApp)
    }

    pub fn is_kind(&self, k: EventKind) -> bool {
        self.kind == k as u8 as i16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::event::InlineStr;

    #[test]
    fn maps_fields_and_picks_the_bid_day() {
        let mut e = Event::new(EventKind::Billing);
        e.event_id = [3; 16];
        e.ts_unix_ns = 2 * day::NS_PER_DAY + 5;
        e.bid_ts_unix_ns = day::NS_PER_DAY * 2 - 1; // bid the day before, billed after midnight
        e.campaign_id = u32::MAX;
        e.country = *b"fra";
        e.currency = [0, 1, 2];
        e.site_or_app = InlineStr::new("app.example");
        let r = Row::from_event(&e);
        assert_eq!(r.day, 1);
        assert_eq!(r.campaign_id, u32::MAX as i64);
        assert_eq!(r.country(), "FRA");
        assert_eq!(r.currency(), "");
        assert_eq!(r.site_or_app(), "app.example");
        assert!(r.is_kind(EventKind::Billing));
        assert_eq!(r.bid_ts, Some(time_of(day::NS_PER_DAY * 2 - 1)));

        e.bid_ts_unix_ns = 0;
        assert_eq!(Row::from_event(&e).day, 2);
    }

    #[test]
    fn a_maximal_event_fits() {
        let long = "é".repeat(200); // two bytes a char: cut at a boundary below each capacity
        let mut e = Event::new(EventKind::Bid);
        e.node = InlineStr::new(&long);
        e.exchange = InlineStr::new(&long);
        e.request_id = InlineStr::new(&long);
        e.imp_id = InlineStr::new(&long);
        e.site_or_app = InlineStr::new(&long);
        e.currency = *b"usd";
        e.country = *b"Fra";
        let r = Row::from_event(&e);
        assert_eq!(r.node(), e.node.as_str());
        assert_eq!(r.exchange(), e.exchange.as_str());
        assert_eq!(r.request_id(), e.request_id.as_str());
        assert_eq!(r.imp_id(), e.imp_id.as_str());
        assert_eq!(r.site_or_app(), e.site_or_app.as_str());
        assert_eq!((r.currency(), r.country()), ("USD", "FRA"));
        assert!(!r.request_id().is_empty() && r.request_id().len() <= 64);

        let x = "x".repeat(300); // every column at its full capacity
        e.node = InlineStr::new(&x);
        e.exchange = InlineStr::new(&x);
        e.request_id = InlineStr::new(&x);
        e.imp_id = InlineStr::new(&x);
        e.site_or_app = InlineStr::new(&x);
        let r = Row::from_event(&e);
        assert_eq!(r.node().len() + r.exchange().len() + r.imp_id().len(), 96);
        assert_eq!(r.request_id().len() + r.site_or_app().len(), 128);
        assert_eq!(r.site_or_app(), e.site_or_app.as_str());
        assert_eq!(r.country(), "FRA");
    }
}

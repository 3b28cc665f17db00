//! One raw-event row, built from a decoded [`Event`]. Owned by the consumer task until the batch
//! is handed to the writer task. Never trusts the event: every field is bounded by the codec's
//! inline strings and fixed-size ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use codec::event::{Event, EventKind};

use crate::day;

/// A raw event as stored in the `events` table (column order of the table).
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
    pub node: String,
    pub exchange: String,
    pub request_id: String,
    pub imp_id: String,
    pub advertiser_id: i64,
    pub campaign_id: i64,
    pub creative_id: i64,
    pub bid_price_micros: i64,
    pub clear_price_micros: i64,
    pub currency: String,
    pub country: String,
    pub device_type: i16,
    pub site_or_app: String,
}

fn time_of(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Three ASCII letters, or "" (codes are upper-case letters; anything else is not a code).
fn code3(b: [u8; 3]) -> String {
    if b.iter().all(|c| c.is_ascii_alphabetic()) {
        b.iter().map(|&c| c.to_ascii_uppercase() as char).collect()
    } else {
        String::new()
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
            node: e.node.as_str().to_owned(),
            exchange: e.exchange.as_str().to_owned(),
            request_id: e.request_id.as_str().to_owned(),
            imp_id: e.imp_id.as_str().to_owned(),
            advertiser_id: e.advertiser_id as i64,
            campaign_id: e.campaign_id as i64,
            creative_id: e.creative_id as i64,
            bid_price_micros: e.bid_price_micros,
            clear_price_micros: e.clear_price_micros,
            currency: code3(e.currency),
            country: code3(e.country),
            device_type: e.device_type as i16,
            site_or_app: e.site_or_app.as_str().to_owned(),
        }
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
        assert_eq!(r.country, "FRA");
        assert_eq!(r.currency, "");
        assert!(r.is_kind(EventKind::Billing));
        assert_eq!(r.bid_ts, Some(time_of(day::NS_PER_DAY * 2 - 1)));

        e.bid_ts_unix_ns = 0;
        assert_eq!(Row::from_event(&e).day, 2);
    }
}

//! Folds one batch of *newly stored* events into rollup deltas in memory: one delta per rollup
//! key, however many events share it, so PostgreSQL gets one row per key per batch instead of
//! aggregating the batch itself. Owned by whoever prepares the batch (the blocking-pool thread
//! of [`super::prepare`], or the writer task when it folds a part again); a `Fold` lives for one
//! batch.
//!
//! Which (granularity, dimension) families are kept is [`FAMILIES`]: per-minute rows only for
//! the campaign total (minute × site is about one row per event and no dashboard view reads it), hour rows
//! for every dimension, day rows for the campaign total (a day per creative/site/country/device
//! is the sum of its 24 hour rows, summed by the API when asked). Test requests are never
//! folded; events without a campaign only count as no-bids.
//!
//! Keys borrow their text (site/app, country, exchange) from the batch's rows, which outlive
//! the fold: adding an event allocates nothing unless it opens a new key and the map must
//! grow. The maps hash with foldhash (SipHash was two thirds of the fold's instructions,
//! bench/RESULTS.md "Reporter", session 7). Its seed is random per process and varies per map
//! — foldhash's "minimal" DoS resistance; site/app names come from bid requests, so a crafted
//! stream could at worst slow one batch's fold (a map lives for one batch), never bidding.
//!
//! Must never: fold an event the raw insert did not store (the caller passes only those), or
//! allocate for an event whose keys are all open already.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use codec::event::EventKind;

use super::row::Row;
use super::writer::TEST_FLAG;

/// Rollup granularities (the `gran` column).
pub const MINUTE: i16 = 1;
pub const HOUR: i16 = 2;
pub const DAY: i16 = 3;

/// Rollup dimensions (the `dim` column).
pub const DIM_TOTAL: i16 = 0;
pub const DIM_CREATIVE: i16 = 1;
pub const DIM_SITE: i16 = 2;
pub const DIM_COUNTRY: i16 = 3;
pub const DIM_DEVICE: i16 = 4;

/// The (granularity, dimension) families the ingest writes. The API reads only these (day
/// figures per creative/site/country/device are summed from the hour rows).
pub const FAMILIES: &[(i16, i16)] = &[
    (MINUTE, DIM_TOTAL),
    (HOUR, DIM_TOTAL),
    (HOUR, DIM_CREATIVE),
    (HOUR, DIM_SITE),
    (HOUR, DIM_COUNTRY),
    (HOUR, DIM_DEVICE),
    (DAY, DIM_TOTAL),
];

/// Whether the ingest keeps rollup rows of `gran` for `dim`.
pub fn kept(gran: i16, dim: i16) -> bool {
    FAMILIES.contains(&(gran, dim))
}

/// Length of a granularity's bucket, seconds.
pub fn bucket_secs(gran: i16) -> i64 {
    match gran {
        MINUTE => 60,
        HOUR => 3600,
        _ => 86_400,
    }
}

/// The value of a dimension, kept compact in the key and rendered as text on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Val<'a> {
    Empty,
    Num(i64),
    Text(&'a str),
}

impl Val<'_> {
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_into(&mut s);
        s
    }

    /// Appends the rendered value to `out` (no allocation once `out` has room).
    pub fn render_into(&self, out: &mut String) {
        match self {
            Val::Empty => {}
            Val::Num(n) => out.push_str(itoa::Buffer::new().format(*n)),
            Val::Text(s) => out.push_str(s),
        }
    }
}

/// One rollup row's key, in the order of the table's primary key (so sorting by it locks rows
/// in the same order in every writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey<'a> {
    pub gran: i16,
    pub advertiser_id: i64,
    pub campaign_id: i64,
    pub dim: i16,
    /// Start of the bucket, Unix seconds.
    pub bucket: i64,
    pub val: Val<'a>,
}

/// What a batch adds to one rollup row. Money: sums of CPM prices in micros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub bids: i64,
    pub nobids: i64,
    pub wins: i64,
    pub losses: i64,
    pub impressions: i64,
    pub clicks: i64,
    pub bid_cpm_micros: i64,
    pub win_cpm_micros: i64,
    pub spend_cpm_micros: i64,
    /// Latest event time, Unix nanoseconds.
    pub last_ts_ns: u64,
}

impl Counters {
    fn of(r: &Row, ts_ns: u64) -> Counters {
        let mut c = Counters {
            last_ts_ns: ts_ns,
            ..Counters::default()
        };
        match r.kind {
            k if k == EventKind::Bid as u8 as i16 => {
                c.bids = 1;
                c.bid_cpm_micros = r.bid_price_micros;
            }
            k if k == EventKind::NoBid as u8 as i16 => c.nobids = 1,
            k if k == EventKind::Win as u8 as i16 => {
                c.wins = 1;
                c.win_cpm_micros = r.clear_price_micros;
            }
            k if k == EventKind::Billing as u8 as i16 => {
                c.impressions = 1;
                c.spend_cpm_micros = r.clear_price_micros;
            }
            k if k == EventKind::Loss as u8 as i16 => c.losses = 1,
            k if k == EventKind::Click as u8 as i16 => c.clicks = 1,
            _ => {}
        }
        c
    }

    fn add(&mut self, o: &Counters) {
        self.bids += o.bids;
        self.nobids += o.nobids;
        self.wins += o.wins;
        self.losses += o.losses;
        self.impressions += o.impressions;
        self.clicks += o.clicks;
        self.bid_cpm_micros += o.bid_cpm_micros;
        self.win_cpm_micros += o.win_cpm_micros;
        self.spend_cpm_micros += o.spend_cpm_micros;
        self.last_ts_ns = self.last_ts_ns.max(o.last_ts_ns);
    }
}

/// A no-bid rollup key (operators' view: by exchange and reason, every granularity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NobidKey<'a> {
    pub gran: i16,
    pub bucket: i64,
    pub exchange: &'a str,
    pub reason: i32,
}

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The deltas of one batch, keyed by text borrowed from its rows (`'a`).
#[derive(Debug, Default)]
pub struct Fold<'a> {
    rollups: Map<RollupKey<'a>, Counters>,
    nobids: Map<NobidKey<'a>, i64>,
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl<'a> Fold<'a> {
    pub fn with_capacity(events: usize) -> Fold<'a> {
        Fold {
            rollups: Map::with_capacity_and_hasher(events, Default::default()),
            nobids: Map::with_capacity_and_hasher(64, Default::default()),
        }
    }

    /// Adds one stored event. Test requests are left out.
    pub fn add(&mut self, r: &'a Row) {
        if r.flags & TEST_FLAG != 0 {
            return;
        }
        let ts_ns = unix_ns(r.ts);
        let secs = (ts_ns / 1_000_000_000) as i64;
        if r.kind == EventKind::NoBid as u8 as i16 {
            for gran in [MINUTE, HOUR, DAY] {
                let k = NobidKey {
                    gran,
                    bucket: secs - secs.rem_euclid(bucket_secs(gran)),
                    exchange: r.exchange(),
                    reason: r.reason,
                };
                *self.nobids.entry(k).or_default() += 1;
            }
        }
        if r.campaign_id == 0 {
            return;
        }
        let c = Counters::of(r, ts_ns);
        for &(gran, dim) in FAMILIES {
            let val = match dim {
                DIM_TOTAL => Val::Empty,
                DIM_CREATIVE => Val::Num(r.creative_id),
                DIM_SITE => Val::Text(r.site_or_app()),
                DIM_COUNTRY => Val::Text(r.country()),
                _ => Val::Num(r.device_type as i64),
            };
            let k = RollupKey {
                gran,
                advertiser_id: r.advertiser_id,
                campaign_id: r.campaign_id,
                dim,
                bucket: secs - secs.rem_euclid(bucket_secs(gran)),
                val,
            };
            self.rollups.entry(k).or_default().add(&c);
        }
    }

    /// Rollup deltas sorted by key.
    pub fn rollups(&self) -> Vec<(&RollupKey<'a>, &Counters)> {
        let mut v: Vec<_> = self.rollups.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// No-bid deltas sorted by key.
    pub fn nobids(&self) -> Vec<(&NobidKey<'a>, i64)> {
        let mut v: Vec<_> = self.nobids.iter().map(|(k, n)| (k, *n)).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    pub fn rollup_len(&self) -> usize {
        self.rollups.len()
    }

    pub fn nobid_len(&self) -> usize {
        self.nobids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Expected, RunConfig, generate};
    use std::collections::{BTreeMap, HashSet};

    fn rows_once(cfg: &RunConfig) -> (Vec<Row>, Expected) {
        let events = generate(cfg);
        let x = Expected::of(&events);
        let mut seen = HashSet::new();
        let rows = events
            .iter()
            .filter(|e| seen.insert(e.event_id))
            .map(Row::from_event)
            .collect();
        (rows, x)
    }

    #[test]
    fn every_family_adds_up_to_the_independent_totals() {
        let cfg = RunConfig::small(5, 3000, 1_700_000_000_000_000_000, 3 * 3_600_000_000_000);
        let (rows, x) = rows_once(&cfg);
        let mut f = Fold::with_capacity(rows.len());
        for r in &rows {
            f.add(r);
        }
        for &(gran, dim) in FAMILIES {
            let mut per: BTreeMap<u32, [i64; 7]> = BTreeMap::new();
            for (k, c) in f.rollups() {
                if (k.gran, k.dim) != (gran, dim) {
                    continue;
                }
                assert_eq!(k.bucket % bucket_secs(gran), 0);
                let e = per.entry(k.campaign_id as u32).or_default();
                let add = [
                    c.bids,
                    c.wins,
                    c.losses,
                    c.impressions,
                    c.clicks,
                    c.bid_cpm_micros,
                    c.spend_cpm_micros,
                ];
                for (a, v) in e.iter_mut().zip(add) {
                    *a += v;
                }
            }
            let want: BTreeMap<u32, [i64; 7]> = x
                .campaigns
                .iter()
                .map(|(id, t)| (*id, t.figures()))
                .collect();
            assert_eq!(per, want, "family gran {gran} dim {dim}");
        }
        for gran in [MINUTE, HOUR, DAY] {
            let mut per: BTreeMap<u16, i64> = BTreeMap::new();
            for (k, n) in f.nobids() {
                if k.gran == gran {
                    *per.entry(k.reason as u16).or_default() += n;
                }
            }
            assert_eq!(per, x.nobids, "no-bids gran {gran}");
        }
    }

    #[test]
    fn one_delta_per_key_and_sorted() {
        let cfg = RunConfig::small(9, 2000, 1_700_000_000_000_000_000, 600_000_000_000);
        let (rows, _) = rows_once(&cfg);
        let mut f = Fold::with_capacity(rows.len());
        for r in &rows {
            f.add(r);
        }
        let v = f.rollups();
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "strictly sorted");
        // 10 minutes of 6 campaigns: at most 11 minute buckets per campaign, far fewer rows
        // than events.
        let minutes = v.iter().filter(|(k, _)| k.gran == MINUTE).count();
        assert!(minutes <= 6 * 11, "{minutes} minute rows");
        assert!(
            v.len() < rows.len() / 4,
            "{} rows for {}",
            v.len(),
            rows.len()
        );
        assert!(v.iter().all(|(k, _)| kept(k.gran, k.dim)));
    }

    #[test]
    fn test_requests_are_not_folded() {
        let mut e = codec::event::Event::new(EventKind::Bid);
        e.campaign_id = 101;
        e.advertiser_id = 1;
        e.flags = codec::event::flags::TEST;
        let test = Row::from_event(&e);
        e.flags = 0;
        let real = Row::from_event(&e);
        let mut f = Fold::default();
        f.add(&test);
        assert_eq!((f.rollup_len(), f.nobid_len()), (0, 0));
        f.add(&real);
        assert_eq!(f.rollup_len(), FAMILIES.len());
    }
}

//! Synthetic event runs for tests, benchmarks and the dashboard's end-to-end test: a seeded,
//! deterministic generator of bid / no-bid / win / billing / loss / click events shaped like the
//! appliance's, with exchange-repeated notices (same event id), and [`Expected`], the totals a
//! correct ingest must report for them, computed here independently of the SQL.
//!
//! Not used by the serving path.

use std::collections::{BTreeMap, HashSet};

use codec::event::{Event, EventKind, InlineStr, flags};
use serde::Serialize;

/// splitmix64: small, seeded, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `permille / 1000`.
    pub fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }
    pub fn id(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        b
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// Bid requests (each makes a bid or a no-bid, and maybe outcomes).
    pub requests: u64,
    /// Advertiser ids are `first_advertiser..first_advertiser + advertisers`.
    pub first_advertiser: u32,
    pub advertisers: u32,
    pub campaigns_per_advertiser: u32,
    /// Events are spread uniformly over `[start_ns, start_ns + span_ns)`.
    pub start_ns: u64,
    pub span_ns: u64,
    /// Out of 1000 requests: no-bid.
    pub nobid_permille: u64,
    /// Out of 1000 bids: won (a billing notice follows every win; lost bids get a loss notice).
    pub win_permille: u64,
    /// Out of 1000 impressions: clicked.
    pub click_permille: u64,
    /// Out of 1000 notices: repeated by the exchange (same event id).
    pub repeat_permille: u64,
    /// Out of 1000 requests: a test request (`flags::TEST`, never counted).
    pub test_permille: u64,
    pub sites: u32,
    /// How sites are drawn: 0 uniformly over `sites`, else Zipf with this exponent (site `k`,
    /// counted from 1, has weight `1 / k^s`: a few sites take most requests, as in real
    /// traffic). One random draw per request either way.
    pub site_zipf: f64,
}

impl RunConfig {
    pub fn small(seed: u64, requests: u64, start_ns: u64, span_ns: u64) -> RunConfig {
        RunConfig {
            seed,
            requests,
            first_advertiser: 1,
            advertisers: 2,
            campaigns_per_advertiser: 3,
            start_ns,
            span_ns,
            nobid_permille: 300,
            win_permille: 250,
            click_permille: 50,
            repeat_permille: 100,
            test_permille: 10,
            sites: 20,
            site_zipf: 0.0,
        }
    }
}

/// Draws a site index in `0..n`: uniformly, or Zipf-distributed (see [`RunConfig::site_zipf`])
/// by a binary search of the cumulative weights, computed once.
#[derive(Debug)]
struct SitePicker {
    n: u64,
    /// Cumulative weights normalised to 1 (Zipf); empty for uniform.
    cdf: Vec<f64>,
}

impl SitePicker {
    fn new(n: u32, s: f64) -> SitePicker {
        let n = u64::from(n.max(1));
        let mut cdf = Vec::new();
        if s > 0.0 {
            let mut acc = 0.0;
            for k in 1..=n {
                acc += 1.0 / (k as f64).powf(s);
                cdf.push(acc);
            }
            for c in &mut cdf {
                *c /= acc;
            }
        }
        SitePicker { n, cdf }
    }

    fn pick(&self, rng: &mut Rng) -> u64 {
        if self.cdf.is_empty() {
            return rng.below(self.n);
        }
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (self.cdf.partition_point(|&c| c <= u) as u64).min(self.n - 1)
    }
}

/// Campaign id of advertiser `adv`'s `i`-th campaign: `adv * 100 + i + 1`.
pub fn campaign_id(adv: u32, i: u32) -> u32 {
    adv * 100 + i + 1
}

const COUNTRIES: [&[u8; 3]; 4] = [b"USA", b"FRA", b"DEU", b"GBR"];
const EXCHANGES: [&str; 2] = ["exa", "exb"];

/// Generates a run. Events come out in time order per request (bid, then its notices).
pub fn generate(cfg: &RunConfig) -> Vec<Event> {
    let mut rng = Rng::new(cfg.seed);
    let mut out = Vec::with_capacity((cfg.requests * 2) as usize);
    let sites = SitePicker::new(cfg.sites, cfg.site_zipf);
    for r in 0..cfg.requests {
        let ts = cfg.start_ns + cfg.span_ns * r / cfg.requests.max(1);
        let mut base = Event::new(EventKind::Bid);
        base.ts_unix_ns = ts;
        base.trace_id = rng.id();
        base.node = InlineStr::new("node-1");
        base.exchange = InlineStr::new(EXCHANGES[rng.below(2) as usize]);
        base.request_id = InlineStr::new(&format!("req-{}-{r}", cfg.seed));
        base.imp_id = InlineStr::new("1");
        base.country = *COUNTRIES[rng.below(4) as usize];
        base.device_type = [1u8, 2, 4][rng.below(3) as usize];
        base.site_or_app = InlineStr::new(&format!("site{}.example", sites.pick(&mut rng)));
        if rng.chance(cfg.test_permille) {
            base.flags |= flags::TEST;
        }
        if rng.chance(cfg.nobid_permille) {
            let mut e = base;
            e.kind = EventKind::NoBid;
            e.event_id = rng.id();
            e.reason = 1 + rng.below(12) as u16;
            out.push(e);
            continue;
        }
        let adv = cfg.first_advertiser + rng.below(cfg.advertisers as u64) as u32;
        let mut bid = base;
        bid.event_id = rng.id();
        bid.advertiser_id = adv;
        bid.campaign_id = campaign_id(adv, rng.below(cfg.campaigns_per_advertiser as u64) as u32);
        bid.creative_id = bid.campaign_id * 10 + rng.below(2) as u32;
        bid.bid_price_micros = 500_000 + rng.below(4_500_000) as i64;
        out.push(bid);
        let notice = |kind: EventKind, rng: &mut Rng, dt: u64| {
            let mut e = bid;
            e.kind = kind;
            e.event_id = rng.id();
            e.bid_ts_unix_ns = bid.ts_unix_ns;
            e.ts_unix_ns = bid.ts_unix_ns + dt;
            e
        };
        let push_notice = |e: Event, rng: &mut Rng, out: &mut Vec<Event>| {
            out.push(e);
            if rng.chance(cfg.repeat_permille) {
                let mut again = e;
                again.ts_unix_ns += 1_000_000_000; // the exchange repeats it a second later
                out.push(again);
            }
        };
        if rng.chance(cfg.win_permille) {
            let clear = bid.bid_price_micros * (50 + rng.below(50) as i64) / 100;
            let mut w = notice(EventKind::Win, &mut rng, 50_000_000);
            w.clear_price_micros = clear;
            push_notice(w, &mut rng, &mut out);
            let mut b = notice(EventKind::Billing, &mut rng, 200_000_000);
            b.clear_price_micros = clear;
            push_notice(b, &mut rng, &mut out);
            if rng.chance(cfg.click_permille) {
                let c = notice(EventKind::Click, &mut rng, 2_000_000_000);
                push_notice(c, &mut rng, &mut out);
            }
        } else {
            let mut l = notice(EventKind::Loss, &mut rng, 60_000_000);
            l.reason = 102;
            push_notice(l, &mut rng, &mut out);
        }
    }
    out
}

/// Totals of one campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CampaignTotals {
    pub advertiser_id: u32,
    pub bids: i64,
    pub wins: i64,
    pub losses: i64,
    pub impressions: i64,
    pub clicks: i64,
    pub bid_cpm_micros: i64,
    pub spend_cpm_micros: i64,
}

impl CampaignTotals {
    /// The seven figures a rollup row holds for the campaign, in the rollups' column order:
    /// bids, wins, losses, impressions, clicks, bid and spend CPM micros.
    pub fn figures(&self) -> [i64; 7] {
        [
            self.bids,
            self.wins,
            self.losses,
            self.impressions,
            self.clicks,
            self.bid_cpm_micros,
            self.spend_cpm_micros,
        ]
    }
}

/// What a correct ingest reports for a run: each event id once, test requests left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// Distinct event ids (rows of the raw table).
    pub unique_events: u64,
    pub campaigns: BTreeMap<u32, CampaignTotals>,
    /// No-bids by reason code.
    pub nobids: BTreeMap<u16, i64>,
}

impl Expected {
    pub fn of(events: &[Event]) -> Expected {
        let mut seen = HashSet::with_capacity(events.len());
        let mut x = Expected::default();
        for e in events {
            if !seen.insert(e.event_id) {
                continue;
            }
            x.unique_events += 1;
            if e.flags & flags::TEST != 0 {
                continue;
            }
            if e.kind == EventKind::NoBid {
                *x.nobids.entry(e.reason).or_default() += 1;
            }
            if e.campaign_id == 0 {
                continue;
            }
            let c = x.campaigns.entry(e.campaign_id).or_default();
            c.advertiser_id = e.advertiser_id;
            match e.kind {
                EventKind::Bid => {
                    c.bids += 1;
                    c.bid_cpm_micros += e.bid_price_micros;
                }
                EventKind::Win => c.wins += 1,
                EventKind::Loss => c.losses += 1,
                EventKind::Billing => {
                    c.impressions += 1;
                    c.spend_cpm_micros += e.clear_price_micros;
                }
                EventKind::Click => c.clicks += 1,
                EventKind::NoBid => {}
            }
        }
        x
    }

    /// Totals of one advertiser's campaigns.
    pub fn advertiser(&self, adv: u32) -> CampaignTotals {
        let mut t = CampaignTotals {
            advertiser_id: adv,
            ..Default::default()
        };
        for c in self.campaigns.values().filter(|c| c.advertiser_id == adv) {
            t.bids += c.bids;
            t.wins += c.wins;
            t.losses += c.losses;
            t.impressions += c.impressions;
            t.clicks += c.clicks;
            t.bid_cpm_micros += c.bid_cpm_micros;
            t.spend_cpm_micros += c.spend_cpm_micros;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_deterministic_and_have_repeats() {
        let cfg = RunConfig::small(7, 2000, 0, 1_000_000_000_000);
        let a = generate(&cfg);
        assert_eq!(a, generate(&cfg));
        let x = Expected::of(&a);
        assert!(
            x.unique_events < a.len() as u64,
            "some notices are repeated"
        );
        let bids: i64 = x.campaigns.values().map(|c| c.bids).sum();
        let nobids: i64 = x.nobids.values().sum();
        assert!(bids > 1000 && nobids > 400, "bids {bids} nobids {nobids}");
        for c in x.campaigns.values() {
            assert!(c.wins <= c.bids && c.impressions == c.wins && c.clicks <= c.impressions);
            assert_eq!(c.wins + c.losses, c.bids);
        }
    }

    #[test]
    fn zipf_sites_are_skewed_and_uniform_ones_are_not() {
        let share_of_top = |zipf: f64| {
            let mut cfg = RunConfig::small(3, 20_000, 0, 1_000_000_000_000);
            cfg.sites = 2000;
            cfg.site_zipf = zipf;
            let ev = generate(&cfg);
            let mut n: std::collections::HashMap<String, u64> = Default::default();
            for e in &ev {
                *n.entry(e.site_or_app.as_str().to_owned()).or_default() += 1;
            }
            let mut counts: Vec<u64> = n.values().copied().collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            let top: u64 = counts.iter().take(20).sum();
            (
                top as f64 / ev.len() as f64,
                n.contains_key("site0.example"),
                n.len(),
            )
        };
        let (uniform, _, seen_u) = share_of_top(0.0);
        let (zipf, has_first, seen_z) = share_of_top(1.1);
        // 20 of 2000 sites: 1 % of the traffic when uniform (plus noise); Zipf(1.1) gives the
        // first 20 ranks about half of it.
        assert!(uniform < 0.03, "uniform top-20 share {uniform}");
        assert!(zipf > 0.35, "zipf top-20 share {zipf}");
        assert!(has_first, "rank 1 is site0");
        assert!(
            seen_z < seen_u,
            "fewer distinct sites under Zipf: {seen_z} vs {seen_u}"
        );
    }
}

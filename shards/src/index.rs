//! The compiled, immutable campaign set: per-campaign values in decision-ready form, and the
//! targeting index (per-dimension bitsets over campaign indices, looked up by 64-bit key hashes).
//!
//! Owns: [`CompiledSet`] (built once per update on a control thread, shared read-only by every
//! core through an `Arc`), [`Bits`] and the dimension tables. A request's candidates are the AND of
//! one bitset (or union of two) per dimension, so a decision costs O(campaigns / 64) word
//! operations plus work per surviving candidate, instead of a full scan with string compares.
//! Must never: change after construction, allocate in the lookup functions used by a decision.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use codec::Micros;
use codec::bounded::{fnv1a, fnv1a_lower};

use crate::campaign::{
    Campaign, CampaignSet, Format, FrequencyCap, LoadError, Pacing, StalePolicy, Status, validate,
};

/// Keys are already FNV hashes: pass them through.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);
impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// A fixed-length bitset over campaign indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits(Box<[u64]>);

impl Bits {
    pub fn zeros(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    pub fn ones(n: usize) -> Bits {
        let mut b = Bits::zeros(n);
        for i in 0..n {
            b.set(i);
        }
        b
    }
    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    pub fn words(&self) -> &[u64] {
        &self.0
    }
}

/// `cand &= a`.
#[inline]
pub fn and(cand: &mut [u64], a: &[u64]) {
    for (c, a) in cand.iter_mut().zip(a) {
        *c &= a;
    }
}
/// `cand &= a | b`.
#[inline]
pub fn and_or(cand: &mut [u64], a: &[u64], b: &[u64]) {
    for ((c, a), b) in cand.iter_mut().zip(a).zip(b) {
        *c &= a | b;
    }
}
/// `cand &= !a`.
#[inline]
pub fn and_not(cand: &mut [u64], a: &[u64]) {
    for (c, a) in cand.iter_mut().zip(a) {
        *c &= !a;
    }
}
/// `acc |= a`.
#[inline]
pub fn or_into(acc: &mut [u64], a: &[u64]) {
    for (c, a) in acc.iter_mut().zip(a) {
        *c |= a;
    }
}

/// One targeting dimension: campaigns that do not target it (`any`) and, per value, those that
/// list that value.
#[derive(Debug)]
pub struct Dim {
    pub any: Bits,
    pub by_key: IdMap<Bits>,
}

impl Dim {
    fn new(n: usize) -> Dim {
        Dim {
            any: Bits::zeros(n),
            by_key: IdMap::default(),
        }
    }
    fn add(&mut self, n: usize, i: usize, keys: impl IntoIterator<Item = u64>) {
        let mut any = true;
        for k in keys {
            any = false;
            self.by_key
                .entry(k)
                .or_insert_with(|| Bits::zeros(n))
                .set(i);
        }
        if any {
            self.any.set(i);
        }
    }
    /// `cand &= any | by_key[key]`.
    #[inline]
    pub fn restrict(&self, cand: &mut [u64], key: Option<u64>) {
        match key.and_then(|k| self.by_key.get(&k)) {
            Some(b) => and_or(cand, self.any.words(), b.words()),
            None => and(cand, self.any.words()),
        }
    }
    pub fn admits(&self, i: usize, key: Option<u64>) -> bool {
        self.any.get(i)
            || key
                .and_then(|k| self.by_key.get(&k))
                .is_some_and(|b| b.get(i))
    }
}

/// Values listed to exclude: `cand &= !by_key[key]`.
#[derive(Debug, Default)]
pub struct Deny {
    pub by_key: IdMap<Bits>,
}

impl Deny {
    fn add(&mut self, n: usize, i: usize, keys: impl IntoIterator<Item = u64>) {
        for k in keys {
            self.by_key
                .entry(k)
                .or_insert_with(|| Bits::zeros(n))
                .set(i);
        }
    }
    #[inline]
    pub fn restrict(&self, cand: &mut [u64], key: Option<u64>) {
        if let Some(b) = key.and_then(|k| self.by_key.get(&k)) {
            and_not(cand, b.words());
        }
    }
    pub fn denies(&self, i: usize, key: Option<u64>) -> bool {
        key.and_then(|k| self.by_key.get(&k))
            .is_some_and(|b| b.get(i))
    }
}

/// How every click macro of creative markup begins (`${HELIOS_CLICK_URL}`, `…_HTML}`,
/// `…_ENC}`; the appliance expands them, `pipeline::notice`).
pub const CLICK_MACRO_PREFIX: &str = "${HELIOS_CLICK_URL";

/// A creative in decision-ready form (hashes instead of strings).
#[derive(Debug, Clone)]
pub struct CCreative {
    pub format: Format,
    pub adomain: Box<[u64]>,
    /// Category hashes: each category and its tier-1 parent (`IAB1-2` → `IAB1`).
    pub cat: Box<[u64]>,
    pub attr: Box<[u16]>,
    pub bundle: Option<u64>,
    /// The markup escaped for a JSON string once, here (`codec::response::write_escaped`), so a
    /// bid copies it instead of escaping it per response. Click macros survive escaping
    /// unchanged (they hold no character JSON escapes).
    pub adm_json: Box<[u8]>,
    /// The markup holds a click macro (`${HELIOS_CLICK_URL…}`): bids sign a click URL.
    pub click_macro: bool,
}

/// A campaign in decision-ready form.
#[derive(Debug, Clone)]
pub struct CCampaign {
    pub id: u32,
    pub advertiser_id: u32,
    pub utc_offset_s: i32,
    pub start_s: u64,
    pub end_s: u64,
    /// Bit `h` of `week_hours[d]`: hour `h` of weekday `d` (0 = Monday) is allowed.
    pub week_hours: [u32; 7],
    pub regions: Box<[u64]>,
    pub cities: Box<[u64]>,
    pub cats_allow: Box<[u64]>,
    pub segments: Box<[u32]>,
    pub min_segment_weight: u16,
    pub base_cpm: Micros,
    pub max_cpm: Micros,
    pub multipliers: Box<[(u32, u32)]>,
    pub deals: Box<[u64]>,
    pub freq: Option<FrequencyCap>,
    pub stale: StalePolicy,
    pub max_profile_age_ms: u64,
    pub pacing: Pacing,
    pub daily_budget: Option<Micros>,
    pub total_budget: Micros,
    pub shading: bool,
    pub creatives: Box<[CCreative]>,
}

/// The targeting index.
#[derive(Debug)]
pub struct Index {
    pub active: Bits,
    pub country: Dim,
    pub device: Dim,
    pub os: Dim,
    /// Campaigns with neither a domain nor a bundle allow list.
    pub inventory_any: Bits,
    pub domain_allow: IdMap<Bits>,
    pub bundle_allow: IdMap<Bits>,
    pub domain_deny: Deny,
    pub bundle_deny: Deny,
    pub cat_allow: Dim,
    pub cat_deny: Deny,
    pub secure_only: Bits,
    pub needs_profile: Bits,
    pub deals_only: Bits,
    pub deal: IdMap<Bits>,
    pub banner: IdMap<Bits>,
    pub video: Bits,
    pub native: Bits,
    /// Campaigns with a region or city list (checked per candidate).
    pub geo_fine: Bits,
}

/// A checked campaign set, immutable once built; cores hold it by `Arc` and swap it between
/// requests. `campaigns[i]` (source form: markup, names) and `compiled[i]` describe the same
/// campaign; bid indices point into both. Campaigns are ordered by highest possible price
/// (descending), then id — not in file order.
#[derive(Debug)]
pub struct CompiledSet {
    pub version: u64,
    pub campaigns: Vec<Campaign>,
    pub compiled: Vec<CCampaign>,
    pub index: Index,
    pub by_id: HashMap<u32, u32>,
}

/// Key of a banner size in [`Index::banner`].
pub fn size_key(w: u32, h: u32) -> u64 {
    (u64::from(w) << 32) | u64::from(h)
}

/// Hash of an IAB category; for `IAB1-2` also yields the parent `IAB1`.
pub fn cat_keys(c: &str) -> (u64, Option<u64>) {
    let full = fnv1a_lower(c);
    let parent = c.split_once('-').map(|(p, _)| fnv1a_lower(p));
    (full, parent)
}

impl CompiledSet {
    pub fn parse(json: &[u8]) -> Result<Arc<CompiledSet>, LoadError> {
        Self::compile(CampaignSet::from_json(json)?)
    }

    pub fn parse_toml(text: &str) -> Result<Arc<CompiledSet>, LoadError> {
        Self::compile(CampaignSet::from_toml(text)?)
    }

    pub fn empty() -> Arc<CompiledSet> {
        Self::compile(CampaignSet {
            version: 0,
            advertisers: Vec::new(),
            campaigns: Vec::new(),
        })
        .expect("the empty set breaks no rule")
    }

    /// Checks the whole set (first broken rule refuses it) and builds the index.
    pub fn compile(set: CampaignSet) -> Result<Arc<CompiledSet>, LoadError> {
        let (version, campaigns, offsets) = set.flatten()?;
        validate(&campaigns)?;
        // Index order = highest possible price first (ties: lower id first), so a decision can
        // stop at the first campaign that cannot beat the best bid found so far.
        let mut both: Vec<(Campaign, i32)> = campaigns.into_iter().zip(offsets).collect();
        both.sort_by_key(|(c, _)| {
            (
                std::cmp::Reverse(c.max_cpm_micros.unwrap_or(c.bid_cpm_micros)),
                c.id,
            )
        });
        let (campaigns, offsets): (Vec<Campaign>, Vec<i32>) = both.into_iter().unzip();
        let n = campaigns.len();
        let mut ix = Index {
            active: Bits::zeros(n),
            country: Dim::new(n),
            device: Dim::new(n),
            os: Dim::new(n),
            inventory_any: Bits::zeros(n),
            domain_allow: IdMap::default(),
            bundle_allow: IdMap::default(),
            domain_deny: Deny::default(),
            bundle_deny: Deny::default(),
            cat_allow: Dim::new(n),
            cat_deny: Deny::default(),
            secure_only: Bits::zeros(n),
            needs_profile: Bits::zeros(n),
            deals_only: Bits::zeros(n),
            deal: IdMap::default(),
            banner: IdMap::default(),
            video: Bits::zeros(n),
            native: Bits::zeros(n),
            geo_fine: Bits::zeros(n),
        };
        let mut compiled = Vec::with_capacity(n);
        let mut by_id = HashMap::with_capacity(n);
        for (i, c) in campaigns.iter().enumerate() {
            by_id.insert(c.id, i as u32);
            let t = &c.targeting;
            if c.status == Status::Active {
                ix.active.set(i);
            }
            ix.country
                .add(n, i, t.countries.iter().map(|s| fnv1a_lower(s)));
            ix.device
                .add(n, i, t.device_types.iter().map(|d| u64::from(*d)));
            ix.os.add(n, i, t.os.iter().map(|s| fnv1a_lower(s)));
            if t.domains_allow.is_empty() && t.bundles_allow.is_empty() {
                ix.inventory_any.set(i);
            }
            for d in &t.domains_allow {
                let b = ix.domain_allow.entry(fnv1a_lower(d));
                b.or_insert_with(|| Bits::zeros(n)).set(i);
            }
            for d in &t.bundles_allow {
                let b = ix.bundle_allow.entry(fnv1a_lower(d));
                b.or_insert_with(|| Bits::zeros(n)).set(i);
            }
            ix.domain_deny
                .add(n, i, t.domains_deny.iter().map(|s| fnv1a_lower(s)));
            ix.bundle_deny
                .add(n, i, t.bundles_deny.iter().map(|s| fnv1a_lower(s)));
            ix.cat_allow
                .add(n, i, t.categories_allow.iter().map(|s| fnv1a_lower(s)));
            ix.cat_deny
                .add(n, i, t.categories_deny.iter().map(|s| fnv1a_lower(s)));
            if t.secure_only {
                ix.secure_only.set(i);
            }
            if !t.segments.is_empty() || !c.segment_multipliers.is_empty() {
                // Segment targeting needs a profile; multipliers only raise the price, so a
                // multiplier campaign can still bid contextually at its base: only targeting
                // marks the campaign as needing a profile.
                if !t.segments.is_empty() {
                    ix.needs_profile.set(i);
                }
            }
            if t.deals_only {
                ix.deals_only.set(i);
            }
            for d in &t.deals {
                let b = ix.deal.entry(fnv1a(d.as_bytes()));
                b.or_insert_with(|| Bits::zeros(n)).set(i);
            }
            if !t.regions.is_empty() || !t.cities.is_empty() {
                ix.geo_fine.set(i);
            }
            let mut creatives = Vec::with_capacity(c.creatives.len());
            for cr in &c.creatives {
                match cr.format {
                    Format::Banner { w, h } => {
                        let b = ix.banner.entry(size_key(w, h));
                        b.or_insert_with(|| Bits::zeros(n)).set(i);
                    }
                    Format::Video => ix.video.set(i),
                    Format::Native => ix.native.set(i),
                }
                let mut cat = Vec::new();
                for k in &cr.cat {
                    let (full, parent) = cat_keys(k);
                    cat.push(full);
                    cat.extend(parent);
                }
                creatives.push(CCreative {
                    format: cr.format.clone(),
                    adomain: cr.adomain.iter().map(|s| fnv1a_lower(s)).collect(),
                    cat: cat.into(),
                    attr: cr.attr.clone().into(),
                    bundle: cr.bundle.as_deref().map(fnv1a_lower),
                    adm_json: {
                        let mut j = Vec::with_capacity(cr.adm.len() + 16);
                        codec::response::write_escaped(&mut j, &cr.adm);
                        j.into_boxed_slice()
                    },
                    click_macro: cr.adm.contains(CLICK_MACRO_PREFIX),
                });
            }
            let mut week_hours = [0u32; 7];
            if t.dayparts.is_empty() {
                week_hours = [(1 << 24) - 1; 7];
            }
            for p in &t.dayparts {
                let hours = ((1u32 << p.end_hour) - 1) & !((1u32 << p.start_hour) - 1);
                for (d, wh) in week_hours.iter_mut().enumerate() {
                    if p.days.is_empty() || p.days.contains(&(d as u8)) {
                        *wh |= hours;
                    }
                }
            }
            compiled.push(CCampaign {
                id: c.id,
                advertiser_id: c.advertiser_id,
                utc_offset_s: offsets[i] * 60,
                start_s: c.start_unix_s.unwrap_or(0),
                end_s: c.end_unix_s.unwrap_or(u64::MAX),
                week_hours,
                regions: t.regions.iter().map(|s| fnv1a_lower(s)).collect(),
                cities: t.cities.iter().map(|s| fnv1a_lower(s)).collect(),
                cats_allow: t.categories_allow.iter().map(|s| fnv1a_lower(s)).collect(),
                segments: t.segments.clone().into(),
                min_segment_weight: t.min_segment_weight,
                base_cpm: Micros(c.bid_cpm_micros),
                max_cpm: Micros(c.max_cpm_micros.unwrap_or(c.bid_cpm_micros)),
                multipliers: c
                    .segment_multipliers
                    .iter()
                    .map(|m| (m.segment, m.multiplier_bp))
                    .collect(),
                deals: t.deals.iter().map(|d| fnv1a(d.as_bytes())).collect(),
                freq: c.frequency_cap,
                stale: c.stale_profile,
                max_profile_age_ms: c.max_profile_age_ms,
                pacing: c.pacing,
                daily_budget: c.daily_budget_micros.map(Micros),
                total_budget: Micros(c.total_budget_micros),
                shading: c.shading,
                creatives: creatives.into(),
            });
        }
        Ok(Arc::new(CompiledSet {
            version,
            campaigns,
            compiled,
            index: ix,
            by_id,
        }))
    }

    pub fn len(&self) -> usize {
        self.campaigns.len()
    }
    pub fn is_empty(&self) -> bool {
        self.campaigns.is_empty()
    }
    /// Words in a candidate bitset for this set.
    pub fn words(&self) -> usize {
        self.campaigns.len().div_ceil(64)
    }

    pub fn bid_price(&self, campaign: usize) -> Micros {
        Micros(self.campaigns[campaign].bid_cpm_micros)
    }

    /// Index of a campaign by id.
    pub fn position(&self, id: u32) -> Option<usize> {
        self.by_id.get(&id).map(|i| *i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_field() {
        let bad = "{\"version\":1,\n\"campaigns\":[{\"id\":1,\"advertiser_id\":1,\n\"status\":\"running\",\"bid_cpm_micros\":1,\"total_budget_micros\":1,\"creatives\":[]}]}";
        let e = CompiledSet::parse(bad.as_bytes()).unwrap_err();
        assert_eq!(e.line(), Some(3));
        let msg = e.to_string();
        assert!(msg.contains("campaigns[0].status"), "{msg}");

        let rule = r#"{"version":1,"campaigns":[{"id":7,"advertiser_id":1,"status":"active","bid_cpm_micros":0,"total_budget_micros":1,
          "creatives":[{"id":1,"format":{"type":"native"},"adomain":["a.com"],"adm":"x"}]}]}"#;
        let e = CompiledSet::parse(rule.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "campaign 7: bid_cpm_micros: must be > 0 and <= 10^12"
        );
    }

    #[test]
    fn a_bad_campaign_refuses_the_whole_set() {
        let set = r#"{"version":1,"campaigns":[
          {"id":1,"advertiser_id":1,"status":"active","bid_cpm_micros":1,"total_budget_micros":1,
           "creatives":[{"id":1,"format":{"type":"native"},"adomain":["a.com"],"adm":"x"}]},
          {"id":1,"advertiser_id":1,"status":"active","bid_cpm_micros":1,"total_budget_micros":1,
           "creatives":[{"id":1,"format":{"type":"native"},"adomain":["a.com"],"adm":"x"}]}]}"#;
        let e = CompiledSet::parse(set.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("duplicate campaign id"));
    }

    #[test]
    fn dimensions_index_by_value() {
        let set = r#"{"version":3,"advertisers":[{"id":5,"utc_offset_minutes":60,"campaigns":[
          {"id":1,"status":"active","bid_cpm_micros":1,"total_budget_micros":1,
           "targeting":{"countries":["DEU"],"dayparts":[{"days":[0],"start_hour":9,"end_hour":17}]},
           "creatives":[{"id":1,"format":{"type":"banner","w":300,"h":250},"adomain":["a.com"],"adm":"x"}]},
          {"id":2,"status":"paused","bid_cpm_micros":1,"total_budget_micros":1,
           "creatives":[{"id":1,"format":{"type":"video"},"adomain":["a.com"],"adm":"x"}]}]}]}"#;
        let s = CompiledSet::parse(set.as_bytes()).unwrap();
        assert_eq!(s.version, 3);
        assert_eq!(s.compiled[0].advertiser_id, 5);
        assert_eq!(s.compiled[0].utc_offset_s, 3600);
        assert!(s.index.active.get(0) && !s.index.active.get(1));
        assert!(s.index.country.admits(0, Some(fnv1a_lower("deu"))));
        assert!(!s.index.country.admits(0, Some(fnv1a_lower("FRA"))));
        assert!(s.index.country.admits(1, None));
        assert!(s.index.banner[&size_key(300, 250)].get(0));
        assert!(s.index.video.get(1));
        assert_eq!(
            s.compiled[0].week_hours[0],
            0b1_1111_1111 << 9 & ((1 << 17) - 1)
        );
        assert_eq!(s.compiled[0].week_hours[1], 0);
    }

    #[test]
    fn toml_is_accepted_with_line_numbers_on_errors() {
        let t = r#"
version = 2
[[advertisers]]
id = 9
[[advertisers.campaigns]]
id = 1
status = "active"
bid_cpm_micros = 1500000
total_budget_micros = 100000000
[[advertisers.campaigns.creatives]]
id = 1
format = { type = "banner", w = 320, h = 50 }
adomain = ["b.com"]
adm = "<img/>"
"#;
        let s = CompiledSet::parse_toml(t).unwrap();
        assert_eq!(s.compiled[0].advertiser_id, 9);
        let e = CompiledSet::parse_toml("version = 2\nadvertisers = 5\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}

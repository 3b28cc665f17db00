//! [`Shard::decide`]: one request in, one [`Decision`] out, written into a caller-owned value so
//! that nothing is allocated per request.
//!
//! Owns: one core's bidding state — the current campaign set (by `Arc`), scratch bitsets sized at
//! install, per-campaign budget/pacing runtime, the local unreplicated-wins table, the GPP verdict
//! cache, counters. Owned by that core's thread alone. Must never: allocate, lock, or do I/O in
//! `decide` (the opt-in [`Shard::decide_traced`] allocates its trace).
//!
//! Order of work per request: privacy verdict → request-level index restriction (status,
//! geo country, device type, OS, site/app allow and deny, site/app categories) → the profile,
//! asked of its [`ProfileSource`] only now (so an early fetch of its memory overlaps the work
//! before) → segment targeting without a profile → per imp: format, secure, deals/private
//! auction → per surviving candidate: flight, day-part, region/city, segments, creative
//! (format, `battr`, `bcat`, `badv`, `bapp`), frequency cap, price (strategy, floor, currency),
//! pacing, lease → best price wins the imp.

use std::collections::HashMap;
use std::sync::Arc;

use arrayvec::ArrayVec;
use codec::bounded::{fnv1a, fnv1a_lower};
use codec::event::NoBidReason;
use codec::request::{Imp, MAX_IMPS};
use codec::{BidRequest, Currency, Micros, ValidRequest};

use crate::campaign::{Format, StalePolicy};
use crate::config::ShardConfig;
use crate::freq::LocalWins;
use crate::index::{CCampaign, CompiledSet, and, and_not, and_or, cat_keys, or_into, size_key};
use crate::pacing::{LeaseGrant, LeaseOp, PPM, Runtime, impression_cost};
use crate::privacy::{GppCache, Privacy};
use crate::profile::{ProfileSource, ProfileView};
use crate::shade::{self, Shader};

/// One bid on one imp. Indices point into the shard's current [`CompiledSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpBid {
    pub imp_index: u8,
    pub campaign_index: u32,
    pub creative_index: u32,
    pub campaign_id: u32,
    pub creative_id: u32,
    pub advertiser_id: u32,
    /// CPM in `currency`.
    pub price: Micros,
    pub currency: Currency,
    /// Index into `imp.pmp.deals` when the bid is for a deal.
    pub deal_index: Option<u8>,
    /// Budget reserved for this bid (micros of USD); pass back to [`Shard::settle`].
    pub reserved: Micros,
    /// Bid-shading key (publisher × size) when the price was shaded, else 0: report the
    /// outcome with [`Shard::observe_shading`].
    pub shade_key: u64,
}

/// The outcome for a whole request: bids (at most one per imp) or the reason for none.
#[derive(Debug, Default)]
pub struct Decision {
    pub bids: ArrayVec<ImpBid, MAX_IMPS>,
    pub no_bid: Option<NoBidReason>,
    /// `test = 1`: answered but never charged (no reservation, no pacing).
    pub test: bool,
    /// Personal data allowed (profile, frequency data, user id in events).
    pub personalized: bool,
}

impl Decision {
    pub fn clear(&mut self) {
        self.bids.clear();
        self.no_bid = None;
        self.test = false;
        self.personalized = false;
    }
}

/// Why one campaign did not bid on one imp (trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Inactive,
    Country,
    DeviceType,
    Os,
    /// Site domain / app bundle not in the campaign's allow list.
    Inventory,
    InventoryDenied,
    Category,
    CategoryDenied,
    /// Segment targeting needs consent and a profile.
    NeedsProfile,
    Format,
    NotSecure,
    /// Deal-only campaign without its deal, or a private auction without our deal.
    Deal,
    Flight,
    DayPart,
    Region,
    City,
    Segment,
    Blocked,
    FrequencyCapped,
    StaleProfile,
    BelowFloor,
    Paced,
    Budget,
    /// Eligible, but another campaign bid more on this imp.
    Outbid,
}

impl Drop {
    /// The request-level reason this drop contributes (the furthest stage reached wins).
    fn reason(self) -> NoBidReason {
        match self {
            Drop::NeedsProfile => NoBidReason::NoConsent,
            Drop::Blocked | Drop::InventoryDenied => NoBidReason::Blocked,
            Drop::FrequencyCapped | Drop::StaleProfile => NoBidReason::FrequencyCapped,
            Drop::BelowFloor => NoBidReason::BelowFloor,
            Drop::Paced => NoBidReason::Paced,
            Drop::Budget => NoBidReason::BudgetExhausted,
            _ => NoBidReason::NoEligibleCampaign,
        }
    }
    fn rank(self) -> u8 {
        match self.reason() {
            NoBidReason::NoEligibleCampaign => 0,
            NoBidReason::NoConsent => 1,
            NoBidReason::Blocked => 2,
            NoBidReason::FrequencyCapped => 3,
            NoBidReason::BelowFloor => 4,
            NoBidReason::Paced => 5,
            _ => 6,
        }
    }
}

/// One line of a decision trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// `None` for request-level drops (before imps are looked at).
    pub imp: Option<u8>,
    pub campaign_id: u32,
    pub outcome: Result<Micros, Drop>,
}

/// Which campaigns were considered and why each was dropped (opt-in; allocates).
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub privacy: Option<Privacy>,
    pub entries: Vec<TraceEntry>,
}

trait Tracer {
    const ON: bool;
    fn privacy(&mut self, _: Privacy) {}
    fn push(&mut self, imp: Option<u8>, campaign_id: u32, outcome: Result<Micros, Drop>);
}
struct NoTrace;
impl Tracer for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn push(&mut self, _: Option<u8>, _: u32, _: Result<Micros, Drop>) {}
}
impl Tracer for Trace {
    const ON: bool = true;
    fn privacy(&mut self, p: Privacy) {
        self.privacy = Some(p);
    }
    fn push(&mut self, imp: Option<u8>, campaign_id: u32, outcome: Result<Micros, Drop>) {
        self.entries.push(TraceEntry {
            imp,
            campaign_id,
            outcome,
        });
    }
}

/// Per-shard counters (read by the appliance's metrics; owned by the core).
#[derive(Debug, Default, Clone)]
pub struct ShardStats {
    pub decisions: u64,
    /// No-bids by reason code (index = code).
    pub no_bid: [u64; 16],
    /// Frequency-capped campaigns that bid without trustworthy data (fail open).
    pub stale_open: u64,
    /// Frequency-capped campaigns dropped for missing/stale data (fail closed).
    pub stale_closed: u64,
    pub contextual_only: u64,
}

/// The profile key of a request: `user.id`, else `user.buyeruid`, else `device.ifa`.
pub fn user_key<'r>(r: &'r BidRequest<'_>) -> Option<&'r str> {
    let u = r.user.as_ref();
    u.and_then(|u| u.id.as_deref())
        .or_else(|| u.and_then(|u| u.buyeruid.as_deref()))
        .or_else(|| r.device.as_ref().and_then(|d| d.ifa.as_deref()))
        .filter(|s| !s.is_empty())
}

/// Hash of a profile key, as [`Shard::record_impression`] expects it.
pub fn user_hash(key: &str) -> u64 {
    fnv1a(key.as_bytes())
}

/// Request values looked up once.
struct Keys {
    country: Option<u64>,
    region: Option<u64>,
    city: Option<u64>,
    device: Option<u64>,
    os: Option<u64>,
    domain: Option<u64>,
    bundle: Option<u64>,
    is_site: bool,
    is_app: bool,
    cats: ArrayVec<u64, 16>,
    user: Option<u64>,
    /// Publisher id, else site domain / app bundle (bid shading).
    publisher: u64,
}

impl Keys {
    fn of(r: &BidRequest<'_>, personalized: bool) -> Keys {
        let geo = r.device.as_ref().and_then(|d| d.geo.as_ref());
        let h = |s: Option<&str>| s.map(fnv1a_lower);
        let mut cats = ArrayVec::new();
        let list = r
            .site
            .as_ref()
            .map(|s| &s.cat[..])
            .or_else(|| r.app.as_ref().map(|a| &a.cat[..]))
            .unwrap_or(&[]);
        for c in list {
            let (full, parent) = cat_keys(c);
            let _ = cats.try_push(full);
            if let Some(p) = parent {
                let _ = cats.try_push(p);
            }
        }
        Keys {
            country: h(geo.and_then(|g| g.country.as_deref())),
            region: h(geo.and_then(|g| g.region.as_deref())),
            city: h(geo.and_then(|g| g.city.as_deref())),
            device: r.device.as_ref().and_then(|d| d.devicetype).map(u64::from),
            os: h(r.device.as_ref().and_then(|d| d.os.as_deref())),
            domain: h(r.site.as_ref().and_then(|s| s.domain.as_deref())),
            bundle: h(r.app.as_ref().and_then(|a| a.bundle.as_deref())),
            is_site: r.site.is_some(),
            is_app: r.app.is_some(),
            cats,
            publisher: {
                let site_pub = r
                    .site
                    .as_ref()
                    .and_then(|s| s.publisher.as_ref()?.id.as_deref());
                let app_pub = r
                    .app
                    .as_ref()
                    .and_then(|a| a.publisher.as_ref()?.id.as_deref());
                let dom = r.site.as_ref().and_then(|s| s.domain.as_deref());
                let bun = r.app.as_ref().and_then(|a| a.bundle.as_deref());
                site_pub.or(app_pub).or(dom).or(bun).map_or(0, fnv1a_lower)
            },
            user: if personalized {
                user_key(r).map(user_hash)
            } else {
                None
            },
        }
    }
}

/// One core's bidding state. Owned by that core's thread alone.
#[derive(Debug)]
pub struct Shard {
    core: u16,
    /// Borrowed (never cloned) during a decision: no shared reference count is touched per
    /// request.
    set: Arc<CompiledSet>,
    w: Work,
}

/// The shard's mutable state, split from the set so a decision borrows both without cloning
/// the `Arc`.
#[derive(Debug)]
struct Work {
    cfg: ShardConfig,
    seat_hash: u64,
    cand: Vec<u64>,
    imp_cand: Vec<u64>,
    tmp: Vec<u64>,
    runtime: Vec<Runtime>,
    wins: LocalWins,
    gpp: GppCache,
    rng: u64,
    stats: ShardStats,
    shader: Shader,
}

struct Candidate {
    ci: usize,
    cri: usize,
    deal: Option<u8>,
    price_usd: Micros,
    cost: i64,
    shade_key: u64,
}

impl Shard {
    pub fn new(core: u16, set: Arc<CompiledSet>) -> Shard {
        Shard::with_config(core, set, ShardConfig::default())
    }

    pub fn with_config(core: u16, set: Arc<CompiledSet>, cfg: ShardConfig) -> Shard {
        let mut s = Shard {
            core,
            set: CompiledSet::empty(),
            w: Work {
                seat_hash: fnv1a_lower(&cfg.seat),
                wins: LocalWins::new(cfg.local_win_buckets),
                cfg,
                cand: Vec::new(),
                imp_cand: Vec::new(),
                tmp: Vec::new(),
                runtime: Vec::new(),
                gpp: GppCache::default(),
                rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(core).wrapping_mul(0xff51_afd7_ed55_8ccd),
                stats: ShardStats::default(),
                shader: Shader::new(4096),
            },
        };
        s.install(set);
        s
    }

    pub fn core(&self) -> u16 {
        self.core
    }

    pub fn config(&self) -> &ShardConfig {
        &self.w.cfg
    }

    /// Swaps in a new campaign set; call between requests. Budget/pacing state carries over
    /// by campaign id. Allocates (scratch and runtime sized to the set).
    pub fn install(&mut self, set: Arc<CompiledSet>) {
        let words = set.words();
        self.w.cand = vec![0; words];
        self.w.imp_cand = vec![0; words];
        self.w.tmp = vec![0; words];
        let mut old: HashMap<u32, Runtime> = self
            .w
            .runtime
            .drain(..)
            .map(|r| (r.campaign_id, r))
            .collect();
        self.w.runtime = set
            .compiled
            .iter()
            .map(|c| {
                old.remove(&c.id)
                    .unwrap_or_else(|| Runtime::new(c, &self.w.cfg.pacing))
            })
            .collect();
        self.set = set;
    }

    /// The campaign set decisions are made against; `ImpBid` indices point into it.
    pub fn set(&self) -> &CompiledSet {
        &self.set
    }

    pub fn stats(&self) -> &ShardStats {
        &self.w.stats
    }

    /// Budget/pacing state of campaign `index`.
    pub fn runtime(&self, index: usize) -> &Runtime {
        &self.w.runtime[index]
    }

    /// The privacy verdict for `req` (the appliance calls this before looking the profile up:
    /// no consent, no lookup).
    pub fn privacy(&mut self, req: &ValidRequest<'_>) -> Privacy {
        Privacy::evaluate(req, &self.w.cfg.privacy, &mut self.w.gpp)
    }

    /// Decides `req` at wall-clock time `now_unix_ns`. `profile` is `None` when there is no
    /// consent or no profile; it is ignored when the request's privacy signals forbid its use.
    pub fn decide(
        &mut self,
        req: &ValidRequest<'_>,
        profile: Option<&dyn ProfileView>,
        now_unix_ns: u64,
        out: &mut Decision,
    ) {
        self.w
            .decide_inner(req, &profile, now_unix_ns, out, &mut NoTrace, &self.set);
    }

    /// [`Self::decide`] with the profile asked of `source` only when the decision first needs
    /// it: after the request-level pre-filters (see [`ProfileSource`]), and not at all when the
    /// privacy signals forbid personal data or the request is refused before (seat, currency).
    /// The decision is the same as `decide` given what `source` returns.
    pub fn decide_from<S: ProfileSource>(
        &mut self,
        req: &ValidRequest<'_>,
        source: &S,
        now_unix_ns: u64,
        out: &mut Decision,
    ) {
        self.w
            .decide_inner(req, source, now_unix_ns, out, &mut NoTrace, &self.set);
    }

    /// [`Self::decide`] with a trace of every campaign considered (allocates; opt-in). The
    /// decision is real: bids reserve budget as usual.
    pub fn decide_traced(
        &mut self,
        req: &ValidRequest<'_>,
        profile: Option<&dyn ProfileView>,
        now_unix_ns: u64,
        out: &mut Decision,
    ) -> Trace {
        let mut t = Trace::default();
        self.w
            .decide_inner(req, &profile, now_unix_ns, out, &mut t, &self.set);
        t
    }

    /// Records an impression won by this node (billing notice) so frequency caps see it before
    /// the replica does. `user` is [`user_hash`] of the profile key.
    pub fn record_impression(&mut self, user: u64, campaign_id: u32, ts_unix_ns: u64) {
        self.w
            .wins
            .record(user, campaign_id, ts_unix_ns / 1_000_000_000);
    }

    /// Settles a bid this shard made: releases `reserved` and spends `spent` (micros of USD;
    /// 0 for a loss). Unknown campaigns (removed since) are ignored.
    pub fn settle(&mut self, campaign_id: u32, bid_ts_ns: u64, reserved: Micros, spent: Micros) {
        if let Some(i) = self.set.position(campaign_id) {
            self.w.runtime[i].settle(bid_ts_ns, reserved.0, spent.0);
        }
    }

    /// Releases a reservation whose notice was settled on another node (see
    /// [`Runtime::release_remote`]). Unknown campaigns are ignored.
    pub fn release_remote(&mut self, campaign_id: u32, bid_ts_ns: u64, reserved: Micros) {
        if let Some(i) = self.set.position(campaign_id) {
            self.w.runtime[i].release_remote(bid_ts_ns, reserved.0);
        }
    }

    /// Control step between requests (every 100 ms–1 s): pacing throttles and lease wants.
    pub fn tick(&mut self, now_ns: u64) {
        for (rt, c) in self.w.runtime.iter_mut().zip(&self.set.compiled) {
            rt.tick(c, &self.w.cfg.pacing, now_ns);
        }
    }

    /// Lease operations to send to the budget store (one in flight per campaign).
    pub fn lease_ops(&mut self, out: &mut Vec<LeaseOp>) {
        for rt in &mut self.w.runtime {
            if let Some(op) = rt.take_op() {
                out.push(op);
            }
        }
    }

    /// Learns from a first-price outcome of a shaded bid (`ImpBid::shade_key`).
    pub fn observe_shading(&mut self, shade_key: u64, o: shade::Outcome) {
        if shade_key != 0 {
            self.w.shader.observe(shade_key, o);
        }
    }

    /// Turns budget enforcement on (between requests, before bidding): bids need a lease from
    /// now on; `lease_ttl_ms` is the store's lease TTL (renewal and distrust) and
    /// `idle_return_ms` when an idle campaign gives its lease back (see `pacing`); `share_ppm`
    /// is this shard's share of each daily budget (1 / shards bidding for it).
    pub fn enforce_budget(&mut self, lease_ttl_ms: u64, idle_return_ms: u64, share_ppm: u32) {
        self.w.cfg.enforce_budget = true;
        self.w.cfg.pacing.share_ppm = share_ppm.clamp(1, crate::pacing::PPM);
        self.w.cfg.pacing.lease_ttl_ms = lease_ttl_ms;
        self.w.cfg.pacing.idle_return_ms = idle_return_ms;
    }

    /// Ops only for campaigns with spend to report (between ticks).
    pub fn spend_ops(&mut self, out: &mut Vec<LeaseOp>) {
        for rt in &mut self.w.runtime {
            if let Some(op) = rt.take_spend_op() {
                out.push(op);
            }
        }
    }

    /// The final settlement of every campaign's lease (clean shutdown, after the last request):
    /// see [`crate::pacing::Runtime::close_op`].
    pub fn close_ops(&mut self, out: &mut Vec<LeaseOp>) {
        for rt in &mut self.w.runtime {
            if let Some(op) = rt.close_op() {
                out.push(op);
            }
        }
    }

    /// Some lease op sent to the store is not answered yet.
    pub fn leases_pending(&self) -> bool {
        self.w.runtime.iter().any(|r| r.in_flight)
    }

    /// Applies the store's answer to a [`LeaseOp`].
    pub fn lease_granted(&mut self, g: &LeaseGrant) {
        if let Some(i) = self.set.position(g.campaign_id) {
            self.w.runtime[i].grant(g);
        }
    }
}

impl Work {
    fn next_rand_ppm(&mut self) -> u32 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32 % PPM
    }

    fn no_bid(&mut self, out: &mut Decision, r: NoBidReason) {
        out.no_bid = Some(r);
        self.stats.no_bid[(r.code() as usize).min(15)] += 1;
    }

    fn decide_inner<T: Tracer, S: ProfileSource>(
        &mut self,
        req: &ValidRequest<'_>,
        source: &S,
        now_ns: u64,
        out: &mut Decision,
        trace: &mut T,
        set: &CompiledSet,
    ) {
        out.clear();
        self.stats.decisions += 1;
        let r = req.req();
        let privacy = Privacy::evaluate(req, &self.cfg.privacy, &mut self.gpp);
        let personalized = privacy.personalized();
        trace.privacy(privacy);
        if !personalized {
            self.stats.contextual_only += 1;
        }
        out.personalized = personalized;
        out.test = req.is_test();

        if !r.wseat.is_empty() && !r.wseat.iter().any(|s| fnv1a_lower(s) == self.seat_hash) {
            return self.no_bid(out, NoBidReason::Blocked);
        }
        let cur = if req.accepts(Currency::USD) {
            Currency::USD
        } else {
            match r
                .cur
                .iter()
                .filter_map(|c| Currency::parse(c))
                .find(|c| self.cfg.rates.rate(*c).is_some())
            {
                Some(c) => c,
                None => return self.no_bid(out, NoBidReason::UnsupportedCurrency),
            }
        };

        let ix = &set.index;
        let keys = Keys::of(r, personalized);
        // Between the caller's prefetch and the lookup: advance the early fetch now (slot →
        // record); the slot has had the keys' hashing to arrive (`appliance/benches/
        // profile_order.rs`: here ≈ 40 ns before the lookup, ≈ 190 ns after the decision began).
        if personalized {
            source.prepare();
        }
        let mut cand = std::mem::take(&mut self.cand);
        cand.copy_from_slice(ix.active.words());
        ix.country.restrict(&mut cand, keys.country);
        ix.device.restrict(&mut cand, keys.device);
        ix.os.restrict(&mut cand, keys.os);
        let allow = if keys.is_site {
            keys.domain.and_then(|d| ix.domain_allow.get(&d))
        } else if keys.is_app {
            keys.bundle.and_then(|b| ix.bundle_allow.get(&b))
        } else {
            None
        };
        match allow {
            Some(b) => and_or(&mut cand, ix.inventory_any.words(), b.words()),
            None => and(&mut cand, ix.inventory_any.words()),
        }
        ix.domain_deny
            .restrict(&mut cand, keys.domain.filter(|_| keys.is_site));
        ix.bundle_deny
            .restrict(&mut cand, keys.bundle.filter(|_| keys.is_app));
        if !ix.cat_allow.by_key.is_empty() {
            self.tmp.copy_from_slice(ix.cat_allow.any.words());
            for k in &keys.cats {
                if let Some(b) = ix.cat_allow.by_key.get(k) {
                    or_into(&mut self.tmp, b.words());
                }
            }
            and(&mut cand, &self.tmp);
        }
        for k in &keys.cats {
            ix.cat_deny.restrict(&mut cand, Some(*k));
        }
        // The profile, asked for now that the request-level pre-filters are done (an early
        // fetch had their time to arrive), and only with consent.
        let fetched = if personalized { source.fetch() } else { None };
        let profile: Option<&dyn ProfileView> = fetched.as_ref().map(|p| p as &dyn ProfileView);
        let mut best_drop: Option<Drop> = None;
        if profile.is_none() {
            let before = cand.iter().any(|w| *w != 0);
            and_not(&mut cand, ix.needs_profile.words());
            if before && cand.iter().all(|w| *w == 0) {
                best_drop = Some(Drop::NeedsProfile);
            }
        }
        if T::ON {
            for i in 0..set.len() {
                if cand[i / 64] & (1 << (i % 64)) == 0 {
                    let d = index_drop(set, i, &keys, profile.is_some());
                    trace.push(None, set.compiled[i].id, Err(d));
                }
            }
        }

        let now_s = now_ns / 1_000_000_000;
        let mut imp_cand = std::mem::take(&mut self.imp_cand);
        for (ii, imp) in r.imp.iter().enumerate() {
            self.imp_candidates(set, imp, &cand, &mut imp_cand);
            if T::ON {
                for i in 0..set.len() {
                    let was = cand[i / 64] & (1 << (i % 64)) != 0;
                    let is = imp_cand[i / 64] & (1 << (i % 64)) != 0;
                    if was && !is {
                        let d = imp_drop(set, i, imp);
                        trace.push(Some(ii as u8), set.compiled[i].id, Err(d));
                    }
                }
            }
            let floor_usd = match self
                .cfg
                .rates
                .to_usd_ceil(req.imps()[ii].floor, req.imps()[ii].floor_cur)
            {
                Some(f) => f,
                None => {
                    best_drop = best_drop.max_by_rank(Drop::BelowFloor);
                    continue;
                }
            };
            let mut best: Option<Candidate> = None;
            let mut done = false;
            'scan: for (w, word) in imp_cand.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let ci = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let c = &set.compiled[ci];
                    // Index order is by highest possible price: nothing from here on can beat
                    // a strictly higher bid.
                    if done || best.as_ref().is_some_and(|b| b.price_usd > c.max_cpm) {
                        if !T::ON {
                            break 'scan;
                        }
                        done = true;
                        trace.push(Some(ii as u8), c.id, Err(Drop::Outbid));
                        continue;
                    }
                    match self.evaluate(c, ci, r, imp, &keys, profile, now_s, floor_usd, out.test) {
                        Ok(cd) => {
                            if T::ON {
                                trace.push(Some(ii as u8), c.id, Ok(cd.price_usd));
                            }
                            let better = best.as_ref().is_none_or(|b| {
                                cd.price_usd > b.price_usd
                                    || (cd.price_usd == b.price_usd && c.id < set.compiled[b.ci].id)
                            });
                            if better {
                                best = Some(cd);
                            }
                        }
                        Err(d) => {
                            if T::ON {
                                trace.push(Some(ii as u8), c.id, Err(d));
                            }
                            best_drop = best_drop.max_by_rank(d);
                        }
                    }
                }
            }
            let Some(b) = best else { continue };
            let price = if cur == Currency::USD {
                Some(b.price_usd)
            } else {
                self.cfg.rates.from_usd_floor(b.price_usd, cur)
            };
            let Some(price) = price.filter(|p| p.0 > 0) else {
                best_drop = best_drop.max_by_rank(Drop::BelowFloor);
                continue;
            };
            if !out.test && self.cfg.enforce_budget {
                self.runtime[b.ci].reserve(b.cost);
            }
            let c = &set.compiled[b.ci];
            out.bids.push(ImpBid {
                imp_index: ii as u8,
                campaign_index: b.ci as u32,
                creative_index: b.cri as u32,
                campaign_id: c.id,
                creative_id: set.campaigns[b.ci].creatives[b.cri].id,
                advertiser_id: c.advertiser_id,
                price,
                currency: cur,
                deal_index: b.deal,
                shade_key: b.shade_key,
                reserved: Micros(if out.test || !self.cfg.enforce_budget {
                    0
                } else {
                    b.cost
                }),
            });
        }
        self.cand = cand;
        self.imp_cand = imp_cand;
        if out.bids.is_empty() {
            let reason = best_drop.map_or(NoBidReason::NoEligibleCampaign, Drop::reason);
            self.no_bid(out, reason);
        }
    }

    /// `out = cand ∩ format(imp) ∩ secure(imp) ∩ deals(imp)`.
    fn imp_candidates(&mut self, set: &CompiledSet, imp: &Imp<'_>, cand: &[u64], out: &mut [u64]) {
        let ix = &set.index;
        let tmp = &mut self.tmp;
        tmp.fill(0);
        if let Some(b) = &imp.banner {
            if let (Some(w), Some(h)) = (b.w, b.h)
                && let Some(bits) = ix.banner.get(&size_key(w, h))
            {
                or_into(tmp, bits.words());
            }
            for f in b.format.iter() {
                if let Some(bits) = ix.banner.get(&size_key(f.w, f.h)) {
                    or_into(tmp, bits.words());
                }
            }
        }
        if imp.video.is_some() {
            or_into(tmp, ix.video.words());
        }
        if imp.native.is_some() {
            or_into(tmp, ix.native.words());
        }
        out.copy_from_slice(cand);
        and(out, tmp);
        if imp.secure != Some(1) {
            and_not(out, ix.secure_only.words());
        }
        let pmp = imp.pmp.as_ref();
        let private = pmp.is_some_and(|p| p.private_auction == Some(1));
        tmp.fill(0);
        let mut any_deal = false;
        if let Some(p) = pmp {
            for d in p.deals.iter() {
                if !deal_seat_ok(self.seat_hash, d) {
                    continue;
                }
                if let Some(bits) =
                    d.id.as_deref()
                        .and_then(|id| ix.deal.get(&fnv1a(id.as_bytes())))
                {
                    or_into(tmp, bits.words());
                    any_deal = true;
                }
            }
        }
        if private {
            and(out, tmp);
        } else if any_deal {
            // Open-market campaigns, or deal campaigns whose deal is here.
            for ((o, d), only) in out.iter_mut().zip(tmp.iter()).zip(ix.deals_only.words()) {
                *o &= !only | d;
            }
        } else {
            and_not(out, ix.deals_only.words());
        }
    }

    /// Per-candidate checks and price. No allocation. Always inlined: with `decide_inner`
    /// instantiated per profile source, LLVM stopped inlining it on its own, and the call per
    /// candidate cost ≈ 1,300 instructions per decision (callgrind, `decide_latency`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn evaluate(
        &mut self,
        c: &CCampaign,
        ci: usize,
        r: &BidRequest<'_>,
        imp: &Imp<'_>,
        keys: &Keys,
        profile: Option<&dyn ProfileView>,
        now_s: u64,
        imp_floor_usd: Micros,
        test: bool,
    ) -> Result<Candidate, Drop> {
        if now_s < c.start_s || now_s >= c.end_s {
            return Err(Drop::Flight);
        }
        let local = now_s.saturating_add_signed(i64::from(c.utc_offset_s));
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        let weekday = ((local / 86_400 + 3) % 7) as usize;
        let hour = (local % 86_400) / 3600;
        if c.week_hours[weekday] & (1 << hour) == 0 {
            return Err(Drop::DayPart);
        }
        if !c.regions.is_empty() && !keys.region.is_some_and(|k| c.regions.contains(&k)) {
            return Err(Drop::Region);
        }
        if !c.cities.is_empty() && !keys.city.is_some_and(|k| c.cities.contains(&k)) {
            return Err(Drop::City);
        }
        if !c.segments.is_empty() {
            let Some(p) = profile else {
                return Err(Drop::NeedsProfile);
            };
            let inside = c.segments.iter().any(|s| {
                p.segment_weight(*s)
                    .is_some_and(|w| w >= c.min_segment_weight)
            });
            if !inside {
                return Err(Drop::Segment);
            }
        }
        // Creative: the first that fits the imp and no block.
        let mut fits = false;
        let mut cri = None;
        for (k, cr) in c.creatives.iter().enumerate() {
            let (ok, battr) = match cr.format {
                Format::Banner { w, h } => match &imp.banner {
                    Some(b) => (
                        (b.w == Some(w) && b.h == Some(h))
                            || b.format.iter().any(|f| f.w == w && f.h == h),
                        &b.battr[..],
                    ),
                    None => (false, &[][..]),
                },
                Format::Video => match &imp.video {
                    Some(v) => (true, &v.battr[..]),
                    None => (false, &[][..]),
                },
                Format::Native => (imp.native.is_some(), &[][..]),
            };
            if !ok {
                continue;
            }
            fits = true;
            let blocked = cr.attr.iter().any(|a| battr.contains(a))
                || cr.cat.iter().any(|h| r.bcat.contains_hash(*h))
                || cr.adomain.iter().any(|h| r.badv.contains_hash(*h))
                || cr.bundle.is_some_and(|h| r.bapp.contains_hash(h));
            if !blocked {
                cri = Some(k);
                break;
            }
        }
        let Some(cri) = cri else {
            return Err(if fits { Drop::Blocked } else { Drop::Format });
        };
        if let Some(cap) = c.freq {
            let fresh = profile.filter(|p| p.replica_age_ms() <= c.max_profile_age_ms);
            match (keys.user, fresh) {
                (Some(u), Some(p)) => {
                    let since = now_s.saturating_sub(cap.window_s);
                    let seen = p
                        .impressions_since(c.id, since)
                        .saturating_add(self.wins.count(
                            u,
                            c.id,
                            since,
                            p.replicated_until_unix_s(),
                        ));
                    if seen >= cap.impressions {
                        return Err(Drop::FrequencyCapped);
                    }
                }
                (Some(u), None) if profile.is_none() => {
                    // A user with consent we have no profile for: only our own wins count.
                    let since = now_s.saturating_sub(cap.window_s);
                    if self.wins.count(u, c.id, since, 0) >= cap.impressions {
                        return Err(Drop::FrequencyCapped);
                    }
                }
                _ => match c.stale {
                    StalePolicy::Closed => {
                        self.stats.stale_closed += 1;
                        return Err(Drop::StaleProfile);
                    }
                    StalePolicy::Open => self.stats.stale_open += 1,
                },
            }
        }
        // Deal: the first of the imp's deals this campaign targets.
        let mut deal = None;
        let mut floor = imp_floor_usd;
        if let Some(p) = &imp.pmp {
            for (k, d) in p.deals.iter().enumerate() {
                let Some(id) = d.id.as_deref() else { continue };
                if c.deals.contains(&fnv1a(id.as_bytes())) && deal_seat_ok(self.seat_hash, d) {
                    deal = Some(k as u8);
                    if let Some(f) = d.bidfloor.and_then(Micros::from_f64) {
                        let fc = d
                            .bidfloorcur
                            .as_deref()
                            .and_then(Currency::parse)
                            .unwrap_or(Currency::USD);
                        floor = self.cfg.rates.to_usd_ceil(f, fc).ok_or(Drop::BelowFloor)?;
                    }
                    break;
                }
            }
        }
        let mut price = c.base_cpm.0;
        if let Some(p) = profile {
            for (seg, bp) in c.multipliers.iter() {
                if let Some(w) = p.segment_weight(*seg) {
                    let w = i64::from(w.min(1000));
                    let factor = 10_000 + (i64::from(*bp) - 10_000) * w / 1000;
                    price = (i128::from(price) * i128::from(factor) / 10_000) as i64;
                }
            }
        }
        let mut price = Micros(price.min(c.max_cpm.0).max(1));
        if price < floor {
            if floor <= c.max_cpm {
                price = floor;
            } else {
                return Err(Drop::BelowFloor);
            }
        }
        let mut shade_key = 0;
        if c.shading && r.at == Some(1) {
            let (w, h) = imp
                .banner
                .as_ref()
                .and_then(|b| match (b.w, b.h) {
                    (Some(w), Some(h)) => Some((w, h)),
                    _ => b.format.first().map(|f| (f.w, f.h)),
                })
                .unwrap_or((0, 0));
            shade_key = shade::key_hashed(keys.publisher, w, h);
            price = self
                .shader
                .shade(shade_key, price)
                .max(floor)
                .max(Micros(1));
        }
        let cost = impression_cost(price);
        if !test && self.cfg.enforce_budget {
            let throttle = {
                let rt = &mut self.runtime[ci];
                rt.opps += 1;
                rt.throttle_ppm
            };
            if throttle < PPM && self.next_rand_ppm() >= throttle {
                return Err(Drop::Paced);
            }
            let rt = &mut self.runtime[ci];
            if !rt.covers(c, &self.cfg.pacing, cost) {
                return Err(Drop::Budget);
            }
            rt.admitted += 1;
        }
        Ok(Candidate {
            ci,
            cri,
            deal,
            price_usd: price,
            cost,
            shade_key,
        })
    }
}

fn deal_seat_ok(seat_hash: u64, d: &codec::request::Deal<'_>) -> bool {
    d.wseat.is_empty() || d.wseat.iter().any(|s| fnv1a_lower(s) == seat_hash)
}

trait MaxByRank {
    fn max_by_rank(self, d: Drop) -> Self;
}
impl MaxByRank for Option<Drop> {
    fn max_by_rank(self, d: Drop) -> Self {
        match self {
            Some(o) if o.rank() >= d.rank() => Some(o),
            _ => Some(d),
        }
    }
}

/// The first index dimension that excludes campaign `i` (trace only).
fn index_drop(set: &CompiledSet, i: usize, k: &Keys, has_profile: bool) -> Drop {
    let ix = &set.index;
    if !ix.active.get(i) {
        return Drop::Inactive;
    }
    if !ix.country.admits(i, k.country) {
        return Drop::Country;
    }
    if !ix.device.admits(i, k.device) {
        return Drop::DeviceType;
    }
    if !ix.os.admits(i, k.os) {
        return Drop::Os;
    }
    let allow = if k.is_site {
        k.domain.and_then(|d| ix.domain_allow.get(&d))
    } else if k.is_app {
        k.bundle.and_then(|b| ix.bundle_allow.get(&b))
    } else {
        None
    };
    if !ix.inventory_any.get(i) && !allow.is_some_and(|b| b.get(i)) {
        return Drop::Inventory;
    }
    if (k.is_site && ix.domain_deny.denies(i, k.domain))
        || (k.is_app && ix.bundle_deny.denies(i, k.bundle))
    {
        return Drop::InventoryDenied;
    }
    if !ix.cat_allow.any.get(i) && !k.cats.iter().any(|c| ix.cat_allow.admits(i, Some(*c))) {
        return Drop::Category;
    }
    if k.cats.iter().any(|c| ix.cat_deny.denies(i, Some(*c))) {
        return Drop::CategoryDenied;
    }
    if !has_profile && ix.needs_profile.get(i) {
        return Drop::NeedsProfile;
    }
    Drop::Inactive
}

/// Why campaign `i` fell out at the imp level (trace only).
fn imp_drop(set: &CompiledSet, i: usize, imp: &Imp<'_>) -> Drop {
    let ix = &set.index;
    let c = &set.compiled[i];
    let fmt = c.creatives.iter().any(|cr| match cr.format {
        Format::Banner { w, h } => imp.banner.as_ref().is_some_and(|b| {
            (b.w == Some(w) && b.h == Some(h)) || b.format.iter().any(|f| f.w == w && f.h == h)
        }),
        Format::Video => imp.video.is_some(),
        Format::Native => imp.native.is_some(),
    });
    if !fmt {
        return Drop::Format;
    }
    if imp.secure != Some(1) && ix.secure_only.get(i) {
        return Drop::NotSecure;
    }
    Drop::Deal
}

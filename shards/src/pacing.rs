//! Budget leases and pacing for one campaign on one shard ([`Runtime`]), and the lease protocol
//! between shards and the budget store ([`LeaseOp`], [`LeaseGrant`], [`BudgetStore`],
//! [`MemoryBudget`]).
//!
//! Money model: the store (Redis, see `control/`) holds each campaign's remaining budget and one
//! lease balance per holder (node:core). A shard bids only while its lease balance minus its
//! outstanding reservations covers the cost of one impression at the bid price; a bid reserves
//! that cost, a settled outcome releases it and spends the clearing cost, and reservations not
//! settled within two epochs are released (the bid is presumed lost). Even pacing throttles the
//! bid probability so the day's spend follows a straight target curve in the advertiser's time
//! zone (feed-forward from the observed opportunity rate and spend per admitted opportunity, with
//! the cumulative error fed back — catch-up when behind); asap only keeps the lease topped up.
//! Runtime state is owned by the shard's core; `tick` runs between requests, never per request.
//!
//! Lease lifetime: the store forgets a holder's lease `lease_ttl_ms` after its last exchange
//! (a dead node's money returns). So a shard renews every quarter TTL even with nothing to ask,
//! and stops trusting a lease three quarters of a TTL after the op that last confirmed it was
//! sent (its own clock only: no clock skew with the store matters). Reservations that expire
//! unsettled are not spendable again until the store has answered an op sent after the
//! expiry: the bid may have been billed on another node, which charged this holder's lease in
//! the store ([`LeaseGrant::remote_spent`]).
//! Must never: let a bid exceed the lease, allocate in `admit`/`reserve`.

use std::collections::HashMap;

use codec::Micros;

use crate::campaign::Pacing;
use crate::index::CCampaign;

/// Reservation epoch length: an unsettled bid is released after one to two epochs.
pub const EPOCH_NS: u64 = 30_000_000_000;
const DAY_S: u64 = 86_400;
/// Throttle resolution: parts per million.
pub const PPM: u32 = 1_000_000;
/// A store grants one exchange at most this share of a campaign's remaining budget (ppm), and
/// always at least one impression's cost when it has it: holders on several nodes all keep
/// bidding while budget remains, instead of the first to ask taking it all.
pub const GRANT_SHARE_PPM: i64 = 250_000;

/// What a store grants for `want`, with `remaining` left and `unit` the cost of one impression.
pub fn grant_for(want: i64, remaining: i64, unit: i64) -> i64 {
    let cap = (remaining / 1_000_000 * GRANT_SHARE_PPM
        + remaining % 1_000_000 * GRANT_SHARE_PPM / 1_000_000)
        .max(unit);
    want.min(remaining).min(cap).max(0)
}

/// Cost of one impression at a CPM, rounded up (micros).
pub fn impression_cost(cpm: Micros) -> i64 {
    (cpm.0 + 999) / 1000
}

/// Pacing parameters shared by all campaigns of a shard.
#[derive(Debug, Clone, Copy)]
pub struct PacingConfig {
    /// This shard's fraction of each campaign's daily budget, in ppm (1/number of shards that
    /// bid for the campaign across all nodes).
    pub share_ppm: u32,
    /// Lease wanted ahead: this many seconds of expected spend.
    pub lease_ahead_s: u64,
    /// Throttle a new campaign starts with (ppm) before it has data.
    pub initial_throttle_ppm: u32,
    /// The store's lease TTL (ms): renew every quarter of it, distrust a lease after three
    /// quarters of it without an answer.
    pub lease_ttl_ms: u64,
    /// Lease wanted at least (impressions at the campaign's highest price), so a cold core can
    /// answer a burst before the pacing step has measured the traffic.
    pub min_lease_impressions: i64,
    /// A campaign without an opportunity on this shard for this long gives its lease back
    /// (keeping what its outstanding reservations need), so idle cores do not sit on budget
    /// other cores and nodes could spend, ms.
    pub idle_return_ms: u64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            share_ppm: PPM,
            lease_ahead_s: 30,
            initial_throttle_ppm: 50_000,
            lease_ttl_ms: 60_000,
            min_lease_impressions: 64,
            idle_return_ms: 10_000,
        }
    }
}

/// A shard's request to the store for one campaign: report spend, ask for more lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOp {
    pub campaign_id: u32,
    /// Spend (micros) since the last op, taken out of this holder's lease.
    pub spent: i64,
    /// More lease wanted (micros); 0 = report/renew only; negative = give this much back.
    pub want: i64,
    /// Cost of one impression at the campaign's highest price (micros): the smallest useful
    /// grant ([`grant_for`]).
    pub unit: i64,
}

/// The store's answer: this holder's lease balance after the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub campaign_id: u32,
    pub granted: i64,
    pub balance: i64,
    /// Spend charged to this holder's lease by other nodes since its last op (bids it made that
    /// were billed elsewhere): already out of `balance`; counts towards the day's spend.
    pub remote_spent: i64,
}

/// Where leases come from. [`MemoryBudget`] here (tests, simulation); Redis in `control/`.
pub trait BudgetStore {
    /// Sets a campaign's remaining budget if it has none yet (first sight).
    fn init(&mut self, campaign_id: u32, total: i64);
    /// Applies `op` for `holder` atomically: reclaims expired leases of every holder, takes
    /// `spent` out of this holder's lease, grants up to `want` from the remaining budget, and
    /// renews this holder's lease expiry.
    fn exchange(&mut self, holder: &str, op: &LeaseOp, now_ms: u64) -> LeaseGrant;
    /// Charges `spent` to another holder's lease (a bid it made was billed here): reclaims
    /// expired leases, takes `spent` from `holder`'s lease (beyond it, or with no lease left,
    /// from the remaining budget, as overdraft) and records it for `holder`'s next grant
    /// ([`LeaseGrant::remote_spent`]). Never renews `holder`'s expiry.
    fn charge(&mut self, holder: &str, campaign_id: u32, spent: i64, now_ms: u64);
}

#[derive(Debug, Default)]
struct Account {
    remaining: i64,
    /// holder → (balance, expiry ms)
    leases: HashMap<String, (i64, u64)>,
    /// holder → spend charged by other nodes, not yet reported to it.
    remote: HashMap<String, i64>,
}

/// An in-process budget store with the same semantics as the Redis one.
#[derive(Debug)]
pub struct MemoryBudget {
    accounts: HashMap<u32, Account>,
    pub ttl_ms: u64,
    /// Spend reported beyond a holder's lease (late wins after expiry), micros.
    pub overdraft: i64,
}

impl MemoryBudget {
    pub fn new(ttl_ms: u64) -> MemoryBudget {
        MemoryBudget {
            accounts: HashMap::new(),
            ttl_ms,
            overdraft: 0,
        }
    }
    pub fn remaining(&self, campaign_id: u32) -> i64 {
        self.accounts.get(&campaign_id).map_or(0, |a| a.remaining)
    }
    pub fn balance(&self, campaign_id: u32, holder: &str) -> i64 {
        self.accounts
            .get(&campaign_id)
            .and_then(|a| a.leases.get(holder))
            .map_or(0, |l| l.0)
    }
}

impl BudgetStore for MemoryBudget {
    fn init(&mut self, campaign_id: u32, total: i64) {
        self.accounts.entry(campaign_id).or_insert_with(|| Account {
            remaining: total,
            ..Account::default()
        });
    }
    fn exchange(&mut self, holder: &str, op: &LeaseOp, now_ms: u64) -> LeaseGrant {
        let a = self.accounts.entry(op.campaign_id).or_default();
        a.reclaim(now_ms);
        let remote_spent = a.remote.remove(holder).unwrap_or(0);
        let l = a.leases.entry(holder.to_owned()).or_insert((0, 0));
        l.0 -= op.spent;
        if l.0 < 0 {
            // Spent more than the lease held (late wins after it expired): charge the budget.
            self.overdraft += -l.0;
            a.remaining += l.0;
            l.0 = 0;
        }
        let give = grant_for(op.want, a.remaining, op.unit);
        a.remaining -= give;
        l.0 += give;
        if op.want < 0 {
            // An idle holder gives lease back.
            let back = (-op.want).min(l.0);
            l.0 -= back;
            a.remaining += back;
        }
        l.1 = now_ms + self.ttl_ms;
        LeaseGrant {
            campaign_id: op.campaign_id,
            granted: give,
            balance: l.0,
            remote_spent,
        }
    }
    fn charge(&mut self, holder: &str, campaign_id: u32, spent: i64, now_ms: u64) {
        let a = self.accounts.entry(campaign_id).or_default();
        a.reclaim(now_ms);
        match a.leases.get_mut(holder) {
            Some(l) => {
                l.0 -= spent;
                if l.0 < 0 {
                    self.overdraft += -l.0;
                    a.remaining += l.0;
                    l.0 = 0;
                }
                *a.remote.entry(holder.to_owned()).or_insert(0) += spent;
            }
            None => {
                // The holder's lease is gone (expired: its balance already returned).
                self.overdraft += spent;
                a.remaining -= spent;
            }
        }
    }
}

impl Account {
    /// Returns every expired lease to the remaining budget.
    fn reclaim(&mut self, now_ms: u64) {
        let expired: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, (_, exp))| *exp <= now_ms)
            .map(|(h, _)| h.clone())
            .collect();
        for h in expired {
            if let Some((bal, _)) = self.leases.remove(&h) {
                self.remaining += bal.max(0);
            }
            self.remote.remove(&h);
        }
    }
}

/// One campaign's budget and pacing state on one shard.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub campaign_id: u32,
    /// Lease balance held (micros of spend), as last confirmed by the store minus spend since.
    pub lease: i64,
    /// Outstanding reservations: current and previous epoch.
    pub reserved: [i64; 2],
    /// Expired reservations not yet confirmed by the store: since the last op was taken, and
    /// carried by the op in flight (see the module doc).
    pub hold: [i64; 2],
    pub epoch: u64,
    /// Spend not yet reported to the store.
    pub spent_unreported: i64,
    /// An op for this campaign is with the store.
    pub in_flight: bool,
    /// The advertiser's day number and the spend in it.
    pub day: u64,
    pub day_spent: i64,
    pub total_spent: i64,
    /// Bid probability (ppm).
    pub throttle_ppm: u32,
    /// Opportunities (all checks passed before pacing) and admissions since the last tick.
    pub opps: u64,
    pub admitted: u64,
    /// Decayed opportunity rate (per second) and spend per admitted opportunity.
    opp_rate: f64,
    adm_sum: f64,
    spend_sum: f64,
    spend_tick: i64,
    last_tick_ns: u64,
    pub want: i64,
    /// When the last op was taken, and when the op whose answer last set `lease` was taken
    /// (0 = no lease confirmed), shard clock ns.
    op_taken_ns: u64,
    confirmed_ns: u64,
    /// An op in flight was taken at this time.
    in_flight_ns: u64,
    /// Renew the lease with the next op even with nothing to report or ask.
    renew: bool,
    /// Cost of one impression at the highest price (micros).
    unit: i64,
    /// Last tick that saw an opportunity (first tick: start), shard clock ns.
    last_opp_ns: u64,
    /// Times the lease was distrusted for want of an answer within three quarters of a TTL.
    pub lapses: u64,
}

impl Runtime {
    pub fn new(c: &CCampaign, cfg: &PacingConfig) -> Runtime {
        let paced = c.pacing == Pacing::Even && c.daily_budget.is_some();
        Runtime {
            campaign_id: c.id,
            lease: 0,
            reserved: [0, 0],
            epoch: 0,
            spent_unreported: 0,
            in_flight: false,
            day: 0,
            day_spent: 0,
            total_spent: 0,
            throttle_ppm: if paced { cfg.initial_throttle_ppm } else { PPM },
            opps: 0,
            admitted: 0,
            opp_rate: 0.0,
            adm_sum: 0.0,
            spend_sum: 0.0,
            spend_tick: 0,
            last_tick_ns: 0,
            want: 0,
            hold: [0, 0],
            op_taken_ns: 0,
            confirmed_ns: 0,
            in_flight_ns: 0,
            renew: false,
            unit: impression_cost(c.max_cpm),
            last_opp_ns: 0,
            lapses: 0,
        }
    }

    /// Lease not yet spent or reserved.
    pub fn available(&self) -> i64 {
        self.lease - self.reserved[0] - self.reserved[1] - self.hold[0] - self.hold[1]
    }

    fn daily_limit(c: &CCampaign, cfg: &PacingConfig) -> Option<i64> {
        c.daily_budget
            .map(|d| (i128::from(d.0) * i128::from(cfg.share_ppm) / i128::from(PPM)) as i64)
    }

    /// May this campaign bid `cost` now? (lease and daily limit; hot path, no allocation.)
    #[inline]
    pub fn covers(&self, c: &CCampaign, cfg: &PacingConfig, cost: i64) -> bool {
        if self.available() < cost {
            return false;
        }
        match Self::daily_limit(c, cfg) {
            Some(d) => self.day_spent + self.reserved[0] + self.reserved[1] + cost <= d,
            None => true,
        }
    }

    /// Reserves `cost` for a bid made now.
    #[inline]
    pub fn reserve(&mut self, cost: i64) {
        debug_assert!(cost > 0);
        self.reserved[0] += cost;
    }

    /// Settles a bid made at `bid_ns`: releases its reservation (if not released already by
    /// expiry) and spends `spent` (0 for a loss).
    pub fn settle(&mut self, bid_ns: u64, reserved: i64, spent: i64) {
        let e = bid_ns / EPOCH_NS;
        // A bid made after an epoch boundary but before the tick that saw it reserved in the
        // current slot: `>=`.
        if e >= self.epoch {
            self.reserved[0] = (self.reserved[0] - reserved).max(0);
        } else if e + 1 == self.epoch {
            self.reserved[1] = (self.reserved[1] - reserved).max(0);
        }
        self.lease -= spent;
        self.day_spent += spent;
        self.total_spent += spent;
        self.spent_unreported += spent;
        self.spend_tick += spent;
    }

    /// Releases the reservation of a bid made at `bid_ns` whose notice was settled on another
    /// node (its spend, if any, was charged to this holder's lease in the store). The amount is
    /// held until the store answers an op sent from now on, as for an expiry.
    pub fn release_remote(&mut self, bid_ns: u64, reserved: i64) {
        let e = bid_ns / EPOCH_NS;
        let slot = if e >= self.epoch {
            0
        } else if e + 1 == self.epoch {
            1
        } else {
            return; // Already expired (and held or confirmed).
        };
        let r = reserved.min(self.reserved[slot]).max(0);
        self.reserved[slot] -= r;
        self.hold[0] += r;
    }

    /// Periodic control step (between requests): epochs, day roll-over, throttle, lease want.
    pub fn tick(&mut self, c: &CCampaign, cfg: &PacingConfig, now_ns: u64) {
        let e = now_ns / EPOCH_NS;
        if e > self.epoch {
            // Reservations older than two epochs are presumed lost; held until the store
            // confirms the lease (the bid may have been billed on another node).
            if e == self.epoch + 1 {
                self.hold[0] += self.reserved[1];
                self.reserved[1] = self.reserved[0];
            } else {
                self.hold[0] += self.reserved[0] + self.reserved[1];
                self.reserved[1] = 0;
            }
            self.reserved[0] = 0;
            self.epoch = e;
        }
        let ttl_ns = cfg.lease_ttl_ms.saturating_mul(1_000_000);
        if self.confirmed_ns != 0 && now_ns >= self.confirmed_ns.saturating_add(ttl_ns / 4 * 3) {
            // No answer for three quarters of a TTL: the store may have reclaimed the lease.
            self.lease = self.lease.min(0);
            self.confirmed_ns = 0;
            self.lapses += 1;
        }
        if (self.lease > 0 || self.reserved != [0, 0])
            && now_ns >= self.op_taken_ns.saturating_add(ttl_ns / 4)
        {
            self.renew = true;
        }
        let local_s = (now_ns / 1_000_000_000).saturating_add_signed(i64::from(c.utc_offset_s));
        let day = local_s / DAY_S;
        if day != self.day {
            self.day = day;
            self.day_spent = 0;
        }
        let dt_s = if self.last_tick_ns == 0 || now_ns <= self.last_tick_ns {
            0.0
        } else {
            (now_ns - self.last_tick_ns) as f64 / 1e9
        };
        self.last_tick_ns = now_ns;
        if self.opps > 0 || self.last_opp_ns == 0 {
            self.last_opp_ns = now_ns;
        }
        let idle =
            now_ns.saturating_sub(self.last_opp_ns) >= cfg.idle_return_ms.saturating_mul(1_000_000);
        if dt_s > 0.0 {
            // Decayed sums: a window of about ten ticks.
            let rate = self.opps as f64 / dt_s;
            self.opp_rate = if self.opp_rate == 0.0 {
                rate
            } else {
                0.7 * self.opp_rate + 0.3 * rate
            };
            self.adm_sum = 0.9 * self.adm_sum + self.admitted as f64;
            self.spend_sum = 0.9 * self.spend_sum + self.spend_tick as f64;
        }
        self.opps = 0;
        self.admitted = 0;
        self.spend_tick = 0;
        let daily = Self::daily_limit(c, cfg);
        let per_opp = if self.adm_sum >= 5.0 && self.spend_sum > 0.0 {
            self.spend_sum / self.adm_sum
        } else {
            // No data yet: assume a 20% win rate at the base price.
            impression_cost(c.base_cpm) as f64 * 0.2
        };
        let ahead = cfg.lease_ahead_s as f64;
        let mut expected_ahead = self.opp_rate * ahead * per_opp;
        match (c.pacing, daily) {
            (Pacing::Even, Some(d)) if dt_s > 0.0 => {
                let frac_next = ((local_s % DAY_S) as f64 + dt_s) / DAY_S as f64;
                let target_next = d as f64 * frac_next.min(1.0);
                let need =
                    target_next - (self.day_spent + self.reserved[0] + self.reserved[1]) as f64;
                let supply = self.opp_rate * dt_s * per_opp;
                let p = if need <= 0.0 {
                    0.0
                } else if supply <= 0.0 {
                    1.0
                } else {
                    (need / supply).min(1.0)
                };
                self.throttle_ppm = (p * f64::from(PPM)) as u32;
                expected_ahead = expected_ahead.min(d as f64 / DAY_S as f64 * ahead * 4.0);
            }
            (Pacing::Even, Some(_)) => {}
            _ => self.throttle_ppm = PPM,
        }
        self.unit = impression_cost(c.max_cpm);
        let floor = self.unit * cfg.min_lease_impressions.max(1);
        // Reservations of bids awaiting their outcome are covered on top of the expected spend.
        let mut target = (expected_ahead as i64).max(floor) + self.reserved[0] + self.reserved[1];
        if let Some(d) = daily {
            target = target.min((d - self.day_spent).max(0));
        }
        if idle {
            // Give back what no outstanding bid needs (negative want).
            self.want = (-self.available()).min(0);
            return;
        }
        self.want = (target - self.available()).max(0);
    }

    /// Takes the op to send to the store, if any (spend to report or lease wanted).
    pub fn take_op(&mut self) -> Option<LeaseOp> {
        if self.in_flight
            || (self.want == 0 && self.spent_unreported == 0 && !self.renew && self.hold[0] == 0)
        {
            return None;
        }
        self.hold[1] += self.hold[0];
        self.hold[0] = 0;
        self.renew = false;
        self.op_taken_ns = self.last_tick_ns;
        self.in_flight_ns = self.last_tick_ns;
        let op = LeaseOp {
            campaign_id: self.campaign_id,
            spent: self.spent_unreported,
            want: self.want,
            unit: self.unit,
        };
        self.spent_unreported = 0;
        self.in_flight = true;
        Some(op)
    }

    /// Takes an op only if there is spend to report (between ticks: spend reaches the store
    /// within one poll, so a crash loses at most that much unreported spend).
    pub fn take_spend_op(&mut self) -> Option<LeaseOp> {
        if self.spent_unreported > 0 {
            self.take_op()
        } else {
            None
        }
    }

    /// Applies the store's answer: the balance it holds minus what was spent since the op left.
    pub fn grant(&mut self, g: &LeaseGrant) {
        // Confirmed as of when the op left (a grant without an op: as of the last tick).
        let sent = if self.in_flight {
            self.in_flight_ns
        } else {
            self.last_tick_ns
        };
        self.confirmed_ns = sent.max(1);
        self.lease = g.balance - self.spent_unreported;
        self.want = (self.want - g.granted).max(0);
        self.in_flight = false;
        self.hold[1] = 0;
        self.day_spent += g.remote_spent;
        self.total_spent += g.remote_spent;
        self.spend_tick += g.remote_spent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::CompiledSet;

    const S: u64 = 1_000_000_000;
    /// An epoch boundary, so tests know when reservations expire.
    const T0: u64 = 1_000 * EPOCH_NS;

    fn campaign() -> std::sync::Arc<CompiledSet> {
        CompiledSet::parse(
            br#"{"version":1,"campaigns":[{"id":9,"advertiser_id":1,"status":"active","bid_cpm_micros":2000000,"total_budget_micros":1000000,"creatives":[{"id":1,"format":{"type":"native"},"adm":"x"}]}]}"#,
        )
        .expect("valid set")
    }

    fn cfg() -> PacingConfig {
        PacingConfig {
            lease_ttl_ms: 4_000,
            ..PacingConfig::default()
        }
    }

    /// [`cfg`] with leases that outlive the test (10 minutes): only what the test does expires.
    fn long_ttl() -> PacingConfig {
        PacingConfig {
            lease_ttl_ms: 600_000,
            ..cfg()
        }
    }

    /// The fixture most tests start from: a store seeded with campaign 9's budget (1,000,000)
    /// whose leases live `store_ttl_ms`, and a core's runtime for `c` after its first tick at
    /// [`T0`] (its first lease op pending).
    fn ticked(c: &CCampaign, cfg: &PacingConfig, store_ttl_ms: u64) -> (MemoryBudget, Runtime) {
        let mut store = MemoryBudget::new(store_ttl_ms);
        store.init(9, 1_000_000);
        let mut rt = Runtime::new(c, cfg);
        rt.tick(c, cfg, T0);
        (store, rt)
    }

    /// [`ticked`], then the first lease op answered by the store: the runtime holds its lease.
    fn leased(c: &CCampaign, cfg: &PacingConfig, store_ttl_ms: u64) -> (MemoryBudget, Runtime) {
        let (mut store, mut rt) = ticked(c, cfg, store_ttl_ms);
        exchange(&mut rt, &mut store, "a:0", T0);
        (store, rt)
    }

    /// One exchange with the store at `now_ns`.
    fn exchange(rt: &mut Runtime, store: &mut MemoryBudget, holder: &str, now_ns: u64) -> bool {
        match rt.take_op() {
            Some(op) => {
                let g = store.exchange(holder, &op, now_ns / 1_000_000);
                rt.grant(&g);
                true
            }
            None => false,
        }
    }

    #[test]
    fn renews_every_quarter_ttl_and_distrusts_an_unanswered_lease() {
        let set = campaign();
        let c = &set.compiled[0];
        let cfg = cfg();
        let (mut store, mut rt) = ticked(c, &cfg, 4_000);
        assert!(exchange(&mut rt, &mut store, "a:0", T0));
        let lease = rt.lease;
        assert!(lease > 0);
        // Want met, nothing spent: no op until a quarter TTL has passed, then a renewal.
        rt.tick(c, &cfg, T0 + S / 2);
        assert!(rt.want == 0 && rt.take_op().is_none());
        rt.tick(c, &cfg, T0 + S);
        let op = rt.take_op().expect("renewal");
        assert_eq!((op.spent, op.want), (0, 0));
        // That op is never answered (store unreachable): at 3/4 TTL after the last confirmed
        // op (T0) the lease is no longer spendable.
        rt.tick(c, &cfg, T0 + 2 * S);
        assert_eq!(rt.lease, lease);
        rt.tick(c, &cfg, T0 + 3 * S);
        assert_eq!((rt.lease, rt.lapses), (0, 1));
        assert!(!rt.covers(c, &cfg, 1));
        // The late answer restores what the store still holds (it renewed the expiry).
        let g = store.exchange("a:0", &op, (T0 + 3 * S) / 1_000_000);
        rt.grant(&g);
        assert_eq!(rt.lease, lease);
    }

    #[test]
    fn expired_reservations_wait_for_the_store_and_remote_spend_counts() {
        let set = campaign();
        let c = &set.compiled[0];
        let cfg = long_ttl();
        let (mut store, mut rt) = leased(c, &cfg, 600_000);
        let lease = rt.lease;
        // A bid reserves 2,000; it is billed (1,500) on another node, which charges our lease.
        rt.reserve(2_000);
        store.charge("a:0", 9, 1_500, T0 / 1_000_000 + 10);
        assert_eq!(store.balance(9, "a:0"), lease - 1_500);
        // Two epochs later the reservation expires but stays held until the store answers.
        rt.tick(c, &cfg, T0 + EPOCH_NS);
        assert_eq!(rt.available(), lease - 2_000);
        rt.tick(c, &cfg, T0 + 2 * EPOCH_NS);
        assert_eq!(rt.reserved, [0, 0]);
        assert_eq!(rt.available(), lease - 2_000, "held, not spendable yet");
        let op = rt.take_op().expect("an expiry forces an op");
        let g = store.exchange("a:0", &op, (T0 + 2 * EPOCH_NS) / 1_000_000);
        assert_eq!(g.remote_spent, 1_500);
        rt.grant(&g);
        assert_eq!(rt.hold, [0, 0]);
        assert_eq!(rt.available(), g.balance);
        assert_eq!((rt.day_spent, rt.total_spent), (1_500, 1_500));
        // The spend is in the store exactly once.
        let leased = store.balance(9, "a:0");
        assert_eq!(store.remaining(9) + leased, 1_000_000 - 1_500);
    }

    #[test]
    fn a_charge_to_an_expired_lease_comes_from_the_remaining_budget() {
        let mut store = MemoryBudget::new(1_000);
        store.init(9, 10_000);
        let op = LeaseOp {
            campaign_id: 9,
            spent: 0,
            want: 4_000,
            unit: 10_000,
        };
        assert_eq!(store.exchange("dead:0", &op, 0).granted, 4_000);
        // The holder died; its lease returns, and a late billing for its bid is still charged.
        store.charge("dead:0", 9, 700, 5_000);
        assert_eq!(store.remaining(9), 10_000 - 700);
        assert_eq!(store.overdraft, 700);
    }

    #[test]
    fn a_grant_is_at_most_a_quarter_of_what_remains_but_one_impression() {
        assert_eq!(grant_for(1_000_000, 1_000_000, 2_500), 250_000);
        assert_eq!(grant_for(100_000, 1_000_000, 2_500), 100_000);
        // Little left: one impression's cost, then what is left.
        assert_eq!(grant_for(50_000, 8_000, 2_500), 2_500);
        assert_eq!(grant_for(50_000, 1_000, 2_500), 1_000);
        assert_eq!(grant_for(50_000, -300, 2_500), 0);
        // No overflow near the Lua bound (2^53).
        assert_eq!(grant_for(i64::MAX, 1 << 53, 1), (1 << 53) / 4);
    }

    #[test]
    fn a_remote_release_frees_the_reservation_after_the_store_answers() {
        let set = campaign();
        let c = &set.compiled[0];
        let cfg = long_ttl();
        let (mut store, mut rt) = leased(c, &cfg, 600_000);
        let lease = rt.lease;
        rt.reserve(2_000);
        rt.reserve(2_000);
        // One bid lost on another node: released, but held until the store answers.
        rt.release_remote(T0 + S, 2_000);
        assert_eq!(rt.reserved, [2_000, 0]);
        assert_eq!(rt.available(), lease - 4_000);
        rt.tick(c, &cfg, T0 + S);
        assert!(
            exchange(&mut rt, &mut store, "a:0", T0 + S),
            "the release forces an op"
        );
        assert_eq!(rt.available(), rt.lease - 2_000);
        // A release for a bid older than two epochs changes nothing (it expired already).
        rt.release_remote(T0 - 2 * EPOCH_NS, 2_000);
        assert_eq!(rt.reserved, [2_000, 0]);
        assert_eq!(rt.hold, [0, 0]);
    }

    #[test]
    fn an_idle_campaign_gives_its_lease_back_but_what_bids_still_need() {
        let set = campaign();
        let c = &set.compiled[0];
        let cfg = PacingConfig {
            idle_return_ms: 2_000,
            ..long_ttl()
        };
        let (mut store, mut rt) = leased(c, &cfg, 4_000);
        assert!(rt.lease >= 64 * 2_000, "a cold core gets a burst's worth");
        rt.reserve(2_000);
        // Opportunities keep it: no give-back.
        rt.opps = 3;
        rt.tick(c, &cfg, T0 + S);
        assert!(rt.want >= 0);
        // Two seconds without one: all but the outstanding reservation goes back.
        rt.tick(c, &cfg, T0 + 2 * S);
        rt.tick(c, &cfg, T0 + 3 * S);
        assert!(rt.want < 0);
        assert!(exchange(&mut rt, &mut store, "a:0", T0 + 3 * S));
        assert_eq!(rt.lease, 2_000);
        assert_eq!(store.balance(9, "a:0"), 2_000);
        assert_eq!(store.remaining(9), 1_000_000 - 2_000);
        // Traffic again: the floor is asked for at the next tick.
        rt.opps = 1;
        rt.tick(c, &cfg, T0 + 3 * S + S / 4);
        assert!(rt.want > 0);
    }

    #[test]
    fn a_bid_made_past_an_epoch_boundary_before_the_tick_settles() {
        let set = campaign();
        let c = &set.compiled[0];
        let cfg = long_ttl();
        let mut rt = Runtime::new(c, &cfg);
        rt.tick(c, &cfg, T0 + EPOCH_NS - S / 10);
        rt.lease = 10_000;
        // The bid is made (and settled) 0.2 s later, in the next epoch, before the next tick.
        rt.reserve(2_000);
        rt.settle(T0 + EPOCH_NS + S / 10, 2_000, 1_500);
        assert_eq!(rt.reserved, [0, 0]);
        assert_eq!(rt.available(), 8_500);
    }
}

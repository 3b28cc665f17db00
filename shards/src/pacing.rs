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
//! Lease lifetime: the store takes a holder's lease away `lease_ttl_ms` after its last exchange
//! (a dead node's lease is forfeited: see below). So a shard renews every quarter TTL even with nothing to ask,
//! and stops trusting a lease three quarters of a TTL after the op that last confirmed it was
//! sent (its own clock only: no clock skew with the store matters). Reservations that expire
//! unsettled are not spendable again until the store has answered an op sent after the
//! expiry: the bid may have been billed on another node, which charged this holder's lease in
//! the store ([`LeaseGrant::remote_spent`]).
//!
//! A holder's death never returns its lease to the budget (overspend impossible by construction,
//! not by timing): a holder may have spent up to its whole balance without reporting it yet (a
//! SIGKILL, an OOM kill, a lost node), so a lease that leaves its holder without the holder's
//! final settlement — it expires, or a new incarnation of the holder (a restarted process,
//! [`LeaseOp::incarnation_ms`]) takes the holder's name over — moves to the holder's *forfeit*:
//! counted as spent, never granted again. Billing for the dead incarnation's bids (and a lapsed
//! holder's late spend report) is charged to that forfeit first, so it is not counted twice.
//! What is left in a forfeit is the underspend: at most the dead holder's balance (its spend not
//! yet reported is taken out of it, the rest was never spent). A holder shutting down cleanly
//! settles finally ([`LeaseOp::keep`]): it reports its spend and gives back everything but what
//! its outstanding bids reserved, so only that amount is forfeited after a clean restart.
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
    /// The holder process's incarnation (its start, unix ms; set by the control thread, 0 =
    /// unknown: never takes a lease over). The first op of a new incarnation retires the lease
    /// the holder's name had: it is forfeited (counted as spent), not inherited.
    pub incarnation_ms: u64,
    /// Final settlement (clean shutdown): after `spent` is taken out, the holder keeps at most
    /// this much (what its outstanding bids reserved) and gives the rest back; `want` is
    /// ignored. `None` for every other op.
    pub keep: Option<i64>,
}

impl LeaseOp {
    /// An op with no incarnation and no final settlement (fields as named).
    pub fn new(campaign_id: u32, spent: i64, want: i64, unit: i64) -> LeaseOp {
        LeaseOp {
            campaign_id,
            spent,
            want,
            unit,
            incarnation_ms: 0,
            keep: None,
        }
    }
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
    /// Applies `op` for `holder` atomically: forfeits expired leases of every holder and, when
    /// `op` comes from a new incarnation of `holder`, the lease the old one left; takes `spent`
    /// out of this holder's lease (beyond it, out of its forfeit, then the remaining budget);
    /// grants up to `want` from the remaining budget (or, with `keep`, gives back all but that);
    /// and renews this holder's lease expiry.
    fn exchange(&mut self, holder: &str, op: &LeaseOp, now_ms: u64) -> LeaseGrant;
    /// Charges `spent` to another holder's lease (a bid it made at `bid_ms`, unix ms, was billed
    /// here): reclaims expired leases; a bid of the holder's current incarnation is taken from
    /// its lease and recorded for its next grant ([`LeaseGrant::remote_spent`]); a bid of an
    /// earlier incarnation (before the current one started), or one whose lease is gone, is
    /// taken from the holder's forfeit. Beyond both: from the remaining budget, as overdraft.
    /// Never renews `holder`'s expiry.
    fn charge(&mut self, holder: &str, campaign_id: u32, spent: i64, bid_ms: u64, now_ms: u64);
}

#[derive(Debug, Default)]
struct Account {
    remaining: i64,
    /// holder → (balance, expiry ms)
    leases: HashMap<String, (i64, u64)>,
    /// holder → spend charged by other nodes, not yet reported to it.
    remote: HashMap<String, i64>,
    /// holder → lease balances it lost without settling them (counted as spent).
    forfeit: HashMap<String, i64>,
    /// holder → incarnation (start, unix ms) that holds its lease.
    incarnation: HashMap<String, u64>,
    /// Forfeited in total (micros), and charged back out of forfeits since.
    forfeited: i64,
    forfeit_charged: i64,
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
    /// What `holder` lost without settling it and was not charged since (micros).
    pub fn forfeit(&self, campaign_id: u32, holder: &str) -> i64 {
        self.accounts
            .get(&campaign_id)
            .and_then(|a| a.forfeit.get(holder))
            .copied()
            .unwrap_or(0)
    }
    /// Forfeited in total for a campaign, and charged out of its forfeits since (micros).
    pub fn forfeited(&self, campaign_id: u32) -> (i64, i64) {
        self.accounts
            .get(&campaign_id)
            .map_or((0, 0), |a| (a.forfeited, a.forfeit_charged))
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
        if op.incarnation_ms != 0 && a.incarnation.get(holder) != Some(&op.incarnation_ms) {
            // A new incarnation of the holder: what the old one held is forfeited, not inherited.
            a.retire(holder);
            a.incarnation.insert(holder.to_owned(), op.incarnation_ms);
        }
        let remote_spent = a.remote.remove(holder).unwrap_or(0);
        let l = a.leases.entry(holder.to_owned()).or_insert((0, 0));
        l.0 -= op.spent;
        if l.0 < 0 {
            // Spent more than the lease held (late wins after it expired): the holder's forfeit
            // pays first (its lost lease covered that spend), then the budget (overdraft).
            let beyond = -l.0;
            l.0 = 0;
            self.overdraft += a.charge_forfeit(holder, beyond);
        }
        let l = a.leases.entry(holder.to_owned()).or_insert((0, 0));
        if let Some(keep) = op.keep {
            // Final settlement: give back all but what outstanding bids reserved.
            let back = (l.0 - keep.max(0)).max(0);
            l.0 -= back;
            a.remaining += back;
            l.1 = now_ms + self.ttl_ms;
            return LeaseGrant {
                campaign_id: op.campaign_id,
                granted: 0,
                balance: l.0,
                remote_spent,
            };
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
    fn charge(&mut self, holder: &str, campaign_id: u32, spent: i64, bid_ms: u64, now_ms: u64) {
        let a = self.accounts.entry(campaign_id).or_default();
        a.reclaim(now_ms);
        let earlier = a.incarnation.get(holder).is_some_and(|&inc| bid_ms < inc);
        match a.leases.get_mut(holder) {
            Some(l) if !earlier => {
                l.0 -= spent;
                let mut beyond = 0;
                if l.0 < 0 {
                    beyond = -l.0;
                    l.0 = 0;
                }
                *a.remote.entry(holder.to_owned()).or_insert(0) += spent;
                self.overdraft += a.charge_forfeit(holder, beyond);
            }
            // The bid's incarnation is gone (restarted or expired): its lease was forfeited.
            _ => self.overdraft += a.charge_forfeit(holder, spent),
        }
    }
}

impl Account {
    /// Forfeits every expired lease (its holder did not renew it: dead, or cut off).
    fn reclaim(&mut self, now_ms: u64) {
        let expired: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, (_, exp))| *exp <= now_ms)
            .map(|(h, _)| h.clone())
            .collect();
        for h in expired {
            self.retire(&h);
        }
    }

    /// Moves `holder`'s lease to its forfeit: counted as spent, never granted again.
    fn retire(&mut self, holder: &str) {
        if let Some((bal, _)) = self.leases.remove(holder) {
            let bal = bal.max(0);
            *self.forfeit.entry(holder.to_owned()).or_insert(0) += bal;
            self.forfeited += bal;
        }
        self.remote.remove(holder);
    }

    /// Takes `spent` out of `holder`'s forfeit; returns what the forfeit could not cover (taken
    /// from the remaining budget instead: overdraft).
    fn charge_forfeit(&mut self, holder: &str, spent: i64) -> i64 {
        if spent <= 0 {
            return 0;
        }
        let f = self.forfeit.get_mut(holder).map_or(0, |f| {
            let take = spent.min(*f).max(0);
            *f -= take;
            take
        });
        self.forfeit_charged += f;
        let beyond = spent - f;
        self.remaining -= beyond;
        beyond
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
        let op = LeaseOp::new(
            self.campaign_id,
            self.spent_unreported,
            self.want,
            self.unit,
        );
        self.spent_unreported = 0;
        self.in_flight = true;
        Some(op)
    }

    /// The final settlement (clean shutdown): reports the spend not yet reported and keeps only
    /// what outstanding bids reserved (their billing may still come); even with an op in
    /// flight (the store answers ops in order). `None` when this shard never held a lease and
    /// has nothing to report.
    pub fn close_op(&mut self) -> Option<LeaseOp> {
        let keep = self.reserved[0] + self.reserved[1] + self.hold[0] + self.hold[1];
        if self.op_taken_ns == 0 && self.spent_unreported == 0 {
            return None;
        }
        let mut op = LeaseOp::new(self.campaign_id, self.spent_unreported, 0, self.unit);
        op.keep = Some(keep.max(0));
        self.spent_unreported = 0;
        self.lease = 0;
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
        store.charge("a:0", 9, 1_500, T0 / 1_000_000, T0 / 1_000_000 + 10);
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
    fn a_lease_expiring_without_settlement_is_forfeited_and_pays_its_late_billing() {
        let mut store = MemoryBudget::new(1_000);
        store.init(9, 10_000);
        let op = LeaseOp::new(9, 0, 4_000, 10_000);
        assert_eq!(store.exchange("dead:0", &op, 0).granted, 4_000);
        // The holder died (it may have spent all 4,000 without reporting it): at expiry its
        // lease is counted as spent, not returned.
        let g = store.exchange("live:0", &LeaseOp::new(9, 0, 100_000, 10_000), 5_000);
        assert_eq!(g.granted, 6_000, "only what was never leased");
        assert_eq!(store.forfeit(9, "dead:0"), 4_000);
        // A late billing for its bid comes out of the forfeit: no overdraft, no double count.
        store.charge("dead:0", 9, 700, 10, 5_001);
        assert_eq!((store.forfeit(9, "dead:0"), store.overdraft), (3_300, 0));
        assert_eq!(store.remaining(9), 0);
        // Beyond the forfeit: overdraft from the remaining budget.
        store.charge("dead:0", 9, 3_500, 10, 5_002);
        assert_eq!((store.forfeit(9, "dead:0"), store.overdraft), (0, 200));
        assert_eq!(store.remaining(9), -200);
        assert_eq!(store.forfeited(9), (4_000, 4_000));
    }

    #[test]
    fn a_restarted_holder_forfeits_its_predecessors_lease_instead_of_inheriting_it() {
        let mut store = MemoryBudget::new(60_000);
        store.init(9, 20_000);
        let mut op = LeaseOp::new(9, 0, 4_000, 1_000);
        op.incarnation_ms = 100;
        assert_eq!(store.exchange("n:0", &op, 100).balance, 4_000);
        // Incarnation 100 reports 1,000, then spends 1,500 more and is SIGKILLed before
        // reporting it. Restarted as incarnation 5,000 under the same name, it asks again.
        op.spent = 1_000;
        op.want = 0;
        assert_eq!(store.exchange("n:0", &op, 200).balance, 3_000);
        let mut op2 = LeaseOp::new(9, 0, 4_000, 1_000);
        op2.incarnation_ms = 5_000;
        let g = store.exchange("n:0", &op2, 5_000);
        assert_eq!(
            (g.granted, g.balance),
            (4_000, 4_000),
            "a fresh lease, nothing inherited"
        );
        assert_eq!(store.forfeit(9, "n:0"), 3_000);
        // The predecessor's billing arriving now (bid at 4,000 ms < 5,000) is charged to the
        // forfeit, not to the new lease; a bid of the new incarnation is charged to its lease.
        store.charge("n:0", 9, 1_500, 4_000, 5_010);
        assert_eq!(
            (store.forfeit(9, "n:0"), store.balance(9, "n:0")),
            (1_500, 4_000)
        );
        store.charge("n:0", 9, 800, 5_005, 5_020);
        assert_eq!(
            (store.forfeit(9, "n:0"), store.balance(9, "n:0")),
            (1_500, 3_200)
        );
        // Conservation: remaining + leases + forfeit + charged spend = the budget; the 1,500
        // left in the forfeit is the underspend (the killed process's bids that were never
        // billed, or its spend lost with it and billed nowhere).
        assert_eq!(store.overdraft, 0);
        assert_eq!(
            store.remaining(9) + 3_200 + 1_500 + (1_000 + 1_500 + 800),
            20_000
        );
        // The same incarnation again retires nothing.
        op2.want = 0;
        assert_eq!(store.exchange("n:0", &op2, 5_030).balance, 3_200);
        assert_eq!(store.forfeit(9, "n:0"), 1_500);
    }

    #[test]
    fn a_clean_close_gives_back_all_but_the_reservations() {
        let set = campaign();
        let c = &set.compiled[0];
        let cfg = PacingConfig {
            lease_ttl_ms: 600_000,
            ..cfg()
        };
        let mut store = MemoryBudget::new(600_000);
        store.init(9, 1_000_000);
        let mut rt = Runtime::new(c, &cfg);
        assert!(rt.close_op().is_none(), "never leased: nothing to settle");
        rt.tick(c, &cfg, T0);
        exchange(&mut rt, &mut store, "a:0", T0);
        let lease = rt.lease;
        rt.reserve(2_000);
        rt.reserve(2_000);
        rt.settle(T0, 2_000, 1_500);
        // An op is in flight when the shutdown comes: the close goes anyway, after it.
        rt.tick(c, &cfg, T0 + S);
        rt.renew = true;
        let pending = rt.take_op().expect("op");
        let close = rt.close_op().expect("close");
        assert_eq!((close.spent, close.keep), (0, Some(2_000)));
        assert_eq!(pending.spent, 1_500);
        store.exchange("a:0", &pending, (T0 + S) / 1_000_000);
        let g = store.exchange("a:0", &close, (T0 + S) / 1_000_000);
        assert_eq!(g.balance, 2_000, "the outstanding bid's reservation stays");
        assert_eq!(store.remaining(9), 1_000_000 - 1_500 - 2_000);
        assert!(lease > 2_000);
    }

    /// A tiny deterministic generator (xorshift64*), for the simulation below.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    /// One simulated process (a holder's incarnation) bidding from its lease.
    struct Proc {
        name: String,
        alive: bool,
        inc_ms: u64,
        lease: i64,
        reserved: i64,
        /// Reservations of bids charged through the store: spendable again once the store
        /// has answered (as `Runtime::hold`).
        hold: i64,
        unreported: i64,
        down_until: u64,
    }

    /// Three holders on two nodes bid a 200,000 µ budget away for 60 s; each is SIGKILLed at
    /// random (its unreported spend dies with it) and restarted under its name 0.5–2 s later;
    /// every bid is billed at its full reservation 0–3 s later, its notice settled by the
    /// bidding process if it is still the same incarnation, else charged through the store
    /// (another node, or the restarted one), or lost with a dead process. Returns the spend
    /// billed (everything billed, delivered or not) and what was left forfeited.
    fn kill_simulation(seed: u64, incarnations: bool) -> (i64, i64) {
        const BUDGET: i64 = 200_000;
        const COST: i64 = 2_500;
        let mut rng = Rng(seed | 1);
        let mut store = MemoryBudget::new(10_000);
        store.init(9, BUDGET);
        let mut procs: Vec<Proc> = ["a:0", "a:1", "b:0"]
            .iter()
            .map(|n| Proc {
                name: (*n).to_owned(),
                alive: true,
                inc_ms: 1,
                lease: 0,
                reserved: 0,
                hold: 0,
                unreported: 0,
                down_until: 0,
            })
            .collect();
        // (bill at ms, bidder index, bidder incarnation, bid ms)
        let mut bids: Vec<(u64, usize, u64, u64)> = Vec::new();
        let mut billed = 0;
        for now in (1..60_000u64).step_by(10) {
            for (i, p) in procs.iter_mut().enumerate() {
                if !p.alive {
                    if now >= p.down_until {
                        *p = Proc {
                            name: p.name.clone(),
                            alive: true,
                            inc_ms: now,
                            lease: 0,
                            reserved: 0,
                            hold: 0,
                            unreported: 0,
                            down_until: 0,
                        };
                    }
                    continue;
                }
                if rng.below(400) == 0 {
                    // SIGKILL: the unreported spend and the local state are gone.
                    p.alive = false;
                    p.down_until = now + 500 + rng.below(1_500);
                    continue;
                }
                if rng.below(25) == 0 {
                    let mut op = LeaseOp::new(9, p.unreported, 5 * COST, COST);
                    op.incarnation_ms = if incarnations { p.inc_ms } else { 0 };
                    let g = store.exchange(&p.name, &op, now);
                    p.unreported = 0;
                    p.lease = g.balance;
                    p.reserved -= p.hold;
                    p.hold = 0;
                }
                if p.lease - p.reserved >= COST && rng.below(3) == 0 {
                    p.reserved += COST;
                    bids.push((now + rng.below(3_000), i, p.inc_ms, now));
                }
            }
            let due: Vec<_> = bids.iter().copied().filter(|b| b.0 <= now).collect();
            bids.retain(|b| b.0 > now);
            for (_, i, inc, bid_ms) in due {
                billed += COST;
                // The notice reaches the bidding node or the other one.
                let to_bidder = rng.below(2) == 0;
                let p = &mut procs[i];
                if to_bidder && p.alive && p.inc_ms == inc {
                    p.reserved -= COST;
                    p.lease -= COST;
                    p.unreported += COST;
                } else if to_bidder && !p.alive {
                    // Lost: nobody received it (the impression was still billed).
                } else {
                    let name = p.name.clone();
                    let bid = if incarnations { bid_ms } else { u64::MAX };
                    store.charge(&name, 9, COST, bid, now);
                    if p.alive && p.inc_ms == inc {
                        p.hold += COST;
                    }
                }
            }
        }
        (billed, store.forfeited(9).0 - store.forfeited(9).1)
    }

    #[test]
    fn no_sequence_of_kills_and_restarts_overspends() {
        let mut old_over = 0;
        for seed in 1..=200 {
            let (billed, left) = kill_simulation(seed * 7_919, true);
            assert!(billed <= 200_000, "seed {seed}: billed {billed} on 200,000");
            assert!(left >= 0 && left <= 200_000 - billed + 200_000);
            if kill_simulation(seed * 7_919, false).0 > 200_000 {
                old_over += 1;
            }
        }
        // The simulation bites: inheriting a dead incarnation's lease (no incarnations) overspends.
        assert!(old_over > 0, "the simulation never reaches the window");
        println!("inheriting leases overspent in {old_over} of 200 runs; forfeiting: 0");
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

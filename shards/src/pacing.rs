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
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            share_ppm: PPM,
            lease_ahead_s: 30,
            initial_throttle_ppm: 50_000,
        }
    }
}

/// A shard's request to the store for one campaign: report spend, ask for more lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOp {
    pub campaign_id: u32,
    /// Spend (micros) since the last op, taken out of this holder's lease.
    pub spent: i64,
    /// More lease wanted (micros); 0 = report/renew only.
    pub want: i64,
}

/// The store's answer: this holder's lease balance after the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub campaign_id: u32,
    pub granted: i64,
    pub balance: i64,
}

/// Where leases come from. [`MemoryBudget`] here (tests, simulation); Redis in `control/`.
pub trait BudgetStore {
    /// Sets a campaign's remaining budget if it has none yet (first sight).
    fn init(&mut self, campaign_id: u32, total: i64);
    /// Applies `op` for `holder` atomically: reclaims expired leases of every holder, takes
    /// `spent` out of this holder's lease, grants up to `want` from the remaining budget, and
    /// renews this holder's lease expiry.
    fn exchange(&mut self, holder: &str, op: &LeaseOp, now_ms: u64) -> LeaseGrant;
}

#[derive(Debug, Default)]
struct Account {
    remaining: i64,
    /// holder → (balance, expiry ms)
    leases: HashMap<String, (i64, u64)>,
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
            leases: HashMap::new(),
        });
    }
    fn exchange(&mut self, holder: &str, op: &LeaseOp, now_ms: u64) -> LeaseGrant {
        let a = self.accounts.entry(op.campaign_id).or_default();
        let expired: Vec<String> = a
            .leases
            .iter()
            .filter(|(_, (_, exp))| *exp <= now_ms)
            .map(|(h, _)| h.clone())
            .collect();
        for h in expired {
            if let Some((bal, _)) = a.leases.remove(&h) {
                a.remaining += bal.max(0);
            }
        }
        let l = a.leases.entry(holder.to_owned()).or_insert((0, 0));
        l.0 -= op.spent;
        if l.0 < 0 {
            // Spent more than the lease held (late wins after it expired): charge the budget.
            self.overdraft += -l.0;
            a.remaining += l.0;
            l.0 = 0;
        }
        let give = op.want.min(a.remaining).max(0);
        a.remaining -= give;
        l.0 += give;
        l.1 = now_ms + self.ttl_ms;
        LeaseGrant {
            campaign_id: op.campaign_id,
            granted: give,
            balance: l.0,
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
        }
    }

    /// Lease not yet spent or reserved.
    pub fn available(&self) -> i64 {
        self.lease - self.reserved[0] - self.reserved[1]
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
        if e == self.epoch {
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

    /// Periodic control step (between requests): epochs, day roll-over, throttle, lease want.
    pub fn tick(&mut self, c: &CCampaign, cfg: &PacingConfig, now_ns: u64) {
        let e = now_ns / EPOCH_NS;
        if e > self.epoch {
            if e == self.epoch + 1 {
                self.reserved[1] = self.reserved[0];
            } else {
                self.reserved[1] = 0;
            }
            self.reserved[0] = 0;
            self.epoch = e;
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
        let floor = impression_cost(c.max_cpm) * 4;
        // Reservations of bids awaiting their outcome are covered on top of the expected spend.
        let mut target = (expected_ahead as i64).max(floor) + self.reserved[0] + self.reserved[1];
        if let Some(d) = daily {
            target = target.min((d - self.day_spent).max(0));
        }
        self.want = (target - self.available()).max(0);
    }

    /// Takes the op to send to the store, if any (spend to report or lease wanted).
    pub fn take_op(&mut self) -> Option<LeaseOp> {
        if self.in_flight || (self.want == 0 && self.spent_unreported == 0) {
            return None;
        }
        let op = LeaseOp {
            campaign_id: self.campaign_id,
            spent: self.spent_unreported,
            want: self.want,
        };
        self.spent_unreported = 0;
        self.in_flight = true;
        Some(op)
    }

    /// Applies the store's answer: the balance it holds minus what was spent since the op left.
    pub fn grant(&mut self, g: &LeaseGrant) {
        self.lease = g.balance - self.spent_unreported;
        self.want = (self.want - g.granted).max(0);
        self.in_flight = false;
    }
}

//! Budget enforcement on the appliance: which store holds the budgets, the control thread that
//! exchanges each core's lease ops with it, and the settlement of win/billing/loss notices.
//!
//! Store ([`start`]): with `budget.enforce` (the default) the node runs the `control` crate's
//! thread — with live campaigns (`bidding.campaigns_redis_url`) that is the campaign feed's
//! thread, which also carries the leases; with a campaigns file it is a budget-only thread. The
//! budgets live in Redis (`budget.redis_url`, else the campaigns Redis: shared by every node)
//! or, with no Redis at all, in that thread's own memory, seeded from the file (per node).
//!
//! Settlement ([`CoreBudget::on_notice`], on the core that received the notice): a notice
//! carries, signed, the reservation of its bid (`rv`) and the core that holds it (`co` on node
//! `n`). Billing spends the clearing cost; loss spends nothing; both release the reservation.
//! Win notices change nothing (the charge comes with billing). Where the bid was made decides:
//! - a previous incarnation of this node (the bid predates this process: it was SIGKILLed or
//!   restarted, and its lease was forfeited, `shards::pacing`): charged through the store to
//!   the holder's forfeit, never to this process's lease (that would count it twice);
//! - this core: `Shard::settle` at once;
//! - another core of this node: pushed into that core's inbound queue (bounded, lock-free),
//!   which it settles on its timer ([`CoreBudget::drain`]);
//! - another node (or a queue that is full): this node's control thread charges the spend to
//!   the bidding holder's lease in the store ([`control::Charge`]) and queues the release for
//!   the bidding node, whose control thread hands it to the core; that core holds the released
//!   amount until its next lease exchange confirms the lease (which also tells it the spend).
//!   With the in-process store (no Redis, one node) only the charge applies; the reservation of
//!   a bid of an unknown node has nothing to release.
//!
//! Each core owns its [`CoreBudget`]; cores share only the inbound queues and their own counter
//! slots (relaxed stores on the timer, read by the admin thread). Must never: lock, allocate,
//! or do I/O on a bidding core (queue pushes and pops only), or settle a notice twice on purpose
//! (an exchange repeating a notice is charged again: conservative, see docs/CAMPAIGNS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context;
use codec::Micros;
use codec::event::InlineStr;
use control::{Charge, Charger, Control, ControlConfig, ControlStats};
use crossbeam_queue::ArrayQueue;
use pipeline::notice::{NoticeKind, VerifiedNotice};
use shards::pacing::impression_cost;
use shards::{CompiledSet, Shard};

use crate::campaign_feed::{CoreFeed, LiveStatus};
use crate::config::Config;

/// Settlements forwarded to one core, at most (full → billing is charged through the store).
pub const SETTLE_QUEUE: usize = 16_384;

/// A notice for a bid another core of this node made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    pub campaign_id: u32,
    pub bid_ts_unix_ns: u64,
    pub reserved: i64,
    pub spent: i64,
}

/// The spend (micros of USD) of a billing notice: the clearing CPM's cost of one impression,
/// never more than the bid reserved. In another currency, the reservation scaled by the ratio
/// of the clearing price to our bid (both in that currency), rounded up.
pub fn spend_of(v: &VerifiedNotice) -> i64 {
    let Some(price) = v.price else { return 0 };
    let reserved = v.reserved.0;
    let s = if &v.currency == b"USD" {
        impression_cost(price)
    } else if v.bid_price.0 > 0 {
        let num = i128::from(reserved) * i128::from(price.0.max(0));
        let den = i128::from(v.bid_price.0);
        i64::try_from((num + den - 1) / den).unwrap_or(reserved)
    } else {
        reserved
    };
    s.clamp(0, reserved)
}

/// Per-core counters, owned by the core.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Settled on this core: its own bids.
    pub settled_local: u64,
    /// Forwarded to the core that made the bid.
    pub forwarded: u64,
    /// Received from other cores and settled.
    pub received: u64,
    /// Sent through the store to another holder (other node, or queue full).
    pub charged_remote: u64,
    /// Could not be routed (queues full): the reservation expires instead; billing spend lost
    /// from this node's accounting (counted, logged by the admin thread's metric).
    pub dropped: u64,
    /// Spend settled on this core, micros.
    pub spent_micros: u64,
    /// Notices for bids of a previous incarnation of this node (charged to its forfeit).
    pub predecessor: u64,
}

/// One core's published counters and readiness (written on its timer, read by the admin).
#[derive(Debug, Default)]
pub struct CoreSlot {
    /// The core has had its first lease ops answered.
    pub ready: AtomicBool,
    settled_local: AtomicU64,
    forwarded: AtomicU64,
    received: AtomicU64,
    charged_remote: AtomicU64,
    dropped: AtomicU64,
    spent_micros: AtomicU64,
    predecessor: AtomicU64,
    lapses: AtomicU64,
    /// Gauges: lease held and reserved (incl. held back) over the core's campaigns, micros.
    lease_micros: AtomicU64,
    reserved_micros: AtomicU64,
}

/// A core's end of budget enforcement. Owned by that core's thread.
pub struct CoreBudget {
    core: u16,
    node: InlineStr<32>,
    inbound: Arc<[ArrayQueue<Settle>]>,
    charger: Charger,
    slot: Arc<CoreSlot>,
    ticked: bool,
    pub counters: Counters,
    /// Lease TTL the shard's pacing must use (the store's).
    pub lease_ttl_ms: u64,
    /// An idle campaign's lease goes back after this (`budget.idle_return_ms`).
    pub idle_return_ms: u64,
    /// This core's share of each daily budget: 1 / (cores × `budget.nodes`), ppm.
    pub daily_share_ppm: u32,
    /// This process's incarnation (unix ns): a notice for a bid of this node made before it is
    /// a previous incarnation's.
    started_unix_ns: u64,
}

impl std::fmt::Debug for CoreBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreBudget")
            .field("core", &self.core)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl CoreBudget {
    /// Settles a verified billing or loss notice received on this core (see the module doc).
    #[inline]
    pub fn on_notice(&mut self, shard: &mut Shard, v: &VerifiedNotice) {
        let spent = match v.kind {
            NoticeKind::Billing => spend_of(v),
            NoticeKind::Loss => 0,
            NoticeKind::Win | NoticeKind::Click => return,
        };
        if v.reserved.0 <= 0 {
            return; // No reservation: a test request, or budgets were off for that bid.
        }
        let s = Settle {
            campaign_id: v.campaign_id,
            bid_ts_unix_ns: v.bid_ts_unix_ns,
            reserved: v.reserved.0,
            spent,
        };
        self.counters.spent_micros += spent as u64;
        // The notice's charge to the control thread, with the reservation it releases.
        let charge = |reserved: i64| Charge {
            node: v.node,
            core: v.core,
            campaign_id: v.campaign_id,
            spent,
            bid_ts_unix_ns: v.bid_ts_unix_ns,
            reserved,
        };
        if v.node == self.node && v.bid_ts_unix_ns < self.started_unix_ns {
            // The previous incarnation's bid: its lease was forfeited (counted as spent), so the
            // spend is charged to that forfeit; no reservation of this process to release.
            if spent == 0 || self.charger.charge(charge(0)) {
                self.counters.predecessor += 1;
            } else {
                self.counters.dropped += 1;
            }
            return;
        }
        if v.node == self.node {
            if v.core == self.core {
                shard.settle(s.campaign_id, s.bid_ts_unix_ns, v.reserved, Micros(spent));
                self.counters.settled_local += 1;
                return;
            }
            if let Some(q) = self.inbound.get(usize::from(v.core))
                && q.push(s).is_ok()
            {
                self.counters.forwarded += 1;
                return;
            }
        }
        if self.charger.charge(charge(v.reserved.0)) {
            self.counters.charged_remote += 1;
        } else {
            self.counters.dropped += 1;
        }
    }

    /// Settles what other cores forwarded to this one. Between requests (the loop timer).
    pub fn drain(&mut self, shard: &mut Shard) {
        if let Some(q) = self.inbound.get(usize::from(self.core)) {
            while let Some(s) = q.pop() {
                shard.settle(
                    s.campaign_id,
                    s.bid_ts_unix_ns,
                    Micros(s.reserved),
                    Micros(s.spent),
                );
                self.counters.received += 1;
            }
        }
    }

    /// Publishes the counters and readiness (the loop timer, after the feed's poll).
    pub fn publish(&mut self, shard: &Shard) {
        let c = &self.counters;
        let s = &self.slot;
        s.settled_local.store(c.settled_local, Ordering::Relaxed);
        s.forwarded.store(c.forwarded, Ordering::Relaxed);
        s.received.store(c.received, Ordering::Relaxed);
        s.charged_remote.store(c.charged_remote, Ordering::Relaxed);
        s.dropped.store(c.dropped, Ordering::Relaxed);
        s.spent_micros.store(c.spent_micros, Ordering::Relaxed);
        s.predecessor.store(c.predecessor, Ordering::Relaxed);
        let (mut lapses, mut lease, mut reserved) = (0u64, 0i64, 0i64);
        for i in 0..shard.set().len() {
            let r = shard.runtime(i);
            lapses += r.lapses;
            lease += r.lease.max(0);
            reserved += r.reserved[0] + r.reserved[1] + r.hold[0] + r.hold[1];
        }
        s.lapses.store(lapses, Ordering::Relaxed);
        s.lease_micros.store(lease as u64, Ordering::Relaxed);
        s.reserved_micros
            .store(reserved.max(0) as u64, Ordering::Relaxed);
        // Ready once the first round of lease ops (sent by the previous poll) is answered, or
        // once any lease is held: under traffic from the first moment (a restart behind a live
        // exchange) some op is always in flight, so "nothing pending" alone may never be seen.
        if self.ticked && (!shard.leases_pending() || lease > 0) {
            s.ready.store(true, Ordering::Relaxed);
        }
        self.ticked = true;
    }
}

/// Picks one counter of a [`CoreSlot`].
type SlotField = fn(&CoreSlot) -> &AtomicU64;

/// What the admin thread reads: readiness and counters of every core, and the control thread's.
#[derive(Debug)]
pub struct BudgetStatus {
    /// "redis" or "memory".
    pub store: &'static str,
    stats: Arc<ControlStats>,
    cores: Vec<Arc<CoreSlot>>,
}

impl BudgetStatus {
    /// Every core has had its first lease round answered.
    pub fn ready(&self) -> bool {
        self.cores.iter().all(|c| c.ready.load(Ordering::Relaxed))
    }

    /// Prometheus series (`helios_budget_*`).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let per_core: [(&str, &str, SlotField); 8] = [
            (
                "helios_budget_settled_local_total",
                "Billing/loss notices settled on the core that made the bid.",
                |s| &s.settled_local,
            ),
            (
                "helios_budget_forwarded_total",
                "Notices forwarded to the core of this node that made the bid.",
                |s| &s.forwarded,
            ),
            (
                "helios_budget_received_total",
                "Notices forwarded by other cores and settled here.",
                |s| &s.received,
            ),
            (
                "helios_budget_charged_remote_total",
                "Notices for another node's bids sent through the budget store (charge, release).",
                |s| &s.charged_remote,
            ),
            (
                "helios_budget_settle_dropped_total",
                "Notices that could not be routed (queues full); their reservation expires.",
                |s| &s.dropped,
            ),
            (
                "helios_budget_spent_micros_total",
                "Spend (micros of USD) of billing notices received on the core.",
                |s| &s.spent_micros,
            ),
            (
                "helios_budget_predecessor_notices_total",
                "Billing/loss notices for bids of this node's previous incarnation (its lease was forfeited; billing is charged to that forfeit).",
                |s| &s.predecessor,
            ),
            (
                "helios_budget_lease_lapses_total",
                "Leases distrusted for want of a store answer within 3/4 of the TTL.",
                |s| &s.lapses,
            ),
        ];
        let gauges: [(&str, &str, SlotField); 2] = [
            (
                "helios_budget_lease_micros",
                "Lease held by the core over its campaigns (micros of USD).",
                |s| &s.lease_micros,
            ),
            (
                "helios_budget_reserved_micros",
                "Reserved by bids awaiting their outcome, or held until the store confirms.",
                |s| &s.reserved_micros,
            ),
        ];
        for (rows, kind) in [(&gauges[..], "gauge"), (&per_core[..], "counter")] {
            for (name, help, get) in rows {
                let values = self.cores.iter().enumerate();
                let values = values.map(|(i, s)| (i, get(s).load(Ordering::Relaxed)));
                crate::metrics::per_core_series(out, name, help, kind, values);
            }
        }
        let node: [(&str, &str, &AtomicU64); 6] = [
            (
                "helios_budget_lease_ops_total",
                "Lease exchanges answered by the budget store.",
                &self.stats.lease_ops,
            ),
            (
                "helios_budget_charges_total",
                "Charges applied to other holders' leases.",
                &self.stats.charges,
            ),
            (
                "helios_budget_releases_total",
                "Reservations of this node released by notices settled on other nodes.",
                &self.stats.releases,
            ),
            (
                "helios_budget_overdraft_micros_total",
                "Spend beyond a lease and its holder's forfeit (billing after its expiry), micros.",
                &self.stats.overdraft_micros,
            ),
            (
                "helios_budget_forfeited_micros_total",
                "Leases of dead or restarted holders counted as spent (never settled by their holder), micros; this node's store calls.",
                &self.stats.forfeited_micros,
            ),
            (
                "helios_budget_forfeit_charged_micros_total",
                "Spend of dead or restarted holders' bids charged out of their forfeits, micros; this node's store calls.",
                &self.stats.forfeit_charged_micros,
            ),
        ];
        for (name, help, v) in node {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{store=\"{}\"}} {}",
                self.store,
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// Everything [`start`] sets up.
#[derive(Debug)]
pub struct Started {
    /// Stops the control thread on drop.
    pub control: Option<Control>,
    pub live: Option<LiveStatus>,
    pub feeds: Vec<CoreFeed>,
    pub status: Option<BudgetStatus>,
    pub cores: Vec<CoreBudget>,
}

/// Starts the control thread this configuration needs (live campaigns and/or budgets) and
/// returns each core's ends. `set` is the campaigns file's set (budgets are seeded from it when
/// campaigns do not come from Redis); `redis_ca` verifies `rediss://` servers (`tls.redis_ca_file`).
pub fn start(
    cfg: &Config,
    node: &str,
    cores: usize,
    set: &Arc<CompiledSet>,
    redis_ca: Option<&Vec<u8>>,
) -> anyhow::Result<Started> {
    let live_url = cfg.bidding.campaigns_redis_url.as_str();
    let enforce = cfg.budget.enforce;
    if live_url.is_empty() && !enforce {
        return Ok(Started {
            control: None,
            live: None,
            feeds: Vec::new(),
            status: None,
            cores: Vec::new(),
        });
    }
    let mut cc = ControlConfig::new(live_url, node, cores as u16);
    cc.redis_ca_pem = redis_ca.cloned();
    cc.budget_redis_url = if cfg.budget.redis_url.is_empty() {
        live_url.to_owned()
    } else {
        cfg.budget.redis_url.clone()
    };
    cc.lease_ttl_ms = cfg.budget.lease_ttl_ms;
    let started_unix_ns = cc.incarnation_ms.saturating_mul(1_000_000);
    if live_url.is_empty() {
        cc.fixed_set = Some(Arc::clone(set));
    }
    let store = if cc.budget_redis_url.is_empty() {
        "memory"
    } else {
        "redis"
    };
    let lease_ttl_ms = cc.lease_ttl_ms;
    let (control, live, feeds) =
        crate::campaign_feed::start_with(cc).context("starting the campaign/budget thread")?;
    let live = (!live_url.is_empty()).then_some(live);
    if !enforce {
        return Ok(Started {
            control: Some(control),
            live,
            feeds,
            status: None,
            cores: Vec::new(),
        });
    }
    tracing::info!(store, lease_ttl_ms, "budgets enforced");
    let inbound: Arc<[ArrayQueue<Settle>]> =
        (0..cores).map(|_| ArrayQueue::new(SETTLE_QUEUE)).collect();
    let slots: Vec<Arc<CoreSlot>> = (0..cores).map(|_| Arc::default()).collect();
    let node_name = InlineStr::new(node);
    let shards_total = (cores as u64).max(1) * u64::from(cfg.budget.nodes.max(1));
    let daily_share_ppm = (1_000_000 / shards_total).max(1) as u32;
    let core_ends = feeds
        .iter()
        .zip(&slots)
        .enumerate()
        .map(|(i, (f, slot))| CoreBudget {
            core: i as u16,
            node: node_name,
            inbound: Arc::clone(&inbound),
            charger: f.charger(),
            slot: Arc::clone(slot),
            ticked: false,
            counters: Counters::default(),
            lease_ttl_ms,
            idle_return_ms: cfg.budget.idle_return_ms,
            daily_share_ppm,
            started_unix_ns,
        })
        .collect();
    let status = BudgetStatus {
        store,
        stats: Arc::clone(&control.stats),
        cores: slots,
    };
    Ok(Started {
        control: Some(control),
        live,
        feeds,
        status: Some(status),
        cores: core_ends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(
        kind: NoticeKind,
        price: Option<i64>,
        reserved: i64,
        cur: &[u8; 3],
    ) -> VerifiedNotice {
        VerifiedNotice {
            kind,
            event_id: [0; 16],
            trace_id: [0; 16],
            request_id: InlineStr::empty(),
            imp_id: InlineStr::empty(),
            campaign_id: 1,
            creative_id: 1,
            advertiser_id: 1,
            bid_price: Micros(2_500_000),
            currency: *cur,
            bid_ts_unix_ns: 0,
            node: InlineStr::new("n"),
            exchange: InlineStr::empty(),
            country: [0; 3],
            device_type: 0,
            site_or_app: InlineStr::empty(),
            user_id: InlineStr::empty(),
            price: price.map(Micros),
            loss_reason: 0,
            late: false,
            reserved: Micros(reserved),
            core: 0,
        }
    }

    #[test]
    fn spend_is_the_clearing_cost_capped_by_the_reservation() {
        // USD: 2.1 CPM → 2,100 micros per impression.
        let v = notice(NoticeKind::Billing, Some(2_100_000), 2_500, b"USD");
        assert_eq!(spend_of(&v), 2_100);
        // Rounded up: 2.0000001 CPM → 2,001.
        let v = notice(NoticeKind::Billing, Some(2_000_001), 2_500, b"USD");
        assert_eq!(spend_of(&v), 2_001);
        // EUR: the USD reservation scaled by clearing / bid (both EUR): 2,700 × 2.0 / 2.5.
        let v = notice(NoticeKind::Billing, Some(2_000_000), 2_700, b"EUR");
        assert_eq!(spend_of(&v), 2_160);
        // Never above the reservation, never negative; no price → nothing.
        let v = notice(NoticeKind::Billing, Some(2_500_000), 2_000, b"USD");
        assert_eq!(spend_of(&v), 2_000);
        let v = notice(NoticeKind::Billing, None, 2_000, b"USD");
        assert_eq!(spend_of(&v), 0);
    }
}

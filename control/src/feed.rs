//! The control thread ([`Control`]) and each core's end of it ([`ShardFeed`]).
//!
//! The control thread owns the node's budget store and, with live campaigns, one Redis
//! connection for them. With `redis_url` set it loads `helios:campaigns` at start, then
//! blocks (≤ `poll_ms`) on `XREAD` of `helios:campaigns:changes`; on an entry it reads the set,
//! compiles it once, and offers the `Arc` to every core's one-slot queue (a newer set replaces an
//! older one not yet taken). A set that fails to parse or compile is logged and counted and the
//! old set stays. With a fixed set (`fixed_set`: a campaigns file) there is no stream: the loop
//! waits 1 → 20 ms (doubling while idle) between rounds. Each round carries lease ops from the
//! cores' outbound queues to the store and the grants back, and charges to other holders' leases
//! (bids of another core or node billed on this one, [`Charge`]). The store is Redis
//! (`budget_redis_url`, the Lua scripts of [`RedisBudget`]) or, without one, an in-process
//! [`MemoryBudget`] seeded from the set (budgets then hold per node only). Redis errors:
//! reconnect with backoff (100 ms → 5 s); failed lease ops and charges are retried, never dropped.
//! Every lease op carries this process's incarnation (`incarnation_ms`, its start): the store
//! forfeits whatever lease a previous incarnation of the same holder left unsettled (a crash)
//! instead of handing it over (`shards::pacing`, "A holder's death"). At shutdown the cores
//! queue their final settlement ([`ShardFeed::close`]) and the thread runs one last round after
//! being told to stop, so a clean shutdown forfeits only what outstanding bids reserved.
//!
//! A core calls [`ShardFeed::poll`] between requests: pops (never blocks) a new set and grants,
//! and every `tick_ms` runs the shard's pacing tick and pushes its lease ops. Queues are bounded;
//! an op that does not fit stays in the feed's own pending list (sized at start) for the next poll.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codec::event::InlineStr;
use crossbeam_queue::ArrayQueue;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{Commands, Connection};
use shards::pacing::{BudgetStore, LeaseGrant, LeaseOp, MemoryBudget};
use shards::{CompiledSet, Shard};

use crate::budget::RedisBudget;
use crate::keys;

/// Lease ops and grants in flight per core (bounded; see the module doc for the bound's effect).
pub const LEASE_QUEUE: usize = 16_384;

/// A notice settled on this node for a bid another holder (`node:core`) made: `spent` (0 for a
/// loss) is charged to that holder's lease and, on another node, the reservation is released
/// through the store (`keys::releases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub node: InlineStr<32>,
    pub core: u16,
    pub campaign_id: u32,
    pub spent: i64,
    pub bid_ts_unix_ns: u64,
    pub reserved: i64,
}

/// A reservation to release on this node's core (from [`Charge`]s made on other nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Release {
    campaign_id: u32,
    bid_ts_unix_ns: u64,
    reserved: i64,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// `redis://…` or, for TLS, `rediss://…`.
    pub redis_url: String,
    /// PEM of the CA(s) that verify a `rediss://` server; `None` = the system's trust store.
    /// Ignored for `redis://`.
    pub redis_ca_pem: Option<Vec<u8>>,
    /// Redis with the budgets; "" = an in-process store seeded from the set (per node).
    pub budget_redis_url: String,
    /// The campaign set when it does not come from Redis (budgets are seeded from it).
    pub fixed_set: Option<Arc<CompiledSet>>,
    /// This node's name; lease holders are `node:core`.
    pub node: String,
    pub cores: u16,
    /// Longest the control thread blocks on the change stream.
    pub poll_ms: u64,
    /// Shard pacing tick and lease exchange period.
    pub tick_ms: u64,
    /// Lease TTL: a node that stops exchanging loses its leases after this (forfeited).
    pub lease_ttl_ms: u64,
    /// This process's incarnation (unix ms, before its first bid): bids made before it are a
    /// previous incarnation's. Default: when the config was made.
    pub incarnation_ms: u64,
}

impl ControlConfig {
    pub fn new(redis_url: &str, node: &str, cores: u16) -> ControlConfig {
        ControlConfig {
            redis_url: redis_url.to_owned(),
            redis_ca_pem: None,
            budget_redis_url: redis_url.to_owned(),
            fixed_set: None,
            node: node.to_owned(),
            cores,
            poll_ms: 10,
            tick_ms: 250,
            lease_ttl_ms: 60_000,
            incarnation_ms: now_ns() / 1_000_000,
        }
    }
}

/// Counters of the control thread (read from any thread).
#[derive(Debug, Default)]
pub struct ControlStats {
    pub sets_installed: AtomicU64,
    pub sets_rejected: AtomicU64,
    pub version: AtomicU64,
    pub lease_ops: AtomicU64,
    pub redis_errors: AtomicU64,
    /// Charges applied to other holders' leases.
    pub charges: AtomicU64,
    /// Reservations released for this node's cores by notices settled on other nodes.
    pub releases: AtomicU64,
    /// Spend reported beyond leases and forfeits (late billing after a lease expired), micros.
    pub overdraft_micros: AtomicU64,
    /// Leases forfeited by this node's store calls (expired or taken over unsettled: counted
    /// as spent), and spend charged out of forfeits since, micros.
    pub forfeited_micros: AtomicU64,
    pub forfeit_charged_micros: AtomicU64,
    /// At least one round of lease ops was answered since start.
    pub leases_answered: AtomicBool,
}

struct Core {
    sets: ArrayQueue<Arc<CompiledSet>>,
    ops: ArrayQueue<LeaseOp>,
    grants: ArrayQueue<LeaseGrant>,
    charges: ArrayQueue<Charge>,
    releases: ArrayQueue<Release>,
}

/// A core's sender of [`Charge`]s to the control thread (bounded, lock-free, never waits).
#[derive(Clone)]
pub struct Charger {
    core: Arc<Core>,
}

impl std::fmt::Debug for Charger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charger")
            .field("queued", &self.core.charges.len())
            .finish()
    }
}

impl Charger {
    /// Queues a charge; `false` when the queue ([`LEASE_QUEUE`]) is full (the caller counts it).
    pub fn charge(&self, c: Charge) -> bool {
        self.core.charges.push(c).is_ok()
    }
}

/// A core's end: owned by that core's thread.
pub struct ShardFeed {
    core: Arc<Core>,
    pending: Vec<LeaseOp>,
    tick_ns: u64,
    last_tick_ns: u64,
    /// Sets installed by this core.
    pub installed: u64,
}

impl std::fmt::Debug for ShardFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardFeed")
            .field("pending", &self.pending.len())
            .field("installed", &self.installed)
            .finish()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl ShardFeed {
    /// A sender of charges on this core's queue (for the code that settles notices).
    pub fn charger(&self) -> Charger {
        Charger {
            core: Arc::clone(&self.core),
        }
    }

    /// Non-blocking: installs a new set if one arrived, applies lease grants, and every tick
    /// runs the shard's pacing step and queues its lease ops. Call between requests.
    pub fn poll(&mut self, shard: &mut Shard) {
        self.poll_at(shard, now_ns());
    }

    pub fn poll_at(&mut self, shard: &mut Shard, now_ns: u64) {
        if let Some(set) = self.core.sets.pop() {
            shard.install(set);
            self.installed += 1;
        }
        while let Some(r) = self.core.releases.pop() {
            shard.release_remote(r.campaign_id, r.bid_ts_unix_ns, codec::Micros(r.reserved));
        }
        while let Some(g) = self.core.grants.pop() {
            shard.lease_granted(&g);
        }
        if now_ns.saturating_sub(self.last_tick_ns) >= self.tick_ns {
            self.last_tick_ns = now_ns;
            shard.tick(now_ns);
            if self.pending.len() < self.pending.capacity() {
                shard.lease_ops(&mut self.pending);
            }
        } else if self.pending.len() < self.pending.capacity() {
            // Spend goes to the store at every poll, not only every tick.
            shard.spend_ops(&mut self.pending);
        }
        self.push_pending();
    }

    fn push_pending(&mut self) {
        while let Some(op) = self.pending.last().copied() {
            if self.core.ops.push(op).is_err() {
                break;
            }
            self.pending.pop();
        }
    }

    /// Queues the final settlement of every lease of the shard (clean shutdown, after the last
    /// request and the last [`ShardFeed::poll`]): each campaign reports its spend and gives back
    /// all but what its outstanding bids reserved. Returns how many ops could not be queued
    /// (queue full: those leases are forfeited at expiry, as after a crash).
    pub fn close(&mut self, shard: &mut Shard) -> usize {
        self.push_pending();
        shard.close_ops(&mut self.pending);
        self.push_pending();
        self.pending.len()
    }
}

/// The control thread's handle: stops and joins it on drop.
pub struct Control {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<ControlStats>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("stats", &self.stats)
            .finish()
    }
}

impl Drop for Control {
    /// Stops the thread after one last round (the cores' final settlements), and joins it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("spawn: {0}")]
    Spawn(#[from] std::io::Error),
}

impl Control {
    /// Starts the control thread and returns one feed per core. Fails only when the Redis URL
    /// is malformed or the thread cannot start; an unreachable Redis is retried in the thread.
    pub fn spawn(cfg: ControlConfig) -> Result<(Control, Vec<ShardFeed>), ControlError> {
        let client = if cfg.redis_url.is_empty() {
            None
        } else {
            Some(redis_client(&cfg.redis_url, cfg.redis_ca_pem.as_deref())?)
        };
        let budget_client = if cfg.budget_redis_url.is_empty() {
            None
        } else {
            Some(redis_client(
                &cfg.budget_redis_url,
                cfg.redis_ca_pem.as_deref(),
            )?)
        };
        let cores: Vec<Arc<Core>> = (0..cfg.cores)
            .map(|_| {
                Arc::new(Core {
                    sets: ArrayQueue::new(1),
                    ops: ArrayQueue::new(LEASE_QUEUE),
                    grants: ArrayQueue::new(LEASE_QUEUE),
                    charges: ArrayQueue::new(LEASE_QUEUE),
                    releases: ArrayQueue::new(LEASE_QUEUE),
                })
            })
            .collect();
        let feeds = cores
            .iter()
            .map(|c| ShardFeed {
                core: Arc::clone(c),
                pending: Vec::with_capacity(LEASE_QUEUE),
                tick_ns: cfg.tick_ms * 1_000_000,
                last_tick_ns: 0,
                installed: 0,
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ControlStats::default());
        let (s2, st2) = (Arc::clone(&stop), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("helios-control".into())
            .spawn(move || run(client, budget_client, cfg, cores, s2, st2))?;
        Ok((
            Control {
                stop,
                thread: Some(thread),
                stats,
            },
            feeds,
        ))
    }
}

/// A client for `url`: a `rediss://` server is verified against `ca_pem` when given (else the
/// system's trust store; the hostname is always checked); `redis://` is plain text.
pub fn redis_client(url: &str, ca_pem: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match ca_pem {
        Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

struct Loop {
    cfg: ControlConfig,
    cores: Vec<Arc<Core>>,
    stats: Arc<ControlStats>,
    last_id: String,
    version: Option<u64>,
    /// Ops taken from the cores but not yet answered (Redis error): retried first.
    retry: Vec<(usize, LeaseOp)>,
    /// Charges not yet applied (Redis error): retried first.
    retry_charges: Vec<Charge>,
    known: std::collections::HashSet<u32>,
    /// The in-process store (no budget Redis); lives across sessions.
    memory: Option<MemoryBudget>,
    started: Instant,
    holder: String,
}

/// Where leases come from in one session.
enum Store<'a> {
    Redis(Box<RedisBudget>),
    Memory(&'a mut MemoryBudget, Instant),
}

impl Store<'_> {
    fn init(&mut self, campaign_id: u32, total: i64) -> redis::RedisResult<()> {
        match self {
            Store::Redis(b) => b.try_init(campaign_id, total),
            Store::Memory(m, _) => {
                m.init(campaign_id, total);
                Ok(())
            }
        }
    }
    fn exchange(&mut self, holder: &str, op: &LeaseOp) -> redis::RedisResult<LeaseGrant> {
        match self {
            Store::Redis(b) => b.try_exchange(holder, op),
            Store::Memory(m, t0) => Ok(m.exchange(holder, op, t0.elapsed().as_millis() as u64)),
        }
    }
    fn charge(&mut self, holder: &str, c: &Charge) -> redis::RedisResult<()> {
        let bid_ms = c.bid_ts_unix_ns / 1_000_000;
        match self {
            Store::Redis(b) => {
                if c.spent > 0 {
                    b.try_charge(holder, c.campaign_id, c.spent, bid_ms)?;
                }
                if c.reserved <= 0 {
                    // A previous incarnation's bid: no reservation of a live core to release.
                    return Ok(());
                }
                b.try_release(
                    c.node.as_str(),
                    c.core,
                    c.campaign_id,
                    c.bid_ts_unix_ns,
                    c.reserved,
                )
            }
            Store::Memory(m, t0) => {
                // One node only: there is no other node to tell.
                if c.spent > 0 {
                    m.charge(
                        holder,
                        c.campaign_id,
                        c.spent,
                        bid_ms,
                        t0.elapsed().as_millis() as u64,
                    );
                }
                Ok(())
            }
        }
    }
    fn take_releases(&mut self, node: &str) -> redis::RedisResult<Vec<(u16, u32, u64, i64)>> {
        match self {
            Store::Redis(b) => b.try_take_releases(node, 1024),
            Store::Memory(..) => Ok(Vec::new()),
        }
    }
    fn overdraft(&self) -> i64 {
        match self {
            Store::Redis(b) => b.overdraft,
            Store::Memory(m, _) => m.overdraft,
        }
    }
    /// Forfeited by this store, and charged out of forfeits (micros).
    fn forfeits(&self) -> (i64, i64) {
        match self {
            Store::Redis(b) => (b.forfeited, b.forfeit_charged),
            // One process: its leases never outlive it, nothing is taken over.
            Store::Memory(..) => (0, 0),
        }
    }
}

fn run(
    client: Option<redis::Client>,
    budget_client: Option<redis::Client>,
    cfg: ControlConfig,
    cores: Vec<Arc<Core>>,
    stop: Arc<AtomicBool>,
    stats: Arc<ControlStats>,
) {
    let memory = budget_client
        .is_none()
        .then(|| MemoryBudget::new(cfg.lease_ttl_ms));
    let mut l = Loop {
        cfg,
        cores,
        stats,
        last_id: "0-0".into(),
        version: None,
        retry: Vec::new(),
        retry_charges: Vec::new(),
        known: Default::default(),
        memory,
        started: Instant::now(),
        holder: String::with_capacity(64),
    };
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        let res = l.connect(client.as_ref(), budget_client.as_ref(), &stop);
        if let Err(e) = res {
            l.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "control: redis unavailable");
            let until = Instant::now() + backoff;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}

impl Loop {
    /// Opens the session's connections, then runs it.
    fn connect(
        &mut self,
        client: Option<&redis::Client>,
        budget_client: Option<&redis::Client>,
        stop: &AtomicBool,
    ) -> redis::RedisResult<()> {
        let con = match client {
            Some(c) => Some(c.get_connection_with_timeout(Duration::from_secs(2))?),
            None => None,
        };
        let mut memory = self.memory.take();
        let res = (|| {
            let store = match (budget_client, memory.as_mut()) {
                (Some(c), _) => Store::Redis(Box::new(RedisBudget::new(
                    c.get_connection_with_timeout(Duration::from_secs(2))?,
                    self.cfg.lease_ttl_ms,
                ))),
                (None, Some(m)) => Store::Memory(m, self.started),
                (None, None) => unreachable!("the in-process store exists without a budget redis"),
            };
            self.session(con, store, stop)
        })();
        self.memory = memory;
        res
    }

    /// One connected session: runs until `stop` or a Redis error.
    fn session(
        &mut self,
        mut con: Option<Connection>,
        mut budget: Store<'_>,
        stop: &AtomicBool,
    ) -> redis::RedisResult<()> {
        if let Some(set) = self.cfg.fixed_set.clone() {
            // Budgets of a fixed set: SET NX, so the first node to start seeds them.
            for c in &set.compiled {
                budget.init(c.id, c.total_budget.0)?;
            }
        }
        if let Some(con) = con.as_mut()
            && (self.version.is_none() || self.last_id == "0-0")
        {
            // Start from the stream's end, then load the current set (a change between the two
            // is read from the stream next).
            let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
                .arg(keys::CAMPAIGN_CHANGES)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query(con)
                .unwrap_or_default();
            if let Some((id, _)) = last.first() {
                self.last_id = id.clone();
            }
            self.load(con, &mut budget)?;
        }
        let opts = StreamReadOptions::default()
            .block(self.cfg.poll_ms as usize)
            .count(16);
        let mut idle = Duration::from_millis(1);
        while !stop.load(Ordering::Relaxed) {
            if let Some(con) = con.as_mut() {
                let reply: Option<StreamReadReply> =
                    con.xread_options(&[keys::CAMPAIGN_CHANGES], &[self.last_id.as_str()], &opts)?;
                let mut changed = false;
                for k in reply.map(|r| r.keys).unwrap_or_default() {
                    for e in k.ids {
                        self.last_id = e.id;
                        changed = true;
                    }
                }
                if changed {
                    self.load(con, &mut budget)?;
                }
            } else {
                std::thread::sleep(idle);
            }
            let worked = self.leases(&mut budget)?
                + self.charges(&mut budget)?
                + self.releases(&mut budget)?;
            idle = if worked > 0 {
                Duration::from_millis(1)
            } else {
                (idle * 2).min(Duration::from_millis(20))
            };
            self.publish_stats(&budget);
        }
        // Told to stop: one last round carries the cores' final settlements (queued before the
        // cores ended) to the store. A Redis error here leaves them to expire (forfeited).
        self.leases(&mut budget)?;
        self.charges(&mut budget)?;
        self.publish_stats(&budget);
        Ok(())
    }

    fn publish_stats(&self, budget: &Store<'_>) {
        self.stats
            .overdraft_micros
            .store(budget.overdraft().max(0) as u64, Ordering::Relaxed);
        let (f, c) = budget.forfeits();
        self.stats
            .forfeited_micros
            .store(f.max(0) as u64, Ordering::Relaxed);
        self.stats
            .forfeit_charged_micros
            .store(c.max(0) as u64, Ordering::Relaxed);
    }

    /// Reads, compiles and offers the set; a bad set is rejected whole (old one stays).
    fn load(&mut self, con: &mut Connection, budget: &mut Store<'_>) -> redis::RedisResult<()> {
        let json: Option<Vec<u8>> = con.get(keys::CAMPAIGNS)?;
        let Some(json) = json else {
            return Ok(());
        };
        match CompiledSet::parse(&json) {
            Ok(set) => {
                if self.version == Some(set.version) {
                    return Ok(());
                }
                for c in &set.compiled {
                    if self.known.insert(c.id) {
                        budget.init(c.id, c.total_budget.0)?;
                    }
                }
                self.version = Some(set.version);
                self.stats.version.store(set.version, Ordering::Relaxed);
                self.stats.sets_installed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    version = set.version,
                    campaigns = set.len(),
                    "campaign set published"
                );
                for c in &self.cores {
                    let _ = c.sets.force_push(Arc::clone(&set));
                }
            }
            Err(e) => {
                self.stats.sets_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "campaign set rejected; the current set stays");
            }
        }
        Ok(())
    }

    /// One round of lease ops: returns how many were answered.
    fn leases(&mut self, budget: &mut Store<'_>) -> redis::RedisResult<usize> {
        let retry = std::mem::take(&mut self.retry);
        let fresh = self
            .cores
            .iter()
            .enumerate()
            .flat_map(|(i, c)| std::iter::from_fn(move || c.ops.pop()).map(move |op| (i, op)));
        let all: Vec<(usize, LeaseOp)> = retry.into_iter().chain(fresh).collect();
        let n = all.len();
        let mut it = all.into_iter();
        while let Some((i, mut op)) = it.next() {
            op.incarnation_ms = self.cfg.incarnation_ms;
            self.holder.clear();
            let _ = write!(self.holder, "{}:{}", self.cfg.node, i);
            match budget.exchange(&self.holder, &op) {
                Ok(g) => {
                    self.stats.lease_ops.fetch_add(1, Ordering::Relaxed);
                    // The grant queue is as large as the op queue: one grant per op in flight.
                    let _ = self.cores[i].grants.push(g);
                }
                Err(e) => {
                    self.retry.push((i, op));
                    self.retry.extend(it);
                    return Err(e);
                }
            }
        }
        if n > 0 {
            self.stats.leases_answered.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Hands releases other nodes queued for this node to the cores: returns how many.
    fn releases(&mut self, budget: &mut Store<'_>) -> redis::RedisResult<usize> {
        let got = budget.take_releases(&self.cfg.node)?;
        let started_ns = self.cfg.incarnation_ms.saturating_mul(1_000_000);
        for &(core, campaign_id, bid_ts_unix_ns, reserved) in &got {
            if bid_ts_unix_ns < started_ns {
                // A previous incarnation's bid: no core of this process reserved for it.
                continue;
            }
            if let Some(c) = self.cores.get(usize::from(core)) {
                // Full: the reservation expires instead (30–60 s).
                let _ = c.releases.push(Release {
                    campaign_id,
                    bid_ts_unix_ns,
                    reserved,
                });
            }
        }
        self.stats
            .releases
            .fetch_add(got.len() as u64, Ordering::Relaxed);
        Ok(got.len())
    }

    /// Applies the cores' charges to other holders' leases: returns how many.
    fn charges(&mut self, budget: &mut Store<'_>) -> redis::RedisResult<usize> {
        let retry = std::mem::take(&mut self.retry_charges);
        let fresh = self
            .cores
            .iter()
            .flat_map(|c| std::iter::from_fn(move || c.charges.pop()));
        let all: Vec<Charge> = retry.into_iter().chain(fresh).collect();
        let n = all.len();
        let mut it = all.into_iter();
        while let Some(c) = it.next() {
            self.holder.clear();
            let _ = write!(self.holder, "{}:{}", c.node.as_str(), c.core);
            match budget.charge(&self.holder, &c) {
                Ok(()) => {
                    self.stats.charges.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.retry_charges.push(c);
                    self.retry_charges.extend(it);
                    return Err(e);
                }
            }
        }
        Ok(n)
    }
}

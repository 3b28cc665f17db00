//! The control thread ([`Control`]) and each core's end of it ([`ShardFeed`]).
//!
//! The control thread owns one Redis connection. It loads `helios:campaigns` at start, then
//! blocks (≤ `poll_ms`) on `XREAD` of `helios:campaigns:changes`; on an entry it reads the set,
//! compiles it once, and offers the `Arc` to every core's one-slot queue (a newer set replaces an
//! older one not yet taken). A set that fails to parse or compile is logged and counted and the
//! old set stays. Between reads it carries lease ops from the cores' outbound queues to the Lua
//! lease script and the grants back. Redis errors: reconnect with backoff (100 ms → 5 s); failed
//! lease ops are retried, never dropped.
//!
//! A core calls [`ShardFeed::poll`] between requests: pops (never blocks) a new set and grants,
//! and every `tick_ms` runs the shard's pacing tick and pushes its lease ops. Queues are bounded;
//! an op that does not fit stays in the feed's own pending list (sized at start) for the next poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{Commands, Connection};
use shards::pacing::{LeaseGrant, LeaseOp};
use shards::{CompiledSet, Shard};

use crate::budget::RedisBudget;
use crate::keys;

/// Lease ops and grants in flight per core (bounded; see the module doc for the bound's effect).
pub const LEASE_QUEUE: usize = 16_384;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// `redis://…` or, for TLS, `rediss://…`.
    pub redis_url: String,
    /// PEM of the CA(s) that verify a `rediss://` server; `None` = the system's trust store.
    /// Ignored for `redis://`.
    pub redis_ca_pem: Option<Vec<u8>>,
    /// This node's name; lease holders are `node:core`.
    pub node: String,
    pub cores: u16,
    /// Longest the control thread blocks on the change stream.
    pub poll_ms: u64,
    /// Shard pacing tick and lease exchange period.
    pub tick_ms: u64,
    /// Lease TTL: a node that stops exchanging loses its leases after this.
    pub lease_ttl_ms: u64,
}

impl ControlConfig {
    pub fn new(redis_url: &str, node: &str, cores: u16) -> ControlConfig {
        ControlConfig {
            redis_url: redis_url.to_owned(),
            redis_ca_pem: None,
            node: node.to_owned(),
            cores,
            poll_ms: 50,
            tick_ms: 250,
            lease_ttl_ms: 60_000,
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
}

struct Core {
    sets: ArrayQueue<Arc<CompiledSet>>,
    ops: ArrayQueue<LeaseOp>,
    grants: ArrayQueue<LeaseGrant>,
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
        while let Some(g) = self.core.grants.pop() {
            shard.lease_granted(&g);
        }
        if now_ns.saturating_sub(self.last_tick_ns) >= self.tick_ns {
            self.last_tick_ns = now_ns;
            shard.tick(now_ns);
            if self.pending.len() < self.pending.capacity() {
                shard.lease_ops(&mut self.pending);
            }
        }
        while let Some(op) = self.pending.last().copied() {
            if self.core.ops.push(op).is_err() {
                break;
            }
            self.pending.pop();
        }
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
        let client = redis_client(&cfg.redis_url, cfg.redis_ca_pem.as_deref())?;
        let cores: Vec<Arc<Core>> = (0..cfg.cores)
            .map(|_| {
                Arc::new(Core {
                    sets: ArrayQueue::new(1),
                    ops: ArrayQueue::new(LEASE_QUEUE),
                    grants: ArrayQueue::new(LEASE_QUEUE),
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
            .spawn(move || run(client, cfg, cores, s2, st2))?;
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
    known: std::collections::HashSet<u32>,
}

fn run(
    client: redis::Client,
    cfg: ControlConfig,
    cores: Vec<Arc<Core>>,
    stop: Arc<AtomicBool>,
    stats: Arc<ControlStats>,
) {
    let mut l = Loop {
        cfg,
        cores,
        stats,
        last_id: "0-0".into(),
        version: None,
        retry: Vec::new(),
        known: Default::default(),
    };
    let mut backoff = Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        let res = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|con| l.session(con, &client, &stop));
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
    /// One connected session: runs until `stop` or a Redis error.
    fn session(
        &mut self,
        mut con: Connection,
        client: &redis::Client,
        stop: &AtomicBool,
    ) -> redis::RedisResult<()> {
        let mut budget = RedisBudget::new(
            client.get_connection_with_timeout(Duration::from_secs(2))?,
            self.cfg.lease_ttl_ms,
        );
        if self.version.is_none() || self.last_id == "0-0" {
            // Start from the stream's end, then load the current set (a change between the two
            // is read from the stream next).
            let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
                .arg(keys::CAMPAIGN_CHANGES)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query(&mut con)
                .unwrap_or_default();
            if let Some((id, _)) = last.first() {
                self.last_id = id.clone();
            }
            self.load(&mut con, &mut budget)?;
        }
        let opts = StreamReadOptions::default()
            .block(self.cfg.poll_ms as usize)
            .count(16);
        while !stop.load(Ordering::Relaxed) {
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
                self.load(&mut con, &mut budget)?;
            }
            self.leases(&mut budget)?;
        }
        Ok(())
    }

    /// Reads, compiles and offers the set; a bad set is rejected whole (old one stays).
    fn load(&mut self, con: &mut Connection, budget: &mut RedisBudget) -> redis::RedisResult<()> {
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
                        budget.try_init(c.id, c.total_budget.0)?;
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

    fn leases(&mut self, budget: &mut RedisBudget) -> redis::RedisResult<()> {
        let retry = std::mem::take(&mut self.retry);
        let fresh = self
            .cores
            .iter()
            .enumerate()
            .flat_map(|(i, c)| std::iter::from_fn(move || c.ops.pop()).map(move |op| (i, op)));
        let all: Vec<(usize, LeaseOp)> = retry.into_iter().chain(fresh).collect();
        let mut it = all.into_iter();
        while let Some((i, op)) = it.next() {
            let holder = format!("{}:{}", self.cfg.node, i);
            match budget.try_exchange(&holder, &op) {
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
        Ok(())
    }
}

//! Live campaign sets from Redis (`bidding.campaigns_redis_url`): starts the `control` crate's
//! thread and gives each core its [`CoreFeed`]; reports the set version each core runs (for
//! `/readyz` and `helios_campaign_set_version`).
//!
//! A core polls its feed on its loop timer (every `admin.publish_ms`), never per request: the
//! poll pops from the core's own bounded queues and stores one atomic (the core's version slot,
//! read by the admin thread). Must never block a core or install a set that failed to compile
//! (the control thread refuses it; the old set stays).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use control::{Control, ControlConfig, ControlStats, ShardFeed};
use shards::Shard;

/// What the admin thread reads.
#[derive(Debug)]
pub struct LiveStatus {
    pub stats: Arc<ControlStats>,
    /// Per core: version of the set the core runs (0 before the first set from Redis).
    pub versions: Vec<Arc<AtomicU64>>,
}

impl LiveStatus {
    /// The version every core runs (the lowest), or `None` until each has one from Redis.
    pub fn node_version(&self) -> Option<u64> {
        let v = self
            .versions
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .min()?;
        (v > 0).then_some(v)
    }

    /// Prometheus series: per-core version, sets installed/rejected by the control thread.
    pub fn render(&self, out: &mut String) {
        crate::metrics::per_core_series(
            out,
            "helios_campaign_set_version",
            "Version of the campaign set the core runs (from Redis).",
            "gauge",
            (self.versions.iter().enumerate()).map(|(c, v)| (c, v.load(Ordering::Relaxed))),
        );
        let rows = [
            (
                "helios_campaign_sets_installed_total",
                "Campaign sets compiled and handed to the cores.",
                &self.stats.sets_installed,
            ),
            (
                "helios_campaign_sets_rejected_total",
                "Campaign sets from Redis that did not compile (the old set stayed).",
                &self.stats.sets_rejected,
            ),
            (
                "helios_campaign_feed_redis_errors_total",
                "Redis errors of the campaign/budget control thread.",
                &self.stats.redis_errors,
            ),
        ];
        for (name, help, v) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
    }
}

/// One core's end: the control feed and the core's version slot.
pub struct CoreFeed {
    feed: ShardFeed,
    version: Arc<AtomicU64>,
}

impl std::fmt::Debug for CoreFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreFeed")
            .field("feed", &self.feed)
            .finish()
    }
}

impl CoreFeed {
    /// A sender of budget charges on this core's queue to the control thread.
    pub fn charger(&self) -> control::Charger {
        self.feed.charger()
    }

    /// Queues the final settlement of the shard's leases (shutdown, after the last poll); returns
    /// how many could not be queued (see [`ShardFeed::close`]).
    pub fn close(&mut self, shard: &mut Shard) -> usize {
        self.feed.close(shard)
    }

    /// Installs a new set if one arrived (and runs the shard's lease exchange); records the
    /// version the shard runs once it came from Redis. Call from the core's timer, not per request.
    pub fn poll(&mut self, shard: &mut Shard) {
        self.feed.poll(shard);
        if self.feed.installed > 0 {
            self.version.store(shard.set().version, Ordering::Relaxed);
        }
    }
}

/// Starts the control thread for `cores` cores. The returned [`Control`] stops it on drop.
/// `redis_ca_pem` verifies a `rediss://` server (`None`: the system's trust store).
pub fn start(
    redis_url: &str,
    redis_ca_pem: Option<Vec<u8>>,
    node: &str,
    cores: usize,
) -> anyhow::Result<(Control, LiveStatus, Vec<CoreFeed>)> {
    let mut cfg = ControlConfig::new(redis_url, node, cores as u16);
    cfg.redis_ca_pem = redis_ca_pem;
    start_with(cfg)
}

/// [`start`] with a full configuration (budget store, fixed set, TLS: see `crate::budget`).
pub fn start_with(cfg: ControlConfig) -> anyhow::Result<(Control, LiveStatus, Vec<CoreFeed>)> {
    let cores = usize::from(cfg.cores);
    let (control, feeds) = Control::spawn(cfg)?;
    let versions: Vec<Arc<AtomicU64>> = (0..cores).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let core_feeds = feeds
        .into_iter()
        .zip(&versions)
        .map(|(feed, v)| CoreFeed {
            feed,
            version: Arc::clone(v),
        })
        .collect();
    let status = LiveStatus {
        stats: Arc::clone(&control.stats),
        versions,
    };
    Ok((control, status, core_feeds))
}

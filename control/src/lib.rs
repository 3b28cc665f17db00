//! `control`: the I/O side of the shards. No bidding logic lives here.
//!
//! Owns: the Redis keys of campaigns and budgets ([`keys`]), the budget store in Redis
//! ([`RedisBudget`], an atomic Lua lease script), and the control thread ([`Control`]) that
//! follows the campaign change stream, compiles each new set once, and hands it — with lease
//! grants — to every core through that core's [`ShardFeed`] (bounded lock-free queues the core
//! polls between requests). Must never: make a bidding core wait (a core only ever pops from or
//! pushes to its own queues), or install a set that failed to compile (the old one stays).

pub mod budget;
pub mod feed;
pub mod keys;

pub use budget::RedisBudget;
pub use feed::{Charge, Charger, Control, ControlConfig, ControlStats, ShardFeed, redis_client};

//! `shards`: the per-core bidding state and the decision. No I/O.
//!
//! Owns: the campaign model ([`campaign`]), the compiled, immutable campaign set and targeting
//! index each core swaps in between requests ([`index`], [`CompiledSet`]), privacy signals
//! ([`privacy`]), frequency-cap bookkeeping ([`freq`]), budget leases and pacing ([`pacing`]),
//! and [`Shard::decide`]: given a validated request and the user's profile, which campaign and
//! creative bid on which imp at what price, or why not.
//! Each [`Shard`] is owned by exactly one core's thread. Must never: do I/O, take a lock,
//! allocate per decision, or write to memory another core reads on the request path.

pub mod campaign;
pub mod config;
pub mod decision;
pub mod freq;
pub mod gpp;
pub mod index;
pub mod pacing;
pub mod privacy;
pub mod profile;
pub mod shade;
pub mod synth;

pub use campaign::{Campaign, CampaignSet, Creative, LoadError};
pub use config::{RateTable, ShardConfig};
pub use decision::{
    Decision, Drop, ImpBid, Shard, ShardStats, Trace, TraceEntry, user_hash, user_key,
};
pub use index::CompiledSet;
pub use pacing::{BudgetStore, LeaseGrant, LeaseOp, MemoryBudget};
pub use privacy::{Privacy, PrivacyConfig};
pub use profile::{ProfileSource, ProfileView};

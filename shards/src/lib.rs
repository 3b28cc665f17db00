//! `shards`: the per-core bidding state and the decision. No I/O.
//!
//! Owns: the campaign model ([`campaign`]), the compiled, immutable campaign set each core swaps
//! in between requests ([`CompiledSet`]), and [`Shard::decide`]: given a validated request and the
//! user's profile, which campaign and creative bid on which imp at what price, or why not.
//! Each [`Shard`] is owned by exactly one core's thread. Must never: do I/O, take a lock,
//! allocate per decision, or write to memory another core reads on the request path.

pub mod campaign;
pub mod decision;
pub mod profile;

pub use campaign::{Campaign, CampaignSet, CompiledSet, Creative, LoadError};
pub use decision::{Decision, ImpBid, Shard};
pub use profile::ProfileView;

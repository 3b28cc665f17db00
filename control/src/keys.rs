//! Redis key names (documented in `docs/ARCHITECTURE.md`, section Shards).
//!
//! Budget keys carry the campaign id as a hash tag (`{42}`) so one campaign's keys share a
//! cluster slot and the lease script touches one slot.

/// String: the whole campaign set as JSON (the campaigns file format, `docs/CAMPAIGNS.md`).
pub const CAMPAIGNS: &str = "helios:campaigns";
/// Stream: one entry (`version` field) per new set written to [`CAMPAIGNS`].
pub const CAMPAIGN_CHANGES: &str = "helios:campaigns:changes";

/// Integer: micros of USD not yet leased or spent.
pub fn remaining(campaign: u32) -> String {
    format!("helios:budget:{{{campaign}}}:remaining")
}
/// Hash: holder (`node:core`) → lease balance (micros).
pub fn leases(campaign: u32) -> String {
    format!("helios:budget:{{{campaign}}}:leases")
}
/// Sorted set: holder → lease expiry (ms, Redis server clock).
pub fn expiry(campaign: u32) -> String {
    format!("helios:budget:{{{campaign}}}:expiry")
}
/// List: notices settled on other nodes for bids of `node` (`core campaign bid_ts reserved`),
/// popped by that node's control thread; bounded (LTRIM) and expiring when the node is gone.
pub fn releases(node: &str) -> String {
    format!("helios:budget:releases:{node}")
}
/// Hash: holder → spend charged to its lease by other nodes (bids billed elsewhere), handed
/// back and cleared with the holder's next exchange.
pub fn remote(campaign: u32) -> String {
    format!("helios:budget:{{{campaign}}}:remote")
}
/// Hash: holder → lease balance it lost without settling it (expired, or taken over by a new
/// incarnation of the holder after a crash): counted as spent, never granted again; billing for
/// that holder's earlier bids is charged out of it. What is left is the underspend.
pub fn forfeit(campaign: u32) -> String {
    format!("helios:budget:{{{campaign}}}:forfeit")
}
/// Hash: holder → the incarnation (process start, unix ms) that holds its lease.
pub fn incarnation(campaign: u32) -> String {
    format!("helios:budget:{{{campaign}}}:incarnation")
}

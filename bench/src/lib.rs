//! `bench`: the tools that prove Helios's figures on any machine.
//!
//! Library half of the `helios-bench` binaries: the deterministic request corpus ([`corpus`]),
//! a sans-IO HTTP/1.1 client codec ([`http`]), coordinated-omission-correct latency recording
//! ([`latency`]), the open/closed-loop load engine ([`load`]), the exchange's auction and macro
//! substitution ([`auction`]), synthetic profiles ([`profiles`], for `helios-profiles`), the
//! decision-latency harness ([`decide`]) and process helpers (pinning, CPU time: [`sys`]).

pub mod auction;
pub mod corpus;
pub mod decide;
pub mod exchange;
pub mod http;
pub mod latency;
pub mod load;
pub mod profiles;
pub mod rng;
pub mod sys;

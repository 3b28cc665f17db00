//! `appliance`: the bidder process. One pinned event loop per core, each owning its connections
//! and its shard; HTTP and routing are sans-IO so any driver (io_uring, epoll) carries them.
//!
//! Layout: [`http`] (framing), [`gzip`] (request bodies), [`route`] (paths, notice queries),
//! [`core`] (one core's server: bytes in → bytes out), [`metrics`] (per-core counters and their
//! publication to the admin thread), [`events`] (where events go), [`driver`] (io_uring and
//! epoll loops), [`server`] (threads, pinning, listeners, signals), [`admin`] (the admin port),
//! [`config`] (TOML + environment + flags), [`sys`] (the few raw Linux calls),
//! [`alloc_count`] (per-thread allocation counting), [`trace`] (the decision trace on demand),
//! [`budget`] (budget store, lease exchange thread, notice settlement), [`rxtime`] (kernel
//! receive stamps), [`admission`] (shedding by age under overload).

pub mod admin;
pub mod admission;
pub use alloc_count;
pub mod budget;
pub mod campaign_feed;
pub mod config;
pub mod core;
pub mod driver;
pub mod events;
pub mod gzip;
pub mod http;
pub mod metrics;
pub mod route;
pub mod rxtime;
pub mod server;
pub mod sys;
pub mod threads;
pub mod trace;

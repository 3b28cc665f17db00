//! `profile-cache`: every node's in-memory replica of the user profiles whose truth is in Redis.
//!
//! Owns: the profile record layout ([`record`]), the Redis key layout ([`keys`], documented in
//! `docs/PROFILES.md`), the replica's memory ([`store`]: an open-addressing index of immutable
//! packed records reclaimed by epochs, most of them in home blocks found from the id's hash,
//! `home.rs`) and the replicator ([`replicator`]: bootstrap by `SCAN`,
//! then the change stream). The replicator runs on its own thread and is the only writer; bidding
//! cores only read. Must never: make a bidding core wait on Redis or on a writer.
//!
//! # Using it from the appliance
//!
//! ```no_run
//! use profile_cache::{ReplicaConfig, start};
//! use shards::ProfileView;
//!
//! let cfg = ReplicaConfig { redis_url: "redis://127.0.0.1:6390/".into(), ..Default::default() };
//! // Spawns the replicator thread; returns at once (the replica fills in the background).
//! let (replicator, reader) = start(&cfg).expect("valid configuration");
//! // One reader per core: `Reader` is `Clone + Send` (not `Sync`); clone it before moving it.
//! let core_reader = reader.clone();
//! std::thread::spawn(move || {
//!     // Per request, only when the replica is fresh enough to use personal data:
//!     if core_reader.is_fresh() {
//!         if let Some(profile) = core_reader.get("user-123") {
//!             let _w = profile.segment_weight(42); // ProfileView for the shard's decision
//!         } // dropping the ProfileRef releases the reader's pin
//!     }
//! });
//! // /readyz: reader.is_loaded(); metrics: reader.lag_seconds(), reader.stats().
//! replicator.stop(); // joins the thread; readers keep the last data
//! ```
//!
//! - [`Reader::get`]`(&self, id) -> Option<`[`ProfileRef`]`<'_>>`: no lock, no allocation; the
//!   only write is to the reader's own cache-padded epoch slot. Hold the `ProfileRef` for one
//!   decision only: while it lives, memory of profiles replaced since cannot be reclaimed.
//! - [`Reader::prefetch`]`(&self, id) -> `[`Prefetch`]: a lookup begun early — hashes the id and
//!   starts loading its index slot's line and its home block's, never waits;
//!   [`Reader::prefetch_record`]`(&token)` later reads the slot and starts loading the record's
//!   lines; [`Reader::get_prefetched`]`(token)` is `get` without hashing again. The appliance
//!   issues the prefetch right after the privacy verdict and looks up after the decision's
//!   pre-filters, so the lines arrive while other work runs. Same rules as `get`: no lock, no
//!   allocation, safe against any update.
//! - [`Reader::is_loaded`]: the first full copy is done and the stream drained once.
//! - [`Reader::lag_seconds`]: seconds since the replica last held everything Redis held (export as
//!   `helios_profile_replica_lag_seconds`); `+inf` before the first load.
//! - [`Reader::is_fresh`]: loaded and lag ≤ [`ReplicaConfig::max_staleness`]; when false, bid
//!   contextually only.
//! - [`Replicator::stop`] (or drop): stops and joins the thread within about
//!   [`ReplicaConfig::block`] + [`ReplicaConfig::io_timeout`].
//! - [`Store`]: the replica's writer without Redis, for tests and benches
//!   (`Store::new(expected, max_staleness_ms)` → `(Store, Reader)`; [`Store::with_tuning`] to
//!   compare the earlier hash, record alignment and reader fence, [`Tuning::SESSION_2`]).

mod arena;
mod epoch;
mod home;
mod idhash;
pub mod keys;
mod parse;
pub mod record;
pub mod replicator;
pub mod snapshot;
pub mod store;

pub use epoch::ReaderFence;
pub use idhash::IdHash;
pub use record::{FreqBucket, Gender, ProfileData, RecordView};
pub use replicator::{LagHistogram, ReplicaConfig, Replicator, StartError, start};
pub use store::{Prefetch, ProfileRef, Reader, Stats, Store, Tuning};

//! `profile-cache`: every node's in-memory replica of the user profiles whose truth is in Redis.
//!
//! Owns: the profile record layout, the replica (bootstrap by SCAN, then the change stream) and
//! lock-free, allocation-free lookups by user id. The replicator runs on its own thread; bidding
//! cores only read. Must never: make a bidding core wait on Redis or on a writer.

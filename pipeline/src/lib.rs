//! `pipeline`: how events leave the bidding cores and reach Kafka, losing nothing.
//!
//! Owns: one bounded lock-free queue per core, the producer thread that drains them into Kafka,
//! the disk spool used when the broker is away, and the signing of our notice URLs.
//! Must never: make a bidding core wait for Kafka, or drop an event without counting it.

//! `reporter`: turns the event stream into what an advertiser looks at.
//!
//! - [`ingest`]: Kafka consumer group → PostgreSQL (raw events by day, rollups), exactly once.
//! - [`api`]: the REST API (`/api/v1/…`, JWT bearer auth) and the dashboard's static files.
//! - [`db`]: connections and the versioned migrations applied at start.
//! - [`config`]: command line and environment.
//!
//! Nothing here runs on a bidding core: the reporter is its own process.

// The OpenAPI document is one `json!` literal.
#![recursion_limit = "512"]

pub mod api;
pub mod config;
pub mod day;
pub mod db;
pub mod ingest;
pub mod synth;

//! A sans-IO core set up off the server, for the benches and tests that drive `Core::on_input`
//! directly (`benches/core.rs`, `benches/profile_order.rs`, `tests/profile_no_alloc.rs`, which
//! include this file with `#[path = ...] mod core_setup;`): the configuration they share and a
//! core with its one connection.
//!
//! The caller's thread owns the core it returns. Never for the server: the node's cores take
//! their configuration from `appliance::server::core_config`.

use std::sync::Arc;
use std::time::Duration;

use appliance::core::{Conn, Core, CoreConfig};
use appliance::events::CountingSink;
use appliance::http::Limits;
use appliance::metrics::Published;
use shards::CompiledSet;

/// Core 0 of node `bench`: the default HTTP limits, 100 ms default `tmax` less a 10 ms margin,
/// no shedding and no turn budget, 16 KiB input and 64 KiB output buffers per connection, notices
/// signed with a fixed key, no decision traces.
pub fn config() -> CoreConfig {
    CoreConfig {
        core_id: 0,
        node: "bench".into(),
        limits: Limits {
            max_header: 8192,
            max_body: 65536,
        },
        max_inflated_body: 256 * 1024,
        null_mode: false,
        default_tmax_ms: 100,
        margin_ms: 10,
        shed_queue_pct: 0,
        shed_interval: Duration::from_millis(100),
        queue_target: Duration::ZERO,
        turn_budget: Duration::ZERO,
        out_high_water: 256 * 1024,
        seat: "helios".into(),
        vendor_id: 1,
        conn_in_capacity: 16 * 1024,
        conn_out_capacity: 64 * 1024,
        notice_key: b"bench".to_vec(),
        notice_base: "http://127.0.0.1:8080".into(),
        notice_late_window: Duration::from_secs(3600),
        trace_exchanges: Vec::new(),
    }
}

/// A core with `cfg` over `set`, reading the replica `profiles` when given (events counted and
/// dropped, metrics published as core 0's), and one connection to it.
pub fn core(
    cfg: CoreConfig,
    set: Arc<CompiledSet>,
    profiles: Option<profile_cache::Reader>,
) -> (Core, Conn) {
    let core = Core::new(
        cfg,
        set,
        Box::new(CountingSink::default()),
        quanta::Clock::new(),
        Arc::new(Published::new(0)),
        profiles,
    );
    let conn = core.new_conn();
    (core, conn)
}

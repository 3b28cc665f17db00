//! What the emit benches share: the event they emit, and the pipeline they emit into (broker
//! unreachable, so the producer spools or refuses at the bound; nothing leaves the machine).

use std::path::PathBuf;

use codec::event::{Event, EventKind, InlineStr};
use pipeline::PipelineConfig;

/// A bid event of realistic size; `i` makes its id and campaign.
pub fn sample_event(i: u64) -> Event {
    let mut e = Event::new(EventKind::Bid);
    e.event_id[..8].copy_from_slice(&i.to_le_bytes());
    e.node = InlineStr::new("bench-node");
    e.exchange = InlineStr::new("adx");
    e.request_id = InlineStr::new("0f8fad5b-d9cb-469f-a165-70867728950e");
    e.imp_id = InlineStr::new("1");
    e.site_or_app = InlineStr::new("news.example.com");
    e.campaign_id = 1 + (i % 100) as u32;
    e.bid_price_micros = 1_250_000;
    e.ts_unix_ns = i;
    e
}

/// A pipeline against an unreachable broker, spooling into `spool_dir`: `capacity` events of
/// queue per core, at most `spool_max` spool bytes, and 200 ms to give up on the broker at start.
pub fn unreachable_broker(spool_dir: PathBuf, capacity: usize, spool_max: u64) -> PipelineConfig {
    PipelineConfig {
        brokers: "127.0.0.1:1".into(),
        node: "bench".into(),
        spool_dir,
        queue_capacity_per_core: capacity,
        spool_max_bytes: spool_max,
        startup_timeout_ms: 200,
        ..PipelineConfig::default()
    }
}

//! `helios-reporter-gen`: produces a synthetic run of events (see `reporter::synth`) to Kafka and
//! prints, as JSON on stdout, what a correct reporter must then report for it. Used by the
//! dashboard's end-to-end test and by hand; not part of the serving path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use reporter::synth::{Expected, RunConfig, generate};

#[derive(Debug, Parser)]
#[command(
    name = "helios-reporter-gen",
    about = "Produce a synthetic, seeded run of bid/outcome events to Kafka and print the totals \
             a correct reporter must show for it (JSON on stdout)."
)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "HELIOS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Appended to the topic names (helios.bids<suffix>, helios.outcomes<suffix>).
    #[arg(long, default_value = "")]
    topic_suffix: String,
    /// Bid requests to simulate (each yields a bid or a no-bid, and maybe notices).
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Seed of the run (same seed, same events and ids).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Events are spread over the last this-many seconds up to now.
    #[arg(long, default_value_t = 3600)]
    span_secs: u64,
    /// First advertiser id; campaigns of advertiser A are A*100+1, A*100+2, …
    #[arg(long, default_value_t = 1)]
    first_advertiser: u32,
    /// Number of advertisers.
    #[arg(long, default_value_t = 2)]
    advertisers: u32,
    /// Campaigns per advertiser.
    #[arg(long, default_value_t = 3)]
    campaigns: u32,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.requests == 0 || a.span_secs == 0 || a.advertisers == 0 || a.campaigns == 0 {
        bail!("--requests, --span-secs, --advertisers and --campaigns must be positive");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let span = a.span_secs * 1_000_000_000;
    let mut cfg = RunConfig::small(a.seed, a.requests, now - span, span);
    cfg.first_advertiser = a.first_advertiser;
    cfg.advertisers = a.advertisers;
    cfg.campaigns_per_advertiser = a.campaigns;
    let events = generate(&cfg);
    let expected = Expected::of(&events);

    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .context("creating the producer")?;
    let mut key = itoa::Buffer::new();
    for e in &events {
        let topic = format!("{}{}", e.kind.topic(), a.topic_suffix);
        let bytes = e.to_bytes();
        let k = e.key(&mut key).to_vec();
        let mut rec = BaseRecord::to(&topic).key(&k).payload(&bytes[..]);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    p.poll(Duration::from_millis(10));
                    rec = r;
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120)).context("flushing")?;
    let out = serde_json::json!({ "events": events.len(), "expected": expected });
    println!("{out}");
    Ok(())
}

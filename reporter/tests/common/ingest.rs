//! The set-up the ingest tests share: a generated run produced to fresh topics, a fresh database
//! to ingest it into, the reporter's arguments for it, and what the database must hold after it.

use codec::event::Event;
use reporter::synth::{Expected, RunConfig, generate};
use tokio_postgres::Client;

use super::{TestDb, create_topics, now_ns, produce, unique};

/// One generated run on the real broker, and the database it is to be ingested into.
pub struct IngestRun {
    pub tdb: TestDb,
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    pub events: Vec<Event>,
    pub expected: Expected,
}

impl IngestRun {
    /// A fresh database (through `admin_url`); three-partition topics named with a unique `tag`
    /// suffix; 10 minutes of traffic ending now (`RunConfig::small(seed, 20_000, …)`) produced to
    /// them, then `garbage` messages that are not events; a consumer group of its own.
    pub async fn produce(
        admin_url: &str,
        brokers: &str,
        tag: &str,
        seed: u64,
        garbage: usize,
    ) -> IngestRun {
        let tdb = TestDb::create(admin_url).await;
        let suffix = format!(".{}", unique(tag));
        let topics = create_topics(brokers, &suffix, 3).await;
        let group = unique("g");
        let cfg = RunConfig::small(seed, 20_000, now_ns() - 600_000_000_000, 600_000_000_000);
        let events = generate(&cfg);
        let expected = Expected::of(&events);
        produce(brokers, &suffix, &events, garbage);
        IngestRun {
            tdb,
            brokers: brokers.to_owned(),
            topics,
            group,
            events,
            expected,
        }
    }

    /// `helios-reporter` arguments that ingest this run: `--mode mode`, this run's database,
    /// broker, group and topics, no partitions created, batches of at most `batch_max` events
    /// within 50 ms, each held `fault_delay_ms` ("0": not held), warn logs.
    pub fn reporter_args(&self, mode: &str, batch_max: &str, fault_delay_ms: &str) -> Vec<String> {
        [
            "--mode",
            mode,
            "--pg-url",
            &self.tdb.url,
            "--kafka-brokers",
            &self.brokers,
            "--group-id",
            &self.group,
            "--topics",
            &self.topics.join(","),
            "--create-partitions",
            "0",
            "--batch-max",
            batch_max,
            "--batch-wait-ms",
            "50",
            "--fault-delay-ms",
            fault_delay_ms,
            "--log",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The next offsets recorded with the rows, summed over the run's partitions.
    pub async fn recorded_offsets(&self, db: &Client) -> i64 {
        db.query_one(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM ingest_offsets WHERE group_id = $1",
            &[&self.group],
        )
        .await
        .expect("offsets")
        .get(0)
    }

    /// The run's spend (CPM micros of its billing notices), over every campaign.
    pub fn spend_cpm_micros(&self) -> i64 {
        let campaigns = self.expected.campaigns.values();
        campaigns.map(|c| c.spend_cpm_micros).sum()
    }
}

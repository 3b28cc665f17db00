//! Shared helpers of the reporter's integration tests: the services check (skip or fail), a
//! throw-away database per test, unique topics, an event producer, the reporter process, and a
//! generated run to ingest ([`ingest::IngestRun`]).
#![allow(dead_code)]

pub mod ingest;
pub mod own_pg;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codec::event::Event;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio_postgres::Client;

/// The services' addresses, or `None` (test prints `skipped`) unless HELIOS_REQUIRE_SERVICES=1.
pub fn services(test: &str, need_kafka: bool) -> Option<(String, Option<String>)> {
    let pg = std::env::var("HELIOS_PG_URL").ok();
    let kafka = std::env::var("HELIOS_KAFKA_BROKERS").ok();
    let missing = match (&pg, &kafka) {
        (None, _) => Some("HELIOS_PG_URL"),
        (_, None) if need_kafka => Some("HELIOS_KAFKA_BROKERS"),
        _ => None,
    };
    if let Some(var) = missing {
        if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!(
                "{test}: {var} is not set and HELIOS_REQUIRE_SERVICES=1 (start scripts/services.sh)"
            );
        }
        println!("skipped: {test}: {var} not set");
        return None;
    }
    Some((pg.unwrap_or_default(), kafka))
}

pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

/// A fresh database (dropped by [`TestDb::drop_db`]).
pub struct TestDb {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(admin_url: &str) -> TestDb {
        let name = unique("helios_test");
        let admin = reporter::db::connect(admin_url)
            .await
            .expect("admin connection");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = match admin_url.rfind('/') {
            Some(i) => format!("{}/{name}", &admin_url[..i]),
            None => panic!("HELIOS_PG_URL has no database part"),
        };
        TestDb {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }

    /// A fresh database with the reporter's schema (every migration applied), and a client of it.
    pub async fn migrated(admin_url: &str) -> (TestDb, Client) {
        let tdb = TestDb::create(admin_url).await;
        let mut c = tdb.client().await;
        reporter::db::migrate(&mut c).await.expect("migrate");
        (tdb, c)
    }

    pub async fn client(&self) -> Client {
        reporter::db::connect(&self.url)
            .await
            .expect("test database connection")
    }

    pub async fn drop_db(self) {
        let admin = reporter::db::connect(&self.admin_url)
            .await
            .expect("admin connection");
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// Produces events (each to its kind's topic name plus `suffix`) and `garbage` non-events, then
/// flushes.
pub fn produce(brokers: &str, suffix: &str, events: &[Event], garbage: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let send = |topic: &str, k: &[u8], payload: &[u8]| {
        let mut rec = BaseRecord::to(topic).key(k).payload(payload);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce: {e}"
                    );
                    p.poll(Duration::from_millis(10));
                    rec = r;
                }
            }
        }
        p.poll(Duration::ZERO);
    };
    let mut key = itoa::Buffer::new();
    for e in events {
        let topic = format!("{}{suffix}", e.kind.topic());
        let bytes = e.to_bytes();
        let k = e.key(&mut key).to_vec();
        send(&topic, &k, &bytes);
    }
    for i in 0..garbage {
        send(
            &format!("helios.outcomes{suffix}"),
            b"x",
            format!("garbage {i}").as_bytes(),
        );
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

/// Creates the test's two topics with `partitions` partitions.
pub async fn create_topics(brokers: &str, suffix: &str, partitions: i32) -> Vec<String> {
    let topics = vec![
        format!("helios.bids{suffix}"),
        format!("helios.outcomes{suffix}"),
    ];
    let cfg = reporter::ingest::consumer::IngestConfig {
        brokers: brokers.to_owned(),
        group_id: "unused".into(),
        topics: topics.clone(),
        batch_max: 1,
        pg_writers: 1,
        batch_wait: Duration::from_millis(1),
        retention_days: 30,
        create_partitions: partitions,
        fault_delay: Duration::ZERO,
        async_commit: false,
        prepare_ahead: true,
        copy_notices: true,
        defer_rollups: true,
        rollup_fold_every: Duration::from_secs(5),
        rollup_fold_rows: 250_000,
        kafka_options: Vec::new(),
    };
    reporter::ingest::consumer::ensure_topics(&cfg)
        .await
        .expect("create topics");
    topics
}

/// A reporter process; killed (SIGKILL) on drop if still running.
pub struct Reporter {
    pub child: Child,
}

impl Reporter {
    /// Starts the `helios-reporter` cargo built for this test, or `HELIOS_TEST_REPORTER_BIN`
    /// when set (the shared target directory's `debug/helios-reporter` is overwritten by every
    /// worktree's build; a copy of one's own keeps a test run on its own binary).
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Reporter {
        let bin = std::env::var("HELIOS_TEST_REPORTER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_helios-reporter").to_owned());
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("HELIOS_REPORTER_FAULT_DELAY_MS")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Reporter {
            child: cmd.spawn().expect("start helios-reporter"),
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

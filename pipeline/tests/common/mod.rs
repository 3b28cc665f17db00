//! Shared helpers of the pipeline's integration tests: service discovery (skip or fail when a
//! service is missing), a private Tansu broker the test can stop and start, event builders,
//! and a consumer that counts events by id.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codec::event::{Event, EventKind, InlineStr};
use pipeline::PipelineConfig;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

/// `Some(value)` of an environment variable naming a service, or `None` after printing
/// `skipped: …` — unless `HELIOS_REQUIRE_SERVICES=1`, which makes a missing service a failure.
pub fn service(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{var} is not set but HELIOS_REQUIRE_SERVICES=1: {what} is required");
            }
            println!("skipped: {var} not set ({what})");
            None
        }
    }
}

pub fn kafka() -> Option<String> {
    service("HELIOS_KAFKA_BROKERS", "a Kafka broker (Tansu)")
}

pub fn redis_url() -> Option<String> {
    service("HELIOS_REDIS_URL", "Redis")
}

/// The Tansu binary, for tests that stop and restart their own broker.
pub fn tansu_bin() -> Option<PathBuf> {
    let candidates = [
        std::env::var("HELIOS_TANSU").ok().map(PathBuf::from),
        std::env::var("HELIOS_TOOLS")
            .ok()
            .map(|t| Path::new(&t).join("bin/tansu")),
        Some(PathBuf::from("/var/cache/helios/tools/bin/tansu")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!(
                "tansu binary not found (HELIOS_TANSU / HELIOS_TOOLS) but HELIOS_REQUIRE_SERVICES=1"
            );
        }
        println!("skipped: tansu binary not found");
    }
    found
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// A name unique to this test run (topics, nodes, directories).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        now_ns() % 1_000_000_000_000
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port on loopback")
}

/// A Tansu broker owned by the test (SQLite engine in its own directory), stopped by PID.
pub struct Broker {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    engine: String,
}

impl Broker {
    pub fn start(bin: &Path, dir: &Path, engine: &str) -> Broker {
        std::fs::create_dir_all(dir).expect("broker dir");
        let mut b = Broker {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
            engine: engine.to_string(),
        };
        b.resume();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and storage.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.join("tansu.log")).expect("broker log");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.bin)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.engine])
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not open port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of the broker's log (printed when a test fails).
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the broker (SIGKILL: an abrupt outage) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pipeline config for tests: fast timeouts, private topics and spool.
pub fn test_config(brokers: &str, spool: &Path, tag: &str) -> PipelineConfig {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let mut c = PipelineConfig {
        brokers: brokers.to_string(),
        node: tag.to_string(),
        spool_dir: spool.to_path_buf(),
        topic_bids: format!("{tag}.bids"),
        topic_outcomes: format!("{tag}.outcomes"),
        topic_partitions: 3,
        probe_interval_ms: 300,
        startup_timeout_ms: 5_000,
        ..PipelineConfig::default()
    };
    c.producer.message_timeout_ms = 30_000;
    c.producer.request_timeout_ms = 10_000;
    c
}

/// Event `seq` of a run: unique id, kinds rotating over all six.
pub fn event(run: &str, core: u16, seq: u64) -> Event {
    let kind = EventKind::ALL[(seq % 6) as usize];
    let mut e = Event::new(kind);
    e.core = core;
    e.event_id[..8].copy_from_slice(&seq.to_le_bytes());
    e.event_id[8..10].copy_from_slice(&core.to_le_bytes());
    e.ts_unix_ns = now_ns();
    e.node = InlineStr::new(run);
    e.request_id = InlineStr::new("req");
    e.campaign_id = if kind == EventKind::NoBid {
        0
    } else {
        1 + (seq % 50) as u32
    };
    e.bid_price_micros = 1_500_000;
    e
}

/// Consumes both topics from the start until `expected` distinct event ids are seen (or
/// `timeout`), returning id → times seen.
pub fn consume(
    brokers: &str,
    topics: &[&str],
    expected: usize,
    timeout: Duration,
) -> HashMap<[u8; 16], u32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("verify"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(topics).expect("subscribe");
    let mut seen: HashMap<[u8; 16], u32> = HashMap::new();
    let deadline = Instant::now() + timeout;
    let mut idle_after_done = 0;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let events = codec::event::frame::decode_record(m.payload().unwrap_or_default())
                    .expect("a record of events");
                for e in events {
                    let e = e.expect("an event");
                    *seen.entry(e.event_id).or_default() += 1;
                }
                idle_after_done = 0;
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {
                if seen.len() >= expected {
                    // Linger a little to catch duplicates still arriving.
                    idle_after_done += 1;
                    if idle_after_done >= 5 {
                        break;
                    }
                }
            }
        }
    }
    seen
}

/// Waits until `cond` holds (polling every 50 ms) or panics after `timeout` with `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! Events leave the cores through the pipeline: with no broker they are spooled and flushed at
//! shutdown; with the real broker (Tansu, `HELIOS_KAFKA_BROKERS`) they are produced to Kafka;
//! a `helios` SIGKILLed right after answering loses none of the answered bids (journal).

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

/// The broker from the environment, or `None` (test skipped) unless services are required.
fn kafka() -> Option<String> {
    match std::env::var("HELIOS_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var("HELIOS_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("HELIOS_KAFKA_BROKERS is not set and HELIOS_REQUIRE_SERVICES=1")
        }
        _ => {
            println!("skipped: HELIOS_KAFKA_BROKERS is not set");
            None
        }
    }
}

fn send_bids(s: &Server, n: usize) {
    let mut c = s.client();
    for _ in 0..n {
        let r = c.roundtrip(&post("/openrtb2/bid/adx", BID.as_bytes(), ""));
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    }
}

fn flushed_line(s: &Server) -> serde_json::Value {
    let log = s.log.lock().unwrap();
    let line = log
        .iter()
        .find(|l| l.contains("\"events flushed\""))
        .unwrap_or_else(|| panic!("no flush report in {log:?}"));
    serde_json::from_str::<serde_json::Value>(line).unwrap()["fields"].clone()
}

#[test]
fn without_a_broker_events_are_spooled_and_flushed_at_shutdown() {
    let spool = std::env::temp_dir().join(format!("helios-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let mut s = Server::start(
        "uring",
        &[],
        // No broker: the pipeline starts in spool mode.
        &spool_only_events(spool.to_str().unwrap()),
    );
    send_bids(&s, 25);
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{:?}", s.log.lock().unwrap());
    let f = flushed_line(&s);
    assert_eq!(f["spooled"], 25, "{f}");
    assert_eq!(f["dropped"], 0);
    assert_eq!(f["left_in_queues"], 0);
    assert!(f["spool_bytes_left"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_dir_all(&spool);
}

#[test]
fn librdkafka_and_pipeline_threads_run_where_the_helpers_run() {
    let Some(brokers) = kafka() else { return };
    let allowed = appliance::sys::allowed_cpus().unwrap();
    if allowed.len() < 2 {
        println!("skipped: needs two CPUs (allowed: {allowed:?})");
        return;
    }
    let core_cpu = allowed[allowed.len() - 1].to_string();
    let spare: Vec<usize> = allowed[..allowed.len() - 1].to_vec();
    let spool = std::env::temp_dir().join(format!("helios-spool-t-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let s = Server::start(
        "uring",
        &["--cores", &core_cpu],
        &[
            ("HELIOS_EVENTS_ENABLED", "true"),
            ("HELIOS_EVENTS_BROKERS", brokers.as_str()),
            ("HELIOS_EVENTS_SPOOL_DIR", spool.to_str().unwrap()),
        ],
    );
    send_bids(&s, 10);
    let t = thread_placement(s.pid());
    // librdkafka's threads are created by the pipeline's start-up, not by Helios: they inherit
    // the helper placement (CPU set apart from the core, SCHED_BATCH = 3).
    let rdk: Vec<_> = t.iter().filter(|(n, _)| n.starts_with("rdk:")).collect();
    assert!(rdk.len() >= 2, "librdkafka threads: {t:?}");
    for (name, (cpus, policy, _)) in rdk
        .into_iter()
        .chain(t.iter().filter(|(n, _)| *n == "helios-producer"))
    {
        assert_eq!(
            appliance::config::parse_cpu_list(cpus).unwrap(),
            spare,
            "{name}: {t:?}"
        );
        assert_eq!(*policy, 3, "{name} under SCHED_BATCH: {t:?}");
    }
    assert_eq!(t["helios-core-0"].0, core_cpu);
    assert_eq!(t["helios-core-0"].1, 0);
    drop(s);
    let _ = std::fs::remove_dir_all(&spool);
}

#[test]
fn with_the_broker_events_reach_kafka() {
    let Some(brokers) = kafka() else { return };
    let spool = std::env::temp_dir().join(format!("helios-spool-k-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let mut s = Server::start(
        "uring",
        &[],
        &[
            ("HELIOS_EVENTS_ENABLED", "true"),
            ("HELIOS_EVENTS_BROKERS", brokers.as_str()),
            ("HELIOS_EVENTS_SPOOL_DIR", spool.to_str().unwrap()),
        ],
    );
    send_bids(&s, 40);
    assert!(
        eventually(|| s.metric_sum("helios_pipeline_produced_total") >= 40),
        "produced {}",
        s.metric_sum("helios_pipeline_produced_total")
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let f = flushed_line(&s);
    assert_eq!(f["produced"], 40, "{f}");
    assert_eq!(f["dropped"], 0);
    let _ = std::fs::remove_dir_all(&spool);
}

/// Bid and no-bid events of node `node` in the bids topic, by event id (times seen).
fn bid_events_of(
    brokers: &str,
    node: &str,
    want: usize,
) -> std::collections::HashMap<[u8; 16], u32> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{node}-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[codec::event::TOPIC_BIDS]).unwrap();
    let mut seen = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = std::time::Instant::now();
                for e in codec::event::frame::decode_record(m.payload().unwrap_or_default())
                    .unwrap()
                    .flatten()
                {
                    if e.node.as_str() == node {
                        *seen.entry(e.event_id).or_insert(0) += 1;
                    }
                }
            }
            Some(Err(e)) => println!("consumer: {e}"),
            None if seen.len() >= want && quiet_since.elapsed() > Duration::from_secs(3) => break,
            None => {}
        }
    }
    seen
}

/// Runs the real binary against `first_brokers`, answers `N` requests in two halves (the first
/// has time to be acknowledged or spooled), SIGKILLs it right after the last answer, restarts it
/// on the same spool directory against `brokers`, and checks every answered request's event is in
/// Kafka (duplicates only by event id).
fn kill_after_answering(brokers: &str, first_brokers: &str, tag: &str) {
    let spool = std::env::temp_dir().join(format!("helios-spool-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let node = format!("{tag}-{}", std::process::id());
    let spool_dir = spool.to_str().unwrap();
    let env = |b| {
        [
            ("HELIOS_EVENTS_ENABLED", "true"),
            ("HELIOS_EVENTS_BROKERS", b),
            ("HELIOS_EVENTS_STARTUP_TIMEOUT_MS", "2000"),
            ("HELIOS_EVENTS_SPOOL_DIR", spool_dir),
            ("HELIOS_SERVER_NODE", node.as_str()),
        ]
    };
    let mut s = Server::start("uring", &[], &env(first_brokers));
    const N: usize = 300;
    // Each request answered makes one event: a bid (200) or a no-bid (204, e.g. paced).
    let mut c = s.client();
    for i in 0..N {
        let r = c.roundtrip(&post("/openrtb2/bid/adx", BID.as_bytes(), ""));
        assert!(r.status == 200 || r.status == 204, "{}", r.status);
        if i == N / 2 {
            // The first half acknowledged by the broker (or spooled) before the rest.
            let done = || {
                s.metric_sum("helios_pipeline_produced_total")
                    + s.metric_sum("helios_pipeline_spooled_total")
                    > N as u64 / 2
            };
            assert!(eventually(done), "first half delivered");
        }
    }
    let before = s.metric_sum("helios_pipeline_produced_total")
        + s.metric_sum("helios_pipeline_spooled_total");
    // Every one of the N requests was answered: kill at once.
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(10));
    let mut s = Server::start("uring", &[], &env(brokers));
    let replayed = s.metric_sum("helios_pipeline_journal_replayed_total");
    println!(
        "{tag}: {before} produced or spooled before the kill; {replayed} replayed from the journal at restart"
    );
    assert!(
        eventually(|| s.metric_sum("helios_pipeline_spool_bytes") == 0),
        "spool replayed"
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let seen = bid_events_of(brokers, &node, N);
    let dups: u32 = seen.values().map(|n| n - 1).sum();
    println!(
        "{tag}: distinct bid/no-bid events {} of {N} answered, duplicates {dups}",
        seen.len()
    );
    assert_eq!(seen.len(), N, "every answered request's event is in Kafka");
    let _ = std::fs::remove_dir_all(&spool);
}

/// SIGKILL with the broker up.
#[test]
fn sigkill_after_answering_loses_no_answered_event() {
    let Some(brokers) = kafka() else { return };
    kill_after_answering(&brokers, &brokers, "kill-up");
}

/// SIGKILL while spooling (nothing listens on port 1), restarted with the broker.
#[test]
fn sigkill_while_spooling_loses_no_answered_event() {
    let Some(brokers) = kafka() else { return };
    kill_after_answering(&brokers, "127.0.0.1:1", "kill-spool");
}

//! Events leave the cores through the pipeline: with no broker they are spooled and flushed at
//! shutdown; with the real broker (Tansu, `HELIOS_KAFKA_BROKERS`) they are produced to Kafka.

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
        assert_eq!(r.status, 200);
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
        &[
            ("HELIOS_EVENTS_ENABLED", "true"),
            // Nothing listens on port 1: the pipeline starts in spool mode.
            ("HELIOS_EVENTS_BROKERS", "127.0.0.1:1"),
            ("HELIOS_EVENTS_STARTUP_TIMEOUT_MS", "200"),
            ("HELIOS_EVENTS_SHUTDOWN_TIMEOUT_MS", "500"),
            ("HELIOS_EVENTS_SPOOL_DIR", spool.to_str().unwrap()),
        ],
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

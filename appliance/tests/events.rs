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

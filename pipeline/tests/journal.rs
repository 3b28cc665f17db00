//! The cores' write-ahead journals at the pipeline level: a process killed with SIGKILL right
//! after its last `emit` returned loses none of its events — with the broker up (events in the
//! queue, in open frames and in librdkafka's unacknowledged batches) and with the broker away
//! (events in the frame being filled for the spool) — and a full journal spills to the spool,
//! counted, losing nothing.
// The helpers below are test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pipeline::Pipeline;

const N: u64 = 20_000;

/// Child mode of the SIGKILL tests: emits `N` events in bursts over ≈ 1 s (so some are
/// acknowledged, some in flight, some in open frames, some still queued); prints `READY` the moment the last
/// `emit` returns, then waits to be killed.
#[test]
fn child_emits_then_waits_to_be_killed() {
    let (Ok(spool), Ok(brokers), Ok(run)) = (
        std::env::var("HELIOS_JOURNAL_CHILD_SPOOL"),
        std::env::var("HELIOS_JOURNAL_CHILD_BROKERS"),
        std::env::var("HELIOS_JOURNAL_CHILD_RUN"),
    ) else {
        println!("skipped: only runs as the child of the SIGKILL journal tests");
        return;
    };
    let mut cfg = test_config(&brokers, std::path::Path::new(&spool), &run);
    cfg.startup_timeout_ms = 3_000;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    for i in 0..N {
        s.emit(&event(&run, 0, i));
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    let m = p.metrics();
    println!(
        "READY produced={} spooled={} queued={} journal_bytes={}",
        m.produced, m.spooled, m.queue_depth, m.journal_bytes
    );
    std::thread::sleep(Duration::from_secs(600));
}

/// Runs the child against `child_brokers`, SIGKILLs it after its last emit, restarts the
/// pipeline on the same spool directory against `brokers` and returns what reached Kafka.
fn kill_and_restart(brokers: &str, child_brokers: &str, tag: &str) -> HashMap<[u8; 16], u32> {
    let run = unique(tag);
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_emits_then_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HELIOS_JOURNAL_CHILD_SPOOL", spool.path())
        .env("HELIOS_JOURNAL_CHILD_BROKERS", child_brokers)
        .env("HELIOS_JOURNAL_CHILD_RUN", &run)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut ready = None;
    for line in out.lines() {
        let line = line.unwrap();
        // (libtest's "test … ... " may precede it on the same line.)
        if let Some(i) = line.find("READY") {
            ready = Some(line[i..].to_owned());
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, right after the last emit returned
    child.wait().unwrap();
    let ready = ready.expect("child reported READY");
    println!("child killed at: {ready}");

    let cfg = test_config(brokers, spool.path(), &run);
    let (p, sinks) = Pipeline::start(&cfg, 1).expect("pipeline restarts");
    drop(sinks);
    let m = p.metrics();
    println!("after restart: journal_replayed={}", m.journal_replayed);
    wait_for("spool replayed", Duration::from_secs(60), || {
        let m = p.metrics();
        m.spool_bytes == 0
    });
    let report = p.shutdown(Duration::from_secs(10));
    println!("{report:?}");
    assert_eq!(report.dropped, 0);
    consume(
        brokers,
        &[&cfg.topic_bids, &cfg.topic_outcomes],
        N as usize,
        Duration::from_secs(60),
    )
}

fn check_every_event(seen: &HashMap<[u8; 16], u32>) {
    let dups: u32 = seen.values().map(|&n| n - 1).sum();
    let seqs: std::collections::HashSet<u64> = seen
        .keys()
        .map(|k| u64::from_le_bytes(k[..8].try_into().unwrap()))
        .collect();
    let missing = (0..N)
        .filter(|i| !seqs.contains(i))
        .take(10)
        .collect::<Vec<_>>();
    println!(
        "distinct {} of {N}, duplicate deliveries {dups} (removed downstream by event id)",
        seen.len()
    );
    assert!(missing.is_empty(), "events lost, e.g. seq {missing:?}");
    assert_eq!(seen.len() as u64, N, "every event id arrives, no stranger");
}

#[test]
fn sigkill_with_the_broker_up_loses_no_emitted_event() {
    let Some(brokers) = kafka() else { return };
    let seen = kill_and_restart(&brokers, &brokers, "jkill-up");
    check_every_event(&seen);
}

#[test]
fn sigkill_while_spooling_loses_no_emitted_event() {
    let Some(brokers) = kafka() else { return };
    // Nothing listens on port 1: the child spools; the restarted pipeline has the broker.
    let seen = kill_and_restart(&brokers, "127.0.0.1:1", "jkill-down");
    check_every_event(&seen);
}

/// A journal smaller than what the producer has not settled yet fills up; the events that
/// find it full go to the core's overflow spool segment, counted in `journal_full`, and every
/// event is still spooled exactly once (no broker: everything ends in the spool).
#[test]
fn a_full_journal_spills_to_the_spool_counted() {
    let run = unique("jfull");
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config("127.0.0.1:1", spool.path(), &run);
    cfg.startup_timeout_ms = 200;
    cfg.journal_bytes_per_core = pipeline::journal::MIN_CAPACITY;
    cfg.queue_capacity_per_core = 1 << 16;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    for i in 0..N {
        s.emit(&event(&run, 0, i));
    }
    wait_for("every event spooled", Duration::from_secs(20), || {
        let m = p.metrics();
        m.queue_depth == 0 && m.spooled >= N
    });
    let m = p.metrics();
    println!("{m:?}");
    assert!(m.journal_full > 0, "a 64 KiB journal fills: {m:?}");
    assert_eq!(m.overflowed, 0, "the queue never filled");
    assert_eq!(m.spooled, N, "each event spooled once: {m:?}");
    assert_eq!(m.dropped(), 0);
    drop(s);
    let report = p.shutdown(Duration::from_secs(2));
    assert_eq!(report.dropped, 0);
    // Shut down cleanly: the journal is fully acknowledged, a restart replays nothing from it.
    let (p, sinks) = Pipeline::start(&cfg, 1).expect("pipeline restarts");
    assert_eq!(p.metrics().journal_replayed, 0);
    drop(sinks);
    p.shutdown(Duration::from_secs(2));
}

/// The broker's acknowledgements release the journal: once every event is acknowledged, no
/// journal byte is in use, and a clean restart replays nothing.
#[test]
fn acknowledgements_release_the_journal() {
    let Some(brokers) = kafka() else { return };
    let run = unique("jack");
    let spool = tempfile::tempdir().unwrap();
    let cfg = test_config(&brokers, spool.path(), &run);
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    for i in 0..5_000 {
        s.emit(&event(&run, 0, i));
    }
    wait_for("every event acknowledged", Duration::from_secs(60), || {
        p.metrics().produced >= 5_000
    });
    wait_for("the journal released", Duration::from_secs(10), || {
        p.metrics().journal_bytes == 0
    });
    let m = p.metrics();
    assert_eq!((m.produced, m.spooled, m.journal_bytes), (5_000, 0, 0));
    drop(s);
    p.shutdown(Duration::from_secs(5));
    let (p, sinks) = Pipeline::start(&cfg, 1).expect("pipeline restarts");
    assert_eq!(p.metrics().journal_replayed, 0);
    drop(sinks);
    p.shutdown(Duration::from_secs(5));
}

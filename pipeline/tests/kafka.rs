//! Integration tests against a real Kafka-protocol broker (Tansu): every event arrives exactly
//! once; a full queue spools and still delivers; a broker outage mid-run loses nothing; a
//! process killed with SIGKILL has its spool replayed by the next start.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pipeline::Pipeline;

fn check_all_once(seen: &HashMap<[u8; 16], u32>, expected: usize, allow_duplicates: bool) {
    let dups: u32 = seen.values().map(|&n| n - 1).sum();
    println!(
        "distinct {} of {expected}, duplicate deliveries {dups}",
        seen.len()
    );
    assert_eq!(seen.len(), expected, "every event id arrives");
    if !allow_duplicates {
        assert_eq!(dups, 0, "each event arrives exactly once");
    }
}

#[test]
fn every_event_of_a_run_arrives_exactly_once() {
    let Some(brokers) = kafka() else { return };
    let run = unique("once");
    let spool = tempfile::tempdir().unwrap();
    let cfg = test_config(&brokers, spool.path(), &run);
    let (p, sinks) = Pipeline::start(&cfg, 2).expect("pipeline starts");
    const PER_CORE: u64 = 20_000;
    let threads: Vec<_> = sinks
        .into_iter()
        .map(|mut s| {
            let run = run.clone();
            std::thread::spawn(move || {
                for i in 0..PER_CORE {
                    s.emit(&event(&run, s.core(), i));
                    if i % 1000 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap(); // the sinks are dropped: overflow segments (if any) are sealed
    }
    // A burst faster than the producer overflows into the cores' spool segments, which are
    // replayed while running; wait for all of it.
    wait_for("every event acknowledged", Duration::from_secs(60), || {
        let m = p.metrics();
        m.produced >= 2 * PER_CORE && m.spool_bytes == 0
    });
    let m = p.metrics();
    let report = p.shutdown(Duration::from_secs(20));
    println!("{m:?}\n{report:?}");
    assert!(report.clean, "{report:?}");
    assert_eq!(report.produced, 2 * PER_CORE);
    assert_eq!(m.delivery_errors, 0);
    assert_eq!(report.spooled, m.overflowed, "only overflow was spooled");
    assert_eq!(report.dropped, 0);
    let seen = consume(
        &brokers,
        &[&cfg.topic_bids, &cfg.topic_outcomes],
        (2 * PER_CORE) as usize,
        Duration::from_secs(60),
    );
    check_all_once(&seen, (2 * PER_CORE) as usize, false);
}

#[test]
fn a_full_queue_spools_and_every_event_still_arrives() {
    let Some(brokers) = kafka() else { return };
    let run = unique("overflow");
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&brokers, spool.path(), &run);
    cfg.queue_capacity_per_core = 8;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    const N: u64 = 30_000;
    for i in 0..N {
        s.emit(&event(&run, 0, i));
    }
    drop(s); // seals the core's overflow segment
    let m = p.metrics();
    println!("after the burst: {m:?}");
    assert!(
        m.overflowed > 0,
        "a tight loop into an 8-slot queue overflows"
    );
    wait_for("spool replayed", Duration::from_secs(60), || {
        let m = p.metrics();
        m.spool_bytes == 0 && m.produced == N
    });
    let report = p.shutdown(Duration::from_secs(10));
    assert_eq!(report.dropped, 0);
    let seen = consume(
        &brokers,
        &[&cfg.topic_bids, &cfg.topic_outcomes],
        N as usize,
        Duration::from_secs(60),
    );
    check_all_once(&seen, N as usize, false);
}

/// Emits at a steady rate, stops the broker for `outage`, restarts it, and checks that every
/// event arrives (duplicates are allowed: a delivery that timed out may have been written; the
/// reporter counts by event id).
fn broker_outage(outage: Duration) {
    let Some(bin) = tansu_bin() else { return };
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut broker = Broker::start(&bin, &dir.path().join("broker"), "sqlite://tansu.db");
    let run = unique("outage");
    let mut cfg = test_config(&broker.brokers(), &dir.path().join("spool"), &run);
    cfg.spool_segment_bytes = 256 * 1024;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().expect("one sink");
    let rate_per_ms = 5; // 5,000 events/s
    let before = Duration::from_secs(2);
    let after = Duration::from_secs(3);
    let start = Instant::now();
    let mut seq = 0u64;
    let mut stopped_at = None;
    let mut resumed = false;
    let mut max_spool = 0;
    loop {
        let t = start.elapsed();
        if stopped_at.is_none() && t >= before {
            broker.stop();
            stopped_at = Some(Instant::now());
            println!("broker stopped at event {seq}");
        }
        if let Some(at) = stopped_at
            && !resumed
            && at.elapsed() >= outage
        {
            broker.resume();
            resumed = true;
            println!("broker restarted at event {seq}, metrics {:?}", p.metrics());
        }
        if resumed && stopped_at.is_some_and(|at| at.elapsed() >= outage + after) {
            break;
        }
        for _ in 0..rate_per_ms {
            s.emit(&event(&run, 0, seq));
            seq += 1;
        }
        max_spool = max_spool.max(p.metrics().spool_bytes);
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(s);
    println!("emitted {seq}; max spool {max_spool} B; {:?}", p.metrics());
    std::thread::sleep(Duration::from_secs(2));
    println!("broker log tail:\n{}", broker.log_tail(30));
    if let Ok(l) = std::env::var("HELIOS_TEST_BROKER_LOG") {
        let _ = std::fs::copy(dir.path().join("broker/tansu.log"), l);
    }
    assert!(max_spool > 0, "the outage was long enough to spool");
    wait_for("spool drained", Duration::from_secs(120), || {
        let m = p.metrics();
        m.spool_bytes == 0 && m.queue_depth == 0
    });
    let report = p.shutdown(Duration::from_secs(20));
    println!("{report:?}");
    assert_eq!(report.dropped, 0);
    assert_eq!(report.spool_bytes_left, 0);
    let seen = consume(
        &broker.brokers(),
        &[&cfg.topic_bids, &cfg.topic_outcomes],
        seq as usize,
        Duration::from_secs(120),
    );
    check_all_once(&seen, seq as usize, true);
}

#[test]
fn broker_stopped_mid_run_every_event_arrives() {
    broker_outage(Duration::from_secs(6));
}

/// The 60 s outage of the issue; `make soak` (or `cargo nextest run --run-ignored only`).
#[test]
#[ignore = "60 s outage: run in soak"]
fn broker_stopped_60s_mid_run_every_event_arrives() {
    broker_outage(Duration::from_secs(60));
}

/// Child mode of `killed_process_spool_is_replayed_on_restart`: emits with no broker
/// reachable, reports when everything is spooled, then waits to be killed.
#[test]
fn child_emits_into_spool_then_waits_to_be_killed() {
    let (Ok(spool), Ok(n), Ok(run)) = (
        std::env::var("HELIOS_PIPELINE_CHILD_SPOOL"),
        std::env::var("HELIOS_PIPELINE_CHILD_EVENTS"),
        std::env::var("HELIOS_PIPELINE_CHILD_RUN"),
    ) else {
        println!("skipped: only runs as the child of killed_process_spool_is_replayed_on_restart");
        return;
    };
    let n: u64 = n.parse().unwrap();
    // Nothing listens on port 1: the pipeline starts in spool mode.
    let mut cfg = test_config("127.0.0.1:1", std::path::Path::new(&spool), &run);
    cfg.startup_timeout_ms = 300;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    for i in 0..n {
        s.emit(&event(&run, 0, i));
    }
    wait_for("all spooled", Duration::from_secs(30), || {
        let m = p.metrics();
        m.queue_depth == 0 && m.spooled >= n
    });
    // The producer thread writes its buffer to the file every turn (≤ a few ms).
    std::thread::sleep(Duration::from_millis(200));
    println!("READY {}", p.metrics().spooled);
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn killed_process_spool_is_replayed_on_restart() {
    let Some(brokers) = kafka() else { return };
    let run = unique("sigkill");
    let spool = tempfile::tempdir().unwrap();
    const N: u64 = 10_000;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_emits_into_spool_then_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HELIOS_PIPELINE_CHILD_SPOOL", spool.path())
        .env("HELIOS_PIPELINE_CHILD_EVENTS", N.to_string())
        .env("HELIOS_PIPELINE_CHILD_RUN", &run)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut ready = false;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("READY ") {
            assert_eq!(n.trim().parse::<u64>().unwrap(), N);
            ready = true;
            break;
        }
    }
    assert!(ready, "child reported READY");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left: u64 = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!("child killed; {left} B left in the spool");
    assert!(left > 0);

    let cfg = test_config(&brokers, spool.path(), &run);
    let (p, sinks) = Pipeline::start(&cfg, 1).expect("pipeline restarts");
    drop(sinks);
    wait_for("spool replayed", Duration::from_secs(60), || {
        let m = p.metrics();
        m.spool_bytes == 0 && m.replayed >= N
    });
    let report = p.shutdown(Duration::from_secs(10));
    println!("{report:?}");
    let seen = consume(
        &brokers,
        &[&cfg.topic_bids, &cfg.topic_outcomes],
        N as usize,
        Duration::from_secs(60),
    );
    check_all_once(&seen, N as usize, false);
}

/// A spool left by a Helios of schema 1 (one rkyv event per record, keyed by campaign id) is
/// replayed as it is by this one, alongside live frames, and every event reads back.
#[test]
fn schema_1_spool_segments_are_replayed_and_read() {
    let Some(brokers) = kafka() else { return };
    let run = unique("legacy");
    let spool = tempfile::tempdir().unwrap();
    let cfg = test_config(&brokers, spool.path(), &run);
    const OLD: u64 = 500;
    const LIVE: u64 = 500;
    {
        // What the old producer left: a sealed segment of schema 1 records.
        let counters = std::sync::Arc::new(pipeline::metrics::Counters::default());
        let (s, _) = pipeline::spool::Spool::open(
            &cfg.spool_dir,
            cfg.spool_max_bytes,
            cfg.spool_segment_bytes,
            counters,
        )
        .unwrap();
        let mut w = pipeline::spool::SpoolWriter::new(s, "p");
        for i in 0..OLD {
            let e = event(&run, 0, i);
            let mut kb = itoa::Buffer::new();
            let key = e.key(&mut kb).to_vec();
            let topic = pipeline::spool::topic_index(e.kind);
            w.append(topic, &key, &e.to_legacy_bytes()).unwrap();
        }
        w.seal().unwrap();
    }
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    for i in OLD..OLD + LIVE {
        s.emit(&event(&run, 0, i));
    }
    drop(s);
    wait_for(
        "old and live events acknowledged",
        Duration::from_secs(60),
        || {
            let m = p.metrics();
            m.produced >= OLD + LIVE && m.spool_bytes == 0
        },
    );
    let m = p.metrics();
    let report = p.shutdown(Duration::from_secs(10));
    assert_eq!(m.replayed, OLD, "{m:?}");
    assert_eq!(report.dropped, 0);
    let seen = consume(
        &brokers,
        &[&cfg.topic_bids, &cfg.topic_outcomes],
        (OLD + LIVE) as usize,
        Duration::from_secs(60),
    );
    check_all_once(&seen, (OLD + LIVE) as usize, false);
    assert!(std::fs::read_dir(spool.path()).unwrap().all(|e| {
        let p = e.unwrap().path();
        p.extension().is_none_or(|x| x != "seg")
    }));
}

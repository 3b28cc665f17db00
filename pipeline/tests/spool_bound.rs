//! The spool's bound at the pipeline level: with the broker away and the spool full, new
//! events are dropped and counted (never silently), the spool never passes its bound, and
//! what was spooled stays.

mod common;

use std::time::Duration;

use common::*;
use pipeline::Pipeline;

#[test]
fn at_the_bound_new_events_are_dropped_and_counted() {
    let run = unique("bound");
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config("127.0.0.1:1", spool.path(), &run);
    cfg.startup_timeout_ms = 200;
    cfg.spool_max_bytes = 64 * 1024;
    cfg.spool_segment_bytes = 16 * 1024;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    const N: u64 = 1_000;
    for i in 0..N {
        s.emit(&event(&run, 0, i));
    }
    wait_for(
        "every event spooled or dropped",
        Duration::from_secs(10),
        || {
            let m = p.metrics();
            m.queue_depth == 0 && m.spooled + m.dropped() == N
        },
    );
    let m = p.metrics();
    println!("{m:?}");
    assert!(
        m.dropped_spool_full > 0,
        "1,000 × ~400 B does not fit in 64 KiB"
    );
    assert!(m.spooled > 100, "the spool filled up to its bound first");
    assert!(m.spool_bytes <= 64 * 1024);
    drop(s);
    let report = p.shutdown(Duration::from_secs(2));
    assert_eq!(report.dropped, m.dropped_spool_full);
    // The cores' journals (`*.wal`, a fixed size allocated at start) are not spool data.
    let on_disk: u64 = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_none_or(|x| x != "wal"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 64 * 1024, "{on_disk} B on disk");
    assert_eq!(on_disk, report.spool_bytes_left);
}

//! The producer thread's wake-up policy: between turns it parks until its next frame is due
//! (at most `idle_sleep_max_us`), so a steady trickle of events does not wake it per event; a
//! core whose queue passes the fill mark (a quarter of the queue) wakes it at once, and so does
//! the shutdown. No broker is needed: with none reachable, drained events go to the spool, and
//! what is measured is only when the queue is drained.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pipeline::Pipeline;

#[test]
fn a_queue_past_its_fill_mark_wakes_the_parked_producer_and_below_it_waits() {
    let run = unique("wake");
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config("127.0.0.1:1", spool.path(), &run);
    cfg.startup_timeout_ms = 200;
    cfg.queue_capacity_per_core = 1024; // fill mark: 256 events
    cfg.idle_sleep_max_us = 1_000_000; // parks a whole second between turns
    cfg.frame_linger_ms = 10_000; // no frame deadline wakes it either
    cfg.probe_interval_ms = 60_000;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();

    // A few events, drained by the park's timeout: the producer has just parked for a second
    // when the queue is seen empty.
    for i in 0..10 {
        s.emit(&event(&run, 0, i));
    }
    wait_for("the first events drained", Duration::from_secs(5), || {
        s.queue_len() == 0
    });
    let parked_at = Instant::now();

    // Below the fill mark: nobody rings, the events wait for the park to end.
    for i in 10..110 {
        s.emit(&event(&run, 0, i));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        s.queue_len(),
        100,
        "below the fill mark the producer sleeps on (no wake-up per event)"
    );

    // Past the fill mark (256 queued): the sink rings and the producer drains at once, long
    // before its one-second park would have ended. A sink looks at its fill every 64th push, so
    // the run stops at the push that rings (the 320th: 310 queued): events pushed after the
    // ring could find the producer already drained and parked again, below the mark, and
    // rightly wait out its park.
    assert_eq!(
        pipeline::wake::CHECK_EVERY,
        64,
        "the run below ends on a checked push"
    );
    for i in 110..320 {
        s.emit(&event(&run, 0, i));
    }
    let rang_at = Instant::now();
    wait_for(
        "the queue drained after the ring",
        Duration::from_secs(5),
        || s.queue_len() == 0,
    );
    let drained_after = rang_at.elapsed();
    let since_park = parked_at.elapsed();
    assert!(
        since_park < Duration::from_millis(900),
        "drained {since_park:?} after the producer parked for 1 s ({drained_after:?} after the \
         ring): the ring did not end the park"
    );
    assert_eq!(
        p.metrics().overflowed,
        0,
        "nothing spilled to the core's segment"
    );

    // The shutdown rings too: it does not wait for the park to end.
    drop(s);
    let t = Instant::now();
    let report = p.shutdown(Duration::from_secs(2));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert_eq!(report.dropped, 0);
    assert_eq!(report.left_in_queues, 0);
}

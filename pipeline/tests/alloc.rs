//! Counting-allocator proof that a bidding core's calls allocate nothing once warm:
//! `CoreSink::emit` (journal + queue path, overflow-to-spool path, and the full-journal path),
//! `NoticeSigner::write_url` into a
//! reused buffer, and `NoticeSigner::verify`. Only allocations made by the test's own thread
//! (the "core") are counted; the producer thread allocates as it likes.

mod common;

use std::time::Duration;

use codec::Micros;
use common::*;
use pipeline::Pipeline;
use pipeline::notice::{BidParams, NoticeKind, NoticeSigner};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

/// Allocations made by `f` on this thread, after its result.
fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let (n, r) = alloc_count::count(f);
    (r, n)
}

#[test]
fn emit_allocates_nothing_on_the_queue_path() {
    assert!(
        alloc_count::installed(),
        "the counting allocator must be installed"
    );
    let run = unique("alloc");
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config("127.0.0.1:1", spool.path(), &run);
    cfg.startup_timeout_ms = 200;
    cfg.queue_capacity_per_core = 1 << 16;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    let events: Vec<_> = (0..10_100).map(|i| event(&run, 0, i)).collect();
    for e in &events[..100] {
        s.emit(e);
    }
    let ((), n) = count(|| {
        for e in &events[100..] {
            s.emit(e);
        }
    });
    assert_eq!(n, 0, "10,000 emits allocated {n} times");
    let m = p.metrics();
    assert_eq!(m.overflowed, 0);
    assert_eq!(
        m.journal_full, 0,
        "every event went through the journal: {m:?}"
    );
    assert_eq!(p.journal_usage().len(), 1, "the journal is on by default");
    drop(s);
    p.shutdown(Duration::from_secs(2));
}

/// Starts a one-core pipeline toward an unreachable broker with `configure` applied, emits 100
/// events to warm up, then counts the allocations of 10,000 more emits.
fn allocations_of_10k_emits(
    tag: &str,
    configure: impl FnOnce(&mut pipeline::PipelineConfig),
) -> (pipeline::MetricsSnapshot, u64) {
    let run = unique(tag);
    let spool = tempfile::tempdir().expect("a temporary spool dir can be made");
    let mut cfg = test_config("127.0.0.1:1", spool.path(), &run);
    cfg.startup_timeout_ms = 200;
    configure(&mut cfg);
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().expect("one core asked, one sink given");
    let events: Vec<_> = (0..10_100).map(|i| event(&run, 0, i)).collect();
    for e in &events[..100] {
        s.emit(e);
    }
    let ((), n) = count(|| {
        for e in &events[100..] {
            s.emit(e);
        }
    });
    let m = p.metrics();
    drop(s);
    p.shutdown(Duration::from_secs(2));
    (m, n)
}

#[test]
fn emit_allocates_nothing_on_the_overflow_path() {
    let (m, n) = allocations_of_10k_emits("alloc-of", |cfg| cfg.queue_capacity_per_core = 2);
    assert!(m.overflowed > 1_000, "a 2-slot queue overflows: {m:?}");
    assert_eq!(n, 0, "10,000 emits (overflowing) allocated {n} times");
}

#[test]
fn emit_allocates_nothing_when_the_journal_is_full() {
    let (m, n) = allocations_of_10k_emits("alloc-jf", |cfg| {
        cfg.queue_capacity_per_core = 1 << 16;
        cfg.journal_bytes_per_core = pipeline::journal::MIN_CAPACITY;
    });
    assert!(m.journal_full > 1_000, "a 64 KiB journal fills: {m:?}");
    assert_eq!(n, 0, "10,000 emits (journal full) allocated {n} times");
}

#[test]
fn notice_urls_and_verification_allocate_nothing() {
    let mut signer = NoticeSigner::new(b"0123456789abcdef0123456789abcdef");
    let bid = BidParams {
        request_id: "req-1",
        imp_id: "1",
        campaign_id: 42,
        creative_id: 7,
        advertiser_id: 3,
        bid_price: Micros(2_000_000),
        currency: *b"USD",
        bid_ts_unix_ns: now_ns(),
        node: "node-a",
        exchange: "adx",
        trace_id: [1; 16],
        country: *b"USA",
        device_type: 2,
        site_or_app: "news.example",
        user_id: Some("user-1"),
        reserved: Micros(2_500),
        core: 1,
    };
    let mut buf = Vec::with_capacity(2048);
    signer.write_url(NoticeKind::Win, "http://h/notice/win", &bid, &mut buf);
    let url = String::from_utf8(buf.clone()).unwrap();
    let query = url
        .split_once('?')
        .unwrap()
        .1
        .replace("${AUCTION_PRICE}", "1.5")
        .replace("${AUCTION_CURRENCY}", "USD");
    let now = now_ns();
    let ((), n) = count(|| {
        for _ in 0..1_000 {
            buf.clear();
            signer.write_url(
                NoticeKind::Billing,
                "http://h/notice/billing",
                &bid,
                &mut buf,
            );
            let v = signer.verify(NoticeKind::Win, query.as_bytes(), now);
            assert!(v.is_ok());
            let _e = v.map(|v| v.to_event(0, now));
        }
    });
    assert_eq!(n, 0, "1,000 url builds + verifications allocated {n} times");
    // One bid's four URLs from one prepared state (what a core does per bid).
    let mut scratch = Vec::with_capacity(1024);
    let ((), n) = count(|| {
        for _ in 0..1_000 {
            buf.clear();
            let p = signer.prepare(&bid, &mut scratch);
            for kind in NoticeKind::ALL {
                p.write_url(kind, "http://h/notice/x", &mut buf);
            }
        }
    });
    assert_eq!(n, 0, "1,000 prepared bids (4,000 URLs) allocated {n} times");
    assert!(buf.len() > 4 * 200);
}

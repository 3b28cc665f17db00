//! The frequency worker against a real Redis: billing events with a user id increment
//! `helios:profile:{user}` `f:{campaign}:{hour}` and announce the user on the change stream,
//! once per event id; with Redis away, bounded retries end in a counted failure.

mod common;

thread_local! {
    static RUN_SALT: u64 = common::now_ns();
}

use std::collections::HashMap;
use std::time::Duration;

use codec::event::{Event, EventKind, InlineStr};
use common::*;
use pipeline::Pipeline;

fn billing(user: &str, campaign: u32, id: u64, ts: u64) -> Event {
    let mut e = Event::new(EventKind::Billing);
    e.event_id[..8].copy_from_slice(&id.to_le_bytes());
    // Ids unique to this run: the dedupe keys of earlier runs live on in Redis.
    e.event_id[8..].copy_from_slice(&RUN_SALT.with(|s| *s).to_le_bytes());
    e.user_id = InlineStr::new(user);
    e.campaign_id = campaign;
    e.ts_unix_ns = ts;
    e
}

#[test]
fn billing_events_increment_frequency_counters_once_per_event_id() {
    let Some(url) = redis_url() else { return };
    let run = unique("freq");
    let spool = tempfile::tempdir().unwrap();
    // No broker needed here: events are spooled, the frequency worker runs regardless.
    let mut cfg = test_config("127.0.0.1:1", spool.path(), &run);
    cfg.startup_timeout_ms = 200;
    cfg.redis_url = Some(url.clone());
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    let ts = now_ns();
    let hour = ts / 3_600_000_000_000;
    let users: Vec<String> = (0..4).map(|i| format!("{run}-u{i}")).collect();
    let mut expected: HashMap<(String, u32), u64> = HashMap::new();
    let mut id = 0;
    for round in 0..25u64 {
        for (ui, u) in users.iter().enumerate() {
            let campaign = 1 + (ui as u32 + round as u32) % 3;
            id += 1;
            let e = billing(u, campaign, id, ts);
            s.emit(&e);
            *expected.entry((u.clone(), campaign)).or_default() += 1;
            if round % 5 == 0 {
                s.emit(&e); // the same billing notice again: same event id, counted once
            }
        }
    }
    // Not counted: a win, and a billing event without a user (no consent).
    let mut w = billing(&users[0], 1, 10_000, ts);
    w.kind = EventKind::Win;
    s.emit(&w);
    s.emit(&billing("", 1, 10_001, ts));
    wait_for("increments applied", Duration::from_secs(20), || {
        let m = p.metrics();
        m.freq_applied + m.freq_duplicate >= 120
    });
    let m = p.metrics();
    drop(s);
    p.shutdown(Duration::from_secs(5));
    assert_eq!(m.freq_applied, 100);
    assert_eq!(m.freq_duplicate, 20);
    assert_eq!(m.freq_failed, 0);

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_connection().unwrap();
    for ((u, campaign), n) in &expected {
        let got: Option<u64> = redis::cmd("HGET")
            .arg(format!("helios:profile:{u}"))
            .arg(format!("f:{campaign}:{hour}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(got, Some(*n), "{u} campaign {campaign}");
    }
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("helios:profile:changes")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let announced = entries
        .iter()
        .filter(|(_, f)| f.get("k").is_some_and(|k| k.starts_with(&run)))
        .count();
    assert_eq!(announced, 100, "one stream entry per applied increment");
}

#[test]
fn redis_away_ends_in_counted_failures_after_bounded_retries() {
    let run = unique("freqdown");
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config("127.0.0.1:1", spool.path(), &run);
    cfg.startup_timeout_ms = 200;
    cfg.redis_url = Some("redis://127.0.0.1:1/".into());
    cfg.freq_max_attempts = 2;
    let (p, mut sinks) = Pipeline::start(&cfg, 1).expect("pipeline starts");
    let mut s = sinks.pop().unwrap();
    for i in 0..10 {
        s.emit(&billing("u", 1, i, now_ns()));
    }
    wait_for("failures counted", Duration::from_secs(20), || {
        p.metrics().freq_failed == 10
    });
    assert_eq!(p.metrics().freq_applied, 0);
    drop(s);
    p.shutdown(Duration::from_secs(2));
}

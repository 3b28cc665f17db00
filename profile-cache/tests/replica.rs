//! The replica against the real Redis: bootstrap, live updates and deletes, Redis restarted
//! mid-stream, the stream trimmed while the replica was cut off, malformed values.

mod common;

use common::*;
use profile_cache::{Gender, Reader, ReplicaConfig, keys, start};
use shards::ProfileView;

fn seg_field(i: u32) -> String {
    format!("{}:{},{}:{}", i % 50, 100 + i % 900, 1000 + i, 7)
}

/// Profiles `u0..u{n}` with segments, year of birth and gender ([`check_preloaded`] reads them).
fn preload(con: &mut redis::Connection, ns: &str, n: u32) {
    common::preload(con, ns, n, |i| {
        vec![
            (keys::FIELD_SEGMENTS, seg_field(i)),
            (keys::FIELD_BIRTH_YEAR, (1950 + i % 50).to_string()),
            (
                keys::FIELD_GENDER,
                ["M", "F", "O"][i as usize % 3].to_owned(),
            ),
        ]
    });
}

fn check_preloaded(reader: &Reader, n: u32) {
    for i in 0..n {
        let p = reader
            .get(&format!("u{i}"))
            .unwrap_or_else(|| panic!("u{i} replicated"));
        assert_eq!(
            p.segment_weight(i % 50),
            Some((100 + i % 900) as u16),
            "u{i}"
        );
        assert_eq!(p.segment_weight(1000 + i), Some(7));
        assert_eq!(p.birth_year(), Some((1950 + i % 50) as u16));
        assert_eq!(
            p.gender(),
            [Gender::Male, Gender::Female, Gender::Other][i as usize % 3]
        );
    }
}

#[test]
fn bootstrap_copies_every_profile_and_changes_made_during_the_copy() {
    let Some(url) = redis_url("bootstrap") else {
        return;
    };
    let (ns, mut con) = fresh_namespace(&url, "bootstrap");
    preload(&mut con, &ns, 3000);
    // A stream entry from before the replica starts: already reflected in the hash, harmless.
    write_profile(&mut con, &ns, "u0", &[("seg", &seg_field(0))]);

    let (replicator, reader) = start(&test_config(&url, &ns)).expect("start");
    // Changes while the copy may be running: they are in the stream after the recorded point.
    for i in 0..200u32 {
        write_profile(&mut con, &ns, &format!("late{i}"), &[("seg", "5:55")]);
    }
    wait_for("replica loaded", 60, || reader.is_loaded());
    wait_for("late writes applied", 10, || {
        reader.get("late199").is_some()
    });
    check_preloaded(&reader, 3000);
    for i in 0..200u32 {
        assert_eq!(
            reader
                .get(&format!("late{i}"))
                .expect("late")
                .segment_weight(5),
            Some(55)
        );
    }
    let s = replicator.stats();
    assert_eq!(s.profiles, 3200);
    assert_eq!(s.bootstraps, 1);
    assert_eq!(s.malformed_fields + s.malformed_profiles, 0);
    // Idle, the replicator re-marks the replica current at least every `block` (50 ms).
    wait_for("fresh", 5, || {
        reader.is_fresh() && reader.lag_seconds() < 1.0
    });
    replicator.stop();
    // Readers keep the last data after the replicator stopped.
    check_preloaded(&reader, 10);
    clean(&mut con, &ns);
}

/// Whether this process may use SCHED_FIFO (tried on a short-lived thread of its own).
fn fifo_permitted() -> bool {
    std::thread::spawn(|| {
        let p = libc::sched_param { sched_priority: 1 };
        // SAFETY: plain syscall on this short-lived thread with a valid parameter struct.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) == 0 }
    })
    .join()
    .expect("probe thread")
}

/// The scheduling policy (field 41 of `/proc/self/task/*/stat`) of this process's thread named
/// `name`.
fn thread_policy(name: &str) -> Option<u32> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        // Fields after the command's closing parenthesis start at field 3.
        let rest = &stat[stat.rfind(')')? + 1..];
        return rest.split_whitespace().nth(41 - 3)?.parse().ok();
    }
    None
}

#[test]
fn live_updates_deletes_and_frequency_counters_reach_the_readers() {
    let Some(url) = redis_url("live") else { return };
    let (ns, mut con) = fresh_namespace(&url, "live");
    // Following under SCHED_FIFO (as root; otherwise a warning and normal priority): same results.
    let cfg = ReplicaConfig {
        follow_fifo_priority: Some(1),
        ..test_config(&url, &ns)
    };
    let (replicator, reader) = start(&cfg).expect("start");
    wait_for("replica loaded (empty)", 60, || reader.is_loaded());
    assert_eq!(reader.stats().profiles, 0);
    if fifo_permitted() {
        // It follows under SCHED_FIFO (policy 1) once loaded.
        wait_for("replicator thread under SCHED_FIFO", 5, || {
            thread_policy("profile-replica") == Some(1)
        });
    }

    write_profile(
        &mut con,
        &ns,
        "alice",
        &[
            ("seg", "1:900,2:100"),
            ("yob", "1990"),
            ("ls", "1764000000"),
        ],
    );
    wait_for("alice visible", 5, || reader.get("alice").is_some());
    {
        let a = reader.get("alice").expect("alice");
        assert_eq!(a.segment_weight(1), Some(900));
        assert_eq!(a.last_seen(), Some(1_764_000_000));
    }
    // Update: the whole new state replaces the old one.
    write_profile(&mut con, &ns, "alice", &[("seg", "3:300")]);
    wait_for("alice updated", 5, || {
        reader
            .get("alice")
            .is_some_and(|a| a.segment_weight(3).is_some())
    });
    assert_eq!(reader.get("alice").expect("alice").segment_weight(1), None);

    // The billing path's contract: HINCRBY the hour bucket, then XADD.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let hour = now_s / 3600;
    for _ in 0..3 {
        let mut p = redis::pipe();
        p.atomic()
            .cmd("HINCRBY")
            .arg(keys::profile_key(&ns, "alice"))
            .arg(keys::freq_field(77, hour))
            .arg(1)
            .ignore()
            .cmd("XADD")
            .arg(keys::changes_stream(&ns))
            .arg("*")
            .arg(keys::STREAM_FIELD)
            .arg("alice")
            .ignore();
        let _: () = p.query(&mut con).expect("HINCRBY+XADD");
    }
    wait_for("3 impressions replicated", 5, || {
        reader
            .get("alice")
            .is_some_and(|a| a.impressions_since(77, now_s - 60) == 3)
    });
    assert_eq!(
        reader.get("alice").expect("alice").impressions_since(78, 0),
        0
    );

    delete_profile(&mut con, &ns, "alice");
    wait_for("alice deleted", 5, || reader.get("alice").is_none());
    let s = replicator.stats();
    assert_eq!(s.profiles, 0);
    assert!(s.deletes_applied >= 1);
    assert!(s.stream_entries >= 6);
    assert_eq!(s.bootstraps, 1, "following the stream never re-bootstraps");
    let lag = replicator.lag_histogram();
    assert!(lag.len() >= 6, "apply lag recorded per entry");
    replicator.stop();
    clean(&mut con, &ns);
}

#[test]
fn redis_restart_mid_stream_keeps_serving_then_resumes_from_the_last_id() {
    let Some(_) = redis_url("restart") else {
        return;
    };
    let Some(mut own) = OwnRedis::start("restart") else {
        return;
    };
    let ns = namespace("restart");
    let mut con = connect(&own.url());
    preload(&mut con, &ns, 500);
    let (replicator, reader) = start(&test_config(&own.url(), &ns)).expect("start");
    wait_for("loaded", 60, || reader.is_loaded());
    // Updates in flight when Redis goes down (persisted by the AOF, maybe not yet applied).
    for i in 0..300u32 {
        write_profile(
            &mut con,
            &ns,
            &format!("u{i}"),
            &[("seg", &format!("{i}:1"))],
        );
    }
    own.stop();
    // Bidding goes on with the last data while Redis is away; staleness grows past the maximum.
    assert!(reader.get("u400").is_some());
    wait_for("replica reported stale", 10, || !reader.is_fresh());
    assert!(reader.lag_seconds() >= 1.0);
    assert!(reader.get("u499").is_some(), "last data still served");

    own.restart();
    let mut con = connect(&own.url());
    write_profile(&mut con, &ns, "after", &[("seg", "9:9")]);
    wait_for("write after the restart applied", 15, || {
        reader.get("after").is_some()
    });
    wait_for("fresh again", 5, || reader.is_fresh());
    for i in 0..300u32 {
        assert_eq!(
            reader.get(&format!("u{i}")).expect("u").segment_weight(i),
            Some(1),
            "u{i}"
        );
    }
    let s = replicator.stats();
    assert!(s.reconnects >= 1, "reconnected: {s:?}");
    assert!(s.redis_errors >= 1);
    assert_eq!(
        s.bootstraps, 1,
        "resumed from the last id, no second copy: {s:?}"
    );
    replicator.stop();
}

#[test]
fn stream_trimmed_past_the_replica_forces_a_rebootstrap_that_drops_deleted_profiles() {
    let Some(url) = redis_url("trim") else { return };
    let (ns, mut con) = fresh_namespace(&url, "trim");
    preload(&mut con, &ns, 200);
    let client = redis::Client::open(url.as_str()).expect("url");
    let db = client.get_connection_info().redis_settings().db();
    let target: std::net::SocketAddr = {
        let addr = client.get_connection_info().addr().to_string();
        let hp = addr.trim_start_matches("redis://");
        std::net::ToSocketAddrs::to_socket_addrs(&hp)
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("resolvable Redis address: {addr}"))
    };
    let proxy = Proxy::start(target);
    let (replicator, reader) = start(&test_config(&proxy.url(db), &ns)).expect("start");
    wait_for("loaded", 60, || reader.is_loaded());
    write_profile(&mut con, &ns, "u1", &[("seg", "1:1")]);
    wait_for("followed", 5, || {
        reader
            .get("u1")
            .is_some_and(|p| p.segment_weight(1) == Some(1))
    });

    proxy.cut();
    // While the replica cannot see Redis: a change, a delete, then the stream trimmed to nothing.
    write_profile(&mut con, &ns, "u2", &[("seg", "2:2")]);
    delete_profile(&mut con, &ns, "u3");
    // A delete the stream will not tell about (entry trimmed): only a re-bootstrap's sweep finds it.
    trim_stream(&mut con, &ns);
    assert!(reader.get("u3").is_some(), "cut off: still the old data");
    proxy.restore();

    wait_for("re-bootstrapped", 60, || replicator.stats().bootstraps >= 2);
    wait_for("loaded and current", 30, || reader.is_fresh());
    assert!(reader.get("u3").is_none(), "deleted profile swept");
    assert_eq!(reader.get("u2").expect("u2").segment_weight(2), Some(2));
    assert_eq!(replicator.stats().profiles, 199);
    replicator.stop();
    clean(&mut con, &ns);
}

#[test]
fn malformed_values_are_skipped_counted_and_never_stop_replication() {
    let Some(url) = redis_url("malformed") else {
        return;
    };
    let (ns, mut con) = fresh_namespace(&url, "malformed");
    let (replicator, reader) = start(&test_config(&url, &ns)).expect("start");
    wait_for("loaded", 60, || reader.is_loaded());

    // Bad segment list and bad year: those fields skipped, the good ones kept.
    write_profile(
        &mut con,
        &ns,
        "m1",
        &[
            ("seg", "1:5,oops"),
            ("yob", "19x0"),
            ("gender", "F"),
            ("f:3:notanhour", "1"),
        ],
    );
    // Not a hash under the profile prefix.
    let _: () = redis::cmd("SET")
        .arg(keys::profile_key(&ns, "m2"))
        .arg("x")
        .query(&mut con)
        .expect("SET");
    let _: () = redis::cmd("XADD")
        .arg(keys::changes_stream(&ns))
        .arg("*")
        .arg("k")
        .arg("m2")
        .query(&mut con)
        .expect("XADD");
    // A stream entry without the `k` field.
    let _: () = redis::cmd("XADD")
        .arg(keys::changes_stream(&ns))
        .arg("*")
        .arg("x")
        .arg("m9")
        .query(&mut con)
        .expect("XADD");
    // A user id longer than a record allows.
    let long = "L".repeat(300);
    write_profile(&mut con, &ns, &long, &[("seg", "1:1")]);
    // Binary garbage in a field value.
    let _: () = redis::cmd("HSET")
        .arg(keys::profile_key(&ns, "m3"))
        .arg("seg")
        .arg(&[0xffu8, 0xfe, 0x00][..])
        .query(&mut con)
        .expect("HSET");
    write_profile(&mut con, &ns, "m3", &[("ls", "12")]);
    // Replication goes on.
    write_profile(&mut con, &ns, "ok", &[("seg", "4:4")]);
    wait_for("replication continued past the bad data", 5, || {
        reader.get("ok").is_some()
    });

    let m1 = reader.get("m1").expect("m1 kept with its good fields");
    assert_eq!(m1.gender(), Gender::Female);
    assert_eq!(m1.segment_count(), 0);
    assert_eq!(m1.birth_year(), None);
    drop(m1);
    assert!(reader.get("m2").is_none());
    assert!(reader.get(&long).is_none());
    assert_eq!(reader.get("m3").expect("m3").last_seen(), Some(12));
    let s = replicator.stats();
    assert_eq!(s.malformed_fields, 4, "{s:?}"); // seg, yob, f:…, m3's seg
    assert_eq!(s.malformed_profiles, 3, "{s:?}"); // m2 (not a hash), entry without k, long id
    assert_eq!(s.bootstraps, 1);
    replicator.stop();
    clean(&mut con, &ns);
}

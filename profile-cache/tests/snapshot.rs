//! The on-disk snapshot against the real Redis: a restart loads it and catches up with the changes
//! made while the replica was down (no full copy); a corrupt or foreign snapshot is ignored (full
//! copy); a snapshot of the earlier format version (the 3-line record layout) is refused and
//! replaced after a full copy; a stream trimmed past the snapshot's position forces a full copy
//! that drops profiles deleted meanwhile.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use profile_cache::{Reader, ReplicaConfig, keys, start};
use shards::ProfileView;

fn config(url: &str, ns: &str, snap: &Path) -> ReplicaConfig {
    ReplicaConfig {
        snapshot_path: Some(snap.to_owned()),
        snapshot_interval: Duration::from_secs(3600),
        ..test_config(url, ns)
    }
}

/// Profiles `u0..u{n}`: `u{i}` in segment `i` with weight 100 + i % 900, born 1950 + i % 50
/// ([`check`] reads them).
fn preload(con: &mut redis::Connection, ns: &str, n: u32) {
    common::preload(con, ns, n, |i| {
        vec![
            (keys::FIELD_SEGMENTS, format!("{}:{}", i, 100 + i % 900)),
            (keys::FIELD_BIRTH_YEAR, (1950 + i % 50).to_string()),
        ]
    });
}

fn check(reader: &Reader, n: u32, skip: &[u32]) {
    for i in (0..n).filter(|i| !skip.contains(i)) {
        let p = reader
            .get(&format!("u{i}"))
            .unwrap_or_else(|| panic!("u{i} present"));
        assert_eq!(p.segment_weight(i), Some((100 + i % 900) as u16), "u{i}");
        assert_eq!(p.birth_year(), Some((1950 + i % 50) as u16), "u{i}");
    }
}

/// What each test starts from, or `None` when it is skipped (no Redis): the Redis URL, the
/// test's namespace (emptied) holding `n` preloaded profiles, a connection, and a snapshot file
/// (in the returned directory, removed on drop) written by a [`first_run`] over them.
fn snapshotted(
    test: &str,
    n: u32,
) -> Option<(
    String,
    String,
    redis::Connection,
    PathBuf,
    tempfile::TempDir,
)> {
    let url = redis_url(test)?;
    let (ns, mut con) = fresh_namespace(&url, test);
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("profiles.snap");
    preload(&mut con, &ns, n);
    first_run(&url, &ns, &snap, &mut con);
    Some((url, ns, con, snap, dir))
}

/// Runs a replica until loaded, applies one change, stops it (writing the snapshot at stop).
fn first_run(url: &str, ns: &str, snap: &Path, con: &mut redis::Connection) {
    let (replicator, reader) = start(&config(url, ns, snap)).expect("start");
    wait_for("loaded", 60, || reader.is_loaded());
    write_profile(con, ns, "u7", &[("seg", "7:777")]);
    wait_for("u7 updated", 5, || {
        reader
            .get("u7")
            .is_some_and(|p| p.segment_weight(7) == Some(777))
    });
    let s = replicator.stats();
    assert_eq!(s.bootstraps, 1);
    assert_eq!(
        s.snapshot_loaded_profiles, 0,
        "no snapshot on the first run"
    );
    replicator.stop();
    assert!(snap.exists(), "snapshot written at stop");
    assert!(reader.stats().snapshots_written >= 1);
    assert_eq!(reader.stats().snapshot_errors, 0);
}

#[test]
fn restart_from_the_snapshot_catches_up_with_changes_made_while_down() {
    let Some((url, ns, mut con, snap, _dir)) = snapshotted("snap-restart", 2000) else {
        return;
    };

    // While the replica is down: an update, a delete, a new profile, each with its stream entry.
    write_profile(&mut con, &ns, "u1", &[("seg", "1:555")]);
    delete_profile(&mut con, &ns, "u2");
    write_profile(&mut con, &ns, "new", &[("seg", "3:33")]);

    let (replicator, reader) = start(&config(&url, &ns, &snap)).expect("restart");
    wait_for("changes made while down applied", 30, || {
        reader.get("new").is_some() && reader.get("u2").is_none()
    });
    wait_for("fresh", 10, || reader.is_fresh());
    let s = replicator.stats();
    assert_eq!(
        s.bootstraps, 0,
        "no full copy: resumed from the snapshot: {s:?}"
    );
    assert_eq!(s.snapshot_loaded_profiles, 2000, "{s:?}");
    assert_eq!(s.profiles, 2000, "2000 - u2 + new");
    assert_eq!(
        reader.get("u1").expect("u1").segment_weight(1),
        Some(555),
        "update made while down"
    );
    assert_eq!(
        reader.get("u7").expect("u7").segment_weight(7),
        Some(777),
        "update from before the snapshot"
    );
    assert_eq!(reader.get("new").expect("new").segment_weight(3), Some(33));
    check(&reader, 2000, &[1, 2, 7]);
    replicator.stop();
    clean(&mut con, &ns);
}

#[test]
fn a_corrupt_or_foreign_snapshot_is_ignored_and_the_replica_bootstraps() {
    let Some((url, ns, mut con, snap, _dir)) = snapshotted("snap-corrupt", 1000) else {
        return;
    };

    let good = std::fs::read(&snap).expect("snapshot");
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    for (what, bytes) in [
        ("corrupt", bad),
        ("foreign", b"PK\x03\x04 a zip file".to_vec()),
    ] {
        std::fs::write(&snap, &bytes).expect("write");
        let (replicator, reader) = start(&config(&url, &ns, &snap)).expect("start");
        wait_for("loaded", 60, || {
            reader.is_loaded() && replicator.stats().bootstraps == 1
        });
        let s = replicator.stats();
        assert_eq!(s.snapshot_loaded_profiles, 0, "{what}: nothing loaded");
        assert_eq!(s.snapshot_errors, 1, "{what}: rejection counted: {s:?}");
        assert_eq!(s.profiles, 1000, "{what}");
        check(&reader, 1000, &[7]);
        assert_eq!(reader.get("u7").expect("u7").segment_weight(7), Some(777));
        replicator.stop();
        // The stop wrote a good snapshot over the bad file.
        assert_ne!(std::fs::read(&snap).expect("snapshot"), bytes, "{what}");
    }
    clean(&mut con, &ns);
}

#[test]
fn a_stream_trimmed_past_the_snapshot_forces_a_bootstrap_that_drops_deleted_profiles() {
    let Some((url, ns, mut con, snap, _dir)) = snapshotted("snap-trim", 500) else {
        return;
    };

    // While down: a change and a delete, whose stream entries are then trimmed away.
    write_profile(&mut con, &ns, "u4", &[("seg", "4:444")]);
    delete_profile(&mut con, &ns, "u5");
    trim_stream(&mut con, &ns);

    let (replicator, reader) = start(&config(&url, &ns, &snap)).expect("restart");
    wait_for("re-copied", 60, || replicator.stats().bootstraps >= 1);
    wait_for("fresh", 30, || reader.is_fresh());
    let s = replicator.stats();
    assert_eq!(
        s.snapshot_loaded_profiles, 500,
        "the snapshot was loaded first"
    );
    assert_eq!(s.bootstraps, 1, "then the gap forced one full copy: {s:?}");
    assert!(reader.get("u5").is_none(), "deleted profile swept");
    assert_eq!(reader.get("u4").expect("u4").segment_weight(4), Some(444));
    assert_eq!(s.profiles, 499);
    check(&reader, 500, &[4, 5, 7]);
    replicator.stop();
    clean(&mut con, &ns);
}

#[test]
fn a_snapshot_of_the_earlier_format_is_refused_then_replaced_after_a_full_copy() {
    let Some(url) = redis_url("snap-v1") else {
        return;
    };
    let ns = namespace("snap-v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("profiles.snap");
    let mut con = connect(&url);
    clean(&mut con, &ns);
    preload(&mut con, &ns, 300);
    // Stale ids only the old file holds: none may appear (nothing of the file is loaded).
    let stale: Vec<String> = (0..50).map(|i| format!("only-in-v1-{i}")).collect();
    std::fs::write(
        &snap,
        v1_snapshot::version_1_snapshot([1, 1, 1, 0, 1], &ns, &stale),
    )
    .expect("write v1");

    let (replicator, reader) = start(&config(&url, &ns, &snap)).expect("start");
    wait_for("loaded", 60, || {
        reader.is_loaded() && replicator.stats().bootstraps == 1
    });
    let s = replicator.stats();
    assert_eq!(s.snapshot_loaded_profiles, 0, "nothing loaded: {s:?}");
    assert_eq!(s.snapshot_errors, 1, "the refusal is counted: {s:?}");
    assert_eq!(s.profiles, 300, "copied from Redis: {s:?}");
    assert!(stale.iter().all(|id| reader.get(id).is_none()));
    check(&reader, 300, &[]);
    replicator.stop();

    // The stop wrote the current format, which the next start loads without a copy.
    let head = std::fs::read(&snap).expect("snapshot");
    assert_eq!(&head[..8], b"HELIOSPS");
    assert_eq!(
        u32::from_le_bytes([head[8], head[9], head[10], head[11]]),
        profile_cache::snapshot::VERSION
    );
    let (replicator, reader) = start(&config(&url, &ns, &snap)).expect("restart");
    wait_for("fresh", 30, || reader.is_fresh());
    let s = replicator.stats();
    assert_eq!(s.bootstraps, 0, "{s:?}");
    assert_eq!(s.snapshot_loaded_profiles, 300, "{s:?}");
    check(&reader, 300, &[]);
    replicator.stop();
    clean(&mut con, &ns);
}

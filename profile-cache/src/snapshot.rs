//! The optional on-disk snapshot of the replica, for a fast restart: every record plus the change
//! stream position it is current up to, checksummed.
//!
//! Owns the file format and its reading and writing; no Redis. Written by a short-lived
//! `profile-snapshot` thread (periodically) or by the replicator thread (at stop) through a
//! [`Reader`]; loaded by the replicator thread into its [`Store`] before it first connects. Must
//! never: leave a half-written file under the snapshot's name (it writes `{path}.tmp`, fsyncs and
//! renames), or load anything from a file whose checksum, format or namespace does not match.
//!
//! A snapshot is *fuzzy* like the bootstrap's copy, and correct for the same reason: the position
//! is taken first, while the replicator is between batches and its store reflects every stream
//! entry up to that id; records are then read while the replicator keeps applying changes, so each
//! profile in the file is at its state at the position or newer, and a profile inserted or deleted
//! meanwhile may or may not be in it. Every such change has a stream entry after the position,
//! which the restarted replica re-reads from Redis — so after catching up it holds exactly what
//! Redis holds. If the stream was trimmed past the position meanwhile, the replicator sees the gap
//! and re-bootstraps (sweeping what the new copy did not see).
//!
//! Format (little-endian):
//!
//! | part | bytes | content |
//! |---|---|---|
//! | magic | 8 | `HELIOSPS` |
//! | version | 4 | [`VERSION`] |
//! | created | 8 | wall-clock ms when the position was taken |
//! | synced at | 8 | wall-clock ms the replica was last known current (its staleness origin) |
//! | last id | 16 | stream id `ms`, `seq` of the last entry applied |
//! | read count | 8 | stream entries ever added up to and including that id (gap detection) |
//! | namespace | 2 + n | length, then the key namespace's bytes |
//! | records | … | each record's bytes as in memory (`record.rs`, layout version 2; its length follows from its 10-byte header) |
//! | profiles | 8 | number of records |
//! | checksum | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! Version 2 (session 4) holds records of the 2-line layout; version 1 files (the 3-line layout of
//! sessions 1–3) are refused by their version alone ([`SnapshotError::OldVersion`]): the replica
//! logs why and copies everything from Redis, then writes a version-2 file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::record::{HEADER_LEN, MAX_RECORD_LEN, RecordView, encoded_len};
use crate::store::{Reader, Store};

/// First bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"HELIOSPS";
/// Format version this build writes and reads (2: the 2-line record layout of session 4).
pub const VERSION: u32 = 2;
/// Fixed header bytes before the namespace.
const FIXED_HEADER: usize = 8 + 4 + 8 + 8 + 16 + 8;
/// Trailer: profile count and checksum.
const TRAILER: usize = 8 + 4;
/// I/O buffer size.
const BUF: usize = 1 << 20;

/// Where in the change stream a snapshot is current.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Stream id `(ms, seq)` of the last entry applied.
    pub last_id: (u64, u64),
    /// Stream entries ever added up to and including `last_id`.
    pub read_count: u64,
    /// Wall-clock ms at which the replica was last known to hold everything Redis held.
    pub synced_at_ms: u64,
    /// Wall-clock ms when the position was taken.
    pub created_ms: u64,
}

/// Why a snapshot was not written or not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not a snapshot of this format (magic differs, or a version this build does not know).
    #[error("snapshot {0}: not a Helios profile snapshot of format version {VERSION}")]
    Foreign(PathBuf),
    /// A snapshot written by an earlier build, whose record layout this build does not read.
    #[error(
        "snapshot {path}: format version {found}, written by an earlier build with another record \
         layout; this build reads version {VERSION} only (it will copy from Redis and write a new one)"
    )]
    OldVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
    },
    /// Written for another key namespace.
    #[error("snapshot {path}: written for namespace {found:?}, this replica uses {expected:?}")]
    Namespace {
        /// The file.
        path: PathBuf,
        /// Namespace in the file.
        found: String,
        /// Namespace configured.
        expected: String,
    },
    /// The checksum does not match the contents.
    #[error("snapshot {0}: checksum mismatch (corrupt or truncated)")]
    Checksum(PathBuf),
    /// The checksum matched but the contents are not well-formed.
    #[error("snapshot {path}: malformed contents: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
}

/// What writing or loading a snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Profiles written or loaded.
    pub profiles: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Time taken, milliseconds.
    pub ms: u64,
}

/// A writer that checksums everything it writes.
struct Crc<W> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Crc<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.written += b.len() as u64;
        self.inner.write_all(b)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes a snapshot of every record `reader` sees, current as of `pos`, to `path` (via
/// `{path}.tmp`, fsync, rename, fsync of the directory). The reader stays pinned for the whole
/// write: records replaced meanwhile are freed only afterwards (memory grows by the churn).
pub fn write(
    path: &Path,
    namespace: &str,
    reader: &Reader,
    pos: &Position,
) -> Result<Outcome, SnapshotError> {
    let t0 = Instant::now();
    let tmp = tmp_path(path);
    let ns = namespace.as_bytes();
    let ns_len = u16::try_from(ns.len()).map_err(|_| SnapshotError::Malformed {
        path: path.to_owned(),
        what: "namespace longer than 65535 bytes",
    })?;
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = Crc {
        inner: BufWriter::with_capacity(BUF, file),
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    let body = |w: &mut Crc<BufWriter<File>>| -> std::io::Result<u64> {
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        w.put(&pos.created_ms.to_le_bytes())?;
        w.put(&pos.synced_at_ms.to_le_bytes())?;
        w.put(&pos.last_id.0.to_le_bytes())?;
        w.put(&pos.last_id.1.to_le_bytes())?;
        w.put(&pos.read_count.to_le_bytes())?;
        w.put(&ns_len.to_le_bytes())?;
        w.put(ns)?;
        let n = reader.for_each_record(|rec| w.put(rec))?;
        w.put(&n.to_le_bytes())?;
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        w.written += 4;
        Ok(n)
    };
    let profiles = match body(&mut w) {
        Ok(n) => n,
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
    };
    let bytes = w.written;
    let file = w
        .inner
        .into_inner()
        .map_err(|e| io_err(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename durable; a directory that cannot be opened (odd filesystems) is not
        // worth failing a snapshot for.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(Outcome {
        profiles,
        bytes,
        ms: t0.elapsed().as_millis() as u64,
    })
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

/// Loads the snapshot at `path` into `store` (which should be empty) and returns its position.
/// Verifies the whole file's checksum before loading anything; if the contents then prove
/// malformed, removes every record from `store` (so nothing half-loaded stays) and fails.
pub fn load(
    path: &Path,
    namespace: &str,
    store: &mut Store,
) -> Result<(Position, Outcome), SnapshotError> {
    let t0 = Instant::now();
    let malformed = |what| SnapshotError::Malformed {
        path: path.to_owned(),
        what,
    };
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let min_len = (FIXED_HEADER + 2 + TRAILER) as u64;
    let mut head = [0u8; FIXED_HEADER + 2];
    if len < min_len {
        // Too short to be ours: tell a foreign file from a truncated one by its magic.
        let n = file.read(&mut head).map_err(io_err(path))?;
        return Err(if n >= 8 && &head[..8] == MAGIC {
            SnapshotError::Checksum(path.to_owned())
        } else {
            SnapshotError::Foreign(path.to_owned())
        });
    }
    file.read_exact(&mut head).map_err(io_err(path))?;
    if &head[..8] != MAGIC {
        return Err(SnapshotError::Foreign(path.to_owned()));
    }
    let found = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if found != VERSION {
        return Err(if (1..VERSION).contains(&found) {
            SnapshotError::OldVersion {
                path: path.to_owned(),
                found,
            }
        } else {
            SnapshotError::Foreign(path.to_owned())
        });
    }
    // Pass 1: the checksum over everything but its own 4 bytes.
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(BUF, file);
    let mut crc = crc32fast::Hasher::new();
    let mut left = len - 4;
    let mut buf = vec![0u8; BUF];
    while left > 0 {
        let n = (left as usize).min(BUF);
        r.read_exact(&mut buf[..n]).map_err(io_err(path))?;
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored).map_err(io_err(path))?;
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(SnapshotError::Checksum(path.to_owned()));
    }
    // Pass 2: header, namespace, records.
    let mut r = r.into_inner();
    r.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(BUF, r);
    r.read_exact(&mut head).map_err(io_err(path))?;
    let pos = Position {
        created_ms: u64_at(&head, 12),
        synced_at_ms: u64_at(&head, 20),
        last_id: (u64_at(&head, 28), u64_at(&head, 36)),
        read_count: u64_at(&head, 44),
    };
    let ns_len = u16::from_le_bytes([head[FIXED_HEADER], head[FIXED_HEADER + 1]]) as u64;
    let records_start = FIXED_HEADER as u64 + 2 + ns_len;
    if records_start + TRAILER as u64 > len {
        return Err(malformed("namespace runs past the end"));
    }
    let mut ns = vec![0u8; ns_len as usize];
    r.read_exact(&mut ns).map_err(io_err(path))?;
    if ns != namespace.as_bytes() {
        return Err(SnapshotError::Namespace {
            path: path.to_owned(),
            found: String::from_utf8_lossy(&ns).into_owned(),
            expected: namespace.to_owned(),
        });
    }
    let records_end = len - TRAILER as u64;
    let mut at = records_start;
    let mut n = 0u64;
    let mut rec = vec![0u8; MAX_RECORD_LEN];
    let mut fail = None;
    while at < records_end {
        if records_end - at < HEADER_LEN as u64 {
            fail = Some("a record runs past the end");
            break;
        }
        let mut header = [0u8; HEADER_LEN];
        r.read_exact(&mut header).map_err(io_err(path))?;
        let rl = encoded_len(&header);
        if !(HEADER_LEN..=MAX_RECORD_LEN).contains(&rl) || at + rl as u64 > records_end {
            fail = Some("a record length is out of bounds");
            break;
        }
        rec[..HEADER_LEN].copy_from_slice(&header);
        r.read_exact(&mut rec[HEADER_LEN..rl])
            .map_err(io_err(path))?;
        if !store.load_record(&mut rec[..rl]) {
            fail = Some("a record is not well-formed");
            break;
        }
        at += rl as u64;
        n += 1;
    }
    if fail.is_none() {
        let mut t = [0u8; 8];
        r.read_exact(&mut t).map_err(io_err(path))?;
        if u64::from_le_bytes(t) != n {
            fail = Some("the profile count does not match the records");
        }
    }
    if let Some(what) = fail {
        // Nothing half-loaded stays: a new generation sweeps every record out.
        let keep = store.next_generation();
        store.sweep(keep);
        store.collect();
        return Err(malformed(what));
    }
    store.collect();
    Ok((
        pos,
        Outcome {
            profiles: n,
            bytes: len,
            ms: t0.elapsed().as_millis() as u64,
        },
    ))
}

/// Whether `bytes` is a record this crate could have written (layout and id).
pub(crate) fn well_formed(bytes: &[u8]) -> bool {
    RecordView::new(bytes).is_some_and(|v| {
        !v.user_id_bytes().is_empty() && std::str::from_utf8(v.user_id_bytes()).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FreqBucket, ProfileData};
    use shards::ProfileView;

    fn filled(n: u32) -> (Store, Reader) {
        let (mut store, reader) = Store::new(n as usize, 1000);
        let mut p = ProfileData::default();
        for i in 0..n {
            p.clear();
            p.user_id.push_str(&format!("user-{i}"));
            p.segments.extend([(i, 10), (i + 1, 20)]);
            p.freq.push(FreqBucket {
                campaign: 3,
                hour: 1000 + i,
                count: i,
            });
            store.upsert(&mut p).expect("valid");
        }
        (store, reader)
    }

    fn pos() -> Position {
        Position {
            last_id: (1_700_000_000_000, 7),
            read_count: 42,
            synced_at_ms: 1_700_000_000_500,
            created_ms: 1_700_000_001_000,
        }
    }

    #[test]
    fn a_snapshot_round_trips_records_and_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("profiles.snap");
        let (_store, reader) = filled(2000);
        let w = write(&path, "ns", &reader, &pos()).expect("written");
        assert_eq!(w.profiles, 2000);
        assert_eq!(w.bytes, std::fs::metadata(&path).expect("file").len());
        assert!(!tmp_path(&path).exists(), "temporary file renamed away");

        let (mut store2, reader2) = Store::new(10, 1000);
        let (p, l) = load(&path, "ns", &mut store2).expect("loaded");
        assert_eq!(p, pos());
        assert_eq!(l.profiles, 2000);
        assert_eq!(store2.len(), 2000);
        for i in 0..2000u32 {
            let r = reader2.get(&format!("user-{i}")).expect("present");
            assert_eq!(r.segment_weight(i + 1), Some(20));
            assert_eq!(r.impressions_since(3, u64::from(1000 + i) * 3600), i);
            assert_eq!(r.generation(), store2.generation());
        }
    }

    #[test]
    fn the_format_does_not_depend_on_the_hash_seed_or_the_block_alignment() {
        // Written by a replica with the session-2 tuning (foldhash, 8-byte blocks), loaded by
        // one with the default (seeded hash, 64-byte blocks): the file holds record bytes only,
        // the index is rebuilt with the loading replica's hash (only the record layout sets the
        // version).
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.snap"), dir.path().join("b.snap"));
        let (mut old, old_reader) = Store::with_tuning(100, 1000, crate::Tuning::SESSION_2);
        let mut p = ProfileData::default();
        for i in 0..300u32 {
            p.clear();
            p.user_id
                .push_str(&format!("0b8f2c1e-7d9a-4c61-9a53-{i:012}"));
            p.segments.extend((0..20).map(|s| (s * 7 + i, 500)));
            old.upsert(&mut p).expect("valid");
        }
        write(&a, "ns", &old_reader, &pos()).expect("written");
        let (mut new, new_reader) = Store::new(10, 1000);
        let (_, l) = load(&a, "ns", &mut new).expect("loaded");
        assert_eq!(l.profiles, 300);
        for i in 0..300u32 {
            let id = format!("0b8f2c1e-7d9a-4c61-9a53-{i:012}");
            let r = new_reader.get(&id).expect("present");
            assert_eq!(r.segment_weight(7 + i), Some(500));
        }
        // Written back by the new replica: the same records (in index order, so compare sorted).
        write(&b, "ns", &new_reader, &pos()).expect("written");
        let records = |path: &Path| {
            let f = std::fs::read(path).expect("read");
            let mut at = FIXED_HEADER + 2 + 2;
            let end = f.len() - TRAILER;
            let mut v = Vec::new();
            while at < end {
                let n = encoded_len(f[at..at + HEADER_LEN].try_into().expect("header"));
                let mut r = f[at..at + n].to_vec();
                r[crate::record::GENERATION_BYTE] = 0;
                v.push(r);
                at += n;
            }
            v.sort();
            v
        };
        assert_eq!(records(&a), records(&b));
        assert_eq!(
            std::fs::metadata(&a).expect("a").len(),
            std::fs::metadata(&b).expect("b").len()
        );
    }

    #[test]
    fn corrupt_foreign_truncated_and_other_namespace_files_load_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.snap");
        let (_store, reader) = filled(500);
        write(&path, "ns", &reader, &pos()).expect("written");
        let good = std::fs::read(&path).expect("read");

        let try_load = |bytes: &[u8], ns: &str| {
            std::fs::write(&path, bytes).expect("write");
            let (mut s, _r) = Store::new(10, 1000);
            let e = load(&path, ns, &mut s).expect_err("rejected");
            assert!(s.is_empty(), "nothing loaded from a rejected file: {e}");
            e
        };
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        assert!(matches!(
            try_load(&flipped, "ns"),
            SnapshotError::Checksum(_)
        ));
        assert!(matches!(
            try_load(&good[..good.len() - 100], "ns"),
            SnapshotError::Checksum(_)
        ));
        assert!(matches!(
            try_load(b"something else entirely, not a snapshot", "ns"),
            SnapshotError::Foreign(_)
        ));
        let mut v3 = good.clone();
        v3[8] = 3;
        assert!(
            matches!(try_load(&v3, "ns"), SnapshotError::Foreign(_)),
            "a version from the future is foreign"
        );
        assert!(matches!(
            try_load(&good, "other"),
            SnapshotError::Namespace { .. }
        ));
        assert!(matches!(
            try_load(&good[..20], "ns"),
            SnapshotError::Checksum(_)
        ));

        // A well-checksummed file whose last record is broken: rejected, the records loaded
        // before it rolled back.
        let mut bad = good.clone();
        let mut at = FIXED_HEADER + 2 + 2;
        let end = bad.len() - TRAILER;
        let mut last = at;
        while at < end {
            last = at;
            at += encoded_len(bad[at..at + HEADER_LEN].try_into().expect("header"));
        }
        assert_eq!(at, end, "records tile the body");
        bad[last + HEADER_LEN] = 0xFF; // the id is no longer UTF-8
        let body = bad.len() - 4;
        let crc = crc32fast::hash(&bad[..body]);
        bad[body..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            try_load(&bad, "ns"),
            SnapshotError::Malformed { .. }
        ));
        let missing = dir.path().join("none.snap");
        let (mut s, _r) = Store::new(10, 1000);
        assert!(matches!(
            load(&missing, "ns", &mut s),
            Err(SnapshotError::Io { .. })
        ));
    }

    mod v1 {
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/common/v1_snapshot.rs"
        ));
    }

    /// A snapshot as sessions 1–3 wrote it (format version 1), at this module's test position.
    fn v1_snapshot(ns: &str, ids: &[&str]) -> Vec<u8> {
        let p = pos();
        let position = [
            p.created_ms,
            p.synced_at_ms,
            p.last_id.0,
            p.last_id.1,
            p.read_count,
        ];
        v1::version_1_snapshot(position, ns, ids)
    }

    #[test]
    fn a_version_1_snapshot_is_refused_as_old_and_loads_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.snap");
        std::fs::write(&path, v1_snapshot("ns", &["user-1", "user-22", "user-333"])).expect("w");
        let (mut store, reader) = Store::new(10, 1000);
        let e = load(&path, "ns", &mut store).expect_err("refused");
        assert!(
            matches!(e, SnapshotError::OldVersion { found: 1, .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("format version 1") && msg.contains("reads version 2"),
            "{msg}"
        );
        assert!(store.is_empty());
        assert!(reader.get("user-1").is_none());
        // Writing over it gives a version-2 file that loads.
        let (_s, full) = filled(10);
        write(&path, "ns", &full, &pos()).expect("written");
        let (mut s2, r2) = Store::new(10, 1000);
        assert_eq!(load(&path, "ns", &mut s2).expect("loaded").1.profiles, 10);
        assert!(r2.get("user-3").is_some());
    }
}

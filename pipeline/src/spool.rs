//! `spool`: the disk spool — append-only segment files of checksummed records.
//!
//! Owns the on-disk format and the spool's byte budget. A [`SpoolWriter`] is owned by exactly
//! one thread (the producer thread, or one core for its overflow path) and writes only its own
//! segment; the producer thread alone reads sealed segments back ([`read_segment`]) and deletes
//! them once every record in them is acknowledged or re-spooled. Must never grow past
//! `spool_max_bytes` (new records are refused and counted instead), never allocate in
//! [`SpoolWriter::append`] (its buffer and path are sized at start), and never delete a segment
//! that still holds an unacknowledged record.
//!
//! Layout: `<dir>/<seq:020>-<writer>.open` while written, renamed to `.seg` when sealed
//! (sealed = immutable, replayable). `seq` is the creation time in Unix ns (strictly increasing
//! per writer), so sorting names replays the oldest first. A segment starts with the 8-byte magic
//! [`MAGIC`]; each record is
//! `len: u32 LE | crc32: u32 LE | topic: u8 | key_len: u8 | key | payload`, where `len` counts
//! the bytes after the crc and the crc (CRC-32/ISO-HDLC, `crc32fast`) covers them. A torn or
//! corrupt record ends the reading of its segment (counted in `spool_corrupt` and logged).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::Counters;

/// First bytes of every segment (format version 1).
pub const MAGIC: &[u8; 8] = b"HLSPOOL1";
/// Bytes of a record header (length + checksum).
pub const RECORD_HEADER: usize = 8;
/// Largest record body accepted (a frame of events is at most `frame_max_bytes` ≤ 60 KiB;
/// anything larger is a bug or corruption).
pub const MAX_RECORD_BODY: usize = 64 * 1024;
/// Bytes a writer buffers before it writes to its file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Topic index stored in a record.
pub const TOPIC_BIDS: u8 = 0;
pub const TOPIC_OUTCOMES: u8 = 1;

/// The topic index of an event kind: bids and no-bids → [`TOPIC_BIDS`], outcomes →
/// [`TOPIC_OUTCOMES`]. The producer maps indexes to the configured topic names.
pub fn topic_index(kind: codec::event::EventKind) -> u8 {
    if kind.topic() == codec::event::TOPIC_BIDS {
        TOPIC_BIDS
    } else {
        TOPIC_OUTCOMES
    }
}

/// Why a record was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is at its bound of {max} bytes")]
    Full { max: u64 },
    #[error("record of {0} bytes is larger than a spool record may be")]
    TooLarge(usize),
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
}

/// The spool directory and its shared byte budget.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    counters: Arc<Counters>,
}

/// What [`Spool::open`] found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Segments left by a previous run (sealed now), to be replayed.
    pub segments: usize,
    pub bytes: u64,
}

impl Spool {
    /// Opens (creates) the spool directory, seals every `.open` segment left by a previous run
    /// (its writer is gone), removes empty ones and counts the bytes waiting for replay.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        counters: Arc<Counters>,
    ) -> io::Result<(Arc<Spool>, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut rec = Recovered::default();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let ext = path.extension().and_then(OsStr::to_str);
            if !matches!(ext, Some("open") | Some("seg")) {
                continue;
            }
            let len = entry.metadata()?.len();
            if len <= MAGIC.len() as u64 {
                fs::remove_file(&path)?;
                continue;
            }
            let path = if ext == Some("open") {
                let sealed = path.with_extension("seg");
                fs::rename(&path, &sealed)?;
                sealed
            } else {
                path
            };
            tracing::info!(segment = %path.display(), bytes = len, "spool: segment left by a previous run, will replay");
            rec.segments += 1;
            rec.bytes += len;
        }
        counters.spool_bytes.store(rec.bytes, Relaxed);
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes.max(4096),
            counters,
        };
        Ok((Arc::new(spool), rec))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Takes `n` bytes of the budget, or refuses if that would pass the bound.
    fn reserve(&self, n: u64) -> bool {
        let used = &self.counters.spool_bytes;
        let mut cur = used.load(Relaxed);
        loop {
            if cur.saturating_add(n) > self.max_bytes {
                return false;
            }
            match used.compare_exchange_weak(cur, cur + n, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    fn release(&self, n: u64) {
        let used = &self.counters.spool_bytes;
        let mut cur = used.load(Relaxed);
        loop {
            match used.compare_exchange_weak(cur, cur.saturating_sub(n), Relaxed, Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Sealed segments, oldest first.
    pub fn sealed_segments(&self) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(OsStr::to_str) == Some("seg"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Deletes a fully acknowledged segment and gives its bytes back to the budget.
    pub fn delete_segment(&self, path: &Path, bytes: u64) -> io::Result<()> {
        fs::remove_file(path)?;
        self.release(bytes);
        tracing::debug!(segment = %path.display(), bytes, "spool: segment acknowledged and deleted");
        Ok(())
    }
}

/// Appends records to this writer's current segment. Owned by one thread.
#[derive(Debug)]
pub struct SpoolWriter {
    spool: Arc<Spool>,
    /// `p` for the producer thread, `c<N>` for core N's overflow.
    tag: [u8; 8],
    tag_len: usize,
    file: Option<File>,
    buf: Vec<u8>,
    open_path: PathBuf,
    sealed_path: PathBuf,
    seg_len: u64,
    seg_records: u64,
    last_seq: u64,
    unsynced: bool,
    /// The producer's writer logs and `fdatasync`s each sealed segment. A core's writer does
    /// neither (its overflow path must not format log lines or wait for the disk): its
    /// segments survive the process being killed (page cache), not a power loss.
    durable_seal: bool,
}

impl SpoolWriter {
    /// A writer tagged `tag` (at most 8 ASCII bytes). Allocates its buffers now.
    pub fn new(spool: Arc<Spool>, tag: &str) -> SpoolWriter {
        let mut t = [0u8; 8];
        let n = tag.len().min(8);
        t[..n].copy_from_slice(&tag.as_bytes()[..n]);
        let cap = spool.dir.as_os_str().len() + 64;
        SpoolWriter {
            spool,
            tag: t,
            tag_len: n,
            file: None,
            buf: Vec::with_capacity(WRITE_BUFFER),
            open_path: PathBuf::with_capacity(cap),
            sealed_path: PathBuf::with_capacity(cap),
            seg_len: 0,
            seg_records: 0,
            last_seq: 0,
            unsynced: false,
            durable_seal: true,
        }
    }

    /// A writer that neither syncs nor logs when it seals (for a core's overflow path).
    pub fn silent(mut self) -> SpoolWriter {
        self.durable_seal = false;
        self
    }

    /// Records in the current (unsealed) segment.
    pub fn pending_records(&self) -> u64 {
        self.seg_records
    }

    /// Sets both paths for a new segment name without allocating (capacity reserved in `new`).
    fn name_segment(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seq = now.max(self.last_seq + 1);
        self.last_seq = seq;
        let mut name = [0u8; 48];
        let mut n = 0;
        // 20 zero-padded digits so names sort by time.
        let mut digits = [b'0'; 20];
        let mut v = seq;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        name[..20].copy_from_slice(&digits);
        n += 20;
        name[n] = b'-';
        n += 1;
        name[n..n + self.tag_len].copy_from_slice(&self.tag[..self.tag_len]);
        n += self.tag_len;
        let stem = n;
        name[n..n + 5].copy_from_slice(b".open");
        n += 5;
        for (p, bytes) in [
            (&mut self.open_path, &name[..n]),
            (&mut self.sealed_path, &name[..stem]),
        ] {
            p.as_mut_os_string().clear();
            p.push(&self.spool.dir);
            p.push(OsStr::from_bytes(bytes));
        }
        self.sealed_path.set_extension("seg");
    }

    fn open_segment(&mut self) -> Result<(), SpoolError> {
        if !self.spool.reserve(MAGIC.len() as u64) {
            return Err(SpoolError::Full {
                max: self.spool.max_bytes,
            });
        }
        self.name_segment();
        let file = match OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&self.open_path)
        {
            Ok(f) => f,
            Err(e) => {
                self.spool.release(MAGIC.len() as u64);
                return Err(e.into());
            }
        };
        self.file = Some(file);
        self.buf.clear();
        self.buf.extend_from_slice(MAGIC);
        self.seg_len = MAGIC.len() as u64;
        self.seg_records = 0;
        Ok(())
    }

    /// Appends one record to the buffer (written to the file when the buffer fills, on
    /// [`flush`](Self::flush) and on [`seal`](Self::seal)). Seals the segment when it reaches
    /// the segment size. At the spool's bound: `Err(Full)`, nothing written.
    pub fn append(&mut self, topic: u8, key: &[u8], payload: &[u8]) -> Result<(), SpoolError> {
        let key = &key[..key.len().min(u8::MAX as usize)];
        let body = 2 + key.len() + payload.len();
        if body > MAX_RECORD_BODY {
            return Err(SpoolError::TooLarge(body));
        }
        let rec = (RECORD_HEADER + body) as u64;
        if self.file.is_none() {
            self.open_segment()?;
        }
        if !self.spool.reserve(rec) {
            return Err(SpoolError::Full {
                max: self.spool.max_bytes,
            });
        }
        if self.buf.len() + rec as usize > self.buf.capacity()
            && let Err(e) = self.flush()
        {
            self.spool.release(rec);
            return Err(e.into());
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[topic, key.len() as u8]);
        crc.update(key);
        crc.update(payload);
        self.buf.extend_from_slice(&(body as u32).to_le_bytes());
        self.buf.extend_from_slice(&crc.finalize().to_le_bytes());
        self.buf.push(topic);
        self.buf.push(key.len() as u8);
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(payload);
        self.seg_len += rec;
        self.seg_records += 1;
        // Count events, not records: a record is a frame of many (or one legacy event).
        let events = codec::event::frame::record_event_count(payload).unwrap_or(1);
        Counters::add(&self.spool.counters.spooled, events as u64);
        if self.seg_len >= self.spool.segment_bytes {
            self.seal()?;
        }
        Ok(())
    }

    /// Writes the buffer to the file (page cache: survives the process being killed).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&self.buf)?;
            self.unsynced = true;
        }
        self.buf.clear();
        Ok(())
    }

    /// Flushes and `fdatasync`s the current segment (survives power loss).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        if self.unsynced {
            if let Some(f) = self.file.as_ref() {
                f.sync_data()?;
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Flushes, syncs (unless [`silent`](Self::silent)) and seals the current segment
    /// (renamed `.seg`: replayable). A segment
    /// with no record is removed instead. No-op without an open segment.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        if self.durable_seal {
            self.sync()?;
        } else {
            self.flush()?;
        }
        self.file = None;
        if self.seg_records == 0 {
            fs::remove_file(&self.open_path)?;
            self.spool.release(self.seg_len);
        } else {
            fs::rename(&self.open_path, &self.sealed_path)?;
        }
        if self.seg_records != 0 && self.durable_seal {
            let total = self.spool.counters.spool_bytes.load(Relaxed);
            tracing::info!(
                segment = %self.sealed_path.display(),
                records = self.seg_records,
                bytes = self.seg_len,
                spool_bytes = total,
                spool_max_bytes = self.spool.max_bytes,
                "spool: segment sealed, spool grew"
            );
        }
        self.seg_len = 0;
        self.seg_records = 0;
        Ok(())
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if let Err(e) = self.seal() {
            tracing::error!(error = %e, "spool: could not seal segment on drop (it is replayed at next start)");
        }
    }
}

/// One record read back from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub topic: u8,
    pub key: &'a [u8],
    pub payload: &'a [u8],
}

/// The result of reading the next record of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Record(Record<'a>),
    /// Clean end of the segment.
    End,
    /// Torn or corrupt bytes at `offset`: the rest of the segment cannot be trusted.
    Corrupt {
        offset: usize,
    },
}

/// Reads a whole segment into memory (bounded by the segment size) and checks its magic.
pub fn read_segment(path: &Path) -> io::Result<Vec<u8>> {
    let data = fs::read(path)?;
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a spool segment (bad magic)",
        ));
    }
    Ok(data)
}

/// Reads the record at `*pos` (start with `MAGIC.len()`), advancing `pos` past it.
pub fn next_record<'a>(data: &'a [u8], pos: &mut usize) -> Next<'a> {
    let p = *pos;
    if p == data.len() {
        return Next::End;
    }
    let Some(hdr) = data.get(p..p + RECORD_HEADER) else {
        return Next::Corrupt { offset: p };
    };
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    if !(2..=MAX_RECORD_BODY).contains(&len) {
        return Next::Corrupt { offset: p };
    }
    let Some(body) = data.get(p + RECORD_HEADER..p + RECORD_HEADER + len) else {
        return Next::Corrupt { offset: p };
    };
    if crc32fast::hash(body) != crc {
        return Next::Corrupt { offset: p };
    }
    let key_len = body[1] as usize;
    if 2 + key_len > body.len() {
        return Next::Corrupt { offset: p };
    }
    *pos = p + RECORD_HEADER + len;
    Next::Record(Record {
        topic: body[0],
        key: &body[2..2 + key_len],
        payload: &body[2 + key_len..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, max: u64, seg: u64) -> (Arc<Spool>, Arc<Counters>) {
        let c = Arc::new(Counters::default());
        let (s, _) = Spool::open(dir, max, seg, c.clone()).unwrap();
        (s, c)
    }

    type Owned = (u8, Vec<u8>, Vec<u8>);

    fn read_all(path: &Path) -> (Vec<Owned>, bool) {
        let data = read_segment(path).unwrap();
        let mut pos = MAGIC.len();
        let mut out = Vec::new();
        loop {
            match next_record(&data, &mut pos) {
                Next::Record(r) => out.push((r.topic, r.key.to_vec(), r.payload.to_vec())),
                Next::End => return (out, false),
                Next::Corrupt { .. } => return (out, true),
            }
        }
    }

    #[test]
    fn writes_seals_and_reads_back_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (s, c) = spool(d.path(), 1 << 20, 1 << 20);
        let mut w = SpoolWriter::new(s.clone(), "p");
        for i in 0..100u32 {
            w.append(TOPIC_OUTCOMES, b"42", &i.to_le_bytes()).unwrap();
        }
        assert!(s.sealed_segments().unwrap().is_empty(), "not sealed yet");
        w.seal().unwrap();
        let segs = s.sealed_segments().unwrap();
        assert_eq!(segs.len(), 1);
        let (recs, corrupt) = read_all(&segs[0]);
        assert!(!corrupt);
        assert_eq!(recs.len(), 100);
        for (i, (t, k, p)) in recs.iter().enumerate() {
            assert_eq!(*t, TOPIC_OUTCOMES);
            assert_eq!(k, b"42");
            assert_eq!(p, &(i as u32).to_le_bytes());
        }
        let bytes = fs::metadata(&segs[0]).unwrap().len();
        assert_eq!(c.spool_bytes.load(Relaxed), bytes);
        assert_eq!(c.spooled.load(Relaxed), 100);
        s.delete_segment(&segs[0], bytes).unwrap();
        assert_eq!(c.spool_bytes.load(Relaxed), 0);
    }

    #[test]
    fn rolls_segments_at_the_segment_size() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = spool(d.path(), 1 << 20, 4096);
        let mut w = SpoolWriter::new(s.clone(), "c1");
        let payload = [7u8; 1000];
        for _ in 0..20 {
            w.append(TOPIC_BIDS, b"k", &payload).unwrap();
        }
        w.seal().unwrap();
        let segs = s.sealed_segments().unwrap();
        // 8 B magic + 5 × 1011 B passes 4096 B: 5 records a segment.
        assert_eq!(segs.len(), 4);
        let total: usize = segs.iter().map(|p| read_all(p).0.len()).sum();
        assert_eq!(total, 20);
        // Oldest first: names sort by creation time.
        let names: Vec<_> = segs
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn refuses_records_at_the_bound_and_keeps_what_it_has() {
        let d = tempfile::tempdir().unwrap();
        let (s, c) = spool(d.path(), 2_000, 1 << 20);
        let mut w = SpoolWriter::new(s.clone(), "p");
        let payload = [1u8; 500];
        let mut ok = 0;
        let mut full = 0;
        for _ in 0..10 {
            match w.append(TOPIC_BIDS, b"", &payload) {
                Ok(()) => ok += 1,
                Err(SpoolError::Full { max }) => {
                    assert_eq!(max, 2_000);
                    full += 1
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 3, "3 × 510 B + 8 B magic fit in 2000 B");
        assert_eq!(full, 7);
        assert!(c.spool_bytes.load(Relaxed) <= 2_000);
        w.seal().unwrap();
        let segs = s.sealed_segments().unwrap();
        assert_eq!(read_all(&segs[0]).0.len(), 3);
    }

    #[test]
    fn torn_tail_and_flipped_bits_stop_the_reader() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = spool(d.path(), 1 << 20, 1 << 20);
        let mut w = SpoolWriter::new(s.clone(), "p");
        for i in 0..3u8 {
            w.append(TOPIC_BIDS, b"k", &[i; 100]).unwrap();
        }
        w.seal().unwrap();
        let seg = s.sealed_segments().unwrap().remove(0);
        let mut data = fs::read(&seg).unwrap();
        // Torn tail: drop the last 10 bytes.
        fs::write(&seg, &data[..data.len() - 10]).unwrap();
        let (recs, corrupt) = read_all(&seg);
        assert_eq!(recs.len(), 2);
        assert!(corrupt);
        // A flipped payload bit in the second record.
        let second = MAGIC.len() + RECORD_HEADER + 2 + 1 + 100 + RECORD_HEADER + 10;
        data[second] ^= 0x40;
        fs::write(&seg, &data).unwrap();
        let (recs, corrupt) = read_all(&seg);
        assert_eq!(recs.len(), 1);
        assert!(corrupt);
    }

    #[test]
    fn reopen_seals_leftover_open_segments_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        {
            let (s, _) = spool(d.path(), 1 << 20, 1 << 20);
            let mut w = SpoolWriter::new(s, "c0");
            w.append(TOPIC_BIDS, b"k", b"payload").unwrap();
            w.flush().unwrap();
            // Simulate a crash: the writer is never sealed.
            std::mem::forget(w);
        }
        let c = Arc::new(Counters::default());
        let (s, rec) = Spool::open(d.path(), 1 << 20, 1 << 20, c.clone()).unwrap();
        assert_eq!(rec.segments, 1);
        let segs = s.sealed_segments().unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(c.spool_bytes.load(Relaxed), rec.bytes);
        assert_eq!(read_all(&segs[0]).0.len(), 1);
    }
}

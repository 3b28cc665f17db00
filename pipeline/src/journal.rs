//! `journal`: each core's write-ahead journal, which makes an event survive the death of the
//! process (SIGKILL, OOM kill, panic-abort) from the moment `CoreSink::emit` returns.
//!
//! Owns three things:
//! - [`JournalMap`]: one memory-mapped file per core (`<spool_dir>/journal-c<N>.wal`,
//!   `MAP_SHARED`, sized and pre-faulted at start). Stores into a shared file mapping land in
//!   the page cache, which outlives the process: a killed process loses nothing it stored.
//!   **Not** durable against power loss or a kernel crash (nothing is `msync`ed per event).
//! - [`JournalWriter`]: the core's end, owned by the core's thread (inside its `CoreSink`).
//!   Appends a record per event: no syscall, no lock, no allocation, no shared write (the
//!   write position is the core's own; the producer thread derives it, see below). Reads the
//!   shared acknowledged position only when its cached bound says the ring may be full.
//! - [`Acks`]: the producer thread's bookkeeping of which journal records are settled
//!   (their frame acknowledged by Kafka, or written to the spool file) and the publication of
//!   each core's *acknowledged position* (the lowest position not settled) into the journal's
//!   header (one relaxed-cost atomic store per core per producer turn, not per event).
//!
//! Positions: each record has an absolute byte position (u64, never wraps); the ring offset is
//! `position % capacity`. The producer thread drains a core's queue in the order the core
//! pushed, and computes each event's position with the same [`place`] rule the core used, so
//! the core never publishes its write position (the queue push stays the one shared write per
//! event). A record that would cross the end of the ring starts at the next lap instead (a
//! [`WRAP`] marker is left when a header fits).
//!
//! File layout: a 4 KiB header page — magic [`JOURNAL_MAGIC`] (8 bytes), capacity (u64 LE at 8),
//! acknowledged position (u64 at 64, written by the producer thread with `Release`) — then
//! `capacity` bytes of ring. A record is `len: u32 | crc32: u32 | position: u64 | body`, padded
//! to 8 bytes; the body is the event in the compact layout (docs/EVENTS.md); the CRC
//! (CRC-32/ISO-HDLC) covers `len`, `position` and the body, so a torn record or a stale one
//! from an earlier lap ends the scan.
//!
//! Start-up ([`recover`]): before the cores run, every journal left in the spool directory is
//! scanned from its acknowledged position; the events found are written as frames to a spool
//! segment, which is sealed (`fdatasync`) before the journal files are removed and created
//! anew. The producer then sends that segment like any other spooled one. Duplicates (events
//! that were acknowledged but whose position was not yet published) are removed downstream by
//! event id.
//!
//! Must never: block or allocate on the core's path, let a core overwrite a record that is not
//! settled (the core checks `end ≤ acknowledged + capacity`; a full journal sends the event to
//! the core's overflow spool segment instead, counted in `journal_full`), or publish a position
//! past a record whose frame is still in flight or buffered.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use codec::event::Event;
use codec::event::frame::MAX_EVENT_BYTES;

use crate::framing::Frames;
use crate::metrics::Counters;
use crate::spool::{Spool, SpoolError, SpoolWriter, topic_index};

/// First bytes of a journal file (format version 1).
pub const JOURNAL_MAGIC: &[u8; 8] = b"HLJRNL01";
/// Bytes before the ring (the header page).
pub const HEADER_BYTES: usize = 4096;
const OFF_CAPACITY: usize = 8;
const OFF_ACKED: usize = 64;
/// Bytes of a record header: `len u32 | crc u32 | position u64`.
pub const RECORD_HEADER: usize = 16;
/// `len` of a wrap marker: the rest of this lap is empty, the next record is at the next lap.
pub const WRAP: u32 = u32::MAX;
/// Smallest ring accepted (a few hundred of the largest events).
pub const MIN_CAPACITY: u64 = 64 * 1024;
/// Largest ring accepted (per core).
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Extension of journal files in the spool directory.
pub const EXTENSION: &str = "wal";

/// Bytes a record with a body of `body` bytes takes in the ring (header + body, 8-aligned).
#[inline]
pub fn record_bytes(body: usize) -> u64 {
    ((RECORD_HEADER + body + 7) & !7) as u64
}

/// Where a record of `size` bytes goes when the ring's next free position is `pos`: at `pos`,
/// or at the start of the next lap when it would cross the end of the ring.
#[inline]
pub fn place(pos: u64, size: u64, cap: u64) -> u64 {
    let off = pos % cap;
    if off + size > cap {
        pos + (cap - off)
    } else {
        pos
    }
}

fn crc(len: u32, pos: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&pos.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// The path of core `core`'s journal in `dir`.
pub fn journal_path(dir: &Path, core: u16) -> PathBuf {
    dir.join(format!("journal-c{core}.{EXTENSION}"))
}

/// One core's journal file, mapped into memory. Shared (`Arc`) by the core's writer, which
/// writes the ring, and the producer thread, which writes the acknowledged position in the
/// header; nobody reads the ring while the pipeline runs.
#[derive(Debug)]
pub struct JournalMap {
    ptr: *mut u8,
    len: usize,
    cap: u64,
    core: u16,
    path: PathBuf,
    /// Bytes drained by the producer and not settled yet (metric; producer-written).
    in_use: AtomicU64,
    _file: File,
}

// SAFETY: the mapping is valid for the life of the value (unmapped in Drop only). The ring is
// written by exactly one thread (the core owning the `JournalWriter`) and read by no other
// while the pipeline runs; the only location both threads touch is the acknowledged position,
// accessed through an `AtomicU64`.
unsafe impl Send for JournalMap {}
// SAFETY: see `Send`: shared access goes through atomics only.
unsafe impl Sync for JournalMap {}

impl JournalMap {
    /// Creates (replacing any file there) a journal of `cap` ring bytes for `core`, allocates
    /// its blocks, maps it and touches every page so that no page fault is left for the core's
    /// first lap.
    pub fn create(path: &Path, core: u16, cap: u64) -> io::Result<Arc<JournalMap>> {
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) || !cap.is_multiple_of(4096) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "journal capacity {cap} must be a multiple of 4096 in {MIN_CAPACITY}..={MAX_CAPACITY}"
                ),
            ));
        }
        let _ = fs::remove_file(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let len = HEADER_BYTES + cap as usize;
        // SAFETY: plain syscall on an fd we own; blocks are allocated so that a store into the
        // mapping never needs the file system to find space (no SIGBUS on a full disk later).
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if rc != 0 {
            let _ = fs::remove_file(path);
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: mapping `len` bytes of a file that is `len` bytes long, shared, read-write.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            let _ = fs::remove_file(path);
            return Err(e);
        }
        let ptr = ptr as *mut u8;
        // Pre-fault for writing: one store per page (the pages are zero already).
        for off in (0..len).step_by(4096) {
            // SAFETY: `off < len`, inside the mapping.
            unsafe { std::ptr::write_volatile(ptr.add(off), 0) };
        }
        let map = JournalMap {
            ptr,
            len,
            cap,
            core,
            path: path.to_path_buf(),
            in_use: AtomicU64::new(0),
            _file: file,
        };
        // SAFETY: the header page is inside the mapping and nobody else uses it yet.
        unsafe {
            std::ptr::copy_nonoverlapping(JOURNAL_MAGIC.as_ptr(), ptr, 8);
            std::ptr::copy_nonoverlapping(cap.to_le_bytes().as_ptr(), ptr.add(OFF_CAPACITY), 8);
        }
        map.acked().store(0, Ordering::Release);
        Ok(Arc::new(map))
    }

    /// Ring bytes.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    pub fn core(&self) -> u16 {
        self.core
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The acknowledged position: every record before it is settled.
    pub fn acked(&self) -> &AtomicU64 {
        // SAFETY: OFF_ACKED is 8-aligned inside the page-aligned mapping, and this location is
        // only ever accessed as an AtomicU64 while the map lives.
        unsafe { &*(self.ptr.add(OFF_ACKED) as *const AtomicU64) }
    }

    /// Bytes of records drained by the producer and not yet acknowledged.
    pub fn bytes_in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Copies `bytes` to ring offset `off` (the caller keeps `off + bytes.len() ≤ cap`).
    #[inline]
    fn put(&self, off: u64, bytes: &[u8]) {
        debug_assert!(off + bytes.len() as u64 <= self.cap);
        // SAFETY: the range is inside the ring (checked by the callers' placement, asserted
        // above) and only the owning core's writer writes the ring.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add(HEADER_BYTES + off as usize),
                bytes.len(),
            )
        }
    }
}

impl Drop for JournalMap {
    fn drop(&mut self) {
        // SAFETY: unmapping the region mapped in `create`, exactly once.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Where the next record goes, found by [`JournalWriter::prepare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    start: u64,
    end: u64,
}

/// A core's end of its journal. Owned by the core's thread.
#[derive(Debug)]
pub struct JournalWriter {
    map: Arc<JournalMap>,
    /// Next free position (the core's own; never published).
    pos: u64,
    /// `acknowledged + capacity` as last read: a record may end at or before it.
    limit: u64,
    /// One encoded event (capacity for the largest, allocated here).
    scratch: Vec<u8>,
}

impl JournalWriter {
    pub fn new(map: Arc<JournalMap>) -> JournalWriter {
        let acked = map.acked().load(Ordering::Acquire);
        JournalWriter {
            pos: acked,
            limit: acked + map.cap,
            map,
            scratch: Vec::with_capacity(MAX_EVENT_BYTES + RECORD_HEADER),
        }
    }

    /// Encodes `e` (into this writer's buffer) and finds room for its record, or `None` when
    /// the journal is full (the producer has not settled enough). Reads the shared
    /// acknowledged position only when the cached bound is reached. Nothing is written to the
    /// ring until [`commit`](Self::commit).
    #[inline]
    pub fn prepare(&mut self, e: &Event) -> Option<Slot> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0u8; RECORD_HEADER]);
        e.encode_into(&mut self.scratch);
        self.reserve(self.scratch.len() - RECORD_HEADER)
    }

    #[inline]
    fn reserve(&mut self, body: usize) -> Option<Slot> {
        let size = record_bytes(body);
        let start = place(self.pos, size, self.map.cap);
        let end = start + size;
        if end > self.limit {
            self.limit = self.map.acked().load(Ordering::Acquire) + self.map.cap;
            if end > self.limit {
                return None;
            }
        }
        Some(Slot { start, end })
    }

    /// Writes the event of the latest [`prepare`](Self::prepare) into its `slot`. No syscall,
    /// no allocation.
    #[inline]
    pub fn commit(&mut self, slot: Slot) {
        let cap = self.map.cap;
        if slot.start != self.pos {
            self.wrap_marker();
        }
        let body_len = self.scratch.len() - RECORD_HEADER;
        debug_assert_eq!(record_bytes(body_len), slot.end - slot.start);
        let len = body_len as u32;
        let sum = crc(len, slot.start, &self.scratch[RECORD_HEADER..]);
        self.scratch[0..4].copy_from_slice(&len.to_le_bytes());
        self.scratch[4..8].copy_from_slice(&sum.to_le_bytes());
        self.scratch[8..16].copy_from_slice(&slot.start.to_le_bytes());
        self.map.put(slot.start % cap, &self.scratch);
        self.pos = slot.end;
    }

    #[cold]
    fn wrap_marker(&mut self) {
        let off = self.pos % self.map.cap;
        if self.map.cap - off >= RECORD_HEADER as u64 {
            let mut h = [0u8; RECORD_HEADER];
            h[0..4].copy_from_slice(&WRAP.to_le_bytes());
            h[4..8].copy_from_slice(&crc(WRAP, self.pos, &[]).to_le_bytes());
            h[8..16].copy_from_slice(&self.pos.to_le_bytes());
            self.map.put(off, &h);
        }
    }

    /// Next free position (tests).
    pub fn position(&self) -> u64 {
        self.pos
    }
}

/// How a scan of a journal ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Records found after the acknowledged position.
    pub records: u64,
    /// Position after the last good record.
    pub end: u64,
    /// The scan stopped at a record whose position matched but whose checksum did not (a
    /// record torn by the kill), rather than at stale or empty bytes.
    pub torn: bool,
}

/// Reads the records of a ring (`ring`, `cap` bytes) from position `from`, calling `f` with
/// each body, until a record is missing, stale, torn, or `cap` bytes were read.
pub fn scan(ring: &[u8], cap: u64, from: u64, mut f: impl FnMut(&[u8])) -> Scan {
    let mut s = Scan {
        end: from,
        ..Scan::default()
    };
    let mut pos = from;
    while pos < from + cap {
        let off = pos % cap;
        if cap - off < RECORD_HEADER as u64 {
            pos += cap - off;
            continue;
        }
        let o = off as usize;
        let h = &ring[o..o + RECORD_HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let sum = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let at = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        if at != pos {
            break; // empty or stale (an earlier lap): the end of what was written
        }
        if len == WRAP {
            if crc(WRAP, pos, &[]) != sum {
                s.torn = true;
                break;
            }
            pos += cap - off;
            continue;
        }
        let body_len = len as usize;
        if body_len > MAX_EVENT_BYTES || off + record_bytes(body_len) > cap {
            s.torn = true;
            break;
        }
        let body = &ring[o + RECORD_HEADER..o + RECORD_HEADER + body_len];
        if crc(len, pos, body) != sum {
            s.torn = true;
            break;
        }
        f(body);
        s.records += 1;
        pos += record_bytes(body_len);
        s.end = pos;
    }
    s
}

/// What [`recover`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Journal files read.
    pub journals: usize,
    /// Events replayed (written to the spool).
    pub events: u64,
    /// Journals whose scan ended at a torn record.
    pub torn: usize,
    /// Records that were intact but did not decode as an event (skipped; counted corrupt).
    pub undecodable: u64,
}

/// Replays every journal in `dir` into the spool (sealed and synced before returning), then
/// removes the journal files. Run at start, before any core writes.
pub fn recover(
    dir: &Path,
    spool: &Arc<Spool>,
    counters: &Arc<Counters>,
    key_buckets: u16,
    frame_max_bytes: usize,
) -> io::Result<Recovery> {
    let mut rec = Recovery::default();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()) == Some(EXTENSION)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("journal-"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(rec);
    }
    let mut writer = SpoolWriter::new(spool.clone(), "j");
    let mut frames = Frames::new(key_buckets, frame_max_bytes, u16::MAX, Duration::ZERO);
    let mut write_err: Option<io::Error> = None;
    for path in &files {
        let data = fs::read(path)?;
        rec.journals += 1;
        let header_ok = data.len() >= HEADER_BYTES
            && &data[..8] == JOURNAL_MAGIC
            && u64::from_le_bytes(
                data[OFF_CAPACITY..OFF_CAPACITY + 8]
                    .try_into()
                    .unwrap_or([0; 8]),
            ) == (data.len() - HEADER_BYTES) as u64;
        if !header_ok {
            Counters::add(&counters.spool_corrupt, 1);
            tracing::error!(journal = %path.display(), bytes = data.len(), "pipeline: journal with a bad header; moved aside as .bad");
            let _ = fs::rename(path, path.with_extension("bad"));
            continue;
        }
        let cap = (data.len() - HEADER_BYTES) as u64;
        let acked = u64::from_le_bytes(data[OFF_ACKED..OFF_ACKED + 8].try_into().unwrap_or([0; 8]));
        let ring = &data[HEADER_BYTES..];
        let mut events = 0u64;
        let s = scan(ring, cap, acked, |body| match Event::decode_compact(body) {
            Ok(ev) => {
                events += 1;
                let i = frames.index(topic_index(ev.kind), &ev);
                if !frames.open[i].buf.push(&ev) {
                    spool_frame(&mut writer, &mut frames, i, counters, &mut write_err);
                    let pushed = frames.open[i].buf.push(&ev);
                    debug_assert!(pushed);
                }
            }
            Err(e) => {
                rec.undecodable += 1;
                Counters::add(&counters.spool_corrupt, 1);
                tracing::error!(journal = %path.display(), error = %e, "pipeline: journal record does not decode; skipped");
            }
        });
        if s.torn {
            rec.torn += 1;
        }
        rec.events += events;
        tracing::info!(journal = %path.display(), acked, end = s.end, events, torn = s.torn, "pipeline: journal left by a previous run; replaying its unacknowledged events");
    }
    for i in 0..frames.open.len() {
        spool_frame(&mut writer, &mut frames, i, counters, &mut write_err);
    }
    if let Some(e) = write_err {
        return Err(e);
    }
    // The replayed events must be on disk before the journals that hold them go.
    writer.seal()?;
    Counters::add(&counters.journal_replayed, rec.events);
    for path in &files {
        if path.exists() {
            fs::remove_file(path)?;
        }
    }
    Ok(rec)
}

fn spool_frame(
    writer: &mut SpoolWriter,
    frames: &mut Frames,
    i: usize,
    counters: &Counters,
    err: &mut Option<io::Error>,
) {
    let f = &mut frames.open[i];
    if f.buf.is_empty() {
        return;
    }
    let events = f.buf.count() as u64;
    match writer.append(f.topic, f.key.as_bytes(), f.buf.as_bytes()) {
        Ok(()) => {}
        Err(SpoolError::Full { max }) => {
            Counters::add(&counters.dropped_spool_full, events);
            tracing::error!(
                events,
                spool_max_bytes = max,
                "pipeline: spool full while replaying a journal; events dropped (counted)"
            );
        }
        Err(SpoolError::Io(e)) => {
            if err.is_none() {
                *err = Some(e);
            }
        }
        Err(e) => {
            if err.is_none() {
                *err = Some(io::Error::other(e.to_string()));
            }
        }
    }
    f.buf.clear();
}

/// The live-frame tag in a delivery opaque's segment field (spool segment ids stay below it).
pub(crate) const LIVE_TAG: usize = 1 << 40;

/// The opaque segment field of a live frame holding journal token `t`.
pub(crate) fn live_segment(t: Option<u32>) -> usize {
    LIVE_TAG | t.map_or(0, |t| t as usize + 1)
}

/// Whether an opaque segment field is a live frame's, and its token.
pub(crate) fn live_token(segment: usize) -> Option<Option<u32>> {
    (segment & LIVE_TAG != 0).then(|| match segment & (LIVE_TAG - 1) {
        0 => None,
        t => Some((t - 1) as u32),
    })
}

#[derive(Debug, Default)]
struct FrameAck {
    settled: bool,
    /// Entries of this frame in the cores' FIFOs not yet popped.
    refs: u32,
    /// One bit per core: the frame already has its entry in that core's FIFO.
    seen: Vec<u64>,
}

#[derive(Debug)]
struct CoreAcks {
    map: Arc<JournalMap>,
    /// Position of the record of the next event drained from this core's queue.
    next: u64,
    /// `(position of the frame's first event from this core, frame token)`, in position
    /// order (a frame enters when it takes its first event of this core).
    fifo: VecDeque<(u64, u32)>,
    published: u64,
}

/// The producer thread's journal bookkeeping (see the module doc). Owned by the producer.
#[derive(Debug)]
pub(crate) struct Acks {
    cores: Vec<CoreAcks>,
    frames: Vec<FrameAck>,
    free: Vec<u32>,
    /// The token of each open frame (by frame index), once it holds an event.
    open: Vec<Option<u32>>,
    /// Tokens of frames appended to the spool writer, settled after its next flush.
    spooled: Vec<u32>,
}

impl Acks {
    /// Bookkeeping for `maps` (one per core, in core order) and `open_frames` open frames.
    pub fn new(maps: Vec<Arc<JournalMap>>, open_frames: usize) -> Acks {
        let cores = maps
            .into_iter()
            .map(|map| {
                let acked = map.acked().load(Ordering::Acquire);
                CoreAcks {
                    map,
                    next: acked,
                    fifo: VecDeque::with_capacity(1024),
                    published: acked,
                }
            })
            .collect();
        Acks {
            cores,
            frames: Vec::with_capacity(1024),
            free: Vec::with_capacity(1024),
            open: vec![None; open_frames],
            spooled: Vec::with_capacity(1024),
        }
    }

    /// An event drained from `core`'s queue went into open frame `frame`; `body` is its size
    /// in the compact layout (what the frame grew by, less the entry header).
    #[inline]
    pub fn event(&mut self, frame: usize, core: usize, body: usize) {
        let Some(c) = self.cores.get_mut(core) else {
            return;
        };
        let cap = c.map.cap;
        let size = record_bytes(body);
        let start = place(c.next, size, cap);
        c.next = start + size;
        let t = match self.open[frame] {
            Some(t) => t,
            None => {
                let t = self.alloc();
                self.open[frame] = Some(t);
                t
            }
        };
        let f = &mut self.frames[t as usize];
        let (w, b) = (core / 64, 1u64 << (core % 64));
        if f.seen[w] & b == 0 {
            f.seen[w] |= b;
            f.refs += 1;
            self.cores[core].fifo.push_back((start, t));
        }
    }

    fn alloc(&mut self) -> u32 {
        if let Some(t) = self.free.pop() {
            return t;
        }
        let words = self.cores.len().div_ceil(64);
        self.frames.push(FrameAck {
            settled: false,
            refs: 0,
            seen: vec![0; words],
        });
        (self.frames.len() - 1) as u32
    }

    /// Open frame `frame` is leaving (sent or spooled): its token, if it holds events.
    pub fn take(&mut self, frame: usize) -> Option<u32> {
        self.open.get_mut(frame).and_then(Option::take)
    }

    /// The frame of token `t` is acknowledged by the broker (or given up on and counted).
    pub fn settle(&mut self, t: Option<u32>) {
        if let Some(f) = t.and_then(|t| self.frames.get_mut(t as usize)) {
            f.settled = true;
        }
    }

    /// The frame of token `t` was appended to the spool writer: settled once it is flushed.
    pub fn spooled(&mut self, t: Option<u32>) {
        if let Some(t) = t {
            self.spooled.push(t);
        }
    }

    /// The spool writer was flushed (its records are in the page cache).
    pub fn spool_flushed(&mut self) {
        let spooled = std::mem::take(&mut self.spooled);
        for &t in &spooled {
            self.settle(Some(t));
        }
        self.spooled = spooled;
        self.spooled.clear();
    }

    /// Publishes each core's acknowledged position (the first unsettled record, or everything
    /// drained when all is settled) and the bytes in use.
    pub fn publish(&mut self) {
        for ci in 0..self.cores.len() {
            while let Some(&(_, t)) = self.cores[ci].fifo.front() {
                let f = &mut self.frames[t as usize];
                if !f.settled {
                    break;
                }
                self.cores[ci].fifo.pop_front();
                f.refs -= 1;
                if f.refs == 0 {
                    f.settled = false;
                    f.seen.iter_mut().for_each(|w| *w = 0);
                    self.free.push(t);
                }
            }
            let c = &mut self.cores[ci];
            let acked = c.fifo.front().map_or(c.next, |&(p, _)| p);
            if acked != c.published {
                debug_assert!(acked > c.published);
                c.map.acked().store(acked, Ordering::Release);
                c.published = acked;
            }
            c.map.in_use.store(c.next - acked, Ordering::Relaxed);
        }
    }

    /// Frames holding journal records and not settled yet (tests, shutdown check).
    #[cfg(test)]
    pub fn unsettled(&self) -> usize {
        self.frames.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::event::{EventKind, InlineStr};

    fn ev(i: u32) -> Event {
        let mut e = Event::new(if i.is_multiple_of(3) {
            EventKind::Win
        } else {
            EventKind::Bid
        });
        e.campaign_id = i % 7;
        e.event_id[..4].copy_from_slice(&i.to_le_bytes());
        e.request_id = InlineStr::new(&"r".repeat((i % 50) as usize + 1));
        e
    }

    fn ring_of(path: &Path) -> (Vec<u8>, u64, u64) {
        let d = fs::read(path).unwrap();
        let cap = u64::from_le_bytes(d[OFF_CAPACITY..OFF_CAPACITY + 8].try_into().unwrap());
        let acked = u64::from_le_bytes(d[OFF_ACKED..OFF_ACKED + 8].try_into().unwrap());
        (d[HEADER_BYTES..].to_vec(), cap, acked)
    }

    fn ids(ring: &[u8], cap: u64, from: u64) -> (Vec<u32>, Scan) {
        let mut v = Vec::new();
        let s = scan(ring, cap, from, |b| {
            let e = Event::decode_compact(b).unwrap();
            v.push(u32::from_le_bytes(e.event_id[..4].try_into().unwrap()));
        });
        (v, s)
    }

    #[test]
    fn writes_are_read_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal_path(dir.path(), 0);
        let map = JournalMap::create(&p, 0, MIN_CAPACITY).unwrap();
        let mut w = JournalWriter::new(map.clone());
        for i in 0..100 {
            let e = ev(i);
            let s = w.prepare(&e).unwrap();
            w.commit(s);
        }
        let (ring, cap, acked) = ring_of(&p);
        assert_eq!((cap, acked), (MIN_CAPACITY, 0));
        let (got, s) = ids(&ring, cap, 0);
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(s.end, w.position());
        assert!(!s.torn);
    }

    #[test]
    fn full_until_acknowledged_then_wraps_and_stale_laps_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal_path(dir.path(), 3);
        let map = JournalMap::create(&p, 3, MIN_CAPACITY).unwrap();
        let mut w = JournalWriter::new(map.clone());
        let mut acks = Acks::new(vec![map.clone()], 1);
        let mut written = 0u32;
        // Fill the ring: the writer refuses once nothing is acknowledged.
        loop {
            let e = ev(written);
            match w.prepare(&e) {
                Some(s) => {
                    w.commit(s);
                    acks.event(0, 0, e.encoded_len());
                    written += 1;
                }
                None => break,
            }
        }
        assert!(w.position() <= MIN_CAPACITY && w.position() > MIN_CAPACITY - 512);
        // The producer settles the frame: everything is acknowledged, the writer wraps.
        let t = acks.take(0);
        acks.settle(t);
        acks.publish();
        assert_eq!(map.acked().load(Ordering::Acquire), w.position());
        assert_eq!(map.bytes_in_use(), 0);
        assert_eq!(acks.unsettled(), 0);
        let lap2_from = w.position();
        for i in 0..50 {
            let e = ev(10_000 + i);
            let s = w.prepare(&e).expect("room after the ack");
            w.commit(s);
            acks.event(0, 0, e.encoded_len());
        }
        assert!(w.position() > MIN_CAPACITY, "the writer went round");
        let (ring, cap, acked) = ring_of(&p);
        assert_eq!(acked, lap2_from);
        let (got, s) = ids(&ring, cap, acked);
        // Only the new lap's events, in order; the older lap's records beyond are stale.
        assert_eq!(got, (10_000..10_050).collect::<Vec<_>>());
        assert_eq!(s.end, w.position());
        assert!(!s.torn);
    }

    #[test]
    fn out_of_order_settlement_publishes_the_lowest_unsettled_position() {
        let dir = tempfile::tempdir().unwrap();
        let maps: Vec<_> = (0..2)
            .map(|c| JournalMap::create(&journal_path(dir.path(), c), c, MIN_CAPACITY).unwrap())
            .collect();
        let mut acks = Acks::new(maps.clone(), 2);
        let e = ev(1).encoded_len();
        let sz = record_bytes(e);
        // Core 0: events 0,1 → frame 0; event 2 → frame 1. Core 1: event → frame 1.
        acks.event(0, 0, e);
        acks.event(0, 0, e);
        acks.event(1, 0, e);
        acks.event(1, 1, e);
        let f0 = acks.take(0);
        let f1 = acks.take(1);
        // Frame 1 acknowledged first: core 0 still waits for frame 0 (position 0); core 1 done.
        acks.settle(f1);
        acks.publish();
        assert_eq!(maps[0].acked().load(Ordering::Acquire), 0);
        assert_eq!(maps[0].bytes_in_use(), 3 * sz);
        assert_eq!(maps[1].acked().load(Ordering::Acquire), sz);
        // Frame 0 spooled: settled only after the writer's flush.
        acks.spooled(f0);
        acks.publish();
        assert_eq!(maps[0].acked().load(Ordering::Acquire), 0);
        acks.spool_flushed();
        acks.publish();
        assert_eq!(maps[0].acked().load(Ordering::Acquire), 3 * sz);
        assert_eq!(acks.unsettled(), 0);
        // An event drained but still in an open frame holds the position.
        acks.event(1, 0, e);
        acks.publish();
        assert_eq!(maps[0].acked().load(Ordering::Acquire), 3 * sz);
        let t = acks.take(1);
        acks.settle(t);
        acks.publish();
        assert_eq!(maps[0].acked().load(Ordering::Acquire), 4 * sz);
    }

    #[test]
    fn a_torn_tail_ends_the_scan_and_flipped_bits_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal_path(dir.path(), 0);
        let map = JournalMap::create(&p, 0, MIN_CAPACITY).unwrap();
        let mut w = JournalWriter::new(map.clone());
        let mut ends = vec![];
        for i in 0..10 {
            let e = ev(i);
            let s = w.prepare(&e).unwrap();
            w.commit(s);
            ends.push(w.position());
        }
        let (mut ring, cap, _) = ring_of(&p);
        // Tear record 7: its body's second half never made it (the zeros of a fresh file).
        let torn_at = (ends[6] + ends[7]) as usize / 2;
        ring[torn_at..ends[7] as usize].fill(0);
        let (got, s) = ids(&ring, cap, 0);
        assert_eq!(got, (0..7).collect::<Vec<_>>());
        assert!(s.torn);
        assert_eq!(s.end, ends[6]);
        // A flipped bit in record 2's body.
        let (mut ring, _, _) = ring_of(&p);
        ring[ends[1] as usize + RECORD_HEADER + 5] ^= 0x10;
        let (got, s) = ids(&ring, cap, 0);
        assert_eq!(got, vec![0, 1]);
        assert!(s.torn);
    }

    #[test]
    fn recover_replays_unacknowledged_events_into_the_spool_and_resets() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let (spool, _) = Spool::open(dir.path(), 1 << 30, 1 << 20, counters.clone()).unwrap();
        {
            let map = JournalMap::create(&journal_path(dir.path(), 0), 0, MIN_CAPACITY).unwrap();
            let mut w = JournalWriter::new(map.clone());
            let mut acks = Acks::new(vec![map.clone()], 1);
            for i in 0..30 {
                let e = ev(i);
                let s = w.prepare(&e).unwrap();
                w.commit(s);
                if i < 10 {
                    acks.event(0, 0, e.encoded_len());
                }
            }
            // The first 10 are settled; 20 are not.
            let t = acks.take(0);
            acks.settle(t);
            acks.publish();
            // Dropped without any shutdown: like a killed process (the file stays).
        }
        let r = recover(dir.path(), &spool, &counters, 6, 32 * 1024).unwrap();
        assert_eq!(r.journals, 1);
        assert_eq!(r.events, 20);
        assert_eq!(r.torn, 0);
        assert_eq!(counters.journal_replayed.load(Ordering::Relaxed), 20);
        assert!(!journal_path(dir.path(), 0).exists(), "journal removed");
        // The spool holds exactly events 10..30 in sealed segments.
        let mut got = vec![];
        for seg in spool.sealed_segments().unwrap() {
            let data = crate::spool::read_segment(&seg).unwrap();
            let mut pos = crate::spool::MAGIC.len();
            while let crate::spool::Next::Record(r) = crate::spool::next_record(&data, &mut pos) {
                for e in codec::event::frame::decode_record(r.payload).unwrap() {
                    let e = e.unwrap();
                    got.push(u32::from_le_bytes(e.event_id[..4].try_into().unwrap()));
                }
            }
        }
        got.sort();
        assert_eq!(got, (10..30).collect::<Vec<_>>());
        // A second recovery finds nothing.
        let r = recover(dir.path(), &spool, &counters, 6, 32 * 1024).unwrap();
        assert_eq!(r, Recovery::default());
    }

    #[test]
    fn opaque_tags_round_trip() {
        assert_eq!(live_token(live_segment(None)), Some(None));
        assert_eq!(live_token(live_segment(Some(0))), Some(Some(0)));
        assert_eq!(live_token(live_segment(Some(77))), Some(Some(77)));
        assert_eq!(live_token(1), None);
        assert_eq!(live_token(123_456), None);
    }

    #[test]
    fn placement_skips_to_the_next_lap() {
        assert_eq!(place(0, 16, 64), 0);
        assert_eq!(place(48, 16, 64), 48);
        assert_eq!(place(56, 16, 64), 64);
        assert_eq!(place(120, 24, 64), 128);
        assert_eq!(record_bytes(1), 24);
        assert_eq!(record_bytes(8), 24);
        assert_eq!(record_bytes(9), 32);
    }
}

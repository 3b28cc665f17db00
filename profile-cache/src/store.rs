//! The replica's memory: an open-addressing index of packed records, one writer, many readers.
//!
//! Owns the index ([`Table`]), the records it points to and their reclamation. Exactly one
//! [`Store`] exists per replica and it lives on the replicator thread: all mutation goes through
//! `&mut Store`. Any number of [`Reader`]s (one per bidding core) look profiles up with no lock,
//! no allocation and no write to a cache line another core writes: a lookup writes only its own
//! reader's epoch slot. An update never blocks a reader and a reader never blocks the writer:
//! records are immutable, replaced by one atomic store of their slot, and freed only after every
//! reader that could have seen them has moved on ([`crate::epoch`]).
//!
//! Index. A power-of-two array of `AtomicU64` slots, linear probing. A slot holds 0 (never used),
//! 1 (tombstone) or `tag << 48 | record address | extra lines`, where `tag` is the top 16 bits
//! of the key's hash (so a probe rarely dereferences a record that is not the one sought: one
//! probe in 65,536), the address is the record's (8-aligned — 64-aligned in the product —, below
//! 2^48 on x86-64 and AArch64 Linux) and its 3 low bits say how many cache lines after the first
//! the record's lookup part (header, id, segments) spans. A probe whose tag matches prefetches
//! those lines before it reads the first, so a hit waits for the slot's line and then for the
//! record's lines together, not one after the other. Readers stop at an empty slot or after the
//! longest probe distance the writer ever used, so even a hostile id costs bounded time. The
//! writer rebuilds the index (new table published by one pointer store, old one retired) when
//! live + tombstones pass 3/4 of the slots, sizing it so live ≤ 5/8 of the slots (10M profiles
//! fit 2^24 slots, 128 MiB).
//!
//! Home blocks. Most records live at an address that follows from their id's hash
//! (`home.rs`): a lookup prefetches that home block's two lines *together with* the slot's
//! line, before it reads the slot, so a record at home arrives in the same memory round trip as
//! its slot instead of one round trip later. The slot remains the only pointer a reader follows;
//! the home prefetch is a hint (a block holding another profile, or none, costs a wasted
//! prefetch). Updates put the new version in an ordinary block while readers may still read the
//! old one at home; when the old one is reclaimed, [`Store::collect`] moves the profile home again.
//!
//! Early lookups. [`Reader::prefetch`] hashes an id and prefetches its home slot's line (and
//! its home block's two lines),
//! [`Reader::prefetch_record`] later reads that slot (and its probe sequence up to the first tag
//! match) and prefetches the record's lines, and [`Reader::get_prefetched`] finishes with the
//! ordinary probe, reusing the hash. The prefetch steps pin the reader only for their own
//! duration and dereference no record, so a slot rewritten, a record freed or the whole index
//! replaced between them costs at most a useless prefetch; the lookup reads the replica as it is
//! then, exactly like `get`.
//!
//! Must never: let a reader see a freed record, allocate or lock on a lookup, or block a reader.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shards::ProfileView;

use crate::arena::{Arena, LINE_GRAIN, MIN_GRAIN, Region};
use crate::epoch::{Epochs, ReaderFence, ReaderSlot, Retired};
use crate::home::{HOME_BLOCK, home_index};
use crate::idhash::{IdHash, IdHasher};
use crate::record::{
    EncodeError, GENERATION_BYTE, HEADER_LEN, ProfileData, RecordView, TWO_LINES, Truncation,
    encoded_len,
};

const EMPTY: u64 = 0;
const TOMB: u64 = 1;
const PTR_BITS: u32 = 48;
const PTR_MASK: u64 = (1 << PTR_BITS) - 1;
/// The slot's low bits: lines of the record's lookup part after its first (records are at least
/// 8-aligned, so these bits of the address are 0).
const LINES_MASK: u64 = 7;
/// Most lines after the first a reader prefetches (the rest of a long record is read on demand).
const MAX_PREFETCH: u64 = 3;
const MIN_SLOTS: usize = 1024;

/// Slots for `live` profiles so the load stays at or below 5/8.
fn slots_for(live: usize) -> usize {
    (live.saturating_mul(8) / 5 + 1)
        .next_power_of_two()
        .max(MIN_SLOTS)
}

/// How a replica hashes ids, places records and fences its readers. `Tuning::default()` is the
/// product's choice; [`Tuning::SESSION_2`] is the design before session 3, kept so that
/// benchmarks can measure both side by side in one process (`benches/lookup_tail.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The index's hash of ids.
    pub hash: IdHash,
    /// Records start on a cache line (blocks rounded up to 64 bytes) instead of on 8 bytes.
    pub line_aligned_records: bool,
    /// How readers order their epoch announcement (see `epoch.rs`).
    pub reader_fence: ReaderFence,
    /// Records placed in home blocks found from the hash, prefetched with the slot (session 6,
    /// `home.rs`); false: every record in an ordinary arena block, the slot read first.
    pub home_blocks: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            hash: IdHash::Seeded,
            line_aligned_records: true,
            reader_fence: ReaderFence::Asymmetric,
            home_blocks: true,
        }
    }
}

impl Tuning {
    /// The replica as sessions 1–2 built it: `foldhash`, 8-byte aligned records, a `SeqCst`
    /// fence per pin.
    pub const SESSION_2: Tuning = Tuning {
        hash: IdHash::Foldhash,
        line_aligned_records: false,
        reader_fence: ReaderFence::Full,
        home_blocks: false,
    };
}

/// The open-addressing index (on huge pages, see [`crate::arena`]). Readers reach it through
/// [`Shared::table`].
#[derive(Debug)]
pub(crate) struct Table {
    region: Region,
    mask: usize,
    /// Longest distance from a key's home slot the writer ever placed it.
    max_probe: AtomicU32,
}

impl Table {
    fn with_slots(n: usize) -> Box<Self> {
        debug_assert!(n.is_power_of_two());
        // Zeroed memory: every slot starts EMPTY.
        let region = Region::new(n * std::mem::size_of::<AtomicU64>());
        Box::new(Self {
            region,
            mask: n - 1,
            max_probe: AtomicU32::new(0),
        })
    }

    #[inline]
    fn slots(&self) -> &[AtomicU64] {
        // SAFETY: the region holds `mask + 1` zero-initialised, 8-aligned (page-aligned) u64s, a
        // valid bit pattern for AtomicU64, and lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(self.region.as_ptr().cast::<AtomicU64>(), self.mask + 1)
        }
    }

    fn bytes(&self) -> usize {
        self.region.len()
    }

    /// Finds the record of `key`. Reader side: the caller must be pinned.
    #[inline]
    fn find<'a>(&'a self, hash: u64, key: &[u8]) -> Option<RecordView<'a>> {
        let tag = hash >> PTR_BITS;
        let slots = self.slots();
        let mut i = hash as usize & self.mask;
        // Probes left after this one (a counted loop: `for _ in 0..=limit` costs more per probe).
        let mut left = self.max_probe.load(Ordering::Acquire);
        loop {
            let v = slots[i].load(Ordering::Acquire);
            if v == EMPTY {
                return None;
            }
            if v >> PTR_BITS == tag && v != TOMB {
                prefetch_record(v);
                // SAFETY: a non-empty, non-tombstone slot holds the address of a live record
                // written completely before the slot's Release store (Acquire above); the caller
                // is pinned, so the record is not freed while the returned view lives ('a is
                // bounded by the pin's borrow of the reader in `Reader::get`).
                let rec = unsafe { record_at(v) };
                if rec.has_id(key) {
                    return Some(rec);
                }
            }
            if left == 0 {
                return None;
            }
            left -= 1;
            i = (i + 1) & self.mask;
        }
    }
}

impl Table {
    /// Starts loading the cache line of `hash`'s home slot (reader side, pinned). Never waits.
    #[inline(always)]
    fn prefetch_slot(&self, hash: u64) {
        let i = hash as usize & self.mask;
        prefetch_line(self.slots().as_ptr().wrapping_add(i).cast());
    }

    /// Reads `hash`'s probe sequence up to its first slot whose tag matches and starts loading
    /// every line of that record's lookup part (first line included). Reader side, pinned. Only
    /// prefetches: the record is not dereferenced, so a slot the writer changes meanwhile costs
    /// at most a useless prefetch. Waits only for the slot's own line if it has not arrived.
    #[inline]
    fn prefetch_match(&self, hash: u64) {
        let tag = hash >> PTR_BITS;
        let slots = self.slots();
        let mut i = hash as usize & self.mask;
        let mut left = self.max_probe.load(Ordering::Relaxed);
        loop {
            let v = slots[i].load(Ordering::Relaxed);
            if v == EMPTY {
                return;
            }
            if v >> PTR_BITS == tag && v != TOMB {
                prefetch_line((v & PTR_MASK & !LINES_MASK) as *const i8);
                prefetch_record(v);
                return;
            }
            if left == 0 {
                return;
            }
            left -= 1;
            i = (i + 1) & self.mask;
        }
    }
}

/// Starts loading the cache line at `p` into every cache level (a hint: never faults, whatever
/// `p` is, and has no architectural effect).
#[inline(always)]
fn prefetch_line(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and has no architectural effect.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading both lines of the home block of `hash` (none if the replica has no home
/// blocks). A hint: never faults, whatever the block holds.
#[inline(always)]
fn prefetch_home(base: usize, blocks: u64, hash: u64) {
    if blocks != 0 {
        let p = base.wrapping_add(home_index(hash, blocks) as usize * HOME_BLOCK) as *const i8;
        prefetch_line(p);
        prefetch_line(p.wrapping_add(64));
    }
}

/// Views the record a slot value points to.
///
/// # Safety
/// `v` must be a slot value holding the address of a record written by [`Store::upsert`] that
/// is not freed for the returned lifetime.
#[inline]
unsafe fn record_at<'a>(v: u64) -> RecordView<'a> {
    let p = (v & PTR_MASK & !LINES_MASK) as *const u8;
    // SAFETY: per the contract, `p` points at a whole record, which starts with its header.
    let len = encoded_len(unsafe { &*p.cast::<[u8; HEADER_LEN]>() });
    // SAFETY: the record spans `len` initialised bytes from `p`, alive for 'a (contract).
    RecordView::trusted(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Starts loading the lines after the first of the record a slot points to (the slot's low bits
/// say how many its lookup part spans), so they arrive together with the first.
#[inline(always)]
fn prefetch_record(v: u64) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = (v & PTR_MASK & !LINES_MASK) as *const i8;
        let extra = (v & LINES_MASK).min(MAX_PREFETCH) as usize;
        for line in 1..=extra {
            // SAFETY: a prefetch is a hint that never faults and has no architectural effect;
            // the address is inside the record's block anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.wrapping_add(64 * line),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Whether a record's lookup part (header, id, segments) is longer than two cache lines.
fn is_long(rec: RecordView<'_>) -> bool {
    rec.lookup_len() > TWO_LINES
}

/// Retires the record a slot held until the writer just replaced or removed it.
fn retire_record(
    shared: &Shared,
    garbage: &mut Vec<Retired<Garbage>>,
    arena: &Arena,
    slot_value: u64,
) {
    let Some(p) = NonNull::new((slot_value & PTR_MASK & !LINES_MASK) as *mut u8) else {
        return;
    };
    // SAFETY: the record was linked until the store that unlinked it; the writer owns it.
    let rec = unsafe { record_at(slot_value) };
    let len = rec.as_bytes().len();
    let c = &shared.counters;
    c.record_bytes
        .fetch_sub(arena.block_size_of(p, len) as u64, Ordering::Relaxed);
    if arena.is_home(p) {
        // Unlinked: the profile is no longer read from its home block, though the block stays
        // taken until this version is reclaimed.
        c.home_records.fetch_sub(1, Ordering::Relaxed);
    }
    if is_long(rec) {
        c.long_records.fetch_sub(1, Ordering::Relaxed);
    }
    let epoch = shared.epochs.current();
    garbage.push(Retired {
        epoch,
        item: Garbage::Record(p, len),
    });
}

/// The slot value of the record at `p` (`lookup_len` bytes of it are its lookup part), or `None`
/// if its address cannot be tagged.
fn slot_value(hash: u64, p: NonNull<u8>, lookup_len: usize) -> Option<u64> {
    let addr = p.as_ptr() as usize as u64;
    debug_assert_eq!(addr & LINES_MASK, 0, "blocks are 8-aligned");
    let extra = ((addr + lookup_len as u64 - 1) / 64 - addr / 64).min(LINES_MASK);
    (addr & !PTR_MASK == 0).then_some((hash >> PTR_BITS) << PTR_BITS | addr | extra)
}

/// What the writer retires.
#[derive(Debug)]
enum Garbage {
    /// A record block and its length.
    Record(NonNull<u8>, usize),
    Table(Box<Table>),
}

/// Counters the writer keeps and anyone may read ([`Stats`] is their snapshot).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) profiles: AtomicU64,
    pub(crate) record_bytes: AtomicU64,
    pub(crate) long_records: AtomicU64,
    pub(crate) hugetlb_bytes: AtomicU64,
    pub(crate) arena_bytes: AtomicU64,
    pub(crate) arena_free_bytes: AtomicU64,
    pub(crate) index_bytes: AtomicU64,
    pub(crate) home_blocks: AtomicU64,
    pub(crate) home_records: AtomicU64,
    pub(crate) retired_pending: AtomicU64,
    pub(crate) updates_applied: AtomicU64,
    pub(crate) deletes_applied: AtomicU64,
    pub(crate) stream_entries: AtomicU64,
    pub(crate) malformed_fields: AtomicU64,
    pub(crate) malformed_profiles: AtomicU64,
    pub(crate) truncated_profiles: AtomicU64,
    pub(crate) bootstraps: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    pub(crate) last_bootstrap_ms: AtomicU64,
    pub(crate) snapshot_loaded_profiles: AtomicU64,
    pub(crate) snapshots_written: AtomicU64,
    pub(crate) snapshot_errors: AtomicU64,
    pub(crate) last_snapshot_ms: AtomicU64,
}

/// A snapshot of the replica's counters (for metrics and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Profiles in the replica.
    pub profiles: u64,
    /// Bytes of live record blocks (each rounded up to the record grain, 64 by default; a home
    /// block counts 128).
    pub record_bytes: u64,
    /// Live records whose lookup part (header, id, segments) spans more than two cache lines:
    /// more than 20 segments with a 36-byte id, longer ids, or segment ids spread over more than
    /// 65,535 (a lookup of such a profile reads more lines; the profile is complete all the same).
    pub long_records: u64,
    /// Bytes of the replica's memory (record chunks, home blocks and index) on huge pages
    /// reserved through `vm.nr_hugepages` (`MAP_HUGETLB`); the rest is advised to use
    /// transparent huge pages.
    pub hugetlb_bytes: u64,
    /// Bytes mapped for records (live blocks, free blocks and the unused tail of the last chunk).
    pub arena_bytes: u64,
    /// Bytes of freed record blocks waiting for reuse by records of the same size class.
    pub arena_free_bytes: u64,
    /// Bytes of the index.
    pub index_bytes: u64,
    /// Home blocks (128 bytes each, one per expected profile; see `home.rs`), counted in
    /// `arena_bytes`.
    pub home_blocks: u64,
    /// Profiles whose linked record is in its home block (a lookup of them waits for one memory
    /// round trip, not two). Home blocks still holding a replaced or removed version until it is
    /// reclaimed are not counted.
    pub home_records: u64,
    /// Retired records/tables not yet freed (readers still pinned behind them).
    pub retired_pending: u64,
    /// Profiles written (inserted or replaced) since start.
    pub updates_applied: u64,
    /// Profiles removed since start (deleted in Redis, or swept after a re-bootstrap).
    pub deletes_applied: u64,
    /// Change-stream entries read since start.
    pub stream_entries: u64,
    /// Profile fields skipped because their value was malformed.
    pub malformed_fields: u64,
    /// Profiles skipped whole (bad id, not a hash).
    pub malformed_profiles: u64,
    /// Profiles that exceeded a bound and lost their lightest segments or oldest buckets.
    pub truncated_profiles: u64,
    /// Full copies (bootstraps) completed.
    pub bootstraps: u64,
    /// Connections (re)established after a failure.
    pub reconnects: u64,
    /// Redis errors seen (connection, protocol, timeouts).
    pub redis_errors: u64,
    /// Duration of the last completed bootstrap, milliseconds.
    pub last_bootstrap_ms: u64,
    /// Profiles loaded from the on-disk snapshot at start (0: none loaded).
    pub snapshot_loaded_profiles: u64,
    /// Snapshots written to disk since start.
    pub snapshots_written: u64,
    /// Snapshots that could not be written, or found at start but rejected (corrupt, foreign).
    pub snapshot_errors: u64,
    /// Duration of the last snapshot written, milliseconds.
    pub last_snapshot_ms: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            profiles: g(&self.profiles),
            record_bytes: g(&self.record_bytes),
            long_records: g(&self.long_records),
            hugetlb_bytes: g(&self.hugetlb_bytes),
            arena_bytes: g(&self.arena_bytes),
            arena_free_bytes: g(&self.arena_free_bytes),
            index_bytes: g(&self.index_bytes),
            home_blocks: g(&self.home_blocks),
            home_records: g(&self.home_records),
            retired_pending: g(&self.retired_pending),
            updates_applied: g(&self.updates_applied),
            deletes_applied: g(&self.deletes_applied),
            stream_entries: g(&self.stream_entries),
            malformed_fields: g(&self.malformed_fields),
            malformed_profiles: g(&self.malformed_profiles),
            truncated_profiles: g(&self.truncated_profiles),
            bootstraps: g(&self.bootstraps),
            reconnects: g(&self.reconnects),
            redis_errors: g(&self.redis_errors),
            last_bootstrap_ms: g(&self.last_bootstrap_ms),
            snapshot_loaded_profiles: g(&self.snapshot_loaded_profiles),
            snapshots_written: g(&self.snapshots_written),
            snapshot_errors: g(&self.snapshot_errors),
            last_snapshot_ms: g(&self.last_snapshot_ms),
        }
    }
}

/// Freshness as the replicator last established it.
#[derive(Debug)]
pub(crate) struct Freshness {
    /// The first bootstrap has completed and the stream was drained once.
    pub(crate) loaded: AtomicBool,
    /// Wall-clock ms at which the replica was last known to hold everything Redis held.
    pub(crate) synced_at_ms: AtomicU64,
    /// Staleness beyond which [`Reader::is_fresh`] says no.
    pub(crate) max_staleness_ms: u64,
}

/// What every lookup reads and the writer rarely writes, on cache lines of its own (away from
/// the counters the writer bumps on every update).
#[derive(Debug)]
#[repr(align(128))]
struct ReadMostly {
    table: AtomicPtr<Table>,
    hasher: IdHasher,
    /// The first home block's address and the number of home blocks (0: none); fixed for the
    /// replica's life.
    home_base: usize,
    home_blocks: u64,
}

/// State shared by the writer and every reader.
#[derive(Debug)]
pub(crate) struct Shared {
    hot: ReadMostly,
    epochs: Epochs,
    pub(crate) counters: Counters,
    pub(crate) freshness: Freshness,
    /// What the writer left when it was dropped (its arena, holding every record, and retired
    /// tables): released with the last reader.
    orphans: Mutex<(Option<Arena>, Vec<Garbage>)>,
}

// SAFETY: the raw record pointers inside (`table`'s slots, `orphans`) point at immutable byte
// records owned by this structure; they are read by any thread only under the epoch protocol and
// freed by one owner (the writer, or `Drop` once no reader exists).
unsafe impl Send for Shared {}
// SAFETY: as above; all shared mutation is through atomics or the mutex.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // No reader and no writer remain (this is the last Arc): the table is unmapped here, the
        // records with the arena in `orphans`.
        let t = *self.hot.table.get_mut();
        // SAFETY: `table` always holds a pointer from `Box::into_raw`, freed only here.
        drop(unsafe { Box::from_raw(t) });
    }
}

/// Frees what was retired; returns the home block it freed, if it was one (its bytes intact).
fn free_garbage(arena: &mut Arena, g: Garbage) -> Option<(NonNull<u8>, usize)> {
    match g {
        // SAFETY: retired records were unlinked before retirement and are freed once, after
        // the epoch protocol showed no reader can reach them.
        Garbage::Record(p, len) => unsafe { arena.free(p, len) }.then_some((p, len)),
        Garbage::Table(t) => {
            drop(t);
            None
        }
    }
}

/// The single writer of a replica. Lives on the replicator thread (or in a test or bench).
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    live: usize,
    tombs: usize,
    garbage: Vec<Retired<Garbage>>,
    arena: Arena,
    buf: Vec<u8>,
    generation: u8,
    /// Ids of profiles whose home block `collect` just freed (concatenated; their ends in
    /// `rehome_ends`), to move them home again.
    rehome_ids: Vec<u8>,
    rehome_ends: Vec<usize>,
}

// SAFETY: the store is the unique owner of the records and garbage it points to; moving it to
// another thread moves that ownership (it is not Sync-shared: all mutation is through `&mut`).
unsafe impl Send for Store {}

impl Store {
    /// An empty replica sized for `expected` profiles, its writer, and a first reader.
    pub fn new(expected: usize, max_staleness_ms: u64) -> (Store, Reader) {
        Self::with_tuning(expected, max_staleness_ms, Tuning::default())
    }

    /// [`Store::new`] with a chosen [`Tuning`] (benchmarks comparing designs).
    pub fn with_tuning(expected: usize, max_staleness_ms: u64, tuning: Tuning) -> (Store, Reader) {
        let table = Table::with_slots(slots_for(expected));
        let arena = Arena::with_homes(
            if tuning.line_aligned_records {
                LINE_GRAIN
            } else {
                MIN_GRAIN
            },
            if tuning.home_blocks { expected } else { 0 },
        );
        let (home_base, home_blocks) = arena.home_layout();
        let counters = Counters::default();
        counters.home_blocks.store(home_blocks, Ordering::Relaxed);
        counters
            .index_bytes
            .store(table.bytes() as u64, Ordering::Relaxed);
        if table.region.is_hugetlb() {
            counters
                .hugetlb_bytes
                .store(table.bytes() as u64, Ordering::Relaxed);
        }
        let shared = Arc::new(Shared {
            hot: ReadMostly {
                table: AtomicPtr::new(Box::into_raw(table)),
                hasher: IdHasher::new(tuning.hash),
                home_base,
                home_blocks,
            },
            epochs: Epochs::new(tuning.reader_fence),
            counters,
            freshness: Freshness {
                loaded: AtomicBool::new(false),
                synced_at_ms: AtomicU64::new(0),
                max_staleness_ms,
            },
            orphans: Mutex::new((None, Vec::new())),
        });
        let reader = Reader::new(Arc::clone(&shared));
        let store = Store {
            shared,
            live: 0,
            tombs: 0,
            garbage: Vec::new(),
            arena,
            buf: Vec::with_capacity(crate::record::MAX_RECORD_LEN),
            generation: 0,
            rehome_ids: Vec::new(),
            rehome_ends: Vec::new(),
        };
        (store, reader)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The current table. The returned borrow is not tied to `self` so the writer can update
    /// counters while holding it; it must not be used across a call to [`Store::rebuild`].
    fn table<'t>(&self) -> &'t Table {
        // SAFETY: only the writer (`self`) replaces the table, in `rebuild`, and retires the old
        // one under the epoch protocol; callers drop the borrow before calling `rebuild`.
        unsafe { &*self.shared.hot.table.load(Ordering::Acquire) }
    }

    /// Profiles in the replica.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the replica holds no profile.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The generation new records are tagged with (see [`Store::sweep`]).
    pub fn generation(&self) -> u8 {
        self.generation
    }

    /// Starts a new generation (a re-bootstrap) and returns it.
    pub fn next_generation(&mut self) -> u8 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    /// Inserts or replaces the profile of `data.user_id`. Sorts and bounds `data`'s lists.
    pub fn upsert(&mut self, data: &mut ProfileData) -> Result<Truncation, EncodeError> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = data.encode_into(self.generation, &mut buf);
        if r.is_ok() {
            self.put(&buf);
        }
        self.buf = buf;
        r
    }

    /// Inserts or replaces a record read back from a snapshot, after checking its layout (so a
    /// reader can never read out of its bounds) and retagging it with the current generation.
    /// Returns false, storing nothing, if the bytes are not a well-formed record.
    pub(crate) fn load_record(&mut self, rec: &mut [u8]) -> bool {
        if !crate::snapshot::well_formed(rec) {
            return false;
        }
        rec[GENERATION_BYTE] = self.generation;
        self.put(rec);
        true
    }

    fn put(&mut self, rec: &[u8]) {
        if (self.live + self.tombs + 1) * 4 > self.table().slots().len() * 3 {
            self.rebuild(self.live + 1);
        }
        let view = RecordView::trusted(rec);
        let key = view.user_id_bytes();
        let hash = self.shared.hot.hasher.hash(key);
        // Home if the block is free (not if it holds this profile's current version: readers
        // may be reading it; `collect` moves the profile home once that version is reclaimed).
        let p = self.arena.alloc_for(hash, rec.len());
        // SAFETY: `p` is a fresh block of at least `rec.len()` bytes, disjoint from `rec`.
        unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), p.as_ptr(), rec.len()) };
        let Some(v) = slot_value(hash, p, view.lookup_len()) else {
            // An address above 2^48 cannot be tagged; never seen on Linux without mmap hints.
            // SAFETY: `p` was just allocated and never published.
            unsafe { self.arena.free(p, rec.len()) };
            self.shared
                .counters
                .malformed_profiles
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let size = self.arena.block_size_of(p, rec.len()) as u64;
        let c = &self.shared.counters;
        let table = self.table();
        let home = hash as usize & table.mask;
        let mut i = home;
        let mut free: Option<usize> = None;
        let mut old: Option<u64> = None;
        loop {
            let cur = table.slots()[i].load(Ordering::Relaxed);
            if cur == EMPTY {
                break;
            }
            if cur == TOMB {
                free.get_or_insert(i);
            } else if cur >> PTR_BITS == hash >> PTR_BITS {
                // SAFETY: the writer owns every linked record; none is freed while linked.
                if unsafe { record_at(cur) }.has_id(key) {
                    old = Some(cur);
                    free = Some(i);
                    break;
                }
            }
            i = (i + 1) & table.mask;
            debug_assert!(i != home, "table has at least one empty slot (load ≤ 3/4)");
        }
        let at = free.unwrap_or(i);
        let dist = (at.wrapping_sub(home) & table.mask) as u32;
        if dist > table.max_probe.load(Ordering::Relaxed) {
            table.max_probe.store(dist, Ordering::Release);
        }
        let was = table.slots()[at].load(Ordering::Relaxed);
        table.slots()[at].store(v, Ordering::Release);
        c.record_bytes.fetch_add(size, Ordering::Relaxed);
        if self.arena.is_home(p) {
            c.home_records.fetch_add(1, Ordering::Relaxed);
        }
        if is_long(view) {
            c.long_records.fetch_add(1, Ordering::Relaxed);
        }
        match old {
            Some(o) => retire_record(&self.shared, &mut self.garbage, &self.arena, o),
            None => {
                self.live += 1;
                if was == TOMB {
                    self.tombs -= 1;
                }
                c.profiles.store(self.live as u64, Ordering::Relaxed);
            }
        }
        c.updates_applied.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes the profile of `user_id`; returns whether it was there.
    pub fn remove(&mut self, user_id: &str) -> bool {
        let key = user_id.as_bytes();
        let hash = self.shared.hot.hasher.hash(key);
        let table = self.table();
        let mut i = hash as usize & table.mask;
        for _ in 0..=table.max_probe.load(Ordering::Relaxed) {
            let cur = table.slots()[i].load(Ordering::Relaxed);
            if cur == EMPTY {
                return false;
            }
            if cur != TOMB
                && cur >> PTR_BITS == hash >> PTR_BITS
                // SAFETY: the writer owns every linked record.
                && unsafe { record_at(cur) }.has_id(key)
            {
                table.slots()[i].store(TOMB, Ordering::Release);
                retire_record(&self.shared, &mut self.garbage, &self.arena, cur);
                self.live -= 1;
                self.tombs += 1;
                let c = &self.shared.counters;
                c.profiles.store(self.live as u64, Ordering::Relaxed);
                c.deletes_applied.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            i = (i + 1) & table.mask;
        }
        false
    }

    /// Removes every profile not written in generation `keep` (after a re-bootstrap: profiles
    /// deleted from Redis while the change stream could not tell us). Returns how many.
    pub fn sweep(&mut self, keep: u8) -> usize {
        let mut stale = Vec::new();
        for s in self.table().slots().iter() {
            let v = s.load(Ordering::Relaxed);
            if v != EMPTY && v != TOMB {
                // SAFETY: the writer owns every linked record.
                let rec = unsafe { record_at(v) };
                if rec.generation() != keep {
                    stale.push(rec.user_id().to_owned());
                }
            }
        }
        for id in &stale {
            self.remove(id);
        }
        stale.len()
    }

    /// Rebuilds the index for at least `live` profiles, dropping tombstones.
    fn rebuild(&mut self, live: usize) {
        let new = Table::with_slots(slots_for(live));
        let mut max = 0u32;
        for s in self.table().slots().iter() {
            let v = s.load(Ordering::Relaxed);
            if v == EMPTY || v == TOMB {
                continue;
            }
            // SAFETY: the writer owns every linked record.
            let key = unsafe { record_at(v) }.user_id_bytes();
            let hash = self.shared.hot.hasher.hash(key);
            let home = hash as usize & new.mask;
            let mut i = home;
            while new.slots()[i].load(Ordering::Relaxed) != EMPTY {
                i = (i + 1) & new.mask;
            }
            max = max.max((i.wrapping_sub(home) & new.mask) as u32);
            new.slots()[i].store(v, Ordering::Relaxed);
        }
        new.max_probe.store(max, Ordering::Relaxed);
        self.shared
            .counters
            .index_bytes
            .store(new.bytes() as u64, Ordering::Relaxed);
        // Release: readers that load the new table see its slots.
        let old = self
            .shared
            .hot
            .table
            .swap(Box::into_raw(new), Ordering::AcqRel);
        self.tombs = 0;
        // SAFETY: `old` came from Box::into_raw and is no longer reachable from `table`.
        let old = unsafe { Box::from_raw(old) };
        let epoch = self.shared.epochs.current();
        self.garbage.push(Retired {
            epoch,
            item: Garbage::Table(old),
        });
    }

    /// Frees what no reader can still see, and moves profiles whose home block that freed back
    /// home (`home.rs`). Call after each batch of updates.
    pub fn collect(&mut self) {
        self.reclaim();
        if !self.rehome_ends.is_empty() {
            let ids = std::mem::take(&mut self.rehome_ids);
            let mut ends = std::mem::take(&mut self.rehome_ends);
            let mut start = 0;
            for &end in &ends {
                self.rehome(&ids[start..end]);
                start = end;
            }
            ends.clear();
            self.rehome_ends = ends;
            self.rehome_ids = ids;
            self.rehome_ids.clear();
        }
        self.publish_memory_counters();
    }

    /// Frees what no reader can still see; notes the ids held by home blocks it freed.
    fn reclaim(&mut self) {
        if self.garbage.is_empty() {
            return;
        }
        let oldest = self.shared.epochs.advance();
        let mut kept = Vec::with_capacity(self.garbage.len());
        for r in self.garbage.drain(..) {
            if r.epoch >= oldest {
                kept.push(r);
                continue;
            }
            if let Some((p, len)) = free_garbage(&mut self.arena, r.item) {
                // SAFETY: a freed home block keeps its bytes (the record that was unlinked) until
                // the writer — this thread — takes the block again, which it has not done yet.
                let rec =
                    RecordView::trusted(unsafe { std::slice::from_raw_parts(p.as_ptr(), len) });
                self.rehome_ids.extend_from_slice(rec.user_id_bytes());
                self.rehome_ends.push(self.rehome_ids.len());
            }
        }
        self.garbage = kept;
    }

    /// If the profile `key` lives outside its home block and the block is free, copies its record
    /// home and relinks it (an update of the slot like any other; the old block is retired).
    fn rehome(&mut self, key: &[u8]) {
        let hash = self.shared.hot.hasher.hash(key);
        let table = self.table();
        let mut i = hash as usize & table.mask;
        let mut found = None;
        for _ in 0..=table.max_probe.load(Ordering::Relaxed) {
            let cur = table.slots()[i].load(Ordering::Relaxed);
            if cur == EMPTY {
                break;
            }
            if cur != TOMB
                && cur >> PTR_BITS == hash >> PTR_BITS
                // SAFETY: the writer owns every linked record.
                && unsafe { record_at(cur) }.has_id(key)
            {
                found = Some((i, cur));
                break;
            }
            i = (i + 1) & table.mask;
        }
        let Some((at, cur)) = found else {
            return; // removed meanwhile
        };
        let old = NonNull::new((cur & PTR_MASK & !LINES_MASK) as *mut u8)
            .expect("a linked slot holds a record address");
        if self.arena.is_home(old) {
            return;
        }
        // SAFETY: the writer owns every linked record.
        let rec = unsafe { record_at(cur) };
        let len = rec.as_bytes().len();
        let Some(p) = self.arena.take_home(hash, len) else {
            return; // too long, or another profile took the block
        };
        // SAFETY: `p` is a free home block of HOME_BLOCK ≥ `len` bytes, disjoint from the record.
        unsafe { std::ptr::copy_nonoverlapping(rec.as_bytes().as_ptr(), p.as_ptr(), len) };
        let Some(v) = slot_value(hash, p, rec.lookup_len()) else {
            // SAFETY: `p` was just taken and never published.
            unsafe { self.arena.free(p, len) };
            return;
        };
        let c = &self.shared.counters;
        c.record_bytes
            .fetch_add(HOME_BLOCK as u64, Ordering::Relaxed);
        c.home_records.fetch_add(1, Ordering::Relaxed);
        // Release: a reader that loads the new value sees the copied bytes.
        table.slots()[at].store(v, Ordering::Release);
        retire_record(&self.shared, &mut self.garbage, &self.arena, cur);
    }

    /// Publishes the memory counters ([`Stats`]).
    fn publish_memory_counters(&self) {
        let c = &self.shared.counters;
        c.retired_pending
            .store(self.garbage.len() as u64, Ordering::Relaxed);
        c.arena_bytes
            .store(self.arena.mapped_bytes() as u64, Ordering::Relaxed);
        c.arena_free_bytes
            .store(self.arena.free_bytes() as u64, Ordering::Relaxed);
        // Home blocks taken = linked records at home + retired ones not yet reclaimed.
        debug_assert_eq!(
            self.arena.home_blocks_in_use(),
            c.home_records.load(Ordering::Relaxed) as usize
                + self
                    .garbage
                    .iter()
                    .filter(|r| matches!(r.item, Garbage::Record(p, _) if self.arena.is_home(p)))
                    .count(),
            "home blocks in use"
        );
        let t = self.table();
        let index_huge = if t.region.is_hugetlb() { t.bytes() } else { 0 };
        c.hugetlb_bytes.store(
            (self.arena.hugetlb_bytes() + index_huge) as u64,
            Ordering::Relaxed,
        );
    }

    /// Marks the replica loaded and current as of `at_ms` (wall-clock milliseconds).
    pub fn mark_synced(&self, at_ms: u64) {
        let f = &self.shared.freshness;
        f.synced_at_ms.fetch_max(at_ms, Ordering::Release);
        f.loaded.store(true, Ordering::Release);
    }

    /// A new reader (same as cloning an existing one).
    pub fn reader(&self) -> Reader {
        Reader::new(Arc::clone(&self.shared))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Frees what it can (no moving home: the replica is going away with its last reader).
        self.reclaim();
        self.publish_memory_counters();
        let left: Vec<Garbage> = self.garbage.drain(..).map(|r| r.item).collect();
        let mut o = self
            .shared
            .orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        o.0 = Some(std::mem::take(&mut self.arena));
        o.1.extend(left);
    }
}

/// Wall-clock milliseconds since the Unix epoch (vDSO clock read; no syscall on Linux x86-64).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A lookup begun early ([`Reader::prefetch`]): the id and its hash in the replica's index, so
/// that [`Reader::prefetch_record`] and [`Reader::get_prefetched`] find its slot without hashing
/// the id again. `Copy`, a few words, holds no pin: keeping it costs the replica nothing, and a
/// profile replaced or removed after the prefetch is simply found as it is at the lookup.
#[derive(Debug, Clone, Copy)]
pub struct Prefetch<'a> {
    id: &'a str,
    hash: u64,
    /// The replica whose hasher made `hash` (the address of its shared state): a token used with
    /// a reader of another replica is hashed again there, never trusted.
    replica: usize,
}

impl<'a> Prefetch<'a> {
    /// The id the lookup is for.
    pub fn user_id(&self) -> &'a str {
        self.id
    }
}

/// A bidding core's handle on the replica: lock-free, allocation-free lookups.
///
/// `Clone` registers a new reader (takes a lock once); give each core its own clone. `Send` but not
/// `Sync`: a reader belongs to one thread at a time.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    slot: Arc<ReaderSlot>,
    pins: Cell<u32>,
}

impl Clone for Reader {
    fn clone(&self) -> Self {
        Reader::new(Arc::clone(&self.shared))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.epochs.retire_reader(&self.slot);
    }
}

/// Keeps a reader pinned while a [`ProfileRef`] lives.
struct Pin<'a> {
    reader: &'a Reader,
}

impl Drop for Pin<'_> {
    #[inline]
    fn drop(&mut self) {
        let n = self.reader.pins.get() - 1;
        self.reader.pins.set(n);
        if n == 0 {
            self.reader.shared.epochs.unpin(&self.reader.slot);
        }
    }
}

impl Reader {
    fn new(shared: Arc<Shared>) -> Self {
        let slot = shared.epochs.register();
        Reader {
            shared,
            slot,
            pins: Cell::new(0),
        }
    }

    #[inline]
    fn pin(&self) -> Pin<'_> {
        let n = self.pins.get();
        if n == 0 {
            self.shared.epochs.pin(&self.slot);
        }
        debug_assert!(n < u32::MAX, "pins are released with their ProfileRef");
        self.pins.set(n + 1);
        Pin { reader: self }
    }

    /// The profile of `user_id`, if the replica has it. No lock, no allocation; the only write is
    /// to this reader's own epoch slot. Hold the result for one decision, not longer: while it
    /// lives, memory of profiles replaced since cannot be reclaimed.
    #[inline]
    pub fn get(&self, user_id: &str) -> Option<ProfileRef<'_>> {
        let key = user_id.as_bytes();
        self.get_hashed(self.shared.hot.hasher.hash(key), key)
    }

    /// Starts a lookup early: hashes `user_id` and starts loading its index slot's cache line
    /// and its home block's two lines (`home.rs`), then returns at once (it never waits for
    /// memory). Do other work, then finish with [`Reader::get_prefetched`], which finds the slot
    /// cached and does not hash the id again;
    /// optionally call [`Reader::prefetch_record`] in between, once the slot has had time to
    /// arrive, so that the record's lines are on their way too. No lock, no allocation; like
    /// `get`, the only write is to this reader's own epoch slot (pinned for the call only).
    #[inline]
    pub fn prefetch<'a>(&self, user_id: &'a str) -> Prefetch<'a> {
        let hash = self.shared.hot.hasher.hash(user_id.as_bytes());
        self.prefetch_home(hash);
        let _pin = self.pin();
        self.table().prefetch_slot(hash);
        Prefetch {
            id: user_id,
            hash,
            replica: self.replica(),
        }
    }

    /// The second step of an early lookup: reads the slot [`Reader::prefetch`] asked for (waiting
    /// for its line only if it has not arrived yet) and starts loading the lines of the record it
    /// points to, so that [`Reader::get_prefetched`] finds slot and record cached. Dereferences
    /// no record: safe whatever the writer does meanwhile. No lock, no allocation.
    #[inline]
    pub fn prefetch_record(&self, p: &Prefetch<'_>) {
        if p.replica != self.replica() {
            return;
        }
        let _pin = self.pin();
        self.table().prefetch_match(p.hash);
    }

    /// [`Reader::get`] of the id `p` was made for, reusing its hash. The result is the same as
    /// `get(p.user_id())` at this moment (the replica is read now, not at the prefetch).
    #[inline]
    pub fn get_prefetched(&self, p: Prefetch<'_>) -> Option<ProfileRef<'_>> {
        let key = p.id.as_bytes();
        let hash = if p.replica == self.replica() {
            debug_assert_eq!(p.hash, self.shared.hot.hasher.hash(key));
            p.hash
        } else {
            self.shared.hot.hasher.hash(key)
        };
        self.get_hashed(hash, key)
    }

    #[inline]
    fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<ProfileRef<'_>> {
        // The home block's lines start loading now, with the slot's: one round trip for both.
        self.prefetch_home(hash);
        let pin = self.pin();
        let view = self.table().find(hash, key)?;
        Some(ProfileRef { view, _pin: pin })
    }

    /// Starts loading the home block of `hash` ([`crate::home`]); needs no pin (a hint only).
    #[inline(always)]
    fn prefetch_home(&self, hash: u64) {
        let h = &self.shared.hot;
        prefetch_home(h.home_base, h.home_blocks, hash);
    }

    /// The current index. The caller must hold a pin for as long as it uses the borrow.
    #[inline(always)]
    fn table(&self) -> &Table {
        debug_assert!(self.pins.get() > 0, "pinned");
        // SAFETY: the table pointer is always valid; a table replaced by the writer is retired
        // under the epoch protocol and the caller is pinned, so it outlives the borrow.
        unsafe { &*self.shared.hot.table.load(Ordering::Acquire) }
    }

    /// Identifies this reader's replica (the address of its shared state).
    #[inline(always)]
    fn replica(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Calls `f` with the bytes of every record in the index, pinned once for the whole walk
    /// (the snapshot writer; never a bidding core). Records replaced meanwhile are not freed
    /// until it returns. Returns how many records it passed, or `f`'s first error.
    pub(crate) fn for_each_record<E>(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let _pin = self.pin();
        // SAFETY: as in `get`: the table outlives the pin.
        let table: &Table = unsafe { &*self.shared.hot.table.load(Ordering::Acquire) };
        let mut n = 0u64;
        for s in table.slots() {
            let v = s.load(Ordering::Acquire);
            if v == EMPTY || v == TOMB {
                continue;
            }
            // SAFETY: a linked slot's record was written before its Release store (Acquire
            // above) and is not freed while this reader is pinned.
            let rec = unsafe { record_at(v) };
            f(rec.as_bytes())?;
            n += 1;
        }
        Ok(n)
    }

    /// Whether the first full copy is done (for `/readyz`).
    pub fn is_loaded(&self) -> bool {
        self.shared.freshness.loaded.load(Ordering::Acquire)
    }

    /// Seconds since the replica was last known to hold everything Redis held (`f64::INFINITY`
    /// before the first load). Reads the wall clock (vDSO).
    pub fn lag_seconds(&self) -> f64 {
        self.lag_ms_at(now_ms())
            .map_or(f64::INFINITY, |ms| ms as f64 / 1000.0)
    }

    /// Milliseconds of staleness at wall-clock `now_ms`, or `None` before the first load.
    pub fn lag_ms_at(&self, now_ms: u64) -> Option<u64> {
        let f = &self.shared.freshness;
        if !f.loaded.load(Ordering::Acquire) {
            return None;
        }
        Some(now_ms.saturating_sub(f.synced_at_ms.load(Ordering::Acquire)))
    }

    /// Whether the replica is loaded and no staler than the configured maximum. When it is not,
    /// the appliance bids contextually only (no profile data).
    pub fn is_fresh(&self) -> bool {
        self.is_fresh_at(now_ms())
    }

    /// [`Reader::is_fresh`] at a given wall-clock time (milliseconds), for callers that already
    /// read the clock.
    pub fn is_fresh_at(&self, now_ms: u64) -> bool {
        self.lag_ms_at(now_ms)
            .is_some_and(|l| l <= self.shared.freshness.max_staleness_ms)
    }

    /// The replica's counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Readers currently registered (tests, metrics).
    pub fn reader_count(&self) -> usize {
        self.shared.epochs.readers()
    }

    /// The fence this replica's readers use ([`Tuning::reader_fence`], unless the kernel refused
    /// the asymmetric one).
    pub fn reader_fence(&self) -> ReaderFence {
        self.shared.epochs.reader_fence()
    }

    /// The longest distance from its home slot at which the writer placed any id in the current
    /// index: a lookup reads at most this many slots plus one (tests, metrics).
    pub fn index_max_probe(&self) -> u32 {
        let _pin = self.pin();
        // SAFETY: as in `get`: the table outlives the pin.
        let table: &Table = unsafe { &*self.shared.hot.table.load(Ordering::Acquire) };
        table.max_probe.load(Ordering::Acquire)
    }
}

/// One user's profile, borrowed from the replica for the length of a decision.
///
/// Implements [`ProfileView`] for the shards; dereferences to [`RecordView`] for everything else.
/// While it lives, its reader stays pinned (see [`Reader::get`]). Not `Send`.
pub struct ProfileRef<'a> {
    view: RecordView<'a>,
    _pin: Pin<'a>,
}

impl std::fmt::Debug for ProfileRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view.fmt(f)
    }
}

impl<'a> std::ops::Deref for ProfileRef<'a> {
    type Target = RecordView<'a>;
    fn deref(&self) -> &RecordView<'a> {
        &self.view
    }
}

impl ProfileView for ProfileRef<'_> {
    #[inline]
    fn segment_weight(&self, segment: u32) -> Option<u16> {
        self.view.segment_weight(segment)
    }
    #[inline]
    fn impressions_since(&self, campaign: u32, since_unix_s: u64) -> u32 {
        self.view.impressions_since(campaign, since_unix_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Gender;

    fn profile(id: &str, seg: u32) -> ProfileData {
        ProfileData {
            user_id: id.into(),
            segments: vec![(seg, 500), (seg + 1, 10)],
            gender: Gender::Male,
            ..Default::default()
        }
    }

    /// A store whose ids all hash alike (one probe chain, one home block), expecting `expected`.
    fn colliding_store(expected: usize) -> (Store, Reader) {
        let t = Tuning {
            hash: IdHash::Constant,
            ..Tuning::default()
        };
        Store::with_tuning(expected, 1000, t)
    }

    /// Profiles `c0..c{n}`, profile `ci` with segment `i`.
    fn upsert_colliding(store: &mut Store, n: u32) {
        for i in 0..n {
            store
                .upsert(&mut profile(&format!("c{i}"), i))
                .expect("valid");
        }
    }

    #[test]
    fn insert_replace_remove_and_grow() {
        let (mut store, reader) = Store::new(10, 1000);
        for i in 0..5000u32 {
            store
                .upsert(&mut profile(&format!("user-{i}"), i))
                .expect("valid");
        }
        assert_eq!(store.len(), 5000);
        assert!(
            reader.stats().index_bytes / 8 * 3 / 4 >= 5000,
            "load stays ≤ 3/4"
        );
        for i in 0..5000u32 {
            let p = reader.get(&format!("user-{i}")).expect("present");
            assert_eq!(p.segment_weight(i), Some(500));
            assert_eq!(p.user_id(), format!("user-{i}"));
        }
        assert!(reader.get("user-5000").is_none());
        store.upsert(&mut profile("user-7", 99)).expect("valid");
        assert_eq!(store.len(), 5000);
        assert_eq!(
            reader.get("user-7").expect("present").segment_weight(99),
            Some(500)
        );
        assert!(store.remove("user-7"));
        assert!(!store.remove("user-7"));
        assert!(reader.get("user-7").is_none());
        assert_eq!(store.len(), 4999);
        store.collect();
        let s = reader.stats();
        assert_eq!(s.profiles, 4999);
        assert_eq!(s.retired_pending, 0, "no reader pinned: everything freed");
        assert_eq!(s.updates_applied, 5001);
        assert_eq!(s.deletes_applied, 1);
    }

    #[test]
    fn probe_lengths_stay_short_for_structured_ids_and_ids_aimed_at_another_seed() {
        // Structured ids (sequential, one byte apart) in a table at load ≤ 5/8.
        let (mut store, reader) = Store::new(100_000, 1000);
        for i in 0..100_000u32 {
            store
                .upsert(&mut profile(&format!("user-{i:08}"), i))
                .expect("valid");
        }
        let structured = reader.index_max_probe();
        assert!(structured <= 64, "max probe {structured}");

        // An attacker who knew replica A's seed picks 300 ids with one home slot in A's index...
        let (mut a, ra) = Store::new(1000, 1000);
        let mask = a.table().mask as u64;
        let hostile: Vec<String> = (0u64..)
            .map(|i| format!("{i:036}"))
            .filter(|id| a.shared.hot.hasher.hash(id.as_bytes()) & mask == 0)
            .take(300)
            .collect();
        // ... another replica (another random seed) spreads them like any ids ...
        let (mut b, rb) = Store::new(1000, 1000);
        for id in &hostile {
            b.upsert(&mut profile(id, 1)).expect("valid");
        }
        assert!(
            rb.index_max_probe() <= 24,
            "max probe {}",
            rb.index_max_probe()
        );
        // ... while in A they pile up, and even then a lookup is bounded by the longest probe
        // the writer made (an absent id stops there, found ids are all found).
        for id in &hostile {
            a.upsert(&mut profile(id, 1)).expect("valid");
        }
        assert!(
            ra.index_max_probe() >= 299,
            "aimed ids collide under their seed"
        );
        assert!(hostile.iter().all(|id| ra.get(id).is_some()));
        assert!(ra.get(&format!("{:036}", u64::MAX)).is_none());
    }

    #[test]
    fn the_session_2_tuning_reads_the_same_profiles() {
        let (mut store, reader) = Store::with_tuning(1000, 1000, Tuning::SESSION_2);
        assert_eq!(reader.reader_fence(), ReaderFence::Full);
        for i in 0..3000u32 {
            store
                .upsert(&mut profile(&format!("u{i}"), i))
                .expect("valid");
        }
        for i in 0..3000u32 {
            assert_eq!(
                reader
                    .get(&format!("u{i}"))
                    .expect("present")
                    .segment_weight(i),
                Some(500)
            );
        }
        // 8-byte grain: 2 segments and a 2–5 byte id take 10 + k + 6 + 4 = 22..25 bytes → 24 or 32.
        assert!(reader.stats().record_bytes <= 3000 * 32);
        let no_home = Tuning {
            home_blocks: false,
            ..Tuning::default()
        };
        let (mut lined, r2) = Store::with_tuning(1000, 1000, no_home);
        lined.upsert(&mut profile("u1", 1)).expect("valid");
        assert_eq!(
            r2.get("u1").expect("present").as_bytes().len(),
            10 + 2 + 6 + 4
        );
        assert_eq!(r2.stats().record_bytes, 64, "line-aligned block");
        // The default puts it in its home block: two lines, whatever the record's length.
        let (mut homed, r3) = Store::new(1000, 1000);
        homed.upsert(&mut profile("u1", 1)).expect("valid");
        assert_eq!(r3.stats().record_bytes, 128, "home block");
    }

    #[test]
    fn ids_with_the_same_64_bit_hash_are_told_apart_by_their_bytes() {
        // Every id hashes alike: one probe chain, every tag matches, so only the id compare tells
        // them apart. Ids differ in their last byte, their first, their length (prefixes).
        let (mut store, reader) = colliding_store(1000);
        let mut ids: Vec<String> = (0..100u32)
            .map(|i| format!("0b8f2c1e-7d9a-4c61-9a53-2f1e0c9b7a{i:02}"))
            .collect();
        ids.extend((1..=40).map(|n| "x".repeat(n)));
        ids.extend((0..20u8).map(|b| format!("{}-same-tail", (b'a' + b) as char)));
        for (i, id) in ids.iter().enumerate() {
            store.upsert(&mut profile(id, i as u32)).expect("valid");
        }
        assert_eq!(
            reader.index_max_probe() as usize,
            ids.len() - 1,
            "one chain"
        );
        for (i, id) in ids.iter().enumerate() {
            let p = reader.get(id).unwrap_or_else(|| panic!("{id} present"));
            assert_eq!(p.user_id(), id);
            assert_eq!(p.segment_weight(i as u32), Some(500), "{id}");
        }
        for absent in [
            "x".repeat(41),
            "0b8f2c1e-7d9a-4c61-9a53-2f1e0c9b7a100".into(),
            "".into(),
        ] {
            assert!(reader.get(&absent).is_none(), "{absent:?}");
        }
        // Replace and remove inside the chain: the others stay found.
        store.upsert(&mut profile(&ids[50], 9000)).expect("valid");
        assert!(store.remove(&ids[10]));
        assert!(!store.remove("x".repeat(41).as_str()));
        assert_eq!(store.len(), ids.len() - 1);
        for (i, id) in ids.iter().enumerate() {
            let want = match i {
                10 => None,
                50 => Some(9000),
                _ => Some(i as u32),
            };
            assert_eq!(
                reader.get(id).map(|p| p.segment(0).0),
                want,
                "{id} after replace/remove"
            );
        }
    }

    #[test]
    fn slots_carry_the_lines_to_prefetch_and_long_records_are_counted() {
        let (mut store, reader) = Store::new(100, 1000);
        let uuid = "0b8f2c1e-7d9a-4c61-9a53-2f1e0c9b7a10";
        let with = |n: u32, spread: u32| ProfileData {
            user_id: uuid.into(),
            segments: (0..n).map(|i| (i * spread, 100)).collect(),
            ..Default::default()
        };
        let extra_of = |store: &Store| {
            let t = store.table();
            let v = t
                .slots()
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .find(|&v| v != EMPTY && v != TOMB)
                .expect("one slot used");
            (v & LINES_MASK, v & PTR_MASK & !LINES_MASK)
        };
        // 20 segments and a UUID: exactly 2 lines from a line-aligned block → 1 extra line.
        store.upsert(&mut with(20, 7)).expect("valid");
        let (extra, addr) = extra_of(&store);
        assert_eq!((extra, addr % 64), (1, 0));
        assert_eq!(reader.stats().long_records, 0);
        // A frequency bucket follows the lookup part: still 1 extra line to prefetch.
        let mut p = with(20, 7);
        p.freq.push(crate::record::FreqBucket {
            campaign: 1,
            hour: 2,
            count: 3,
        });
        store.upsert(&mut p).expect("valid");
        assert_eq!(extra_of(&store).0, 1);
        assert_eq!(reader.stats().long_records, 0);
        // 21 segments, or 20 spread over more than a u16 (wide ids): 3 lines, counted.
        store.upsert(&mut with(21, 7)).expect("valid");
        assert_eq!(extra_of(&store).0, 2);
        assert_eq!(reader.stats().long_records, 1);
        store.upsert(&mut with(20, 10_000)).expect("valid");
        assert_eq!(extra_of(&store).0, 2);
        assert_eq!(reader.stats().long_records, 1, "replaced, not added");
        assert_eq!(
            reader
                .get(uuid)
                .expect("present")
                .segment_weight(19 * 10_000),
            Some(100)
        );
        // The largest profile: capped hint, read whole.
        store
            .upsert(&mut ProfileData {
                user_id: uuid.into(),
                segments: (0..255).map(|i| (i << 24 | 1, 7)).collect(),
                ..Default::default()
            })
            .expect("valid");
        assert_eq!(extra_of(&store).0, LINES_MASK);
        assert_eq!(
            reader
                .get(uuid)
                .expect("present")
                .segment_weight(254 << 24 | 1),
            Some(7)
        );
        store.upsert(&mut with(20, 7)).expect("valid");
        assert_eq!(reader.stats().long_records, 0, "back to two lines");
        store.upsert(&mut with(30, 7)).expect("valid");
        assert!(store.remove(uuid));
        assert_eq!(reader.stats().long_records, 0, "removed");
    }

    #[test]
    fn churn_through_tombstones_keeps_the_index_bounded() {
        let (mut store, reader) = Store::new(100, 1000);
        let slots0 = reader.stats().index_bytes;
        for round in 0..50u32 {
            for i in 0..100u32 {
                store
                    .upsert(&mut profile(&format!("r{round}-{i}"), i))
                    .expect("valid");
            }
            for i in 0..100u32 {
                assert!(store.remove(&format!("r{round}-{i}")));
            }
            store.collect();
        }
        assert!(store.is_empty());
        assert_eq!(
            reader.stats().index_bytes,
            slots0,
            "rebuilds drop tombstones, no growth"
        );
        assert_eq!(reader.stats().record_bytes, 0);
    }

    /// The home block address `id` hashes to in `store`'s replica.
    fn home_of(store: &Store, id: &str) -> usize {
        let h = &store.shared.hot;
        h.home_base + home_index(h.hasher.hash(id.as_bytes()), h.home_blocks) as usize * HOME_BLOCK
    }

    /// Where the record of `id` lies.
    fn addr_of(reader: &Reader, id: &str) -> usize {
        reader.get(id).expect("present").as_bytes().as_ptr() as usize
    }

    #[test]
    fn records_live_in_their_home_block_when_it_is_free_and_are_found_either_way() {
        let (mut store, reader) = Store::new(1000, 1000);
        let ids: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            store.upsert(&mut profile(id, i as u32)).expect("valid");
        }
        store.collect();
        let st = reader.stats();
        assert_eq!(st.home_blocks, 1000, "one home block per expected profile");
        let mut at_home = 0u64;
        for (i, id) in ids.iter().enumerate() {
            let p = reader.get(id).expect("present");
            assert_eq!(p.segment_weight(i as u32), Some(500), "{id}");
            let a = p.as_bytes().as_ptr() as usize;
            if a == home_of(&store, id) {
                at_home += 1;
            } else {
                assert!(
                    !store
                        .arena
                        .is_home(NonNull::new(a as *mut u8).expect("non-null")),
                    "{id}: in another profile's home block"
                );
            }
        }
        assert_eq!(
            at_home, st.home_records,
            "the counter says how many are home"
        );
        // Ids hash to blocks at random: about 1 − 1/e of a full replica finds its block free.
        assert!((560..=700).contains(&at_home), "{at_home} of 1000 at home");
        assert_eq!(
            st.record_bytes,
            at_home * 128 + (1000 - at_home) * 64,
            "home blocks count 128 bytes, these short records 64 elsewhere"
        );
    }

    #[test]
    fn an_updated_profile_leaves_home_and_comes_back_once_the_old_version_is_reclaimed() {
        let (mut store, reader) = Store::new(16, 1000);
        store.upsert(&mut profile("u", 1)).expect("valid");
        let home = home_of(&store, "u");
        assert_eq!(addr_of(&reader, "u"), home);
        // The new version cannot overwrite the old one at home (a reader may be reading it).
        let held = reader.get("u").expect("present");
        store.upsert(&mut profile("u", 2)).expect("valid");
        assert_ne!(addr_of(&reader, "u"), home);
        store.collect();
        assert_ne!(addr_of(&reader, "u"), home, "old version still held");
        assert_eq!(held.segment_weight(1), Some(500), "and intact");
        drop(held);
        store.collect();
        assert_eq!(addr_of(&reader, "u"), home, "moved back home");
        assert_eq!(
            reader.get("u").expect("present").segment_weight(2),
            Some(500)
        );
        store.collect();
        let st = reader.stats();
        assert_eq!((st.retired_pending, st.home_records), (0, 1));
        assert_eq!(st.record_bytes, 128, "one home block, the arena copy freed");
        // Removed: the block is free for the next profile that hashes to it.
        assert!(store.remove("u"));
        store.collect();
        assert_eq!(reader.stats().home_records, 0);
        assert!(reader.get("u").is_none());
        store.upsert(&mut profile("u", 3)).expect("valid");
        assert_eq!(addr_of(&reader, "u"), home);
    }

    #[test]
    fn home_records_counts_linked_records_not_blocks_held_by_retired_versions() {
        let (mut store, reader) = Store::new(16, 1000);
        // An id whose home block is not u's (the hash seed differs per run).
        let v = (0..)
            .map(|i| format!("v{i}"))
            .find(|id| home_of(&store, id) != home_of(&store, "u"))
            .expect("16 blocks");
        store.upsert(&mut profile("u", 1)).expect("valid");
        store.upsert(&mut profile(&v, 1)).expect("valid");
        assert_eq!(addr_of(&reader, "u"), home_of(&store, "u"));
        assert_eq!(addr_of(&reader, &v), home_of(&store, &v));
        store.collect();
        assert_eq!(reader.stats().home_records, 2);
        // A reader holds both old versions: their home blocks stay taken, but "u" now lives in
        // an arena block and v is gone, so neither is home.
        let held = (reader.get("u").expect("u"), reader.get(&v).expect("v"));
        store.upsert(&mut profile("u", 2)).expect("valid");
        assert!(store.remove(&v));
        store.collect();
        assert_ne!(addr_of(&reader, "u"), home_of(&store, "u"));
        assert!(reader.get(&v).is_none());
        assert_eq!(
            reader.stats().home_records,
            0,
            "no linked record is at home"
        );
        drop(held);
        store.collect();
        assert_eq!(addr_of(&reader, "u"), home_of(&store, "u"));
        assert_eq!(reader.stats().home_records, 1, "u back home");
    }

    #[test]
    fn a_held_home_record_survives_delete_reinsert_and_rebuild_around_its_block() {
        // Every id hashes alike: all share c0's home block.
        let (mut store, reader) = colliding_store(100);
        store.upsert(&mut profile("c0", 1)).expect("valid");
        let home = home_of(&store, "c0");
        let held = reader.get("c0").expect("present");
        assert_eq!(held.as_bytes().as_ptr() as usize, home);
        let before = held.as_bytes().to_vec();
        // Removed, another id of the same block inserted, the same id inserted again, the index
        // rebuilt twice, collections all along: none may take the block while it is held.
        assert!(store.remove("c0"));
        store.upsert(&mut profile("c1", 2)).expect("valid");
        store.upsert(&mut profile("c0", 3)).expect("valid");
        let index0 = reader.stats().index_bytes;
        for i in 0..1500u32 {
            store
                .upsert(&mut profile(&format!("g{i}"), i))
                .expect("valid");
            if i % 100 == 0 {
                store.collect();
            }
        }
        store.collect();
        assert!(reader.stats().index_bytes > index0, "the index was rebuilt");
        assert_ne!(addr_of(&reader, "c0"), home);
        assert_ne!(addr_of(&reader, "c1"), home);
        assert_eq!(held.as_bytes(), &before[..], "the held version is intact");
        assert_eq!(held.segment_weight(1), Some(500));
        drop(held);
        store.collect();
        // Reclaimed: the id it held (c0, re-inserted) moves home; c1 stays in the arena.
        assert_eq!(addr_of(&reader, "c0"), home);
        assert_eq!(
            reader.get("c0").expect("present").segment_weight(3),
            Some(500)
        );
        assert_eq!(
            reader.get("c1").expect("present").segment_weight(2),
            Some(500)
        );
        assert_ne!(addr_of(&reader, "c1"), home);
    }

    #[test]
    fn a_reader_outlives_the_store_with_its_home_records() {
        let (mut store, reader) = Store::new(100, 1000);
        for i in 0..100u32 {
            store
                .upsert(&mut profile(&format!("u{i}"), i))
                .expect("valid");
        }
        store.collect();
        let (at_home, away): (Vec<String>, Vec<String>) = (0..100u32)
            .map(|i| format!("u{i}"))
            .partition(|id| addr_of(&reader, id) == home_of(&store, id));
        assert!(!at_home.is_empty() && !away.is_empty());
        // Old versions held, one in its home block and one in an arena block, both replaced.
        let replaced = [at_home[0].clone(), away[0].clone()];
        let held = replaced
            .each_ref()
            .map(|id| reader.get(id).expect("present"));
        let before = held.each_ref().map(|p| p.as_bytes().to_vec());
        for id in &replaced {
            store.upsert(&mut profile(id, 1000)).expect("valid");
        }
        drop(store);
        // The dropped writer freed nothing a reader can reach: the held old versions, and every
        // profile (at home or not) through the index.
        for (p, b) in held.iter().zip(&before) {
            assert_eq!(p.as_bytes(), &b[..]);
        }
        drop(held);
        for i in 0..100u32 {
            let id = format!("u{i}");
            let want = if replaced.contains(&id) { 1000 } else { i };
            assert_eq!(
                reader.get(&id).expect("present").segment_weight(want),
                Some(500),
                "{id}"
            );
        }
    }

    #[test]
    fn profiles_sharing_a_home_block_and_long_records_live_in_the_arena() {
        // Every id hashes alike: one home block for all; the first takes it.
        let (mut store, reader) = colliding_store(100);
        upsert_colliding(&mut store, 50);
        let home = home_of(&store, "c0");
        assert_eq!(addr_of(&reader, "c0"), home);
        for i in 1..50u32 {
            assert_ne!(addr_of(&reader, &format!("c{i}")), home);
        }
        // The home profile removed: once reclaimed the block is free (no profile of its id is
        // left to move in), and the next insert takes it; the others are found all along.
        assert!(store.remove("c0"));
        store.collect();
        store.collect();
        assert_eq!(reader.stats().home_records, 0);
        store.upsert(&mut profile("new", 7)).expect("valid");
        assert_eq!(addr_of(&reader, "new"), home);
        for i in 1..50u32 {
            let id = format!("c{i}");
            assert_eq!(
                reader.get(&id).expect("present").segment_weight(i),
                Some(500)
            );
        }
        // A record longer than a home block never goes home.
        let (mut s2, r2) = Store::new(16, 1000);
        let mut long = profile("long", 1);
        long.segments = (0..40).map(|i| (i * 100_000, 1)).collect();
        s2.upsert(&mut long).expect("valid");
        assert!(r2.get("long").expect("present").as_bytes().len() > HOME_BLOCK);
        assert_ne!(addr_of(&r2, "long"), home_of(&s2, "long"));
        s2.collect();
        assert_eq!(r2.stats().home_records, 0);
    }

    #[test]
    fn a_held_profile_survives_its_replacement_until_released() {
        let (mut store, reader) = Store::new(10, 1000);
        store.upsert(&mut profile("u", 1)).expect("valid");
        let held = reader.get("u").expect("present");
        store.upsert(&mut profile("u", 2)).expect("valid");
        store.collect();
        assert_eq!(reader.stats().retired_pending, 1, "held record not freed");
        // The old version is still intact while held; a new lookup sees the new one.
        assert_eq!(held.segment_weight(1), Some(500));
        assert_eq!(
            reader.get("u").expect("present").segment_weight(2),
            Some(500)
        );
        drop(held);
        store.collect();
        // The old version's home block was freed and the profile moved back into it: the block
        // the new version took meanwhile is retired in turn, and freed by the next collect.
        assert_eq!(reader.stats().retired_pending, 1, "the copy left behind");
        assert_eq!(reader.stats().home_records, 1, "back home");
        store.collect();
        assert_eq!(reader.stats().retired_pending, 0);
        assert_eq!(
            reader.get("u").expect("present").segment_weight(2),
            Some(500)
        );
    }

    #[test]
    fn sweep_removes_profiles_of_older_generations() {
        let (mut store, reader) = Store::new(10, 1000);
        store.upsert(&mut profile("a", 1)).expect("valid");
        store.upsert(&mut profile("b", 1)).expect("valid");
        let g = store.next_generation();
        store.upsert(&mut profile("b", 2)).expect("valid");
        assert_eq!(store.sweep(g), 1);
        assert!(reader.get("a").is_none());
        assert!(reader.get("b").is_some());
    }

    #[test]
    fn freshness_follows_the_sync_mark() {
        let (store, reader) = Store::new(10, 5_000);
        assert!(!reader.is_loaded());
        assert!(!reader.is_fresh_at(1_000));
        assert_eq!(reader.lag_seconds(), f64::INFINITY);
        store.mark_synced(10_000);
        assert!(reader.is_loaded());
        assert_eq!(reader.lag_ms_at(12_000), Some(2_000));
        assert!(reader.is_fresh_at(15_000));
        assert!(!reader.is_fresh_at(15_001));
        let r2 = reader.clone();
        assert_eq!(reader.reader_count(), 2);
        drop(r2);
        assert_eq!(reader.reader_count(), 1);
    }

    /// What a lookup returns, comparable: (id, first segment) or None.
    fn seen(p: Option<ProfileRef<'_>>) -> Option<(String, (u32, u16))> {
        p.map(|p| (p.user_id().to_owned(), p.segment(0)))
    }

    #[test]
    fn a_prefetched_lookup_finds_what_get_finds() {
        let (mut store, reader) = Store::new(5000, 1000);
        for i in 0..5000u32 {
            store
                .upsert(&mut profile(&format!("user-{i}"), i))
                .expect("valid");
        }
        let ids: Vec<String> = (0..5000u32)
            .map(|i| format!("user-{i}"))
            .chain((0..2000u32).map(|i| format!("absent-{i}")))
            .chain(["".to_owned(), "x".repeat(255)])
            .collect();
        let mut found = 0;
        for id in &ids {
            let want = seen(reader.get(id));
            // Slot only, then the lookup.
            let p = reader.prefetch(id);
            assert_eq!(p.user_id(), id);
            assert_eq!(seen(reader.get_prefetched(p)), want, "{id}");
            // Both steps, then the lookup; the token is Copy and can be used again.
            reader.prefetch_record(&p);
            assert_eq!(seen(reader.get_prefetched(p)), want, "{id}");
            assert_eq!(seen(reader.get_prefetched(p)), want, "{id} again");
            found += usize::from(want.is_some());
        }
        assert_eq!(found, 5000, "every stored id found, no absent one");
        // Prefetching pins only for the call: nothing is held back (two collects: the second
        // frees the block the profile left when the first moved it back home).
        store.upsert(&mut profile("user-1", 77)).expect("valid");
        store.collect();
        store.collect();
        assert_eq!(reader.stats().retired_pending, 0);
    }

    #[test]
    fn a_prefetched_lookup_sees_changes_made_after_the_prefetch() {
        let (mut store, reader) = Store::new(16, 1000);
        store.upsert(&mut profile("a", 1)).expect("valid");
        store.upsert(&mut profile("b", 1)).expect("valid");
        let pa = reader.prefetch("a");
        let pb = reader.prefetch("b");
        let pc = reader.prefetch("c");
        reader.prefetch_record(&pa);
        reader.prefetch_record(&pc);
        // Replaced, removed and inserted between the prefetch and the lookup...
        store.upsert(&mut profile("a", 2)).expect("valid");
        assert!(store.remove("b"));
        store.upsert(&mut profile("c", 3)).expect("valid");
        // ... and the index rebuilt (grown) and the old table and records freed.
        for i in 0..5000u32 {
            store
                .upsert(&mut profile(&format!("more-{i}"), i))
                .expect("valid");
        }
        store.collect();
        store.collect();
        assert_eq!(reader.stats().retired_pending, 0, "old table freed");
        reader.prefetch_record(&pb);
        assert_eq!(seen(reader.get_prefetched(pa)), seen(reader.get("a")));
        assert_eq!(reader.get_prefetched(pa).expect("a").segment(0).0, 2);
        assert!(
            reader.get_prefetched(pb).is_none(),
            "removed after the prefetch"
        );
        assert_eq!(reader.get_prefetched(pc).expect("c").segment(0).0, 3);
    }

    #[test]
    fn a_token_from_another_replica_is_hashed_again() {
        let (mut s1, r1) = Store::new(16, 1000);
        let (mut s2, r2) = Store::new(16, 1000);
        for i in 0..100u32 {
            s1.upsert(&mut profile(&format!("u{i}"), i)).expect("valid");
            s2.upsert(&mut profile(&format!("u{i}"), i + 1000))
                .expect("valid");
        }
        for i in 0..100u32 {
            let id = format!("u{i}");
            let p1 = r1.prefetch(&id);
            r2.prefetch_record(&p1); // another replica's token: a no-op, not a wrong prefetch
            assert_eq!(
                r2.get_prefetched(p1).expect("present").segment(0).0,
                i + 1000,
                "r2 answers for its own replica"
            );
            assert_eq!(r1.get_prefetched(p1).expect("present").segment(0).0, i);
        }
    }

    #[test]
    fn prefetching_along_one_long_probe_chain() {
        // Every id hashes alike (one chain, every tag matches): the record prefetched is the
        // chain's first, the lookup still compares ids and finds the right one or none.
        let (mut store, reader) = colliding_store(1000);
        upsert_colliding(&mut store, 64);
        assert!(store.remove("c5"));
        for i in 0..70u32 {
            let id = format!("c{i}");
            let p = reader.prefetch(&id);
            reader.prefetch_record(&p);
            let want = (i < 64 && i != 5).then_some(i);
            assert_eq!(reader.get_prefetched(p).map(|p| p.segment(0).0), want);
        }
    }

    #[test]
    fn prefetched_lookups_on_other_threads_stay_consistent_under_churn() {
        let (mut store, reader) = Store::new(1000, 1000);
        for i in 0..1000u32 {
            store
                .upsert(&mut profile(&format!("k{i}"), i * 10))
                .expect("valid");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let r = reader.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let ids: Vec<String> = (0..1000u32).map(|i| format!("k{i}")).collect();
                    let (mut seen, mut missing) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        for id in &ids {
                            let p = r.prefetch(id);
                            if t == 0 {
                                r.prefetch_record(&p);
                            }
                            std::hint::black_box(id.len());
                            match r.get_prefetched(p) {
                                Some(p) => {
                                    let (s0, w0) = p.segment(0);
                                    assert_eq!(p.user_id(), id);
                                    assert_eq!(w0, 500);
                                    assert_eq!(p.segment_weight(s0 + 1), Some(10));
                                    assert_eq!(s0 % 10, 0);
                                    seen += 1;
                                }
                                None => missing += 1,
                            }
                        }
                    }
                    (seen, missing)
                })
            })
            .collect();
        for round in 1..200u32 {
            for i in 0..1000u32 {
                store
                    .upsert(&mut profile(&format!("k{i}"), (i + round) * 10))
                    .expect("valid");
            }
            // Grow the index now and then: a rebuild between a prefetch and its lookup.
            if round % 50 == 0 {
                for i in 0..2000u32 {
                    store
                        .upsert(&mut profile(&format!("g{round}-{i}"), i * 10))
                        .expect("valid");
                }
            }
            store.collect();
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let (seen, missing) = t.join().expect("reader thread");
            assert!(seen > 0);
            assert_eq!(missing, 0, "every id stays present while it is replaced");
        }
    }

    #[test]
    fn readers_on_other_threads_see_consistent_records_under_churn() {
        let (mut store, reader) = Store::new(1000, 1000);
        for i in 0..1000u32 {
            store
                .upsert(&mut profile(&format!("k{i}"), i * 10))
                .expect("valid");
        }
        store.collect();
        let home0 = reader.stats().home_records;
        assert!(home0 > 500, "{home0} of 1000 at home");
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let r = reader.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..1000u32 {
                            // Never absent (moved out of and back into its home block, never
                            // unlinked), and whatever version we see is whole: its segments agree.
                            let p = r.get(&format!("k{i}")).expect("always present");
                            let (s0, w0) = p.segment(0);
                            assert_eq!(w0, 500);
                            assert_eq!(p.segment_weight(s0 + 1), Some(10));
                            assert_eq!(s0 % 10, 0);
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        for round in 1..200u32 {
            for i in 0..1000u32 {
                store
                    .upsert(&mut profile(&format!("k{i}"), (i + round) * 10))
                    .expect("valid");
            }
            store.collect();
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            assert!(t.join().expect("reader thread") > 0);
        }
        // Every profile left home at each update and came back once the old version was freed.
        store.collect();
        store.collect();
        let st = reader.stats();
        assert_eq!(st.home_records, home0, "back home after the churn");
        assert_eq!(st.retired_pending, 0);
        assert_eq!(st.record_bytes, home0 * 128 + (1000 - home0) * 64);
    }
}

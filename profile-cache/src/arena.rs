//! Memory for records and the index: large anonymous mappings on huge pages — reserved ones
//! (`MAP_HUGETLB`) when the node has a pool of them, else advised to use transparent huge pages —
//! and a size-class allocator of record blocks inside them.
//!
//! Why: a lookup touches one index slot and one record at random addresses. With 4 KiB pages each
//! of those is also a TLB miss, and in a virtual machine a page walk costs several memory
//! accesses: measured here, a lookup over 1M profiles took 1.4 µs with records from `malloc`
//! and 0.28 µs with the same records on huge pages (`bench/RESULTS.md`, "Profile cache").
//!
//! Huge pages need 2 MiB-aligned, 2 MiB-sized extents: every mapping here is rounded up to a
//! multiple of 2 MiB and placed at a 2 MiB boundary (mapped 2 MiB larger, the unaligned head and
//! tail unmapped), so the kernel can back all of it with huge pages, not only its aligned middle.
//! Whether it does depends on free contiguous memory at fault time (`/proc/PID/smaps`
//! `AnonHugePages`; `bench/RESULTS.md` gives what this machine granted). Guaranteed huge pages
//! come from the pool an operator reserves with `vm.nr_hugepages`: each mapping of whole 2 MiB
//! pages first asks for `MAP_HUGETLB | MAP_HUGE_2MB` (reserved at `mmap` time for a private
//! mapping, so no later fault can fail), and when the pool has too few free pages — or none is
//! configured, the default — falls back to the THP path above. Start-up never fails for want of
//! huge pages; [`Region::is_hugetlb`] says which path a mapping took.
//!
//! Blocks are aligned to the arena's grain: 64 bytes (a cache line) by default, so a record of
//! `n` bytes spans the fewest lines it can (`ceil(n / 64)`: a 168-byte record 3 lines, not 3 or
//! 4), at the price of rounding each block up to 64 bytes (168 → 192).
//!
//! The arena also holds the replica's home blocks ([`crate::home`]): blocks placed by the id's
//! hash, which a record takes when it fits and its block is free ([`Arena::alloc_for`]).
//!
//! Owns the mappings. The [`Arena`] is used by the writer only (the replicator thread): readers
//! read record bytes inside it but never allocate or free. A block is returned to its size class
//! only after the epoch protocol showed no reader can reach it; the free list is threaded through
//! the freed blocks themselves. Mappings are unmapped when the arena is dropped, which happens
//! only after the last reader is gone. Must never: hand out a block twice, or unmap memory a
//! reader can still reach.

use std::ptr::NonNull;

use crate::home::{HOME_BLOCK, Homes};

/// Size of one record chunk (a multiple of the 2 MiB huge page).
const CHUNK: usize = 32 << 20;
/// The huge page size mappings are aligned to.
const HUGE: usize = 2 << 20;
/// Grain of record blocks: a cache line (block sizes are multiples of it, blocks aligned to it).
pub(crate) const LINE_GRAIN: usize = 64;
/// The smallest grain (before session 3): 8-byte aligned blocks, no padding to lines.
pub(crate) const MIN_GRAIN: usize = 8;

/// An anonymous private mapping of zeroed memory, advised to use huge pages.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// Backed by reserved huge pages (`MAP_HUGETLB`), not transparent ones.
    hugetlb: bool,
}

// SAFETY: the region is plain memory owned by this value; sharing or moving it between threads is
// governed by the owners' own protocols (writer-only mutation, epoch-protected reads).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Maps at least `len` bytes of zeroed memory: mappings of 1 MiB or more are rounded up to a
    /// multiple of 2 MiB, start on a 2 MiB boundary and use reserved huge pages if the pool has
    /// enough free ones. Aborts like the global allocator if the kernel refuses any mapping.
    pub(crate) fn new(len: usize) -> Region {
        Self::with_hugetlb(len, true)
    }

    /// [`Region::new`], asking for reserved huge pages only if `try_hugetlb`.
    pub(crate) fn with_hugetlb(len: usize, try_hugetlb: bool) -> Region {
        let len = len.max(1);
        let (len, align) = if len >= HUGE / 2 {
            (len.div_ceil(HUGE) * HUGE, HUGE)
        } else {
            (len, 1)
        };
        if try_hugetlb
            && align == HUGE
            && let Some(r) = Self::hugetlb(len)
        {
            return r;
        }
        let map_len = len + if align > 1 { align } else { 0 };
        // SAFETY: anonymous private mapping with no address hint: no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let layout = std::alloc::Layout::from_size_align(map_len, 4096)
                .expect("a mapping length is a valid layout size");
            std::alloc::handle_alloc_error(layout);
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(align);
        let head = aligned - start;
        let tail = map_len - head - len;
        // SAFETY: unmapping the unaligned head and tail of our own fresh mapping (page-aligned:
        // `start`, `aligned` and `len` are multiples of 4 KiB); nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        let p = aligned as *mut libc::c_void;
        #[cfg(target_os = "linux")]
        // SAFETY: advising our own fresh mapping; failure (THP disabled) is harmless, ignored.
        unsafe {
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
        }
        let ptr = NonNull::new(p.cast::<u8>()).expect("mmap success is never null");
        Region {
            ptr,
            len,
            hugetlb: false,
        }
    }

    /// `len` bytes (a multiple of 2 MiB) of reserved 2 MiB pages, or `None` if the pool cannot
    /// supply them (the kernel reserves them for the whole mapping at `mmap`, or refuses).
    #[cfg(target_os = "linux")]
    fn hugetlb(len: usize) -> Option<Region> {
        debug_assert_eq!(len % HUGE, 0);
        // SAFETY: anonymous private mapping with no address hint: no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        debug_assert_eq!(
            p as usize % HUGE,
            0,
            "hugetlb mappings are huge-page aligned"
        );
        Some(Region {
            ptr: NonNull::new(p.cast::<u8>())?,
            len,
            hugetlb: true,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn hugetlb(_len: usize) -> Option<Region> {
        None
    }

    /// Whether the mapping is on reserved huge pages (`MAP_HUGETLB`).
    pub(crate) fn is_hugetlb(&self) -> bool {
        self.hugetlb
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value created, once; owners guarantee no
        // reference into it outlives it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Size-class allocator of record blocks in huge-page chunks. Writer only.
#[derive(Debug)]
pub(crate) struct Arena {
    /// Block alignment and size granularity (a power of two ≥ 8).
    grain: usize,
    chunks: Vec<Region>,
    /// Next free byte of the newest chunk, and its end.
    bump: usize,
    end: usize,
    /// Head of each size class's free list (class = size / GRAIN), threaded through the blocks.
    free: Vec<Option<NonNull<u8>>>,
    /// Bytes sitting in free lists.
    free_bytes: usize,
    /// Blocks placed by hash (none unless [`Arena::with_homes`]).
    homes: Homes,
}

// SAFETY: the arena owns its chunks; the free-list pointers point into them.
unsafe impl Send for Arena {}

impl Default for Arena {
    fn default() -> Self {
        Arena::new(LINE_GRAIN)
    }
}

impl Arena {
    /// An empty arena whose blocks are aligned to `grain` bytes (a power of two, 8 to 4096).
    pub(crate) fn new(grain: usize) -> Self {
        Self::with_homes(grain, 0)
    }

    /// [`Arena::new`] with `home_blocks` home blocks ([`crate::home`]), mapped at once.
    pub(crate) fn with_homes(grain: usize, home_blocks: usize) -> Self {
        assert!(
            grain.is_power_of_two() && (MIN_GRAIN..=4096).contains(&grain),
            "record grain {grain} must be a power of two from 8 to 4096"
        );
        Arena {
            grain,
            chunks: Vec::new(),
            bump: 0,
            end: 0,
            free: Vec::new(),
            free_bytes: 0,
            homes: Homes::new(home_blocks),
        }
    }

    /// Where the home blocks are: the first one's address (0: none) and their number.
    pub(crate) fn home_layout(&self) -> (usize, u64) {
        self.homes.layout()
    }

    /// Home blocks taken: by linked records and by replaced or removed ones not yet reclaimed.
    pub(crate) fn home_blocks_in_use(&self) -> usize {
        self.homes.in_use()
    }

    /// A block for the record of `len` bytes whose id hashes to `hash`: its home block if the
    /// record fits and the block is free, else an ordinary block ([`Arena::alloc`]).
    pub(crate) fn alloc_for(&mut self, hash: u64, len: usize) -> NonNull<u8> {
        match self.homes.take(hash, len) {
            Some(p) => p,
            None => self.alloc(len),
        }
    }

    /// The home block of `hash` if a record of `len` bytes fits it and it is free (no fallback).
    pub(crate) fn take_home(&mut self, hash: u64, len: usize) -> Option<NonNull<u8>> {
        self.homes.take(hash, len)
    }

    /// Bytes the block at `p` holding a record of `len` bytes occupies.
    pub(crate) fn block_size_of(&self, p: NonNull<u8>, len: usize) -> usize {
        if self.homes.index_of(p).is_some() {
            HOME_BLOCK
        } else {
            self.block_size(len)
        }
    }

    /// Whether `p` is a home block.
    pub(crate) fn is_home(&self, p: NonNull<u8>) -> bool {
        self.homes.index_of(p).is_some()
    }

    /// Bytes a block for a record of `len` bytes occupies.
    pub(crate) fn block_size(&self, len: usize) -> usize {
        len.max(MIN_GRAIN).next_multiple_of(self.grain)
    }

    /// A block of at least `len` bytes (≤ the chunk size), aligned to the grain.
    pub(crate) fn alloc(&mut self, len: usize) -> NonNull<u8> {
        let size = self.block_size(len);
        debug_assert!(size <= CHUNK);
        let class = size / self.grain;
        if let Some(head) = self.free.get(class).copied().flatten() {
            // SAFETY: a free block's first 8 bytes hold the next free block of its class (or 0),
            // written by `free`; the block is ours (no reader can reach it).
            let next = unsafe { head.as_ptr().cast::<usize>().read() };
            self.free[class] = NonNull::new(next as *mut u8);
            self.free_bytes -= size;
            return head;
        }
        if self.bump + size > self.end {
            let r = Region::new(CHUNK);
            self.bump = r.as_ptr() as usize;
            self.end = self.bump + r.len();
            self.chunks.push(r);
        }
        let p = self.bump as *mut u8;
        self.bump += size;
        NonNull::new(p).expect("chunk addresses are never null")
    }

    /// Returns a block of a record of `len` bytes to its size class, or a home block to the
    /// free home blocks. Returns whether it was a home block (its bytes are left intact then).
    ///
    /// # Safety
    /// `p` came from [`Arena::alloc`] or [`Arena::alloc_for`] with the same `len`, is not already
    /// free, and no reader can reach it any more.
    pub(crate) unsafe fn free(&mut self, p: NonNull<u8>, len: usize) -> bool {
        if let Some(i) = self.homes.index_of(p) {
            self.homes.release(i);
            return true;
        }
        let size = self.block_size(len);
        let class = size / self.grain;
        if self.free.len() <= class {
            self.free.resize(class + 1, None);
        }
        let next = self.free[class].map_or(0, |n| n.as_ptr() as usize);
        // SAFETY: the block is at least 8 bytes, 8-aligned and exclusively ours (contract).
        unsafe { p.as_ptr().cast::<usize>().write(next) };
        self.free[class] = Some(p);
        self.free_bytes += size;
        false
    }

    /// Bytes mapped for records (chunks and home blocks).
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.chunks.len() * CHUNK + self.homes.mapped_bytes()
    }

    /// Bytes mapped for records on reserved huge pages.
    pub(crate) fn hugetlb_bytes(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_hugetlb()).count() * CHUNK + self.homes.hugetlb_bytes()
    }

    /// Bytes in free lists (reusable for records of the same size class).
    pub(crate) fn free_bytes(&self) -> usize {
        self.free_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_grain_blocks_start_on_cache_lines_and_span_the_fewest_lines() {
        let mut a = Arena::new(LINE_GRAIN);
        let mut prev = 0usize;
        for len in [168, 100, 64, 65, 200, 168] {
            let p = a.alloc(len).as_ptr() as usize;
            assert_eq!(p % 64, 0, "len {len}");
            assert!(prev == 0 || p >= prev, "bump order");
            assert_eq!(
                (p + len - 1) / 64 - p / 64 + 1,
                len.div_ceil(64),
                "len {len}"
            );
            prev = p + a.block_size(len);
        }
        assert_eq!(a.block_size(168), 192);
        assert_eq!(a.block_size(1), 64);
    }

    #[test]
    fn big_regions_are_huge_page_aligned_and_sized() {
        for len in [1 << 20, 3 << 20, 32 << 20] {
            let r = Region::new(len);
            assert_eq!(r.as_ptr() as usize % HUGE, 0, "len {len}");
            assert_eq!(r.len() % HUGE, 0);
            assert!(r.len() >= len);
            // SAFETY: writing within the fresh mapping (first and last byte).
            unsafe {
                r.as_ptr().write(1);
                r.as_ptr().add(r.len() - 1).write(1);
            }
        }
        assert_eq!(Region::new(8192).len(), 8192, "small mappings stay small");
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_reused_by_size_class() {
        let mut a = Arena::new(MIN_GRAIN);
        let p1 = a.alloc(168);
        let p2 = a.alloc(168);
        assert_eq!(p1.as_ptr() as usize % 8, 0);
        assert_eq!(p2.as_ptr() as usize - p1.as_ptr() as usize, 168);
        // SAFETY: p1 came from alloc(168), is freed once and nothing reads it.
        unsafe { a.free(p1, 168) };
        assert_eq!(a.free_bytes(), 168);
        assert_eq!(
            a.alloc(170).as_ptr() as usize % 8,
            0,
            "another class: fresh block"
        );
        assert_eq!(a.alloc(165), p1, "same class: reused");
        assert_eq!(a.free_bytes(), 0);
        assert_eq!(a.mapped_bytes(), CHUNK);
    }

    #[test]
    fn a_full_chunk_opens_another() {
        let mut a = Arena::new(MIN_GRAIN);
        for _ in 0..(CHUNK / 4096 + 1) {
            a.alloc(4096);
        }
        assert_eq!(a.mapped_bytes(), 2 * CHUNK);
    }

    #[test]
    fn regions_are_zeroed() {
        let r = Region::new(1 << 20);
        // SAFETY: reading within the fresh mapping.
        let s = unsafe { std::slice::from_raw_parts(r.as_ptr(), r.len()) };
        assert!(s.iter().all(|&b| b == 0));
    }

    /// Free pages of the reserved 2 MiB pool (`/proc/meminfo` `HugePages_Free`).
    fn free_huge_pages() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("HugePages_Free:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn reserved_huge_pages_are_used_when_the_pool_has_them_and_never_needed() {
        // Without asking: the THP path, always available.
        let r = Region::with_hugetlb(4 << 20, false);
        assert!(!r.is_hugetlb());
        // Asking: reserved pages if the pool has 2 free (ours is the only reservation we can
        // count on, so check both outcomes), and a working zeroed mapping either way.
        let free = free_huge_pages();
        let r = Region::with_hugetlb(4 << 20, true);
        if free < 2 {
            assert!(!r.is_hugetlb(), "no pool ({free} free): fell back to THP");
        }
        if r.is_hugetlb() {
            assert!(free >= 2);
        }
        assert_eq!(r.as_ptr() as usize % HUGE, 0);
        // SAFETY: writing and reading within the fresh mapping.
        unsafe {
            assert_eq!(r.as_ptr().add(r.len() - 1).read(), 0);
            r.as_ptr().add(r.len() - 1).write(7);
            assert_eq!(r.as_ptr().add(r.len() - 1).read(), 7);
        }
        println!("free huge pages {free}, hugetlb {}", r.is_hugetlb());
        // Small mappings never ask.
        assert!(!Region::with_hugetlb(8192, true).is_hugetlb());
    }
}

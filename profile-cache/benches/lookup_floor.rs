//! The memory floor under the bare lookup: what the lookup's memory accesses alone cost on this
//! machine, for several layouts, timed exactly like `benches/lookup_tail.rs` times a lookup — the
//! same hot set (10,000 of `PROFILES` ids, drawn by the same generator), the same query stream
//! (a 36-byte id read from a buffer of `LOOKUPS` ids per lookup), the same fenced TSC reads around
//! each access, the timer's median subtracted, one pinned core under `SCHED_FIFO`. No hashing of
//! strings, no id compare, no binary search: only the cache lines a lookup must wait for.
//!
//! The model: an index of `PROFILES × 8 / 5` (rounded to a power of two) 8-byte slots holding
//! tag and record address, and one 128-byte record (two cache lines) per profile, both on
//! transparent huge pages, as the replica lays them out. Per layout (`DESIGNS`):
//! - `2rt_3lines` — the slot's line, then the record's two lines (the second prefetched): two
//!   dependent round trips, three lines (the replica before session 6, `home_blocks: false`);
//! - `2rt_2lines` — the slot, then one record line (a record of one line);
//! - `1rt_3lines` — the slot and the record's lines requested together (the record's address
//!   known from the hash), then the slot read and the record read: one round trip, three lines;
//! - `1rt_2lines` — the record's two lines at an address computed from the hash, no slot;
//! - `1rt_1line` — one line at an address computed from the hash: the least any lookup can wait
//!   for;
//! - `home_3lines` — session 6's home blocks: the slot and the home block's two lines requested
//!   together, then the slot followed; `HOME_PCT` (default 63) percent of the profiles are at home,
//!   the others elsewhere (a second round trip after the slot, and the two lines prefetched at
//!   their home were another profile's).
//! - `home_bits` — as `home_3lines`, but a record at home is recognised without the slot: the
//!   slot's line is requested too but only waited for when the home block (one occupancy bit per
//!   block, read from a bitmap, then the block's id) is not the profile sought.
//! - `inline_cells` — no index: the records themselves in a hash-addressed table of 128-byte
//!   cells at load 0.8, linear probing (a record not in its first cell — 40% of them — costs a
//!   further round trip per cell).
//!
//! Reports per layout and case (`hot_set_10k`, `uniform`): median over rounds of the net p50,
//! median/min/max of the net p99, median net p99.9, with the load average. Environment:
//! `PROFILES` (1M), `LOOKUPS` (300k), `ROUNDS` (5), `CPU` (1), `FIFO_PRIO` (0), `HOT` (10,000),
//! `HOME_PCT` (63), `DESIGNS` (all, comma-separated). Run:
//! `cargo bench -p helios-profile-cache --bench lookup_floor`.
//!
//! Owns nothing beyond its run; the bench's own thread only.

use std::hint::black_box;

use hdrhistogram::Histogram;

#[path = "support/ids.rs"]
mod ids;
#[path = "support/timing.rs"]
mod timing;

use ids::{ID_LEN, id};
use timing::{env, fifo, hist, pin, ticks_per_ns, tsc_end, tsc_start};

/// A seeded 64-bit mix (splitmix64's finaliser): the model's hash of profile `i`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `bytes` of zeroed memory on a 2 MiB boundary, advised to use transparent huge pages and
/// touched (so the pages exist before timing). Leaked: the bench exits when done.
fn huge(bytes: usize) -> *mut u8 {
    const HUGE: usize = 2 << 20;
    let len = bytes.next_multiple_of(HUGE);
    // SAFETY: anonymous private mapping with no address hint: no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len + HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "mmap {len} bytes");
    let a = (p as usize).next_multiple_of(HUGE) as *mut u8;
    // SAFETY: advising and zeroing our own fresh mapping, inside its bounds (`a + len` ≤ the
    // mapping's end because the mapping is one huge page longer than `len`).
    unsafe {
        libc::madvise(a.cast(), len, libc::MADV_HUGEPAGE);
        std::ptr::write_bytes(a, 0, len);
    }
    a
}

#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and has no architectural effect.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    TwoRtThreeLines,
    TwoRtTwoLines,
    OneRtThreeLines,
    OneRtTwoLines,
    OneRtOneLine,
    Home,
    HomeBits,
    InlineCells,
}

impl Design {
    const ALL: [Design; 8] = [
        Design::TwoRtThreeLines,
        Design::TwoRtTwoLines,
        Design::OneRtThreeLines,
        Design::OneRtTwoLines,
        Design::OneRtOneLine,
        Design::Home,
        Design::HomeBits,
        Design::InlineCells,
    ];
    fn name(self) -> &'static str {
        match self {
            Design::TwoRtThreeLines => "2rt_3lines",
            Design::TwoRtTwoLines => "2rt_2lines",
            Design::OneRtThreeLines => "1rt_3lines",
            Design::OneRtTwoLines => "1rt_2lines",
            Design::OneRtOneLine => "1rt_1line",
            Design::Home => "home_3lines",
            Design::HomeBits => "home_bits",
            Design::InlineCells => "inline_cells",
        }
    }
}

/// The modelled replica: slots and records.
struct Model {
    slots: *const u64,
    mask: usize,
    recs: *const u8,
    n: u64,
    home_pct: u64,
    /// One bit per home block (set: a record lives there).
    bits: Vec<u64>,
    /// Records inline in a hash-addressed table of 128-byte cells (load 0.8, linear probing).
    cells: *const u8,
    ncells: u64,
}

const PTR_MASK: u64 = (1 << 48) - 1;

impl Model {
    fn new(n: u64, home_pct: u64) -> Model {
        let nslots = (n as usize * 8 / 5 + 1).next_power_of_two();
        let mask = nslots - 1;
        let slots = huge(nslots * 8).cast::<u64>();
        let recs = huge(n as usize * 128);
        for i in 0..n {
            let h = mix(i);
            let mut s = h as usize & mask;
            // SAFETY: `s` < nslots and `i` < n: inside the two fresh mappings.
            unsafe {
                while *slots.add(s) != 0 {
                    s = (s + 1) & mask;
                }
                let r = recs.add(i as usize * 128);
                *slots.add(s) = (h >> 48) << 48 | r as u64;
                *r.cast::<u64>() = i;
                *r.add(64).cast::<u64>() = !i;
            }
        }
        let ncells = n * 5 / 4;
        let cells = huge(ncells as usize * 128);
        for i in 0..n {
            let mut c = ((u128::from(mix(i)) * u128::from(ncells)) >> 64) as u64;
            // SAFETY: `c` < ncells: inside the cell mapping.
            unsafe {
                while *cells.add(c as usize * 128).cast::<u64>() != 0 {
                    c = (c + 1) % ncells;
                }
                *cells.add(c as usize * 128).cast::<u64>() = i + 1;
                *cells.add(c as usize * 128 + 64).cast::<u64>() = !i;
            }
        }
        Model {
            slots,
            mask,
            recs,
            n,
            home_pct,
            bits: vec![!0u64; (n as usize).div_ceil(64)],
            cells,
            ncells,
        }
    }

    /// The record of profile `i` (the records of random profiles lie at random addresses).
    #[inline(always)]
    fn record(&self, i: u64) -> *const u8 {
        self.recs.wrapping_add(i as usize * 128)
    }

    /// Follows `h`'s slots to the record of `i`; `lines` of it read (the second prefetched).
    #[inline(always)]
    fn via_slot(&self, i: u64, h: u64, lines: usize) -> u64 {
        let mut s = h as usize & self.mask;
        loop {
            // SAFETY: `s` ≤ mask: inside the slot mapping.
            let v = unsafe { std::ptr::read_volatile(self.slots.add(s)) };
            if v == 0 {
                return 0;
            }
            if v >> 48 == h >> 48 {
                let p = (v & PTR_MASK) as *const u8;
                if lines == 2 {
                    prefetch(p.wrapping_add(64));
                }
                // SAFETY: a non-zero slot holds the address of a record in the mapping.
                let a = unsafe { std::ptr::read_volatile(p.cast::<u64>()) };
                if a == i {
                    return if lines == 2 {
                        // SAFETY: the record's second line, inside the mapping.
                        a ^ unsafe { std::ptr::read_volatile(p.add(64).cast::<u64>()) }
                    } else {
                        a
                    };
                }
            }
            s = (s + 1) & self.mask;
        }
    }

    #[inline(always)]
    fn lookup(&self, i: u64, d: Design) -> u64 {
        let h = mix(i);
        let r = self.record(i);
        let read = |p: *const u8| {
            // SAFETY: every caller passes `r` or `r + 64` (the record of `i` < n, inside the
            // record mapping) or a cell of the cell mapping (index < ncells) or its second line.
            unsafe { std::ptr::read_volatile(p.cast::<u64>()) }
        };
        match d {
            Design::TwoRtThreeLines => self.via_slot(i, h, 2),
            Design::TwoRtTwoLines => self.via_slot(i, h, 1),
            Design::OneRtThreeLines => {
                prefetch(r);
                prefetch(r.wrapping_add(64));
                self.via_slot(i, h, 2)
            }
            Design::OneRtTwoLines => {
                prefetch(r.wrapping_add(64));
                read(r) ^ read(r.wrapping_add(64))
            }
            Design::OneRtOneLine => read(r),
            Design::Home => {
                // At home: the home block is the record; else it is another profile's record.
                let home = if (h >> 20) % 100 < self.home_pct {
                    r
                } else {
                    self.record((h >> 8) % self.n)
                };
                prefetch(home);
                prefetch(home.wrapping_add(64));
                self.via_slot(i, h, 2)
            }
            Design::HomeBits => {
                // The slot's line and the home block's requested together; the home block's
                // occupancy bit read, then its record: if it is the one sought, the slot is not
                // waited for.
                let at_home = (h >> 20) % 100 < self.home_pct;
                let b = if at_home { i } else { (h >> 8) % self.n };
                let home = self.record(b);
                prefetch(self.slots.wrapping_add(h as usize & self.mask).cast());
                prefetch(home);
                prefetch(home.wrapping_add(64));
                let word = black_box(self.bits[b as usize / 64]);
                if word >> (b % 64) & 1 == 1 {
                    let a = read(home);
                    if a == i {
                        return a ^ read(home.wrapping_add(64));
                    }
                }
                self.via_slot(i, h, 2)
            }
            Design::InlineCells => {
                let mut c = ((u128::from(h) * u128::from(self.ncells)) >> 64) as u64;
                loop {
                    let p = self.cells.wrapping_add(c as usize * 128);
                    prefetch(p.wrapping_add(64));
                    let a = read(p);
                    if a == i + 1 {
                        return a ^ read(p.wrapping_add(64));
                    }
                    if a == 0 {
                        return 0;
                    }
                    c = (c + 1) % self.ncells;
                }
            }
        }
    }
}

fn main() {
    let n = env("PROFILES", 1_000_000).max(10_000) as u64;
    let lookups = env("LOOKUPS", 300_000).max(1000) as usize;
    let rounds = env("ROUNDS", 5).max(1);
    let cpu = env("CPU", 1);
    let prio = env("FIFO_PRIO", 0);
    let hot_n = env("HOT", 10_000).max(1) as u64;
    let home_pct = env("HOME_PCT", 63).clamp(0, 100) as u64;
    let designs: Vec<Design> = match std::env::var("DESIGNS") {
        Ok(s) => s
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                *Design::ALL
                    .iter()
                    .find(|d| d.name() == s)
                    .unwrap_or_else(|| panic!("DESIGNS: unknown design {s:?}"))
            })
            .collect(),
        Err(_) => Design::ALL.to_vec(),
    };
    pin(cpu);
    let model = Model::new(n, home_pct);
    // The same generator and draws as lookup_tail.rs: hot set, then per lookup a hot and a
    // uniform id.
    let mut rnd = ids::draws(0x1234_5678);
    let hot_ids: Vec<u64> = (0..hot_n).map(|_| rnd(n)).collect();
    let mut hot = Vec::with_capacity(lookups);
    let mut uni = Vec::with_capacity(lookups);
    let mut ids = String::with_capacity(lookups * ID_LEN);
    for _ in 0..lookups {
        let h = hot_ids[rnd(hot_ids.len() as u64) as usize];
        hot.push(h);
        uni.push(rnd(n));
        ids.push_str(&id(h));
    }
    let ids = ids.as_bytes();
    let tpn = ticks_per_ns(200);
    let fifo_on = prio > 0 && fifo(prio);
    let mut over = hist();
    for _ in 0..1_000_000 {
        let t = tsc_start();
        let e = tsc_end();
        over.saturating_record(e.saturating_sub(t).max(1));
    }
    let over_p50 = over.value_at_quantile(0.5);
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    type Rounds = Vec<(f64, f64, f64)>;
    let mut res: std::collections::BTreeMap<(&str, &str), Rounds> = Default::default();
    for round in 0..rounds {
        for (case, q) in [("hot_set_10k", &hot), ("uniform", &uni)] {
            let mut order = designs.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for d in order {
                let mut acc = 0u64;
                for &i in q.iter() {
                    acc ^= model.lookup(i, d); // warm-up pass
                }
                let mut h: Histogram<u64> = hist();
                for (k, &i) in q.iter().enumerate() {
                    // The query's id, read as the real lookup reads it (its first and last word).
                    let qid = &ids[k * ID_LEN..(k + 1) * ID_LEN];
                    let t = tsc_start();
                    let w = model.lookup(black_box(i), d)
                        ^ u64::from(black_box(qid)[0])
                        ^ u64::from(qid[ID_LEN - 1]);
                    acc ^= black_box(w);
                    let e = tsc_end();
                    h.saturating_record(e.saturating_sub(t).max(1));
                }
                black_box(acc);
                let net = |p: f64| h.value_at_quantile(p).saturating_sub(over_p50) as f64 / tpn;
                res.entry((case, d.name()))
                    .or_default()
                    .push((net(0.5), net(0.99), net(0.999)));
            }
        }
    }
    if fifo_on {
        fifo(0);
    }
    let load1 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{{\"profiles\":{n},\"lookups\":{lookups},\"rounds\":{rounds},\"hot\":{hot_n},\"home_pct\":{home_pct},\"cpu\":{cpu},\"sched_fifo\":{fifo_on},\"tsc_ticks_per_ns\":{tpn:.4},\"timer_p50_ns\":{:.0},\"loadavg_start\":\"{}\",\"loadavg_end\":\"{}\"}}",
        over_p50 as f64 / tpn,
        load0.trim(),
        load1.trim()
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for ((case, d), r) in res {
        let mut p50: Vec<f64> = r.iter().map(|x| x.0).collect();
        let mut p99: Vec<f64> = r.iter().map(|x| x.1).collect();
        let mut p999: Vec<f64> = r.iter().map(|x| x.2).collect();
        let m99 = median(&mut p99);
        println!(
            "{{\"floor\":\"{d}\",\"case\":\"{case}\",\"rounds\":{},\"net_p50_median\":{:.0},\"net_p99_median\":{m99:.0},\"net_p99_min\":{:.0},\"net_p99_max\":{:.0},\"net_p999_median\":{:.0}}}",
            p99.len(),
            median(&mut p50),
            p99[0],
            p99[p99.len() - 1],
            median(&mut p999)
        );
    }
}

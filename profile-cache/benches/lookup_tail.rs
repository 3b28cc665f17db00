//! Lookup latency distribution of the replica without Redis, for several designs side by side in
//! one process: per-lookup percentiles (fenced TSC reads) beside batch-timed figures, on one
//! pinned core, optionally under `SCHED_FIFO` so that preemption by other tenants of a shared
//! machine does not make the tail.
//!
//! Builds one replica of `PROFILES` (default 1M) synthetic profiles (20 segments, 36-byte ids) per
//! variant in `VARIANTS` (default `old,new`; also `hash`, `lines`, `fence`: the old design with one
//! change — see `tuning`), then, per round, for four query sets — a hot set of 10,000 ids (warm,
//! the goal's case), ids uniform over every profile (DRAM-bound), absent ids, and the hot set with
//! each looked-up record's lines flushed from every cache level just before its lookup
//! (`record_cold`: what a lookup meets once other tenants have evicted the record from a shared
//! L3; the index slot stays cached) — runs every
//! variant in turn (order reversed every other round), each after a warm-up pass over the same
//! queries; then the hot set again per variant while another thread (on `CPU_W`, default 0)
//! rewrites random profiles at `UPDATES` per second (default 10,000). Reports:
//! - per variant: its tuning, the fence in effect, the longest probe, bytes mapped and how many of
//!   them the kernel backed with huge pages (`AnonHugePages` growth while it was built, and
//!   `Private_Hugetlb` growth: reserved huge pages, which the RSS does not count);
//! - `timer_overhead`: the two TSC reads around nothing (`lfence; rdtsc; lfence` …
//!   `rdtscp; lfence`), 1M times;
//! - `per_lookup_ns`: p50/p90/p99/p99.9/max of `get` + one `segment_weight` (of a segment the
//!   profile has: binary search and weight read, as a targeting match), each timed alone,
//!   timer included, and `net_*`: the same minus the timer's median;
//! - `batch_independent_ns`: one timed pass of `LOOKUPS` lookups / `LOOKUPS` (the CPU may overlap
//!   consecutive lookups: a throughput figure);
//! - `batch_dependent_ns`: the same, each query chosen from the previous lookup's result, so no two
//!   lookups overlap (average latency with no clock inside the loop);
//! - a `summary` line per variant and case: median of the per-round net p50, and median, min and
//!   max of the per-round net p99.
//!
//! Lookup in the appliance's order (`ORDERS`, default `bare,work,prefetch,prefetch2`): besides
//! the bare lookup (`bare`: the cases above as they always ran), each of the hot, uniform and
//! record_cold cases runs as the appliance does it, the timed lookup coming after `WORK_NS`
//! nanoseconds (default 300: the appliance's measured median, `appliance/benches/profile_order.rs`)
//! of other work — a stand-in calibrated at start: reads over a 16 KiB
//! L1/L2-resident buffer (the request and the campaign index) mixed into an arithmetic chain —
//! with case names suffixed by the order: `:work` (the work, then `get`: no prefetch, the
//! control), `:prefetch` (`Reader::prefetch`, the work, then the timed `get_prefetched`) and
//! `:prefetch2` (`prefetch`, `SPLIT_NS` of the work — default half —, `prefetch_record`, the
//! rest, the timed `get_prefetched`). Only the lookup is timed (the prefetch calls are not: a timer's fences
//! would wait for their loads); what the prefetch call itself costs is printed per variant as
//! `prefetch_call_ns` (a batch of calls / calls) and counted by callgrind.
//!
//! Environment: `PROFILES`, `LOOKUPS` (default 1M), `WORK_NS`, `SPLIT_NS`, `ORDERS`, `CPU`
//! (default 1; -1 = no pinning),
//! `FIFO_PRIO` (1–99: switch the timing thread to `SCHED_FIFO` at that priority for the timed
//! phase only; needs root), `ROUNDS` (default 3), `VARIANTS`, `UPDATES` (0 = skip the updating
//! case), `COLLECT_MS` (the updater reclaims — an epoch advance with its `membarrier` — after
//! every batch of updates, about every 0.2 ms, by default; at most every that many ms if set),
//! `CALLGRIND=1` (one untimed pass per case and variant, for
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*batch_independent*'`).
//! Run: `cargo bench -p helios-profile-cache --bench lookup_tail`. Builds of two libraries can
//! also run alternately (`benches/lookup_ab.sh`); since session 5 the bench uses the prefetch API,
//! which libraries before session 5 lack.

use std::hint::black_box;

use hdrhistogram::Histogram;
use profile_cache::{Prefetch, ProfileData, Reader, Store, Tuning};
use shards::ProfileView;

#[path = "support/ids.rs"]
mod ids;
#[path = "support/timing.rs"]
mod timing;

use ids::{ID_LEN, id};
use timing::{env, fifo, hist, pin, ticks_per_ns, tsc_end, tsc_start};

/// Ids to look up (each `ID_LEN` bytes, concatenated) and, per id, the segment whose weight the
/// lookup reads: one of the profile's own segments (its 11th of 20) for ids that exist, so the
/// lookup does what a targeting match does — a full binary search and the weight read — and
/// reads every line a hit needs.
struct Queries {
    ids: String,
    segs: Vec<u32>,
}

impl Queries {
    fn with_capacity(n: usize) -> Self {
        Queries {
            ids: String::with_capacity(n * ID_LEN),
            segs: Vec::with_capacity(n),
        }
    }
    fn push(&mut self, id: &str, seg: u32) {
        self.ids.push_str(id);
        self.segs.push(seg);
    }
    fn len(&self) -> usize {
        self.segs.len()
    }
    #[inline(always)]
    fn get(&self, k: usize) -> (&str, u32) {
        (&self.ids[k * ID_LEN..(k + 1) * ID_LEN], self.segs[k])
    }
}

/// The `s`-th of the 20 segments of profile `i` (ascending ids; `fill` and `updater` write them).
fn segment_of(i: u64, s: u32) -> u32 {
    (i as u32).wrapping_mul(31) % 10_000 + s * 7
}

struct Case<'a> {
    name: &'static str,
    queries: &'a Queries,
    /// Flush each looked-up record from the caches before its timed lookup.
    cold: bool,
}

/// Each lookup timed alone, in TSC ticks (includes the timer's own cost, measured separately).
fn per_lookup(reader: &Reader, q: &Queries) -> Histogram<u64> {
    let mut h = hist();
    for k in 0..q.len() {
        let (id, seg) = q.get(k);
        let t = tsc_start();
        let w = reader.get(black_box(id)).map(|p| p.segment_weight(seg));
        black_box(w);
        let e = tsc_end();
        h.saturating_record(e.saturating_sub(t).max(1));
    }
    h
}

/// Evicts the record of `id` from every cache level (`clflush` of each of its lines; the lookup
/// that finds it leaves the index slot cached), and waits until that is done.
#[cfg(target_arch = "x86_64")]
fn flush_record(reader: &Reader, id: &str) {
    use std::arch::x86_64::{_mm_clflush, _mm_mfence};
    if let Some(p) = reader.get(id) {
        let b = p.as_bytes();
        let end = b.as_ptr() as usize + b.len();
        let mut line = b.as_ptr() as usize & !63;
        while line < end {
            // SAFETY: `line` is inside (or starts the line of) the record, which is mapped and
            // kept alive by `p`; clflush only evicts, it changes no data.
            unsafe { _mm_clflush(line as *const u8) };
            line += 64;
        }
    }
    // SAFETY: mfence has no memory effects beyond ordering; every x86-64 CPU has it.
    unsafe { _mm_mfence() };
}

#[cfg(not(target_arch = "x86_64"))]
fn flush_record(_reader: &Reader, _id: &str) {}

/// [`per_lookup`] with each record flushed from the caches before its lookup.
fn per_lookup_cold(reader: &Reader, q: &Queries) -> Histogram<u64> {
    let mut h = hist();
    for k in 0..q.len() {
        let (id, seg) = q.get(k);
        flush_record(reader, id);
        let t = tsc_start();
        let w = reader.get(black_box(id)).map(|p| p.segment_weight(seg));
        black_box(w);
        let e = tsc_end();
        h.saturating_record(e.saturating_sub(t).max(1));
    }
    h
}

/// How the timed lookup is reached (see the module docs, `ORDERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The lookup alone, back to back with the previous one.
    Bare,
    /// The work, then `get`.
    Work,
    /// `prefetch`, the work, then `get_prefetched`.
    Prefetch,
    /// `prefetch`, half the work, `prefetch_record`, the other half, then `get_prefetched`.
    Prefetch2,
}

impl Order {
    fn parse(s: &str) -> Option<Order> {
        Some(match s {
            "bare" => Order::Bare,
            "work" => Order::Work,
            "prefetch" => Order::Prefetch,
            "prefetch2" => Order::Prefetch2,
            _ => return None,
        })
    }
    fn suffix(self) -> &'static str {
        match self {
            Order::Bare => "",
            Order::Work => ":work",
            Order::Prefetch => ":prefetch",
            Order::Prefetch2 => ":prefetch2",
        }
    }
}

/// The stand-in for the appliance's work between decoding a request and looking its user up:
/// `iters` steps, each a read from `buf` (16 KiB: L1/L2-resident, like the request and the
/// campaign index) folded into a multiply chain. Returns the chain so nothing is optimised out.
#[inline(never)]
fn work(buf: &[u64], iters: usize) -> u64 {
    let mask = buf.len() - 1;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..iters {
        x = (x ^ buf[(i * 7) & mask]).wrapping_mul(0x2545_F491_4F6C_DD1D);
        x ^= x >> 29;
    }
    x
}

/// Steps of [`work`] per nanosecond on this core (best of 5 timed runs of 1M steps).
fn work_steps_per_ns(buf: &[u64], tpn: f64) -> f64 {
    let steps = 1_000_000;
    (0..5)
        .map(|_| {
            let t = tsc_start();
            black_box(work(buf, black_box(steps)));
            let e = tsc_end();
            steps as f64 / ((e - t) as f64 / tpn)
        })
        .fold(0.0, f64::max)
}

/// Each lookup timed alone after the work (and the prefetches `order` asks for, untimed).
fn per_lookup_ordered(
    reader: &Reader,
    q: &Queries,
    order: Order,
    buf: &[u64],
    (steps, split): (usize, usize),
    cold: bool,
) -> Histogram<u64> {
    let mut h = hist();
    let mut acc = 0u64;
    for k in 0..q.len() {
        let (id, seg) = q.get(k);
        if cold {
            flush_record(reader, id);
        }
        let w = match order {
            Order::Bare | Order::Work => {
                if order == Order::Work {
                    acc ^= work(buf, steps);
                }
                let t = tsc_start();
                let w = reader.get(black_box(id)).map(|p| p.segment_weight(seg));
                black_box(w);
                let e = tsc_end();
                h.saturating_record(e.saturating_sub(t).max(1));
                continue;
            }
            Order::Prefetch => {
                let p: Prefetch<'_> = reader.prefetch(black_box(id));
                acc ^= work(buf, steps);
                p
            }
            Order::Prefetch2 => {
                let p = reader.prefetch(black_box(id));
                acc ^= work(buf, split);
                reader.prefetch_record(&p);
                acc ^= work(buf, steps - split);
                p
            }
        };
        let t = tsc_start();
        let r = reader.get_prefetched(w).map(|p| p.segment_weight(seg));
        black_box(r);
        let e = tsc_end();
        h.saturating_record(e.saturating_sub(t).max(1));
    }
    black_box(acc);
    h
}

/// `get_prefetched` of tokens made beforehand, in a batch (callgrind: its instructions).
#[inline(never)]
fn batch_get_prefetched(reader: &Reader, tokens: &[Prefetch<'_>], q: &Queries) -> f64 {
    let t = tsc_start();
    for (k, p) in tokens.iter().enumerate() {
        let seg = q.segs[k];
        black_box(reader.get_prefetched(*p).map(|p| p.segment_weight(seg)));
    }
    let e = tsc_end();
    (e - t) as f64 / tokens.len().max(1) as f64
}

/// `prefetch` calls alone, in a batch: what the call costs the core (ns per call).
#[inline(never)]
fn batch_prefetch(reader: &Reader, q: &Queries) -> f64 {
    let n = q.len();
    let t = tsc_start();
    for k in 0..n {
        black_box(reader.prefetch(q.get(k).0));
    }
    let e = tsc_end();
    (e - t) as f64 / n as f64
}

/// The timer alone: the same two reads around nothing.
fn timer_only(n: usize) -> Histogram<u64> {
    let mut h = hist();
    for _ in 0..n {
        let t = tsc_start();
        let e = tsc_end();
        h.saturating_record(e.saturating_sub(t).max(1));
    }
    h
}

#[inline(never)]
fn batch_independent(reader: &Reader, q: &Queries) -> f64 {
    let n = q.len();
    let t = tsc_start();
    for k in 0..n {
        let (id, seg) = q.get(k);
        black_box(reader.get(id).map(|p| p.segment_weight(seg)));
    }
    let e = tsc_end();
    (e - t) as f64 / n as f64
}

fn batch_dependent(reader: &Reader, q: &Queries) -> f64 {
    let n = q.len();
    let t = tsc_start();
    let mut k = 0usize;
    for _ in 0..n {
        let (id, seg) = q.get(k);
        let w = reader.get(id).map_or(0, |p| {
            p.segment_weight(seg).unwrap_or(0) as usize + p.segment_count()
        });
        // Weights are ≤ 1000 and counts ≤ 255: the shift is 0, but the compiler cannot know,
        // so the next query's address depends on this lookup's result.
        k = (k + 1 + (black_box(w) >> 12)) % n;
    }
    let e = tsc_end();
    (e - t) as f64 / n as f64
}

/// Rewrites random profiles at `rate` per second until `stop`; returns the store and the count.
fn updater(
    mut store: Store,
    n: u64,
    rate: u64,
    cpu: i64,
    stop: &std::sync::atomic::AtomicBool,
) -> (Store, u64) {
    pin(cpu);
    // Reclaim after every batch (0, the default), or at most every COLLECT_MS milliseconds.
    let collect_every = std::time::Duration::from_millis(env("COLLECT_MS", 0).max(0) as u64);
    let mut collected = std::time::Instant::now();
    let t0 = std::time::Instant::now();
    let mut p = ProfileData::default();
    let mut done = 0u64;
    let mut x = 0x9876_5432u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
        if done >= due {
            std::thread::sleep(std::time::Duration::from_micros(200));
            continue;
        }
        for _ in done..due {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x % n;
            p.clear();
            p.user_id.push_str(&id(i));
            p.segments
                .extend((0..20u32).map(|s| (segment_of(i, s), 500)));
            store.upsert(&mut p).expect("valid profile");
        }
        if collected.elapsed() >= collect_every {
            store.collect();
            collected = std::time::Instant::now();
        }
        done = due;
    }
    (store, done)
}

/// The designs compared: `old` (sessions 1–2), `new` (the default), and one change at a time.
fn tuning(name: &str) -> Option<Tuning> {
    let new = Tuning::default();
    let old = Tuning::SESSION_2;
    Some(match name {
        "old" => old,
        "new" => new,
        "hash" => Tuning {
            hash: new.hash,
            ..old
        },
        "lines" => Tuning {
            line_aligned_records: true,
            ..old
        },
        "fence" => Tuning {
            reader_fence: new.reader_fence,
            ..old
        },
        "nohome" => Tuning {
            home_blocks: false,
            ..new
        },
        _ => return None,
    })
}

/// `AnonHugePages` of this process, bytes (`/proc/self/smaps_rollup`).
fn anon_huge_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Reserved huge pages mapped by this process, bytes (`Private_Hugetlb`; not part of the RSS).
fn hugetlb_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Private_Hugetlb:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident set size of this process, bytes (`/proc/self/statm`, 4 KiB pages).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn fill(n: u64, t: Tuning) -> (Store, Reader) {
    let (mut store, reader) = Store::with_tuning(n as usize, 1000, t);
    let mut p = ProfileData::default();
    for i in 0..n {
        p.clear();
        p.user_id.push_str(&id(i));
        p.segments
            .extend((0..20u32).map(|s| (segment_of(i, s), 500)));
        store.upsert(&mut p).expect("valid profile");
    }
    store.collect();
    (store, reader)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env("PROFILES", 1_000_000).max(10_000) as u64;
    let lookups = env("LOOKUPS", 1_000_000).max(1000) as usize;
    let cpu = env("CPU", 1);
    let prio = env("FIFO_PRIO", 0);
    let rounds = env("ROUNDS", 3).max(1);
    let updates = env("UPDATES", 10_000).max(0) as u64;
    let cpu_w = env("CPU_W", 0);
    let callgrind = env("CALLGRIND", 0) == 1;
    let names = std::env::var("VARIANTS").unwrap_or_else(|_| "old,new".into());
    let work_ns = env("WORK_NS", 300).max(0) as f64;
    // Where `prefetch2` reads the slot: this many ns of the work after the prefetch.
    let split_ns = env("SPLIT_NS", (work_ns / 2.0) as i64).max(0) as f64;
    let orders: Vec<Order> = std::env::var("ORDERS")
        .unwrap_or_else(|_| "bare,work,prefetch,prefetch2".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Order::parse(s).unwrap_or_else(|| panic!("ORDERS: unknown order {s:?}")))
        .collect();
    // The work's memory: 16 KiB, the size of a request plus the index words a decision reads.
    let work_buf: Vec<u64> = (0..2048u64).map(|i| i.wrapping_mul(0x9E37)).collect();
    pin(cpu);

    let mut variants = Vec::new();
    for name in names.split(',').filter(|s| !s.is_empty()) {
        let t = tuning(name).unwrap_or_else(|| panic!("VARIANTS: unknown variant {name:?}"));
        let (huge0, rss0, tlb0) = (anon_huge_bytes(), rss_bytes(), hugetlb_bytes());
        let (store, reader) = fill(n, t);
        let st = reader.stats();
        let huge = anon_huge_bytes().saturating_sub(huge0);
        let hugetlb = hugetlb_bytes().saturating_sub(tlb0);
        // Memory the replica took: resident 4 KiB/THP pages plus reserved huge pages.
        let rss = rss_bytes().saturating_sub(rss0) + hugetlb;
        // Huge pages over the bytes the replica touched (live blocks and the index; the unused
        // tail of the last chunk is never faulted in).
        println!(
            "{{\"variant\":\"{name}\",\"tuning\":\"{t:?}\",\"reader_fence_in_effect\":\"{:?}\",\"index_max_probe\":{},\"record_bytes\":{},\"arena_bytes\":{},\"index_bytes\":{},\"home_blocks\":{},\"home_records\":{},\"rss_growth_bytes\":{rss},\"rss_bytes_per_profile\":{:.1},\"anon_huge_bytes\":{huge},\"hugetlb_bytes\":{hugetlb},\"huge_share_of_touched\":{:.3}}}",
            reader.reader_fence(),
            reader.index_max_probe(),
            st.record_bytes,
            st.arena_bytes,
            st.index_bytes,
            st.home_blocks,
            st.home_records,
            rss as f64 / n as f64,
            (huge + hugetlb) as f64 / (st.record_bytes + st.index_bytes) as f64
        );
        variants.push((name.to_owned(), Some(store), reader));
    }
    let mut rnd = ids::draws(0x1234_5678);
    let hot_ids: Vec<u64> = (0..10_000).map(|_| rnd(n)).collect();
    let mut hot = Queries::with_capacity(lookups);
    let mut uni = Queries::with_capacity(lookups);
    let mut absent = Queries::with_capacity(lookups);
    for k in 0..lookups {
        let h = hot_ids[rnd(hot_ids.len() as u64) as usize];
        hot.push(&id(h), segment_of(h, 10));
        let u = rnd(n);
        uni.push(&id(u), segment_of(u, 10));
        absent.push(&format!("absent-{k:029}"), 7);
    }
    assert_eq!(hot.ids.len(), lookups * ID_LEN, "ids are {ID_LEN} bytes");
    assert_eq!(absent.ids.len(), lookups * ID_LEN, "ids are {ID_LEN} bytes");
    for (_, _, reader) in &variants {
        for k in 0..1000.min(lookups) {
            let (id, seg) = hot.get(k);
            let w = reader.get(id).and_then(|p| p.segment_weight(seg));
            assert_eq!(w, Some(500), "hot query {id} finds its segment {seg}");
        }
    }
    let cases = [
        Case {
            name: "hot_set_10k",
            queries: &hot,
            cold: false,
        },
        Case {
            name: "uniform",
            queries: &uni,
            cold: false,
        },
        Case {
            name: "absent",
            queries: &absent,
            cold: false,
        },
        Case {
            name: "record_cold",
            queries: &hot,
            cold: true,
        },
    ];
    if callgrind {
        // Instruction counts: run under `valgrind --tool=callgrind --collect-atstart=no
        // --toggle-collect='*batch_independent*'`, one variant per run; Ir / lookups per case.
        for (_, _, reader) in &variants {
            for c in cases.iter().filter(|c| !c.cold) {
                black_box(batch_independent(reader, c.queries));
                // `--toggle-collect='*batch_prefetch*'` / `'*batch_get_prefetched*'`: the
                // prefetch call, and the lookup by token.
                black_box(batch_prefetch(reader, c.queries));
                let tokens: Vec<Prefetch<'_>> = (0..c.queries.len())
                    .map(|k| reader.prefetch(c.queries.get(k).0))
                    .collect();
                black_box(batch_get_prefetched(reader, &tokens, c.queries));
            }
        }
        return;
    }
    let tpn = ticks_per_ns(200);
    let ns = |ticks: u64| ticks as f64 / tpn;
    let steps_per_ns = work_steps_per_ns(&work_buf, tpn);
    let steps = (work_ns * steps_per_ns).round() as usize;
    let split = ((split_ns.min(work_ns) * steps_per_ns).round() as usize).min(steps);
    let fifo_on = prio > 0 && fifo(prio);
    let over = timer_only(1_000_000);
    let over_p50 = over.value_at_quantile(0.5);
    let pct = |h: &Histogram<u64>| {
        let q = |p: f64| ns(h.value_at_quantile(p));
        let net = |p: f64| ns(h.value_at_quantile(p).saturating_sub(over_p50));
        format!(
            "{{\"p50\":{:.0},\"p90\":{:.0},\"p99\":{:.0},\"p999\":{:.0},\"max\":{:.0},\"net_p50\":{:.0},\"net_p99\":{:.0},\"net_p999\":{:.0},\"over_1us\":{}}}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            ns(h.max()),
            net(0.5),
            net(0.99),
            net(0.999),
            h.count_between((1000.0 * tpn) as u64, u64::MAX),
        )
    };
    // (variant, case) -> per-round net p50, p99 and p99.9, ns.
    type Rounds = Vec<(f64, f64, f64)>;
    let mut p99s: std::collections::BTreeMap<(String, String), Rounds> = Default::default();
    let mut out = Vec::new();
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for round in 0..rounds {
        for c in &cases {
            // Variants interleaved, their order reversed every other round.
            let mut order: Vec<usize> = (0..variants.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for &v in &order {
                let (name, _, reader) = &variants[v];
                // The lookup in the appliance's order (the bare lookup follows, as before).
                let mut ords: Vec<Order> = orders
                    .iter()
                    .copied()
                    .filter(|o| *o != Order::Bare)
                    .collect();
                if round % 2 == 1 {
                    ords.reverse();
                }
                for o in ords {
                    batch_independent(reader, c.queries);
                    let h =
                        per_lookup_ordered(reader, c.queries, o, &work_buf, (steps, split), c.cold);
                    let case = format!("{}{}", c.name, o.suffix());
                    let net = |p: f64| ns(h.value_at_quantile(p).saturating_sub(over_p50));
                    p99s.entry((name.clone(), case.clone())).or_default().push((
                        net(0.5),
                        net(0.99),
                        net(0.999),
                    ));
                    out.push(format!(
                        "{{\"round\":{round},\"variant\":\"{name}\",\"case\":\"{case}\",\"work_ns\":{work_ns},\"per_lookup_ns\":{}}}",
                        pct(&h)
                    ));
                }
                if !orders.contains(&Order::Bare) {
                    continue;
                }
                // Warm-up pass (fills caches and TLB with this variant's working set).
                batch_independent(reader, c.queries);
                let h = if c.cold {
                    per_lookup_cold(reader, c.queries)
                } else {
                    per_lookup(reader, c.queries)
                };
                let net = |p: f64| ns(h.value_at_quantile(p).saturating_sub(over_p50));
                p99s.entry((name.clone(), c.name.to_owned()))
                    .or_default()
                    .push((net(0.5), net(0.99), net(0.999)));
                // Batch figures only for warm cases (a cold case's batch would run warm).
                let batch = if c.cold {
                    String::new()
                } else {
                    let bi = batch_independent(reader, c.queries) / tpn;
                    let bd = batch_dependent(reader, c.queries) / tpn;
                    format!(",\"batch_independent_ns\":{bi:.1},\"batch_dependent_ns\":{bd:.1}")
                };
                out.push(format!(
                    "{{\"round\":{round},\"variant\":\"{name}\",\"case\":\"{}\",\"per_lookup_ns\":{}{batch}}}",
                    c.name,
                    pct(&h)
                ));
            }
        }
        if updates > 0 {
            let mut order: Vec<usize> = (0..variants.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for v in order {
                let stop = std::sync::atomic::AtomicBool::new(false);
                let st = variants[v]
                    .1
                    .take()
                    .expect("store is back after each round");
                let reader = &variants[v].2;
                let (st, h, bi, done) = std::thread::scope(|s| {
                    let w = s.spawn(|| updater(st, n, updates, cpu_w, &stop));
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let h = per_lookup(reader, &hot);
                    let bi = batch_independent(reader, &hot) / tpn;
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let (st, done) = w.join().expect("updater thread");
                    (st, h, bi, done)
                });
                variants[v].1 = Some(st);
                let name = &variants[v].0;
                let net = |p: f64| ns(h.value_at_quantile(p).saturating_sub(over_p50));
                p99s.entry((name.clone(), "hot_set_10k_while_updating".to_owned()))
                    .or_default()
                    .push((net(0.5), net(0.99), net(0.999)));
                out.push(format!(
                    "{{\"round\":{round},\"variant\":\"{name}\",\"case\":\"hot_set_10k_while_updating\",\"updates_done\":{done},\"per_lookup_ns\":{},\"batch_independent_ns\":{bi:.1}}}",
                    pct(&h)
                ));
            }
        }
    }
    if fifo_on {
        fifo(0);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for (name, _, reader) in &variants {
        batch_prefetch(reader, &hot);
        let hot_ns = batch_prefetch(reader, &hot) / tpn;
        let uni_ns = batch_prefetch(reader, &uni) / tpn;
        println!(
            "{{\"variant\":\"{name}\",\"prefetch_call_ns\":{{\"hot_set_10k\":{hot_ns:.1},\"uniform\":{uni_ns:.1}}}}}"
        );
    }
    println!(
        "{{\"profiles\":{n},\"lookups\":{lookups},\"rounds\":{rounds},\"work_ns\":{work_ns},\"split_ns\":{split_ns},\"work_steps\":{steps},\"work_steps_per_ns\":{steps_per_ns:.3},\"cpu\":{cpu},\"sched_fifo\":{fifo_on},\"fifo_requested\":{prio},\"tsc_ticks_per_ns\":{tpn:.4},\"loadavg_start\":\"{}\",\"loadavg_end\":\"{}\",\"timer_overhead\":{}}}",
        load0.trim(),
        load.trim(),
        pct(&over)
    );
    for l in out {
        println!("{l}");
    }
    // Summary: per variant and case, the timer-subtracted p50 and p99 over the rounds.
    for ((v, c), mut r) in p99s {
        let mut p50: Vec<f64> = r.iter().map(|x| x.0).collect();
        let mut p999: Vec<f64> = r.iter().map(|x| x.2).collect();
        r.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut p99: Vec<f64> = r.iter().map(|x| x.1).collect();
        println!(
            "{{\"summary\":\"{v}\",\"case\":\"{c}\",\"rounds\":{},\"net_p50_median\":{:.0},\"net_p99_median\":{:.0},\"net_p99_min\":{:.0},\"net_p99_max\":{:.0},\"net_p999_median\":{:.0},\"loadavg_end\":\"{}\"}}",
            p99.len(),
            median(&mut p50),
            median(&mut p99),
            p99[0],
            p99[p99.len() - 1],
            median(&mut p999),
            load.trim()
        );
    }
    drop(variants);
}

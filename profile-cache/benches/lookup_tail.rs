//! Lookup latency distribution of the replica without Redis: per-lookup percentiles (TSC) beside
//! batch-timed figures, on one pinned core, optionally under `SCHED_FIFO` so that preemption by
//! other tenants of a shared machine does not make the tail.
//!
//! Builds `PROFILES` (default 1M) synthetic profiles (20 segments, 36-byte ids) in-process, then
//! for three query sets — a hot set of 10,000 ids (warm, the goal's case), ids uniform over every
//! profile (DRAM-bound) and absent ids, and the hot set again while another thread (on `CPU_W`,
//! default 0) rewrites random profiles at `UPDATES` per second (default 10,000: the replicator's
//! work at the goal's change rate) — reports:
//! - `per_lookup`: p50/p90/p99/p99.9/max of `get` + one `segment_weight`, each timed alone
//!   (includes the clock's own cost, reported as `clock_overhead`);
//! - `batch_independent_ns`: one timed pass of `LOOKUPS` lookups / `LOOKUPS` (the CPU may overlap
//!   consecutive lookups: a throughput figure);
//! - `batch_dependent_ns`: the same, each query chosen from the previous lookup's result, so no two
//!   lookups overlap (average latency with no clock inside the loop).
//!
//! Environment: `PROFILES`, `LOOKUPS` (default 1M), `CPU` (default 1; -1 = no pinning),
//! `FIFO_PRIO` (1–99: switch the timing thread to `SCHED_FIFO` at that priority for the timed
//! phase only; needs root), `ROUNDS` (default 3: each case is measured this many times,
//! interleaved). Run: `cargo bench -p helios-profile-cache --bench lookup_tail`.

use std::hint::black_box;

use hdrhistogram::Histogram;
use profile_cache::{ProfileData, Reader, Store};
use shards::ProfileView;

const ID_LEN: usize = 36;

fn id(i: u64) -> String {
    let a = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = a.rotate_left(29) ^ 0x5555_AAAA_5555_AAAA;
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xffff,
        b & 0xffff_ffff_ffff
    )
}

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn pin(cpu: i64) {
    if cpu < 0 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Switches this thread to SCHED_FIFO at `prio` (0 = back to SCHED_OTHER). Returns success.
fn fifo(prio: i64) -> bool {
    let policy = if prio > 0 {
        libc::SCHED_FIFO
    } else {
        libc::SCHED_OTHER
    };
    let p = libc::sched_param {
        sched_priority: prio.clamp(0, 99) as i32,
    };
    // SAFETY: plain syscall on the calling thread with a valid parameter struct.
    unsafe { libc::sched_setscheduler(0, policy, &p) == 0 }
}

fn pct(h: &Histogram<u64>) -> String {
    format!(
        "{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{:.1},\"over_1us\":{}}}",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.mean(),
        h.count_between(1001, u64::MAX),
    )
}

struct Case<'a> {
    name: &'static str,
    queries: &'a str,
}

fn per_lookup(clock: &quanta::Clock, reader: &Reader, q: &str) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).expect("static bounds");
    let n = q.len() / ID_LEN;
    for k in 0..n {
        let id = &q[k * ID_LEN..(k + 1) * ID_LEN];
        let t = clock.raw();
        let w = reader.get(id).map(|p| p.segment_weight(7));
        let e = clock.raw();
        black_box(w);
        h.saturating_record(clock.delta_as_nanos(t, e).max(1));
    }
    h
}

fn batch_independent(clock: &quanta::Clock, reader: &Reader, q: &str) -> f64 {
    let n = q.len() / ID_LEN;
    let t = clock.raw();
    for k in 0..n {
        let id = &q[k * ID_LEN..(k + 1) * ID_LEN];
        black_box(reader.get(id).map(|p| p.segment_weight(7)));
    }
    let e = clock.raw();
    clock.delta_as_nanos(t, e) as f64 / n as f64
}

fn batch_dependent(clock: &quanta::Clock, reader: &Reader, q: &str) -> f64 {
    let n = q.len() / ID_LEN;
    let t = clock.raw();
    let mut k = 0usize;
    for _ in 0..n {
        let id = &q[k * ID_LEN..(k + 1) * ID_LEN];
        let w = reader.get(id).map_or(0, |p| {
            p.segment_weight(7).unwrap_or(0) as usize + p.segment_count()
        });
        // Weights are ≤ 1000 and counts ≤ 255: the shift is 0, but the compiler cannot know,
        // so the next query's address depends on this lookup's result.
        k = (k + 1 + (black_box(w) >> 12)) % n;
    }
    let e = clock.raw();
    clock.delta_as_nanos(t, e) as f64 / n as f64
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
                .extend((0..20u32).map(|s| ((i as u32).wrapping_mul(31) % 10_000 + s * 7, 500)));
            store.upsert(&mut p).expect("valid profile");
        }
        store.collect();
        done = due;
    }
    (store, done)
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
    pin(cpu);

    let (mut store, reader) = Store::new(n as usize, 1000);
    let mut p = ProfileData::default();
    for i in 0..n {
        p.clear();
        p.user_id.push_str(&id(i));
        p.segments
            .extend((0..20u32).map(|s| ((i as u32).wrapping_mul(31) % 10_000 + s * 7, 500)));
        store.upsert(&mut p).expect("valid profile");
    }
    let mut x = 0x1234_5678u64;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let hot_ids: Vec<u64> = (0..10_000).map(|_| rnd(n)).collect();
    let mut hot = String::with_capacity(lookups * ID_LEN);
    let mut uni = String::with_capacity(lookups * ID_LEN);
    let mut absent = String::with_capacity(lookups * ID_LEN);
    for k in 0..lookups {
        hot.push_str(&id(hot_ids[rnd(hot_ids.len() as u64) as usize]));
        uni.push_str(&id(rnd(n)));
        absent.push_str(&format!("absent-{k:029}"));
    }
    assert_eq!(hot.len(), lookups * ID_LEN, "ids are {ID_LEN} bytes");
    assert_eq!(absent.len(), lookups * ID_LEN, "ids are {ID_LEN} bytes");
    let cases = [
        Case {
            name: "hot_set_10k",
            queries: &hot,
        },
        Case {
            name: "uniform",
            queries: &uni,
        },
        Case {
            name: "absent",
            queries: &absent,
        },
    ];
    let clock = quanta::Clock::new();
    let fifo_on = prio > 0 && fifo(prio);
    let mut over = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).expect("static bounds");
    for _ in 0..1_000_000 {
        let t = clock.raw();
        let e = clock.raw();
        over.saturating_record(clock.delta_as_nanos(t, e).max(1));
    }
    let mut out = Vec::new();
    let mut store = Some(store);
    for round in 0..rounds {
        for c in &cases {
            // Warm-up pass (fills caches and TLB with the case's working set), then the timed ones.
            batch_independent(&clock, &reader, c.queries);
            let h = per_lookup(&clock, &reader, c.queries);
            let bi = batch_independent(&clock, &reader, c.queries);
            let bd = batch_dependent(&clock, &reader, c.queries);
            out.push(format!(
                "{{\"round\":{round},\"case\":\"{}\",\"per_lookup\":{},\"batch_independent_ns\":{bi:.1},\"batch_dependent_ns\":{bd:.1}}}",
                c.name,
                pct(&h)
            ));
        }
        if updates > 0 {
            let stop = std::sync::atomic::AtomicBool::new(false);
            let st = store.take().expect("store is back after each round");
            let (st, h, bi, bd, done) = std::thread::scope(|s| {
                let w = s.spawn(|| updater(st, n, updates, cpu_w, &stop));
                std::thread::sleep(std::time::Duration::from_millis(200));
                let h = per_lookup(&clock, &reader, &hot);
                let bi = batch_independent(&clock, &reader, &hot);
                let bd = batch_dependent(&clock, &reader, &hot);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let (st, done) = w.join().expect("updater thread");
                (st, h, bi, bd, done)
            });
            store = Some(st);
            out.push(format!(
                "{{\"round\":{round},\"case\":\"hot_set_10k_while_updating\",\"updates_done\":{done},\"per_lookup\":{},\"batch_independent_ns\":{bi:.1},\"batch_dependent_ns\":{bd:.1}}}",
                pct(&h)
            ));
        }
    }
    if fifo_on {
        fifo(0);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{{\"profiles\":{n},\"lookups\":{lookups},\"cpu\":{cpu},\"sched_fifo\":{},\"fifo_requested\":{prio},\"loadavg\":\"{}\",\"clock_overhead\":{}}}",
        fifo_on,
        load.trim(),
        pct(&over)
    );
    for l in out {
        println!("{l}");
    }
    drop(store);
}

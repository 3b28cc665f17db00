//! Where the profile lookup goes in a bid request, end to end on the sans-IO core: the same
//! requests through one [`Core`] per [`ProfileOrder`] (eager: looked up before the decision, as
//! in sessions 1–4; late: inside the decision after its pre-filters; prefetch: the index slot
//! prefetched right after the privacy verdict, the record's lines once the decision has hashed
//! the request's keys, the lookup after the pre-filters; prefetch_slot: the slot only), side by side in one process,
//! interleaved per round (order reversed every other round).
//!
//! Set-up: a replica of `PROFILES` (default 1M) profiles (36-byte ids, 20 segments out of the
//! synthetic campaigns' 50), the synthetic set of `CAMPAIGNS` (default 1,000) campaigns
//! (`shards::synth`, 15% target segments, 20% price by segment multipliers), and the 4,096
//! synthetic requests (`shards::synth::requests`, seed 11) whose `user.id` (70% of them) is
//! replaced, before each request of each pass (untimed), by a replica id: from a hot set of
//! 10,000 (`hot_set_10k`) or uniform over every profile (`uniform`); every order gets the same
//! id sequence. Each request goes through `Core::on_input` alone (HTTP parse, decode,
//! privacy, decision, encoding, notice URLs, event) and is timed alone with the TSC
//! (`lfence; rdtsc; lfence` … `rdtscp; lfence`). Reports per order and case p50/p90/p99/p99.9
//! (ns, timer included) per round and a summary (median over rounds).
//!
//! Also, the window the prefetch has to land in, measured in the real decision code: the TSC
//! read just before `Shard::decide_from` and by a [`ProfileSource`] when the decision calls
//! `prepare` (midway, with consent) and `fetch` (after the pre-filters), over the same requests
//! with the synthetic campaigns (`window_ns`: decision start → fetch; `prepare_to_fetch_ns`),
//! and the appliance's work between the privacy verdict and the decision (`shard.privacy`, the
//! user key: timed as `privacy_ns`).
//!
//! Environment: `PROFILES`, `CAMPAIGNS`, `ROUNDS` (default 5), `PASSES` (timed passes over the
//! 4,096 requests per round, order and case; default 5), `CPU` (default 1; -1: no pinning),
//! `FIFO_PRIO` (SCHED_FIFO for the timed phase, needs root), `ORDERS` (default
//! `eager,late,prefetch,prefetch_slot`).
//! Run: `cargo bench -p helios-appliance --bench profile_order`.

use std::hint::black_box;
use std::sync::Arc;

use appliance::core::{Conn, Core, ProfileOrder};
use hdrhistogram::Histogram;
use profile_cache::{ProfileData, Reader, Store};
use shards::{CompiledSet, Decision, ProfileSource, ProfileView};

// The timer, pinning and ids of the profile cache's `lookup_tail` bench: one source for both.
#[path = "../../profile-cache/benches/support/ids.rs"]
mod ids;
#[path = "../../profile-cache/benches/support/timing.rs"]
mod timing;
// The core set-up of `benches/core.rs` and `tests/profile_no_alloc.rs`.
#[path = "../tests/support/core_setup.rs"]
mod core_setup;

use ids::{ID_LEN, id};
use timing::{env, fifo, hist, pin, ticks_per_ns, tsc_end, tsc_start};

/// A reading of the TSC without fences (the window probe must not serialise the decision).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tsc_raw() -> u64 {
    // SAFETY: rdtsc has no memory effects.
    unsafe { std::arch::x86_64::_rdtsc() }
}
#[cfg(not(target_arch = "x86_64"))]
fn tsc_raw() -> u64 {
    tsc_start()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A replica of `n` profiles: 20 of the synthetic campaigns' 50 segments each, weights 0–1000.
fn replica(n: u64) -> (Store, Reader) {
    let (mut store, reader) = Store::new(n as usize, 3_600_000);
    let mut p = ProfileData::default();
    for i in 0..n {
        p.clear();
        p.user_id.push_str(&id(i));
        let start = (i % 31) as u32;
        p.segments
            .extend((0..20u32).map(|s| (start + s, ((i * 7 + u64::from(s) * 131) % 1001) as u16)));
        store.upsert(&mut p).expect("valid profile");
    }
    store.collect();
    store.mark_synced(now_ms());
    (store, reader)
}

/// The synthetic requests framed as HTTP requests, with their `user.id` (when they have one)
/// replaced by a placeholder of a replica id's length; `at` is where each placeholder starts, so
/// every pass can write the ids it picks into it (a fresh id per request: the uniform case reads
/// the whole replica, not 4,096 ids that end up cached).
struct Requests {
    bytes: Vec<Vec<u8>>,
    at: Vec<Option<usize>>,
}

fn requests(bodies: &[String]) -> Requests {
    const AT: &str = r#""user":{"id":"user-"#;
    let placeholder = id(0);
    let mut bytes = Vec::with_capacity(bodies.len());
    let mut ats = Vec::with_capacity(bodies.len());
    for b in bodies {
        let (body, at) = match b.find(AT) {
            Some(at) => {
                let from = at + AT.len() - "user-".len();
                let to = from + b[from..].find('"').expect("closing quote");
                (
                    format!("{}{placeholder}{}", &b[..from], &b[to..]),
                    Some(from),
                )
            }
            None => (b.clone(), None),
        };
        let mut v = format!(
            "POST /openrtb2/bid/bench HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        let head = v.len();
        v.extend_from_slice(body.as_bytes());
        bytes.push(v);
        ats.push(at.map(|a| head + a));
    }
    Requests { bytes, at: ats }
}

fn core(set: &Arc<CompiledSet>, reader: &Reader, order: ProfileOrder) -> (Core, Conn) {
    let (mut core, conn) =
        core_setup::core(core_setup::config(), Arc::clone(set), Some(reader.clone()));
    core.set_profile_order(order);
    (core, conn)
}

/// One pass over `reqs`, each request with the next id `pick` gives written in (untimed), then
/// timed alone (ticks).
fn pass(
    core: &mut Core,
    conn: &mut Conn,
    reqs: &mut Requests,
    pick: &mut dyn FnMut() -> u64,
    h: Option<&mut Histogram<u64>>,
) {
    let mut h = h;
    for (r, at) in reqs.bytes.iter_mut().zip(&reqs.at) {
        if let Some(at) = *at {
            r[at..at + ID_LEN].copy_from_slice(id(pick()).as_bytes());
        }
        core.begin_turn();
        assert!(conn.push(r));
        let t = tsc_start();
        core.on_input(conn);
        let e = tsc_end();
        debug_assert!(!conn.out.is_empty());
        conn.out.clear();
        if let Some(h) = h.as_deref_mut() {
            h.saturating_record(e.saturating_sub(t).max(1));
        }
    }
}

/// The decision's window: TSC at `prepare` (midway) and at `fetch` (after the pre-filters). Hands out no profile (the decision then drops segment campaigns, as for a user
/// with no profile; the pre-filters before `fetch` do the same work either way).
struct Stamps {
    prepared: std::cell::Cell<u64>,
    fetched: std::cell::Cell<u64>,
}

impl ProfileSource for Stamps {
    type Profile<'s>
        = &'s dyn ProfileView
    where
        Self: 's;
    fn prepare(&self) {
        self.prepared.set(tsc_raw());
    }
    fn fetch(&self) -> Option<&dyn ProfileView> {
        self.fetched.set(tsc_raw());
        None
    }
}

fn order_name(o: ProfileOrder) -> &'static str {
    match o {
        ProfileOrder::Eager => "eager",
        ProfileOrder::Late => "late",
        ProfileOrder::Prefetch => "prefetch",
        ProfileOrder::PrefetchSlot => "prefetch_slot",
    }
}

fn main() {
    let n = env("PROFILES", 1_000_000).max(10_000) as u64;
    let campaigns = env("CAMPAIGNS", 1000).max(1) as usize;
    let rounds = env("ROUNDS", 5).max(1);
    let passes = env("PASSES", 5).max(1);
    let cpu = env("CPU", 1);
    let prio = env("FIFO_PRIO", 0);
    let orders: Vec<ProfileOrder> = std::env::var("ORDERS")
        .unwrap_or_else(|_| "eager,late,prefetch,prefetch_slot".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "eager" => ProfileOrder::Eager,
            "late" => ProfileOrder::Late,
            "prefetch" => ProfileOrder::Prefetch,
            "prefetch_slot" => ProfileOrder::PrefetchSlot,
            _ => panic!("ORDERS: unknown order {s:?}"),
        })
        .collect();
    pin(cpu);

    let set = CompiledSet::parse(shards::synth::campaigns_json(campaigns, 7).as_bytes())
        .expect("synthetic campaigns compile");
    let bodies = shards::synth::requests(4096, 11);
    let (store, reader) = replica(n);
    /// xorshift64 from a seed: every order gets the same ids in the same pass.
    fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
        ids::draws(seed | 1)
    }
    let mut r0 = rng(0x1234_5678);
    let hot_ids: Vec<u64> = (0..10_000).map(|_| r0(n)).collect();
    let mut reqs = requests(&bodies);
    let cases = ["hot_set_10k", "uniform"];

    let tpn = ticks_per_ns(200);
    let ns = |t: u64| t as f64 / tpn;

    // The window, in the real decision over the synthetic campaigns (no profile handed out).
    let (window, privacy, half) = {
        let mut shard = shards::Shard::new(0, Arc::clone(&set));
        let reqs: Vec<_> = bodies
            .iter()
            .map(|b| codec::decode_valid(b.as_bytes()).expect("synthetic request"))
            .collect();
        let mut d = Decision::default();
        let now = now_ms() * 1_000_000;
        let (mut w, mut p, mut half) = (hist(), hist(), hist());
        for round in 0..3 {
            for r in &reqs {
                let s = Stamps {
                    prepared: Default::default(),
                    fetched: Default::default(),
                };
                let t = tsc_start();
                let personal = shard.privacy(r).personalized();
                let user = shards::user_key(r.req()).filter(|k| personal && k.len() <= 64);
                black_box(user);
                let e = tsc_end();
                let t0 = tsc_raw();
                shard.decide_from(r, &s, now, &mut d);
                if round > 0 && s.fetched.get() > 0 {
                    w.saturating_record(s.fetched.get().saturating_sub(t0).max(1));
                    half.saturating_record(s.fetched.get().saturating_sub(s.prepared.get()).max(1));
                    p.saturating_record(e.saturating_sub(t).max(1));
                }
            }
        }
        (w, p, half)
    };
    let q = |h: &Histogram<u64>, p: f64| ns(h.value_at_quantile(p));
    println!(
        "{{\"window_ns\":{{\"what\":\"decision start to the lookup (fetch), personalised requests\",\"campaigns\":{campaigns},\"count\":{},\"p10\":{:.0},\"p50\":{:.0},\"p90\":{:.0},\"p99\":{:.0}}},\"prepare_to_fetch_ns\":{{\"p10\":{:.0},\"p50\":{:.0},\"p90\":{:.0}}},\"privacy_ns\":{{\"what\":\"shard.privacy + user key, timer included\",\"p50\":{:.0},\"p90\":{:.0}}}}}",
        window.len(),
        q(&window, 0.1),
        q(&window, 0.5),
        q(&window, 0.9),
        q(&window, 0.99),
        q(&half, 0.1),
        q(&half, 0.5),
        q(&half, 0.9),
        q(&privacy, 0.5),
        q(&privacy, 0.9),
    );

    let mut cores: Vec<(ProfileOrder, Core, Conn)> = orders
        .iter()
        .map(|o| {
            let (c, k) = core(&set, &reader, *o);
            (*o, c, k)
        })
        .collect();
    let fifo_on = prio > 0 && fifo(prio);
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    type Rounds = Vec<(f64, f64, f64)>;
    let mut summary: std::collections::BTreeMap<(String, &str), Rounds> = Default::default();
    let mut out = Vec::new();
    for round in 0..rounds {
        for (ci, case) in cases.iter().enumerate() {
            let mut idx: Vec<usize> = (0..cores.len()).collect();
            if round % 2 == 1 {
                idx.reverse();
            }
            for &i in &idx {
                let (o, core, conn) = &mut cores[i];
                // The same id sequence for every order: seeded by round, case and pass.
                let picker = |p: i64| {
                    let mut r = rng(((round as u64) << 32) ^ ((ci as u64) << 16) ^ p as u64);
                    let hot = &hot_ids;
                    move || {
                        if ci == 0 {
                            hot[r(10_000) as usize]
                        } else {
                            r(n)
                        }
                    }
                };
                // Warm-up pass: caches, TLB and branch predictors on this core's data.
                pass(core, conn, &mut reqs, &mut picker(-1), None);
                let mut h = hist();
                for p in 0..passes {
                    pass(core, conn, &mut reqs, &mut picker(p), Some(&mut h));
                }
                let name = order_name(*o);
                summary.entry((name.to_owned(), *case)).or_default().push((
                    q(&h, 0.5),
                    q(&h, 0.99),
                    q(&h, 0.999),
                ));
                out.push(format!(
                    "{{\"round\":{round},\"order\":\"{name}\",\"case\":\"{case}\",\"requests\":{},\"p50\":{:.0},\"p90\":{:.0},\"p99\":{:.0},\"p999\":{:.0},\"mean\":{:.0}}}",
                    h.len(),
                    q(&h, 0.5),
                    q(&h, 0.9),
                    q(&h, 0.99),
                    q(&h, 0.999),
                    h.mean() / tpn
                ));
            }
        }
    }
    if fifo_on {
        fifo(0);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let bids: Vec<String> = cores
        .iter()
        .map(|(o, c, _)| format!("\"{}\":{}", order_name(*o), c.metrics().bids))
        .collect();
    println!(
        "{{\"profiles\":{n},\"campaigns\":{campaigns},\"rounds\":{rounds},\"passes\":{passes},\"cpu\":{cpu},\"sched_fifo\":{fifo_on},\"tsc_ticks_per_ns\":{tpn:.4},\"loadavg_start\":\"{}\",\"loadavg_end\":\"{}\",\"bids\":{{{}}}}}",
        load0.trim(),
        load.trim(),
        bids.join(",")
    );
    for l in out {
        println!("{l}");
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for ((o, c), r) in summary {
        println!(
            "{{\"summary\":\"{o}\",\"case\":\"{c}\",\"rounds\":{},\"p50_median\":{:.0},\"p99_median\":{:.0},\"p99_min\":{:.0},\"p99_max\":{:.0},\"p999_median\":{:.0},\"loadavg_end\":\"{}\"}}",
            r.len(),
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1).collect()),
            r.iter().map(|x| x.1).fold(f64::INFINITY, f64::min),
            r.iter().map(|x| x.1).fold(0.0, f64::max),
            median(r.iter().map(|x| x.2).collect()),
            load.trim()
        );
    }
    drop(cores);
    drop(store);
}
